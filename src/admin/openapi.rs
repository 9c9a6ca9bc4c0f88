//! `GET /api/v1/openapi.json`: the admin API as an OpenAPI 3.1 document, built from the
//! handlers' own `#[utoipa::path]` attributes and the types they answer with, so a field added
//! to a response type is in the document at once. What the guard adds to every route (the
//! bearer token, its 401 and 403) is added here from each route's [`Access`], the same list
//! the guard reads. `tests/openapi.rs` checks that the routes and the document's operations are
//! the same set.

use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder, ResponsesBuilder};

use super::Access;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "quayside admin API",
        description = "Backends, services, discovery, events, figures and metrics of a quayside reverse proxy. With tokens configured, every route but /healthz, /readyz, the dashboard's files and this document needs `Authorization: Bearer <token>`: the admin token for changes, the read token or the admin token for reading."
    ),
    paths(
        super::seed::add,
        super::seed::get,
        super::seed::delete,
        super::healthz,
        super::readyz,
        super::metrics,
        serve,
    ),
    tags(
        (name = "seed", description = "The OpenResty recipe's text API, kept compatible"),
        (name = "backends", description = "Entries by no: add, pin, drain, enable, delete"),
        (name = "services", description = "Routing rules and balancing per service"),
        (name = "dashboard", description = "The web page served at /dashboard/"),
    )
)]
struct Doc;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Doc::openapi();
    doc.merge(super::rest::Doc::openapi());
    doc.merge(super::dashboard::Doc::openapi());
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    guard(&mut doc);
    doc
}

/// The bearer scheme, and for each operation what the guard may answer instead of it.
fn guard(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let json = path.starts_with("/api/");
        let ops = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let access = super::access(path, &method);
            let mut refusals = ResponsesBuilder::new().response(
                "403",
                refusal(
                    json,
                    if access == Access::Change {
                        "the read-only token, a cross-site request, or a Host that names no admin host"
                    } else {
                        "the Host header names no admin host"
                    },
                ),
            );
            if access == Access::Open {
                op.security = Some(vec![SecurityRequirement::default()]);
            } else {
                op.security = Some(vec![SecurityRequirement::new::<_, _, &str>("token", [])]);
                refusals =
                    refusals.response("401", refusal(json, "no token, or not a token of this API"));
            }
            for (code, r) in refusals.build().responses {
                op.responses.responses.entry(code).or_insert(r);
            }
        }
    }
}

/// The guard's refusal: JSON under `/api/`, text elsewhere.
fn refusal(json: bool, description: &str) -> RefOr<utoipa::openapi::Response> {
    let (content_type, content) = if json {
        (
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build(),
        )
    } else {
        (
            "text/plain",
            ContentBuilder::new()
                .schema(Some(<String as utoipa::PartialSchema>::schema()))
                .build(),
        )
    };
    ResponseBuilder::new()
        .description(description)
        .content(content_type, content)
        .build()
        .into()
}

/// This document, as JSON.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "docs",
    responses((status = 200, description = "the admin API's OpenAPI 3.1 document", body = Object)))]
pub async fn serve() -> Response {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = JSON.get_or_init(|| document().to_json().expect("the document serialises"));
    ([(header::CONTENT_TYPE, "application/json")], body.as_str()).into_response()
}
