//! Pure evaluation of one container: its labels, networks, ports and health decide whether it
//! is routed, and if not, why. No I/O: the Docker adapter fills a [`ContainerInfo`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::balance::Strategy;
use crate::registry::ServiceConfig;
use crate::registry::validate::{self, FieldError};

/// What quayside needs to know about a container, as read from `docker inspect`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// Unix time of creation (orders containers for "first one wins").
    pub created: i64,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    pub paused: bool,
    /// `None` when the image has no HEALTHCHECK.
    pub health: Option<String>,
    /// Network name → IP address (if it has one).
    pub networks: BTreeMap<String, Option<IpAddr>>,
    /// Exposed TCP ports (image `EXPOSE` and `--expose`), sorted.
    pub exposed_ports: Vec<u16>,
    /// Published TCP ports: the container's port → the host's.
    pub published: BTreeMap<u16, u16>,
    /// It shares the host's network (`--network host`).
    pub host_network: bool,
}

/// Why a container with our labels is not routed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Skip {
    /// `<prefix>.enable=false`.
    Disabled,
    NotRunning,
    Paused,
    /// HEALTHCHECK says `starting` or `unhealthy`.
    Unhealthy {
        status: String,
    },
    BadLabel {
        label: String,
        value: String,
        reason: String,
    },
    NoPort {
        exposed: Vec<u16>,
        /// The label that would choose one (`quayside.port`).
        label: String,
    },
    NoNetwork,
    AmbiguousNetwork {
        networks: Vec<String>,
        /// The label that would choose one (`quayside.network`).
        label: String,
    },
    NetworkNotFound {
        network: String,
        networks: Vec<String>,
    },
    NoAddress {
        network: String,
    },
    /// quayside runs in a container of its own networks (`own`) and this one is on none of
    /// them (`networks`): its addresses are not reachable from quayside.
    NoSharedNetwork {
        networks: Vec<String>,
        own: Vec<String>,
        /// The label that would choose one anyway (`quayside.network`).
        label: String,
    },
    /// Labelled for another quayside (`<prefix>.instance`, `--instance`): `instance` is the
    /// one it names, none when it has no such label and this quayside has an instance.
    OtherInstance {
        instance: Option<String>,
        label: String,
    },
    /// The endpoint is reached at `address`, and the container's port is not published there.
    NotPublished {
        port: u16,
        #[schema(value_type = String)]
        address: std::net::IpAddr,
    },
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Disabled => write!(f, "disabled by its enable label"),
            Skip::NotRunning => write!(f, "not running"),
            Skip::Paused => write!(f, "paused"),
            Skip::Unhealthy { status } => write!(f, "health check status is {status}"),
            Skip::BadLabel {
                label,
                value,
                reason,
            } => write!(f, "label {label}={value:?} is invalid: {reason}"),
            Skip::NoPort { exposed, label } if exposed.is_empty() => {
                write!(f, "no exposed port; set the label {label}")
            }
            Skip::NoPort { exposed, label } => write!(
                f,
                "several exposed ports {exposed:?}; set the label {label} to choose one"
            ),
            Skip::NoNetwork => write!(f, "not attached to any network with an IP address"),
            Skip::AmbiguousNetwork { networks, label } => write!(
                f,
                "on several networks {networks:?} and none shared with quayside; set the label {label} to one of them"
            ),
            Skip::NetworkNotFound { network, networks } => write!(
                f,
                "the network label names {network:?} but the container is on {networks:?}"
            ),
            Skip::NoAddress { network } => write!(f, "no IP address on network {network:?}"),
            Skip::NoSharedNetwork {
                networks,
                own,
                label,
            } => write!(
                f,
                "shares no network with quayside's container (it is on {networks:?}, quayside on {own:?}), so quayside cannot reach it; join it to one: docker network connect {} <container>, or the Compose networks: key (or set {label} if that network is reachable after all)",
                own.first().map_or("<network>", String::as_str)
            ),
            Skip::OtherInstance {
                instance: Some(n),
                label,
            } => write!(
                f,
                "belongs to another quayside: {label}={n}, routed by the quayside started with --instance {n}"
            ),
            Skip::OtherInstance {
                instance: None,
                label,
            } => write!(
                f,
                "belongs to another quayside: it has no {label} label, so the quayside without --instance routes it"
            ),
            Skip::NotPublished { port, address } => write!(
                f,
                "its host is reached at {address} and port {port} is not published there; publish it (-p {port}) or run it with --network host"
            ),
        }
    }
}

/// A routable container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routable {
    pub no: String,
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub service: String,
    /// Service-level settings this container's labels ask for; `None` when it sets none.
    pub service_config: Option<ServiceConfig>,
}

/// A label quayside reads (under the prefix): its name, whether it sets the service (the first
/// container of a service wins) or the container's own entry, what it means, and its parser.
/// Labels are read only through this list, so a label is added in one place: the README's
/// label table is checked against it (`tests/docs.rs`), and unknown labels are the ones not in
/// it.
pub struct LabelDoc {
    pub name: &'static str,
    pub service_level: bool,
    pub meaning: &'static str,
    /// Reads the label's value into what a container's labels ask for; the error names the
    /// label and says why.
    parse: fn(&mut Draft, &str) -> Result<(), FieldError>,
}

