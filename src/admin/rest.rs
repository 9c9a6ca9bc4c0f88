//! The JSON REST API under `/api/v1`. Errors are `{"error": "..."}` with the matching status.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{BackendView, apply_status};
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
        Route::new("/api/v1/tls", "GET", get(tls_names)),
        Route::new("/api/v1/tls/reload", "POST", post(tls_reload)),
        Route::new("/api/v1/tls/renew", "POST", post(tls_renew)),
        Route::new("/api/v1/access", "GET", get(access)).access(super::Access::Open),
        Route::new("/api/v1/stats", "GET", get(stats)),
    ]
}

pub struct ApiError(StatusCode, String);

/// Every error of the REST API.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong, naming the field.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ErrorBody { error: self.1 })).into_response()
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

/// The backends of `GET /api/v1/backends`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BackendList {
    pub backends: Vec<BackendView>,
}

/// Every entry, discovered and manual.
#[utoipa::path(get, path = "/api/v1/backends", tag = "backends",
    responses((status = 200, description = "every entry", body = BackendList)))]
async fn list_backends(State(reg): State<Handle>) -> Response {
    let r = reg.registry();
    let table = reg.shared().table.load();
    let backends = r.entries().map(|e| BackendView::new(e, &table)).collect();
    axum::Json(BackendList { backends }).into_response()
}

/// One entry.
#[utoipa::path(get, path = "/api/v1/backends/{no}", tag = "backends", params(NoParam),
    responses(
        (status = 200, description = "the entry", body = BackendView),
        (status = 400, description = "not a valid no", body = ErrorBody),
        (status = 404, description = "no such entry", body = ErrorBody)))]
async fn get_backend(State(reg): State<Handle>, Path(NoParam { no }): Path<NoParam>) -> ApiResult {
    let no = validate::no(&no)?;
    let r = reg.registry();
    let e = r
        .get(&no)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, r.missing(&no)))?;
    let table = reg.shared().table.load();
    Ok(axum::Json(BackendView::new(e, &table)).into_response())
}

/// The `{no}` of a backend's path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct NoParam {
    /// The entry's name: 1 to 64 of A-Z a-z 0-9 . _ -
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "a1")]
    no: String,
}

/// A string or a number (`"port": "80"` and `80` are both taken): the schema of such fields.
struct Scalar;

impl utoipa::PartialSchema for Scalar {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Integer))
            .into()
    }
}

impl utoipa::ToSchema for Scalar {}

/// A manual entry: pins `no` to this address (overriding a discovered entry of that name).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutBackend {
    /// An IP address.
    #[schema(value_type = Scalar)]
    address: Value,
    /// 1 to 65535.
    #[schema(value_type = Scalar)]
    port: Value,
    /// 1 to 1000 (default 1).
    #[serde(default)]
    #[schema(value_type = Option<Scalar>)]
    weight: Option<Value>,
    /// The service it belongs to (default: that of the entry it replaces or pins, else
    /// `default`).
    #[serde(default)]
    #[schema(value_type = Option<Scalar>)]
    service: Option<Value>,
    /// `active` (default), `draining` or `disabled`.
    #[serde(default)]
    #[schema(value_type = Option<Scalar>)]
    state: Option<Value>,
}

/// Add or replace a manual entry.
#[utoipa::path(put, path = "/api/v1/backends/{no}", tag = "backends", params(NoParam),
    request_body = PutBackend,
    responses(
        (status = 200, description = "saved; the entry as it is now", body = BackendView),
        (status = 400, description = "a field is invalid: which and why", body = ErrorBody),
        (status = 503, description = "the change could not be saved", body = ErrorBody)))]
async fn put_backend(
    State(reg): State<Handle>,
    Path(NoParam { no }): Path<NoParam>,
    body: Bytes,
) -> ApiResult {
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
    get_backend(State(reg), Path(NoParam { no })).await
}

/// Remove a manual entry (a discovered one comes back from its source if still there).
#[utoipa::path(delete, path = "/api/v1/backends/{no}", tag = "backends", params(NoParam),
    responses(
        (status = 204, description = "removed"),
        (status = 400, description = "not a valid no", body = ErrorBody),
        (status = 404, description = "no such entry", body = ErrorBody),
        (status = 503, description = "the change could not be saved", body = ErrorBody)))]
