//! The `spindle` command line.

mod checkpoints;
mod dead_letters;
mod http;
mod offline;
mod state;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use spindle_spec::HumanDuration;

use crate::local::{self, LocalOptions};
use crate::peer::discovery::{DiscoveryInput, discover};
use crate::serve::{ServeOptions, serve};

#[derive(Debug, Parser)]
#[command(
    name = "spindle",
    version,
    about = "Stateful functions, StateFun-compatible, in Rust"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an application on this machine: its function processes (`local.command`) and a worker.
    Run(RunArgs),
    /// Serve as one worker of an application until SIGTERM (a Kubernetes pod, or a child of
    /// `run --workers N`).
    Worker(WorkerArgs),
    /// Check an application file and print what is wrong, with field paths.
    Validate {
        /// The StatefulApplication YAML file.
        file: PathBuf,
    },
    /// Write the StatefulApplication equivalent to an Apache Flink StateFun module.yaml to
    /// stdout, with comments saying what each part became and what was not mapped
    /// (`spindle run module.yaml` runs a module directly).
    Import {
        /// The StateFun module.yaml.
        file: PathBuf,
        /// The application's name (default: the file's directory name).
        #[arg(long)]
        name: Option<String>,
    },
    /// An application's checkpoint data in its storage.
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
    /// The dead letters an application keeps: list, replay, drop.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLettersCommand),
    /// An application at a glance: workers, generation, last checkpoint and its age,
    /// throughput, backlog, dead letters, rollbacks, lag per ingress (a local run, or --admin).
    Status(status::StatusArgs),
    /// Function state: get one address, list a type, export everything — from a running
    /// application or a checkpoint in storage.
    #[command(subcommand)]
    State(state::StateCommand),
}

