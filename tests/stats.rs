//! `GET /api/v1/stats` (the dashboard's figures): requests through the proxy show up as points
//! per backend and per service, once a second, with their errors and latency; `since` returns
//! only newer points. `GET /api/v1/access` says what a token may do without refusing it. The
//! dashboard's files load without a token, under a strict Content-Security-Policy.

mod common;

use common::{Backend, Http, Quayside, eventually, test_config};
use quayside::admin::Token;
use serde_json::Value;

async fn stats(q: &Quayside, query: &str) -> Value {
    let r = Http::new()
        .get(&q.admin_url(&format!("/api/v1/stats{query}")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// Sum of `field` over the points of the series named `key` = `name` in `list`.
fn sum(v: &Value, list: &str, key: &str, name: &str, field: &str) -> u64 {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[key] == name)
        .flat_map(|s| s["points"].as_array().unwrap().iter())
        .map(|p| p[field].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn requests_become_points_per_backend_and_service() {
    let q = Quayside::start().await;
    let (b1, b2) = (Backend::start("b1").await, Backend::start("b2").await);
    let http = Http::new();
    for (no, b) in [("s1", &b1), ("s2", &b2)] {
        let url = format!("/add?no={no}&ip=127.0.0.1&port={}&service=shop", b.port());
        assert_eq!(http.get(&q.admin_url(&url)).await.status, 200);
    }
    let r = http
        .method(
            "PUT",
            &q.admin_url("/api/v1/services/shop"),
            r#"{"hosts": ["shop.test"]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Both backends get points before any traffic (zeros).
    let v = eventually(5, "points for both backends", || async {
        let v = stats(&q, "").await;
        let n = v["backends"]
            .as_array()?
            .iter()
            .filter(|b| b["service"] == "shop")
            .count();
        (n == 2).then_some(v)
    })
    .await;
    assert_eq!(v["interval_seconds"], 1);
    assert_eq!(v["window_seconds"], 300);
    for _ in 0..30 {
        assert_eq!(
            http.get_host(&q.proxy_url("/"), "shop.test").await.status,
            200
        );
    }
    for _ in 0..10 {
        let r = http
            .get_host(&q.proxy_url("/status?code=503"), "shop.test")
            .await;
        assert_eq!(r.status, 503);
    }
    let v = eventually(10, "40 requests in the points", || async {
        let v = stats(&q, "").await;
        (sum(&v, "services", "name", "shop", "requests") == 40).then_some(v)
    })
    .await;
    assert_eq!(sum(&v, "services", "name", "shop", "errors"), 10);
    let per_backend =
        sum(&v, "backends", "no", "s1", "requests") + sum(&v, "backends", "no", "s2", "requests");
    assert_eq!(
        per_backend, 40,
        "the backends' points add up to the service's"
    );
    assert!(
        sum(&v, "backends", "no", "s1", "requests") > 0
            && sum(&v, "backends", "no", "s2", "requests") > 0,
        "round robin reached both"
    );
    let busy: Vec<&Value> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "shop")
        .flat_map(|s| s["points"].as_array().unwrap())
        .filter(|p| p["requests"].as_u64() > Some(0))
        .collect();
    for p in &busy {
        assert!(p["p50_ms"].as_f64().is_some_and(|x| x > 0.0), "{p}");
        assert!(p["p99_ms"].as_f64() >= p["p50_ms"].as_f64(), "{p}");
        assert!(p["rps"].as_f64().is_some_and(|x| x > 0.0), "{p}");
    }
    // `since`: only newer points.
    let last = v["services"][0]["points"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["t"]
        .as_u64()
        .unwrap();
    let newer = stats(&q, &format!("?since={last}")).await;
    for s in newer["services"].as_array().unwrap() {
        for p in s["points"].as_array().unwrap() {
            assert!(p["t"].as_u64().unwrap() > last, "{p}");
        }
    }
    // `backends=last`: each backend's newest point only; the services keep their history.
    let last = stats(&q, "?backends=last").await;
    for b in last["backends"].as_array().unwrap() {
        assert!(b["points"].as_array().unwrap().len() <= 1, "{b}");
    }
    let shop = |v: &Value| {
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "shop")
            .map(|s| s["points"].as_array().unwrap().len())
    };
    assert!(shop(&last) >= shop(&v), "the services' points stay whole");
    for (query, field) in [("since=yesterday", "since"), ("backends=some", "backends")] {
        let r = http
            .get(&q.admin_url(&format!("/api/v1/stats?{query}")))
            .await;
        assert_eq!(r.status, 400);
        assert!(r.body.contains(&format!("\"{field}: ")), "{}", r.body);
    }
    // A removed backend loses its series.
    assert_eq!(http.get(&q.admin_url("/delete?no=s2")).await.status, 200);
    eventually(5, "s2's series gone", || async {
        let v = stats(&q, "").await;
        (!v["backends"].as_array()?.iter().any(|b| b["no"] == "s2")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn access_says_what_a_token_may_do() {
    let access = |q: &Quayside, token: Option<&'static str>| {
        let url = q.admin_url("/api/v1/access");
        async move {
            let mut req = http::Request::get(url);
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let r = Http::new().send(req.body(common::full("")).unwrap()).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let v: Value = serde_json::from_str(&r.body).unwrap();
            v["access"].as_str().unwrap().to_owned()
        }
    };
    let open = Quayside::start().await;
    assert_eq!(access(&open, None).await, "change");
    let mut config = test_config();
    config.admin.token = Some(Token::new("acc-admin"));
    config.admin.read_token = Some(Token::new("acc-read"));
    let q = Quayside::start_with(config).await;
    assert_eq!(access(&q, None).await, "none");
    assert_eq!(access(&q, Some("guess")).await, "none");
    assert_eq!(access(&q, Some("acc-read")).await, "read");
    assert_eq!(access(&q, Some("acc-admin")).await, "change");
}

#[tokio::test]
async fn the_dashboards_files_load_without_a_token_under_a_strict_policy() {
    let mut config = test_config();
    config.admin.token = Some(Token::new("files-admin"));
    let q = Quayside::start_with(config).await;
    let http = Http::new();
    let r = http.get(&q.admin_url("/")).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.headers["location"], "/dashboard/");
    for (path, kind) in [
        ("/dashboard/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
        ("/dashboard/favicon.svg", "image/svg+xml"),
    ] {
        let r = http.get(&q.admin_url(path)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let got = r.headers["content-type"].to_str().unwrap();
        assert!(got.starts_with(kind), "{path}: {got}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!r.body.is_empty(), "{path}");
    }
    let r = http.get(&q.admin_url("/dashboard/nope.js")).await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("app.js"), "{}", r.body);
    // The data is not open: the page sends the token for it.
    let r = http.get(&q.admin_url("/api/v1/stats")).await;
    assert_eq!(r.status, 401);
}
