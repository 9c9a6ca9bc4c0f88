//! The admin API locked down: tokens on every route (walked from the router's own list, so a
//! route added later cannot be forgotten), names other than addresses and localhost refused
//! (DNS rebinding), cross-site changes refused (CSRF), and a start beyond loopback without a
//! token refused.

mod common;

use std::process::Command;

use common::{Quayside, test_config};
use http::{Method, Request, StatusCode};
use quayside::admin::Access;
use quayside::admin::Token;

const ADMIN: &str = "admin-secret-1";
const READ: &str = "read-secret-1";

async fn start() -> Quayside {
    let mut c = test_config();
    c.admin.token = Some(Token::new(ADMIN));
    c.admin.read_token = Some(Token::new(READ));
    c.admin.hosts = vec!["quayside.internal".into()];
    Quayside::start_with(c).await
}

/// Send `method path` with `headers`; status, `WWW-Authenticate` and body.
async fn send(
    q: &Quayside,
    method: &Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(q.admin_url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<common::BoxBody>();
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.request(req.body(common::full("")).unwrap()),
    )
    .await
    .expect("an answer")
    .unwrap();
    let auth = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = resp.status();
    // An event stream does not end: its head is the answer.
    if resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "text/event-stream")
    {
        return (status, auth, String::new());
    }
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, auth, String::from_utf8_lossy(&body).into_owned())
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test]
async fn every_route_needs_the_right_token() {
    let q = start().await;
    let mut checked = 0;
    for (pattern, methods, access) in quayside::admin::route_list() {
        let path = pattern
            .replace("{no}", "nope")
            .replace("{name}", "nope")
            .replace("{file}", "app.js");
        for m in methods.split(", ") {
            let method: Method = m.parse().unwrap();
            let access = access.unwrap_or_else(|| Access::of_method(&method));
            let what = format!("{m} {path} ({access:?})");
            let none = send(&q, &method, &path, &[]).await;
            let wrong = send(&q, &method, &path, &[("authorization", &bearer("guess"))]).await;
            let read = send(&q, &method, &path, &[("authorization", &bearer(READ))]).await;
            let full = send(&q, &method, &path, &[("authorization", &bearer(ADMIN))]).await;
            if access == Access::Open {
                assert!(
                    none.0.is_success() || none.0.is_redirection(),
                    "{what}: {none:?}"
                );
                continue;
            }
            for (got, who) in [(&none, "no token"), (&wrong, "a wrong token")] {
                assert_eq!(
                    got.0,
                    StatusCode::UNAUTHORIZED,
                    "{what} with {who}: {got:?}"
                );
                assert_eq!(
                    got.1.as_deref(),
                    Some("Bearer realm=\"quayside admin\""),
                    "{what}"
                );
            }
            // Each says what was wrong: nothing sent, or a token that is not one of ours.
            assert!(none.2.contains("needs a token"), "{what}: {}", none.2);
            assert!(
                none.2.contains("Authorization: Bearer"),
                "{what}: {}",
                none.2
            );
            assert!(
                wrong
                    .2
                    .contains("neither the admin token nor the read token"),
                "{what}: {}",
                wrong.2
            );
            match access {
                Access::Read => assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&read.0),
                    "{what} with the read token: {read:?}"
                ),
                _ => {
                    assert_eq!(read.0, StatusCode::FORBIDDEN, "{what}: {read:?}");
                    assert!(read.2.contains("read-only token"), "{what}: {}", read.2);
                }
            }
            assert!(
                ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&full.0),
                "{what} with the admin token: {full:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 16, "only {checked} route methods checked");
    // The seed API's GET /add changes routing: the read token may not, the admin token may.
    let add = "/add?no=1&ip=127.0.0.1&port=9";
    let r = send(&q, &Method::GET, add, &[("authorization", &bearer(READ))]).await;
    assert_eq!(r.0, StatusCode::FORBIDDEN, "{r:?}");
    let read_get = || async {
        let auth = bearer(READ);
        send(&q, &Method::GET, "/get?no=1", &[("authorization", &auth)])
            .await
            .0
    };
    assert_eq!(
        read_get().await,
        StatusCode::NOT_FOUND,
        "a refused /add changed nothing"
    );
    let r = send(&q, &Method::GET, add, &[("authorization", &bearer(ADMIN))]).await;
    assert_eq!(r.0, StatusCode::OK, "{r:?}");
    assert_eq!(read_get().await, StatusCode::OK);
    // An unknown path needs a token too (its 404 lists the routes).
    let r = send(&q, &Method::GET, "/nowhere", &[]).await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED, "{r:?}");
    // A header that is not a bearer token is told so.
    let basic = [("authorization", "Basic dXNlcjpwYXNz")];
    let r = send(&q, &Method::GET, "/api/v1/backends", &basic).await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED, "{r:?}");
    assert!(r.2.contains("not a bearer token"), "{r:?}");
}

