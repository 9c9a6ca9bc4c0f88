//! The seed-compatible text API: `/add?no=&ip=&port=`, `/get?no=`, `/delete?no=`.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;

use super::TextError;
use crate::registry::Command;
use crate::registry::validate::{self, FieldError, RawBackend};
use crate::routing::Handle;

const ADD_USAGE: &str =
    "usage: /add?ip=x.x.x.x&port=xx&no=xx (optional: &weight=1-1000&service=name)";
const GET_USAGE: &str = "usage: /get?no=xx";
const DELETE_USAGE: &str = "usage: /delete?no=xx";

/// Query parameters, each at most once, only from `allowed`.
fn params(
    query: &Option<String>,
    allowed: &[&'static str],
    usage: &str,
) -> Result<Vec<(&'static str, String)>, TextError> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let Some(q) = query else { return Ok(out) };
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        let Some(name) = allowed.iter().find(|a| **a == k) else {
            return Err(TextError(
                StatusCode::BAD_REQUEST,
                format!(
                    "{k}: unknown parameter; expected {}\n{usage}",
                    allowed.join(", ")
                ),
            ));
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(TextError(
                StatusCode::BAD_REQUEST,
                format!("{name}: given more than once\n{usage}"),
            ));
        }
        out.push((name, v.into_owned()));
    }
    Ok(out)
}

fn find<'a>(p: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
}

fn missing(names: &[&str], p: &[(&'static str, String)], usage: &str) -> Result<(), TextError> {
    let absent: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| find(p, n).is_none())
        .collect();
    if absent.is_empty() {
        Ok(())
    } else {
        Err(TextError(
            StatusCode::BAD_REQUEST,
            format!("{usage}\nmissing: {}", absent.join(", ")),
        ))
    }
}

fn bad(e: FieldError) -> TextError {
    TextError(StatusCode::BAD_REQUEST, e.to_string())
}

/// The seed recipe's `/add`: add or replace a manual entry (GET changes state, as the recipe's
/// did; the query is read for POST too).
#[utoipa::path(method(get, post), path = "/add", tag = "seed",
    params(
        ("no" = String, Query, description = "the entry's name: 1 to 64 of A-Z a-z 0-9 . _ -", pattern = "^[A-Za-z0-9._-]{1,64}$", example = "a1"),
        ("ip" = String, Query, description = "an IP address", example = "127.0.0.1"),
        ("port" = String, Query, description = "1 to 65535", pattern = "^[0-9]{1,5}$", example = "8080"),
        ("weight" = Option<String>, Query, description = "1 to 1000 (default 1)"),
        ("service" = Option<String>, Query, description = "the service (default `default`)")),
    responses(
        (status = 200, description = "saved", body = String, content_type = "text/plain"),
        (status = 400, description = "a parameter is missing or invalid: which and why", body = String, content_type = "text/plain"),
        (status = 503, description = "the change could not be saved", body = String, content_type = "text/plain")))]
pub async fn add(
    State(reg): State<Handle>,
    RawQuery(q): RawQuery,
) -> Result<&'static str, TextError> {
    let p = params(&q, &["no", "ip", "port", "weight", "service"], ADD_USAGE)?;
    missing(&["ip", "port", "no"], &p, ADD_USAGE)?;
    let cmd = RawBackend {
        no: find(&p, "no").unwrap_or_default(),
        ip: find(&p, "ip").unwrap_or_default(),
        port: find(&p, "port").unwrap_or_default(),
        weight: find(&p, "weight"),
        service: find(&p, "service"),
        state: None,
    }
    .command("ip")
    .map_err(bad)?;
    reg.apply(cmd).await?;
    Ok("OK\n")
}

fn the_no(q: &Option<String>, usage: &str) -> Result<String, TextError> {
    let p = params(q, &["no"], usage)?;
    missing(&["no"], &p, usage)?;
    validate::no(find(&p, "no").unwrap_or_default()).map_err(bad)
}

/// The seed recipe's `/get`: an entry, as `key: value` lines.
#[utoipa::path(method(get, post), path = "/get", tag = "seed",
    params(("no" = String, Query, description = "the entry's name: 1 to 64 of A-Z a-z 0-9 . _ -", pattern = "^[A-Za-z0-9._-]{1,64}$", example = "a1")),
    responses(
        (status = 200, description = "ip, port, servers, weight, service, source, state (and container, pinned)", body = String, content_type = "text/plain"),
        (status = 400, description = "no is missing or invalid", body = String, content_type = "text/plain"),
        (status = 404, description = "no such entry", body = String, content_type = "text/plain")))]
pub async fn get(State(reg): State<Handle>, RawQuery(q): RawQuery) -> Result<String, TextError> {
    let no = the_no(&q, GET_USAGE)?;
    let registry = reg.registry();
    let e = registry
        .get(&no)
        .ok_or_else(|| TextError(StatusCode::NOT_FOUND, registry.missing(&no)))?;
    let mut out = format!(
        "ip: {}\nport: {}\nservers: {}\nweight: {}\nservice: {}\nsource: {}\nstate: {}\n",
        e.spec.addr,
        e.spec.port,
        registry.service_size(&e.spec.service),
        e.spec.weight,
        e.spec.service,
        e.source.as_str(),
        e.spec.state.as_str(),
    );
    if let Some(id) = &e.container_id {
        out.push_str(&format!("container: {id}\n"));
    }
    if e.pinned {
        out.push_str("pinned: true (a manual entry overrides the discovered one)\n");
    }
    Ok(out)
}

/// The seed recipe's `/delete`: remove a manual entry.
#[utoipa::path(method(get, post), path = "/delete", tag = "seed",
    params(("no" = String, Query, description = "the entry's name: 1 to 64 of A-Z a-z 0-9 . _ -", pattern = "^[A-Za-z0-9._-]{1,64}$", example = "a1")),
    responses(
        (status = 200, description = "removed", body = String, content_type = "text/plain"),
        (status = 400, description = "no is missing or invalid", body = String, content_type = "text/plain"),
        (status = 404, description = "no such entry", body = String, content_type = "text/plain"),
        (status = 503, description = "the change could not be saved", body = String, content_type = "text/plain")))]
pub async fn delete(
    State(reg): State<Handle>,
    RawQuery(q): RawQuery,
) -> Result<&'static str, TextError> {
    let no = the_no(&q, DELETE_USAGE)?;
    reg.apply(Command::Remove { no }).await?;
    Ok("OK\n")
}
