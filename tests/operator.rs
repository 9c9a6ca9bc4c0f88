//! What an operator does lasts and does what it says: pins keep their service, path prefixes
//! match whole segments, durations are bounded, services read back as set, one Host per
//! request, admin errors name what exists, start-up errors are one line. Real sockets, real
//! quayside, real backends on loopback.

mod common;

use std::process::Command;

use common::{Backend, Http, Quayside, full};
use http::{Request, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

async fn put(http: &Http, url: &str, body: &str) -> (StatusCode, Value) {
    let r = http.method("PUT", url, body).await;
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        json(&r.body)
    };
    (r.status, v)
}

#[tokio::test]
async fn add_without_service_keeps_the_service_of_the_entry_it_replaces() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    let (st, _) = put(
        &http,
        &q.admin_url("/api/v1/services/api"),
        r#"{"hosts":["api.test"]}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let add = |no: &str, port: u16, extra: &str| {
        q.admin_url(&format!("/add?no={no}&ip=127.0.0.1&port={port}{extra}"))
    };
    assert_eq!(
        http.get(&add("x", a.port(), "&service=api")).await.status,
        StatusCode::OK
    );
    // Re-pointed by the seed API without service=: still in api, still routed for api.test.
    assert_eq!(
        http.get(&add("x", b.port(), "")).await.status,
        StatusCode::OK
    );
    let r = http.get(&q.admin_url("/get?no=x")).await;
    assert!(r.body.contains("service: api\n"), "{}", r.body);
    assert!(
        r.body.contains(&format!("port: {}\n", b.port())),
        "{}",
        r.body
    );
    let r = http.get_host(&q.proxy_url("/"), "api.test").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "b\n"));
    // The same through PUT /api/v1/backends/{no} without "service".
    let (st, v) = put(
        &http,
        &q.admin_url("/api/v1/backends/x"),
        &format!(r#"{{"address":"127.0.0.1","port":{}}}"#, a.port()),
    )
    .await;
    assert_eq!((st, v["service"].as_str()), (StatusCode::OK, Some("api")));
    // Naming a service still moves it.
    assert_eq!(
        http.get(&add("x", a.port(), "&service=default"))
            .await
            .status,
        StatusCode::OK
    );
    let r = http.get(&q.admin_url("/get?no=x")).await;
    assert!(r.body.contains("service: default\n"), "{}", r.body);
    // A new entry without service= goes to default, as before.
    assert_eq!(
        http.get(&add("y", a.port(), "")).await.status,
        StatusCode::OK
    );
    let r = http.get(&q.admin_url("/get?no=y")).await;
    assert!(r.body.contains("service: default\n"), "{}", r.body);
}

#[tokio::test]
async fn a_path_prefix_matches_whole_segments_only() {
    let docs = Backend::start("docs").await;
    let other = Backend::start("other").await;
    let q = Quayside::start().await;
    let http = Http::new();
    let (st, v) = put(
        &http,
        &q.admin_url("/api/v1/services/docs"),
        r#"{"path_prefix":"/docs","strip_prefix":true}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = http
        .get(&q.admin_url(&format!(
            "/add?no=d&ip=127.0.0.1&port={}&service=docs",
            docs.port()
        )))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    q.add("o", &other).await;
    for (path, name, seen) in [
        ("/docs", "docs", "/"),
        ("/docs/", "docs", "/"),
        ("/docs/a/b", "docs", "/a/b"),
        ("/docs?q=1", "docs", "/"),
        ("/docsx", "other", "/docsx"),
        ("/docs.html", "other", "/docs.html"),
    ] {
        let r = http.get(&q.proxy_url(path)).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (StatusCode::OK, format!("{name}\n").as_str()),
            "{path}"
        );
        assert_eq!(r.headers["x-seen-path"], seen, "{path}");
    }
}

