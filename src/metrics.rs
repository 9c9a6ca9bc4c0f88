//! Prometheus metrics: counted per request through the request plan's [`Observe`] hook, on
//! the worker that served it, and gathered at scrape time together with what the routing
//! table, the registry, the discovery sources and the process say at that moment.
//!
//! Per request: one lookup in this worker's shard (an immutable map read without a lock; a new
//! series copies the map once, the only allocation), then a few uncontended atomic adds. Series
//! of a backend that is gone (its runtime record dropped) are pruned at the next scrape, so they
//! disappear; label values are the service and backend names and status codes, all bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::discovery::sources::Sources;
use crate::health::{BackendStats, now_ms};
use crate::proxy::plan::{Observe, Outcome, Record};
use crate::proxy::{Handshake, Runtime};
use crate::registry::{AdminState, Registry};
use crate::routing::RoutingTable;

/// Upper bounds of the request duration buckets, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Per-worker shards (indexed by the worker index, as the data plane's own counters are).
const SHARDS: usize = 64;

/// One series' counts: requests with one status from one backend (or none) of one service.
#[derive(Debug)]
struct Series {
    service: String,
    /// The entry's `no`; empty for answers quayside gave itself.
    backend: String,
    code: u16,
    /// The backend's runtime record: the series goes when it does.
    alive: Option<Weak<BackendStats>>,
    requests: AtomicU64,
    /// Attempts after the first.
    retries: AtomicU64,
    /// Per bucket of [`BUCKETS`] (not cumulative), then the overflow.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    /// Responses cut short: by the backend, by the client.
    cut: [AtomicU64; 2],
}

/// Key of a series in a shard: the backend's runtime record (its address) or, for answers
/// without a backend, the service name's hash; and the status.
type Key = (usize, u64, u16);
type Map = HashMap<Key, Arc<Series>, fnv::FnvBuildHasher>;

#[derive(Default)]
struct Shard {
    series: ArcSwap<Map>,
    /// Held only to add or prune series.
    grow: Mutex<()>,
}

/// The metrics: install it as the proxy's observer, and [`Metrics::encode`] at scrape time.
pub struct Metrics {
    shards: Box<[Shard]>,
    /// Requests refused before routing (no service), by status.
    refused: Shard,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            refused: Shard::default(),
        }
    }
}

impl Observe for Metrics {
    fn request(&self, r: &Record<'_>) {
        let (key, shard) = match (r.service, r.backend) {
            (_, Some(b)) => (
                (Arc::as_ptr(&b.stats) as usize, 0, r.status),
                &self.shards[crate::proxy::worker_index() % SHARDS],
            ),
            (Some(s), None) => (
                (0, fnv_hash(&s.name), r.status),
                &self.shards[crate::proxy::worker_index() % SHARDS],
            ),
            (None, None) => ((0, 0, r.status), &self.refused),
        };
        // Counted through the map's guard: no reference count taken per request.
        let map = shard.series.load();
        match map.get(&key) {
            Some(series) => series.count(r),
            None => {
                drop(map);
                shard.add(key, r).count(r);
            }
        }
    }
}