async fn delete_backend(
    State(reg): State<Handle>,
    Path(NoParam { no }): Path<NoParam>,
) -> ApiResult {
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
    get_backend(State(reg), Path(NoParam { no })).await
}

/// Take no new requests; those in flight finish.
#[utoipa::path(post, path = "/api/v1/backends/{no}/drain", tag = "backends", params(NoParam),
    responses(
        (status = 200, description = "draining; the entry as it is now", body = BackendView),
        (status = 400, description = "not a valid no", body = ErrorBody),
        (status = 404, description = "no such entry", body = ErrorBody),
        (status = 503, description = "the change could not be saved", body = ErrorBody)))]
async fn drain(State(reg): State<Handle>, Path(NoParam { no }): Path<NoParam>) -> ApiResult {
    set_state(reg, no, AdminState::Draining).await
}

/// Take traffic again.
#[utoipa::path(post, path = "/api/v1/backends/{no}/enable", tag = "backends", params(NoParam),
    responses(
        (status = 200, description = "active; the entry as it is now", body = BackendView),
        (status = 400, description = "not a valid no", body = ErrorBody),
        (status = 404, description = "no such entry", body = ErrorBody),
        (status = 503, description = "the change could not be saved", body = ErrorBody)))]
async fn enable(State(reg): State<Handle>, Path(NoParam { no }): Path<NoParam>) -> ApiResult {
    set_state(reg, no, AdminState::Active).await
}

/// How many certificate pairs were loaded.
#[derive(Serialize, utoipa::ToSchema)]
struct Reloaded {
    reloaded: usize,
}

/// Read the TLS certificates again (as SIGHUP does).
#[utoipa::path(post, path = "/api/v1/tls/reload", tag = "tls",
    responses(
        (status = 200, description = "reloaded", body = Reloaded),
        (status = 404, description = "TLS is not enabled", body = ErrorBody),
        (status = 422, description = "a certificate could not be read; the previous ones are still served", body = ErrorBody)))]
async fn tls_reload(State(ctx): State<super::Ctx>) -> ApiResult {
    let Some(tls) = &ctx.tls else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "TLS is not enabled; start quayside with --tls-cert and --tls-key".into(),
        ));
    };
    match tls.reload() {
        Ok(n) => Ok(axum::Json(Reloaded { reloaded: n }).into_response()),
        Err(e) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{e}; still serving the previous certificates"),
        )),
    }
}

/// Every certificate name: the configured certificates' names and the services' host names.
#[derive(Serialize, utoipa::ToSchema)]
struct TlsView {
    /// A TLS listener serves HTTPS (certificates given, or automatic HTTPS on); without one no
    /// name is listed.
    https: bool,
    /// Automatic HTTPS is on.
    acme: bool,
    /// The ACME directory (with automatic HTTPS on).
    #[serde(skip_serializing_if = "Option::is_none")]
    directory: Option<String>,
    /// Orders issued and failed since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    orders: Option<OrdersView>,
    names: Vec<crate::acme::NameView>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct OrdersView {
    issued: u64,
    failed: u64,
}

/// The services' host names, for the certificate list.
pub(super) fn hosts(reg: &crate::registry::Registry) -> Vec<String> {
    reg.services_in_force()
        .flat_map(|(_, s)| s.hosts.iter().cloned())
        .collect()
}

/// Each name's certificate: where it comes from, its expiry, its renewal and last error.
#[utoipa::path(get, path = "/api/v1/tls", tag = "tls",
    responses((status = 200, description = "every name, sorted", body = TlsView)))]
async fn tls_names(State(ctx): State<super::Ctx>) -> ApiResult {
    let reg = ctx.registry.shared().registry.load_full();
    let hosts = hosts(&reg);
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let acme = ctx.acme.as_deref();
    Ok(axum::Json(TlsView {
        https: ctx.tls.is_some(),
        acme: acme.is_some(),
        directory: acme.map(|a| a.config.directory.clone()),
        orders: acme.map(|a| {
            let (issued, failed) = a.orders();
            OrdersView { issued, failed }
        }),
        names: crate::acme::names(&hosts, ctx.tls.as_deref(), acme),
    })
    .into_response())
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RenewQuery {
    /// Only this name (default: every name automatic HTTPS serves).
    name: Option<String>,
}

/// The names whose renewal was started.
#[derive(Serialize, utoipa::ToSchema)]
struct Renewing {
    renewing: Vec<String>,
}

/// Renew certificates from ACME now, whatever their age (within the CA's rate limits).
#[utoipa::path(post, path = "/api/v1/tls/renew", tag = "tls", params(RenewQuery),
    responses(
        (status = 202, description = "renewal started; GET /api/v1/tls shows the outcome", body = Renewing),
        (status = 404, description = "automatic HTTPS is off, or the name is not one of its names", body = ErrorBody),
        (status = 429, description = "the CA's limit of certificates for the name is reached", body = ErrorBody)))]
