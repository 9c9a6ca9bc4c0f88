//! The one request plan both fronts follow: route → hash key and sticky cookie → pick → target
//! rewrite → attempts under the retry rule → one [`Record`] per request, handed to the
//! [`Observe`] hook. The fast path and hyper's side differ only in how they read a request
//! head and move bytes; what a request means for routing is decided here, once.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use super::ProxyError;
use super::codec::headers::{self, RequestHead};
use super::retry::RetryBudget;
use crate::balance::hash::hash_bytes;
use crate::health::now_ms;
use crate::routing::{HashKey, RoutingTable, ServiceRoute, Shared, Upstream};
use crate::types::Cidr;
use crate::types::path::{PathError, Rewritten};

/// The client side of a connection, worked out once per connection.
#[derive(Clone)]
pub struct Client {
    pub ip: IpAddr,
    /// The IP as a header value, for `X-Forwarded-For`.
    pub ip_header: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: HeaderValue,
}

/// What quayside answered to a client before it could read a request far enough to route it:
/// 408 for a head that stalled, or hyper's own 400/414/431 for one it could not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unread {
    /// 408, sent by quayside (with a request id of its own).
    TimedOut,
    /// Refused by hyper with this status (hyper wrote the answer; no id reached the client).
    Malformed(u16),
}

/// What the proxy changes in a backend's response head ([`Plan::response_edits`]): a sticky
/// service's cookie, the service's header edits, and HSTS over TLS.
pub struct ResponseEdits {
    /// `Set-Cookie` naming the backend, unless the client named it already.
    pub set_cookie: Option<HeaderValue>,
    middleware: Option<Arc<crate::middleware::Middleware>>,
    tls: bool,
}

impl ResponseEdits {
    /// The service's response header edits, if it has any middleware.
    #[inline]
    pub fn edits(&self) -> Option<&crate::middleware::Edits> {
        self.middleware.as_deref().map(|m| &m.response)
    }

    /// `Strict-Transport-Security`, on TLS only.
    #[inline]
    pub fn hsts(&self) -> Option<&HeaderValue> {
        self.middleware
            .as_deref()
            .and_then(|m| m.hsts.as_ref())
            .filter(|_| self.tls)
    }

    /// Applied to a header map (hyper's side): the service's edits first, as they are the
    /// backend's answer's (the fast path skips the names they touch as it copies the backend's
    /// head), then the proxy's own, which they never remove.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        if let Some(e) = self.edits() {
            e.apply(headers);
        }
        if let Some(v) = &self.set_cookie {
            headers.append(http::header::SET_COOKIE, v.clone());
        }
        if let Some(h) = self.hsts() {
            headers.insert(http::header::STRICT_TRANSPORT_SECURITY, h.clone());
        }
    }
}

/// Attempts per request, the first included.
pub const MAX_ATTEMPTS: usize = 3;

/// Which front served a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    /// The byte-level HTTP/1.1 path.
    Fast,
    /// hyper's side (TLS with HTTP/2, h2c, upgrades, and what the fast path leaves it).
    Hyper,
}

/// What the request was, for an access log: given to observers that ask for it
/// ([`Observe::details`]).
#[derive(Clone, Copy, Debug)]
pub struct Meta<'a> {
    pub client: IpAddr,
    pub tls: bool,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub proto: &'static str,
    pub method: &'a str,
    pub host: &'a str,
    /// Path and query, as the client sent them.
    pub target: &'a str,
    pub user_agent: &'a str,
    pub request_id: &'a str,
}

/// [`Meta`] kept by hyper's side until its response body is done with.
#[derive(Debug)]
pub struct OwnedMeta {
    pub client: IpAddr,
    pub tls: bool,
    pub proto: &'static str,
    pub method: http::Method,
    pub host: String,
    pub target: String,
    pub user_agent: String,
    pub request_id: String,
}

impl OwnedMeta {
    pub fn meta(&self) -> Meta<'_> {
        Meta {
            client: self.client,
            tls: self.tls,
            proto: self.proto,
            method: self.method.as_str(),
            host: &self.host,
            target: &self.target,
            user_agent: &self.user_agent,
            request_id: &self.request_id,
        }
    }
}

