//! The routing table: an immutable snapshot built from the registry and read per request.
//!
//! [`RoutingTable::build`] is pure apart from carrying runtime state over from the previous
//! snapshot: each backend's [`BackendStats`] (in-flight count, health, latency) and each
//! round-robin position survive a rebuild, so an unrelated change resets nothing. The data
//! plane loads the current table from an `ArcSwap` (no lock), finds the service with
//! [`RoutingTable::route`] and asks its balancer for a backend.

mod matcher;

pub use matcher::Matcher;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::uri::Authority;

use crate::balance::{Balancer, Load, rng};
use crate::health::{BackendStats, now_ms};
use crate::registry::{AdminState, DEFAULT_SERVICE, HealthCheck, Registry};

/// A backend as the data plane sees it.
#[derive(Debug)]
pub struct Upstream {
    pub no: String,
    pub addr: SocketAddr,
    /// `ip:port`, ready for the upstream request URI.
    pub authority: Authority,
    pub weight: u32,
    pub stats: Arc<BackendStats>,
    /// Slow-start ramp time of its service (0: off).
    pub slow_start_ms: u64,
    /// Speak HTTP/2 (h2c) to it.
    pub h2c: bool,
    /// This backend's keepalive pool, created on first use. It is carried over to the next
    /// table while the backend stays routed; once the backend is drained or removed the last
    /// reference goes with its last in-flight request, and its idle connections are closed.
    pub pool: Arc<PoolSlot>,
}

/// Lazily created connection pools for one backend: one per proxy worker thread, so a request
/// and the connection it uses are driven by the same thread.
#[derive(Default)]
pub struct PoolSlot([std::sync::OnceLock<crate::proxy::UpstreamClient>; MAX_WORKERS]);

/// Most proxy worker threads with a pool of their own (more share pools round the ring).
pub const MAX_WORKERS: usize = 16;

impl PoolSlot {
    pub fn for_worker(&self, worker: usize) -> &std::sync::OnceLock<crate::proxy::UpstreamClient> {
        &self.0[worker % MAX_WORKERS]
    }
}

impl std::fmt::Debug for PoolSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.0.iter().filter(|s| s.get().is_some()).count();
        write!(f, "PoolSlot({open} open)")
    }
}

impl Load for Upstream {
    #[inline]
    fn available(&self) -> bool {
        self.stats.available(now_ms())
    }
    #[inline]
    fn in_flight(&self) -> u32 {
        self.stats.in_flight.load(Ordering::Relaxed)
    }
    fn latency_ms(&self) -> f64 {
        self.stats.ewma_ms(now_ms())
    }
    fn weight(&self) -> u32 {
        self.weight
    }
    fn ramp(&self) -> f64 {
        if self.slow_start_ms == 0 {
            return 1.0;
        }
        let age = now_ms().saturating_sub(self.stats.since_ms.load(Ordering::Relaxed));
        slow_start_ramp(age, self.slow_start_ms)
    }
}

/// Share of a backend `age_ms` into a `slow_start_ms` ramp: linear, from 5 % to 100 %.
pub fn slow_start_ramp(age_ms: u64, slow_start_ms: u64) -> f64 {
    if slow_start_ms == 0 {
        return 1.0;
    }
    (age_ms as f64 / slow_start_ms as f64).clamp(0.05, 1.0)
}

/// What the hash strategy hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(http::HeaderName),
    Cookie(String),
}

impl HashKey {
    fn parse(v: Option<&str>) -> HashKey {
        match v.and_then(|v| v.split_once(':')) {
            Some(("header", h)) => http::HeaderName::from_bytes(h.as_bytes())
                .map(HashKey::Header)
                .unwrap_or(HashKey::ClientIp),
            Some(("cookie", c)) => HashKey::Cookie(c.to_owned()),
            _ => HashKey::ClientIp,
        }
    }
}

