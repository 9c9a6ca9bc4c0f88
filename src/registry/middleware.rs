//! The per-service middleware settings as users write them (JSON, labels, state file), and
//! their validation. What the data plane runs is compiled from these by `crate::middleware`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate::FieldError;
use crate::types::{Cidr, Dur};

/// `forward_auth`: ask another service whether a request may pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuth {
    /// `http://host:port/path`: asked with the request's method-less copy (GET, with its
    /// headers and `X-Forwarded-Method`/`-Proto`/`-Host`/`-Uri`/`-For`).
    pub url: String,
    /// Headers of a 2xx answer copied into the request sent to the backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_headers: Vec<String>,
}

/// Who shares a rate limit's bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RatePer {
    /// One bucket per client address (see `--trusted-proxies`).
    #[default]
    ClientIp,
    /// One bucket for the whole service.
    Service,
}

impl RatePer {
    pub fn is_default(&self) -> bool {
        *self == RatePer::ClientIp
    }
}

/// `rate_limit`: a token bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per `period` allowed on average, 1 to 1,000,000.
    pub average: u32,
    /// Requests allowed at once above the average (the bucket's size; default: `average`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// The period of `average` (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Dur>)]
    pub period: Option<Dur>,
    #[serde(default, skip_serializing_if = "RatePer::is_default")]
    pub per: RatePer,
}

/// `headers`: set (an empty value removes) headers on the way to the backend and back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub response: BTreeMap<String, String>,
}

impl Headers {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

/// Headers a setting may not touch: the proxy owns the framing and the connection.
const OWNED: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// A header name a setting may use (lower-cased), or why not.
pub fn header_name(field: &'static str, name: &str) -> Result<String, FieldError> {
    let lower = name.trim().to_ascii_lowercase();
    if http::HeaderName::from_bytes(lower.as_bytes()).is_err() || lower.is_empty() {
        return Err(FieldError::new(
            field,
            format!("{name:?} is not a valid header name"),
        ));
    }
    if OWNED.contains(&lower.as_str()) {
        return Err(FieldError::new(
            field,
            format!("{name} is set by the proxy itself and cannot be changed"),
        ));
    }
    Ok(lower)
}

/// What the read token, events, `/api/v1/discovery` and logs show in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// Whether a header's value is a secret: credentials and cookies, and any header whose name
/// says it holds a token, secret, key or password.
pub fn secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || ["token", "secret", "key", "password", "passwd"]
        .iter()
        .any(|w| n.contains(w))
}

/// `url` with the password of its user info (all of it, when it has no `:`) and the values
/// of query parameters whose names say they are secrets replaced by [`REDACTED`].
pub fn redact_url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:{REDACTED}@{host}"),
            None => format!("{REDACTED}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if secret_header(k) => format!("{k}={REDACTED}"),
                    _ => kv.to_owned(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{head}{authority}{tail}")
}

/// A `basic_auth` entry with its hash redacted (`alice:<redacted>`).
pub fn redact_user(entry: &str) -> String {
    match entry.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    }
}

impl super::ServiceConfig {
    /// These settings as the read token, events and logs show them: password hashes, secret
    /// header values and the forward-auth URL's credentials replaced by [`REDACTED`]. The admin
    /// token reads them whole, so that a `GET`'s body can be sent back with `PUT`.
    pub fn redacted(&self) -> super::ServiceConfig {
        let mut c = self.clone();
        for e in &mut c.basic_auth {
            *e = redact_user(e);
        }
        if let Some(f) = &mut c.forward_auth {
            f.url = redact_url(&f.url);
        }
        for map in [&mut c.headers.request, &mut c.headers.response] {
            for (name, value) in map.iter_mut() {
                if secret_header(name) && !value.is_empty() {
                    *value = REDACTED.to_owned();
                }
            }
        }
        c
    }
}

