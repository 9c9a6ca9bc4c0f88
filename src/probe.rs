//! Active health checks, the task: probes the backends of every service that asks for them, on
//! the service's interval, reading the routing table, and feeds the results to each backend's
//! [`BackendStats`](crate::health::BackendStats). The pure steps and the per-backend record are
//! in [`health`](crate::health), below the routing table; this task sits above it.
//!
//! It also checks every backend ejected for not answering once its cooldown is over, and every
//! one found stalled, whatever its service's settings: a GET of the service's health path (2xx or 3xx), or of `/` (any
//! answer at all) with a short timeout. Passing lets it back; failing ejects it again, for
//! twice as long. Clients' requests are never the trial.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use crate::health::now_ms;
use crate::routing::Shared;

const TICK: Duration = Duration::from_millis(100);

/// How long a check of a backend ejected for not answering waits (without health settings).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Run until `stop` turns true.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector);
    // Next probe time per (service, backend).
    let mut due: HashMap<(String, String), u64> = HashMap::new();
    // Checks of ejected backends under way, until when.
    let mut checking: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let table = shared.table.load_full();
        let now = now_ms();
        checking.retain(|_, until| *until > now);
        for service in table.services() {
            for up in &service.backends {
                // A stalled backend takes no requests, so no answer of a request's can clear
                // it: only a check can (or, failing, eject it).
                let passive = up.stats.passive();
                let due = crate::health::passive::check_due(passive, now)
                    || (up.stats.stalled() && now >= passive.ejected_until);
                if !due || checking.contains_key(&up.no) {
                    continue;
                }
                let timeout = service
                    .health
                    .as_ref()
                    .map_or(CHECK_TIMEOUT, |h| h.timeout.0);
                checking.insert(up.no.clone(), now + timeout.as_millis() as u64 + 100);
                let path = service.health.as_ref().map(|h| h.path.clone());
                tokio::spawn(readmission(
                    client.clone(),
                    (up.clone(), service.name.clone()),
                    path,
                    timeout,
                    shared.clone(),
                ));
            }
        }
        let mut seen = HashSet::new();
        for service in table.services() {
            let Some(hc) = &service.health else { continue };
            for up in &service.backends {
                let key = (service.name.clone(), up.no.clone());
                let next = due.get(&key).copied().unwrap_or(0);
                seen.insert(key.clone());
                if now < next {
                    continue;
                }
                due.insert(key, now.saturating_add(hc.interval.0.as_millis() as u64));
                let (client, up, hc) = (client.clone(), up.clone(), hc.clone());
                let (shared, service) = (shared.clone(), service.name.clone());
                tokio::spawn(async move {
                    let uri = format!("http://{}{}", up.authority, hc.path);
                    let ok = match uri.parse() {
                        Ok(uri) => matches!(
                            tokio::time::timeout(hc.timeout.0, client.get(uri)).await,
                            Ok(Ok(r)) if r.status().is_success() || r.status().is_redirection()
                        ),
                        Err(_) => false,
                    };
                    let before = up.stats.active().up;
                    let after = up.stats.on_probe(ok, hc.rise, hc.fall);
                    if before != after.up {
                        if after.up {
                            up.stats
                                .since_ms
                                .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
                            tracing::info!(backend = %up.no, path = %hc.path, "health check passes again; backend back in rotation");
                            let why = format!("GET {} passed {} times", hc.path, hc.rise);
                            let registry = shared.registry.load();
                            shared
                                .events
                                .health("health_up", &registry, &up.no, &service, why);
                        } else {
                            tracing::warn!(backend = %up.no, path = %hc.path, fall = hc.fall, "health check failing; backend taken out of rotation until it passes {} times", hc.rise);
                            let why = format!("GET {} failed {} times", hc.path, hc.fall);
                            let registry = shared.registry.load();
                            shared
                                .events
                                .health("health_down", &registry, &up.no, &service, why);
                        }
                    }
                });
            }
        }
        due.retain(|k, _| seen.contains(k));
    }
}

/// Check a backend ejected for not answering: a GET of `path` (2xx or 3xx) or, without one, of
/// `/` (any answer), within `timeout`. Passing lets it back in; failing ejects it again.
async fn readmission(
    client: Client<HttpConnector, Empty<Bytes>>,
    (up, service): (Arc<crate::routing::Upstream>, String),
    path: Option<String>,
    timeout: Duration,
    shared: Arc<Shared>,
) {
    let asked = path.as_deref().unwrap_or("/");
    let uri = format!("http://{}{asked}", up.authority);
    let answer = match uri.parse() {
        Ok(uri) => tokio::time::timeout(timeout, client.get(uri)).await,
        Err(_) => return,
    };
    let ok = match (&answer, &path) {
        (Ok(Ok(r)), Some(_)) => r.status().is_success() || r.status().is_redirection(),
        (Ok(Ok(_)), None) => true,
        _ => false,
    };
    let now = now_ms();
    if ok {
        up.stats.readmit(now);
        tracing::info!(backend = %up.no, path = asked, "a backend ejected for not answering answers a check again; back in rotation");
        let why = format!("GET {asked} answered after an ejection for not answering");
        let registry = shared.registry.load();
        shared
            .events
            .health("health_up", &registry, &up.no, &service, why);
    } else {
        up.stats.on_failure(now, true);
        let p = up.stats.passive();
        tracing::debug!(backend = %up.no, path = asked, cooldown_ms = p.ejected_until.saturating_sub(now), "a backend ejected for not answering failed its check; out again");
    }
}
