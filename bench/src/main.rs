fn main() -> anyhow::Result<()> {
    spindle_bench::main()
}
