//! The admin API, on its own listener (loopback by default): the seed-compatible
//! `/add`, `/get`, `/delete` text API, a JSON REST API under `/api/v1`, and `/healthz`.
//!
//! Every handler validates its input fully before sending one command to the registry, so a
//! 4xx never changes anything; the OK comes back only after the change is saved.

mod rest;
mod seed;

use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::discovery::docker::SharedStatus;
use crate::health::now_ms;
use crate::registry::Handle;
use crate::registry::actor::ApplyError;
use crate::registry::{Entry, RegistryError};
use crate::routing::RoutingTable;

/// What the admin handlers can reach.
#[derive(Clone)]
pub struct Ctx {
    pub registry: Handle,
    pub discovery: SharedStatus,
    pub tls: Option<std::sync::Arc<crate::proxy::tls::Tls>>,
}

impl FromRef<Ctx> for Handle {
    fn from_ref(c: &Ctx) -> Handle {
        c.registry.clone()
    }
}

impl FromRef<Ctx> for SharedStatus {
    fn from_ref(c: &Ctx) -> SharedStatus {
        c.discovery.clone()
    }
}

pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/add", get(seed::add).post(seed::add))
        .route("/get", get(seed::get).post(seed::get))
        .route("/delete", get(seed::delete).post(seed::delete))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(rest::routes())
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found; the admin API has /add, /get, /delete, /healthz and /api/v1/backends, /api/v1/services\n",
            )
        })
        .with_state(ctx)
}

/// Serve the admin API until `stop` turns true.
pub async fn serve(listener: TcpListener, ctx: Ctx, mut stop: watch::Receiver<bool>) {
    let app = router(ctx);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    if let Err(e) = server.await {
        tracing::error!(error = %e, "admin API server failed");
    }
}

/// Status code for a failed registry change.
fn apply_status(e: &ApplyError) -> StatusCode {
    match e {
        ApplyError::Rejected(RegistryError::NotFound(_))
        | ApplyError::Rejected(RegistryError::ServiceNotFound(_)) => StatusCode::NOT_FOUND,
        ApplyError::Rejected(RegistryError::Invalid(_)) => StatusCode::BAD_REQUEST,
        ApplyError::Rejected(RegistryError::RuleConflict { .. }) => StatusCode::CONFLICT,
        ApplyError::Persist(_) | ApplyError::Closed => StatusCode::SERVICE_UNAVAILABLE,
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

fn entry_json(e: &Entry, table: &RoutingTable) -> serde_json::Value {
    let health = table
        .stats(&e.spec.no)
        .map(|s| serde_json::to_value(s.view(now_ms())).unwrap_or_default());
    serde_json::json!({
        "no": e.spec.no,
        "address": e.spec.addr.to_string(),
        "port": e.spec.port,
        "weight": e.spec.weight,
        "service": e.spec.service,
        "source": e.source.as_str(),
        "state": e.spec.state.as_str(),
        "container_id": e.container_id,
        "pinned": e.pinned,
        "health": health,
    })
}
