//! The dashboard at `/dashboard/`: one page, its script, style sheet and icon, embedded in the
//! binary (no network, no CDN, no build step). The files load without a token; the page asks
//! the API for everything with the token it keeps in `sessionStorage`.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::{Access, Route};

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");
const FAVICON: &str = include_str!("dashboard/favicon.svg");

/// The page takes scripts, styles and data from the admin API only, and is never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Vec<Route> {
    vec![
        Route::new("/", "GET", get(to_dashboard)).access(Access::Open),
        Route::new("/dashboard", "GET", get(to_dashboard_slash)).access(Access::Open),
        Route::new("/dashboard/", "GET", get(index)).access(Access::Open),
        Route::new("/dashboard/{file}", "GET", get(file)).access(Access::Open),
    ]
}

/// To the dashboard.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 303, description = "to /dashboard/")))]
async fn to_dashboard() -> Redirect {
    Redirect::to("/dashboard/")
}

/// Redirects to the dashboard, so `/dashboard` works too.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    responses((status = 303, description = "to /dashboard/")))]
async fn to_dashboard_slash() -> Redirect {
    Redirect::to("/dashboard/")
}

/// The dashboard's page.
#[utoipa::path(get, path = "/dashboard/", tag = "dashboard",
    responses((status = 200, description = "the page", body = String, content_type = "text/html")))]
async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

/// The page's script, style sheet and icon.
#[utoipa::path(get, path = "/dashboard/{file}", tag = "dashboard",
    params(("file" = String, Path, description = "app.js, style.css or favicon.svg")),
    responses(
        (status = 200, description = "the file", content(
            (String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml"))),
        (status = 404, description = "no such file", body = String, content_type = "text/plain")))]
async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => serve("text/javascript; charset=utf-8", APP_JS),
        "style.css" => serve("text/css; charset=utf-8", STYLE),
        "favicon.svg" => serve("image/svg+xml", FAVICON),
        _ => (
            StatusCode::NOT_FOUND,
            format!("no dashboard file {name:?}; it has app.js, style.css and favicon.svg\n"),
        )
            .into_response(),
    }
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // The files change with the binary: always asked again (they are small).
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(to_dashboard, to_dashboard_slash, index, file))]
pub struct Doc;
