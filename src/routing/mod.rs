//! The routing table: an immutable snapshot built from the registry and read per request.
//!
//! [`RoutingTable::build`] is pure apart from carrying runtime state over from the previous
//! snapshot: each backend's [`BackendStats`] (in-flight count, health, latency) and each
//! round-robin position survive a rebuild, so an unrelated change resets nothing. The data
//! plane loads the current table from an `ArcSwap` (no lock), finds the service with
//! [`RoutingTable::route`] and asks its balancer for a backend.

mod matcher;

pub use matcher::Matcher;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::uri::Authority;

use crate::balance::{Balancer, Load, rng};
use crate::health::{BackendStats, now_ms};
use crate::middleware::Middleware;
use crate::registry::{AdminState, Changes, DEFAULT_SERVICE, HealthCheck, Registry};

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
    /// What the data plane keeps for this backend per worker thread (its keepalive
    /// connections), created on first use. It is carried over to the next table while the
    /// backend stays routed; once the backend is drained or removed the last reference goes with
    /// its last in-flight request, and with it the connections.
    pub slots: Arc<WorkerSlots>,
}

/// One slot of [`WorkerSlots`]: filled once by the data plane, with a type of its own that the
/// routing table does not know.
pub type Slot = std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>;

/// Per-worker state of one backend, one slot per worker thread, so a request and the
/// connection it uses are driven by the same thread. Allocated at the first request, for the
/// number of workers the caller says.
#[derive(Default)]
pub struct WorkerSlots(std::sync::OnceLock<Box<[Slot]>>);

impl WorkerSlots {
    /// Worker `worker`'s slot, among `workers` (counted at the first call).
    #[inline]
    pub fn slot(&self, worker: usize, workers: usize) -> &Slot {
        let slots = self
            .0
            .get_or_init(|| (0..workers.max(1)).map(|_| Slot::new()).collect());
        // Past the end only in a process that started more proxies after this backend's
        // first request (tests do): those workers share slots round the ring.
        &slots[worker % slots.len()]
    }
}

