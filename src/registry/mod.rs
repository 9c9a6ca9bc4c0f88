//! The registry: the one owner of the merged set of backends and service settings.
//!
//! [`Registry`] is pure state: [`Registry::apply`] takes a [`Command`] and either changes the state
//! or returns an error without changing anything. The [`actor`] module runs it behind a channel,
//! saves it to the state file ([`persist`]) and publishes, after every change, the registry and
//! the table built from it ([`actor::Publish`]: the routing table, in the layer above).
//!
//! Entries come from sources: `manual` (the admin API and the state file) and `docker` (discovery).
//! A manual entry with the same `no` as a discovered one overrides ("pins") it; removing the pin
//! brings the discovered entry back. Drains and disables of discovered entries are kept as
//! overrides, so they survive a re-sync of the discovered set.

pub mod actor;
pub mod events;
pub mod journal;
pub mod middleware;
pub mod persist;
pub mod swarm_store;
pub mod validate;
pub mod writer;

use std::collections::BTreeSet;
use std::sync::Arc;

use imbl::OrdMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::balance::Strategy;
pub use crate::types::Dur;
pub use actor::{Handle, Publish, Shared};
pub use validate::{DEFAULT_SERVICE, FieldError};

/// Whether an entry takes new requests.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes traffic.
    #[default]
    Active,
    /// Takes no new requests; requests in flight finish.
    Draining,
    /// Takes no requests until enabled again.
    Disabled,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Active => "active",
            AdminState::Draining => "draining",
            AdminState::Disabled => "disabled",
        }
    }
}

/// Where an entry came from.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Manual,
    Docker,
    /// Swarm services' tasks (followed through a manager's endpoint).
    Swarm,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Manual => "manual",
            Source::Docker => "docker",
            Source::Swarm => "swarm",
        }
    }
}

/// The name of the first (or only) Docker endpoint: its entries' `no`s are kept as they are.
pub const DEFAULT_ENDPOINT: &str = "default";

/// One discovery source: its kind, and the name of its endpoint (a source's sync replaces only
/// the entries it found).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId {
    pub kind: Source,
    pub name: String,
}

impl SourceId {
    pub fn new(kind: Source, name: impl Into<String>) -> Self {
        SourceId {
            kind,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} endpoint {}", self.kind.as_str(), self.name)
    }
}

/// A validated backend, as an operator or a source describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub no: String,
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub service: String,
    pub state: AdminState,
}

impl BackendSpec {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

/// A backend found by a discovery source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub spec: BackendSpec,
    pub container_id: String,
    /// The source that found it.
    pub source: SourceId,
}

/// What one discovery source found in its last sync.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Found {
    backends: Arc<Vec<Discovered>>,
    services: Arc<Vec<(String, ServiceConfig)>>,
}

/// An operator's drain or disable of a discovered entry, kept apart from the entry so that it
/// outlives re-syncs and restarts. It belongs to one container: when a container with another
/// id takes the same `no`, the override is dropped. `container_id` is `None` only for an
/// override saved before ids were kept; it attaches to the first container seen with its `no`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub state: AdminState,
    pub container_id: Option<String>,
}

/// How quayside talks to a service's backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 with keepalive.
    #[default]
    Http1,
    /// HTTP/2 without TLS, prior knowledge (gRPC backends).
    H2c,
}

impl Protocol {
    pub fn is_default(&self) -> bool {
        *self == Protocol::Http1
    }
}

/// Active health checks of a service's backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(from = "RawHealthCheck")]
pub struct HealthCheck {
    /// Path probed with GET; a 2xx or 3xx answer is a success.
    pub path: String,
    /// Default 5s.
    #[schema(required = false)]
    pub interval: Dur,
    /// At most `interval`; when not given, 2 s or the interval if that is shorter.
    #[schema(required = false)]
    pub timeout: Dur,
    /// Successes in a row that bring a backend back (default 2).
    #[schema(required = false, minimum = 1)]
    pub rise: u32,
    /// Failures in a row that take it out (default 3).
    #[schema(required = false, minimum = 1)]
    pub fall: u32,
}

/// [`HealthCheck`] as written, before the timeout's default (which depends on the interval)
/// is filled in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    path: String,
    #[serde(default = "default_interval")]
    interval: Dur,
    #[serde(default)]
    timeout: Option<Dur>,
    #[serde(default = "default_rise")]
    rise: u32,
    #[serde(default = "default_fall")]
    fall: u32,
}

impl From<RawHealthCheck> for HealthCheck {
    fn from(r: RawHealthCheck) -> Self {
        HealthCheck {
            timeout: r
                .timeout
                .unwrap_or(Dur(default_timeout().0.min(r.interval.0))),
            path: r.path,
            interval: r.interval,
            rise: r.rise,
            fall: r.fall,
        }
    }
}

fn default_interval() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}
fn default_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(2))
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

