fn main() -> anyhow::Result<()> {
    // `spindle run` inside the benchmark starts its children through this binary.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == spindle_worker::local::orphans::SUBCOMMAND)
    {
        std::process::exit(match spindle_worker::cli::main_from(std::env::args_os()) {
            std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        });
    }
    spindle_bench::main()
}
