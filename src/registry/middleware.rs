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

/// Check one `user:hash` of `basic_auth`.
pub fn basic_user(entry: &str) -> Result<(), FieldError> {
    let field = "basic_auth";
    let Some((user, hash)) = entry.split_once(':') else {
        return Err(FieldError::new(
            field,
            "each entry must be user:hash (as `htpasswd -nbB user password` prints)",
        ));
    };
    if user.is_empty() {
        return Err(FieldError::new(field, "a user name may not be empty"));
    }
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        hash.parse::<bcrypt::HashParts>().map_err(|e| {
            FieldError::new(field, format!("user {user}: not a valid bcrypt hash ({e})"))
        })?;
        return Ok(());
    }
    if hash.starts_with("$argon2") {
        argon2::PasswordHash::new(hash).map_err(|e| {
            FieldError::new(field, format!("user {user}: not a valid argon2 hash ({e})"))
        })?;
        return Ok(());
    }
    Err(FieldError::new(
        field,
        format!(
            "user {user}: the password must be a bcrypt ($2y$...) or argon2 ($argon2id$...) hash, not plain text"
        ),
    ))
}

/// Check the middleware settings of a service config (see `ServiceConfig::validated`);
/// normalises header names and address blocks.
pub fn validate(cfg: &mut super::ServiceConfig) -> Result<(), FieldError> {
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
        let uri: http::Uri = f.url.parse().map_err(|_| {
            FieldError::new(
                "forward_auth.url",
                format!("must be a URL like http://auth:4181/check, got {:?}", f.url),
            )
        })?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(FieldError::new(
                    "forward_auth.url",
                    format!("must start with http:// or https://, got {:?}", f.url),
                ));
            }
        }
        if uri.authority().is_none() {
            return Err(FieldError::new(
                "forward_auth.url",
                format!("needs a host, got {:?}", f.url),
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
                return Err(FieldError::new(
                    field,
                    format!("the value of {name} must be visible ASCII text, got {value:?}"),
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
    fn basic_auth_takes_hashes_only() {
        let bc = bcrypt::hash("pw", 4).unwrap();
        assert!(basic_user(&format!("alice:{bc}")).is_ok());
        let e = basic_user("alice:secret").unwrap_err();
        assert!(e.reason.contains("not plain text"), "{e}");
        assert!(basic_user("alice").is_err());
        assert!(basic_user(":x").is_err());
        assert!(basic_user("bob:$2y$10$short").is_err());
        assert!(
            basic_user("carol:$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA")
                .is_ok()
        );
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