#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// Delete all of an application's checkpoint data (run by the operator's cleanup job when
    /// a StatefulApplication with `retentionPolicy: Delete` is deleted). Its workers must be
    /// stopped.
    Delete {
        /// Storage URL, as `spec.checkpoint.storage` (`s3://…`, `file://…` or a path);
        /// S3 settings from the `AWS_*` variables.
        #[arg(long, env = "SPINDLE_CHECKPOINT_STORAGE")]
        storage: String,
        /// The application's name (`metadata.name`).
        #[arg(long, env = "SPINDLE_APPLICATION")]
        application: String,
        /// The application's namespace: its data is under `<storage>/<namespace>/<name>`
        /// (without one, `<storage>/<name>`, the layout of local runs).
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: Option<String>,
    },
    /// Takes a savepoint of a running application: a checkpoint started now, kept under NAME
    /// until deleted (retention never deletes it). Prints its checkpoint number.
    Save {
        /// 1-63 characters of a-z, 0-9, `.`, `_`, `-` (not only digits).
        name: String,
        /// Worker 0's admin endpoint (`http://host:9090`).
        #[arg(long, env = "SPINDLE_ADMIN")]
        admin: String,
        /// A bearer token of `spec.admin.auth`.
        #[arg(long, env = "SPINDLE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Lists the completed checkpoints in storage: id, time, generation, workers, key groups,
    /// size, parts and savepoint names.
    List {
        #[command(flatten)]
        at: offline::Storage,
    },
    /// Prints what one checkpoint or savepoint holds, as JSON: addresses per type, messages,
    /// ingress positions, held egress, parts. Reads (and checks) all of it.
    Inspect {
        /// A checkpoint number or a savepoint name.
        which: String,
        #[command(flatten)]
        at: offline::Storage,
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
    /// Worker processes (default: the spec's `workers`); more than one runs each as a child
    /// process, connected over loopback gRPC.
    #[arg(long)]
    pub workers: Option<u32>,
    /// How long a clean stop (idle, Ctrl-C, SIGTERM) may take: input stops, a final
    /// checkpoint records what the sinks wrote, then the processes exit. A second signal
    /// stops at once.
    #[arg(long, env = "SPINDLE_STOP_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub stop_timeout: Duration,
    /// No live status line (it is shown only when stderr is a terminal anyway).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The StatefulApplication YAML file (in Kubernetes, the operator's ConfigMap).
    pub file: PathBuf,
    /// This worker's index; default: the ordinal of the pod name.
    #[arg(long, env = "SPINDLE_WORKER_INDEX")]
    pub index: Option<u32>,
    /// Every worker's peer address `host:port`, by index, comma-separated.
    #[arg(long, env = "SPINDLE_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The pod name (`<statefulset>-<ordinal>`).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// The workers' StatefulSet; with --peer-service, peers are `<statefulset>-<i>.<service>`.
    #[arg(long, env = "SPINDLE_STATEFULSET")]
    pub statefulset: Option<String>,
    /// The headless service of the workers.
    #[arg(long, env = "SPINDLE_PEER_SERVICE")]
    pub peer_service: Option<String>,
    #[arg(long, env = "SPINDLE_PEER_PORT", default_value_t = 9091)]
    pub peer_port: u16,
    /// Default: 0.0.0.0 and the spec's ingress port.
    #[arg(long, env = "SPINDLE_INGRESS_ADDR")]
    pub ingress_addr: Option<SocketAddr>,
    #[arg(long, env = "SPINDLE_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// Default: 0.0.0.0 and --peer-port.
    #[arg(long, env = "SPINDLE_PEER_ADDR")]
    pub peer_addr: Option<SocketAddr>,
    #[arg(long, env = "SPINDLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `ID=PORT`: spec.functions[ID] is a local process on 127.0.0.1:PORT (set by `run`).
    #[arg(long, value_parser = parse_function_port)]
    pub function_port: Vec<(usize, u16)>,
    /// Print every egress record to stdout.
    #[arg(long)]
    pub echo_egress: bool,
    /// How long a clean stop on SIGTERM may take: input stops, a final checkpoint, exit
    /// (keep it below the pod's terminationGracePeriodSeconds). A second signal stops at once.
    #[arg(long, env = "SPINDLE_STOP_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub stop_timeout: Duration,
    /// Directory with `ca.crt`, `tls.crt` and `tls.key` (a mounted TLS Secret): mutual TLS
    /// on the peer port. Without it the peer port is plain text and unauthenticated.
    #[arg(long, env = "SPINDLE_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// The StatefulApplication's UID, recorded in every checkpoint.
    #[arg(long, env = "SPINDLE_APPLICATION_UID")]
    pub application_uid: Option<String>,
}

fn parse_function_port(s: &str) -> Result<(usize, u16), String> {
    let (id, port) = s.split_once('=').ok_or("expected ID=PORT")?;
    Ok((
        id.parse().map_err(|e| format!("{e}"))?,
        port.parse().map_err(|e| format!("{e}"))?,
    ))
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    HumanDuration::parse(s)
        .map(HumanDuration::as_duration)
        .map_err(|e| e.to_string())
}

pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// [`main`] with explicit arguments (the first is the program name): lets another binary
/// (the benchmark) run Spindle's command line in its own process.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    if args.get(1).is_some_and(|a| a == local::orphans::SUBCOMMAND) {
        // A child of `spindle run` becoming its program (never returns on success).
        let error = match local::orphans::parse(&args[2..]) {
            Ok((parent, program)) => local::orphans::exec(parent, program),
            Err(e) => e,
        };
        eprintln!("spindle: {error}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse_from(args);
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
                workers: a.workers,
                stop_timeout: a.stop_timeout,
                live_status: !a.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            })
            .await
        }
        Command::Worker(a) => {
            let spec = spindle_spec::load_file(&a.file)?;
            let cluster = discover(&DiscoveryInput {
                index: a.index,
                peers: a.peers,
                pod_name: a.pod_name,
                statefulset: a.statefulset,
                service: a.peer_service,
                namespace: a.namespace.clone(),
                peer_port: a.peer_port,
                workers: spec.spec.workers.max(1),
            })?;
            let peer_addr = a
                .peer_addr
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], a.peer_port)));
            serve(ServeOptions {
                app_file: a.file,
                cluster,
                ingress_addr: a.ingress_addr,
                admin_addr: a.admin_addr,
                peer_addr,
                data_dir: a.data_dir,
                function_ports: a.function_port,
                echo_egress: a.echo_egress,
                stop_timeout: a.stop_timeout,
                tls_dir: a.tls_dir,
                namespace: a.namespace,
                application_uid: a.application_uid,
            })
            .await
        }
        Command::DeadLetters(cmd) => dead_letters::run(cmd).await,
        Command::Status(args) => status::run(args).await,
        Command::State(cmd) => state::run(cmd).await,
        Command::Checkpoints(CheckpointsCommand::Save { name, admin, token }) => {
            checkpoints::save(&name, &admin, token.as_deref()).await
        }
        Command::Checkpoints(CheckpointsCommand::List { at }) => checkpoints::list(&at).await,
        Command::Checkpoints(CheckpointsCommand::Inspect { which, at }) => checkpoints::inspect(&which, &at).await,
        Command::Checkpoints(CheckpointsCommand::Delete {
            storage,
            application,
            namespace,
        }) => {
            let root = crate::app::AppIdentity {
                namespace,
                name: application,
                uid: None,
            }
            .storage_root();
            let store = crate::checkpoint::store::CheckpointStore::open(&storage, &std::env::current_dir()?, &root)?;
            let deleted = store.delete_all().await?;
            println!("{}: deleted {deleted} objects", store.describe());
            Ok(())
        }
        Command::Import { file, name } => {
            use spindle_spec::module_yaml;
            let text =
                std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let origin = file.display().to_string();
            anyhow::ensure!(
                module_yaml::is_module(&text),
                "{origin} is not a StateFun module (no `kind: io.statefun.…` document)"
            );
            let name = name.unwrap_or_else(|| spindle_spec::module_name(&file));
            let imported = module_yaml::import(&text, &origin, &name)?;
            print!("{}", module_yaml::to_yaml(&imported, &origin));
            Ok(())
        }
        Command::Validate { file } => {
            let app = spindle_spec::load_file(&file)?;
            let module = std::fs::read_to_string(&file).is_ok_and(|t| spindle_spec::module_yaml::is_module(&t));
            println!(
                "{}: {}application `{}` is valid ({} functions, {} ingresses, {} egresses)",
                file.display(),
                if module { "StateFun module, imported as " } else { "" },
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
        .unwrap_or_else(|_| EnvFilter::new("info,rskafka=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