impl std::fmt::Debug for LabelDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelDoc")
            .field("name", &self.name)
            .field("service_level", &self.service_level)
            .finish()
    }
}

/// What one container's labels ask for, as [`LABELS`]' parsers read them.
#[derive(Default)]
struct Draft {
    enabled: bool,
    no: Option<String>,
    service: Option<String>,
    weight: u32,
    port: Option<u16>,
    network: Option<String>,
    /// Service-level settings (used only if a service-level label is set).
    cfg: ServiceConfig,
    health: HealthLabels,
    rate: RateLabels,
}

#[derive(Default)]
struct RateLabels {
    average: Option<u32>,
    burst: Option<u32>,
    period: Option<crate::types::Dur>,
    per: Option<crate::registry::middleware::RatePer>,
}

/// The label families named by a suffix (`quayside.headers.request.X-Env`), as
/// [`LabelDoc::name`]s end.
const FAMILY: &str = ".<NAME>";

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The forward-auth settings being read (the URL is checked once all labels are).
fn forward(d: &mut Draft) -> &mut crate::registry::middleware::ForwardAuth {
    d.cfg
        .forward_auth
        .get_or_insert_with(|| crate::registry::middleware::ForwardAuth {
            url: String::new(),
            copy_headers: Vec::new(),
        })
}

fn amount(v: &str) -> Result<u32, FieldError> {
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(FieldError::new(
            "value",
            format!("must be 1-1000000, got {v:?}"),
        )),
    }
}

#[derive(Default)]
struct HealthLabels {
    path: Option<String>,
    interval: Option<crate::types::Dur>,
    timeout: Option<crate::types::Dur>,
    rise: Option<u32>,
    fall: Option<u32>,
}

fn boolean(v: &str) -> Result<bool, FieldError> {
    crate::types::parse_bool(v).map_err(|e| FieldError::new("value", e))
}

fn duration(v: &str) -> Result<crate::types::Dur, FieldError> {
    crate::types::parse_duration(v)
        .map(crate::types::Dur)
        .map_err(|r| FieldError::new("value", r))
}

fn count(v: &str) -> Result<u32, FieldError> {
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err(FieldError::new("value", format!("must be 1-100, got {v}"))),
    }
}

fn host(d: &mut Draft, v: &str) -> Result<(), FieldError> {
    for h in v.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        d.cfg.hosts.push(validate::host_rule(h)?);
    }
    Ok(())
}

fn lb(d: &mut Draft, v: &str) -> Result<(), FieldError> {
    d.cfg.lb = Strategy::parse(v)
        .ok_or_else(|| FieldError::new("lb", format!("must be {}", Strategy::NAMES)))?;
    Ok(())
}

fn hash_key(d: &mut Draft, v: &str) -> Result<(), FieldError> {
    validate::hash_key(v.trim())?;
    d.cfg.hash_key = Some(v.trim().to_owned());
    Ok(())
}

/// `true` uses the default cookie name; anything else is the cookie name.
fn sticky(d: &mut Draft, v: &str) -> Result<(), FieldError> {
    d.cfg.sticky_cookie = match v.trim().to_ascii_lowercase().as_str() {
        "false" | "0" | "no" => None,
        "true" | "1" | "yes" => Some("quayside_sticky".to_owned()),
        _ => {
            validate::cookie_name("sticky", v.trim())?;
            Some(v.trim().to_owned())
        }
    };
    Ok(())
}

fn protocol(d: &mut Draft, v: &str) -> Result<(), FieldError> {
    d.cfg.protocol = match v.trim() {
        "http1" | "http" => crate::registry::Protocol::Http1,
        "h2c" => crate::registry::Protocol::H2c,
        _ => return Err(FieldError::new("protocol", "must be http1 or h2c")),
    };
    Ok(())
}

