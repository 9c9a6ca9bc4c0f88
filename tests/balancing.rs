//! Balancing strategies, health and retries through the real proxy with real backends.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::eventually;
use common::{Backend, Http, Quayside};
use http::StatusCode;
use serde_json::Value;

async fn add(http: &Http, q: &Quayside, no: &str, port: u16, weight: u32) {
    let r = http
        .get(&q.admin_url(&format!(
            "/add?no={no}&ip=127.0.0.1&port={port}&weight={weight}"
        )))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn set_service(http: &Http, q: &Quayside, body: &str) {
    let r = http
        .method("PUT", &q.admin_url("/api/v1/services/default"), body)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{body}: {}", r.body);
}

async fn backend_json(http: &Http, q: &Quayside, no: &str) -> Value {
    serde_json::from_str(
        &http
            .get(&q.admin_url(&format!("/api/v1/backends/{no}")))
            .await
            .body,
    )
    .unwrap()
}

/// Send `n` requests from `clients` concurrent clients; returns hits per body.
async fn load(q: &Quayside, clients: usize, n: usize) -> HashMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url) = (Http::new(), q.proxy_url("/"));
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..n / clients {
                let r = http.get(&url).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                seen.push(r.body.trim().to_owned());
            }
            seen
        }));
    }
    let mut counts = HashMap::new();
    for t in tasks {
        for s in t.await.unwrap() {
            *counts.entry(s).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_spreads_equal_backends() {
    // Equal backends with a real service time (10 ms), as in production: with instant
    // loopback answers a single scheduling hiccup of a debug build on a busy 2-core box
    // would be the only latency signal, and p2c would rightly avoid that backend for
    // seconds (peak EWMA). Here six clients keep in-flight counts up, so p2c and
    // least_conn must spread by load.
    let delay = Duration::from_millis(10);
    let bs = [
        Backend::start_slow("a", delay).await,
        Backend::start_slow("b", delay).await,
        Backend::start_slow("c", delay).await,
    ];
    let q = Quayside::start().await;
    let http = Http::new();
    for b in &bs {
        add(&http, &q, &b.name, b.port(), 1).await;
    }
    const N: usize = 420;
    for lb in ["round_robin", "random", "least_conn", "p2c"] {
        set_service(&http, &q, &format!(r#"{{"lb":"{lb}"}}"#)).await;
        let c = load(&q, 6, N).await;
        eprintln!("{lb}: {c:?}");
        let range = match lb {
            "p2c" | "least_conn" => 0.15..0.55,
            _ => 0.2..0.47,
        };
        for b in &bs {
            let share = c.get(&b.name).copied().unwrap_or(0) as f64 / N as f64;
            assert!(range.contains(&share), "{lb}: {c:?}");
        }
    }
}

#[tokio::test]
async fn weights_hold_for_random_and_round_robin() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    add(&http, &q, "a", a.port(), 3).await;
    add(&http, &q, "b", b.port(), 1).await;
    for lb in ["round_robin", "random"] {
        set_service(&http, &q, &format!(r#"{{"lb":"{lb}"}}"#)).await;
        let c = load(&q, 1, 800).await;
        let share = c["a"] as f64 / 800.0;
        assert!((share - 0.75).abs() < 0.06, "{lb}: {c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_and_least_conn_send_less_to_a_slow_backend() {
    let fast1 = Backend::start("fast1").await;
    let fast2 = Backend::start("fast2").await;
    let slow = Backend::start_slow("slow", Duration::from_millis(40)).await;
    let q = Quayside::start().await;
    let http = Http::new();
    for b in [&fast1, &fast2, &slow] {
        add(&http, &q, &b.name, b.port(), 1).await;
    }
    let mut shares = Vec::new();
    for lb in ["round_robin", "p2c", "least_conn"] {
        set_service(&http, &q, &format!(r#"{{"lb":"{lb}"}}"#)).await;
        let c = load(&q, 8, 480).await;
        shares.push((lb, c.get("slow").copied().unwrap_or(0) as f64 / 480.0));
    }
    eprintln!("share of the slow backend: {shares:?}");
    assert!((shares[0].1 - 1.0 / 3.0).abs() < 0.03, "{shares:?}");
    assert!(shares[1].1 < 0.15, "p2c: {shares:?}");
    assert!(shares[2].1 < 0.15, "least_conn: {shares:?}");
}

#[tokio::test]
async fn hash_keeps_a_key_on_one_backend_and_moves_few_on_removal() {
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let q = Quayside::start().await;
    let http = Http::new();
    for b in &bs {
        add(&http, &q, &b.name, b.port(), 1).await;
    }
    set_service(&http, &q, r#"{"lb":"hash","hash_key":"header:X-User"}"#).await;
    let owner = |user: String| {
        let (http, url) = (http.clone(), q.proxy_url("/"));
        async move {
            let req = http::Request::get(url)
                .header("x-user", user)
                .body(common::full(""))
                .unwrap();
            http.send(req).await.body.trim().to_owned()
        }
    };
    let mut before = HashMap::new();
    for u in 0..60 {
        let o = owner(format!("user-{u}")).await;
        for _ in 0..3 {
            assert_eq!(owner(format!("user-{u}")).await, o, "user-{u} moved");
        }
        before.insert(u, o);
    }
    let used: std::collections::HashSet<&String> = before.values().collect();
    assert_eq!(used.len(), 3, "keys not spread: {before:?}");
    // Remove c: only its users move.
    http.get(&q.admin_url("/delete?no=c")).await;
    for (u, o) in &before {
        let now = owner(format!("user-{u}")).await;
        if o != "c" {
            assert_eq!(&now, o, "user-{u} moved although its backend stayed");
        } else {
            assert_ne!(now, "c");
        }
    }
    // Without the header the client IP is the key: one backend for this client.
    set_service(&http, &q, r#"{"lb":"hash"}"#).await;
    let c = load(&q, 1, 20).await;
    assert_eq!(c.len(), 1, "{c:?}");
}

#[tokio::test]
async fn sticky_cookie_pins_a_client() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    add(&http, &q, "a", a.port(), 1).await;
    add(&http, &q, "b", b.port(), 1).await;
    set_service(&http, &q, r#"{"sticky_cookie":"sid"}"#).await;
    let r = http.get(&q.proxy_url("/")).await;
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_owned();
    let first = r.body.clone();
    assert!(
        cookie.starts_with(&format!("sid={}", first.trim())),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..6 {
        let req = http::Request::get(q.proxy_url("/"))
            .header("cookie", &pair)
            .body(common::full(""))
            .unwrap();
        let r = http.send(req).await;
        assert_eq!(r.body, first);
        assert!(!r.headers.contains_key("set-cookie"));
    }
    // A cookie naming no routed backend: balanced as usual, and told the one that answered.
    let req = http::Request::get(q.proxy_url("/"))
        .header("cookie", "other=1; sid=gone")
        .body(common::full(""))
        .unwrap();
    let r = http.send(req).await;
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with(&format!("sid={};", r.body.trim())),
        "{cookie}"
    );
}

/// A service that removes the backends' `Set-Cookie` (a response header edit) still tells the
/// client its sticky backend, on both fronts alike: the edit is the backend's, the cookie the
/// proxy's.
#[tokio::test]
async fn a_sticky_cookie_outlives_a_response_edit_of_set_cookie_on_both_fronts() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    add(&http, &q, "a", a.port(), 1).await;
    add(&http, &q, "b", b.port(), 1).await;
    let settings = r#"{"sticky_cookie":"sid","headers":{"response":{"Set-Cookie":""}}}"#;
    set_service(&http, &q, settings).await;
    // HTTP/1.1: the fast path.
    let r = http.get(&q.proxy_url("/")).await;
    let cookie = r
        .headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        cookie.is_some_and(|c| c.starts_with("sid=")),
        "{:?}",
        r.headers
    );
    // HTTP/2 (h2c): hyper's side.
    let resp = common::h2_client()
        .request(
            http::Request::get(q.proxy_url("/"))
                .body(common::full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        cookie.is_some_and(|c| c.starts_with("sid=")),
        "{:?}",
        resp.headers()
    );
}

#[tokio::test]
async fn passive_health_ejects_a_failing_backend_and_takes_it_back() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let good = Backend::start("good").await;
    let q = Quayside::start().await;
    let http = Http::new();
    add(&http, &q, "flaky", port, 1).await;
    add(&http, &q, "good", good.port(), 1).await;
    // No client sees the failures: requests are retried on `good`.
    for _ in 0..10 {
        let r = http.get(&q.proxy_url("/")).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "good\n"));
    }
    let v = backend_json(&http, &q, "flaky").await;
    assert_eq!(v["health"]["available"], false, "{v}");
    assert!(v["health"]["failures"].as_u64().unwrap() >= 3, "{v}");
    // It comes back: after the cooldown a trial request succeeds.
    let back = Backend::start_with("flaky", port, Duration::ZERO).await;
    eventually(10, "flaky back in rotation", || async {
        http.get(&q.proxy_url("/")).await;
        (back.hits.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let v = backend_json(&http, &q, "flaky").await;
    assert_eq!(v["health"]["available"], true, "{v}");
}

#[tokio::test]
async fn active_health_checks_take_backends_out_and_back() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    add(&http, &q, "a", a.port(), 1).await;
    add(&http, &q, "b", b.port(), 1).await;
    set_service(
        &http,
        &q,
        r#"{"health":{"path":"/health","interval":"100ms","timeout":"100ms","rise":2,"fall":2}}"#,
    )
    .await;
    a.healthy.store(false, Ordering::SeqCst);
    eventually(5, "a marked down", || async {
        let v = backend_json(&http, &q, "a").await;
        (v["health"]["active"]["up"] == false).then_some(())
    })
    .await;
    let c = load(&q, 1, 10).await;
    assert_eq!(c.get("a"), None, "{c:?}");
    // Both down: 503 that says so.
    b.healthy.store(false, Ordering::SeqCst);
    eventually(5, "all down", || async {
        let r = http.get(&q.proxy_url("/")).await;
        (r.status == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await;
    let r = http.get(&q.proxy_url("/")).await;
    assert!(
        r.body.contains("all backends of service default are down"),
        "{}",
        r.body
    );
    a.healthy.store(true, Ordering::SeqCst);
    b.healthy.store(true, Ordering::SeqCst);
    eventually(5, "a back", || async {
        (http.get(&q.proxy_url("/")).await.body == "a\n").then_some(())
    })
    .await;
    let v = backend_json(&http, &q, "a").await;
    assert!(
        v["health"]["active"]["probes"].as_u64().unwrap() >= 4,
        "{v}"
    );
    assert!(v["health"]["requests"].as_u64().unwrap() >= 1, "{v}");
}

#[tokio::test]
async fn bad_strategy_settings_are_refused() {
    let q = Quayside::start().await;
    let http = Http::new();
    for (body, text) in [
        (
            r#"{"lb":"hash","hash_key":"body"}"#,
            "hash_key: must be client_ip",
        ),
        (
            r#"{"health":{"path":"health"}}"#,
            "health.path: must start with '/'",
        ),
        (
            r#"{"health":{"path":"/h","rise":0}}"#,
            "rise and fall must be 1-100",
        ),
        (
            r#"{"health":{"path":"/h","interval":"soon"}}"#,
            "health.interval",
        ),
        (r#"{"slow_start":"0s"}"#, "slow_start"),
        (
            r#"{"sticky_cookie":"a b"}"#,
            "sticky_cookie: may only contain",
        ),
    ] {
        let r = http
            .method("PUT", &q.admin_url("/api/v1/services/default"), body)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert!(r.body.contains(text), "{body}: {}", r.body);
    }
}
