//! A service's middlewares, compiled from its settings once per routing table and run by the
//! request plan on both fronts.
//!
//! The order is fixed (README, "Middlewares"): `https_redirect` → `ip_allow` → `rate_limit` →
//! `basic_auth` → `forward_auth` → request `headers` → the backend → response `headers`,
//! `hsts` → `compress`. The first four are decided by [`Middleware::gate`] from the request
//! head alone; forward auth and compression need I/O and run in the fronts.
//!
//! A service with none of them has no [`Middleware`] at all (`None` in its route), so it
//! costs a request one test of an `Option`.

pub mod basic;
pub mod compress;
pub mod rate;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, StatusCode};

use crate::registry::ServiceConfig;
use crate::types::Cidr;

/// The path under which ACME's HTTP-01 challenges are answered: never redirected.
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Header edits of one direction: names to drop, and the values to set. One form for both
/// fronts: hyper's side applies them to a header map ([`Edits::apply`]), the fast path writes
/// them into its byte heads ([`Edits::write`]).
#[derive(Debug, Default)]
pub struct Edits {
    /// Every name touched (set or removed), lower-case.
    pub names: Vec<HeaderName>,
    /// The values set, in `names`' order where set.
    pub set: Vec<(HeaderName, HeaderValue)>,
}

impl Edits {
    fn new(map: &std::collections::BTreeMap<String, String>, also_drop: &[&'static str]) -> Edits {
        let mut e = Edits::default();
        for (name, value) in map {
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue;
            };
            e.names.push(n.clone());
            if !value.is_empty() {
                e.set.push((n, v));
            }
        }
        for d in also_drop {
            let n = HeaderName::from_static(d);
            if !e.names.contains(&n) {
                e.names.push(n);
            }
        }
        e
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether header `name` (any case) is one these edits drop or replace.
    #[inline]
    pub fn touches(&self, name: &str) -> bool {
        self.names
            .iter()
            .any(|n| n.as_str().eq_ignore_ascii_case(name))
    }

    /// `name: value\r\n` for each value set (the fast path's byte heads).
    #[inline]
    pub fn write(&self, out: &mut Vec<u8>) {
        for (n, v) in &self.set {
            out.extend_from_slice(n.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Apply to a header map (hyper's side).
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for n in &self.names {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
    }
}

/// What [`Middleware::gate`] needs of a request.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The client's address, as `--trusted-proxies` decides it.
    pub client: IpAddr,
    pub tls: bool,
    /// The `Host` header as sent (a port included).
    pub host: &'a str,
    /// Path and query.
    pub target: &'a str,
    pub authorization: Option<&'a [u8]>,
    /// Where `https_redirect` sends clients.
    pub https_port: u16,
}

/// An answer of quayside's own, instead of the backend's.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn new(status: StatusCode, body: impl Into<String>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: bytes::Bytes::from(body.into()),
        }
    }
}

/// What the head-only middlewares decided.
#[derive(Debug)]
pub enum Gate {
    Pass,
    Answer(Answer),
    /// A basic-auth credential not seen yet: check it ([`basic::BasicAuth::verify`], off the
    /// event loop), then pass or answer [`Middleware::unauthorized`].
    Verify,
}

/// Forward auth's compiled settings.
#[derive(Debug)]
pub struct ForwardAuth {
    pub uri: http::Uri,
    pub copy_headers: Vec<HeaderName>,
}

impl ForwardAuth {
    /// Remove from a request what the auth service's answer decides (Traefik's
    /// `authResponseHeaders` do the same): every header named in `copy_headers`, and any name
    /// that reads as one of them with `_` for `-` (PHP and other CGI-style backends read
    /// `X_User` as `X-User`).
    pub fn strip_claims(&self, headers: &mut http::HeaderMap) {
        if self.copy_headers.is_empty() {
            return;
        }
        let aliases: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                k.as_str().contains('_')
                    && self
                        .copy_headers
                        .iter()
                        .any(|c| cgi_same(k.as_str(), c.as_str()))
            })
            .cloned()
            .collect();
        for name in self.copy_headers.iter().chain(&aliases) {
            headers.remove(name);
        }
    }
}

/// Whether two header names are one for a CGI-style backend (`_` and `-` alike, any case).
fn cgi_same(a: &str, b: &str) -> bool {
    let norm = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
}

/// A service's middlewares.
#[derive(Debug)]
pub struct Middleware {
    /// The settings compiled (a changed config compiles anew; an unchanged one keeps its
    /// buckets and remembered credentials).
    settings: ServiceConfig,
    pub service: String,
    pub https_redirect: bool,
    pub hsts: Option<HeaderValue>,
    pub ip_allow: Box<[Cidr]>,
    pub rate: Option<rate::Limiter>,
    pub basic: Option<basic::BasicAuth>,
    pub forward: Option<ForwardAuth>,
    pub compress: bool,
    pub request: Edits,
    pub response: Edits,
}