async fn tls_renew(
    State(ctx): State<super::Ctx>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult {
    let Some(acme) = &ctx.acme else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "automatic HTTPS is off; start quayside with --acme-email".into(),
        ));
    };
    let q = RenewQuery {
        name: form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.into_owned()),
    };
    match acme.renew(q.name.as_deref()) {
        Ok(renewing) => {
            Ok((StatusCode::ACCEPTED, axum::Json(Renewing { renewing })).into_response())
        }
        Err(e @ crate::acme::RenewError::NotOurs(_)) => {
            Err(ApiError(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ crate::acme::RenewError::Limit { .. }) => {
            Err(ApiError(StatusCode::TOO_MANY_REQUESTS, e.to_string()))
        }
    }
}

/// Where an event stream starts, from `?since=`: `now` (live events only) or an event id
/// (the kept events after it).
fn events_since(query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some((_, v)) =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).find(|(k, _)| k == "since")
    else {
        return Ok(None);
    };
    match v.trim() {
        "now" => Ok(Some(u64::MAX)),
        n => n.parse().map(Some).map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("since: must be now (live events only) or an event id, got {v:?}"),
            )
        }),
    }
}

/// Server-Sent Events: the kept events (the last 1,000) after `Last-Event-ID` or `?since=ID`,
/// all of them without either, none with `?since=now`; then each as it happens, until
/// quayside stops or the client falls behind (then it is dropped and resumes with
/// `Last-Event-ID`, which wins over `since`: a reconnecting client misses nothing).
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event id"),
        ("since" = Option<String>, Query, description = "`now`: live events only; an event id: the kept events after it")),
    responses((status = 200, description = "a stream of events, each event's data one Event",
        body = crate::registry::events::Event, content_type = "text/event-stream"),
        (status = 400, description = "since is not valid", body = ErrorBody),
        (status = 503, description = "as many event streams are open as the admin API serves", body = ErrorBody)))]
async fn events(
    State(ctx): State<super::Ctx>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    use axum::response::sse::{Event as Sse, KeepAlive};
    use futures_util::StreamExt;
    let since = match events_since(query.as_deref()) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    // Held while the stream is open.
    let Some(place) = ctx.load.event_stream() else {
        let cap = ctx.load.limits.event_streams;
        let mut resp = ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{cap} event streams are open, the most the admin API serves at once; close one and retry"),
        )
        .into_response();
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return resp;
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .or(since);
    let (backlog, rx) = ctx.registry.shared().events.subscribe(last);
    let live = futures_util::stream::unfold(
        (rx, ctx.stop.clone(), place),
        |(mut rx, mut stop, place)| async move {
            let next = tokio::select! {
                e = rx.recv() => e.ok(),
                _ = stop.wait_for(|s| *s) => None,
            };
            next.map(|e| (e, (rx, stop, place)))
        },
    );
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

/// The discovery sources of `GET /api/v1/discovery`.
#[derive(Serialize, utoipa::ToSchema)]
struct DiscoveryView<'a> {
    sources: Vec<&'a SourceStatus>,
}

/// Every discovery source's status, one shape for all (none with `--no-docker`).
#[utoipa::path(get, path = "/api/v1/discovery", tag = "discovery",
    responses((status = 200, description = "each source, its containers and why any is not routed", body = DiscoveryView)))]
async fn discovery(State(sources): State<Sources>) -> Response {
    let list = sources.list();
    let sources = list.iter().map(|s| &**s).collect();
    axum::Json(DiscoveryView { sources }).into_response()
}

/// What the request's token may do.
#[derive(Serialize, utoipa::ToSchema)]
struct AccessView {
    /// `change` (the admin token, or no tokens configured), `read` (the read token) or `none`.
    #[schema(pattern = "^(change|read|none)$")]
    access: &'static str,
    /// Who the API takes the caller for (client address and token kind).
    who: String,
}