/// What became of one request, handed to the [`Observe`] hook when it is over.
#[derive(Debug)]
pub struct Record<'a> {
    pub front: Front,
    /// The request itself, if the observers asked for it ([`Observe::details`]) and it was
    /// read far enough.
    pub meta: Option<Meta<'a>>,
    /// The service it was routed to (`None`: refused before routing).
    pub service: Option<&'a ServiceRoute>,
    /// The backend that answered, or whose failure was the answer (`None`: quayside answered
    /// itself, with no backend to send to).
    pub backend: Option<&'a Upstream>,
    /// The status the client got.
    pub status: u16,
    /// Backends tried, the first included (0: none).
    pub attempts: u32,
    /// From routing to the last byte handed to the client.
    pub duration: Duration,
    /// From sending to the answering backend until its response head (`None`: no backend
    /// answered).
    pub upstream: Option<Duration>,
    /// Response body bytes relayed to the client.
    pub body_bytes: u64,
    /// How the response ended: whole, or cut short by the backend or the client.
    pub outcome: Outcome,
}

/// How a response ended (Envoy's `UC` and `DC` response flags, in words).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Relayed whole (or quayside's own answer).
    #[default]
    Complete,
    /// The backend closed or broke off before its response was whole: the client got it cut
    /// short, whatever its status says.
    BackendCut,
    /// The client went away (or stopped reading) before the response was whole.
    ClientGone,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::BackendCut => "backend_cut",
            Outcome::ClientGone => "client_gone",
        }
    }
}

/// Where per-request records go: the next issue's metrics and access log plug in here, once,
/// for both fronts. Called on the worker thread that served the request; it must not block.
pub trait Observe: Send + Sync + 'static {
    fn request(&self, record: &Record<'_>);

    /// Whether records must carry [`Meta`] (method, host, path...), which costs the fronts
    /// some work per request: an access log wants it, counters do not.
    fn details(&self) -> bool {
        false
    }
}

/// Two observers, each given every record (quayside's metrics and a caller's own).
pub struct Tee(pub Arc<dyn Observe>, pub Arc<dyn Observe>);

impl Observe for Tee {
    fn request(&self, record: &Record<'_>) {
        self.0.request(record);
        self.1.request(record);
    }

    fn details(&self) -> bool {
        self.0.details() || self.1.details()
    }
}

/// A new request id's random bits.
pub fn random_id() -> u128 {
    (u128::from(crate::balance::rng::next()) << 64) | u128::from(crate::balance::rng::next())
}

/// A request's target under the path rule ([`crate::types::path`]), decided once before
/// routing: routing matches [`Target::matching`], middlewares and the backend get
/// [`Target::forward`].
pub struct Target<'t> {
    /// Path and query as the client sent them.
    raw: &'t str,
    /// Where the path ends in `raw`.
    path_end: usize,
    /// What the rule made of it, if it changed anything.
    rewritten: Option<Box<Rewritten>>,
}

