use anyhow::Context;
use quayside::{Config, Listeners};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

// The control plane (admin API, registry, Docker watcher, health checks) is light and runs on
// one thread; the proxy runs on its own worker threads (`--workers`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("QUAYSIDE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let config = Config::from_args()?;
    let proxy = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} for the proxy; pick another address with --listen",
            config.listen
        )
    })?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the admin API; pick another address with --admin-listen",
                config.admin_listen
            )
        })?;
    let tls = if config.tls.certs.is_empty() {
        None
    } else {
        let l = TcpListener::bind(config.tls.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} for HTTPS; pick another address with --tls-listen",
                    config.tls.listen
                )
            })?;
        tracing::info!(addr = %l.local_addr()?, "HTTPS proxy listening");
        Some(l)
    };
    tracing::info!(addr = %proxy.local_addr()?, "proxy listening");
    tracing::info!(addr = %admin.local_addr()?, "admin API listening");
    if let Some(state) = &config.state {
        tracing::info!(path = %state.display(), "state file");
    }

    quayside::run(Listeners { proxy, admin, tls }, config, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