impl Series {
    fn count(&self, r: &Record<'_>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if r.attempts > 1 {
            self.retries
                .fetch_add(u64::from(r.attempts - 1), Ordering::Relaxed);
        }
        let secs = r.duration.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(r.duration.as_micros() as u64, Ordering::Relaxed);
        match r.outcome {
            Outcome::Complete => {}
            Outcome::BackendCut => {
                self.cut[0].fetch_add(1, Ordering::Relaxed);
            }
            Outcome::ClientGone => {
                self.cut[1].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn fnv_hash(s: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(s.as_bytes());
    h.finish()
}

impl Shard {
    /// Add the series for `key` (a copy of the map with it; rare).
    #[cold]
    fn add(&self, key: Key, r: &Record<'_>) -> Arc<Series> {
        let _g = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.series.load().get(&key) {
            return s.clone();
        }
        let series = Arc::new(Series {
            service: r.service.map(|s| s.name.clone()).unwrap_or_default(),
            backend: r.backend.map(|b| b.no.clone()).unwrap_or_default(),
            code: r.status,
            alive: r.backend.map(|b| Arc::downgrade(&b.stats)),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
            cut: Default::default(),
        });
        let mut next = Map::clone(&self.series.load());
        next.insert(key, series.clone());
        self.series.store(Arc::new(next));
        series
    }

    /// Drop the series of backends that are gone.
    fn prune(&self) {
        let dead = |s: &Series| s.alive.as_ref().is_some_and(|w| w.strong_count() == 0);
        if !self.series.load().values().any(|s| dead(s)) {
            return;
        }
        let _g = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Map::clone(&self.series.load());
        next.retain(|_, s| !dead(s));
        self.series.store(Arc::new(next));
    }
}

/// One backend's (or service's) request counts so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    /// Answers with a 5xx status (the backend's or quayside's own 502/503/504).
    pub errors: u64,
    /// Per bucket of [`BUCKETS`] (not cumulative), then the overflow.
    pub buckets: [u64; BUCKETS.len() + 1],
}

/// What a scrape reads besides the request counts.
pub struct Scrape<'a> {
    pub table: &'a RoutingTable,
    pub registry: &'a Registry,
    pub generation: u64,
    pub sources: &'a Sources,
    pub runtime: &'a Runtime,
    /// Access log lines dropped (none: no access log).
    pub access_log_dropped: Option<u64>,
    /// Routing events so far, by kind and source.
    pub events: &'a crate::registry::events::Events,
    /// State-file write durations (none: no state file).
    pub state_writes: Option<&'a crate::registry::persist::WriteTimes>,
    /// Whether the state file takes writes, and changes applied but not saved yet (none: no
    /// state file).
    pub state_status: Option<&'a crate::registry::writer::Status>,
    /// Every certificate name ([`crate::acme::names`]).
    pub certificates: &'a [crate::acme::NameView],
    /// Automatic HTTPS's orders issued and failed (none: off).
    pub acme_orders: Option<(u64, u64)>,
    /// The admin listener's connections and event streams.
    pub admin: AdminLoad,
}

/// The admin listener's open connections and event streams, and those refused over its caps.
#[derive(Clone, Copy, Debug, Default)]
pub struct AdminLoad {
    pub connections: u64,
    pub event_streams: u64,
    pub refused_connections: u64,
    pub refused_event_streams: u64,
}

/// Request counts summed over the workers.
#[derive(Default)]
struct Sums {
    requests: BTreeMap<(String, String, u16), u64>,
    /// Responses cut short, by service, backend, status and side (`backend`, `client`).
    cut: BTreeMap<(String, String, u16, &'static str), u64>,
    retries: BTreeMap<String, u64>,
    /// Per service: bucket counts, count, sum of seconds.
    durations: BTreeMap<String, ([u64; BUCKETS.len() + 1], u64, f64)>,
}

impl Metrics {
    fn sums(&self) -> Sums {
        let mut sums = Sums::default();
        for shard in self.shards.iter().chain(std::iter::once(&self.refused)) {
            shard.prune();
            for s in shard.series.load().values() {
                let n = s.requests.load(Ordering::Relaxed);
                *sums
                    .requests
                    .entry((s.service.clone(), s.backend.clone(), s.code))
                    .or_default() += n;
                *sums.retries.entry(s.service.clone()).or_default() +=
                    s.retries.load(Ordering::Relaxed);
                for (side, c) in ["backend", "client"].into_iter().zip(&s.cut) {
                    let c = c.load(Ordering::Relaxed);
                    if c > 0 {
                        let key = (s.service.clone(), s.backend.clone(), s.code, side);
                        *sums.cut.entry(key).or_default() += c;
                    }
                }
                let d = sums.durations.entry(s.service.clone()).or_default();
                for (i, b) in s.buckets.iter().enumerate() {
                    d.0[i] += b.load(Ordering::Relaxed);
                }
                d.1 += n;
                d.2 += s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            }
        }
        sums
    }

    /// Requests so far per service and backend (quayside's own answers under an empty
    /// backend), summed over the workers and status codes: what [`crate::stats`] samples.
    pub fn totals(&self) -> BTreeMap<(String, String), Totals> {
        let mut out: BTreeMap<(String, String), Totals> = BTreeMap::new();
        for shard in self.shards.iter() {
            shard.prune();
            for s in shard.series.load().values() {
                let t = out
                    .entry((s.service.clone(), s.backend.clone()))
                    .or_default();
                let n = s.requests.load(Ordering::Relaxed);
                t.requests += n;
                if s.code >= 500 {
                    t.errors += n;
                } else {
                    // A response the backend cut short is an error whatever its status.
                    t.errors += s.cut[0].load(Ordering::Relaxed);
                }
                for (i, b) in s.buckets.iter().enumerate() {
                    t.buckets[i] += b.load(Ordering::Relaxed);
                }
            }
        }
        out
    }

