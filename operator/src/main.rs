use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = spindle_operator::cli::Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(spindle_operator::run(args))?;
    Ok(())
}
