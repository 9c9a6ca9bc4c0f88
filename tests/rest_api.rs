//! The JSON REST API: backends, drain/enable, services and routing rules.

mod common;

use common::{Backend, Http, Quayside};
use http::StatusCode;
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn backends_crud_and_errors() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    let url = q.admin_url("/api/v1/backends/web-1");

    let r = http
        .method(
            "PUT",
            &url,
            &format!(
                r#"{{"address":"127.0.0.1","port":{},"weight":3}}"#,
                b.port()
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = json(&r.body);
    assert_eq!(v["no"], "web-1");
    assert_eq!(v["weight"], 3);
    assert_eq!(v["service"], "default");
    assert_eq!(v["source"], "manual");
    assert_eq!(v["endpoint"], Value::Null);
    assert_eq!(v["state"], "active");
    // Without Docker, no discovery source.
    let d = json(&http.get(&q.admin_url("/api/v1/discovery")).await.body);
    assert_eq!(d, serde_json::json!({ "sources": [] }));

    let list = json(&http.get(&q.admin_url("/api/v1/backends")).await.body);
    assert_eq!(list["backends"].as_array().unwrap().len(), 1);

    let bad: &[(&str, u16, &str)] = &[
        ("{", 400, "invalid JSON body"),
        (r#"{"address":"127.0.0.1"}"#, 400, "missing field `port`"),
        (
            r#"{"address":"127.0.0.1","port":99999}"#,
            400,
            "port: must be 1-65535, got 99999",
        ),
        (
            r#"{"address":"127.0.0.1","port":80,"weight":0}"#,
            400,
            "weight: must be 1-1000",
        ),
        (
            r#"{"address":"db","port":80}"#,
            400,
            "address: must be an IPv4 or IPv6 address",
        ),
        (
            r#"{"address":"127.0.0.1","port":80,"colour":1}"#,
            400,
            "unknown field `colour`",
        ),
        (
            r#"{"address":"127.0.0.1","port":[1]}"#,
            400,
            "port: must be a string or number",
        ),
        (
            r#"{"address":"127.0.0.1","port":80,"state":"asleep"}"#,
            400,
            "state: must be active, draining or disabled",
        ),
    ];
    for (body, status, text) in bad {
        let r = http.method("PUT", &url, body).await;
        assert_eq!(r.status.as_u16(), *status, "{body}: {}", r.body);
        let v = json(&r.body);
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(text), "{body}: {msg:?} lacks {text:?}");
    }
    let r = http
        .method(
            "PUT",
            &q.admin_url(&format!("/api/v1/backends/{}", "x".repeat(65))),
            r#"{"address":"127.0.0.1","port":80}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        json(&r.body)["error"]
            .as_str()
            .unwrap()
            .starts_with("no: must be 1-64")
    );
    // The good entry is unchanged.
    assert_eq!(json(&http.get(&url).await.body)["weight"], 3);

    let r = http.get(&q.admin_url("/api/v1/backends/missing")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(json(&r.body)["error"], "no backend with no=missing");
    let r = http
        .method("POST", &q.admin_url("/api/v1/backends/missing/drain"), "")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = http.method("DELETE", &url, "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = http.method("DELETE", &url, "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = http.get(&q.proxy_url("/")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn drain_stops_new_requests_and_lets_in_flight_finish() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    for (no, be) in [("a", &a), ("b", &b)] {
        http.get(&q.admin_url(&format!("/add?no={no}&ip=127.0.0.1&port={}", be.port())))
            .await;
    }
    // First pick is `a`: start a slow request on it.
    let slow = {
        let http = http.clone();
        let url = q.proxy_url("/slow?ms=800");
        tokio::spawn(async move { http.get(&url).await })
    };
    common::eventually(5, "the slow request reached a", || async {
        (a.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    let r = http
        .method("POST", &q.admin_url("/api/v1/backends/a/drain"), "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(json(&r.body)["state"], "draining");
    assert!(
        http.get(&q.admin_url("/get?no=a"))
            .await
            .body
            .contains("state: draining")
    );
    for _ in 0..6 {
        assert_eq!(http.get(&q.proxy_url("/")).await.body, "b\n");
    }
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (StatusCode::OK, "a\n"));

    let r = http
        .method("POST", &q.admin_url("/api/v1/backends/a/enable"), "")
        .await;
    assert_eq!(json(&r.body)["state"], "active");
    let mut bodies: Vec<String> = Vec::new();
    for _ in 0..4 {
        bodies.push(http.get(&q.proxy_url("/")).await.body);
    }
    assert_eq!(
        bodies.iter().filter(|b| *b == "a\n").count(),
        2,
        "{bodies:?}"
    );
}

#[tokio::test]
async fn services_route_by_host_wildcard_and_path() {
    let web = Backend::start("web").await;
    let api = Backend::start("api").await;
    let wild = Backend::start("wild").await;
    let stat = Backend::start("static").await;
    let q = Quayside::start().await;
    let http = Http::new();
    for (no, be, svc) in [
        ("web", &web, "default"),
        ("api", &api, "api"),
        ("wild", &wild, "wild"),
        ("st", &stat, "static"),
    ] {
        let r = http
            .get(&q.admin_url(&format!(
                "/add?no={no}&ip=127.0.0.1&port={}&service={svc}",
                be.port()
            )))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let put = |name: &str, body: &str| {
        let http = http.clone();
        let url = q.admin_url(&format!("/api/v1/services/{name}"));
        let body = body.to_owned();
        async move { http.method("PUT", &url, &body).await }
    };
    assert_eq!(
        put("api", r#"{"hosts":["api.example.com"]}"#).await.status,
        StatusCode::OK
    );
    assert_eq!(
        put("wild", r#"{"hosts":["*.example.com"]}"#).await.status,
        StatusCode::OK
    );
    let r = put("static", r#"{"path_prefix":"/static","strip_prefix":true}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let r = http.get_host(&q.proxy_url("/x"), "api.example.com").await;
    assert_eq!(r.body, "api\n");
    assert_eq!(r.headers["x-seen-host"], "api.example.com");
    let r = http
        .get_host(&q.proxy_url("/x"), "API.example.com:8080")
        .await;
    assert_eq!(r.body, "api\n");
    assert_eq!(
        http.get_host(&q.proxy_url("/x"), "shop.example.com")
            .await
            .body,
        "wild\n"
    );
    assert_eq!(
        http.get_host(&q.proxy_url("/x"), "example.org").await.body,
        "web\n"
    );
    let r = http
        .get_host(&q.proxy_url("/static/app.css?v=1"), "example.org")
        .await;
    assert_eq!(r.body, "static\n");
    assert_eq!(r.headers["x-seen-path"], "/app.css");

    // Conflicts and bad rules are refused with the reason.
    let r = put("other", r#"{"hosts":["api.example.com"]}"#).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.body.contains("service api already claims host"),
        "{}",
        r.body
    );
    let r = put("other", r#"{"hosts":["bad host"]}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("hosts: must be a host name"), "{}", r.body);
    let r = put("other", r#"{"lb":"fastest"}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("lb: unknown variant"), "{}", r.body);
    let r = put("default", r#"{"hosts":["x.example.com"]}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A service with rules but no backend answers 503 naming it; it does not fall back.
    http.get(&q.admin_url("/delete?no=api")).await;
    let r = http.get_host(&q.proxy_url("/"), "api.example.com").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("service api"), "{}", r.body);

    let list = json(&http.get(&q.admin_url("/api/v1/services")).await.body);
    let names: Vec<&str> = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"api") && names.contains(&"default"),
        "{names:?}"
    );
    assert_eq!(
        http.method("DELETE", &q.admin_url("/api/v1/services/wild"), "")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        http.get_host(&q.proxy_url("/x"), "shop.example.com")
            .await
            .body,
        "web\n"
    );
}

#[tokio::test]
async fn weights_are_honoured_over_a_cycle() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let q = Quayside::start().await;
    let http = Http::new();
    for (no, be, w) in [("a", &a, 5), ("b", &b, 1), ("c", &c, 1)] {
        http.get(&q.admin_url(&format!(
            "/add?no={no}&ip=127.0.0.1&port={}&weight={w}",
            be.port()
        )))
        .await;
    }
    let mut seq = String::new();
    for _ in 0..14 {
        seq.push_str(http.get(&q.proxy_url("/")).await.body.trim());
    }
    assert_eq!(seq, "aabacaaaabacaa");
}