impl<'t> Target<'t> {
    /// `raw`: path and query as sent; a path the rule refuses is an error (a 400).
    #[inline]
    pub fn new(raw: &'t str) -> Result<Target<'t>, PathError> {
        let (path_end, rewritten) = crate::types::path::target(raw)?;
        Ok(Target {
            raw,
            path_end,
            rewritten,
        })
    }

    /// The path rules match.
    #[inline]
    pub fn matching(&self) -> &str {
        match &self.rewritten {
            None => &self.raw[..self.path_end],
            Some(r) => &r.matching,
        }
    }

    /// Path and query as the backend gets them (before a service's `strip_prefix`): the
    /// client's own bytes when the path was already normal.
    #[inline]
    pub fn forward(&self) -> &str {
        match &self.rewritten {
            None => self.raw,
            Some(r) => &r.forward,
        }
    }

    /// The path of [`Target::forward`].
    #[inline]
    pub fn forward_path(&self) -> &str {
        match &self.rewritten {
            None => &self.raw[..self.path_end],
            Some(r) => &r.forward[..r.path_len],
        }
    }
}

/// One request's way through the plan.
pub struct Plan {
    pub service: Arc<ServiceRoute>,
    /// The hash of its key, for the `hash` strategy (0 otherwise).
    key: u64,
    /// The backend the client's sticky-session cookie named.
    had: Option<Box<str>>,
    /// Backends tried and failed, in order.
    tried: Vec<Arc<Upstream>>,
    pub started: Instant,
    /// From sending to the answering backend until its response head.
    pub upstream: Option<Duration>,
    /// The request, kept by hyper's side when the observers want it.
    pub details: Option<Box<OwnedMeta>>,
    /// The request's id, kept by hyper's side for an answer of quayside's own.
    pub request_id: Option<HeaderValue>,
}

impl Plan {
    /// Route a request and pick its first backend (`None`: nothing to pick; see
    /// [`Plan::unavailable`]). A sticky session's backend wins while it is routed.
    #[inline]
    pub fn new(
        table: &RoutingTable,
        host: &str,
        target: &Target<'_>,
        head: &impl RequestHead,
        ip: IpAddr,
    ) -> (Plan, Option<Arc<Upstream>>) {
        let service = table.route(headers::host_only(host), target.matching());
        let (key, had) = if service.hash_key.is_none() && service.sticky_cookie.is_none() {
            (0, None)
        } else {
            let had = service
                .sticky_cookie
                .as_deref()
                .and_then(|c| head.cookie(c));
            (hash_key(service.hash_key.as_ref(), head, ip), had)
        };
        let first = had
            .and_then(|no| service.by_no(no))
            .or_else(|| service.pick(key))
            .cloned();
        let plan = Plan {
            service: service.clone(),
            key,
            had: had.map(Box::from),
            tried: Vec::new(),
            started: Instant::now(),
            upstream: None,
            details: None,
            request_id: None,
        };
        (plan, first)
    }

    /// 503 for a service with nothing to pick.
    pub fn unavailable(&self) -> ProxyError {
        ProxyError::unavailable(&self.service)
    }

    /// The request target to send upstream, from [`Target::forward`]: with the service's prefix
    /// stripped if it says so (the rest always starts with `/`).
    pub fn target<'t>(&self, target: &'t str) -> Cow<'t, str> {
        strip_prefix(target, self.service.strip_prefix.as_deref())
    }

    /// The `Set-Cookie` value telling a sticky service's client which backend answered,
    /// unless its cookie already said so.
    fn set_cookie(&self, upstream: &Upstream) -> Option<HeaderValue> {
        headers::sticky_cookie(
            self.service.sticky_cookie.as_deref(),
            self.had.as_deref(),
            &upstream.no,
        )
    }

    /// What the proxy changes in `upstream`'s response head, decided once for both fronts
    /// (hyper's side applies it to its header map, the fast path writes it into its byte head).
    #[inline]
    pub fn response_edits(&self, upstream: &Upstream, tls: bool) -> ResponseEdits {
        ResponseEdits {
            set_cookie: self.set_cookie(upstream),
            middleware: self.service.middleware.clone(),
            tls,
        }
    }

    /// The first attempt (no retry yet).
    pub fn first_attempt(&self) -> bool {
        self.tried.is_empty()
    }

    /// The backend that failed last.
    pub fn last_tried(&self) -> Option<&Upstream> {
        self.tried.last().map(|u| &**u)
    }

    /// `upstream` answered `elapsed` after the request went to it.
    pub fn answered(&mut self, upstream: &Upstream, elapsed: Duration) {
        upstream
            .stats
            .on_success(elapsed.as_secs_f64() * 1000.0, now_ms());
        self.upstream = Some(elapsed);
    }

    /// `upstream` failed with `err`: count it against the backend's passive health, and say
    /// where the request goes next, if that is safe and allowed: the request can be sent again
    /// (`replayable`), the backend never saw it (or the method is idempotent and the
    /// connection failed), attempts and the retry budget are left.
    pub fn failed(
        &mut self,
        err: &ProxyError,
        upstream: Arc<Upstream>,
        (budget, shared): (&RetryBudget, &Shared),
        replayable: bool,
        idempotent: bool,
    ) -> Option<Arc<Upstream>> {
        note_failure(err, &upstream, &self.service.name, shared);
        self.tried.push(upstream);
        let retryable =
            err.never_reached_backend() || (idempotent && err.retryable_when_idempotent());
        if !(replayable && retryable && self.tried.len() < MAX_ATTEMPTS) {
            return None;
        }
        let next = self.service.pick_other(self.key, &self.tried)?;
        if budget.withdraw() {
            tracing::debug!(error = %err, retry_on = %next.no, "retrying on another backend");
            Some(next.clone())
        } else {
            tracing::debug!(error = %err, "retry budget spent; not retrying");
            None
        }
    }

    /// The record of this request, now over (`meta`: the fast path's borrowed view; hyper's
    /// side keeps its own in the plan).
    pub fn record<'a>(
        &'a self,
        front: Front,
        (status, outcome): (u16, Outcome),
        backend: Option<&'a Upstream>,
        body_bytes: u64,
        meta: Option<Meta<'a>>,
    ) -> Record<'a> {
        Record {
            outcome,
            front,
            meta: meta.or_else(|| self.details.as_ref().map(|d| d.meta())),
            service: Some(&self.service),
            attempts: self.tried.len() as u32 + u32::from(self.upstream.is_some()),
            backend,
            status,
            duration: self.started.elapsed(),
            upstream: self.upstream,
            body_bytes,
        }
    }
}

