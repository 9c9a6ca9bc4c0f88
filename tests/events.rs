//! `GET /api/v1/events`: Server-Sent Events of every routing change, read by a real HTTP
//! client as they happen, with who made each change; a client resumes with `Last-Event-ID`.

mod common;

use common::{EventStream, Http, Quayside, full, test_config};
use http::{Request, StatusCode};
use quayside::admin::Token;

const ADMIN: &str = "events-admin";
const READ: &str = "events-read";

/// The events stream, read with the read token.
async fn open(q: &Quayside, last: Option<u64>) -> EventStream {
    EventStream::open(q, READ, last).await
}

async fn admin(q: &Quayside, method: &str, path: &str) -> StatusCode {
    admin_with(q, method, path, "").await
}

async fn admin_with(q: &Quayside, method: &str, path: &str, body: &str) -> StatusCode {
    let req = Request::builder()
        .method(method)
        .uri(q.admin_url(path))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(full(body.to_owned()))
        .unwrap();
    Http::new().send(req).await.status
}

#[tokio::test]
async fn changes_stream_as_events_and_a_client_resumes() {
    let mut c = test_config();
    c.admin.token = Some(Token::new(ADMIN));
    c.admin.read_token = Some(Token::new(READ));
    let q = Quayside::start_with(c).await;
    let mut s = open(&q, None).await;
    // A port nothing listens on: requests fail, and the third failure ejects the backend.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(
        admin(&q, "GET", &format!("/add?no=e1&ip=127.0.0.1&port={dead}")).await,
        200
    );
    let (added, kind, v) = s.next().await;
    assert_eq!(kind, "added");
    assert_eq!(
        (
            v["no"].as_str(),
            v["service"].as_str(),
            v["source"].as_str()
        ),
        (Some("e1"), Some("default"), Some("manual"))
    );
    assert_eq!(v["by"], "127.0.0.1 (admin token)");
    assert!(humantime::parse_rfc3339(v["time"].as_str().unwrap()).is_ok());
    assert_eq!(admin(&q, "POST", "/api/v1/backends/e1/drain").await, 200);
    let (_, kind, v) = s.next().await;
    assert_eq!(
        (kind.as_str(), v["reason"].as_str()),
        ("drained", Some("state active -> draining"))
    );
    assert_eq!(admin(&q, "POST", "/api/v1/backends/e1/enable").await, 200);
    assert_eq!(s.next().await.1, "enabled");
    let http = Http::new();
    for _ in 0..3 {
        assert_eq!(
            http.get(&q.proxy_url("/")).await.status,
            StatusCode::BAD_GATEWAY
        );
    }
    let (_, kind, v) = s.next().await;
    assert_eq!(kind, "ejected", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("could not connect"),
        "{v}"
    );
    assert!(v.get("by").is_none(), "{v}");
    assert_eq!(admin(&q, "DELETE", "/api/v1/backends/e1").await, 204);
    let (removed, kind, _) = s.next().await;
    assert_eq!(kind, "removed");
    // Resuming after the first event gives the rest, in order, then live ones.
    let mut again = open(&q, Some(added)).await;
    let mut kinds = Vec::new();
    loop {
        let (id, kind, _) = again.next().await;
        kinds.push(kind);
        if id == removed {
            break;
        }
    }
    assert_eq!(kinds, ["drained", "enabled", "ejected", "removed"]);
    assert_eq!(
        admin(&q, "GET", &format!("/add?no=e2&ip=127.0.0.1&port={dead}")).await,
        200
    );
    let (id, kind, _) = again.next().await;
    assert_eq!((id, kind.as_str()), (removed + 1, "added"));
    // A service's settings: set (with what), changed, removed; each with who did it.
    let body = r#"{"path_prefix": "/api", "lb": "round_robin"}"#;
    assert_eq!(
        admin_with(&q, "PUT", "/api/v1/services/web", body).await,
        200
    );
    let (_, kind, v) = again.next().await;
    assert_eq!(
        (kind.as_str(), v["service"].as_str(), v["no"].as_str()),
        ("service_set", Some("web"), Some("")),
        "{v}"
    );
    assert_eq!(v["source"], "manual");
    assert_eq!(v["by"], "127.0.0.1 (admin token)");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("\"path_prefix\":\"/api\""),
        "{v}"
    );
    // The same settings again change nothing, so no event: the next one is the removal.
    assert_eq!(
        admin_with(&q, "PUT", "/api/v1/services/web", body).await,
        200
    );
    assert_eq!(admin(&q, "DELETE", "/api/v1/services/web").await, 204);
    let (_, kind, v) = again.next().await;
    assert_eq!(
        (kind.as_str(), v["service"].as_str()),
        ("service_removed", Some("web")),
        "{v}"
    );
    // Without a token: 401 (the read token is enough, as above).
    let r = Http::new().get(&q.admin_url("/api/v1/events")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // `?since=now`: live events only, none of the kept ones; `?since=ID` as Last-Event-ID,
    // which wins over it (a reconnecting client misses nothing).
    let mut live = EventStream::open_at(&q, READ, "/api/v1/events?since=now", None).await;
    let mut after =
        EventStream::open_at(&q, READ, &format!("/api/v1/events?since={added}"), None).await;
    let mut resumed =
        EventStream::open_at(&q, READ, "/api/v1/events?since=now", Some(removed)).await;
    assert_eq!(after.next().await.1, "drained");
    assert_eq!(resumed.next().await.0, removed + 1);
    assert_eq!(admin(&q, "DELETE", "/api/v1/backends/e2").await, 204);
    let (_, kind, v) = live.next().await;
    assert_eq!(
        (kind.as_str(), v["no"].as_str()),
        ("removed", Some("e2")),
        "{v}"
    );
    let r = Http::new()
        .send(
            Request::get(q.admin_url("/api/v1/events?since=yesterday"))
                .header("authorization", format!("Bearer {READ}"))
                .body(full(""))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("since: must be now"), "{}", r.body);
}
