//! The seed's walkthrough and every bad-input case of the text API, over real sockets.

mod common;

use common::{Backend, Http, Quayside};
use http::StatusCode;

#[tokio::test]
async fn seed_walkthrough() {
    let test1 = Backend::start("test1").await;
    let test2 = Backend::start("test2").await;
    let q = Quayside::start().await;
    let http = Http::new();

    let r = http
        .get(&q.admin_url(&format!("/add?no=1&ip=127.0.0.1&port={}", test1.port())))
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "OK\n"));
    let r = http.get(&q.admin_url("/get?no=1")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.starts_with(&format!(
            "ip: 127.0.0.1\nport: {}\nservers: 1\n",
            test1.port()
        )),
        "{}",
        r.body
    );
    assert!(r.body.contains("source: manual\n"));
    assert!(r.body.contains("state: active\n"));

    // POST works like GET.
    let r = http
        .method(
            "POST",
            &q.admin_url(&format!("/add?no=2&ip=127.0.0.1&port={}", test2.port())),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = http.get(&q.admin_url("/get?no=2")).await;
    assert!(r.body.contains("servers: 2\n"), "{}", r.body);

    // Equal backends alternate exactly.
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = http.get(&q.proxy_url("/test")).await;
        assert_eq!(r.status, StatusCode::OK);
        seen.push(r.body.trim().to_owned());
    }
    for pair in seen.chunks(2) {
        assert_ne!(pair[0], pair[1], "not alternating: {seen:?}");
    }
    assert_eq!(seen.iter().filter(|s| *s == "test1").count(), 5);

    let r = http.get(&q.admin_url("/delete?no=1")).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "OK\n"));
    let r = http.get(&q.admin_url("/get?no=1")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, "no backend with no=1\n");
    let r = http.get(&q.admin_url("/get?no=2")).await;
    assert!(r.body.contains("servers: 1\n"), "{}", r.body);

    // The seed's stale count gave 500s here; every request must now reach test2.
    for _ in 0..10 {
        let r = http.get(&q.proxy_url("/test")).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "test2\n"));
    }
    assert_eq!(test1.hits.load(std::sync::atomic::Ordering::SeqCst), 5);

    // Same `no` again replaces the entry.
    http.get(&q.admin_url(&format!("/add?no=2&ip=127.0.0.1&port={}", test1.port())))
        .await;
    let r = http.get(&q.proxy_url("/test")).await;
    assert_eq!(r.body, "test1\n");
}

#[tokio::test]
async fn bad_input_is_rejected_and_changes_nothing() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    let ok = format!("/add?no=keep&ip=127.0.0.1&port={}", b.port());
    assert_eq!(http.get(&q.admin_url(&ok)).await.status, StatusCode::OK);
    let before = http.get(&q.admin_url("/api/v1/backends")).await.body;

    let cases: &[(&str, u16, &str)] = &[
        ("/add", 400, "usage: /add?ip=x.x.x.x&port=xx&no=xx"),
        ("/add?no=1&ip=127.0.0.1", 400, "missing: port"),
        ("/add?no=1&port=80", 400, "missing: ip"),
        ("/add?ip=127.0.0.1&port=80", 400, "missing: no"),
        (
            "/add?no=keep&ip=127.0.0.1&port=99999",
            400,
            "port: must be 1-65535, got 99999",
        ),
        (
            "/add?no=keep&ip=127.0.0.1&port=0",
            400,
            "port: must be 1-65535, got 0",
        ),
        (
            "/add?no=keep&ip=127.0.0.1&port=http",
            400,
            "port: must be 1-65535, got http",
        ),
        (
            "/add?no=keep&ip=backend.local&port=80",
            400,
            "ip: must be an IPv4 or IPv6 address, got host name",
        ),
        (
            "/add?no=keep&ip=999.1.1.1&port=80",
            400,
            "ip: must be an IPv4 or IPv6 address",
        ),
        (
            "/add?no=keep&ip=&port=80",
            400,
            "ip: must be an IPv4 or IPv6 address",
        ),
        (
            "/add?no=&ip=127.0.0.1&port=80",
            400,
            "no: must be 1-64 characters",
        ),
        (
            "/add?no=a%2Fb&ip=127.0.0.1&port=80",
            400,
            "no: may only contain",
        ),
        (
            "/add?no=keep&ip=127.0.0.1&port=80&weight=0",
            400,
            "weight: must be 1-1000, got 0",
        ),
        (
            "/add?no=keep&ip=127.0.0.1&port=80&weight=5000",
            400,
            "weight: must be 1-1000, got 5000",
        ),
        (
            "/add?no=keep&ip=127.0.0.1&port=80&service=a%20b",
            400,
            "service: may only contain",
        ),
        (
            "/add?no=keep&ip=127.0.0.1&port=80&wieght=2",
            400,
            "wieght: unknown parameter",
        ),
        (
            "/add?no=keep&no=x&ip=127.0.0.1&port=80",
            400,
            "no: given more than once",
        ),
        ("/get", 400, "usage: /get?no=xx"),
        ("/get?no=", 400, "no: must be 1-64 characters"),
        ("/get?no=nope", 404, "no backend with no=nope"),
        ("/delete", 400, "usage: /delete?no=xx"),
        ("/delete?no=nope", 404, "no backend with no=nope"),
        ("/nothing-here", 404, "not found"),
    ];
    for (path, status, text) in cases {
        let r = http.get(&q.admin_url(path)).await;
        assert_eq!(r.status.as_u16(), *status, "{path}: {}", r.body);
        assert!(r.body.contains(text), "{path}: {:?} lacks {text:?}", r.body);
    }
    let after = http.get(&q.admin_url("/api/v1/backends")).await.body;
    assert_eq!(before, after, "a rejected request changed the registry");
    // Traffic still flows to the one good entry.
    assert_eq!(http.get(&q.proxy_url("/")).await.body, "b\n");
}

#[tokio::test]
async fn admin_paths_on_the_proxy_port_are_just_forwarded() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    http.get(&q.admin_url(&format!("/add?no=1&ip=127.0.0.1&port={}", b.port())))
        .await;
    let r = http.get(&q.proxy_url("/delete?no=1")).await;
    assert_eq!(r.body, "b\n");
    assert_eq!(r.headers["x-seen-path"], "/delete");
    // Still registered.
    assert_eq!(
        http.get(&q.admin_url("/get?no=1")).await.status,
        StatusCode::OK
    );
    assert_eq!(http.get(&q.admin_url("/healthz")).await.body, "ok\n");
}