/// The record of a request quayside answered itself with `err`: refused before routing
/// (`plan` is `None`), or with no backend left to try (the last one tried, if any, failed).
pub fn refused<'a>(
    front: Front,
    err: &ProxyError,
    plan: Option<&'a Plan>,
    meta: Option<Meta<'a>>,
) -> Record<'a> {
    Record {
        front,
        meta: meta.or_else(|| plan.and_then(|p| p.details.as_ref()).map(|d| d.meta())),
        service: plan.map(|p| &*p.service),
        backend: plan.and_then(Plan::last_tried),
        status: err.status().as_u16(),
        attempts: plan.map_or(0, |p| p.tried.len() as u32),
        duration: plan.map_or(Duration::ZERO, |p| p.started.elapsed()),
        upstream: None,
        body_bytes: err.body_len() as u64,
        outcome: Outcome::Complete,
    }
}

/// The record of a request quayside answered before it could read it far enough to route
/// it (see [`Unread`](Unread)): no service, no method or path.
pub fn unread<'a>(front: Front, what: Unread, client: &Client, request_id: &'a str) -> Record<'a> {
    Record {
        front,
        meta: Some(Meta {
            client: client.ip,
            tls: client.proto == "https",
            proto: "HTTP/1.1",
            method: "",
            host: "",
            target: "",
            user_agent: "",
            request_id,
        }),
        service: None,
        backend: None,
        status: match what {
            Unread::TimedOut => 408,
            Unread::Malformed(status) => status,
        },
        attempts: 0,
        duration: Duration::ZERO,
        upstream: None,
        body_bytes: 0,
        outcome: Outcome::Complete,
    }
}

/// Count a failed attempt against its backend's passive health (and say so when that ejects
/// it).
fn note_failure(err: &ProxyError, upstream: &Upstream, service: &str, shared: &Shared) {
    if err.is_backend_failure() && upstream.stats.on_failure(now_ms(), err.unanswered()) {
        let p = upstream.stats.passive();
        let cooldown_ms = p.ejected_until.saturating_sub(now_ms());
        let then = if p.needs_check {
            "then checked (GET of its health path, or /) before any request goes to it"
        } else {
            "then tried again with requests"
        };
        tracing::warn!(
            backend = %upstream.no,
            error = %err,
            cooldown_ms,
            "backend keeps failing; ejected from rotation for a cooldown, {then}"
        );
        shared.events.health(
            "ejected",
            &shared.registry.load(),
            &upstream.no,
            service,
            format!("{err}; out of rotation for {cooldown_ms} ms, {then}"),
        );
    }
}

/// The request's hash for the `hash` strategy: of the value its key names, or of the client's
/// IP if the request has none (so a client keeps its backend whichever front serves it).
fn hash_key(key: Option<&HashKey>, head: &impl RequestHead, ip: IpAddr) -> u64 {
    let value = match key {
        None => return 0,
        Some(HashKey::ClientIp) => None,
        Some(HashKey::Header(h)) => head.header(h.as_str()),
        Some(HashKey::Cookie(c)) => head.cookie(c).map(str::as_bytes),
    };
    match (value, ip) {
        (Some(b), _) => hash_bytes(1, b),
        (None, IpAddr::V4(v4)) => hash_bytes(2, &v4.octets()),
        (None, IpAddr::V6(v6)) => hash_bytes(2, &v6.octets()),
    }
}

