use std::net::SocketAddr;

use quayside::{Config, Listeners};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A user error at start-up is one line and exit code 1: no `Caused by:` list that repeats
/// what the line already says, and no backtrace even with `RUST_BACKTRACE=1`. (`pub`:
/// examples/quayside-static.rs is this same program, linked statically for the tests' images.)
pub fn main() -> std::process::ExitCode {
    // The control plane (admin API, registry, Docker watcher, health checks) is light and runs
    // on one thread; the proxy runs on its own worker threads (`--workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(start()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quayside: error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause only if the line does not say it yet.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn start() -> anyhow::Result<()> {
    let config = Config::from_args()?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("QUAYSIDE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if config.log_json {
        logs.json().init();
    } else {
        // (Control characters in field values escaped: one event, one line.)
        logs.fmt_fields(quayside::logging::EscapedFields)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }

    if config.healthcheck {
        return healthcheck(&config).await;
    }
    // SIGHUP and SIGUSR1 end a process by default: from here on they never do (`run` says
    // what it does with them; one that comes while the state loads is simply not acted on).
    for kind in [
        tokio::signal::unix::SignalKind::hangup(),
        tokio::signal::unix::SignalKind::user_defined1(),
    ] {
        let _ = tokio::signal::unix::signal(kind);
    }
    if let Some(action) = &config.state_action {
        return state(&config, action).await;
    }
    // Before binding anything: the refusal is then the only line.
    quayside::check_before_binding(&config)?;
    let opened = quayside::open_state(&config).await?;
    let proxy = bind(config.listen, "the proxy", "--listen").await?;
    let admin = bind(config.admin_listen, "the admin API", "--admin-listen").await?;
    let tls = if config.tls.certs.is_empty() && config.acme.is_none() {
        None
    } else {
        let l = bind(config.tls.listen, "HTTPS", "--tls-listen").await?;
        tracing::info!(addr = %l.local_addr()?, "HTTPS proxy listening");
        Some(l)
    };
    tracing::info!(addr = %proxy.local_addr()?, "proxy listening");
    tracing::info!(addr = %admin.local_addr()?, "admin API listening");
    if let (Some(state), quayside::config::StateStore::File) = (&config.state, &config.state_store)
    {
        tracing::info!(path = %state.display(), "state file");
    }

    // (After the checks above, so that a refused start is one line.)
    quayside::raise_open_files_limit();
    quayside::run_opened(
        Listeners { proxy, admin, tls },
        config,
        opened,
        shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

/// `quayside healthcheck`: ask /readyz; the answer's body is printed, and anything but 200 is
/// an error (one line, exit 1).
async fn healthcheck(config: &Config) -> anyhow::Result<()> {
    let cert = config.admin.tls.as_ref().map(|(cert, _)| cert.as_path());
    let body = quayside::admin::healthcheck::ask(config.admin_listen, cert).await?;
    println!("{body}");
    Ok(())
}

/// `quayside state export|import`.
async fn state(config: &Config, action: &quayside::config::StateAction) -> anyhow::Result<()> {
    use quayside::config::StateAction;
    match action {
        StateAction::Export { file } => {
            let bytes = quayside::state_export(config).await?;
            match file {
                Some(path) => write_private(path, &bytes)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
                None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
            }
        }
        StateAction::Import { file } => {
            let path = file.display().to_string();
            let bytes =
                std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?;
            let n = quayside::state_import(config, &path, &bytes).await?;
            eprintln!("imported {n} manual entries from {path}");
        }
    }
    Ok(())
}

/// Write a file only its owner can read (an export holds password hashes and header secrets).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    quayside::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for {what} ({e}); pick another address with {flag}"
        )
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
