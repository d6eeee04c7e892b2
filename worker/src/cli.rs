//! The `spindle` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use spindle_spec::HumanDuration;

use crate::local::{self, LocalOptions};

#[derive(Debug, Parser)]
#[command(name = "spindle", version, about = "Stateful functions, StateFun-compatible, in Rust")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an application on this machine: its function processes (`local.command`) and a worker.
    Run(RunArgs),
    /// Check an application file and print what is wrong, with field paths.
    Validate {
        /// The StatefulApplication YAML file.
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The StatefulApplication YAML file.
    pub file: PathBuf,
    /// Address of the HTTP ingress (default: 127.0.0.1 and the spec's port).
    #[arg(long, env = "SPINDLE_INGRESS_ADDR")]
    pub ingress_addr: Option<SocketAddr>,
    /// Address of /healthz, /readyz, /metrics, /status, /dead-letters and /state.
    #[arg(long, env = "SPINDLE_ADMIN_ADDR", default_value = "127.0.0.1:0")]
    pub admin_addr: SocketAddr,
    /// Directory for the worker's files (default: .spindle beside the application file).
    #[arg(long, env = "SPINDLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// JSON-lines records to send through the HTTP ingress once the application is up.
    #[arg(long, env = "SPINDLE_INPUT")]
    pub input: Option<PathBuf>,
    /// Exit once all input is processed and every egress record is written.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// With --exit-when-idle: give up if not idle after this long.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    HumanDuration::parse(s).map(HumanDuration::as_duration).map_err(|e| e.to_string())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spindle: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spindle: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => {
            local::run(LocalOptions {
                app_file: a.file,
                ingress_addr: a.ingress_addr,
                admin_addr: a.admin_addr,
                data_dir: a.data_dir,
                input: a.input,
                exit_when_idle: a.exit_when_idle,
                idle_timeout: a.idle_timeout,
            })
            .await
        }
        Command::Validate { file } => {
            let app = spindle_spec::load_file(&file)?;
            println!(
                "{}: application `{}` is valid ({} functions, {} ingresses, {} egresses)",
                file.display(),
                app.metadata.name,
                app.spec.functions.len(),
                app.spec.ingresses.len(),
                app.spec.egresses.len()
            );
            Ok(())
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SPINDLE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