#[tokio::test]
async fn durations_out_of_range_are_refused_and_name_the_field() {
    let q = Quayside::start().await;
    let http = Http::new();
    let url = q.admin_url("/api/v1/services/x");
    let cases = [
        (r#"{"slow_start":"5124095576030432h"}"#, "slow_start"),
        (r#"{"slow_start":"25h"}"#, "slow_start"),
        (r#"{"slow_start":"0ms"}"#, "slow_start"),
        (r#"{"slow_start":99999999999}"#, "slow_start"),
        (
            r#"{"health":{"path":"/h","interval":"307445734561825861m"}}"#,
            "health.interval",
        ),
        (
            r#"{"health":{"path":"/h","interval":"1s","timeout":"2s"}}"#,
            "health.timeout",
        ),
    ];
    for (body, field) in cases {
        let (st, v) = put(&http, &url, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.starts_with(field), "{body}: {msg}");
    }
    // Nothing was created by the refused calls.
    let r = http.get(&url).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // A short interval without a timeout gets a timeout no longer than itself.
    let (st, v) = put(
        &http,
        &url,
        r#"{"health":{"path":"/h","interval":"500ms"}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["health"]["timeout"], "500ms");
}

#[test]
fn a_duration_flag_out_of_range_is_a_one_line_start_up_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
        .args(["--no-docker", "--connect-timeout", "5124095576030432h"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--connect-timeout") && err.contains("from 1ms to 24h"),
        "{err}"
    );
}

#[tokio::test]
async fn a_service_reads_back_every_setting_and_a_put_of_it_changes_nothing() {
    let q = Quayside::start().await;
    let http = Http::new();
    let url = q.admin_url("/api/v1/services/api");
    let given = json!({
        "hosts": ["api.test", "*.api.test"],
        "path_prefix": "/v1",
        "strip_prefix": true,
        "lb": "hash",
        "hash_key": "header:X-User",
        "sticky_cookie": "sid",
        "health": {"path": "/health", "interval": "3s", "timeout": "1500ms", "rise": 4, "fall": 5},
        "slow_start": "30s",
        "protocol": "h2c"
    });
    let (st, v) = put(&http, &url, &given.to_string()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let got = json(&http.get(&url).await.body);
    for (k, want) in given.as_object().unwrap() {
        let want = if k == "hosts" {
            json!(["*.api.test", "api.test"]) // normalised: sorted
        } else {
            want.clone()
        };
        assert_eq!(got[k], want, "{k} reads back as {}", got[k]);
    }
    assert_eq!(got["name"], "api");
    assert_eq!(got["settings_from"], "api");
    // PUT of what GET returned changes nothing.
    let (st, again) = put(&http, &url, &got.to_string()).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again, got);
    // Even for the default service and its defaults.
    let d = json(
        &http
            .get(&q.admin_url("/api/v1/services/default"))
            .await
            .body,
    );
    let (st, again) = put(
        &http,
        &q.admin_url("/api/v1/services/default"),
        &d.to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["lb"], d["lb"]);
    // A name that disagrees with the URL is refused, naming the field.
    let (st, v) = put(&http, &url, r#"{"name":"other"}"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().starts_with("name:"), "{v}");
}

/// Two services told apart by host, each with a backend that reports the Host it saw.
async fn two_hosts() -> (Quayside, Backend, Backend) {
    let public = Backend::start("public").await;
    let internal = Backend::start("internal").await;
    let q = Quayside::start().await;
    let http = Http::new();
    for (name, b) in [("public", &public), ("internal", &internal)] {
        let (st, v) = put(
            &http,
            &q.admin_url(&format!("/api/v1/services/{name}")),
            &format!(r#"{{"hosts":["{name}.test"]}}"#),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let r = http
            .get(&q.admin_url(&format!(
                "/add?no={name}&ip=127.0.0.1&port={}&service={name}",
                b.port()
            )))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    (q, public, internal)
}

/// Send `head` raw and read the whole answer (the request asks to close).
async fn raw(q: &Quayside, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    common::read_to_close(&mut s).await
}

#[tokio::test]
async fn one_host_per_request_on_http1() {
    let (q, public, internal) = two_hosts().await;
    for head in [
        // Two Hosts, in either order, equal or not.
        "GET /c HTTP/1.1\r\nHost: public.test\r\nHost: internal.test\r\nConnection: close\r\n\r\n",
        "GET /c HTTP/1.1\r\nHost: internal.test\r\nHost: public.test\r\nConnection: close\r\n\r\n",
        "GET /c HTTP/1.1\r\nHost: public.test\r\nHost: public.test\r\nConnection: close\r\n\r\n",
        // Not a host.
        "GET /c HTTP/1.1\r\nHost: public.test internal.test\r\nConnection: close\r\n\r\n",
        "GET /c HTTP/1.1\r\nHost: user@public.test\r\nConnection: close\r\n\r\n",
        // HTTP/1.1 without Host.
        "GET /c HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw(&q, head).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?} -> {answer}");
    }
    assert_eq!(
        public.hits.load(std::sync::atomic::Ordering::SeqCst)
            + internal.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a refused request reached a backend"
    );
    // Absolute form: the target decides the host, and the backend is told that host.
    let answer = raw(
        &q,
        "GET http://internal.test/c HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("internal\n"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-seen-host: internal.test\r\n"),
        "{answer}"
    );
    // The plain case still works, on the fast path.
    let answer = raw(
        &q,
        "GET /c HTTP/1.1\r\nHost: Public.test:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with("public\n"), "{answer}");
}

#[tokio::test]
async fn one_host_per_request_on_http2() {
    let (q, public, _internal) = two_hosts().await;
    // hyper's own HTTP/2 connection over a plain TCP stream: no name lookup of the test hosts.
    let stream = tokio::net::TcpStream::connect(q.proxy).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let send = |uri: String, host: Option<&'static str>| {
        let mut sender = sender.clone();
        async move {
            let mut req = Request::get(uri);
            if let Some(h) = host {
                req = req.header("host", h);
            }
            let resp = sender
                .send_request(req.body(full("")).unwrap())
                .await
                .unwrap();
            let seen = resp.headers().get("x-seen-host").cloned();
            (resp.status(), seen)
        }
    };
    let port = q.proxy.port();
    // :authority decides and becomes Host.
    let (st, seen) = send(format!("http://public.test:{port}/"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(seen.unwrap(), format!("public.test:{port}").as_str());
    // A Host header naming another host than :authority is refused.
    let hits = public.hits.load(std::sync::atomic::Ordering::SeqCst);
    let (st, _) = send(format!("http://public.test:{port}/"), Some("internal.test")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(public.hits.load(std::sync::atomic::Ordering::SeqCst), hits);
}

#[tokio::test]
async fn admin_not_found_and_wrong_method_name_what_exists() {
    let q = Quayside::start().await;
    let http = Http::new();
    let r = http.get(&q.admin_url("/nothing-here")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for (path, _, _) in quayside::admin::route_list() {
        assert!(r.body.contains(path), "404 lacks {path}: {}", r.body);
    }
    let r = http
        .method("DELETE", &q.admin_url("/api/v1/backends"), "")
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.body.contains("GET"), "{}", r.body);
    let r = http.get(&q.admin_url("/api/v1/tls/reload")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.body.contains("POST"), "{}", r.body);
    // Every route takes the methods it lists and answers 405 to the others.
    for (path, methods, _) in quayside::admin::route_list() {
        let path = path.replace("{no}", "nope").replace("{name}", "nope");
        for method in ["GET", "POST", "PUT", "DELETE"] {
            let r = http.method(method, &q.admin_url(&path), "{}").await;
            // A route's own 404 ("no backend with no=nope") is fine; the router's fallback is not.
            assert!(
                !r.body.contains("the admin API has"),
                "{method} {path}: {}",
                r.body
            );
            let listed = methods.split(", ").any(|m| m == method);
            assert_eq!(
                r.status == StatusCode::METHOD_NOT_ALLOWED,
                !listed,
                "{method} {path} ({methods}): {} {}",
                r.status,
                r.body
            );
        }
    }
}

#[test]
fn start_up_errors_are_one_line_without_a_backtrace() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("qs-oneline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let state = state.to_str().unwrap();
    for (args, says) in [
        (
            vec!["--listen", addr.as_str(), "--admin-listen", "127.0.0.1:0"],
            "--listen",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--docker-host",
                "ssh://me@host",
            ],
            "ssh://me@host",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--no-docker",
                "--state",
                "/proc/quayside-nope/state.json",
            ],
            "/proc/quayside-nope/state.json",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            // (Logs at their default level: nothing is said before the refusal, e.g. that a
            // listener was bound.)
            .env_remove("QUAYSIDE_LOG")
            .env("QUAYSIDE_STATE", state)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("quayside: error: ") && err.contains(says),
            "{err}"
        );
        assert!(
            !err.contains("backtrace") && !err.contains("Caused by"),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `:PORT` listens on every address, IPv4 clients included and seen by their IPv4 address;
/// `localhost:PORT` on loopback; and a refused address says the forms it takes.
// (Several threads: the backend answers while the test waits on curl.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_addresses_as_go_tools_and_traefik_write_them() {
    let backend = Backend::start("b").await;
    let p = common::binary::Proc::spawn_on(":0", ":0", &["--admin-token", "listen-token"]);
    let proxy = p.addr("proxy listening");
    let admin = p.addr("admin API listening");
    assert!(proxy.starts_with("[::]:"), "{proxy}");
    let (proxy_port, admin_port) = (
        proxy.rsplit(':').next().unwrap(),
        admin.rsplit(':').next().unwrap(),
    );
    let curl = |url: String| {
        let out = Command::new("curl")
            .args(["-s", "-H", "Authorization: Bearer listen-token", &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for host in ["127.0.0.1", "[::1]"] {
        // (No backend: 503, from the proxy itself.)
        let body = curl(format!("http://{host}:{proxy_port}/"));
        assert!(body.contains("no backend"), "{host}: {body}");
    }
    // The backend is told each client by its own address: an IPv4 one as IPv4, not as
    // `::ffff:127.0.0.1`.
    let add = format!(
        "http://127.0.0.1:{admin_port}/add?no=b&ip=127.0.0.1&port={}",
        backend.port()
    );
    assert_eq!(curl(add), "OK\n");
    for (host, seen) in [("127.0.0.1", "127.0.0.1"), ("[::1]", "::1")] {
        let out = Command::new("curl")
            .args(["-s", "-D", "-", "-o", "/dev/null"])
            .arg(format!("http://{host}:{proxy_port}/"))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            head.contains(&format!("x-seen-xff: {seen}\r\n")),
            "{host}: {head}"
        );
    }
    let who = curl(format!("http://127.0.0.1:{admin_port}/api/v1/access"));
    assert!(who.contains("\"who\":\"127.0.0.1 (admin token)\""), "{who}");
    let who = curl(format!("http://[::1]:{admin_port}/api/v1/access"));
    assert!(who.contains("\"who\":\"::1 (admin token)\""), "{who}");
    drop(p);
    let p = common::binary::Proc::spawn_on("localhost:0", "localhost:0", &[] as &[&str]);
    assert!(p.addr("proxy listening").starts_with("127.0.0.1:"));
    assert!(p.addr("admin API listening").starts_with("127.0.0.1:"));
    drop(p);
    for flag in ["--listen", "--admin-listen", "--tls-listen"] {
        let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
            .args([flag, "localhost"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(flag) && err.contains(":PORT for every address"),
            "{err}"
        );
    }
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let p = common::binary::Proc::spawn(&["--log-format", "json"]);
    let line = p.wait_for("admin API listening", std::time::Duration::from_secs(10));
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO", "{line}");
    assert_eq!(v["fields"]["message"], "admin API listening", "{line}");
    let admin = v["fields"]["addr"].as_str().unwrap().to_owned();
    assert!(admin.starts_with("127.0.0.1:"), "{line}");
    // A change through the admin API is logged with who made it.
    let add = std::process::Command::new("curl")
        .args([
            "-sf",
            &format!("http://{admin}/add?no=w1&ip=127.0.0.1&port=9"),
        ])
        .output()
        .unwrap();
    assert!(add.status.success(), "{add:?}");
    let line = p.wait_for(
        "routing changed by hand",
        std::time::Duration::from_secs(10),
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (v["fields"]["kind"].as_str(), v["fields"]["no"].as_str()),
        (Some("added"), Some("w1")),
        "{line}"
    );
    assert_eq!(v["fields"]["by"], "127.0.0.1 (no token)", "{line}");
}

#[test]
fn state_export_and_import_move_the_state_between_files() {
    let dir = std::env::temp_dir().join(format!("quayside-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (from, to, backup) = (
        dir.join("a.json"),
        dir.join("b.json"),
        dir.join("backup.json"),
    );
    let quayside = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_quayside"))
            .args(args)
            .output()
            .unwrap()
    };
    let p = common::binary::Proc::spawn(&["--state", from.to_str().unwrap()]);
    let admin = p.addr("admin API listening");
    for url in [
        format!("http://{admin}/add?no=e1&ip=127.0.0.1&port=9"),
        format!("http://{admin}/api/v1/backends/e1/drain"),
    ] {
        let method = if url.ends_with("drain") {
            "POST"
        } else {
            "GET"
        };
        let out = std::process::Command::new("curl")
            .args(["-sf", "-X", method, &url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{url}: {out:?}");
    }
    // (Killed: the changes are in the journal only; export reads both.)
    drop(p);
    let out = quayside(&[
        "--state",
        from.to_str().unwrap(),
        "state",
        "export",
        backup.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    // (It holds what the state file holds: readable by its owner only.)
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&backup).unwrap();
    assert!(
        text.contains("\"no\":\"e1\"") && text.contains("\"state\":\"draining\""),
        "{text}"
    );
    let out = quayside(&[
        "--state",
        to.to_str().unwrap(),
        "state",
        "import",
        backup.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let p = common::binary::Proc::spawn(&["--state", to.to_str().unwrap()]);
    let admin = p.addr("admin API listening");
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{admin}/get?no=e1")])
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(got.contains("state: draining"), "{got}");
    drop(p);
    // A bad file is refused in one line naming it and the field, and changes nothing.
    std::fs::write(
        &backup,
        r#"{"version":1,"backends":[{"no":"e 2","address":"127.0.0.1","port":9}]}"#,
    )
    .unwrap();
    let out = quayside(&[
        "--state",
        to.to_str().unwrap(),
        "state",
        "import",
        backup.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("backup.json: backends[0]: no:"), "{err}");
    let out = quayside(&["--state", to.to_str().unwrap(), "state", "export"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"no\":\"e1\""));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Booleans given as text read one way: `QUAYSIDE_NO_DOCKER=on` and `--no-docker=YES` are
/// true (they were refused before), and anything else is a one-line error naming the setting
/// and the words it takes.
#[test]
fn boolean_settings_read_one_way() {
    for (env, arg) in [
        ("on", None),
        ("1", None),
        ("false", Some("--no-docker=YES")),
    ] {
        let mut p = Command::new(env!("CARGO_BIN_EXE_quayside"));
        p.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(arg)
            .env("QUAYSIDE_NO_DOCKER", env)
            .env(
                "QUAYSIDE_STATE",
                std::env::temp_dir().join(format!("quayside-bool-{}", std::process::id())),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = p.spawn().unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let said_off = loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut err, &mut line).unwrap() == 0 {
                break false;
            }
            seen.push_str(&line);
            if line.contains("Docker discovery is off") {
                break true;
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(said_off, "QUAYSIDE_NO_DOCKER={env} {arg:?}: {seen}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
        .env("QUAYSIDE_NO_DOCKER", "disabled")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--no-docker") && err.contains("true/false, yes/no, on/off or 1/0"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("quayside-bool-{}", std::process::id())),
    );
}

/// The default strategy is not written into the state (so a better default reaches services
/// that never chose), yet `GET` shows it as the service's `lb` all the same.
#[tokio::test]
async fn a_service_shows_its_default_strategy() {
    let q = Quayside::start().await;
    let http = Http::new();
    let url = q.admin_url("/api/v1/services/plain");
    let (st, v) = put(&http, &url, r#"{"hosts": ["plain.test"]}"#).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let got: serde_json::Value = serde_json::from_str(&http.get(&url).await.body).unwrap();
    assert_eq!(got["lb"], "round_robin", "{got}");
    let listed: serde_json::Value =
        serde_json::from_str(&http.get(&q.admin_url("/api/v1/services")).await.body).unwrap();
    assert_eq!(listed["services"][0]["lb"], "round_robin", "{listed}");
}