/// What the caller's token allows, without refusing a caller that has none (the dashboard
/// asks for a token on `none` and disables its buttons on `read`).
#[utoipa::path(get, path = "/api/v1/access", tag = "access",
    responses((status = 200, description = "what the token may do", body = AccessView)))]
async fn access(axum::Extension(g): axum::Extension<super::auth::Granted>) -> Response {
    let access = match g.allows {
        Some(true) => "change",
        Some(false) => "read",
        None => "none",
    };
    axum::Json(AccessView { access, who: g.who }).into_response()
}

#[derive(Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StatsQuery {
    /// Only points after this time (seconds since the Unix epoch).
    #[param(minimum = 0)]
    since: Option<u64>,
    /// `all` (default) or `last`: each backend's newest point only (what the dashboard's rows
    /// show; the services keep their history for the charts).
    #[param(pattern = "^(all|last)$")]
    backends: Option<String>,
}

impl StatsQuery {
    /// The query's fields, each checked and named when wrong; others are ignored.
    fn parse(query: Option<&str>) -> Result<StatsQuery, ApiError> {
        let mut q = StatsQuery::default();
        let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*k {
                "since" => q.since = Some(v.parse().map_err(|_| {
                    bad(format!(
                        "since: must be a whole number of seconds since the Unix epoch, got {v:?}"
                    ))
                })?),
                "backends" if v == "all" || v == "last" => q.backends = Some(v.into_owned()),
                "backends" => return Err(bad(format!("backends: must be all or last, got {v:?}"))),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Each service's and backend's last minutes, one point a second.
#[utoipa::path(get, path = "/api/v1/stats", tag = "stats", params(StatsQuery),
    responses(
        (status = 200, description = "the points, oldest first", body = crate::stats::StatsView),
        (status = 400, description = "since or backends is not valid: which and why", body = ErrorBody)))]
async fn stats(
    State(ctx): State<super::Ctx>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult {
    let q = StatsQuery::parse(query.as_deref())?;
    let last = q.backends.as_deref() == Some("last");
    Ok(axum::Json(ctx.stats.view(q.since, last)).into_response())
}

/// Fields of a service's JSON that describe it but are not settings: `PUT` accepts them back
/// (so a `GET`'s body can be sent again) and ignores them.
const SERVICE_READ_ONLY: [&str; 3] = ["name", "settings_from", "backends"];

/// A service as `GET` shows it: its settings (the settings type itself, so every setting reads
/// back as set), its name, where the settings came from and its backends.
#[derive(Serialize)]
struct ServiceView {
    #[serde(flatten)]
    settings: ServiceConfig,
    /// The strategy when it is the default, which the settings do not write.
    #[serde(rename = "lb", skip_serializing_if = "Option::is_none")]
    default_lb: Option<crate::balance::Strategy>,
    name: String,
    /// `api` (set by `PUT`) or `labels or defaults`.
    settings_from: &'static str,
    /// The `no` of each of its entries.
    backends: Vec<String>,
}

/// [`ServiceConfig`]'s own schema (so a new setting is in it at once) with the three fields
/// that describe the service; written by hand because the settings refuse unknown fields and
/// a flattened copy would refuse these three too.
impl utoipa::PartialSchema for ServiceView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
        let RefOr::T(Schema::Object(mut obj)) = <ServiceConfig as utoipa::PartialSchema>::schema()
        else {
            unreachable!("ServiceConfig's schema is an object")
        };
        obj.additional_properties = None;
        obj.description = Some(
            "A service: its settings, its name, where the settings come from and its backends"
                .into(),
        );
        let string = || ObjectBuilder::new().schema_type(Type::String);
        obj.properties.insert("name".into(), string().into());
        obj.properties.insert(
            "settings_from".into(),
            string()
                .enum_values(Some(["api", "labels or defaults"]))
                .description(Some("`api` (set by PUT) or `labels or defaults`"))
                .into(),
        );
        obj.properties.insert(
            "backends".into(),
            ArrayBuilder::new()
                .items(string())
                .description(Some("the `no` of each of its entries"))
                .into(),
        );
        obj.required
            .extend(["name", "settings_from", "backends"].map(String::from));
        RefOr::T(Schema::Object(obj))
    }
}