/// The client's address for one request: the connection's `peer`, or, when the peer is one of
/// the `trusted` proxies, the last address in its `X-Forwarded-For` that is not a trusted
/// proxy's (the first one if all are; the peer if the header says nothing usable).
///
/// `lines`: every `X-Forwarded-For` line, in order. Repeated lines are one list (RFC 9110
/// §5.3), so a second line cannot hide the hop a trusted proxy appended; empty items are
/// skipped (§5.6.1).
#[inline]
pub fn client_ip<'a>(
    peer: IpAddr,
    lines: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[Cidr],
) -> IpAddr {
    if trusted.is_empty() || !Cidr::any(trusted, peer) {
        return peer;
    }
    let mut last = None;
    for line in lines.rev() {
        // A hop we cannot read: nothing before it can be believed.
        let Ok(list) = std::str::from_utf8(line) else {
            break;
        };
        for item in list.rsplit(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some(ip) = parse_forwarded_ip(item) else {
                return last.unwrap_or(peer);
            };
            last = Some(ip);
            if !Cidr::any(trusted, ip) {
                return ip;
            }
        }
    }
    last.unwrap_or(peer)
}

/// One `X-Forwarded-For` item: `1.2.3.4`, `1.2.3.4:567`, `::1` or `[::1]:567`.
fn parse_forwarded_ip(item: &str) -> Option<IpAddr> {
    if let Ok(ip) = item.parse() {
        return Some(ip);
    }
    if let Some(rest) = item.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    item.rsplit_once(':')?.0.parse().ok()
}

/// How a request's forwarding headers are set on its way upstream, on both fronts
/// ([`headers::set_forwarded`] and the fast path's head writer): `X-Forwarded-For` gets the
/// peer appended (to the client's own lines, joined, if kept), `X-Real-IP` is the client
/// address decided, `-Proto` and `-Host` are set, and the client's `Forwarded` is dropped
/// unless the peer is a trusted proxy.
#[inline]
pub fn forwarding<'a>(
    client: &'a Client,
    ip: IpAddr,
    trusted: &[Cidr],
    made: &'a mut Option<HeaderValue>,
) -> headers::Forwarding<'a> {
    if trusted.is_empty() {
        // Nothing trusted: the peer is the client, and nothing of the client's is kept but
        // its X-Forwarded-For, appended to.
        return headers::Forwarding {
            peer: &client.ip_header,
            client: &client.ip_header,
            proto: &client.proto,
            keep_xff: true,
            keep_forwarded: false,
        };
    }
    forwarding_trusted(client, ip, trusted, made)
}

/// [`forwarding`] with `--trusted-proxies` set.
fn forwarding_trusted<'a>(
    client: &'a Client,
    ip: IpAddr,
    trusted: &[Cidr],
    made: &'a mut Option<HeaderValue>,
) -> headers::Forwarding<'a> {
    let real = if ip == client.ip {
        &client.ip_header
    } else {
        made.insert(
            HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| client.ip_header.clone()),
        )
    };
    let trusted_peer = Cidr::any(trusted, client.ip);
    headers::Forwarding {
        peer: &client.ip_header,
        client: real,
        proto: &client.proto,
        keep_xff: trusted_peer,
        keep_forwarded: trusted_peer,
    }
}

/// `target` without `prefix` (the rest always starts with `/`, the query kept).
pub fn strip_prefix<'t>(target: &'t str, prefix: Option<&str>) -> Cow<'t, str> {
    let Some(prefix) = prefix else {
        return Cow::Borrowed(target);
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    let mut s = String::with_capacity(target.len() + 1);
    if !rest.starts_with('/') {
        s.push('/');
    }
    s.push_str(rest);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    Cow::Owned(s)
}

/// The answer to an ACME HTTP-01 challenge this quayside is waiting on (automatic HTTPS on),
/// for the name it is waiting on (`host`, a `Host` value). It is answered before routing,
/// whatever the host's service; a token not ours, or asked for under another name, goes on to
/// the service as any request.
#[cold]
#[inline(never)]
pub fn acme_answer(
    obtained: Option<&super::tls::Obtained>,
    host: &str,
    path: &str,
) -> Option<ProxyError> {
    let obtained = obtained?;
    let token = path.strip_prefix(crate::middleware::ACME_CHALLENGE)?;
    let body = obtained.http_answer(token, headers::host_only(host))?;
    Some(ProxyError::Answered(Box::new(crate::middleware::Answer {
        status: http::StatusCode::OK,
        headers: Vec::new(),
        body,
    })))
}

pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_stripped_to_a_path_that_starts_with_a_slash() {
        assert_eq!(strip_prefix("/api/x?q=1", Some("/api")), "/x?q=1");
        assert_eq!(strip_prefix("/api?q=1", Some("/api")), "/?q=1");
        assert_eq!(strip_prefix("/other", Some("/api")), "/other");
        assert_eq!(strip_prefix("/api", Some("/api")), "/");
        assert_eq!(strip_prefix("/apix", Some("/api")), "/x");
        assert!(matches!(
            strip_prefix("/api/x", None),
            Cow::Borrowed("/api/x")
        ));
    }

    #[test]
    fn trusted_proxies_name_the_client() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let peer = ip("10.0.0.2");
        let one = |v: &'static [u8]| [v].into_iter();
        assert_eq!(client_ip(peer, one(b"203.0.113.9"), &[]), peer);
        assert_eq!(
            client_ip(ip("198.51.100.1"), one(b"203.0.113.9"), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(peer, one(b"203.0.113.9"), &trusted),
            ip("203.0.113.9")
        );
        // The spoofed first entry is not believed: the last untrusted hop is the client.
        assert_eq!(
            client_ip(peer, one(b"1.1.1.1, 203.0.113.9, 10.0.0.7"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(peer, one(b"10.0.0.5"), &trusted), ip("10.0.0.5"));
        assert_eq!(client_ip(peer, one(b"garbage"), &trusted), peer);
        assert_eq!(
            client_ip(peer, one(b"[2001:db8::1]:443"), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(client_ip(peer, std::iter::empty(), &trusted), peer);
        // Lines are one list, in order: a second line is read after the first, as if joined.
        let lines: [&[u8]; 2] = [b"10.1.2.3", b"198.51.100.7"];
        assert_eq!(
            client_ip(peer, lines.into_iter(), &trusted),
            ip("198.51.100.7")
        );
        let lines: [&[u8]; 3] = [b"198.51.100.7", b"", b" 10.0.0.3 ,"];
        assert_eq!(
            client_ip(peer, lines.into_iter(), &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn what_a_client_forwards_is_kept_only_from_a_trusted_proxy() {
        let client = |ip: &str| super::Client {
            ip: ip.parse().unwrap(),
            ip_header: HeaderValue::from_str(ip).unwrap(),
            proto: HeaderValue::from_static("http"),
        };
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let (proxy, other) = (client("10.0.0.2"), client("192.0.2.1"));
        let decided: IpAddr = "203.0.113.9".parse().unwrap();
        let mut made = None;
        let f = forwarding(&other, other.ip, &[], &mut made);
        assert_eq!((f.keep_xff, f.keep_forwarded), (true, false));
        assert_eq!(f.client, "192.0.2.1");
        let mut made = None;
        let f = forwarding(&proxy, decided, &trusted, &mut made);
        assert_eq!((f.keep_xff, f.keep_forwarded), (true, true));
        assert_eq!(
            (f.peer.as_bytes(), f.client.as_bytes()),
            (&b"10.0.0.2"[..], &b"203.0.113.9"[..])
        );
        let mut made = None;
        let f = forwarding(&other, other.ip, &trusted, &mut made);
        assert_eq!((f.keep_xff, f.keep_forwarded), (false, false));
    }

    #[test]
    fn a_missing_key_hashes_the_client_ip() {
        let h = http::HeaderMap::new();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let by_ip = hash_key(Some(&HashKey::ClientIp), &h, ip);
        let key = HashKey::Header(http::HeaderName::from_static("x-user"));
        assert_eq!(hash_key(Some(&key), &h, ip), by_ip);
        let mut with = http::HeaderMap::new();
        with.insert("x-user", HeaderValue::from_static("alice"));
        assert_ne!(hash_key(Some(&key), &with, ip), by_ip);
        assert_eq!(hash_key(None, &with, ip), 0);
    }
}