#[tokio::test]
async fn names_other_than_localhost_and_configured_ones_are_refused() {
    let q = start().await;
    let auth = bearer(ADMIN);
    for (host, ok) in [
        ("evil.example", false),
        ("evil.example:8001", false),
        ("localhost.evil.example", false),
        ("localhost:8001", true),
        ("quayside.internal:8001", true),
        ("127.0.0.1:8001", true),
        ("[::1]:8001", true),
    ] {
        for path in ["/healthz", "/api/v1/backends"] {
            let r = send(
                &q,
                &Method::GET,
                path,
                &[("host", host), ("authorization", &auth)],
            )
            .await;
            if ok {
                assert_eq!(r.0, StatusCode::OK, "{host} {path}: {r:?}");
            } else {
                assert_eq!(r.0, StatusCode::FORBIDDEN, "{host} {path}: {r:?}");
                assert!(r.2.contains("--admin-host"), "{}", r.2);
            }
        }
    }
}

#[tokio::test]
async fn changes_a_browser_marks_as_cross_site_are_refused() {
    // Without tokens (loopback): the browser is the threat.
    let q = Quayside::start().await;
    let add = "/add?no=csrf&ip=127.0.0.1&port=9";
    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
    ] {
        for method in [Method::GET, Method::POST] {
            let r = send(&q, &method, add, &headers).await;
            assert_eq!(r.0, StatusCode::FORBIDDEN, "{method} {headers:?}: {r:?}");
            assert!(r.2.contains("cross-site"), "{}", r.2);
        }
        let r = send(&q, &Method::DELETE, "/api/v1/backends/x", &headers).await;
        assert_eq!(r.0, StatusCode::FORBIDDEN, "{headers:?}: {r:?}");
        assert!(r.2.contains("\"error\""), "REST errors stay JSON: {}", r.2);
    }
    let r = send(&q, &Method::GET, "/get?no=csrf", &[]).await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "nothing was added: {r:?}");
    // Reading cross-site is not a change; curl (no such headers) and the API's own origin
    // change as before.
    let r = send(
        &q,
        &Method::GET,
        "/get?no=csrf",
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "{r:?}");
    let own = format!("http://{}", q.admin);
    let r = send(
        &q,
        &Method::GET,
        add,
        &[("origin", &own), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{r:?}");
    let r = send(&q, &Method::GET, "/delete?no=csrf", &[]).await;
    assert_eq!(r.0, StatusCode::OK, "{r:?}");
}

#[test]
fn an_admin_listener_beyond_loopback_without_a_token_refuses_to_start() {
    // (`:0` is every address, IPv6 and IPv4, as `--listen :PORT` writes it.)
    for (admin, said) in [("0.0.0.0:0", "0.0.0.0:0"), (":0", "[::]:0")] {
        let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
            .args([
                "--no-docker",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                admin,
            ])
            .env_remove("QUAYSIDE_ADMIN_TOKEN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("{said} without a token"))
                && err.contains("--admin-token")
                && err.contains("--admin-insecure"),
            "{err}"
        );
    }
    // A token given in a file (a Docker secret) lets it start; so does the explicit opt-out.
    let dir = std::env::temp_dir().join(format!("quayside-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "from-a-file\n").unwrap();
    for args in [
        vec!["--admin-token-file", file.to_str().unwrap()],
        vec!["--admin-insecure"],
    ] {
        let mut p = common::binary::Proc::spawn_with_admin("0.0.0.0:0", &args);
        let line = p.wait_for("admin API", std::time::Duration::from_secs(10));
        assert!(line.contains("0.0.0.0:"), "{args:?}: {line}");
        if args[0] == "--admin-insecure" {
            p.wait_for("without a token", std::time::Duration::from_secs(5));
        }
        p.stop();
    }
    // An empty token file is a start-up error naming it.
    std::fs::write(&file, "\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
        .args(["--no-docker", "--admin-token-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin_token") && err.contains("empty"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
