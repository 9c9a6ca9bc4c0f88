//! quayside: a reverse proxy for services that run in Docker, with a runtime API to add, pin,
//! drain and remove backends.
//!
//! # Layout
//!
//! Changes flow one way: sources → registry → routing table → data plane. The modules form
//! layers, listed here bottom up, each importing only from those above it in this list
//! (`tests/layers.rs` checks this).
//!
//! - [`types`]: small values every layer shares (durations as settings, labels and JSON write
//!   them).
//! - [`balance`]: the balancing strategies and backend selection (smooth weighted round-robin,
//!   random, p2c, least connections, Maglev), built once per snapshot and queried per request
//!   without locks.
//! - [`health`]: passive ejection, active-probe state and latency estimates as pure steps, and
//!   the per-backend atomics ([`health::BackendStats`]) the data plane updates.
//! - [`registry`]: the single owner of the merged backend set. Pure [`registry::Registry`] state
//!   changed by [`registry::Command`]s; a task ([`registry::Handle`], for the routing table [`routing::Handle`]) applies them in batches,
//!   saves the state file and publishes a new routing table with one atomic swap.
//! - [`middleware`]: a service's middlewares (redirect, IP allow-list, rate limit, basic and
//!   forward auth, headers, compression) compiled from its settings, with the pure steps the
//!   request plan runs on both fronts.
//! - [`routing`]: the immutable [`routing::RoutingTable`] snapshot: host/path matching and each
//!   service's backends and balancer. Built purely from the registry.
//! - [`probe`] and [`discovery`], the observers: the task that probes backends for active health
//!   checks; the discovery sources, each with an identity of its own
//!   ([`registry::SourceId`]) whose sync replaces only its own entries and whose status has one
//!   shape ([`discovery::sources`]): today the Docker watcher (bollard adapter) and the pure
//!   label/container evaluation behind it.
//! - [`proxy`]: the data plane: reads the current table without locks, forwards over keepalive
//!   pools, classifies failures into 502/503/504. One request plan (`proxy::plan`) serves two
//!   fronts: plain HTTP/1.1 requests take a byte-level fast path (httparse, pure rewriting in
//!   `proxy/codec/`); everything else (TLS, HTTP/2, upgrades, chunked uploads, odd framing) is
//!   served by hyper. `proxy/upstream/` holds the backend pools, `proxy/server/` the workers.
//! - [`acme`]: automatic HTTPS: the task that orders, keeps (files, or Swarm configs shared by
//!   replicas) and renews a certificate for each service's host name (instant-acme), with its
//!   pure schedule (renewal, backoff, the CA's rate limits); the proxy serves what it obtains
//!   and answers its challenges.
//! - [`metrics`] and [`access_log`], the request plan's observers: Prometheus counters
//!   gathered per worker, and the access log's buffers and writer thread.
//! - [`stats`]: the dashboard's figures: the metrics' counts sampled once a second into rings
//!   of the last minutes per service and backend.
//! - [`admin`]: the admin API (axum) on its own listener: the seed-compatible `/add`, `/get`,
//!   `/delete`, a JSON REST API under `/api/v1` (events and figures included), `/metrics`,
//!   `/readyz`, its OpenAPI document (built from the handlers' types) and the dashboard at
//!   `/dashboard/` (files embedded in the binary); its guard checks tokens, the `Host` and
//!   cross-site marks.
//! - [`config`]: flags, `QUAYSIDE_*` variables and the TOML file.
//! - this file: [`run`], which wires them together.
//!
//! [`run`] takes already-bound listeners, so tests bind port 0 and run the real server
//! in-process; [`run_with`] also takes the data plane's runtime handle ([`proxy::Runtime`]),
//! whose counters the caller can read while it runs.

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod balance;
pub mod config;
pub mod discovery;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod middleware;
pub mod probe;
pub mod proxy;
pub mod registry;
pub mod routing;
pub mod stats;
pub mod types;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
use registry::persist::{self, StateError};

/// The bound sockets quayside serves on.
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
    /// The HTTPS listener; needed when `config.tls` has certificates.
    pub tls: Option<TcpListener>,
}