/// The middleware part of a service config (what `Middleware` compares). Every field is
/// named, so a setting added to `ServiceConfig` does not compile until it is said here whether
/// it is a middleware's (then a change of it compiles the middlewares anew) or not.
fn settings(cfg: &ServiceConfig) -> ServiceConfig {
    let ServiceConfig {
        // Routing and balancing: not the middlewares'.
        hosts: _,
        path_prefix: _,
        strip_prefix: _,
        lb: _,
        hash_key: _,
        sticky_cookie: _,
        health: _,
        slow_start: _,
        protocol: _,
        // The middlewares'.
        https_redirect,
        hsts,
        basic_auth,
        forward_auth,
        ip_allow,
        rate_limit,
        compress,
        headers,
    } = cfg;
    ServiceConfig {
        https_redirect: *https_redirect,
        hsts: hsts.clone(),
        basic_auth: basic_auth.clone(),
        forward_auth: forward_auth.clone(),
        ip_allow: ip_allow.clone(),
        rate_limit: rate_limit.clone(),
        compress: *compress,
        headers: headers.clone(),
        ..ServiceConfig::default()
    }
}

impl Middleware {
    /// The middlewares of service `name` (`None`: it has none). `prev`: the previous table's,
    /// kept if the settings are the same.
    pub fn compile(
        name: &str,
        cfg: &ServiceConfig,
        prev: Option<&std::sync::Arc<Middleware>>,
    ) -> Option<std::sync::Arc<Middleware>> {
        let s = settings(cfg);
        if s == ServiceConfig::default() {
            return None;
        }
        if let Some(p) = prev
            && p.settings == s
            && p.service == name
        {
            return Some(p.clone());
        }
        let drop_request: &[&'static str] = if cfg.basic_auth.is_empty() {
            &[]
        } else {
            &["authorization"]
        };
        Some(std::sync::Arc::new(Middleware {
            service: name.to_owned(),
            https_redirect: cfg.https_redirect,
            hsts: cfg
                .hsts
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            ip_allow: cfg
                .ip_allow
                .iter()
                .filter_map(|b| Cidr::parse(b).ok())
                .collect(),
            rate: cfg.rate_limit.as_ref().map(rate::Limiter::new),
            basic: (!cfg.basic_auth.is_empty())
                .then(|| basic::BasicAuth::new(&cfg.basic_auth, name)),
            forward: cfg.forward_auth.as_ref().and_then(|f| {
                Some(ForwardAuth {
                    uri: f.url.parse().ok()?,
                    copy_headers: f
                        .copy_headers
                        .iter()
                        .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                        .collect(),
                })
            }),
            compress: cfg.compress,
            request: Edits::new(&cfg.headers.request, drop_request),
            response: Edits::new(
                &cfg.headers.response,
                if cfg.hsts.is_some() {
                    &["strict-transport-security"]
                } else {
                    &[]
                },
            ),
            settings: s,
        }))
    }

    /// Whether the fast path can serve this service's requests itself: the middlewares that
    /// need I/O of their own (forward auth, compression) are hyper's side's.
    pub fn fast(&self) -> bool {
        self.forward.is_none() && !self.compress
    }

    /// Whether `authorization` carries a basic-auth credential not checked yet: the fast path
    /// leaves such a request to hyper's side before running [`Middleware::gate`], so that
    /// the gate (and its rate limit) runs once per request.
    pub fn unverified(&self, authorization: Option<&[u8]>, now: Instant) -> bool {
        self.basic.as_ref().is_some_and(|b| {
            authorization
                .and_then(basic::BasicAuth::credential)
                .is_some_and(|c| !b.known(c, now))
        })
    }

    /// The head-only middlewares, in order, at `now`.
    pub fn gate(&self, ask: &Ask<'_>, now: Instant) -> Gate {
        if self.https_redirect && !ask.tls && !ask.target.starts_with(ACME_CHALLENGE) {
            return Gate::Answer(redirect(ask));
        }
        if !self.ip_allow.is_empty() && !Cidr::any(&self.ip_allow, ask.client) {
            return Gate::Answer(Answer::new(
                StatusCode::FORBIDDEN,
                format!(
                    "403 Forbidden: {} may not reach service {}\n",
                    ask.client, self.service
                ),
            ));
        }
        if let Some(r) = &self.rate
            && let Err(wait) = r.take(ask.client, now)
        {
            return Gate::Answer(too_many(wait, &self.service));
        }
        if let Some(b) = &self.basic {
            return match ask.authorization.and_then(basic::BasicAuth::credential) {
                Some(c) if b.known(c, now) => Gate::Pass,
                Some(_) => Gate::Verify,
                None => Gate::Answer(self.unauthorized()),
            };
        }
        Gate::Pass
    }

    /// 401 with the service's basic-auth challenge.
    pub fn unauthorized(&self) -> Answer {
        let mut a = Answer::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "401 Unauthorized: service {} needs a user name and password\n",
                self.service
            ),
        );
        if let Some(b) = &self.basic {
            a.headers
                .push((http::header::WWW_AUTHENTICATE, b.challenge.clone()));
        }
        a
    }
}