/// One service: its routable backends and how to pick among them.
#[derive(Debug)]
pub struct ServiceRoute {
    pub name: String,
    /// Prefix removed from the path before forwarding.
    pub strip_prefix: Option<String>,
    pub backends: Vec<Arc<Upstream>>,
    pub balancer: Balancer,
    /// `Some` for the hash strategy.
    pub hash_key: Option<HashKey>,
    pub sticky_cookie: Option<String>,
    pub health: Option<HealthCheck>,
}

impl ServiceRoute {
    /// A backend for a request whose hash key is `key` (0 unless the strategy hashes).
    #[inline]
    pub fn pick(&self, key: u64) -> Option<&Arc<Upstream>> {
        self.balancer
            .pick(&self.backends, key, &mut rng::next)
            .map(|i| &self.backends[i])
    }

    /// A pick that is none of `tried` (for a retry), if the service has one.
    pub fn pick_other(&self, key: u64, tried: &[Arc<Upstream>]) -> Option<&Arc<Upstream>> {
        let fresh = |u: &&Arc<Upstream>| !tried.iter().any(|t| Arc::ptr_eq(t, u));
        (0..self.backends.len())
            .filter_map(|_| self.pick(key))
            .find(fresh)
            .or_else(|| self.backends.iter().filter(fresh).find(|u| u.available()))
    }

    /// The backend named `no`, if it is in this service and available (sticky sessions).
    pub fn by_no(&self, no: &str) -> Option<&Arc<Upstream>> {
        self.backends
            .iter()
            .find(|u| u.no == no)
            .filter(|u| u.available())
    }
}

#[derive(Debug)]
pub struct RoutingTable {
    services: Vec<Arc<ServiceRoute>>,
    matcher: Matcher,
    default: usize,
    /// Service index by name (the next build looks up each service's previous balancer).
    by_name: HashMap<String, usize>,
    /// Runtime records of every registered backend, routed or not (draining ones too).
    stats: HashMap<String, (SocketAddr, Arc<BackendStats>)>,
    /// The routed backends by `no`: the next build reuses them (or just their pools) when
    /// unchanged.
    upstreams: HashMap<String, Arc<Upstream>>,
}

impl RoutingTable {
    /// An empty table: every request gets 503 from the `default` service.
    pub fn empty() -> Self {
        Self::build(&Registry::new(), None)
    }