/// Refuse settings that carry [`REDACTED`] where a secret goes: a body read with the read
/// token (or copied from an event) sent back would otherwise replace the secret with it.
fn refuse_redacted(cfg: &super::ServiceConfig) -> Result<(), FieldError> {
    let why = |field: &'static str| {
        FieldError::new(
            field,
            format!(
                "holds {REDACTED}, which the read token, events and logs show in place of a secret; send the real value (the admin token reads it)"
            ),
        )
    };
    if cfg.basic_auth.iter().any(|e| e.contains(REDACTED)) {
        return Err(why("basic_auth"));
    }
    if cfg
        .forward_auth
        .as_ref()
        .is_some_and(|f| f.url.contains(REDACTED))
    {
        return Err(why("forward_auth.url"));
    }
    if cfg.headers.request.values().any(|v| v.contains(REDACTED)) {
        return Err(why("headers.request"));
    }
    if cfg.headers.response.values().any(|v| v.contains(REDACTED)) {
        return Err(why("headers.response"));
    }
    Ok(())
}

/// The password hash formats `basic_auth` takes: Traefik's, which are htpasswd's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashScheme {
    /// `$2y$` (`htpasswd -B`), `$2a$`, `$2b$`.
    Bcrypt,
    /// `$argon2id$…` and the other argon2 variants.
    Argon2,
    /// Apache's MD5 (`$apr1$`, htpasswd's default) and MD5-crypt (`$1$`): weak.
    Md5 { apr1: bool },
    /// `{SHA}` (`htpasswd -s`): unsalted SHA-1, weak.
    Sha1,
}

impl HashScheme {
    /// The scheme of `hash`, if it is a well-formed hash of one.
    pub fn of(hash: &str) -> Option<HashScheme> {
        const CRYPT64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let crypt64 = |s: &str| s.bytes().all(|b| CRYPT64.contains(&b));
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            return hash
                .parse::<bcrypt::HashParts>()
                .is_ok()
                .then_some(HashScheme::Bcrypt);
        }
        if hash.starts_with("$argon2") {
            return argon2::PasswordHash::new(hash)
                .is_ok()
                .then_some(HashScheme::Argon2);
        }
        for (magic, apr1) in [("$apr1$", true), ("$1$", false)] {
            if let Some(rest) = hash.strip_prefix(magic) {
                let (salt, digest) = rest.split_once('$')?;
                let ok = (1..=8).contains(&salt.len())
                    && crypt64(salt)
                    && digest.len() == 22
                    && crypt64(digest);
                return ok.then_some(HashScheme::Md5 { apr1 });
            }
        }
        if let Some(b64) = hash.strip_prefix("{SHA}") {
            use base64::Engine as _;
            let ok = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_ok_and(|d| d.len() == 20);
            return ok.then_some(HashScheme::Sha1);
        }
        None
    }

    /// MD5 and SHA-1 hashes are cracked fast: quayside takes them (htpasswd and Traefik users
    /// have them) and says so.
    pub fn weak(self) -> bool {
        matches!(self, HashScheme::Md5 { .. } | HashScheme::Sha1)
    }
}

/// Check one `user:hash` of `basic_auth`. (The hash is never repeated in a message: messages
/// reach `/api/v1/discovery` and the log.)
pub fn basic_user(entry: &str) -> Result<HashScheme, FieldError> {
    let field = "basic_auth";
    let Some((user, hash)) = entry.split_once(':') else {
        return Err(FieldError::new(
            field,
            "each entry must be user:hash (as `htpasswd -nB user` prints)",
        ));
    };
    if user.is_empty() {
        return Err(FieldError::new(field, "a user name may not be empty"));
    }
    HashScheme::of(hash).ok_or_else(|| {
        let what = if hash.starts_with("$2") {
            "is not a well-formed bcrypt hash"
        } else if hash.starts_with("$argon2") {
            "is not a well-formed argon2 hash"
        } else if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
            "is not a well-formed MD5 hash"
        } else if hash.starts_with("{SHA}") {
            "is not a well-formed {SHA} hash"
        } else {
            "is not a password hash quayside reads"
        };
        FieldError::new(
            field,
            format!(
                "user {user}: the hash {what}; use bcrypt ($2y$, `htpasswd -nB {user}`), argon2 ($argon2id$), or htpasswd's $apr1$ or {{SHA}}"
            ),
        )
    })
}

