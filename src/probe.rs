//! Active health checks, the task: probes the backends of every service that asks for them, on
//! the service's interval, reading the routing table, and feeds the results to each backend's
//! [`BackendStats`](crate::health::BackendStats). The pure steps and the per-backend record are
//! in [`health`](crate::health), below the routing table; this task sits above it.

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
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let table = shared.table.load_full();
        let now = now_ms();
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
