//! Who may use the admin API. Every request passes [`guard`] before its handler:
//! - its `Host` must be an IP address, `localhost` or a configured admin host name: a web page
//!   cannot reach the API through a name of its own that it points at 127.0.0.1 (DNS
//!   rebinding); `curl` and scripts using an address are unaffected;
//! - with tokens configured, `Authorization: Bearer TOKEN` (compared in constant time): the
//!   admin token allows everything, the read token every route that changes nothing; only
//!   `/healthz` and `/readyz` are open;
//! - a changing request that a browser marks as cross-site (`Sec-Fetch-Site`, or an `Origin`
//!   other than the API's own) is refused, token or not (CSRF: a page open in an operator's
//!   browser could otherwise call `GET /add`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// A secret: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(s: impl Into<String>) -> Token {
        Token(s.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Who may use the admin API, and how it is reached.
#[derive(Clone, Debug, Default)]
pub struct AdminConfig {
    /// Allows everything.
    pub token: Option<Token>,
    /// Allows reading only.
    pub read_token: Option<Token>,
    /// Start on a non-loopback address without a token.
    pub insecure: bool,
    /// Host names answered besides `localhost` and IP literals.
    pub hosts: Vec<String>,
    /// Certificate and key for TLS on the admin listener.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// What its clients can hold: timeouts and caps (see [`super::server::Limits`]).
    pub limits: super::server::Limits,
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks).
    Open,
    /// The read token or the admin token.
    Read,
    /// The admin token; and never cross-site.
    Change,
}

impl Access {
    /// By method, for a route that does not say: GET and HEAD read, the rest change.
    pub fn of_method(method: &Method) -> Access {
        if method == Method::GET || method == Method::HEAD {
            Access::Read
        } else {
            Access::Change
        }
    }
}

/// What the guard let a request do, for the handlers (`GET /api/v1/access`).
#[derive(Clone, Debug)]
pub struct Granted {
    /// `Some(true)`: everything (the admin token, or no tokens configured); `Some(false)`:
    /// reading (the read token); `None`: nothing.
    pub allows: Option<bool>,
    /// The client's address and token kind.
    pub who: String,
}

impl Granted {
    /// Whether the caller reads secrets (password hashes, secret header values) whole: the
    /// admin token, or no tokens configured. The read token gets them redacted.
    pub fn reads_secrets(&self) -> bool {
        self.allows == Some(true)
    }
}

/// The guard's settings.
pub struct Guard {
    token: Option<Token>,
    read_token: Option<Token>,
    hosts: Vec<String>,
}

impl Guard {
    pub fn new(c: &AdminConfig) -> Arc<Guard> {
        Arc::new(Guard {
            token: c.token.clone(),
            read_token: c.read_token.clone(),
            hosts: c.hosts.clone(),
        })
    }

    /// The request's credentials, as [`Credential`] tells them apart (without tokens
    /// configured, the admin's).
    fn credential(&self, headers: &HeaderMap) -> Credential {
        let Some(token) = &self.token else {
            return Credential::Admin;
        };
        let Some(auth) = headers.get(header::AUTHORIZATION) else {
            return Credential::Missing;
        };
        let Some(given) = auth.as_bytes().strip_prefix(b"Bearer ") else {
            return Credential::NotBearer;
        };
        if bool::from(given.ct_eq(token.as_bytes())) {
            return Credential::Admin;
        }
        match &self.read_token {
            Some(r) if bool::from(given.ct_eq(r.as_bytes())) => Credential::Read,
            _ => Credential::Wrong,
        }
    }

    /// Whether `host` (a `Host` value, port included) may be answered.
    fn host_allowed(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            // `[v6]` or `[v6]:port`.
            Some(rest) => {
                return rest
                    .split(']')
                    .next()
                    .is_some_and(|ip| ip.parse::<IpAddr>().is_ok());
            }
            None => host.rsplit_once(':').map_or(host, |(n, _)| n),
        };
        name.parse::<IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// What a request's `Authorization` holds, as far as the refusal of one says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credential {
    /// The admin token (or none is configured).
    Admin,
    Read,
    /// No `Authorization` header.
    Missing,
    /// One that is not `Bearer <token>`.
    NotBearer,
    /// A bearer token that is neither of the configured ones.
    Wrong,
}

impl Credential {
    /// What they allow: `Some(true)` everything, `Some(false)` reading, `None` nothing.
    fn allows(self) -> Option<bool> {
        match self {
            Credential::Admin => Some(true),
            Credential::Read => Some(false),
            _ => None,
        }
    }

    /// Why a request without access is refused, and what to send instead.
    fn refusal(self) -> &'static str {
        match self {
            Credential::NotBearer => {
                "the Authorization header is not a bearer token: send Authorization: Bearer <token> (the value of --admin-token, or --admin-read-token for reading)"
            }
            Credential::Wrong => {
                "the token sent is neither the admin token nor the read token: check it against --admin-token (QUAYSIDE_ADMIN_TOKEN) or --admin-read-token"
            }
            _ => {
                "the admin API needs a token: send Authorization: Bearer <token> (the value of --admin-token, or --admin-read-token for reading)"
            }
        }
    }
}