    /// Build from the registry, carrying runtime state over from `prev`.
    pub fn build(reg: &Registry, prev: Option<&RoutingTable>) -> Self {
        let names = reg.service_names();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let configs: Vec<_> = names.iter().map(|n| reg.service_config(n)).collect();
        let mut members: Vec<Vec<Arc<Upstream>>> = vec![Vec::new(); names.len()];
        let mut stats = HashMap::new();
        let mut upstreams = HashMap::new();
        for e in reg.entries() {
            let addr = e.spec.socket_addr();
            // Same backend (no and address) as before: keep its counters and health.
            let st = prev
                .and_then(|p| p.stats.get(&e.spec.no))
                .filter(|(a, _)| *a == addr)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            stats.insert(e.spec.no.clone(), (addr, st.clone()));
            if e.spec.state != AdminState::Active {
                continue;
            }
            let Some(&i) = index.get(e.spec.service.as_str()) else {
                continue;
            };
            let h2c = configs[i].0.protocol == crate::registry::Protocol::H2c;
            let before = prev.and_then(|p| p.upstreams.get(&e.spec.no));
            // Same address and protocol as when it was last routed: keep its open connections.
            let pool = before
                .filter(|u| u.addr == addr && u.h2c == h2c)
                .map(|u| u.pool.clone())
                .unwrap_or_default();
            let slow_start_ms = configs[i]
                .0
                .slow_start
                .map(|d| d.0.as_millis() as u64)
                .unwrap_or(0);
            // Unchanged since the last table: share the same record (no allocation).
            let same = before
                .filter(|u| {
                    u.addr == addr
                        && u.weight == e.spec.weight
                        && u.slow_start_ms == slow_start_ms
                        && u.h2c == h2c
                        && Arc::ptr_eq(&u.pool, &pool)
                        && Arc::ptr_eq(&u.stats, &st)
                })
                .cloned();
            let up = same.unwrap_or_else(|| {
                Arc::new(Upstream {
                    no: e.spec.no.clone(),
                    addr,
                    authority: addr
                        .to_string()
                        .parse()
                        .expect("a socket address is a valid authority"),
                    weight: e.spec.weight,
                    stats: st,
                    slow_start_ms,
                    h2c,
                    pool,
                })
            });
            upstreams.insert(e.spec.no.clone(), up.clone());
            members[i].push(up);
        }
        let mut rules = Vec::new();
        let services: Vec<Arc<ServiceRoute>> = names
            .iter()
            .zip(members)
            .zip(configs)
            .enumerate()
            .map(|(i, ((name, backends), (cfg, by_operator)))| {
                for h in cfg.hosts.iter().map(Some).chain(
                    cfg.hosts
                        .is_empty()
                        .then_some(None)
                        .filter(|_| cfg.path_prefix.is_some()),
                ) {
                    let rule = (h.cloned(), cfg.path_prefix.clone().unwrap_or_default(), i);
                    rules.push((!by_operator, rule));
                }
                let weights: Vec<u32> = backends.iter().map(|u| u.weight).collect();
                let keys: Vec<&str> = backends.iter().map(|u| u.no.as_str()).collect();
                let prev_balancer = prev.and_then(|p| p.service(name)).map(|s| &s.balancer);
                Arc::new(ServiceRoute {
                    name: name.clone(),
                    strip_prefix: cfg.path_prefix.clone().filter(|_| cfg.strip_prefix),
                    balancer: Balancer::build(cfg.lb, &weights, &keys, prev_balancer),
                    backends,
                    hash_key: (cfg.lb == crate::registry::Strategy::Hash)
                        .then(|| HashKey::parse(cfg.hash_key.as_deref())),
                    sticky_cookie: cfg.sticky_cookie.clone(),
                    health: cfg.health.clone(),
                })
            })
            .collect();
        // Operators' rules first: on an identical rule the matcher keeps the first.
        rules.sort_by_key(|(from_labels, _)| *from_labels);
        let rules = rules.into_iter().map(|(_, r)| r).collect();
        let default = index[DEFAULT_SERVICE];
        let by_name = index.iter().map(|(n, i)| (n.to_string(), *i)).collect();
        RoutingTable {
            services,
            matcher: Matcher::new(rules),
            default,
            by_name,
            stats,
            upstreams,
        }
    }

    /// The service for a request to `host` (no port, any case) and `path`.
    #[inline]
    pub fn route(&self, host: &str, path: &str) -> &Arc<ServiceRoute> {
        let i = self.matcher.find(host, path).unwrap_or(self.default);
        &self.services[i]
    }

    pub fn service(&self, name: &str) -> Option<&Arc<ServiceRoute>> {
        self.by_name.get(name).map(|&i| &self.services[i])
    }

    pub fn services(&self) -> &[Arc<ServiceRoute>] {
        &self.services
    }

