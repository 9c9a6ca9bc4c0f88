//! Parsing and validation of user input (admin API, state file, labels).
//!
//! Every error names the field and says why, e.g. `port: must be 1-65535, got 99999`.

use std::net::IpAddr;

use super::{AdminState, BackendSpec, Command};

/// A field that failed validation, with a message fit for a 400 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        FieldError {
            field,
            reason: reason.into(),
        }
    }
}

pub const MAX_WEIGHT: u32 = 1000;
pub const DEFAULT_SERVICE: &str = "default";

/// A name made of 1–64 characters from `[A-Za-z0-9._-]` (used for `no` and service names).
fn name(field: &'static str, value: &str) -> Result<String, FieldError> {
    if value.is_empty() || value.len() > 64 {
        return Err(FieldError::new(
            field,
            format!("must be 1-64 characters, got {}", value.chars().count()),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(FieldError::new(
            field,
            format!("may only contain A-Z a-z 0-9 . _ -, got {bad:?} in {value:?}"),
        ));
    }
    Ok(value.to_owned())
}

pub fn no(value: &str) -> Result<String, FieldError> {
    name("no", value)
}

pub fn service(value: &str) -> Result<String, FieldError> {
    name("service", value)
}

pub fn ip(value: &str) -> Result<IpAddr, FieldError> {
    // Accept `[::1]` as well as `::1`.
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    bare.parse::<IpAddr>().map_err(|_| {
        let looks_like_name = !bare.is_empty()
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && bare.chars().any(|c| c.is_ascii_alphabetic());
        if looks_like_name {
            FieldError::new(
                "ip",
                format!("must be an IPv4 or IPv6 address, got host name {value:?} (host names are not resolved)"),
            )
        } else {
            FieldError::new(
                "ip",
                format!("must be an IPv4 or IPv6 address, got {value:?}"),
            )
        }
    })
}

pub fn port(value: &str) -> Result<u16, FieldError> {
    match value.trim().parse::<u64>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(FieldError::new(
            "port",
            format!("must be 1-65535, got {value}"),
        )),
    }
}

pub fn port_number(value: u64) -> Result<u16, FieldError> {
    port(&value.to_string())
}

pub fn weight(value: &str) -> Result<u32, FieldError> {
    match value.trim().parse::<u64>() {
        Ok(w) if (1..=MAX_WEIGHT as u64).contains(&w) => Ok(w as u32),
        _ => Err(FieldError::new(
            "weight",
            format!("must be 1-{MAX_WEIGHT}, got {value}"),
        )),
    }
}

pub fn state(value: &str) -> Result<AdminState, FieldError> {
    match value {
        "active" => Ok(AdminState::Active),
        "draining" => Ok(AdminState::Draining),
        "disabled" => Ok(AdminState::Disabled),
        other => Err(FieldError::new(
            "state",
            format!("must be active, draining or disabled, got {other:?}"),
        )),
    }
}

/// Raw, unvalidated fields of a backend as they arrive from a query string or JSON body.
#[derive(Debug, Default, Clone)]
pub struct RawBackend<'a> {
    pub no: &'a str,
    pub ip: &'a str,
    pub port: &'a str,
    pub weight: Option<&'a str>,
    pub service: Option<&'a str>,
    pub state: Option<&'a str>,
}

impl RawBackend<'_> {
    /// Validate every field, reporting the first bad one in a fixed order; `ip_field` is the
    /// address's name in the caller's vocabulary (`ip` in the seed API, `address` in JSON).
    pub fn validate(&self, ip_field: &'static str) -> Result<BackendSpec, FieldError> {
        Ok(BackendSpec {
            no: no(self.no)?,
            addr: ip(self.ip).map_err(|e| FieldError::new(ip_field, e.reason))?,
            port: port(self.port)?,
            weight: self.weight.map(weight).transpose()?.unwrap_or(1),
            service: self
                .service
                .map(service)
                .transpose()?
                .unwrap_or_else(|| DEFAULT_SERVICE.to_owned()),
            state: self.state.map(state).transpose()?.unwrap_or_default(),
        })
    }

    /// The registry command for this manual entry: without a `service` it keeps the service of
    /// the entry it replaces or pins.
    pub fn command(&self, ip_field: &'static str) -> Result<Command, FieldError> {
        Ok(Command::Upsert {
            spec: self.validate(ip_field)?,
            inherit_service: self.service.is_none(),
        })
    }
}