impl HealthCheck {
    /// Probes of `path` with the default settings.
    pub fn new(path: String) -> Self {
        Self::with(path, None, None)
    }

    /// Probes of `path` every `interval` (default 5 s) with `timeout` (default 2 s, or the
    /// interval if shorter).
    pub fn with(path: String, interval: Option<Dur>, timeout: Option<Dur>) -> Self {
        RawHealthCheck {
            path,
            interval: interval.unwrap_or_else(default_interval),
            timeout,
            rise: default_rise(),
            fall: default_fall(),
        }
        .into()
    }
}

/// Settings of a named pool: its routing rules and balancing strategy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Host names (`app.example.com` or `*.example.com`); empty means any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefix the request path must start with; none means any path.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Remove `path_prefix` from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Written only when chosen: a state file keeps no default, so a better default reaches
    /// every service that never chose (an older file's `"round_robin"` is that default).
    #[serde(default, skip_serializing_if = "Strategy::is_default")]
    pub lb: Strategy,
    /// For `hash`: `client_ip` (default), `header:NAME` or `cookie:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    /// Sticky sessions: the cookie that pins a client to the backend that served it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<String>,
    /// Active health checks (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// A backend that just became available ramps up its share over this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<Dur>,
    /// `http1` (default) or `h2c` to the backends.
    #[serde(default, skip_serializing_if = "Protocol::is_default")]
    pub protocol: Protocol,
    // Middlewares (README, "Middlewares"): off when absent.
    /// Plain HTTP gets a 308 to `https://` on `--https-port` (ACME challenges excepted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// `Strict-Transport-Security` on HTTPS answers, e.g. `max-age=31536000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<String>,
    /// `user:hash` entries (bcrypt or argon2): other requests get 401.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub basic_auth: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_auth: Option<middleware::ForwardAuth>,
    /// Client address blocks allowed (others get 403); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<middleware::RateLimit>,
    /// gzip, br or zstd by `Accept-Encoding`, for compressible answers over 1 KiB.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compress: bool,
    #[serde(default, skip_serializing_if = "middleware::Headers::is_empty")]
    pub headers: middleware::Headers,
}

impl ServiceConfig {
    pub fn has_rules(&self) -> bool {
        !self.hosts.is_empty() || self.path_prefix.is_some()
    }

    /// Validate and normalise (lower-case hosts, sorted, no duplicates).
    pub fn validated(mut self, name: &str) -> Result<Self, FieldError> {
        let mut hosts = BTreeSet::new();
        for h in &self.hosts {
            hosts.insert(validate::host_rule(h)?);
        }
        self.hosts = hosts.into_iter().collect();
        if let Some(p) = &self.path_prefix {
            self.path_prefix = Some(validate::path_prefix(p)?);
        }
        if self.strip_prefix && self.path_prefix.is_none() {
            return Err(FieldError::new(
                "strip_prefix",
                "needs a path_prefix to strip",
            ));
        }
        if let Some(k) = &self.hash_key {
            validate::hash_key(k)?;
        }
        if let Some(c) = &self.sticky_cookie {
            validate::cookie_name("sticky_cookie", c)?;
        }
        if let Some(h) = &self.health {
            validate::path("health.path", &h.path)?;
            if h.timeout.0 > h.interval.0 {
                return Err(FieldError::new(
                    "health.timeout",
                    format!(
                        "must be no longer than health.interval ({}), got {}",
                        h.interval, h.timeout
                    ),
                ));
            }
            if h.rise == 0 || h.fall == 0 || h.rise > 100 || h.fall > 100 {
                return Err(FieldError::new(
                    "health",
                    format!("rise and fall must be 1-100, got {} and {}", h.rise, h.fall),
                ));
            }
        }
        middleware::validate(&mut self)?;
        if name == DEFAULT_SERVICE && self.has_rules() {
            return Err(FieldError::new(
                "hosts",
                "the service 'default' catches every request no other service matches; it takes no hosts or path_prefix",
            ));
        }
        Ok(self)
    }

    /// The (host, prefix) pairs this service claims; `""` stands for "any".
    fn rule_keys(&self) -> Vec<(&str, &str)> {
        let prefix = self.path_prefix.as_deref().unwrap_or("");
        if self.hosts.is_empty() {
            if self.path_prefix.is_some() {
                vec![("", prefix)]
            } else {
                vec![]
            }
        } else {
            self.hosts.iter().map(|h| (h.as_str(), prefix)).collect()
        }
    }
}