/// Check the middleware settings of a service config (see `ServiceConfig::validated`);
/// normalises header names and address blocks.
pub fn validate(cfg: &mut super::ServiceConfig) -> Result<(), FieldError> {
    refuse_redacted(cfg)?;
    let super::ServiceConfig {
        hsts,
        basic_auth,
        forward_auth,
        ip_allow,
        rate_limit,
        headers,
        ..
    } = cfg;
    if let Some(h) = hsts {
        let ok = h
            .split(';')
            .next()
            .and_then(|d| d.trim().strip_prefix("max-age="))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !ok || http::HeaderValue::from_str(h).is_err() {
            return Err(FieldError::new(
                "hsts",
                format!(
                    "must start with max-age=SECONDS (e.g. \"max-age=31536000; includeSubDomains\"), got {h:?}"
                ),
            ));
        }
    }
    for entry in basic_auth {
        basic_user(entry)?;
    }
    if let Some(f) = forward_auth {
        // (Messages show the URL redacted: they reach /api/v1/discovery and the log.)
        let shown = redact_url(&f.url);
        let uri: http::Uri = f.url.parse().map_err(|_| {
            FieldError::new(
                "forward_auth.url",
                format!("must be a URL like http://auth:4181/check, got {shown:?}"),
            )
        })?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(FieldError::new(
                    "forward_auth.url",
                    format!("must start with http:// or https://, got {shown:?}"),
                ));
            }
        }
        if uri.authority().is_none() {
            return Err(FieldError::new(
                "forward_auth.url",
                format!("needs a host, got {shown:?}"),
            ));
        }
        for h in &mut f.copy_headers {
            *h = header_name("forward_auth.copy_headers", h)?;
        }
    }
    for b in ip_allow.iter_mut() {
        *b = Cidr::parse(b)
            .map_err(|r| FieldError::new("ip_allow", r))?
            .to_string();
    }
    if let Some(r) = rate_limit {
        if !(1..=1_000_000).contains(&r.average) {
            return Err(FieldError::new(
                "rate_limit.average",
                format!("must be 1-1000000, got {}", r.average),
            ));
        }
        if let Some(b) = r.burst
            && !(1..=1_000_000).contains(&b)
        {
            return Err(FieldError::new(
                "rate_limit.burst",
                format!("must be 1-1000000, got {b}"),
            ));
        }
    }
    let checked = |field: &'static str, map: &mut BTreeMap<String, String>| {
        let mut out = BTreeMap::new();
        for (name, value) in std::mem::take(map) {
            let lower = header_name(field, &name)?;
            if http::HeaderValue::from_str(&value).is_err() {
                let shown = if secret_header(&name) {
                    REDACTED
                } else {
                    &value
                };
                return Err(FieldError::new(
                    field,
                    format!("the value of {name} must be visible ASCII text, got {shown:?}"),
                ));
            }
            out.insert(lower, value);
        }
        *map = out;
        Ok(())
    };
    checked("headers.request", &mut headers.request)?;
    checked("headers.response", &mut headers.response)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_takes_htpasswds_hashes() {
        let bc = bcrypt::hash("pw", 4).unwrap();
        assert_eq!(basic_user(&format!("alice:{bc}")), Ok(HashScheme::Bcrypt));
        assert_eq!(
            basic_user("carol:$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA"),
            Ok(HashScheme::Argon2)
        );
        // What `htpasswd -nbm`, `openssl passwd -1` and `htpasswd -nbs` print.
        assert_eq!(
            basic_user("alice:$apr1$rPYgkAtb$aVRtlzTrL8jPBfCJSls43."),
            Ok(HashScheme::Md5 { apr1: true })
        );
        assert_eq!(
            basic_user("alice:$1$abcdefgh$IQtUouv7y7Q9dRWkQEPCc."),
            Ok(HashScheme::Md5 { apr1: false })
        );
        assert_eq!(
            basic_user("alice:{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM="),
            Ok(HashScheme::Sha1)
        );
        assert!(HashScheme::Sha1.weak() && !HashScheme::Bcrypt.weak());
        // Not a hash: said so, without calling it plain text or repeating it.
        let e = basic_user("alice:secret").unwrap_err();
        assert!(e.reason.contains("not a password hash"), "{e}");
        assert!(
            !e.reason.contains("plain") && !e.reason.contains("secret"),
            "{e}"
        );
        for bad in [
            "bob:$2y$10$short",
            "bob:$apr1$toolongsalt$aVRtlzTrL8jPBfCJSls43.",
            "bob:$apr1$rPYgkAtb$short",
            "bob:{SHA}notbase64!",
            "bob:{SHA}YQ==",
        ] {
            let e = basic_user(bad).unwrap_err();
            assert!(e.reason.contains("well-formed"), "{bad}: {e}");
            let hash = bad.split_once(':').unwrap().1;
            assert!(!e.reason.contains(hash), "{bad}: {e}");
        }
        assert!(basic_user("alice").is_err());
        assert!(basic_user(":x").is_err());
    }

    #[test]
    fn secrets_are_redacted_and_not_taken_back() {
        use crate::registry::ServiceConfig;
        let mut cfg = ServiceConfig {
            basic_auth: vec!["alice:$apr1$rPYgkAtb$aVRtlzTrL8jPBfCJSls43.".into()],
            forward_auth: Some(ForwardAuth {
                url: "https://u:pw@auth.test:8443/check?api_key=k1&x=1#f".into(),
                copy_headers: vec![],
            }),
            ..Default::default()
        };
        for (name, value) in [
            ("authorization", "Bearer t"),
            ("x-api-token", "t"),
            ("x-client-secret", "s"),
            ("cookie", "a=b"),
            ("x-env", "prod"),
        ] {
            cfg.headers.request.insert(name.into(), value.into());
        }
        cfg.headers
            .response
            .insert("set-cookie".into(), "s=1".into());
        let r = cfg.redacted();
        assert_eq!(r.basic_auth, ["alice:<redacted>"]);
        assert_eq!(
            r.forward_auth.as_ref().unwrap().url,
            "https://u:<redacted>@auth.test:8443/check?api_key=<redacted>&x=1#f"
        );
        assert_eq!(r.headers.request["x-env"], "prod");
        for name in ["authorization", "x-api-token", "x-client-secret", "cookie"] {
            assert_eq!(r.headers.request[name], REDACTED, "{name}");
        }
        assert_eq!(r.headers.response["set-cookie"], REDACTED);
        let json = serde_json::to_string(&r).unwrap();
        for secret in ["rPYgkAtb", "pw@", "k1", "Bearer", "a=b", "s=1"] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        assert_eq!(redact_url("http://tok@h/"), "http://<redacted>@h/");
        assert_eq!(redact_url("http://h:80/p"), "http://h:80/p");
        // The redacted settings sent back are refused, naming the field.
        let mut back = r.clone();
        assert_eq!(validate(&mut back).unwrap_err().field, "basic_auth");
        back.basic_auth.clear();
        assert_eq!(validate(&mut back).unwrap_err().field, "forward_auth.url");
        back.forward_auth = None;
        assert_eq!(validate(&mut back).unwrap_err().field, "headers.request");
        // And a bad URL's message never shows its password.
        let mut bad = ServiceConfig {
            forward_auth: Some(ForwardAuth {
                url: "ftp://u:hunter2@x".into(),
                copy_headers: vec![],
            }),
            ..Default::default()
        };
        let e = validate(&mut bad).unwrap_err();
        assert!(!e.reason.contains("hunter2"), "{e}");
    }

    #[test]
    fn settings_are_checked_and_named() {
        use crate::registry::ServiceConfig;
        let mut ok = ServiceConfig {
            ip_allow: vec!["10.0.0.0/8".to_owned(), "::1".to_owned()],
            ..Default::default()
        };
        ok.headers.request.insert("X-Env".into(), "prod".into());
        validate(&mut ok).unwrap();
        assert_eq!(ok.ip_allow, ["10.0.0.0/8", "::1/128"]);
        assert!(ok.headers.request.contains_key("x-env"));
        let field = |mut cfg: ServiceConfig| validate(&mut cfg).unwrap_err().field;
        assert_eq!(
            field(ServiceConfig {
                hsts: Some("1 year".into()),
                ..Default::default()
            }),
            "hsts"
        );
        let mut bad = ServiceConfig::default();
        bad.headers
            .response
            .insert("Content-Length".into(), "1".into());
        assert_eq!(field(bad), "headers.response");
        assert_eq!(
            field(ServiceConfig {
                forward_auth: Some(ForwardAuth {
                    url: "ftp://x".into(),
                    copy_headers: vec![],
                }),
                ..Default::default()
            }),
            "forward_auth.url"
        );
        assert_eq!(
            field(ServiceConfig {
                rate_limit: Some(RateLimit {
                    average: 0,
                    burst: None,
                    period: None,
                    per: RatePer::ClientIp,
                }),
                ..Default::default()
            }),
            "rate_limit.average"
        );
    }
}
