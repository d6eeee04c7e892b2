fn main() -> std::process::ExitCode {
    spindle_worker::cli::main()
}