/// A host rule: a lower-case DNS name, or `*.` followed by one.
pub fn host_rule(value: &str) -> Result<String, FieldError> {
    let v = value.trim().to_ascii_lowercase();
    let body = v.strip_prefix("*.").unwrap_or(&v);
    let ok = !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(v)
    } else {
        Err(FieldError::new(
            "hosts",
            format!("must be a host name like app.example.com or *.example.com, got {value:?}"),
        ))
    }
}

/// A path: starts with `/`, no whitespace, no query (`field` names it in errors).
pub fn path(field: &'static str, value: &str) -> Result<(), FieldError> {
    if !value.starts_with('/') {
        return Err(FieldError::new(
            field,
            format!("must start with '/', got {value:?}"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(FieldError::new(
            field,
            format!("must not contain spaces, '?' or '#', got {value:?}"),
        ));
    }
    Ok(())
}

/// A path prefix, as the path rule reads it ([`crate::types::path`]): what requests are matched
/// against, so `//a`, `/%7e` and `/a/../b` are stored as `/a`, `/~` and `/b`. Path parameters
/// (`;`) are refused: rules never see them.
pub fn path_prefix(value: &str) -> Result<String, FieldError> {
    path("path_prefix", value)?;
    if value.contains(';') {
        return Err(FieldError::new(
            "path_prefix",
            format!(
                "must not contain ';' (path parameters are not part of what rules match), got {value:?}"
            ),
        ));
    }
    let normal = crate::types::path::normalize(value)
        .map_err(|e| FieldError::new("path_prefix", format!("{e}, got {value:?}")))?;
    Ok(normal.matching().to_owned())
}

/// A hash key: `client_ip`, `header:NAME` or `cookie:NAME`.
pub fn hash_key(value: &str) -> Result<(), FieldError> {
    let bad = || {
        FieldError::new(
            "hash_key",
            format!("must be client_ip, header:NAME or cookie:NAME, got {value:?}"),
        )
    };
    match value.split_once(':') {
        None if value == "client_ip" => Ok(()),
        Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
            .map(|_| ())
            .map_err(|_| bad()),
        Some(("cookie", name)) => cookie_name("hash_key", name),
        _ => Err(bad()),
    }
}

/// A cookie name: 1-64 characters from `[A-Za-z0-9._-]`.
pub fn cookie_name(field: &'static str, value: &str) -> Result<(), FieldError> {
    name(field, value).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_field_and_value() {
        assert_eq!(
            port("99999").unwrap_err().to_string(),
            "port: must be 1-65535, got 99999"
        );
        assert_eq!(port("0").unwrap_err().field, "port");
        assert_eq!(port("80").unwrap(), 80);
        assert!(
            ip("backend.local")
                .unwrap_err()
                .reason
                .contains("host name")
        );
        assert!(ip("1.2.3").is_err());
        assert_eq!(ip("[::1]").unwrap().to_string(), "::1");
        assert!(no("").is_err());
        assert!(no(&"a".repeat(65)).is_err());
        assert!(no("web_1.a-b").is_ok());
        assert!(no("a/b").unwrap_err().reason.contains("'/'"));
        assert_eq!(
            weight("1001").unwrap_err().to_string(),
            "weight: must be 1-1000, got 1001"
        );
        assert!(weight("-1").is_err());
        assert!(host_rule("*.Example.com").unwrap() == "*.example.com");
        assert!(host_rule("*.").is_err());
        assert!(host_rule("a..b").is_err());
        assert!(path_prefix("api").is_err());
        assert_eq!(path_prefix("/api").unwrap(), "/api");
        // Stored as requests are matched: the same rule.
        assert_eq!(path_prefix("//a").unwrap(), "/a");
        assert_eq!(path_prefix("/%7e").unwrap(), "/~");
        assert_eq!(path_prefix("/a/../b").unwrap(), "/b");
        assert_eq!(path_prefix("/a/b/").unwrap(), "/a/b/");
        assert_eq!(path_prefix("/a%2fb").unwrap(), "/a/b");
        assert!(
            path_prefix("/..")
                .unwrap_err()
                .reason
                .contains("above the root")
        );
        assert!(path_prefix("/a;v=1").unwrap_err().reason.contains("';'"));
    }
}
