//! The admin API, on its own listener (loopback by default): the seed-compatible
//! `/add`, `/get`, `/delete` text API, a JSON REST API under `/api/v1`, and `/healthz`.
//!
//! Every handler validates its input fully before sending one command to the registry, so a
//! 4xx never changes anything; the OK comes back only after the change is saved.

pub mod auth;
mod dashboard;
pub mod healthcheck;
mod openapi;
mod rest;
mod seed;
pub mod server;

pub use auth::{Access, AdminConfig, Token};

use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::discovery::sources::Sources;
use crate::health::now_ms;
use crate::registry::actor::ApplyError;
use crate::registry::{Entry, RegistryError};
use crate::routing::Handle;
use crate::routing::RoutingTable;

/// What the admin handlers can reach.
#[derive(Clone)]
pub struct Ctx {
    pub registry: Handle,
    pub discovery: Sources,
    pub tls: Option<std::sync::Arc<crate::proxy::tls::Tls>>,
    /// Automatic HTTPS (none: off).
    pub acme: Option<std::sync::Arc<crate::acme::Acme>>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub runtime: std::sync::Arc<crate::proxy::Runtime>,
    pub access_log: Option<std::sync::Arc<crate::access_log::AccessLog>>,
    /// The last minutes' figures per service and backend, for the dashboard.
    pub stats: crate::stats::Stats,
    /// Turns true when quayside stops (ends the event streams).
    pub stop: watch::Receiver<bool>,
    /// The admin listener's connections and event streams, against its limits.
    pub load: std::sync::Arc<server::Load>,
    /// The routing table generation when every discovery source had first synced (set by
    /// the first `/readyz` that saw them all ready).
    pub synced_generation: std::sync::Arc<std::sync::OnceLock<u64>>,
}

impl FromRef<Ctx> for Handle {
    fn from_ref(c: &Ctx) -> Handle {
        c.registry.clone()
    }
}

impl FromRef<Ctx> for Sources {
    fn from_ref(c: &Ctx) -> Sources {
        c.discovery.clone()
    }
}

/// One route of the admin API: its path, the methods it takes (as the 404 and 405 answers and
/// the `Allow` header say them) and its handlers. The router is built from the list, so the
/// list is every route there is.
pub struct Route {
    pub path: &'static str,
    pub methods: &'static str,
    /// What every method of the route needs; `None`: by method ([`Access::of_method`]).
    pub access: Option<Access>,
    handler: MethodRouter<Ctx>,
}

impl Route {
    fn new(path: &'static str, methods: &'static str, handler: MethodRouter<Ctx>) -> Route {
        Route {
            path,
            methods,
            access: None,
            handler,
        }
    }

    /// The route needs `access` whatever the method (the seed API changes routing on GET).
    fn access(mut self, access: Access) -> Route {
        self.access = Some(access);
        self
    }
}

/// Every route of the admin API.
pub fn routes() -> Vec<Route> {
    let mut all = vec![
        Route::new("/add", "GET, POST", get(seed::add).post(seed::add)).access(Access::Change),
        Route::new("/get", "GET, POST", get(seed::get).post(seed::get)).access(Access::Read),
        Route::new("/delete", "GET, POST", get(seed::delete).post(seed::delete))
            .access(Access::Change),
        Route::new("/healthz", "GET", get(healthz)).access(Access::Open),
        Route::new("/readyz", "GET", get(readyz)).access(Access::Open),
        Route::new("/metrics", "GET", get(metrics)),
        Route::new("/api/v1/openapi.json", "GET", get(openapi::serve)).access(Access::Open),
    ];
    all.extend(rest::routes());
    all.extend(dashboard::routes());
    all
}

/// Whether quayside is up (it answers).
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "quayside answers", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 once the state is loaded, the listeners are bound (both before the admin API serves)
/// and every discovery source has finished its first sync or reported that it cannot
/// connect; 503 saying which source is still syncing otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "ready", body = String, content_type = "text/plain"),
    (status = 503, description = "a discovery source is still syncing: which one", body = String, content_type = "text/plain")))]
async fn readyz(axum::extract::State(ctx): axum::extract::State<Ctx>) -> Response {
    let mut waiting = ctx.discovery.not_ready();
    // Automatic HTTPS: the kept certificates of the hosts the first syncs brought are served
    // (later changes do not make quayside unready again).
    if waiting.is_empty()
        && let Some(a) = &ctx.acme
    {
        let synced = *ctx.synced_generation.get_or_init(|| {
            ctx.registry
                .shared()
                .generation
                .load(std::sync::atomic::Ordering::Relaxed)
        });
        if !a.caught_up(synced) {
            waiting.push("automatic HTTPS is loading the kept certificates".into());
        }
    }
    if waiting.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {}\n", waiting.join("; ")),
    )
        .into_response()
}

/// Prometheus metrics: OpenMetrics text when the client accepts it (Prometheus does), the
/// classic text format otherwise.
#[utoipa::path(get, path = "/metrics", tag = "metrics", responses(
    (status = 200, description = "the metrics", content(
        (String = "text/plain"),
        (String = "application/openmetrics-text")))))]