/// A refusal, as JSON under `/api/` and as text elsewhere (as the routes' own errors are).
fn refuse(path: &str, status: StatusCode, message: String) -> Response {
    let mut resp = if path.starts_with("/api/") {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    } else {
        (status, format!("{message}\n")).into_response()
    };
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"quayside admin\""),
        );
    }
    resp
}

/// Whether a browser says the request comes from another site.
fn cross_site(headers: &HeaderMap, host: Option<&str>) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Some(format!(
            "Sec-Fetch-Site: {}",
            String::from_utf8_lossy(site.as_bytes())
        ));
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("");
    let own = host.is_some_and(|h| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(h))
    });
    (!own).then(|| format!("Origin: {origin}"))
}

/// The middleware: see the module doc.
pub async fn guard(State(g): State<Arc<Guard>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    if let Some(h) = &host
        && !g.host_allowed(h)
    {
        return refuse(
            &path,
            StatusCode::FORBIDDEN,
            format!(
                "the admin API answers to IP addresses and localhost, not to the name in Host: {h}; use an address, or start quayside with --admin-host {}",
                h.rsplit_once(':').map_or(h.as_str(), |(n, _)| n)
            ),
        );
    }
    let access = super::access(&path, req.method());
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "?".to_owned(), |c| c.0.ip().to_string());
    let credential = g.credential(req.headers());
    let allowed = credential.allows();
    // Who is calling, for the events, the log and `GET /api/v1/access`.
    let who = match (&g.token, credential) {
        (None, _) => format!("{peer} (no token)"),
        (Some(_), Credential::Admin) => format!("{peer} (admin token)"),
        (Some(_), Credential::Read) => format!("{peer} (read token)"),
        (Some(_), Credential::Missing) => format!("{peer} (no token sent)"),
        (Some(_), _) => format!("{peer} (no valid token)"),
    };
    req.extensions_mut().insert(Granted {
        allows: allowed,
        who: who.clone(),
    });
    if access == Access::Open {
        return next.run(req).await;
    }
    let Some(full) = allowed else {
        return refuse(&path, StatusCode::UNAUTHORIZED, credential.refusal().into());
    };
    if access == Access::Change {
        if !full {
            return refuse(
                &path,
                StatusCode::FORBIDDEN,
                format!(
                    "{} {path} changes routing: the read-only token may not; use the admin token",
                    req.method()
                ),
            );
        }
        if let Some(why) = cross_site(req.headers(), host.as_deref()) {
            return refuse(
                &path,
                StatusCode::FORBIDDEN,
                format!(
                    "a browser marked this request as cross-site ({why}); changes are refused from other sites. Use curl or the API's own pages"
                ),
            );
        }
    }
    crate::registry::actor::BY
        .scope(Some(who), next.run(req))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(hosts: &[&str]) -> Guard {
        Guard {
            token: Some(Token::new("admin-secret")),
            read_token: Some(Token::new("read-secret")),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn hosts_are_addresses_localhost_or_configured_names() {
        let g = guard(&["quayside"]);
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8001",
            "[::1]:8001",
            "[::1]",
            "localhost:8001",
            "LOCALHOST",
            "quayside:8001",
            "10.1.2.3",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8001",
            "localhost.evil",
            "[nope]:1",
            "quaysidex",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_allow_by_kind() {
        let g = guard(&[]);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            g.credential(&h).allows()
        };
        assert_eq!(with("Bearer admin-secret"), Some(true));
        assert_eq!(with("Bearer read-secret"), Some(false));
        assert_eq!(with("Bearer admin-secre"), None);
        assert_eq!(with("Bearer admin-secret2"), None);
        assert_eq!(with("admin-secret"), None);
        assert_eq!(g.credential(&HeaderMap::new()).allows(), None);
        let open = Guard {
            token: None,
            read_token: None,
            hosts: vec![],
        };
        assert_eq!(open.credential(&HeaderMap::new()).allows(), Some(true));
    }

    #[test]
    fn browsers_cross_site_marks_are_read() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            m
        };
        let host = Some("127.0.0.1:8001");
        assert_eq!(cross_site(&h(&[]), host), None);
        assert_eq!(cross_site(&h(&[("sec-fetch-site", "none")]), host), None);
        assert_eq!(
            cross_site(&h(&[("sec-fetch-site", "same-origin")]), host),
            None
        );
        assert!(cross_site(&h(&[("sec-fetch-site", "cross-site")]), host).is_some());
        assert!(cross_site(&h(&[("sec-fetch-site", "same-site")]), host).is_some());
        assert_eq!(
            cross_site(&h(&[("origin", "http://127.0.0.1:8001")]), host),
            None
        );
        assert!(cross_site(&h(&[("origin", "http://evil.example")]), host).is_some());
        assert!(cross_site(&h(&[("origin", "null")]), host).is_some());
    }
}