/// Why quayside could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Tls(#[from] proxy::tls::TlsError),
    #[error("TLS is on (certificates or automatic HTTPS) but no TLS listener was given")]
    NoTlsListener,
    #[error(
        "automatic HTTPS (--acme-email) keeps its certificates beside the state file or in the swarm: it needs --state or --state-store swarm"
    )]
    AcmeStore,
    #[error(transparent)]
    Docker(#[from] discovery::docker::EndpointError),
    #[error(
        "the admin API would listen on {addr} without a token: anyone who reaches it could change routing. Set --admin-token (or QUAYSIDE_ADMIN_TOKEN, or --admin-token-file), listen on a loopback address, or pass --admin-insecure to accept the risk"
    )]
    AdminOpen { addr: std::net::SocketAddr },
    #[error("cannot read the admin listener's address: {0}")]
    AdminAddr(std::io::Error),
    #[error(transparent)]
    AccessLog(#[from] access_log::OpenError),
    #[error(transparent)]
    SwarmStore(#[from] registry::swarm_store::StoreError),
    #[error("{path}: {reason}")]
    Import { path: String, reason: String },
}

/// The Docker endpoint the Swarm state store uses: the first one, resolved.
fn store_endpoint(config: &Config) -> Result<String, StartError> {
    let first = config.docker.endpoints.first().and_then(|e| e.host.clone());
    Ok(discovery::docker::resolve_endpoint(first.as_deref())?)
}

/// Open the configured store: the state it holds (if any) and the store.
async fn open_store(
    config: &Config,
) -> Result<(Option<registry::Registry>, Option<registry::actor::Store>), StartError> {
    use registry::actor::Store;
    Ok(match (&config.state_store, &config.state) {
        (config::StateStore::Swarm { name }, _) => {
            let endpoint = store_endpoint(config)?;
            let (reg, store) = registry::swarm_store::SwarmStore::open(
                &endpoint,
                name,
                config.docker.instance.as_deref(),
            )
            .await?;
            (reg, Some(Store::Swarm(store)))
        }
        (config::StateStore::File, Some(path)) => {
            let (reg, store) = persist::Store::open(path)?;
            (reg, Some(Store::File(store)))
        }
        (config::StateStore::File, None) => (None, None),
    })
}

/// The configured store, opened: the state it holds and the store itself (a state file's lock
/// taken). See [`open_state`].
pub struct Opened {
    initial: Option<registry::Registry>,
    store: Option<registry::actor::Store>,
}

/// Open the configured store before anything is bound, so that a refusal (a state file another
/// quayside holds, a damaged journal, a Swarm store that cannot work) is the only line; hand
/// the result to [`run_opened`].
pub async fn open_state(config: &Config) -> Result<Opened, StartError> {
    let (initial, store) = open_store(config).await?;
    Ok(Opened { initial, store })
}

/// The open-files limit (`RLIMIT_NOFILE`): soft and hard.
fn open_files_limit() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return (1024, 1024);
    }
    (r.rlim_cur, r.rlim_max)
}

/// Bind a listener on `addr`. IPv6's unspecified address (what `:PORT` reads as) takes IPv4
/// clients too, whatever the system's `net.ipv6.bindv6only` says; on a host without IPv6 it
/// is IPv4's `0.0.0.0` instead. (The fronts see IPv4 clients by their IPv4 address, not as
/// `::ffff:a.b.c.d`.)
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    if addr.ip() != Ipv6Addr::UNSPECIFIED {
        return TcpListener::bind(addr).await;
    }
    let dual = || -> std::io::Result<TcpListener> {
        use std::os::fd::AsRawFd;
        let socket = tokio::net::TcpSocket::new_v6()?;
        socket.set_reuseaddr(true)?;
        let off: libc::c_int = 0;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes of `off`, which lives through it.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&off as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        socket.bind(addr)?;
        socket.listen(1024)
    };
    match dual() {
        Err(e)
            if e.raw_os_error() == Some(libc::EAFNOSUPPORT)
                || e.kind() == std::io::ErrorKind::AddrNotAvailable =>
        {
            TcpListener::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port())).await
        }
        other => other,
    }
}