impl utoipa::ToSchema for ServiceView {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <ServiceConfig as utoipa::ToSchema>::schemas(schemas);
    }
}

impl ServiceView {
    /// `whole`: the caller may read secrets (the admin token, or no tokens configured); the
    /// read token gets them redacted.
    fn new(reg: &crate::registry::Registry, name: &str, whole: bool) -> ServiceView {
        let (settings, by_operator) = reg.service_config(name);
        ServiceView {
            default_lb: settings.lb.is_default().then_some(settings.lb),
            settings: if whole { settings } else { settings.redacted() },
            name: name.to_owned(),
            settings_from: if by_operator {
                "api"
            } else {
                "labels or defaults"
            },
            backends: reg
                .entries()
                .filter(|e| e.spec.service == name)
                .map(|e| e.spec.no)
                .collect(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct ServiceList {
    services: Vec<ServiceView>,
}

/// The `{name}` of a service's path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct NameParam {
    /// The service's name: 1 to 64 of A-Z a-z 0-9 . _ -
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "web")]
    name: String,
}

/// Every service: those with backends and those with settings.
#[utoipa::path(get, path = "/api/v1/services", tag = "services",
    responses((status = 200, description = "every service", body = ServiceList)))]
async fn list_services(
    State(reg): State<Handle>,
    axum::Extension(g): axum::Extension<super::auth::Granted>,
) -> Response {
    let r = reg.registry();
    let services = r
        .service_names()
        .iter()
        .map(|n| ServiceView::new(&r, n, g.reads_secrets()))
        .collect();
    axum::Json(ServiceList { services }).into_response()
}

/// One service's rules, balancing and health settings, and its backends.
#[utoipa::path(get, path = "/api/v1/services/{name}", tag = "services", params(NameParam),
    responses(
        (status = 200, description = "the service", body = ServiceView),
        (status = 400, description = "not a valid name", body = ErrorBody),
        (status = 404, description = "no such service", body = ErrorBody)))]
async fn get_service(
    State(reg): State<Handle>,
    Path(NameParam { name }): Path<NameParam>,
    axum::Extension(g): axum::Extension<super::auth::Granted>,
) -> ApiResult {
    let name = validate::service(&name)?;
    let r = reg.registry();
    if !r.service_names().contains(&name) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            RegistryError::ServiceNotFound(name).to_string(),
        ));
    }
    Ok(axum::Json(ServiceView::new(&r, &name, g.reads_secrets())).into_response())
}

/// Set a service's settings (they win over labels until deleted). A `GET`'s body may be sent
/// back: `name` (if it agrees), `settings_from` and `backends` are ignored.
#[utoipa::path(put, path = "/api/v1/services/{name}", tag = "services", params(NameParam),
    request_body = ServiceConfig,
    responses(
        (status = 200, description = "saved; the service as it is now", body = ServiceView),
        (status = 400, description = "a field is invalid: which and why", body = ErrorBody),
        (status = 409, description = "its rules are another service's", body = ErrorBody),
        (status = 503, description = "the change could not be saved", body = ErrorBody)))]
async fn put_service(
    State(reg): State<Handle>,
    Path(NameParam { name }): Path<NameParam>,
    granted: axum::Extension<super::auth::Granted>,
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
    get_service(State(reg), Path(NameParam { name }), granted).await
}

/// Drop the settings set by `PUT` (labels and defaults apply again).
#[utoipa::path(delete, path = "/api/v1/services/{name}", tag = "services", params(NameParam),
    responses(
        (status = 204, description = "removed"),
        (status = 400, description = "not a valid name", body = ErrorBody),
        (status = 404, description = "no settings for that service", body = ErrorBody),
        (status = 503, description = "the change could not be saved", body = ErrorBody)))]
async fn delete_service(
    State(reg): State<Handle>,
    Path(NameParam { name }): Path<NameParam>,
) -> ApiResult {
    let name = validate::service(&name)?;
    reg.apply(Command::DeleteService { name }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The REST routes' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_backends,
    get_backend,
    put_backend,
    delete_backend,
    drain,
    enable,
    list_services,
    get_service,
    put_service,
    delete_service,
    discovery,
    events,
    tls_names,
    tls_reload,
    tls_renew,
    access,
    stats,
))]
pub struct Doc;
