//! The `greeter` binary: serve [`functions`](crate::functions) over HTTP until Ctrl-C/SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Reads `HOST` (default `127.0.0.1`) and `PORT` (default 8000), logs per `RUST_LOG` (default
/// `info`), and serves until interrupted.
pub async fn run() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let addr = SocketAddr::new(env_or("HOST", [127, 0, 0, 1].into())?, env_or("PORT", 8000)?);
    let listener = TcpListener::bind(addr).await?;
    eprintln!("greeter functions listening on http://{}", listener.local_addr()?);
    spindle_sdk::serve(listener, Arc::new(crate::functions()), shutdown_signal()).await
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> std::io::Result<T> {
    match std::env::var(name) {
        Ok(value) => value.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name}={value:?} is not valid"),
            )
        }),
        Err(_) => Ok(default),
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM (what Kubernetes and process supervisors send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