async fn metrics(
    axum::extract::State(ctx): axum::extract::State<Ctx>,
    headers: axum::http::HeaderMap,
) -> Response {
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let registry = ctx.registry.registry();
    let shared = ctx.registry.shared();
    let table = shared.table.load();
    let hosts = rest::hosts(&registry);
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let certificates = crate::acme::names(&hosts, ctx.tls.as_deref(), ctx.acme.as_deref());
    let text = ctx.metrics.encode(
        &crate::metrics::Scrape {
            table: &table,
            registry: &registry,
            generation: shared.generation.load(std::sync::atomic::Ordering::Relaxed),
            sources: &ctx.discovery,
            runtime: &ctx.runtime,
            access_log_dropped: ctx.access_log.as_ref().map(|l| l.dropped()),
            admin: ctx.load.view(),
            events: &shared.events,
            state_writes: shared.state_writes.as_deref(),
            state_status: shared.state_status.as_deref(),
            certificates: &certificates,
            acme_orders: ctx.acme.as_ref().map(|a| a.orders()),
        },
        openmetrics,
    );
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response()
}

/// Each route's path, methods and access, for the 404 and 405 answers, the guard (and tests).
pub fn route_list() -> &'static [(&'static str, &'static str, Option<Access>)] {
    type List = Vec<(&'static str, &'static str, Option<Access>)>;
    static LIST: std::sync::OnceLock<List> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        routes()
            .iter()
            .map(|r| (r.path, r.methods, r.access))
            .collect()
    })
}

/// What a request for `path` with `method` needs (an unknown path: reading, for its 404).
pub fn access(path: &str, method: &axum::http::Method) -> Access {
    route_list()
        .iter()
        .find(|(pattern, _, _)| route_matches(pattern, path))
        .and_then(|(_, _, access)| *access)
        .unwrap_or_else(|| Access::of_method(method))
}

pub fn router(ctx: Ctx, guard: std::sync::Arc<auth::Guard>) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(explain_405))
        .layer(axum::middleware::from_fn_with_state(guard, auth::guard))
        .with_state(ctx)
}

/// A 404 listing the routes: JSON under `/api/` (as the REST routes' errors are), text
/// elsewhere.
async fn not_found(uri: axum::http::Uri) -> Response {
    let routes: String = route_list()
        .iter()
        .map(|(path, methods, _)| format!("  {methods:<16} {path}\n"))
        .collect();
    let message = format!("not found: {}; the admin API has:\n{routes}", uri.path());
    if uri.path().starts_with("/api/") {
        let body = rest::ErrorBody { error: message };
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    (StatusCode::NOT_FOUND, message).into_response()
}

/// axum answers a known path with the wrong method with an empty 405: say which methods the
/// path takes, from [`routes`], and send them in `Allow`.
async fn explain_405(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED {
        return resp;
    }
    let allow = route_list()
        .iter()
        .find(|(pattern, _, _)| route_matches(pattern, &path))
        .map_or("", |(_, methods, _)| *methods);
    let mut resp = (
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed on {path}; it takes {allow}\n"),
    )
        .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(allow) {
        resp.headers_mut().insert(axum::http::header::ALLOW, v);
    }
    resp
}

/// Whether `path` fits a route pattern of [`routes`] (`{x}` stands for one segment).
fn route_matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b || (a.starts_with('{') && !b.is_empty()) => {}
            _ => return false,
        }
    }
}
/// Serve the admin API until `stop` turns true, over TLS if `tls` is given, under the limits
/// of `ctx.load` ([`server`]).
pub async fn serve(
    listener: TcpListener,
    ctx: Ctx,
    admin: &AdminConfig,
    tls: Option<std::sync::Arc<crate::proxy::tls::Tls>>,
    stop: watch::Receiver<bool>,
) {
    let load = ctx.load.clone();
    let app = router(ctx, auth::Guard::new(admin));
    server::serve(listener, app, tls, load, stop).await;
}

/// Status code for a failed registry change.
fn apply_status(e: &ApplyError) -> StatusCode {
    match e {
        ApplyError::Rejected(RegistryError::NotFound(_))
        | ApplyError::Rejected(RegistryError::ServiceNotFound(_)) => StatusCode::NOT_FOUND,
        ApplyError::Rejected(RegistryError::Invalid(_)) => StatusCode::BAD_REQUEST,
        ApplyError::Rejected(RegistryError::RuleConflict { .. }) => StatusCode::CONFLICT,
        ApplyError::Persist(_) | ApplyError::Unsaved | ApplyError::Closed => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// A plain-text error for the seed API.
struct TextError(StatusCode, String);

impl IntoResponse for TextError {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

impl From<ApplyError> for TextError {
    fn from(e: ApplyError) -> Self {
        TextError(apply_status(&e), e.to_string())
    }
}

/// A backend as the REST API shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct BackendView {
    pub no: String,
    /// An IP address.
    pub address: String,
    pub port: u16,
    pub weight: u32,
    pub service: String,
    pub source: crate::registry::Source,
    /// The discovery endpoint that found it (none for a manual entry).
    pub endpoint: Option<String>,
    pub state: crate::registry::AdminState,
    pub container_id: Option<String>,
    /// A manual entry that overrides a discovered one with the same `no`.
    pub pinned: bool,
    /// None until the routing table holds it.
    pub health: Option<crate::health::HealthView>,
}

impl BackendView {
    fn new(e: Entry, table: &RoutingTable) -> BackendView {
        BackendView {
            health: table.stats(&e.spec.no).map(|s| s.view(now_ms())),
            address: e.spec.addr.to_string(),
            port: e.spec.port,
            weight: e.spec.weight,
            state: e.spec.state,
            source: e.source,
            no: e.spec.no,
            service: e.spec.service,
            endpoint: e.endpoint,
            container_id: e.container_id,
            pinned: e.pinned,
        }
    }
}