/// A change to the registry.
// (Commands come from sources and the admin API, never per request: `PutService`'s size, a
// service's settings with their middlewares, costs nothing worth a box.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Add or replace a manual entry. With `inherit_service` (the request named no service),
    /// `spec.service` is replaced by the service of the entry it replaces or pins, if any: a pin
    /// of a container stays in the container's service.
    Upsert {
        spec: BackendSpec,
        inherit_service: bool,
    },
    /// Remove a manual entry; for a discovered entry with no pin, disable it.
    Remove { no: String },
    /// Drain, disable or enable an entry.
    SetState { no: String, state: AdminState },
    /// Create or replace a service's settings.
    PutService { name: String, config: ServiceConfig },
    /// Remove a service's settings (its backends stay, under no rules).
    DeleteService { name: String },
    /// Replace the entries (and service settings from labels) that one discovery source
    /// found; other sources' entries stay. A `no` or a service another source holds stays that
    /// source's (each `Discovered` must carry `source`).
    SyncDiscovered {
        source: SourceId,
        backends: Vec<Discovered>,
        services: Vec<(String, ServiceConfig)>,
    },
}

impl Command {
    /// The entry a command is about, if it is about one.
    pub fn no(&self) -> Option<&str> {
        match self {
            Command::Upsert { spec, .. } => Some(&spec.no),
            Command::Remove { no } | Command::SetState { no, .. } => Some(no),
            _ => None,
        }
    }

    /// The service whose settings a command changes, if it changes one's settings only.
    pub fn service(&self) -> Option<&str> {
        match self {
            Command::PutService { name, .. } | Command::DeleteService { name } => Some(name),
            _ => None,
        }
    }

    /// Add or replace a manual entry exactly as `spec` says.
    pub fn upsert(spec: BackendSpec) -> Command {
        Command::Upsert {
            spec,
            inherit_service: false,
        }
    }
}

/// Why a command was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("no backend with no={0}")]
    NotFound(String),
    #[error("no service named {0}")]
    ServiceNotFound(String),
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("service {service} already claims host {host:?} with path prefix {prefix:?}")]
    RuleConflict {
        service: String,
        host: String,
        prefix: String,
    },
}

/// One entry of the merged view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub spec: BackendSpec,
    pub source: Source,
    /// The discovery endpoint that found it (none for a manual entry).
    pub endpoint: Option<String>,
    pub container_id: Option<String>,
    /// True when a manual entry overrides a discovered one with the same `no`.
    pub pinned: bool,
}

/// Add to `out` every key whose value differs between `old` and `new` (added, removed or
/// changed).
fn changed_keys<V: PartialEq + Clone>(
    old: &OrdMap<String, V>,
    new: &OrdMap<String, V>,
    out: &mut BTreeSet<String>,
) {
    for (k, v) in old {
        if new.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    for (k, v) in new {
        if old.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
}

fn set_or_remove<V: Clone>(map: &mut OrdMap<String, V>, key: &str, value: Option<V>) {
    match value {
        Some(v) => {
            map.insert(key.to_owned(), v);
        }
        None => {
            map.remove(key);
        }
    }
}

/// The keys a batch of commands touched: what the state file journal and the incremental
/// routing-table update look at, so neither has to walk the whole registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Entries (`no`) whose manual spec, discovered spec or override may have changed.
    pub nos: BTreeSet<String>,
    /// Services whose settings (operator's or from labels) may have changed.
    pub services: BTreeSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.nos.is_empty() && self.services.is_empty()
    }
}