    /// Everything, as OpenMetrics text (what Prometheus asks for) or, with `openmetrics`
    /// false, the classic Prometheus text format (what `curl` and older tools get).
    pub fn encode(&self, scrape: &Scrape<'_>, openmetrics: bool) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Collected(self.collect(scrape))));
        let mut out = String::new();
        // (Writing to a String cannot fail.)
        let _ = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        };
        out
    }

    fn collect(&self, scrape: &Scrape<'_>) -> Vec<Family> {
        let sums = self.sums();
        let mut families = Vec::new();
        let mut f = Family::new(
            "quayside_requests",
            "Requests answered, by service, backend (empty: answered by quayside itself) and status code",
            MetricType::Counter,
        );
        for ((service, backend, code), n) in &sums.requests {
            f.push(
                vec![
                    ("service", service.clone()),
                    ("backend", backend.clone()),
                    ("code", code.to_string()),
                ],
                Value::Counter(*n),
            );
        }
        families.push(f);
        let mut f = Family::new(
            "quayside_request_duration_seconds",
            "From routing to the last byte relayed, by service",
            MetricType::Histogram,
        );
        for (service, (buckets, count, sum)) in &sums.durations {
            // (Per bucket: the encoder makes them cumulative.)
            let list = buckets
                .iter()
                .enumerate()
                .map(|(i, n)| (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), *n))
                .collect();
            f.push(
                vec![("service", service.clone())],
                Value::Histogram(*sum, *count, list),
            );
        }
        families.push(f);
        let mut f = Family::new(
            "quayside_responses_incomplete",
            "Responses cut short, by service, backend, status and side: backend (it closed or broke off before the end; the client got a truncated response) or client (it went away first)",
            MetricType::Counter,
        );
        for ((service, backend, code, side), n) in &sums.cut {
            f.push(
                vec![
                    ("service", service.clone()),
                    ("backend", backend.clone()),
                    ("code", code.to_string()),
                    ("side", (*side).to_owned()),
                ],
                Value::Counter(*n),
            );
        }
        families.push(f);
        let mut f = Family::new(
            "quayside_retries",
            "Attempts after the first, by service",
            MetricType::Counter,
        );
        for (service, n) in &sums.retries {
            f.push(vec![("service", service.clone())], Value::Counter(*n));
        }
        families.push(f);
        families.extend(backends(scrape));
        families.extend(control(scrape));
        families.extend(process());
        families
    }
}

/// Per backend, from the routing table and the registry: up, in flight, ejections, probes.
fn backends(scrape: &Scrape<'_>) -> Vec<Family> {
    let now = now_ms();
    let mut up = Family::new(
        "quayside_backend_up",
        "1 while the backend is routable, 0 otherwise (drained, disabled, ejected, unhealthy)",
        MetricType::Gauge,
    );
    let mut in_flight = Family::new(
        "quayside_backend_in_flight",
        "Requests in flight at the backend",
        MetricType::Gauge,
    );
    let mut ejections = Family::new(
        "quayside_backend_ejections",
        "Times passive health checks took the backend out of rotation",
        MetricType::Counter,
    );
    let mut probe = Family::new(
        "quayside_backend_probe_up",
        "The active health check's verdict: 1 up, 0 down (only for services with health checks)",
        MetricType::Gauge,
    );
    let mut probes = Family::new(
        "quayside_backend_probes",
        "Active health probes done, by result (passed, failed)",
        MetricType::Counter,
    );
    for e in scrape.registry.entries() {
        let stats = scrape.table.stats(&e.spec.no);
        let labels = || {
            vec![
                ("service", e.spec.service.clone()),
                ("backend", e.spec.no.clone()),
            ]
        };
        let routable =
            e.spec.state == AdminState::Active && stats.is_some_and(|s| s.available(now));
        let source = crate::registry::events::source_of(&e);
        let mut l = labels();
        l.push(("source", source));
        l.push(("state", e.spec.state.as_str().to_owned()));
        up.push(l, Value::Gauge(i64::from(routable)));
        let Some(s) = stats else { continue };
        in_flight.push(
            labels(),
            Value::Gauge(i64::from(s.in_flight.load(Ordering::Relaxed))),
        );
        ejections.push(labels(), Value::Counter(u64::from(s.passive().ejections)));
        if scrape
            .table
            .service(&e.spec.service)
            .is_some_and(|svc| svc.health.is_some())
        {
            probe.push(labels(), Value::Gauge(i64::from(s.active().up)));
            for (result, n) in [("passed", &s.probes_passed), ("failed", &s.probes_failed)] {
                let mut l = labels();
                l.push(("result", result.to_owned()));
                probes.push(l, Value::Counter(n.load(Ordering::Relaxed)));
            }
        }
    }
    vec![up, in_flight, ejections, probe, probes]
}