/// Every label, in the README's order.
pub const LABELS: &[LabelDoc] = &[
    LabelDoc {
        name: "enable",
        service_level: false,
        meaning: "`true`/`false` (every boolean label also takes `yes`/`no`, `on`/`off`, `1`/`0`, any case); a container with any other `quayside.*` label is enabled unless this says `false`",
        parse: |d, v| {
            d.enabled = boolean(v)?;
            Ok(())
        },
    },
    LabelDoc {
        name: "instance",
        service_level: false,
        meaning: "the quayside that routes it, for several on one Docker host: one started with `--instance NAME` routes only containers labelled `quayside.instance=NAME`, one without routes only those without the label",
        // (Decided before any other label is read: [`instance_of`].)
        parse: |_, _| Ok(()),
    },
    LabelDoc {
        name: "port",
        service_level: false,
        meaning: "the container port to send to; default: its one exposed port (several and no label → skipped with a warning)",
        parse: |d, v| {
            d.port = Some(validate::port(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "service",
        service_level: false,
        meaning: "the pool (default `default`); containers of one service share it, so `--scale` just works",
        parse: |d, v| {
            d.service = Some(validate::service(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "host",
        service_level: true,
        meaning: "comma-separated host names for the service (`*.example.com` allowed)",
        parse: host,
    },
    LabelDoc {
        name: "path",
        service_level: true,
        meaning: "path prefix for the service, matched by whole segments (`/docs` matches `/docs`, `/docs/…`, not `/docsx`)",
        parse: |d, v| {
            d.cfg.path_prefix = Some(validate::path_prefix(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "strip_prefix",
        service_level: true,
        meaning: "`true`: strip the service's path prefix before forwarding (`/docs/a` reaches the backend as `/a`)",
        parse: |d, v| {
            d.cfg.strip_prefix = boolean(v)?;
            Ok(())
        },
    },
    LabelDoc {
        name: "weight",
        service_level: false,
        meaning: "1–1000 (default 1)",
        parse: |d, v| {
            d.weight = validate::weight(v)?;
            Ok(())
        },
    },
    LabelDoc {
        name: "network",
        service_level: false,
        meaning: "which network's IP to use; else the network shared with quayside's own container (quayside in a container of its own networks routes no container it shares none with, and says which to join); else, quayside on the host, the only network (several and no way to choose → skipped, naming them)",
        parse: |d, v| {
            d.network = Some(v.to_owned());
            Ok(())
        },
    },
    LabelDoc {
        name: "no",
        service_level: false,
        meaning: "the entry's key; default the container name",
        parse: |d, v| {
            d.no = Some(validate::no(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "lb",
        service_level: true,
        meaning: "the service's balancing strategy: `round_robin`, `random`, `p2c`, `least_conn`, `hash`",
        parse: lb,
    },
    LabelDoc {
        name: "hash_key",
        service_level: true,
        meaning: "for `hash`: `client_ip` (default), `header:X-User` or `cookie:session`",
        parse: hash_key,
    },
    LabelDoc {
        name: "sticky",
        service_level: true,
        meaning: "`true` (cookie `quayside_sticky`) or a cookie name: sticky sessions",
        parse: sticky,
    },
    LabelDoc {
        name: "health.path",
        service_level: true,
        meaning: "turns on active health checks: GET this path on every backend; 2xx or 3xx passes",
        parse: |d, v| {
            d.health.path = Some(v.trim().to_owned());
            Ok(())
        },
    },
    LabelDoc {
        name: "health.interval",
        service_level: true,
        meaning: "time between probes (default 5s)",
        parse: |d, v| {
            d.health.interval = Some(duration(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "health.timeout",
        service_level: true,
        meaning: "a probe's timeout, at most the interval (default 2s, or the interval if shorter)",
        parse: |d, v| {
            d.health.timeout = Some(duration(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "health.rise",
        service_level: true,
        meaning: "successes in a row that bring a backend back, 1–100 (default 2)",
        parse: |d, v| {
            d.health.rise = Some(count(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "health.fall",
        service_level: true,
        meaning: "failures in a row that take it out, 1–100 (default 3)",
        parse: |d, v| {
            d.health.fall = Some(count(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "health",
        service_level: true,
        meaning: "the same as `quayside.health.path`",
        parse: |d, v| {
            d.health.path = Some(v.trim().to_owned());
            Ok(())
        },
    },
    LabelDoc {
        name: "slow_start",
        service_level: true,
        meaning: "e.g. `30s`: a backend that just became available ramps up its share over this time (durations: 1ms to 24h)",
        parse: |d, v| {
            d.cfg.slow_start = Some(duration(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "protocol",
        service_level: true,
        meaning: "`http1` (default) or `h2c` to the backends (gRPC)",
        parse: protocol,
    },
    LabelDoc {
        name: "https_redirect",
        service_level: true,
        meaning: "`true`: plain HTTP gets a 308 to `https://` on `--https-port` (ACME challenges excepted)",
        parse: |d, v| {
            d.cfg.https_redirect = boolean(v)?;
            Ok(())
        },
    },
    LabelDoc {
        name: "hsts",
        service_level: true,
        meaning: "`Strict-Transport-Security` for HTTPS answers, e.g. `max-age=31536000; includeSubDomains`",
        parse: |d, v| {
            d.cfg.hsts = Some(v.trim().to_owned());
            Ok(())
        },
    },
    LabelDoc {
        name: "auth.basic",
        service_level: true,
        meaning: "comma-separated `user:hash` (bcrypt, argon2, or htpasswd's `$apr1$` and `{SHA}`, as `htpasswd -nB` prints; `$$` for each `$` in a compose file): others get 401",
        parse: |d, v| {
            d.cfg.basic_auth = list(v);
            Ok(())
        },
    },
    LabelDoc {
        name: "auth.forward.url",
        service_level: true,
        meaning: "`http://…` or `https://…`: asked with each request's headers; a 2xx lets it through, anything else is the answer",
        parse: |d, v| {
            forward(d).url = v.trim().to_owned();
            Ok(())
        },
    },
    LabelDoc {
        name: "auth.forward.copy_headers",
        service_level: true,
        meaning: "comma-separated headers of the auth service's 2xx copied into the request (`X-User,X-Email`)",
        parse: |d, v| {
            forward(d).copy_headers = list(v);
            Ok(())
        },
    },
    LabelDoc {
        name: "ip_allow",
        service_level: true,
        meaning: "comma-separated address blocks (`10.0.0.0/8,2001:db8::/32`); other clients get 403 (see `--trusted-proxies`)",
        parse: |d, v| {
            d.cfg.ip_allow = list(v);
            Ok(())
        },
    },
    LabelDoc {
        name: "rate_limit.average",
        service_level: true,
        meaning: "requests per period (default per second) allowed on average; over it: 429 with `Retry-After`",
        parse: |d, v| {
            d.rate.average = Some(amount(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "rate_limit.burst",
        service_level: true,
        meaning: "requests allowed at once above the average (default: the average)",
        parse: |d, v| {
            d.rate.burst = Some(amount(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "rate_limit.period",
        service_level: true,
        meaning: "the period of the average (default `1s`)",
        parse: |d, v| {
            d.rate.period = Some(duration(v)?);
            Ok(())
        },
    },
    LabelDoc {
        name: "rate_limit.per",
        service_level: true,
        meaning: "`client_ip` (default: a bucket per client) or `service` (one bucket)",
        parse: |d, v| {
            use crate::registry::middleware::RatePer;
            d.rate.per = Some(match v.trim() {
                "client_ip" => RatePer::ClientIp,
                "service" => RatePer::Service,
                _ => return Err(FieldError::new("value", "must be client_ip or service")),
            });
            Ok(())
        },
    },
    LabelDoc {
        name: "compress",
        service_level: true,
        meaning: "`true`: gzip, br or zstd by `Accept-Encoding` for text-like answers over 1 KiB, streamed",
        parse: |d, v| {
            d.cfg.compress = boolean(v)?;
            Ok(())
        },
    },
    LabelDoc {
        name: "headers.request.<NAME>",
        service_level: true,
        meaning: "set header NAME on requests to the backends (an empty value removes it)",
        parse: |_, _| Ok(()),
    },
    LabelDoc {
        name: "headers.response.<NAME>",
        service_level: true,
        meaning: "set header NAME on answers to clients (an empty value removes it)",
        parse: |_, _| Ok(()),
    },
];

/// The family of [`LABELS`] that `name` (after the prefix and its dot) belongs to, and the
/// header it names.
fn family(name: &str) -> Option<(&'static LabelDoc, &str)> {
    LABELS.iter().find_map(|l| {
        let stem = l.name.strip_suffix(FAMILY)?;
        let rest = name.strip_prefix(stem)?.strip_prefix('.')?;
        (!rest.is_empty()).then_some((l, rest))
    })
}

/// The labels under `prefix` that quayside does not know (typos such as `quayside.prot`): they
/// change nothing, which is worth saying.
pub fn unknown(labels: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    labels
        .keys()
        .filter(|k| {
            k.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|name| {
                    !LABELS.iter().any(|l| l.name == name) && family(name).is_none()
                })
        })
        .cloned()
        .collect()
}

/// Whether a container with our labels is this quayside's: with an instance (`mine`, from
/// `--instance`), only one labelled `<prefix>.instance` with its name; without, only one
/// without that label. Decided before its other labels are read: another quayside's
/// container is not this one's to judge.
pub fn instance_of(
    labels: &BTreeMap<String, String>,
    prefix: &str,
    mine: Option<&str>,
) -> Result<(), Skip> {
    let label = format!("{prefix}.instance");
    let theirs = labels
        .get(&label)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    if theirs == mine {
        Ok(())
    } else {
        Err(Skip::OtherInstance {
            instance: theirs.map(str::to_owned),
            label,
        })
    }
}

/// Whether a container concerns us at all: it has any label under the prefix.
pub fn is_ours(labels: &BTreeMap<String, String>, prefix: &str) -> bool {
    labels.keys().any(|k| {
        k.len() > prefix.len() && k.starts_with(prefix) && k.as_bytes()[prefix.len()] == b'.'
    })
}

/// A bad label's [`Skip`], its value redacted where it holds a secret (`/api/v1/discovery`
/// and the log show it): password hashes, the forward-auth URL's credentials, secret header
/// values.
fn bad(label: String, value: &str, e: FieldError) -> Skip {
    use crate::registry::middleware::{REDACTED, redact_url, redact_user, secret_header};
    let value = if label.ends_with(".auth.basic") {
        list(value)
            .iter()
            .map(|e| redact_user(e))
            .collect::<Vec<_>>()
            .join(",")
    } else if label.ends_with(".auth.forward.url") {
        redact_url(value)
    } else if family_header(&label).is_some_and(secret_header) {
        REDACTED.to_owned()
    } else {
        value.to_owned()
    };
    Skip::BadLabel {
        label,
        value,
        reason: e.reason,
    }
}

/// The header a `…headers.request.NAME` or `…headers.response.NAME` label sets.
fn family_header(label: &str) -> Option<&str> {
    [".headers.request.", ".headers.response."]
        .iter()
        .find_map(|f| label.split_once(f).map(|(_, name)| name))
}

/// Read every label under `prefix` by its parser in [`LABELS`], in their order; the first bad
/// one is the container's [`Skip`]. `service_set`: a service-level label is set.
fn read(c: &ContainerInfo, prefix: &str) -> Result<(Draft, bool), Skip> {
    let mut d = Draft {
        enabled: true,
        weight: 1,
        ..Default::default()
    };
    let mut service_set = false;
    for l in LABELS {
        let key = format!("{prefix}.{}", l.name);
        if let Some(v) = c.labels.get(&key) {
            (l.parse)(&mut d, v).map_err(|e| bad(key, v, e))?;
            service_set |= l.service_level;
        }
    }
    let ours = format!("{prefix}.");
    for (key, v) in &c.labels {
        let Some((l, header)) = key.strip_prefix(&ours).and_then(family) else {
            continue;
        };
        let field = if l.name.starts_with("headers.request") {
            "headers.request"
        } else {
            "headers.response"
        };
        let header = crate::registry::middleware::header_name(field, header)
            .map_err(|e| bad(key.clone(), v, e))?;
        let map = if field == "headers.request" {
            &mut d.cfg.headers.request
        } else {
            &mut d.cfg.headers.response
        };
        map.insert(header, v.trim().to_owned());
        service_set = true;
    }
    Ok((d, service_set))
}

/// Decide about one container. `own_networks` are the networks of quayside's own container
/// (empty when it runs outside Docker).
pub fn evaluate(
    c: &ContainerInfo,
    prefix: &str,
    own_networks: &[String],
    address: Option<IpAddr>,
) -> Result<Routable, Skip> {
    let key = |name: &str| format!("{prefix}.{name}");
    // Labels first: a bad label is reported whatever the container's state.
    let (mut d, service_set) = read(c, prefix)?;
    let no = match d.no.take() {
        Some(no) => no,
        None => validate::no(&c.name).map_err(|e| {
            bad(
                "container name".into(),
                &c.name,
                FieldError::new("no", format!("{}; set the no label", e.reason)),
            )
        })?,
    };
    let service = d
        .service
        .take()
        .unwrap_or_else(|| validate::DEFAULT_SERVICE.to_owned());
    let service_config = if service_set {
        Some(service_settings(c, prefix, &service, &mut d)?)
    } else {
        None
    };
    if !d.enabled {
        return Err(Skip::Disabled);
    }
    if !c.running {
        return Err(Skip::NotRunning);
    }
    if c.paused {
        return Err(Skip::Paused);
    }
    if let Some(h) = &c.health
        && h != "healthy"
    {
        return Err(Skip::Unhealthy { status: h.clone() });
    }
    let port = match (d.port, c.exposed_ports.as_slice()) {
        (Some(p), _) => p,
        (None, [only]) => *only,
        (None, exposed) => {
            return Err(Skip::NoPort {
                exposed: exposed.to_vec(),
                label: key("port"),
            });
        }
    };
    // A host reached at one address: the container is there at its published port, or at its
    // own port when it shares the host's network.
    if let Some(address) = address {
        let port = if c.host_network {
            port
        } else {
            *c.published
                .get(&port)
                .ok_or(Skip::NotPublished { port, address })?
        };
        return Ok(Routable {
            no,
            addr: address,
            port,
            weight: d.weight,
            service,
            service_config,
        });
    }
    let names: Vec<String> = c.networks.keys().cloned().collect();
    let network = match d.network {
        Some(n) => {
            if !c.networks.contains_key(&n) {
                return Err(Skip::NetworkNotFound {
                    network: n,
                    networks: names,
                });
            }
            n
        }
        None => {
            let shared: Vec<&String> = names.iter().filter(|n| own_networks.contains(n)).collect();
            // quayside in a container of its own networks reaches only those (on the host,
            // or in a container on the host's network, every bridge address is reachable).
            let confined = !own_networks.is_empty() && !own_networks.iter().any(|n| n == "host");
            match (shared.as_slice(), names.as_slice()) {
                ([one], _) => (*one).clone(),
                (_, []) => return Err(Skip::NoNetwork),
                ([], _) if confined => {
                    return Err(Skip::NoSharedNetwork {
                        networks: names,
                        own: own_networks.to_vec(),
                        label: key("network"),
                    });
                }
                (_, [only]) => only.clone(),
                _ => {
                    return Err(Skip::AmbiguousNetwork {
                        networks: names,
                        label: key("network"),
                    });
                }
            }
        }
    };
    let addr = c.networks[&network].ok_or(Skip::NoAddress {
        network: network.clone(),
    })?;
    Ok(Routable {
        no,
        addr,
        port,
        weight: d.weight,
        service,
        service_config,
    })
}

/// The service-level settings the labels ask for, checked as a whole.
fn service_settings(
    c: &ContainerInfo,
    prefix: &str,
    service: &str,
    d: &mut Draft,
) -> Result<ServiceConfig, Skip> {
    let key = |name: &str| format!("{prefix}.{name}");
    let mut cfg = std::mem::take(&mut d.cfg);
    let h = std::mem::take(&mut d.health);
    if let Some(path) = h.path {
        let mut check = crate::registry::HealthCheck::with(path, h.interval, h.timeout);
        check.rise = h.rise.unwrap_or(check.rise);
        check.fall = h.fall.unwrap_or(check.fall);
        cfg.health = Some(check);
    } else if let Some(n) = [
        "health.interval",
        "health.timeout",
        "health.rise",
        "health.fall",
    ]
    .iter()
    .find(|n| c.labels.contains_key(&key(n)))
    {
        return Err(bad(
            key(n),
            &c.labels[&key(n)],
            FieldError::new("health", format!("needs {} too", key("health.path"))),
        ));
    }
    let r = std::mem::take(&mut d.rate);
    if let Some(average) = r.average {
        cfg.rate_limit = Some(crate::registry::middleware::RateLimit {
            average,
            burst: r.burst,
            period: r.period,
            per: r.per.unwrap_or_default(),
        });
    } else if let Some(n) = ["rate_limit.burst", "rate_limit.period", "rate_limit.per"]
        .iter()
        .find(|n| c.labels.contains_key(&key(n)))
    {
        return Err(bad(
            key(n),
            &c.labels[&key(n)],
            FieldError::new(
                "rate_limit",
                format!("needs {} too", key("rate_limit.average")),
            ),
        ));
    }
    if cfg.forward_auth.as_ref().is_some_and(|f| f.url.is_empty()) {
        let k = key("auth.forward.copy_headers");
        return Err(bad(
            k.clone(),
            c.labels.get(&k).map_or("", |v| v.as_str()),
            FieldError::new(
                "forward_auth",
                format!("needs {} too", key("auth.forward.url")),
            ),
        ));
    }
    cfg.validated(service).map_err(|e| {
        let label = match e.field {
            "hosts" => key("host"),
            "path_prefix" => key("path"),
            "sticky_cookie" => key("sticky"),
            "basic_auth" => key("auth.basic"),
            "forward_auth.url" => key("auth.forward.url"),
            "forward_auth.copy_headers" => key("auth.forward.copy_headers"),
            "health" => key("health.rise"),
            "health.timeout" => key("health.timeout"),
            other => key(other),
        };
        let value = c.labels.get(&label).cloned().unwrap_or_default();
        bad(label, &value, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn container(labels: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: "abc".into(),
            name: "web-1".into(),
            created: 1,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            running: true,
            paused: false,
            health: None,
            networks: [("bridge".to_string(), Some("172.17.0.2".parse().unwrap()))].into(),
            exposed_ports: vec![80],
            published: Default::default(),
            host_network: false,
        }
    }

    #[test]
    fn a_host_reached_at_an_address_routes_to_published_ports() {
        let at: IpAddr = "10.0.0.2".parse().unwrap();
        let mut c = container(&[("quayside.port", "80")]);
        assert_eq!(
            evaluate(&c, "quayside", &[], Some(at)),
            Err(Skip::NotPublished {
                port: 80,
                address: at
            })
        );
        c.published = [(80, 32768)].into();
        let r = evaluate(&c, "quayside", &[], Some(at)).unwrap();
        assert_eq!((r.addr, r.port), (at, 32768));
        // On the host's network: its own port, at the address.
        c.published.clear();
        c.host_network = true;
        c.networks = [("host".to_string(), None)].into();
        let r = evaluate(&c, "quayside", &[], Some(at)).unwrap();
        assert_eq!((r.addr, r.port), (at, 80));
    }

    #[test]
    fn defaults_from_name_port_and_network() {
        let r = evaluate(
            &container(&[("quayside.enable", "true")]),
            "quayside",
            &[],
            None,
        )
        .unwrap();
        assert_eq!(r.no, "web-1");
        assert_eq!(r.port, 80);
        assert_eq!(r.service, "default");
        assert_eq!(r.addr.to_string(), "172.17.0.2");
        assert_eq!(r.service_config, None);
        assert!(!is_ours(
            &container(&[("other.enable", "true")]).labels,
            "quayside"
        ));
        assert!(!is_ours(
            &container(&[("quaysidex.a", "1")]).labels,
            "quayside"
        ));
        assert!(is_ours(
            &container(&[("quayside.port", "1")]).labels,
            "quayside"
        ));
    }

    #[test]
    fn middleware_labels_make_the_services_settings() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let basic = format!("alice:{hash}");
        let c = container(&[
            ("quayside.https_redirect", "true"),
            ("quayside.hsts", "max-age=60"),
            ("quayside.auth.basic", &basic),
            ("quayside.ip_allow", "10.0.0.0/8, ::1"),
            ("quayside.rate_limit.average", "100"),
            ("quayside.rate_limit.burst", "50"),
            ("quayside.rate_limit.per", "service"),
            ("quayside.compress", "true"),
            ("quayside.headers.request.X-Env", "prod"),
            ("quayside.headers.response.Server", ""),
            ("quayside.auth.forward.url", "http://auth:4181/check"),
            ("quayside.auth.forward.copy_headers", "X-User"),
        ]);
        assert!(unknown(&c.labels, "quayside").is_empty());
        let cfg = evaluate(&c, "quayside", &[], None)
            .unwrap()
            .service_config
            .unwrap();
        assert!(cfg.https_redirect && cfg.compress);
        assert_eq!(cfg.hsts.as_deref(), Some("max-age=60"));
        assert_eq!(cfg.basic_auth, [basic]);
        assert_eq!(cfg.ip_allow, ["10.0.0.0/8", "::1/128"]);
        let r = cfg.rate_limit.unwrap();
        assert_eq!((r.average, r.burst), (100, Some(50)));
        assert_eq!(r.per, crate::registry::middleware::RatePer::Service);
        assert_eq!(cfg.headers.request["x-env"], "prod");
        assert_eq!(cfg.headers.response["server"], "");
        let f = cfg.forward_auth.unwrap();
        assert_eq!(
            (f.url.as_str(), f.copy_headers.as_slice()),
            ("http://auth:4181/check", &["x-user".to_owned()][..])
        );
        let typo = container(&[("quayside.headers.requets.X", "1")]);
        assert_eq!(
            unknown(&typo.labels, "quayside"),
            ["quayside.headers.requets.X"]
        );
    }

    #[test]
    fn labels_override_and_bad_ones_are_named() {
        let c = container(&[
            ("quayside.port", "8080"),
            ("quayside.no", "pinned"),
            ("quayside.weight", "5"),
            ("quayside.service", "api"),
            ("quayside.host", "api.example.com, *.api.example.com"),
            ("quayside.path", "/v1"),
            ("quayside.strip_prefix", "true"),
        ]);
        let r = evaluate(&c, "quayside", &[], None).unwrap();
        assert_eq!((r.port, r.no.as_str(), r.weight), (8080, "pinned", 5));
        let cfg = r.service_config.unwrap();
        assert_eq!(cfg.hosts, vec!["*.api.example.com", "api.example.com"]);
        assert!(cfg.strip_prefix);

        for (k, v, reason) in [
            ("quayside.port", "http", "must be 1-65535"),
            ("quayside.weight", "0", "must be 1-1000"),
            (
                "quayside.enable",
                "maybe",
                "true/false, yes/no, on/off or 1/0",
            ),
            ("quayside.host", "a b", "host name"),
            ("quayside.lb", "fastest", "round_robin"),
            ("quayside.hash_key", "body", "client_ip"),
            (
                "quayside.health.interval",
                "5s",
                "needs quayside.health.path",
            ),
            ("quayside.health.interval", "soon", "duration"),
            ("quayside.slow_start", "later", "duration"),
            (
                "quayside.slow_start",
                "5124095576030432h",
                "from 1ms to 24h",
            ),
            ("quayside.protocol", "h3", "http1 or h2c"),
            ("quayside.no", "a/b", "may only contain"),
            ("quayside.auth.basic", "alice:secret", "not a password hash"),
            ("quayside.ip_allow", "10.0.0.0/99", "prefix length"),
            ("quayside.rate_limit.average", "0", "1-1000000"),
            (
                "quayside.rate_limit.burst",
                "5",
                "needs quayside.rate_limit.average",
            ),
            ("quayside.rate_limit.per", "user", "client_ip or service"),
            ("quayside.auth.forward.url", "ftp://x", "http://"),
            (
                "quayside.auth.forward.copy_headers",
                "X-User",
                "needs quayside.auth.forward.url",
            ),
            (
                "quayside.headers.response.Content-Length",
                "1",
                "set by the proxy",
            ),
            ("quayside.hsts", "forever", "max-age"),
            (
                "quayside.compress",
                "disabled",
                "true/false, yes/no, on/off or 1/0",
            ),
        ] {
            match evaluate(&container(&[(k, v)]), "quayside", &[], None) {
                Err(Skip::BadLabel {
                    label,
                    value,
                    reason: r,
                }) => {
                    // (A password hash is shown redacted: the report reaches the log.)
                    let shown = if k.ends_with("auth.basic") {
                        "alice:<redacted>"
                    } else {
                        v
                    };
                    assert_eq!((label.as_str(), value.as_str()), (k, shown));
                    assert!(r.contains(reason), "{r}");
                }
                other => panic!("{k}={v}: {other:?}"),
            }
        }
        // Health durations: out of range, and a timeout longer than the interval.
        for (labels, label) in [
            (
                vec![
                    ("quayside.health.path", "/h"),
                    ("quayside.health.interval", "307445734561825861m"),
                ],
                "quayside.health.interval",
            ),
            (
                vec![
                    ("quayside.health.path", "/h"),
                    ("quayside.health.interval", "1s"),
                    ("quayside.health.timeout", "2s"),
                ],
                "quayside.health.timeout",
            ),
        ] {
            match evaluate(&container(&labels), "quayside", &[], None) {
                Err(Skip::BadLabel { label: l, .. }) => assert_eq!(l, label),
                other => panic!("{labels:?}: {other:?}"),
            }
        }
        // A short interval alone takes a timeout no longer than itself.
        let r = evaluate(
            &container(&[
                ("quayside.health.path", "/h"),
                ("quayside.health.interval", "500ms"),
            ]),
            "quayside",
            &[],
            None,
        )
        .unwrap();
        let h = r.service_config.unwrap().health.unwrap();
        assert_eq!(h.timeout, h.interval);
    }

    #[test]
    fn state_health_port_and_network_rules() {
        let mut c = container(&[("quayside.enable", "false")]);
        assert_eq!(evaluate(&c, "quayside", &[], None), Err(Skip::Disabled));
        c.labels.clear();
        c.labels.insert("quayside.enable".into(), "true".into());
        c.health = Some("starting".into());
        assert!(matches!(
            evaluate(&c, "quayside", &[], None),
            Err(Skip::Unhealthy { .. })
        ));
        c.health = Some("healthy".into());
        assert!(evaluate(&c, "quayside", &[], None).is_ok());
        c.exposed_ports = vec![80, 443];
        assert_eq!(
            evaluate(&c, "quayside", &[], None),
            Err(Skip::NoPort {
                exposed: vec![80, 443],
                label: "quayside.port".into()
            })
        );
        c.exposed_ports = vec![80];
        c.networks
            .insert("backend".into(), Some("10.1.0.5".parse().unwrap()));
        let ambiguous = evaluate(&c, "quayside", &[], None).unwrap_err();
        assert!(matches!(ambiguous, Skip::AmbiguousNetwork { .. }));
        assert!(
            ambiguous
                .to_string()
                .contains("set the label quayside.network"),
            "{ambiguous}"
        );
        // Shared with quayside's own container.
        let r = evaluate(&c, "quayside", &["backend".into()], None).unwrap();
        assert_eq!(r.addr.to_string(), "10.1.0.5");
        // The label decides.
        c.labels.insert("quayside.network".into(), "bridge".into());
        assert_eq!(
            evaluate(&c, "quayside", &["backend".into()], None)
                .unwrap()
                .addr
                .to_string(),
            "172.17.0.2"
        );
        c.labels.insert("quayside.network".into(), "nope".into());
        assert!(matches!(
            evaluate(&c, "quayside", &[], None),
            Err(Skip::NetworkNotFound { .. })
        ));
        c.running = false;
        c.labels.remove("quayside.network");
        assert_eq!(evaluate(&c, "quayside", &[], None), Err(Skip::NotRunning));
    }

    #[test]
    fn quayside_in_a_container_routes_only_what_shares_a_network_with_it() {
        let c = container(&[("quayside.port", "80")]); // on `bridge` only
        // On the host (no own networks), or in a container on the host's network: as before.
        assert!(evaluate(&c, "quayside", &[], None).is_ok());
        assert!(evaluate(&c, "quayside", &["host".into()], None).is_ok());
        // In a container on `demo_default` only: not reachable, and it says what to join.
        let skip = evaluate(&c, "quayside", &["demo_default".into()], None).unwrap_err();
        assert_eq!(
            skip,
            Skip::NoSharedNetwork {
                networks: vec!["bridge".into()],
                own: vec!["demo_default".into()],
                label: "quayside.network".into()
            }
        );
        let text = skip.to_string();
        assert!(
            text.contains("docker network connect demo_default <container>"),
            "{text}"
        );
        // On both: the shared one.
        let mut both = c.clone();
        both.networks
            .insert("demo_default".into(), Some("10.9.0.3".parse().unwrap()));
        let r = evaluate(&both, "quayside", &["demo_default".into()], None).unwrap();
        assert_eq!(r.addr.to_string(), "10.9.0.3");
        // The label still decides.
        let mut named = c.clone();
        named
            .labels
            .insert("quayside.network".into(), "bridge".into());
        assert!(evaluate(&named, "quayside", &["demo_default".into()], None).is_ok());
    }

    #[test]
    fn a_container_is_one_instances_only() {
        let plain = container(&[("quayside.enable", "true")]).labels;
        let blue = container(&[("quayside.enable", "true"), ("quayside.instance", "blue")]).labels;
        assert_eq!(instance_of(&plain, "quayside", None), Ok(()));
        assert_eq!(instance_of(&blue, "quayside", Some("blue")), Ok(()));
        assert_eq!(
            instance_of(&blue, "quayside", None),
            Err(Skip::OtherInstance {
                instance: Some("blue".into()),
                label: "quayside.instance".into()
            })
        );
        assert_eq!(
            instance_of(&plain, "quayside", Some("blue")),
            Err(Skip::OtherInstance {
                instance: None,
                label: "quayside.instance".into()
            })
        );
        assert!(instance_of(&blue, "quayside", Some("green")).is_err());
        // The label is known: no "unknown label" warning for it.
        assert!(unknown(&blue, "quayside").is_empty());
    }

    proptest! {
        /// Any label value: evaluation never panics, and a routable result always carries
        /// values the registry accepts.
        #[test]
        fn never_panics_and_only_valid_results(
            key in prop::sample::select(vec!["enable", "port", "service", "host", "path", "strip_prefix", "weight", "network", "no", "lb", "hash_key", "sticky", "slow_start", "health.path", "health.rise"]),
            value in ".{0,80}",
        ) {
            let c = container(&[(&format!("quayside.{key}"), &value)]);
            if let Ok(r) = evaluate(&c, "quayside", &[], None) {
                prop_assert!(validate::no(&r.no).is_ok());
                prop_assert!((1..=1000).contains(&r.weight));
                prop_assert!(r.port >= 1);
            }
        }
    }
}