/// The registry's state. Cheap to query, pure to change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    // Persistent maps (structural sharing): the registry task clones the registry for every
    // batch of changes, and that must not cost O(entries).
    manual: OrdMap<String, BackendSpec>,
    /// What each discovery source found last; `discovered` and `discovered_services` merge it.
    found: OrdMap<SourceId, Found>,
    discovered: OrdMap<String, Discovered>,
    overrides: OrdMap<String, Override>,
    services: OrdMap<String, ServiceConfig>,
    /// Service settings from discovery labels, with the source they came from; an operator's
    /// `services` entry wins.
    discovered_services: OrdMap<String, (SourceId, ServiceConfig)>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the operator's part (what a state store keeps) is the same in both. Cheap for
    /// registries that share structure.
    pub fn same_operator_state(&self, other: &Registry) -> bool {
        self.manual == other.manual
            && self.overrides == other.overrides
            && self.services == other.services
    }

    /// This registry with the operator's part (manual entries, overrides, service settings)
    /// taken from `other` and what discovery found kept; and what that changed. For a state
    /// written by another replica.
    pub fn with_operator_state(&self, other: &Registry) -> (Registry, Changes) {
        let mut changes = Changes::default();
        fn differing<V: PartialEq + Clone>(
            a: &OrdMap<String, V>,
            b: &OrdMap<String, V>,
            into: &mut BTreeSet<String>,
        ) {
            for (k, v) in a.iter() {
                if b.get(k) != Some(v) {
                    into.insert(k.clone());
                }
            }
            for k in b.keys() {
                if !a.contains_key(k) {
                    into.insert(k.clone());
                }
            }
        }
        differing(&self.manual, &other.manual, &mut changes.nos);
        differing(&self.overrides, &other.overrides, &mut changes.nos);
        differing(&self.services, &other.services, &mut changes.services);
        let next = Registry {
            manual: other.manual.clone(),
            overrides: other.overrides.clone(),
            services: other.services.clone(),
            ..self.clone()
        };
        (next, changes)
    }

    /// Apply one command. On error nothing has changed.
    pub fn apply(&mut self, cmd: Command) -> Result<(), RegistryError> {
        match cmd {
            Command::Upsert {
                mut spec,
                inherit_service,
            } => {
                if inherit_service && let Some(e) = self.get(&spec.no) {
                    spec.service = e.spec.service;
                }
                self.manual.insert(spec.no.clone(), spec);
            }
            Command::Remove { no } => {
                if self.manual.remove(&no).is_none() {
                    self.set_override(no, AdminState::Disabled)?;
                }
            }
            Command::SetState { no, state } => {
                if let Some(m) = self.manual.get_mut(&no) {
                    m.state = state;
                } else {
                    self.set_override(no, state)?;
                }
            }
            Command::PutService { name, config } => {
                let name = validate::service(&name)?;
                let config = config.validated(&name)?;
                for (other, oc) in &self.services {
                    if *other == name {
                        continue;
                    }
                    for key in config.rule_keys() {
                        if oc.rule_keys().contains(&key) {
                            return Err(RegistryError::RuleConflict {
                                service: other.clone(),
                                host: key.0.to_owned(),
                                prefix: key.1.to_owned(),
                            });
                        }
                    }
                }
                self.services.insert(name, config);
            }
            Command::DeleteService { name } => {
                if self.services.remove(&name).is_none() {
                    return Err(RegistryError::ServiceNotFound(name));
                }
            }
            Command::SyncDiscovered {
                source,
                backends,
                services,
            } => {
                (self.found, self.discovered, self.discovered_services) =
                    self.synced(&source, backends, services);
                self.settle_overrides();
            }
        }
        Ok(())
    }

    /// Apply one command and record what it touched in `changes` (nothing when refused).
    pub fn apply_tracked(
        &mut self,
        cmd: Command,
        changes: &mut Changes,
    ) -> Result<(), RegistryError> {
        let mut touched = Changes::default();
        match &cmd {
            Command::Upsert { spec, .. } => {
                touched.nos.insert(spec.no.clone());
            }
            Command::Remove { no } | Command::SetState { no, .. } => {
                touched.nos.insert(no.clone());
            }
            Command::PutService { name, .. } | Command::DeleteService { name } => {
                touched.services.insert(name.clone());
            }
            Command::SyncDiscovered { .. } => {}
        }
        if let Command::SyncDiscovered {
            source,
            backends,
            services,
        } = cmd
        {
            let (found, discovered, discovered_services) = self.synced(&source, backends, services);
            changed_keys(&self.discovered, &discovered, &mut touched.nos);
            changed_keys(
                &self.discovered_services,
                &discovered_services,
                &mut touched.services,
            );
            (self.found, self.discovered, self.discovered_services) =
                (found, discovered, discovered_services);
            self.settle_overrides();
        } else {
            self.apply(cmd)?;
        }
        changes.nos.extend(touched.nos);
        changes.services.extend(touched.services);
        Ok(())
    }

    /// What each source found and the merged discovered entries and label settings, after
    /// `source` found `backends` and `services` (its earlier findings replaced, other sources'
    /// kept). Where two sources found the same `no` or service name, the first source in
    /// [`SourceId`] order wins; the other's entry comes back if the first one's goes.
    #[allow(clippy::type_complexity)]
    fn synced(
        &self,
        source: &SourceId,
        backends: Vec<Discovered>,
        services: Vec<(String, ServiceConfig)>,
    ) -> (
        OrdMap<SourceId, Found>,
        OrdMap<String, Discovered>,
        OrdMap<String, (SourceId, ServiceConfig)>,
    ) {
        let mut found = self.found.clone();
        if backends.is_empty() && services.is_empty() {
            found.remove(source);
        } else {
            let f = Found {
                backends: Arc::new(backends),
                services: Arc::new(services),
            };
            found.insert(source.clone(), f);
        }
        let mut discovered: OrdMap<String, Discovered> = OrdMap::new();
        let mut labelled = OrdMap::new();
        for (from, f) in &found {
            for d in f.backends.iter() {
                match discovered.get(&d.spec.no) {
                    // (Every sync says it again: debug, not a warning per Docker event.)
                    Some(first) => tracing::debug!(
                        no = %d.spec.no,
                        from = %from,
                        kept = %first.source,
                        "two discovery sources found the same no; the first one's entry is used: give one of them another quayside.no"
                    ),
                    None => {
                        discovered.insert(d.spec.no.clone(), d.clone());
                    }
                }
            }
            for (name, config) in f.services.iter() {
                if !labelled.contains_key(name) {
                    labelled.insert(name.clone(), (from.clone(), config.clone()));
                }
            }
        }
        (found, discovered, labelled)
    }

    /// Set (or with `None` remove) a manual entry as saved, without the API's checks
    /// (replaying the state file journal, whose records were checked when first applied).
    pub fn restore_manual(&mut self, no: &str, spec: Option<BackendSpec>) {
        set_or_remove(&mut self.manual, no, spec);
    }

    /// Set or remove an override as saved (journal replay).
    pub fn restore_override(&mut self, no: &str, o: Option<Override>) {
        set_or_remove(&mut self.overrides, no, o);
    }

    /// Drain, disable or (with `Active`) lift the override of a discovered entry. An override
    /// whose container is not seen now (stopped, or not yet listed after a restart) can still be
    /// changed or lifted by its `no`.
    fn set_override(&mut self, no: String, state: AdminState) -> Result<(), RegistryError> {
        let container_id = match (self.discovered.get(&no), self.overrides.get(&no)) {
            (Some(d), _) => Some(d.container_id.clone()),
            (None, Some(o)) => o.container_id.clone(),
            (None, None) => return Err(RegistryError::NotFound(no)),
        };
        if state == AdminState::Active {
            self.overrides.remove(&no);
        } else {
            self.overrides.insert(
                no,
                Override {
                    state,
                    container_id,
                },
            );
        }
        Ok(())
    }

    /// After the discovered set changed: an override lasts until the operator lifts it or a
    /// container with another id takes its `no`. One saved without an id takes the id of the
    /// first container seen with its `no`; one whose container is not seen now is kept (it may
    /// be stopped, or not listed yet after a restart).
    fn settle_overrides(&mut self) {
        let mut changed = Vec::new();
        for (no, o) in &self.overrides {
            let Some(d) = self.discovered.get(no) else {
                continue;
            };
            match &o.container_id {
                Some(id) if *id == d.container_id => {}
                Some(_) => changed.push((no.clone(), None)),
                None => changed.push((
                    no.clone(),
                    Some(Override {
                        state: o.state,
                        container_id: Some(d.container_id.clone()),
                    }),
                )),
            }
        }
        for (no, o) in changed {
            set_or_remove(&mut self.overrides, &no, o);
        }
    }

    /// Set or remove a service's operator settings as saved (journal replay).
    pub fn restore_service(&mut self, name: &str, config: Option<ServiceConfig>) {
        set_or_remove(&mut self.services, name, config);
    }

    /// The merged entry for `no`, if any.
    pub fn get(&self, no: &str) -> Option<Entry> {
        if let Some(m) = self.manual.get(no) {
            return Some(Entry {
                spec: m.clone(),
                source: Source::Manual,
                endpoint: None,
                container_id: None,
                pinned: self.discovered.contains_key(no),
            });
        }
        self.discovered.get(no).map(|d| self.discovered_entry(d))
    }

    fn discovered_entry(&self, d: &Discovered) -> Entry {
        let mut spec = d.spec.clone();
        if let Some(o) = self.overrides.get(&spec.no) {
            spec.state = o.state;
        }
        Entry {
            spec,
            source: d.source.kind,
            endpoint: Some(d.source.name.clone()),
            container_id: Some(d.container_id.clone()),
            pinned: false,
        }
    }

    /// All merged entries, ordered by `no`.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        let mut manual = self.manual.iter().peekable();
        let mut disc = self.discovered.iter().peekable();
        std::iter::from_fn(move || {
            let take_manual = match (manual.peek(), disc.peek()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((m, _)), Some((d, _))) => {
                    if m == d {
                        disc.next(); // the pin hides the discovered entry
                        true
                    } else {
                        m < d
                    }
                }
            };
            if take_manual {
                let (no, _) = manual.next()?;
                self.get(no)
            } else {
                let (_, d) = disc.next()?;
                Some(self.discovered_entry(d))
            }
        })
    }

    /// How many entries belong to `service`.
    pub fn service_size(&self, service: &str) -> usize {
        self.entries().filter(|e| e.spec.service == service).count()
    }

    /// Service settings set by operators (API, state file).
    pub fn services(&self) -> &OrdMap<String, ServiceConfig> {
        &self.services
    }

    /// Every service's settings in force: the operator's, and discovery's (labels) where no
    /// operator set any.
    pub fn services_in_force(&self) -> impl Iterator<Item = (&String, &ServiceConfig)> {
        let discovered = self
            .discovered_services
            .iter()
            .filter(|(n, _)| !self.services.contains_key(*n))
            .map(|(n, (_, c))| (n, c));
        self.services.iter().chain(discovered)
    }

    /// The settings in force for `name`: the operator's, else discovery's, else defaults;
    /// and whether they came from an operator.
    pub fn service_config(&self, name: &str) -> (ServiceConfig, bool) {
        match self.services.get(name) {
            Some(c) => (c.clone(), true),
            None => (
                self.discovered_services
                    .get(name)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default(),
                false,
            ),
        }
    }

    /// Where the settings in force for `name` come from: `manual` (an operator), the discovery
    /// source whose labels set them, or none (defaults).
    pub fn service_source(&self, name: &str) -> Option<String> {
        if self.services.contains_key(name) {
            return Some(Source::Manual.as_str().to_owned());
        }
        self.discovered_services
            .get(name)
            .map(|(source, _)| events::source_name(source.kind, &source.name))
    }

    /// Whether `name` has settings of its own (from an operator or from labels).
    pub fn has_settings(&self, name: &str) -> bool {
        self.services.contains_key(name) || self.discovered_services.contains_key(name)
    }

    /// Why `no` has no entry, in words: none at all, or an override kept for a container that
    /// is not seen now (stopped, or removed and not yet replaced).
    pub fn missing(&self, no: &str) -> String {
        let base = RegistryError::NotFound(no.to_owned()).to_string();
        match self.overrides.get(no) {
            Some(o) => format!(
                "{base}; an override ({}) is kept for its container {}, which is not running: it applies when that container is back, and POST /api/v1/backends/{no}/enable lifts it",
                o.state.as_str(),
                o.container_id
                    .as_deref()
                    .map_or("(not seen yet)", |id| &id[..id.len().min(12)]),
            ),
            None => base,
        }
    }

    /// Every `no` with a manual or a discovered entry.
    pub fn nos(&self) -> impl Iterator<Item = &String> + '_ {
        self.manual.keys().chain(
            self.discovered
                .keys()
                .filter(|k| !self.manual.contains_key(*k)),
        )
    }

    pub fn manual(&self) -> &OrdMap<String, BackendSpec> {
        &self.manual
    }

    pub fn overrides(&self) -> &OrdMap<String, Override> {
        &self.overrides
    }

    /// Names of every service that has settings or entries, plus `default`.
    pub fn service_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.services.keys().cloned().collect();
        names.extend(self.discovered_services.keys().cloned());
        names.extend(self.entries().map(|e| e.spec.service));
        names.insert(DEFAULT_SERVICE.to_owned());
        names
    }

    /// Rebuild from saved parts (the state file), validating as the API does.
    pub fn from_parts(
        manual: Vec<BackendSpec>,
        overrides: Vec<(String, Override)>,
        services: Vec<(String, ServiceConfig)>,
    ) -> Result<Self, RegistryError> {
        let mut r = Registry::new();
        for (name, config) in services {
            r.apply(Command::PutService { name, config })?;
        }
        for spec in manual {
            r.apply(Command::upsert(spec))?;
        }
        r.overrides = overrides.into_iter().collect();
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Strategy as _, prop_assert_eq, prop_oneof, proptest};

    fn spec(no: &str, port: u16) -> BackendSpec {
        BackendSpec {
            no: no.into(),
            addr: "127.0.0.1".parse().unwrap(),
            port,
            weight: 1,
            service: DEFAULT_SERVICE.into(),
            state: AdminState::Active,
        }
    }

    #[test]
    fn the_strategy_is_written_only_when_chosen() {
        // A file written before: `round_robin` stored though nobody chose it reads as the
        // default, and is not written again.
        let old: ServiceConfig =
            serde_json::from_str(r#"{"hosts":["a.test"],"lb":"round_robin"}"#).unwrap();
        assert_eq!(
            old,
            serde_json::from_str(r#"{"hosts":["a.test"]}"#).unwrap()
        );
        assert!(!serde_json::to_string(&old).unwrap().contains("\"lb\""));
        let chosen = ServiceConfig {
            lb: crate::balance::Strategy::P2c,
            ..old
        };
        let written = serde_json::to_string(&chosen).unwrap();
        assert!(written.contains(r#""lb":"p2c""#), "{written}");
    }

    fn docker(name: &str) -> SourceId {
        SourceId::new(Source::Docker, name)
    }

    fn sync(backends: Vec<Discovered>) -> Command {
        Command::SyncDiscovered {
            source: docker("default"),
            backends,
            services: vec![],
        }
    }

    fn disc(no: &str, port: u16, id: &str) -> Discovered {
        Discovered {
            spec: spec(no, port),
            container_id: id.into(),
            source: docker("default"),
        }
    }

    #[test]
    fn a_sync_replaces_only_its_own_source_s_entries() {
        let mut r = Registry::new();
        let from = |name: &str, d: Vec<Discovered>, services: Vec<(String, ServiceConfig)>| {
            let source = docker(name);
            Command::SyncDiscovered {
                backends: d
                    .into_iter()
                    .map(|d| Discovered {
                        source: source.clone(),
                        ..d
                    })
                    .collect(),
                services,
                source,
            }
        };
        let cfg = |host: &str| ServiceConfig {
            hosts: vec![host.into()],
            ..Default::default()
        };
        let mut changes = Changes::default();
        r.apply_tracked(
            from(
                "a",
                vec![disc("web", 80, "c1")],
                vec![("web".into(), cfg("a.test"))],
            ),
            &mut changes,
        )
        .unwrap();
        r.apply_tracked(
            from(
                "b",
                vec![disc("api", 81, "c2"), disc("web", 82, "c3")],
                vec![
                    ("web".into(), cfg("b.test")),
                    ("api".into(), cfg("api.test")),
                ],
            ),
            &mut changes,
        )
        .unwrap();
        // Each entry says where it came from; a `no` the first source holds stays its.
        let web = r.get("web").unwrap();
        assert_eq!(
            (web.source, web.endpoint.as_deref()),
            (Source::Docker, Some("a"))
        );
        assert_eq!(web.spec.port, 80);
        assert_eq!(r.get("api").unwrap().endpoint.as_deref(), Some("b"));
        assert_eq!(r.service_config("web").0.hosts, vec!["a.test"]);
        // An empty sync of `a` removes only a's entries and settings; b's take over.
        let mut changes = Changes::default();
        r.apply_tracked(from("a", vec![], vec![]), &mut changes)
            .unwrap();
        let web = r.get("web").unwrap();
        assert_eq!((web.endpoint.as_deref(), web.spec.port), (Some("b"), 82));
        assert_eq!(r.get("api").unwrap().spec.port, 81);
        assert!(changes.nos.contains("web") && !changes.nos.contains("api"));
        assert_eq!(r.service_config("web").0.hosts, vec!["b.test"]);
        // A manual entry has no endpoint.
        r.apply(Command::upsert(spec("m", 9000))).unwrap();
        assert_eq!(r.get("m").unwrap().endpoint, None);
    }

    #[test]
    fn upsert_replaces_and_remove_deletes() {
        let mut r = Registry::new();
        r.apply(Command::upsert(spec("1", 8081))).unwrap();
        r.apply(Command::upsert(spec("1", 8082))).unwrap();
        assert_eq!(r.get("1").unwrap().spec.port, 8082);
        assert_eq!(r.entries().count(), 1);
        r.apply(Command::Remove { no: "1".into() }).unwrap();
        assert!(r.get("1").is_none());
        assert_eq!(
            r.apply(Command::Remove { no: "1".into() }),
            Err(RegistryError::NotFound("1".into()))
        );
    }

    #[test]
    fn manual_pins_over_discovered_and_unpin_restores() {
        let mut r = Registry::new();
        r.apply(sync(vec![disc("web", 80, "c1")])).unwrap();
        r.apply(Command::upsert(spec("web", 9000))).unwrap();
        let e = r.get("web").unwrap();
        assert_eq!(
            (e.source, e.spec.port, e.pinned),
            (Source::Manual, 9000, true)
        );
        assert_eq!(r.entries().count(), 1);
        r.apply(Command::Remove { no: "web".into() }).unwrap();
        let e = r.get("web").unwrap();
        assert_eq!((e.source, e.spec.port), (Source::Docker, 80));
        // Deleting an unpinned discovered entry disables it until enabled or replaced.
        r.apply(Command::Remove { no: "web".into() }).unwrap();
        assert_eq!(r.get("web").unwrap().spec.state, AdminState::Disabled);
        r.apply(sync(vec![disc("web", 80, "c1")])).unwrap();
        assert_eq!(r.get("web").unwrap().spec.state, AdminState::Disabled);
        r.apply(sync(vec![disc("web", 80, "c2")])).unwrap();
        assert_eq!(r.get("web").unwrap().spec.state, AdminState::Active);
    }

    #[test]
    fn overrides_outlive_restarts_until_lifted_or_replaced() {
        let mut r = Registry::new();
        r.apply(sync(vec![disc("web", 80, "c1"), disc("api", 81, "c2")]))
            .unwrap();
        r.apply(Command::SetState {
            no: "web".into(),
            state: AdminState::Draining,
        })
        .unwrap();
        r.apply(Command::Remove { no: "api".into() }).unwrap();
        // A restart: the saved parts, then discovery's first syncs (empty, then the same ids).
        let overrides: Vec<_> = r
            .overrides()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut r = Registry::from_parts(vec![], overrides, vec![]).unwrap();
        r.apply(sync(vec![])).unwrap();
        r.apply(sync(vec![disc("web", 80, "c1"), disc("api", 81, "c2")]))
            .unwrap();
        assert_eq!(r.get("web").unwrap().spec.state, AdminState::Draining);
        assert_eq!(r.get("api").unwrap().spec.state, AdminState::Disabled);
        // A new container under the same no (a redeploy) drops it; lifting drops it too.
        r.apply(sync(vec![disc("web", 80, "c9"), disc("api", 81, "c2")]))
            .unwrap();
        assert_eq!(r.get("web").unwrap().spec.state, AdminState::Active);
        r.apply(Command::SetState {
            no: "api".into(),
            state: AdminState::Active,
        })
        .unwrap();
        assert!(r.overrides().is_empty());
        // One whose container is not seen now can still be lifted by its no, and says so.
        r.apply(Command::Remove { no: "api".into() }).unwrap();
        r.apply(sync(vec![])).unwrap();
        assert!(r.get("api").is_none());
        assert!(
            r.missing("api")
                .contains("override (disabled) is kept for its container c2")
        );
        assert_eq!(r.missing("zzz"), "no backend with no=zzz");
        r.apply(Command::SetState {
            no: "api".into(),
            state: AdminState::Active,
        })
        .unwrap();
        assert!(r.overrides().is_empty());
        // Saved before ids were kept: attaches to the first container seen with its no.
        let legacy = Override {
            state: AdminState::Disabled,
            container_id: None,
        };
        let mut r = Registry::from_parts(vec![], vec![("web".into(), legacy)], vec![]).unwrap();
        r.apply(sync(vec![disc("web", 80, "c5")])).unwrap();
        assert_eq!(
            r.overrides().get("web").unwrap().container_id.as_deref(),
            Some("c5")
        );
        assert_eq!(r.get("web").unwrap().spec.state, AdminState::Disabled);
    }

    #[test]
    fn a_pin_without_service_keeps_the_pinned_entrys_service() {
        let mut r = Registry::new();
        let mut d = disc("web", 80, "c1");
        d.spec.service = "api".into();
        r.apply(sync(vec![d])).unwrap();
        r.apply(Command::Upsert {
            spec: spec("web", 9000),
            inherit_service: true,
        })
        .unwrap();
        let e = r.get("web").unwrap();
        assert_eq!((e.spec.service.as_str(), e.pinned), ("api", true));
        r.apply(Command::upsert(spec("web", 9000))).unwrap();
        assert_eq!(r.get("web").unwrap().spec.service, DEFAULT_SERVICE);
    }

    #[test]
    fn rule_conflicts_are_refused() {
        let mut r = Registry::new();
        let cfg = ServiceConfig {
            hosts: vec!["a.example.com".into()],
            ..Default::default()
        };
        r.apply(Command::PutService {
            name: "a".into(),
            config: cfg.clone(),
        })
        .unwrap();
        let err = r
            .apply(Command::PutService {
                name: "b".into(),
                config: cfg.clone(),
            })
            .unwrap_err();
        assert!(matches!(err, RegistryError::RuleConflict { .. }));
        // Replacing one's own rules is fine.
        r.apply(Command::PutService {
            name: "a".into(),
            config: cfg,
        })
        .unwrap();
        let bad = ServiceConfig {
            hosts: vec!["x.example.com".into()],
            ..Default::default()
        };
        assert!(
            r.apply(Command::PutService {
                name: "default".into(),
                config: bad
            })
            .is_err()
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(u8, u16),
        Remove(u8),
        State(u8, u8),
        Sync(Vec<(u8, u16)>),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 1u16..5).prop_map(|(n, p)| Op::Upsert(n, p)),
            (0u8..6).prop_map(Op::Remove),
            (0u8..6, 0u8..3).prop_map(|(n, s)| Op::State(n, s)),
            proptest::collection::vec((0u8..6, 1u16..5), 0..4).prop_map(Op::Sync),
        ]
    }

    proptest! {
        /// A failed command changes nothing; the merged view never shows a `no` twice; a manual
        /// entry always wins over a discovered one.
        #[test]
        fn apply_invariants(ops in proptest::collection::vec(op(), 0..40)) {
            let mut r = Registry::new();
            for o in ops {
                let before = r.clone();
                let cmd = match o {
                    Op::Upsert(n, p) => Command::upsert(spec(&n.to_string(), p)),
                    Op::Remove(n) => Command::Remove { no: n.to_string() },
                    Op::State(n, s) => Command::SetState {
                        no: n.to_string(),
                        state: [AdminState::Active, AdminState::Draining, AdminState::Disabled][s as usize],
                    },
                    Op::Sync(list) => sync(
                        list.into_iter().map(|(n, p)| disc(&n.to_string(), p + 100, "id")).collect(),
                    ),
                };
                if r.apply(cmd).is_err() {
                    prop_assert_eq!(&r, &before);
                }
                let nos: Vec<String> = r.entries().map(|e| e.spec.no).collect();
                let mut sorted = nos.clone();
                sorted.dedup();
                prop_assert_eq!(nos.len(), sorted.len());
                for e in r.entries() {
                    if r.manual().contains_key(&e.spec.no) {
                        prop_assert_eq!(e.source, Source::Manual);
                    }
                }
            }
        }
    }
}