/// The control plane and the listeners: routing table generation, discovery sources,
/// connections and TLS handshakes.
fn control(scrape: &Scrape<'_>) -> Vec<Family> {
    let mut generation = Family::new(
        "quayside_routing_table_generation",
        "Routing tables published since start",
        MetricType::Gauge,
    );
    generation.push(vec![], Value::Gauge(scrape.generation as i64));
    let mut connected = Family::new(
        "quayside_discovery_connected",
        "1 while the discovery source is connected and synced",
        MetricType::Gauge,
    );
    let mut reconnects = Family::new(
        "quayside_discovery_reconnects",
        "Times the discovery source lost its connection",
        MetricType::Counter,
    );
    let mut events = Family::new(
        "quayside_discovery_events",
        "Events received from the discovery source's endpoint",
        MetricType::Counter,
    );
    let mut syncs = Family::new(
        "quayside_discovery_syncs",
        "Full listings done by the discovery source (the first, and one after each reconnect)",
        MetricType::Counter,
    );
    for s in scrape.sources.list() {
        let labels = || vec![("kind", s.kind.to_owned()), ("source", s.name.clone())];
        connected.push(labels(), Value::Gauge(i64::from(s.state == "connected")));
        reconnects.push(labels(), Value::Counter(s.reconnects));
        events.push(labels(), Value::Counter(s.events));
        syncs.push(labels(), Value::Counter(s.syncs));
    }
    let mut changes = Family::new(
        "quayside_registry_changes",
        "Changes of entries and service settings, by source (manual, docker, docker:<endpoint>) and kind",
        MetricType::Counter,
    );
    let mut health = Family::new(
        "quayside_backend_health_changes",
        "Backends' health changes (health_up, health_down, ejected), by source and kind",
        MetricType::Counter,
    );
    for ((kind, source), n) in scrape.events.counts() {
        let f = if matches!(kind, "health_up" | "health_down" | "ejected") {
            &mut health
        } else {
            &mut changes
        };
        f.push(
            vec![("source", source), ("kind", kind.to_owned())],
            Value::Counter(n),
        );
    }
    let mut writes = Family::new(
        "quayside_state_write_duration_seconds",
        "State-file writes (journal appends and rewrites, each made durable), by duration",
        MetricType::Histogram,
    );
    if let Some(w) = scrape.state_writes {
        let (buckets, count, sum) = w.snapshot();
        writes.push(vec![], Value::Histogram(sum, count, buckets));
    }
    let mut writable = Family::new(
        "quayside_state_writable",
        "1 while the state file takes writes; 0 while its writes fail or hang (changes are then refused, or applied and answered as not saved)",
        MetricType::Gauge,
    );
    let mut unsaved = Family::new(
        "quayside_state_unsaved_changes",
        "Changes applied while the state file's disk did not answer, not saved yet",
        MetricType::Gauge,
    );
    if let Some(s) = scrape.state_status {
        writable.push(vec![], Value::Gauge(i64::from(s.writable())));
        unsaved.push(vec![], Value::Gauge(s.unsaved() as i64));
    }
    let mut accepted = Family::new(
        "quayside_connections_accepted",
        "Client connections accepted, by listener and protocol",
        MetricType::Counter,
    );
    let mut open = Family::new(
        "quayside_connections_open",
        "Client connections open, by listener and protocol",
        MetricType::Gauge,
    );
    for c in scrape.runtime.connections() {
        let labels = || {
            vec![
                ("listener", c.listener.to_owned()),
                ("protocol", c.protocol.to_owned()),
            ]
        };
        accepted.push(labels(), Value::Counter(c.accepted));
        open.push(labels(), Value::Gauge(c.open as i64));
    }
    let mut handshakes = Family::new(
        "quayside_tls_handshakes",
        "TLS handshakes on the proxy's TLS listener, by result",
        MetricType::Counter,
    );
    for (h, name) in Handshake::ALL {
        handshakes.push(
            vec![("result", name.to_owned())],
            Value::Counter(scrape.runtime.handshakes(h)),
        );
    }
    let mut expiry = Family::new(
        "quayside_tls_certificate_expiry_timestamp_seconds",
        "When each name's certificate expires (seconds since the Unix epoch), by name and source (file, acme)",
        MetricType::Gauge,
    );
    let mut failures = Family::new(
        "quayside_acme_order_failures",
        "Automatic HTTPS: orders failed in a row for the name (0 once one succeeds)",
        MetricType::Gauge,
    );
    for c in scrape.certificates {
        if let Some(t) = c.expiry_unix {
            expiry.push(
                vec![("name", c.name.clone()), ("source", c.source.to_owned())],
                Value::Gauge(t),
            );
        }
        if c.source == "acme" {
            failures.push(
                vec![("name", c.name.clone())],
                Value::Gauge(i64::from(c.failures)),
            );
        }
    }
    let mut orders = Family::new(
        "quayside_acme_orders",
        "Automatic HTTPS: certificate orders finished, by result (issued, failed)",
        MetricType::Counter,
    );
    if let Some((issued, failed)) = scrape.acme_orders {
        orders.push(vec![("result", "issued".into())], Value::Counter(issued));
        orders.push(vec![("result", "failed".into())], Value::Counter(failed));
    }
    let a = scrape.admin;
    let mut admin_open = Family::new(
        "quayside_admin_open",
        "Admin API connections and event streams open now",
        MetricType::Gauge,
    );
    admin_open.push(
        vec![("kind", "connections".into())],
        Value::Gauge(a.connections as i64),
    );
    admin_open.push(
        vec![("kind", "event_streams".into())],
        Value::Gauge(a.event_streams as i64),
    );
    let mut admin_refused = Family::new(
        "quayside_admin_refused",
        "Admin API connections and event streams refused with 503 over their caps",
        MetricType::Counter,
    );
    admin_refused.push(
        vec![("kind", "connections".into())],
        Value::Counter(a.refused_connections),
    );
    admin_refused.push(
        vec![("kind", "event_streams".into())],
        Value::Counter(a.refused_event_streams),
    );
    vec![
        generation,
        connected,
        reconnects,
        events,
        syncs,
        changes,
        health,
        writes,
        accepted,
        open,
        handshakes,
        expiry,
        failures,
        orders,
        admin_open,
        admin_refused,
        writable,
        unsaved,
    ]
}

