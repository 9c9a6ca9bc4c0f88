//! The JSON REST API under `/api/v1`. Errors are `{"error": "..."}` with the matching status.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{apply_status, entry_json};
use crate::discovery::sources::{SourceStatus, Sources};
use crate::registry::actor::ApplyError;
use crate::registry::validate::{self, FieldError, RawBackend};
use crate::registry::{AdminState, Command, RegistryError, ServiceConfig};
use crate::routing::Handle;

/// The REST routes, with the methods each takes.
pub fn routes() -> Vec<super::Route> {
    use super::Route;
    vec![
        Route::new("/api/v1/backends", "GET", get(list_backends)),
        Route::new(
            "/api/v1/backends/{no}",
            "GET, PUT, DELETE",
            get(get_backend).put(put_backend).delete(delete_backend),
        ),
        Route::new("/api/v1/backends/{no}/drain", "POST", post(drain)),
        Route::new("/api/v1/backends/{no}/enable", "POST", post(enable)),
        Route::new("/api/v1/services", "GET", get(list_services)),
        Route::new(
            "/api/v1/services/{name}",
            "GET, PUT, DELETE",
            get(get_service).put(put_service).delete(delete_service),
        ),
        Route::new("/api/v1/discovery", "GET", get(discovery)),
        Route::new("/api/v1/events", "GET", get(events)),
        Route::new("/api/v1/tls/reload", "POST", post(tls_reload)),
    ]
}

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        ApiError(apply_status(&e), e.to_string())
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(body_error)
}

/// A 400 naming the field of the body that failed, or the body as a whole.
fn body_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let msg = if path == "." || path == "?" {
        format!("invalid JSON body: {}", e.inner())
    } else {
        format!("{path}: {}", e.inner())
    };
    ApiError(StatusCode::BAD_REQUEST, msg)
}

/// A JSON scalar as text, for the shared validators (so `"port": "80"` and `80` both work and
/// the messages are the same as the text API's).
fn text(field: &'static str, v: &Value) -> Result<String, FieldError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(FieldError::new(
            field,
            format!("must be a string or number, got {other}"),
        )),
    }
}

async fn list_backends(State(reg): State<Handle>) -> Response {
    let r = reg.registry();
    let table = reg.shared().table.load();
    let list: Vec<Value> = r.entries().map(|e| entry_json(&e, &table)).collect();
    axum::Json(json!({ "backends": list })).into_response()
}

async fn get_backend(State(reg): State<Handle>, Path(no): Path<String>) -> ApiResult {
    let no = validate::no(&no)?;
    let r = reg.registry();
    let e = r
        .get(&no)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, r.missing(&no)))?;
    let table = reg.shared().table.load();
    Ok(axum::Json(entry_json(&e, &table)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBackend {
    address: Value,
    port: Value,
    #[serde(default)]
    weight: Option<Value>,
    #[serde(default)]
    service: Option<Value>,
    #[serde(default)]
    state: Option<Value>,
}

async fn put_backend(State(reg): State<Handle>, Path(no): Path<String>, body: Bytes) -> ApiResult {
    let b: PutBackend = parse_body(&body)?;
    let address = text("address", &b.address)?;
    let port = text("port", &b.port)?;
    let weight = b.weight.as_ref().map(|v| text("weight", v)).transpose()?;
    let service = b.service.as_ref().map(|v| text("service", v)).transpose()?;
    let state = b.state.as_ref().map(|v| text("state", v)).transpose()?;
    let cmd = RawBackend {
        no: &no,
        ip: &address,
        port: &port,
        weight: weight.as_deref(),
        service: service.as_deref(),
        state: state.as_deref(),
    }
    .command("address")?;
    let no = validate::no(&no)?;
    reg.apply(cmd).await?;
    get_backend(State(reg), Path(no)).await
}

async fn delete_backend(State(reg): State<Handle>, Path(no): Path<String>) -> ApiResult {
    let no = validate::no(&no)?;
    reg.apply(Command::Remove { no }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_state(reg: Handle, no: String, state: AdminState) -> ApiResult {
    let no = validate::no(&no)?;
    reg.apply(Command::SetState {
        no: no.clone(),
        state,
    })
    .await?;
    get_backend(State(reg), Path(no)).await
}

async fn drain(State(reg): State<Handle>, Path(no): Path<String>) -> ApiResult {
    set_state(reg, no, AdminState::Draining).await
}

async fn enable(State(reg): State<Handle>, Path(no): Path<String>) -> ApiResult {
    set_state(reg, no, AdminState::Active).await
}

async fn tls_reload(State(ctx): State<super::Ctx>) -> ApiResult {
    let Some(tls) = &ctx.tls else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "TLS is not enabled; start quayside with --tls-cert and --tls-key".into(),
        ));
    };
    match tls.reload() {
        Ok(n) => Ok(axum::Json(json!({ "reloaded": n })).into_response()),
        Err(e) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{e}; still serving the previous certificates"),
        )),
    }
}