impl std::fmt::Debug for WorkerSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self
            .0
            .get()
            .map_or(0, |c| c.iter().filter(|s| s.get().is_some()).count());
        write!(f, "WorkerSlots({open} filled)")
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
    #[inline]
    fn stalled(&self) -> bool {
        self.stats.stalled()
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
    /// Its middlewares (`None`: it has none, and requests skip them at no cost).
    pub middleware: Option<Arc<Middleware>>,
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

/// A registered backend (any state): what the next table carries over for it.
#[derive(Clone, Debug)]
struct Registered {
    addr: SocketAddr,
    stats: Arc<BackendStats>,
    service: String,
}

#[derive(Debug)]
pub struct RoutingTable {
    services: Vec<Arc<ServiceRoute>>,
    matcher: Arc<Matcher>,
    default: usize,
    /// Service index by name.
    by_name: Arc<HashMap<String, usize>>,
    /// Runtime records of every registered backend, routed or not (draining ones too).
    /// Persistent maps: the next table clones them in O(1) and changes only what moved.
    registered: imbl::HashMap<String, Registered>,
    /// The routed backends by `no`: the next table reuses them (or just their pools) when
    /// unchanged.
    upstreams: imbl::HashMap<String, Arc<Upstream>>,
    /// Registered backends per service (a service with any, even draining, exists).
    counts: imbl::HashMap<String, usize>,
}

/// The registry task publishes a routing table after every change.
impl crate::registry::Publish for RoutingTable {
    fn build(reg: &Registry) -> Self {
        RoutingTable::build(reg, None)
    }

    fn update(reg: &Registry, prev: &Self, changes: &Changes) -> Self {
        RoutingTable::update(reg, prev, changes)
    }

    fn replaced(&self, prev: &Self, changes: &Changes) {
        self.mark_retired(prev, changes)
    }
}

/// The latest registry and routing table, as the data plane and the admin API read them.
pub type Shared = crate::registry::Shared<RoutingTable>;
/// The way to change the registry (and so the routing table) and read both.
pub type Handle = crate::registry::Handle<RoutingTable>;

impl RoutingTable {
    /// An empty table: every request gets 503 from the `default` service.
    pub fn empty() -> Self {
        Self::build(&Registry::new(), None)
    }

    /// Build from the whole registry, carrying runtime state over from `prev`.
    pub fn build(reg: &Registry, prev: Option<&RoutingTable>) -> Self {
        let blank;
        let prev = match prev {
            Some(p) => p,
            None => {
                blank = RoutingTable {
                    services: Vec::new(),
                    matcher: Arc::default(),
                    default: 0,
                    by_name: Arc::default(),
                    registered: imbl::HashMap::new(),
                    upstreams: imbl::HashMap::new(),
                    counts: imbl::HashMap::new(),
                };
                &blank
            }
        };
        let mut all = Changes::default();
        all.nos.extend(reg.nos().cloned());
        all.nos.extend(prev.registered.keys().cloned());
        all.services.extend(reg.service_names());
        all.services.extend(prev.by_name.keys().cloned());
        Self::update(reg, prev, &all)
    }

    /// The table for `reg`, given the previous table `prev` (built from the registry before
    /// `changes`) and what changed. Work is proportional to the touched entries and the
    /// members of the touched services, not to the whole registry; the result is the same as
    /// [`RoutingTable::build`]'s.
    pub fn update(reg: &Registry, prev: &RoutingTable, changes: &Changes) -> Self {
        let mut registered = prev.registered.clone();
        let mut upstreams = prev.upstreams.clone();
        let mut counts = prev.counts.clone();
        // Services whose member list must be redone.
        let mut dirty: BTreeSet<String> = changes.services.clone();
        if !prev.by_name.contains_key(DEFAULT_SERVICE) {
            dirty.insert(DEFAULT_SERVICE.to_owned());
        }
        // The touched entries that are routed now, by service.
        let mut routed: HashMap<String, Vec<crate::registry::Entry>> = HashMap::new();
        for no in &changes.nos {
            let old = registered.remove(no);
            // Re-added below, with its service's members, if it is still routed.
            upstreams.remove(no);
            if let Some(o) = &old {
                if let Some(c) = counts.get_mut(&o.service) {
                    *c -= 1;
                }
                dirty.insert(o.service.clone());
            }
            let Some(e) = reg.get(no) else {
                continue;
            };
            let addr = e.spec.socket_addr();
            // Same backend (no and address) as before: keep its counters and health.
            let stats = old
                .filter(|o| o.addr == addr)
                .map(|o| o.stats)
                .unwrap_or_default();
            registered.insert(
                no.clone(),
                Registered {
                    addr,
                    stats,
                    service: e.spec.service.clone(),
                },
            );
            *counts.entry(e.spec.service.clone()).or_insert(0) += 1;
            dirty.insert(e.spec.service.clone());
            if e.spec.state == AdminState::Active {
                routed.entry(e.spec.service.clone()).or_default().push(e);
            }
        }

        let mut names_changed = false;
        let mut fresh: HashMap<String, Option<Arc<ServiceRoute>>> = HashMap::new();
        for name in &dirty {
            let exists = name == DEFAULT_SERVICE
                || reg.has_settings(name)
                || counts.get(name).is_some_and(|&c| c > 0);
            if !exists {
                counts.remove(name);
                names_changed |= prev.by_name.contains_key(name);
                fresh.insert(name.clone(), None);
                continue;
            }
            names_changed |= !prev.by_name.contains_key(name);
            let (cfg, _) = reg.service_config(name);
            let before = prev.service(name);
            let config_changed = changes.services.contains(name);
            let h2c = cfg.protocol == crate::registry::Protocol::H2c;
            let slow_start_ms = cfg.slow_start.map(|d| d.0.as_millis() as u64).unwrap_or(0);
            let mut members: Vec<Arc<Upstream>> = Vec::new();
            // Untouched members stay (re-derived if the service's settings changed).
            for u in before.iter().flat_map(|s| s.backends.iter()) {
                if changes.nos.contains(&u.no) {
                    continue;
                }
                if config_changed && (u.h2c != h2c || u.slow_start_ms != slow_start_ms) {
                    let st = &registered[&u.no];
                    members.push(upstream(&u.no, st, u.weight, slow_start_ms, h2c, Some(u)));
                } else {
                    members.push(u.clone());
                }
            }
            for e in routed.get(name).into_iter().flatten() {
                let no = &e.spec.no;
                let st = &registered[no];
                let was = prev.upstreams.get(no);
                members.push(upstream(no, st, e.spec.weight, slow_start_ms, h2c, was));
            }
            members.sort_by(|a, b| a.no.cmp(&b.no));
            // Only the touched or re-derived records: a change costs as little in a large
            // service as in a small one (the untouched members are in the map already).
            for u in &members {
                if changes.nos.contains(&u.no)
                    || prev.upstreams.get(&u.no).is_none_or(|p| !Arc::ptr_eq(p, u))
                {
                    upstreams.insert(u.no.clone(), u.clone());
                }
            }
            let weights: Vec<u32> = members.iter().map(|u| u.weight).collect();
            let keys: Vec<&str> = members.iter().map(|u| u.no.as_str()).collect();
            let route = ServiceRoute {
                name: name.clone(),
                strip_prefix: cfg.path_prefix.clone().filter(|_| cfg.strip_prefix),
                balancer: Balancer::build(cfg.lb, &weights, &keys, before.map(|s| &s.balancer)),
                backends: members,
                hash_key: (cfg.lb == crate::balance::Strategy::Hash)
                    .then(|| HashKey::parse(cfg.hash_key.as_deref())),
                sticky_cookie: cfg.sticky_cookie.clone(),
                health: cfg.health.clone(),
                middleware: Middleware::compile(
                    name,
                    &cfg,
                    before.and_then(|s| s.middleware.as_ref()),
                ),
            };
            fresh.insert(name.clone(), Some(Arc::new(route)));
        }
        let (services, by_name) = if names_changed {
            let mut names: BTreeSet<&str> = prev.by_name.keys().map(String::as_str).collect();
            for (n, r) in &fresh {
                if r.is_some() {
                    names.insert(n);
                } else {
                    names.remove(n.as_str());
                }
            }
            let services: Vec<Arc<ServiceRoute>> = names
                .iter()
                .map(|n| match fresh.get(*n) {
                    Some(r) => r.clone().expect("only existing names are kept"),
                    None => prev.service(n).expect("an untouched service").clone(),
                })
                .collect();
            let by_name: HashMap<String, usize> = names
                .iter()
                .enumerate()
                .map(|(i, n)| ((*n).to_owned(), i))
                .collect();
            (services, Arc::new(by_name))
        } else {
            let mut services = prev.services.clone();
            for (n, r) in fresh {
                if let Some(r) = r {
                    services[prev.by_name[&n]] = r;
                }
            }
            (services, prev.by_name.clone())
        };
        let matcher = if names_changed || !changes.services.is_empty() {
            Arc::new(matcher_for(reg, &services))
        } else {
            prev.matcher.clone()
        };
        RoutingTable {
            default: by_name[DEFAULT_SERVICE],
            services,
            matcher,
            by_name,
            registered,
            upstreams,
            counts,
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

    /// Tell the touched backends whether they are still routed (an upgraded connection to
    /// one that is not closes after its grace period; see `BackendStats::retired_for`).
    pub fn mark_retired(&self, prev: &RoutingTable, changes: &Changes) {
        for no in &changes.nos {
            let now = self.upstreams.get(no);
            if let Some(was) = prev.upstreams.get(no)
                && now.is_none_or(|u| !Arc::ptr_eq(&u.stats, &was.stats))
            {
                was.stats.set_retired(true);
            }
            if let Some(u) = now {
                u.stats.set_retired(false);
            }
        }
    }

    /// Runtime record of the backend `no`, routed or not.
    pub fn stats(&self, no: &str) -> Option<&Arc<BackendStats>> {
        self.registered.get(no).map(|r| &r.stats)
    }
}

/// An upstream record for `no`, sharing `was` (or at least its pool) when nothing about it
/// changed.
fn upstream(
    no: &str,
    reg: &Registered,
    weight: u32,
    slow_start_ms: u64,
    h2c: bool,
    was: Option<&Arc<Upstream>>,
) -> Arc<Upstream> {
    // Same address and protocol as when it was last routed: keep its open connections.
    let was = was.filter(|u| u.addr == reg.addr && u.h2c == h2c);
    if let Some(u) = was.filter(|u| {
        u.weight == weight && u.slow_start_ms == slow_start_ms && Arc::ptr_eq(&u.stats, &reg.stats)
    }) {
        return u.clone();
    }
    Arc::new(Upstream {
        no: no.to_owned(),
        addr: reg.addr,
        authority: reg
            .addr
            .to_string()
            .parse()
            .expect("a socket address is a valid authority"),
        weight,
        stats: reg.stats.clone(),
        slow_start_ms,
        h2c,
        slots: was.map(|u| u.slots.clone()).unwrap_or_default(),
    })
}

/// The host/path rules of every service; an operator's rule beats an identical one from labels.
fn matcher_for(reg: &Registry, services: &[Arc<ServiceRoute>]) -> Matcher {
    let mut rules = Vec::new();
    for (i, s) in services.iter().enumerate() {
        let (cfg, by_operator) = reg.service_config(&s.name);
        if !cfg.has_rules() {
            continue;
        }
        let prefix = cfg.path_prefix.clone().unwrap_or_default();
        if cfg.hosts.is_empty() {
            rules.push((!by_operator, (None, prefix, i)));
        } else {
            for h in &cfg.hosts {
                rules.push((!by_operator, (Some(h.clone()), prefix.clone(), i)));
            }
        }
    }
    // Operators' rules first: on an identical rule the matcher keeps the first.
    rules.sort_by_key(|(from_labels, _)| *from_labels);
    Matcher::new(rules.into_iter().map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{BackendSpec, Command, ServiceConfig};

    fn add(r: &mut Registry, no: &str, port: u16, service: &str, weight: u32) {
        r.apply(Command::upsert(BackendSpec {
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
        let pool = |t: &RoutingTable| t.route("x", "/").backends.first().map(|u| u.slots.clone());
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

    /// What a table routes, for comparing two tables.
    fn shape(t: &RoutingTable) -> Vec<String> {
        let mut out: Vec<String> = t
            .services
            .iter()
            .map(|s| {
                let b: Vec<String> = s
                    .backends
                    .iter()
                    .map(|u| {
                        format!(
                            "{}@{}w{}h{}s{}",
                            u.no, u.addr, u.weight, u.h2c, u.slow_start_ms
                        )
                    })
                    .collect();
                format!(
                    "{} {:?} {:?} {:?}",
                    s.name,
                    b,
                    s.strip_prefix,
                    s.hash_key.is_some()
                )
            })
            .collect();
        out.push(format!("default={}", t.services[t.default].name));
        for host in ["a.test", "b.test", "x.b.test", "other"] {
            for path in ["/", "/p/x", "/q"] {
                out.push(format!("{host}{path}->{}", t.route(host, path).name));
            }
        }
        let mut reg: Vec<String> = t
            .registered
            .iter()
            .map(|(no, r)| format!("{no}:{}:{}", r.addr, r.service))
            .collect();
        reg.sort();
        out.extend(reg);
        let mut ups: Vec<&String> = t.upstreams.keys().collect();
        ups.sort();
        out.push(format!("{ups:?}"));
        out
    }

    #[derive(Clone, Debug)]
    enum Op {
        Upsert(u8, u16, u8, u32),
        Remove(u8),
        State(u8, u8),
        Service(u8, u8, bool, bool),
        DeleteService(u8),
        /// A sync by source 0 or 1.
        Sync(u8, Vec<(u8, u16, u8)>, Option<(u8, u8)>),
    }

    const SERVICES: [&str; 3] = ["default", "api", "web"];
    const HOSTS: [&str; 3] = ["a.test", "*.b.test", ""];

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u8..8, 1u16..4, 0u8..3, 1u32..3).prop_map(|(n, p, s, w)| Op::Upsert(n, p, s, w)),
            1 => (0u8..8).prop_map(Op::Remove),
            2 => (0u8..8, 0u8..3).prop_map(|(n, s)| Op::State(n, s)),
            2 => (0u8..3, 0u8..3, any::<bool>(), any::<bool>())
                .prop_map(|(s, h, p, h2)| Op::Service(s, h, p, h2)),
            1 => (0u8..3).prop_map(Op::DeleteService),
            2 => (
                0u8..2,
                proptest::collection::vec((0u8..8, 1u16..3, 0u8..3), 0..5),
                proptest::option::of((0u8..3, 0u8..3)),
            )
                .prop_map(|(src, l, s)| Op::Sync(src, l, s)),
        ]
    }

    fn config(host: u8, prefix: bool, h2c: bool) -> ServiceConfig {
        let h = HOSTS[host as usize];
        ServiceConfig {
            hosts: if h.is_empty() { vec![] } else { vec![h.into()] },
            path_prefix: prefix.then(|| "/p".into()),
            strip_prefix: prefix,
            protocol: if h2c {
                crate::registry::Protocol::H2c
            } else {
                Default::default()
            },
            slow_start: h2c.then(|| crate::registry::Dur(std::time::Duration::from_secs(5))),
            ..Default::default()
        }
    }

    fn command(o: Op) -> Command {
        let spec = |n: u8, p: u16, s: u8, w: u32| BackendSpec {
            no: format!("n{n}"),
            addr: "127.0.0.1".parse().unwrap(),
            port: p,
            weight: w,
            service: SERVICES[s as usize].into(),
            state: AdminState::Active,
        };
        match o {
            Op::Upsert(n, p, s, w) => Command::upsert(spec(n, p, s, w)),
            Op::Remove(n) => Command::Remove {
                no: format!("n{n}"),
            },
            Op::State(n, s) => Command::SetState {
                no: format!("n{n}"),
                state: [
                    AdminState::Active,
                    AdminState::Draining,
                    AdminState::Disabled,
                ][s as usize],
            },
            Op::Service(s, h, p, h2) => Command::PutService {
                name: SERVICES[s as usize].into(),
                config: config(h, p, h2),
            },
            Op::DeleteService(s) => Command::DeleteService {
                name: SERVICES[s as usize].into(),
            },
            Op::Sync(src, list, svc) => {
                let source = crate::registry::SourceId::new(
                    crate::registry::Source::Docker,
                    format!("endpoint-{src}"),
                );
                Command::SyncDiscovered {
                    backends: list
                        .into_iter()
                        .map(|(n, p, s)| crate::registry::Discovered {
                            spec: spec(n, p + 100, s, 1),
                            container_id: format!("c{n}"),
                            source: source.clone(),
                        })
                        .collect(),
                    services: svc
                        .into_iter()
                        .map(|(s, h)| (SERVICES[s as usize].to_owned(), config(h, false, false)))
                        .collect(),
                    source,
                }
            }
        }
    }

    proptest::proptest! {
        /// Updating the previous table with what a batch touched gives the same table as a
        /// full build, and keeps the runtime records of what it did not touch.
        #[test]
        fn update_equals_full_build(
            batches in proptest::collection::vec(proptest::collection::vec(op(), 1..4), 1..25)
        ) {
            let mut r = Registry::new();
            let mut t = RoutingTable::build(&r, None);
            for batch in batches {
                let mut ch = Changes::default();
                for o in batch {
                    let _ = r.apply_tracked(command(o), &mut ch);
                }
                let next = RoutingTable::update(&r, &t, &ch);
                proptest::prop_assert_eq!(shape(&next), shape(&RoutingTable::build(&r, None)));
                for (no, reg) in t.registered.iter() {
                    if !ch.nos.contains(no) {
                        proptest::prop_assert!(Arc::ptr_eq(&reg.stats, next.stats(no).unwrap()));
                    }
                }
                t = next;
            }
        }
    }

    #[test]
    fn empty_table_has_default_without_backends() {
        let t = RoutingTable::empty();
        let s = t.route("x", "/");
        assert_eq!(s.name, "default");
        assert!(s.pick(0).is_none());
    }
}