/// Raise the soft open-files limit to the hard one, as Go's runtime and HAProxy do (a proxy
/// holds two descriptors per proxied connection, and distributions start services at 1,024),
/// and say what it is.
pub fn raise_open_files_limit() {
    let (soft, hard) = open_files_limit();
    if soft >= hard {
        tracing::info!(limit = soft, "open-files limit");
        return;
    }
    let r = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given, nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
        tracing::info!(
            from = soft,
            to = hard,
            "raised the open-files limit to its hard limit"
        );
    } else {
        let e = std::io::Error::last_os_error();
        tracing::warn!(limit = soft, hard, error = %e, "could not raise the open-files limit; quayside may run out of descriptors under many connections (raise it with ulimit -n)");
    }
}

/// `quayside state export`: the stored state, in the state file's format.
pub async fn state_export(config: &Config) -> Result<Vec<u8>, StartError> {
    // (No state file yet: nothing to read, and nothing to create by reading.)
    if let (config::StateStore::File, Some(path)) = (&config.state_store, &config.state)
        && !path.exists()
        && !persist::journal_path(path).exists()
    {
        return Ok(persist::encode(&registry::Registry::default()));
    }
    // A state file is read as it is, without its lock: a running quayside's too.
    let reg = match (&config.state_store, &config.state) {
        (config::StateStore::File, Some(path)) => persist::load(path)?,
        _ => open_store(config).await?.0,
    };
    Ok(persist::encode(&reg.unwrap_or_default()))
}