    /// Runtime record of the backend `no`, routed or not.
    pub fn stats(&self, no: &str) -> Option<&Arc<BackendStats>> {
        self.stats.get(no).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{BackendSpec, Command, ServiceConfig};

    fn add(r: &mut Registry, no: &str, port: u16, service: &str, weight: u32) {
        r.apply(Command::Upsert(BackendSpec {
            no: no.into(),
            addr: "127.0.0.1".parse().unwrap(),
            port,
            weight,
            service: service.into(),
            state: AdminState::Active,
        }))
        .unwrap();
    }

    #[test]
    fn build_routes_by_host_and_skips_inactive() {
        let mut r = Registry::new();
        add(&mut r, "a", 1, "default", 1);
        add(&mut r, "b", 2, "api", 1);
        add(&mut r, "c", 3, "api", 1);
        r.apply(Command::SetState {
            no: "c".into(),
            state: AdminState::Draining,
        })
        .unwrap();
        r.apply(Command::PutService {
            name: "api".into(),
            config: ServiceConfig {
                hosts: vec!["api.example.com".into()],
                ..Default::default()
            },
        })
        .unwrap();
        let t = RoutingTable::build(&r, None);
        let s = t.route("api.example.com", "/x");
        assert_eq!(s.name, "api");
        assert_eq!(s.backends.len(), 1);
        assert_eq!(s.pick(0).unwrap().no, "b");
        assert_eq!(t.route("other", "/").name, "default");
        assert_eq!(
            t.route("other", "/").pick(0).unwrap().authority,
            "127.0.0.1:1"
        );
        // The draining one still has a runtime record (its in-flight requests).
        assert!(t.stats("c").is_some());
    }

    #[test]
    fn runtime_state_survives_rebuilds_unless_the_address_changes() {
        let mut r = Registry::new();
        add(&mut r, "a", 1, "default", 1);
        add(&mut r, "b", 2, "default", 1);
        let t1 = RoutingTable::build(&r, None);
        t1.stats("a")
            .unwrap()
            .requests
            .fetch_add(7, Ordering::Relaxed);
        add(&mut r, "c", 3, "default", 1);
        let t2 = RoutingTable::build(&r, Some(&t1));
        assert_eq!(t2.stats("a").unwrap().requests.load(Ordering::Relaxed), 7);
        add(&mut r, "a", 9, "default", 1); // moved: a new backend
        let t3 = RoutingTable::build(&r, Some(&t2));
        assert_eq!(t3.stats("a").unwrap().requests.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn pools_survive_rebuilds_but_not_a_drain() {
        let mut r = Registry::new();
        add(&mut r, "a", 1, "default", 1);
        let t1 = RoutingTable::build(&r, None);
        let pool = |t: &RoutingTable| t.route("x", "/").backends.first().map(|u| u.pool.clone());
        add(&mut r, "b", 2, "other", 1);
        let t2 = RoutingTable::build(&r, Some(&t1));
        assert!(Arc::ptr_eq(&pool(&t1).unwrap(), &pool(&t2).unwrap()));
        r.apply(Command::SetState {
            no: "a".into(),
            state: AdminState::Draining,
        })
        .unwrap();
        let t3 = RoutingTable::build(&r, Some(&t2));
        assert!(pool(&t3).is_none());
        r.apply(Command::SetState {
            no: "a".into(),
            state: AdminState::Active,
        })
        .unwrap();
        let t4 = RoutingTable::build(&r, Some(&t3));
        assert!(!Arc::ptr_eq(&pool(&t1).unwrap(), &pool(&t4).unwrap()));
    }

    #[test]
    fn slow_start_ramps_the_share_up() {
        let mut r = Registry::new();
        add(&mut r, "a", 1, "default", 1);
        r.apply(Command::PutService {
            name: "default".into(),
            config: ServiceConfig {
                slow_start: Some(crate::registry::Dur(std::time::Duration::from_secs(100))),
                ..Default::default()
            },
        })
        .unwrap();
        let t = RoutingTable::build(&r, None);
        let a = &t.route("x", "/").backends[0];
        assert_eq!(a.slow_start_ms, 100_000);
        assert!(a.ramp() < 0.1, "{}", a.ramp());
        assert_eq!(slow_start_ramp(0, 1000), 0.05);
        assert_eq!(slow_start_ramp(500, 1000), 0.5);
        assert_eq!(slow_start_ramp(5000, 1000), 1.0);
        assert_eq!(slow_start_ramp(0, 0), 1.0);
        // A lone backend ramping up still gets every request (nothing else to send to).
        assert!((0..20).all(|_| t.route("x", "/").pick(0).is_some()));
    }

    #[test]
    fn empty_table_has_default_without_backends() {
        let t = RoutingTable::empty();
        let s = t.route("x", "/");
        assert_eq!(s.name, "default");
        assert!(s.pick(0).is_none());
    }
}