/// The process, from /proc: resident memory, open files, CPU time.
fn process() -> Vec<Family> {
    let mut out = Vec::new();
    let page = 4096;
    if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
    {
        let mut f = Family::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            MetricType::Gauge,
        );
        f.push(vec![], Value::Gauge(rss * page));
        out.push(f);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let mut f = Family::new(
            "process_open_fds",
            "Open file descriptors",
            MetricType::Gauge,
        );
        f.push(vec![], Value::Gauge(dir.count() as i64));
        out.push(f);
    }
    // Fields 14 and 15 of /proc/self/stat (after the command name in parentheses): user and
    // system time in clock ticks (100 per second on Linux).
    if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
    {
        let mut f = Family::new(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            MetricType::Counter,
        );
        f.push(vec![], Value::CounterF(ticks as f64 / 100.0));
        out.push(f);
    }
    out
}

/// One metric family as gathered at scrape time.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

#[derive(Debug)]
enum Value {
    Counter(u64),
    CounterF(f64),
    Gauge(i64),
    /// Sum, count, per-bucket counts (upper bound, count in it).
    Histogram(f64, u64, Vec<(f64, u64)>),
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, v: Value) {
        self.samples.push((labels, v));
    }
}

/// The families of one scrape, for prometheus-client's encoder.
#[derive(Debug)]
struct Collected(Vec<Family>);

impl prometheus_client::collector::Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            if f.samples.is_empty() {
                continue;
            }
            let mut m = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.samples {
                let mut e = m.encode_family(labels)?;
                match v {
                    Value::Counter(n) => ConstCounter::new(*n).encode(e)?,
                    Value::CounterF(n) => ConstCounter::new(*n).encode(e)?,
                    Value::Gauge(n) => ConstGauge::new(*n).encode(e)?,
                    Value::Histogram(sum, count, buckets) => {
                        e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                            *sum, *count, buckets, None,
                        )?
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_increase() {
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