/// `quayside state import`: replace the stored state with `bytes` (the state file's format,
/// checked first). Returns the number of manual entries it holds.
pub async fn state_import(config: &Config, path: &str, bytes: &[u8]) -> Result<usize, StartError> {
    let reg = persist::decode(bytes).map_err(|reason| StartError::Import {
        path: path.to_owned(),
        reason,
    })?;
    let count = reg.manual().len();
    match open_store(config).await? {
        (_, Some(registry::actor::Store::Swarm(mut store))) => loop {
            match store.save(&reg).await {
                Ok(()) => break,
                // Another replica wrote meanwhile: on top of the newest, then.
                Err(registry::swarm_store::StoreError::Taken(_)) => {
                    if let Some((g, _)) = store.newest().await? {
                        store.adopted(g);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        },
        (_, Some(registry::actor::Store::File(mut store))) => store.compact(&reg)?,
        (_, None) => {}
    }
    Ok(count)
}

/// What can be refused before anything is bound (the refusal is then the only line): an admin
/// API beyond loopback needs a token, or the explicit `--admin-insecure`, and every Docker
/// endpoint must be one quayside can speak to.
pub fn check_before_binding(config: &Config) -> Result<(), StartError> {
    let addr = config.admin_listen;
    if config.admin.token.is_none() && !addr.ip().is_loopback() && !config.admin.insecure {
        return Err(StartError::AdminOpen { addr });
    }
    if config.docker.enabled {
        if config.docker.endpoints.is_empty() {
            discovery::docker::resolve_endpoint(None)?;
        }
        for e in &config.docker.endpoints {
            discovery::docker::resolve_endpoint(e.host.as_deref())?;
        }
    }
    Ok(())
}

/// Load the state file, start the registry, serve the proxy and the admin API until `shutdown`
/// completes, then stop accepting, let in-flight requests finish (bounded by
/// `config.proxy.shutdown_timeout`) and return.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run_with(listeners, config, Arc::default(), shutdown).await
}

/// [`run`] on a store opened already ([`open_state`]).
pub async fn run_opened(
    listeners: Listeners,
    config: Config,
    opened: Opened,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    serve(listeners, config, Arc::default(), Some(opened), shutdown).await
}

/// [`run`] with a data-plane runtime handle of the caller's, to read its counters (parked
/// connections) while it runs.
pub async fn run_with(
    listeners: Listeners,
    config: Config,
    runtime: Arc<proxy::Runtime>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    serve(listeners, config, runtime, None, shutdown).await
}

async fn serve(
    listeners: Listeners,
    mut config: Config,
    runtime: Arc<proxy::Runtime>,
    opened: Option<Opened>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let open_files = open_files_limit().0;
    let admin_addr = listeners
        .admin
        .local_addr()
        .map_err(StartError::AdminAddr)?;
    if config.admin.token.is_none() && !admin_addr.ip().is_loopback() {
        if !config.admin.insecure {
            return Err(StartError::AdminOpen { addr: admin_addr });
        }
        tracing::warn!(addr = %admin_addr, "the admin API listens beyond loopback without a token (--admin-insecure): anyone who reaches it can change routing; set --admin-token");
    }
    let admin_tls = match &config.admin.tls {
        Some((cert, key)) => Some(Arc::new(proxy::tls::Tls::new(
            std::slice::from_ref(cert),
            std::slice::from_ref(key),
            None,
        )?)),
        None => None,
    };
    // The Docker endpoints, their hosts resolved (none without Docker discovery).
    let endpoints = if config.docker.enabled {
        let mut list = config.docker.endpoints.clone();
        if list.is_empty() {
            list.push(discovery::docker::Endpoint {
                name: discovery::docker::DEFAULT_NAME.to_owned(),
                ..Default::default()
            });
        }
        for e in &mut list {
            e.host = Some(discovery::docker::resolve_endpoint(e.host.as_deref())?);
        }
        list
    } else {
        Vec::new()
    };
    let Opened { initial, store } = match opened {
        Some(o) => o,
        None => open_state(&config).await?,
    };
    match (&config.state_store, &config.state, &initial) {
        (config::StateStore::Swarm { name }, _, reg) => {
            tracing::info!(name = %name, backends = reg.as_ref().map_or(0, |r| r.entries().count()), "state kept in the swarm (configs {name}-<generation>)");
        }
        (_, Some(path), Some(r)) => {
            tracing::info!(path = %path.display(), backends = r.entries().count(), "loaded state file");
        }
        (_, Some(path), None) => {
            tracing::info!(path = %path.display(), "no state file yet; it will be created on the first change");
        }
        _ => {}
    }
    let initial = initial.unwrap_or_default();
    // Automatic HTTPS: what it obtains is served by the TLS listener, and its HTTP-01
    // challenges answered by the plain one.
    let keep = match (&config.acme, &config.state_store, &config.state) {
        (None, _, _) => None,
        (Some(a), config::StateStore::File, Some(state)) => Some(acme::keep::Keep::Disk(
            acme::store::Disk::beside_for(state, &a.directory, config.docker.instance.as_deref()),
        )),
        (Some(a), config::StateStore::Swarm { name }, _) => {
            let endpoint = store_endpoint(&config)?;
            let unreachable =
                |e: bollard::errors::Error| registry::swarm_store::StoreError::Unreachable {
                    endpoint: endpoint.clone(),
                    reason: e.to_string(),
                };
            let docker = bollard::Docker::connect_with_host(&endpoint)
                .map_err(unreachable)?
                .negotiate_version()
                .await
                .map_err(unreachable)?;
            Some(acme::keep::Keep::Swarm(acme::swarm::SwarmKeep::new(
                docker,
                name,
                &a.directory,
            )))
        }
        (Some(_), config::StateStore::File, None) => return Err(StartError::AcmeStore),
    };
    let acme = match (&config.acme, keep) {
        (Some(a), Some(keep)) => {
            let obtained = Arc::new(proxy::tls::Obtained::default());
            config.proxy.acme = Some(obtained.clone());
            Some(Arc::new(acme::Acme::new(a.clone(), keep, obtained)))
        }
        _ => None,
    };
    let tls = if config.tls.certs.is_empty() && acme.is_none() {
        None
    } else {
        let tls = Arc::new(proxy::tls::Tls::new(
            &config.tls.certs,
            &config.tls.keys,
            config.proxy.acme.clone(),
        )?);
        if listeners.tls.is_none() {
            return Err(StartError::NoTlsListener);
        }
        Some(tls)
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let registry = routing::Handle::spawn(initial, store);
    // The state file's bytes and their parsed copy are gone now: give their memory back (a
    // large state is tens of MB of it).
    proxy::release_freed_memory();
    // With the Swarm store: every other replica's change, as soon as it is written.
    let follower = match &config.state_store {
        config::StateStore::Swarm { name } => {
            let handle = registry.clone();
            Some(tokio::spawn(registry::swarm_store::follow(
                store_endpoint(&config)?,
                name.clone(),
                move |g, reg| {
                    let handle = handle.clone();
                    async move { handle.adopt(g, reg).await }
                },
                stop_rx.clone(),
            )))
        }
        config::StateStore::File => None,
    };
    // Every request's record goes to the metrics (and to a caller's own observer, if any).
    let metrics = Arc::new(metrics::Metrics::default());
    let mut observer: Arc<dyn proxy::plan::Observe> = metrics.clone();
    let access_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (access_log, access_writer) = match config.access_log.clone() {
        Some((target, format)) => {
            let log = access_log::AccessLog::new(format);
            let writer = log.start(target, access_stop.clone())?;
            observer = Arc::new(proxy::plan::Tee(observer, log.clone()));
            (Some(log), Some(writer))
        }
        None => (None, None),
    };
    if let Some(own) = config.proxy.observer.take() {
        observer = Arc::new(proxy::plan::Tee(observer, own));
    }
    config.proxy.observer = Some(observer);
    let saver = registry.clone();

    let sources = discovery::sources::Sources::default();
    let mut watchers = Vec::new();
    for (i, endpoint) in endpoints.into_iter().enumerate() {
        tracing::info!(name = %endpoint.name, endpoint = endpoint.host.as_deref().unwrap_or(""), prefix = %config.docker.label_prefix, instance = config.docker.instance.as_deref().unwrap_or("(none)"), "watching Docker");
        let w = discovery::docker::Watcher::new(
            endpoint,
            i > 0,
            (&config.docker.label_prefix, config.docker.instance.clone()),
            registry.clone(),
            &sources,
        )
        .swarm_poll(config.docker.swarm_poll);
        watchers.push(tokio::spawn(w.run(stop_rx.clone())));
    }
    if watchers.is_empty() {
        tracing::info!("Docker discovery is off (--no-docker)");
    }

    let trimmer = tokio::spawn(proxy::trim_freed_memory(runtime.clone(), stop_rx.clone()));
    let prober = tokio::spawn(probe::run(registry.shared().clone(), stop_rx.clone()));
    let stats = stats::Stats::default();
    let sampler = {
        // The (no, service) pairs, listed again only when the registry has changed.
        let shared = registry.shared().clone();
        let mut seen: (Option<Arc<registry::Registry>>, stats::Listed) = (None, Arc::default());
        tokio::spawn(stats.clone().run(
            metrics.clone(),
            move || {
                let now = shared.registry.load_full();
                if !seen.0.as_ref().is_some_and(|r| Arc::ptr_eq(r, &now)) {
                    let list = now.entries().map(|e| (e.spec.no, e.spec.service)).collect();
                    seen = (Some(now), Arc::new(list));
                }
                seen.1.clone()
            },
            stop_rx.clone(),
        ))
    };
    // Before anything is served, so that neither signal ever ends the process.
    tokio::spawn(on_signals(
        tls.clone(),
        !config.tls.certs.is_empty(),
        access_log.clone(),
        stop_rx.clone(),
    ));
    // The plain listener's workers are 0..n, the TLS listener's n..2n: each its own pools.
    let all_workers = config.proxy.workers * if listeners.tls.is_some() { 2 } else { 1 };
    let proxy = tokio::spawn(proxy::serve_workers(
        proxy::Listener {
            socket: listeners.proxy,
            tls: None,
            first: 0,
        },
        registry.shared().clone(),
        runtime.clone(),
        config.proxy.clone(),
        stop_rx.clone(),
        all_workers,
    ));
    let tls_proxy = match (listeners.tls, &tls) {
        (Some(l), Some(t)) => {
            // Kept certificates first: a restart serves them from its first handshake.
            if let Some(a) = &acme {
                a.reconcile_now(registry.shared(), t).await;
            }
            if !config.tls.certs.is_empty() {
                tracing::info!(
                    pairs = config.tls.certs.len(),
                    "TLS certificates loaded; SIGHUP reloads them"
                );
            }
            Some(tokio::spawn(proxy::serve_workers(
                proxy::Listener {
                    socket: l,
                    tls: Some(t.clone()),
                    first: config.proxy.workers,
                },
                registry.shared().clone(),
                runtime.clone(),
                config.proxy.clone(),
                stop_rx.clone(),
                all_workers,
            )))
        }
        _ => None,
    };
    let acme_task = match (&acme, &tls) {
        (Some(a), Some(t)) => {
            tracing::info!(directory = %a.config.directory, kept_in = %a.kept_in(), challenge = ?a.config.challenge, "automatic HTTPS on: certificates for the services' host names");
            Some(tokio::spawn(a.clone().run(
                registry.shared().clone(),
                t.clone(),
                stop_rx.clone(),
            )))
        }
        _ => None,
    };
    let mut admin_config = config.admin.clone();
    // (Never more of the open-files limit than the admin API's share of it.)
    let caps = admin::server::Limits::for_fd_limit(open_files);
    admin_config.limits.connections = admin_config.limits.connections.min(caps.connections);
    admin_config.limits.event_streams = admin_config.limits.event_streams.min(caps.event_streams);
    let load = admin::server::Load::new(admin_config.limits);
    let admin = tokio::spawn(async move {
        admin::serve(
            listeners.admin,
            admin::Ctx {
                registry,
                discovery: sources,
                tls,
                acme,
                metrics,
                runtime,
                access_log: access_log.clone(),
                stats,
                stop: stop_rx.clone(),
                load,
                synced_generation: Arc::default(),
            },
            &admin_config,
            admin_tls,
            stop_rx,
        )
        .await
    });

    shutdown.await;
    tracing::info!(
        timeout = ?config.proxy.shutdown_timeout,
        "shutting down: stopped accepting; waiting for in-flight requests"
    );
    let _ = stop_tx.send(true);
    for w in watchers {
        let _ = w.await;
    }
    if let Some(f) = follower {
        let _ = f.await;
    }
    if let Some(a) = acme_task {
        let _ = a.await;
    }
    let _ = prober.await;
    let _ = sampler.await;
    let _ = trimmer.await;
    let _ = proxy.await;
    if let Some(t) = tls_proxy {
        let _ = t.await;
    }
    let _ = tokio::time::timeout(config.proxy.shutdown_timeout, admin).await;
    // (Folds the journal into the state file and releases its lock: a quayside started again
    // in this process, or another one, may open it once this returns.)
    saver.close().await;
    // The access log's last lines (requests finished during the shutdown).
    access_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(w) = access_writer {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    Ok(())
}

/// SIGHUP and SIGUSR1, whatever is configured, until `stop` (their default action would end
/// the process, without a drain): SIGHUP reloads what can be reloaded (the TLS certificate
/// files, and the access log, reopened), SIGUSR1 reopens the access log (logrotate's
/// `postrotate`); each says in the log what it did, or that there was nothing to do.
async fn on_signals(
    tls: Option<Arc<proxy::tls::Tls>>,
    files: bool,
    log: Option<Arc<access_log::AccessLog>>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut hup, mut usr1) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) {
        (Ok(h), Ok(u)) => (h, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP and SIGUSR1; reload certificates with POST /api/v1/tls/reload");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let mut done = Vec::new();
                if let Some(t) = tls.as_ref().filter(|_| files) {
                    match t.reload() {
                        Ok(n) => done.push(format!("reloaded {n} TLS certificate pair(s)")),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed; still serving the previous certificates"),
                    }
                }
                if let Some(l) = &log {
                    l.reopen();
                    done.push("reopening the access log".to_owned());
                }
                if done.is_empty() {
                    tracing::info!("SIGHUP: nothing to reload (no TLS certificate files, no access log); going on");
                } else {
                    tracing::info!(done = %done.join("; "), "SIGHUP");
                }
            }
            _ = usr1.recv() => match &log {
                Some(l) => {
                    l.reopen();
                    tracing::info!("SIGUSR1: reopening the access log");
                }
                None => tracing::info!("SIGUSR1: no access log to reopen (see --access-log); going on"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