fn redirect(ask: &Ask<'_>) -> Answer {
    let host = match ask.host.rsplit_once(':') {
        // `[v6]:port` or `name:port`; a bare v6 literal has no port outside brackets.
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => ask.host,
    };
    let location = if ask.https_port == 443 {
        format!("https://{host}{}", ask.target)
    } else {
        format!("https://{host}:{}{}", ask.https_port, ask.target)
    };
    let mut a = Answer::new(
        StatusCode::PERMANENT_REDIRECT,
        format!("308 Permanent Redirect: {location}\n"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        a.headers.push((http::header::LOCATION, v));
    } else {
        a = Answer::new(StatusCode::BAD_REQUEST, "400 Bad Request: invalid host\n");
    }
    a
}

fn too_many(wait: Duration, service: &str) -> Answer {
    // Whole seconds, rounded up: a client that waits that long gets through.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut a = Answer::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("429 Too Many Requests: service {service}'s rate limit; retry in {secs} s\n"),
    );
    a.headers
        .push((http::header::RETRY_AFTER, HeaderValue::from(secs.max(1))));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask<'a>(target: &'a str, tls: bool) -> Ask<'a> {
        Ask {
            client: "192.0.2.7".parse().unwrap(),
            tls,
            host: "app.test:8080",
            target,
            authorization: None,
            https_port: 8443,
        }
    }

    #[test]
    fn forward_auth_claims_and_their_cgi_spellings_are_stripped() {
        let f = ForwardAuth {
            uri: "http://auth/".parse().unwrap(),
            copy_headers: vec![HeaderName::from_static("x-user")],
        };
        let mut h = http::HeaderMap::new();
        for (n, v) in [
            ("x-user", "admin"),
            ("x_user", "admin"),
            ("X_USER", "admin"),
            ("x-user-agent", "kept"),
            ("x_other", "kept"),
        ] {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        f.strip_claims(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-user-agent", "x_other"]);
    }

    #[test]
    fn none_configured_compiles_to_nothing() {
        assert!(Middleware::compile("web", &ServiceConfig::default(), None).is_none());
    }

    #[test]
    fn redirect_keeps_the_path_and_spares_acme() {
        let cfg = ServiceConfig {
            https_redirect: true,
            ..Default::default()
        };
        let m = Middleware::compile("web", &cfg, None).unwrap();
        let Gate::Answer(a) = m.gate(&ask("/a?b=1", false), Instant::now()) else {
            panic!("expected a redirect");
        };
        assert_eq!(a.status, 308);
        assert_eq!(a.headers[0].1, "https://app.test:8443/a?b=1");
        assert!(matches!(
            m.gate(&ask("/a", true), Instant::now()),
            Gate::Pass
        ));
        let acme = format!("{ACME_CHALLENGE}token");
        assert!(matches!(
            m.gate(&ask(&acme, false), Instant::now()),
            Gate::Pass
        ));
        let mut v6 = ask("/", false);
        v6.host = "[::1]:80";
        v6.https_port = 443;
        let Gate::Answer(a) = m.gate(&v6, Instant::now()) else {
            panic!()
        };
        assert_eq!(a.headers[0].1, "https://[::1]/");
    }

    #[test]
    fn ip_allow_rate_limit_and_basic_auth_in_order() {
        let cfg = ServiceConfig {
            ip_allow: vec!["192.0.2.0/24".into()],
            rate_limit: Some(crate::registry::middleware::RateLimit {
                average: 1,
                burst: Some(2),
                period: None,
                per: Default::default(),
            }),
            basic_auth: vec![format!("u:{}", bcrypt::hash("p", 4).unwrap())],
            ..Default::default()
        };
        let m = Middleware::compile("web", &cfg, None).unwrap();
        let now = Instant::now();
        let mut other = ask("/", false);
        other.client = "198.51.100.1".parse().unwrap();
        let Gate::Answer(a) = m.gate(&other, now) else {
            panic!()
        };
        assert_eq!(a.status, 403);
        // No credentials: 401 with the challenge (and a token spent).
        let Gate::Answer(a) = m.gate(&ask("/", false), now) else {
            panic!()
        };
        assert_eq!(a.status, 401);
        assert_eq!(a.headers[0].0, http::header::WWW_AUTHENTICATE);
        let mut with = ask("/", false);
        with.authorization = Some(b"Basic dTpw");
        assert!(matches!(m.gate(&with, now), Gate::Verify));
        let Gate::Answer(a) = m.gate(&with, now) else {
            panic!()
        };
        assert_eq!(a.status, 429);
        assert_eq!(a.headers[0].1, "1");
        // The request header is dropped on its way to the backend.
        assert!(m.request.touches("Authorization"));
        // Same settings: the same compiled value (buckets kept).
        let again = Middleware::compile("web", &cfg, Some(&m)).unwrap();
        assert!(std::sync::Arc::ptr_eq(&m, &again));
    }
}