/// Server-Sent Events: the kept events after `Last-Event-ID` (all kept ones without it), then
/// each as it happens, until quayside stops or the client falls behind (then it is dropped
/// and resumes with `Last-Event-ID`).
async fn events(State(ctx): State<super::Ctx>, headers: axum::http::HeaderMap) -> Response {
    use axum::response::sse::{Event as Sse, KeepAlive};
    use futures_util::StreamExt;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let (backlog, rx) = ctx.registry.shared().events.subscribe(last);
    let live =
        futures_util::stream::unfold((rx, ctx.stop.clone()), |(mut rx, mut stop)| async move {
            let next = tokio::select! {
                e = rx.recv() => e.ok(),
                _ = stop.wait_for(|s| *s) => None,
            };
            next.map(|e| (e, (rx, stop)))
        });
    let stream = futures_util::stream::iter(backlog).chain(live).map(|e| {
        Ok::<_, std::convert::Infallible>(
            Sse::default()
                .id(e.id.to_string())
                .event(e.kind)
                .json_data(&*e)
                .unwrap_or_default(),
        )
    });
    axum::response::sse::Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Every discovery source's status, one shape for all (none with `--no-docker`).
async fn discovery(State(sources): State<Sources>) -> Response {
    let list = sources.list();
    let list: Vec<&SourceStatus> = list.iter().map(|s| &**s).collect();
    axum::Json(serde_json::json!({ "sources": list })).into_response()
}

/// Fields of a service's JSON that describe it but are not settings: `PUT` accepts them back
/// (so a `GET`'s body can be sent again) and ignores them.
const SERVICE_READ_ONLY: [&str; 3] = ["name", "settings_from", "backends"];

/// A service as `GET` shows it: its settings (the settings type itself, so every setting reads
/// back as set), its name, where the settings came from and its backends.
fn service_json(reg: &crate::registry::Registry, name: &str) -> Value {
    let (cfg, by_operator) = reg.service_config(name);
    let backends: Vec<String> = reg
        .entries()
        .filter(|e| e.spec.service == name)
        .map(|e| e.spec.no)
        .collect();
    let mut v = serde_json::to_value(&cfg).expect("service settings serialise");
    let obj = v.as_object_mut().expect("service settings are an object");
    obj.insert("name".into(), json!(name));
    obj.insert(
        "settings_from".into(),
        json!(if by_operator {
            "api"
        } else {
            "labels or defaults"
        }),
    );
    obj.insert("backends".into(), json!(backends));
    v
}

async fn list_services(State(reg): State<Handle>) -> Response {
    let r = reg.registry();
    let list: Vec<Value> = r
        .service_names()
        .iter()
        .map(|n| service_json(&r, n))
        .collect();
    axum::Json(json!({ "services": list })).into_response()
}

async fn get_service(State(reg): State<Handle>, Path(name): Path<String>) -> ApiResult {
    let name = validate::service(&name)?;
    let r = reg.registry();
    if !r.service_names().contains(&name) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            RegistryError::ServiceNotFound(name).to_string(),
        ));
    }
    Ok(axum::Json(service_json(&r, &name)).into_response())
}

async fn put_service(
    State(reg): State<Handle>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let name = validate::service(&name)?;
    let mut v: Value = parse_body(&body)?;
    if let Some(obj) = v.as_object_mut() {
        if let Some(given) = obj.get("name")
            && *given != json!(name)
        {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "name: is {given} but the URL names service {name:?}; leave it out or make them agree"
                ),
            ));
        }
        for k in SERVICE_READ_ONLY {
            obj.remove(k);
        }
    }
    let config: ServiceConfig = serde_path_to_error::deserialize(v).map_err(body_error)?;
    reg.apply(Command::PutService {
        name: name.clone(),
        config,
    })
    .await?;
    get_service(State(reg), Path(name)).await
}

async fn delete_service(State(reg): State<Handle>, Path(name): Path<String>) -> ApiResult {
    let name = validate::service(&name)?;
    reg.apply(Command::DeleteService { name }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
