//! Where routing, middlewares and the backend meet: what a request claims cannot get past a
//! rule, however it is spelled, on every front. Each test sends the same requests three ways —
//! HTTP/1.1 the fast path takes, HTTP/1.1 it leaves to hyper's side (a `Connection` that names
//! a header of its own), and HTTP/2 (h2c) — and an observer checks which front answered, so
//! each front is shown to do the work itself.

mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use common::{Backend, Http, Quayside, full, test_config};
use http::{HeaderMap, Request};
use http_body_util::BodyExt as _;
use quayside::proxy::plan::{Front, Observe, Record};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How a request is sent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    /// HTTP/1.1 the fast path takes.
    Fast,
    /// HTTP/1.1 the fast path leaves to hyper's side.
    H1Hyper,
    /// HTTP/2 with prior knowledge.
    H2,
}

const WAYS: [Way; 3] = [Way::Fast, Way::H1Hyper, Way::H2];

impl Way {
    fn front(self) -> Front {
        if self == Way::Fast {
            Front::Fast
        } else {
            Front::Hyper
        }
    }
}

/// A request's record: its front, service, status and client address.
type Seen = (Front, String, u16, Option<IpAddr>);

/// Each request's record, by request id.
#[derive(Default)]
struct Records(Mutex<Vec<(String, Seen)>>);

impl Observe for Records {
    fn request(&self, r: &Record<'_>) {
        let service = r.service.map(|s| s.name.clone()).unwrap_or_default();
        let id = r.meta.map(|m| m.request_id.to_owned()).unwrap_or_default();
        let client = r.meta.map(|m| m.client);
        self.0
            .lock()
            .unwrap()
            .push((id, (r.front, service, r.status, client)));
    }

    fn details(&self) -> bool {
        true
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
    /// The request's id (the observer's record is found by it).
    id: String,
}

/// One request to `host` for `target` (sent as it is, byte for byte), with `headers`, on a new
/// connection.
async fn ask(q: &Quayside, way: Way, host: &str, target: &str, headers: &[(&str, &str)]) -> Answer {
    let id = format!(
        "seams-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut tcp = tokio::net::TcpStream::connect(q.proxy).await.unwrap();
    if way == Way::H2 {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(host)
            .path_and_query(target)
            .build()
            .unwrap();
        let mut b = Request::get(uri).header("x-request-id", &id);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let resp = send.send_request(b.body(full("")).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        return Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            id,
        };
    }
    let mut raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Request-Id: {id}\r\n");
    raw.push_str(if way == Way::Fast {
        "Connection: close\r\n"
    } else {
        // A Connection that names a header of its own: the fast path leaves it to hyper.
        "Connection: close, x-hop\r\nX-Hop: 1\r\n"
    });
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    tcp.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut buf),
    )
    .await
    .expect("answer in time")
    .unwrap();
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut slots);
    let n = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("{other:?}: {}", String::from_utf8_lossy(&buf)),
    };
    let mut map = HeaderMap::new();
    for h in resp.headers.iter() {
        map.append(
            http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(h.value).unwrap(),
        );
    }
    Answer {
        status: resp.code.unwrap(),
        headers: map,
        body: String::from_utf8_lossy(&buf[n..]).into_owned(),
        id,
    }
}

impl Records {
    /// The record of request `id`, once it is in: its front, service, status and client.
    async fn of(&self, id: &str) -> Seen {
        common::eventually(5, "the request's record", || {
            let found = self
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.0 == id)
                .map(|r| r.1.clone());
            async move { found }
        })
        .await
    }
}

async fn put_service(q: &Quayside, name: &str, body: serde_json::Value) -> serde_json::Value {
    let r = Http::new()
        .method(
            "PUT",
            &q.admin_url(&format!("/api/v1/services/{name}")),
            &body.to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{name}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

async fn add(q: &Quayside, no: &str, b: &Backend, service: &str) {
    let url = format!(
        "/add?no={no}&ip=127.0.0.1&port={}&service={service}",
        b.port()
    );
    let r = Http::new().get(&q.admin_url(&url)).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn start(trusted: &[&str]) -> (Quayside, Arc<Records>) {
    let records = Arc::new(Records::default());
    let mut c = test_config();
    c.proxy.observer = Some(records.clone());
    c.proxy.trusted_proxies = trusted
        .iter()
        .map(|t| quayside::types::Cidr::parse(t).unwrap())
        .collect();
    (Quayside::start_with(c).await, records)
}

fn basic(user_pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

/// `/secret` is guarded by basic auth; each spelling of it the issue found routed to
/// `default` (answered 200 without credentials, the raw path forwarded) reaches the guard on
/// every front, and the backend gets the one normalised path.
#[tokio::test]
async fn a_path_rule_cannot_be_walked_around() {
    let (q, records) = start(&[]).await;
    let (guarded, open, api) = (
        Backend::start("guarded").await,
        Backend::start("open").await,
        Backend::start("api").await,
    );
    let hash = bcrypt::hash("pw", 4).unwrap();
    put_service(
        &q,
        "secret",
        serde_json::json!({"path_prefix": "/secret", "basic_auth": [format!("alice:{hash}")]}),
    )
    .await;
    put_service(
        &q,
        "api",
        serde_json::json!({"path_prefix": "/api", "strip_prefix": true}),
    )
    .await;
    add(&q, "guarded-1", &guarded, "secret").await;
    add(&q, "api-1", &api, "api").await;
    add(&q, "open-1", &open, "default").await;
    let creds = basic("alice:pw");

    for way in WAYS {
        for spelling in [
            "/secret/x",
            "//secret/x",
            "/%73ecret/x",
            "/./secret/x",
            "/x/../secret/x",
            "/%2e/secret/x",
            "/%2fsecret/x",
            "/x/..;/secret/x",
            "/secret;a=b/x",
            "/SECRET/../secret/x",
        ] {
            let a = ask(&q, way, "app.test", spelling, &[]).await;
            assert_eq!(a.status, 401, "{way:?} {spelling}: {}", a.body);
            assert_eq!(
                records.of(&a.id).await,
                (way.front(), "secret".into(), 401, Some(ip("127.0.0.1"))),
                "{way:?} {spelling}"
            );
            let a = ask(&q, way, "app.test", spelling, &[("authorization", &creds)]).await;
            assert_eq!(a.status, 200, "{way:?} {spelling}: {}", a.body);
            assert_eq!(a.body, "guarded\n", "{way:?} {spelling}");
            // The backend gets the normalised path: an encoded slash stays encoded, and path
            // parameters stay the client's.
            let want = match spelling {
                "/%2fsecret/x" => "/%2Fsecret/x",
                "/x/..;/secret/x" => "/x/..;/secret/x",
                "/secret;a=b/x" => "/secret;a=b/x",
                _ => "/secret/x",
            };
            assert_eq!(a.headers["x-seen-path"], want, "{way:?} {spelling}");
        }
        // A query is kept as it was; the path before it is normalised.
        let a = ask(
            &q,
            way,
            "app.test",
            "//open/./a?x=/../%2e",
            &[("x-tag", "q")],
        )
        .await;
        assert_eq!(a.status, 200, "{way:?}");
        assert_eq!(a.headers["x-seen-path"], "/open/a", "{way:?}");
        // `strip_prefix` works on the normalised path.
        let a = ask(&q, way, "app.test", "/%61pi//v1/./x", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "api\n"), "{way:?}");
        assert_eq!(a.headers["x-seen-path"], "/v1/x", "{way:?}");
        // What the rule refuses is a 400, on every front, and nothing is forwarded.
        for bad in ["/a/../../secret/x", "/%2e%2e/secret", "/a%00b", "/a%zz"] {
            let a = ask(&q, way, "app.test", bad, &[]).await;
            assert_eq!(a.status, 400, "{way:?} {bad}: {}", a.body);
            assert!(a.body.contains("path"), "{way:?} {bad}: {}", a.body);
            if way == Way::Fast {
                // (hyper's side records a request refused before routing without its id.)
                assert_eq!(records.of(&a.id).await.0, Front::Fast, "{bad}");
            }
        }
    }
    assert_eq!(
        guarded.hits.load(std::sync::atomic::Ordering::SeqCst),
        3 * 10,
        "only requests with credentials reached the guarded backend"
    );
}

/// Service `path_prefix` values are stored as the rule reads them, so each can match.
#[tokio::test]
async fn path_prefixes_are_normalised_when_set() {
    let (q, _) = start(&[]).await;
    for (given, stored) in [("//a", "/a"), ("/%7euser", "/~user"), ("/a/../b/", "/b/")] {
        let v = put_service(&q, "p", serde_json::json!({ "path_prefix": given })).await;
        assert_eq!(v["path_prefix"], stored, "{given}");
    }
    let r = Http::new()
        .method(
            "PUT",
            &q.admin_url("/api/v1/services/p"),
            r#"{"path_prefix": "/a/../.."}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("path_prefix"), "{}", r.body);
}

/// A state file written before the rule (its prefix could never match) loads normalised, and
/// routes.
#[tokio::test]
async fn an_older_state_files_prefix_is_read_by_the_rule() {
    let dir = std::env::temp_dir().join(format!("quayside-seams-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let b = Backend::start("old").await;
    let text = serde_json::json!({
        "version": 1,
        "backends": [{"no": "old-1", "address": "127.0.0.1", "port": b.port(), "service": "old"}],
        "services": [{"name": "old", "path_prefix": "//old/./%7edocs"}]
    });
    std::fs::write(&state, text.to_string()).unwrap();
    let q = Quayside::start_with_state(state).await;
    let r = Http::new().get(&q.admin_url("/api/v1/services/old")).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["path_prefix"], "/old/~docs", "{}", r.body);
    let a = ask(&q, Way::Fast, "any.test", "/old/~docs/x", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (200, "old\n"));
    let _ = std::fs::remove_dir_all(dir);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// With `--trusted-proxies 127.0.0.1/32` and `ip_allow: 10.0.0.0/8`, a second
/// `X-Forwarded-For` line cannot hide the hop the client really is: repeated lines are one
/// list for the client address (ip_allow, the access log's record, `X-Real-IP` and the `hash`
/// strategy), on every front.
#[tokio::test]
async fn repeated_forwarded_for_lines_are_one_list() {
    let (q, records) = start(&["127.0.0.1/32"]).await;
    let (b1, b2, inner) = (
        Backend::start("b1").await,
        Backend::start("b2").await,
        Backend::start("inner").await,
    );
    put_service(
        &q,
        "inner",
        serde_json::json!({"hosts": ["inner.test"], "ip_allow": ["10.0.0.0/8"]}),
    )
    .await;
    put_service(
        &q,
        "hashed",
        serde_json::json!({"hosts": ["hashed.test"], "lb": "hash"}),
    )
    .await;
    add(&q, "inner-1", &inner, "inner").await;
    add(&q, "h1", &b1, "hashed").await;
    add(&q, "h2", &b2, "hashed").await;

    for way in WAYS {
        // One line, or two: the same list, and the client is its last untrusted hop.
        for xff in [
            &[("x-forwarded-for", "10.1.2.3, 198.51.100.7")][..],
            &[
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
        ] {
            let a = ask(&q, way, "inner.test", "/", xff).await;
            assert_eq!(a.status, 403, "{way:?} {xff:?}: {}", a.body);
            assert!(a.body.contains("198.51.100.7"), "{way:?}: {}", a.body);
            let (front, _, _, client) = records.of(&a.id).await;
            assert_eq!(
                (front, client),
                (way.front(), Some(ip("198.51.100.7"))),
                "{way:?}"
            );
        }
        // An allowed client: X-Real-IP is the address decided (the client's own replaced),
        // and X-Forwarded-For is its lines joined, then the peer.
        let a = ask(
            &q,
            way,
            "inner.test",
            "/",
            &[
                ("x-forwarded-for", "10.9.9.9"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-real-ip", "6.6.6.6"),
                ("forwarded", "for=6.6.6.6"),
            ],
        )
        .await;
        assert_eq!(a.status, 200, "{way:?}: {}", a.body);
        assert_eq!(a.headers["x-seen-real-ip"], "10.1.2.3", "{way:?}");
        assert_eq!(
            a.headers["x-seen-xff-lines"], "10.9.9.9, 10.1.2.3, 127.0.0.1",
            "{way:?}"
        );
        // A trusted proxy's Forwarded is kept.
        assert_eq!(a.headers["x-seen-forwarded"], "for=6.6.6.6", "{way:?}");
        // The hash strategy picks by the same client whether its list came in one line or two.
        for n in 1..=12 {
            let client = format!("198.51.100.{n}");
            let one = ask(
                &q,
                way,
                "hashed.test",
                "/",
                &[("x-forwarded-for", &format!("10.0.0.1, {client}"))],
            )
            .await;
            let two = ask(
                &q,
                way,
                "hashed.test",
                "/",
                &[
                    ("x-forwarded-for", "10.0.0.1"),
                    ("x-forwarded-for", &client),
                ],
            )
            .await;
            assert_eq!(one.body, two.body, "{way:?} {client}");
            assert_eq!(two.headers["x-seen-real-ip"], client.as_str(), "{way:?}");
        }
    }
}

/// Without `--trusted-proxies`, `X-Forwarded-For` is appended to (all its lines, joined), as
/// the README says; `X-Real-IP` is the peer, and a client's `Forwarded` is dropped.
#[tokio::test]
async fn an_untrusted_clients_forwarding_headers_say_nothing() {
    let (q, records) = start(&[]).await;
    let b = Backend::start("b").await;
    add(&q, "b-1", &b, "default").await;
    for way in WAYS {
        let a = ask(
            &q,
            way,
            "any.test",
            "/",
            &[
                ("x-forwarded-for", "203.0.113.5"),
                ("x-forwarded-for", "203.0.113.6"),
                ("x-real-ip", "6.6.6.6"),
                ("forwarded", "for=6.6.6.6"),
            ],
        )
        .await;
        assert_eq!(a.status, 200, "{way:?}");
        assert_eq!(
            a.headers["x-seen-xff-lines"], "203.0.113.5, 203.0.113.6, 127.0.0.1",
            "{way:?}"
        );
        assert_eq!(a.headers["x-seen-real-ip"], "127.0.0.1", "{way:?}");
        assert_eq!(a.headers["x-seen-forwarded"], "-", "{way:?}");
        assert_eq!(records.of(&a.id).await.0, way.front(), "{way:?}");
    }
}

/// A forward-auth service: 200 without `X-User` for `X-Token: good`, 200 with `X-User: bob`
/// for `X-Token: bob`, 401 otherwise.
async fn auth_server() -> (u16, tokio::task::JoinHandle<()>) {
    common::serve_fn(|req: Request<hyper::body::Incoming>| async move {
        match req.headers().get("x-token").map(|t| t.as_bytes()) {
            Some(b"good") => http::Response::new(full("ok")),
            Some(b"bob") => http::Response::builder()
                .header("x-user", "bob")
                .body(full("ok"))
                .unwrap(),
            _ => http::Response::builder()
                .status(401)
                .body(full("no\n"))
                .unwrap(),
        }
    })
    .await
}

/// The identity forward auth vouches for is the auth service's alone: a client's own
/// `X-User` (or `X_User`, which CGI-style backends read as the same) never reaches the
/// backend, whether the auth service sets one or not.
#[tokio::test]
async fn forward_auth_claims_come_from_the_auth_service_alone() {
    let (q, records) = start(&[]).await;
    let b = Backend::start("app").await;
    let (port, _auth) = auth_server().await;
    put_service(
        &q,
        "app",
        serde_json::json!({"hosts": ["app.test"], "forward_auth": {
            "url": format!("http://127.0.0.1:{port}/check"),
            "copy_headers": ["X-User"]
        }}),
    )
    .await;
    add(&q, "app-1", &b, "app").await;
    for way in WAYS {
        let forged = [("x-user", "admin"), ("x_user", "admin"), ("X_USER", "root")];
        let a = ask(
            &q,
            way,
            "app.test",
            "/",
            &[&forged[..], &[("x-token", "good")]].concat(),
        )
        .await;
        assert_eq!(a.status, 200, "{way:?}: {}", a.body);
        assert_eq!(a.headers["x-seen-user"], "-", "{way:?}");
        let names = a.headers["x-seen-names"].to_str().unwrap().to_owned();
        assert!(!names.contains("user"), "{way:?}: {names}");
        // (Forward auth is hyper's side's on both protocols.)
        assert_eq!(records.of(&a.id).await.0, Front::Hyper, "{way:?}");
        let a = ask(
            &q,
            way,
            "app.test",
            "/",
            &[&forged[..], &[("x-token", "bob")]].concat(),
        )
        .await;
        assert_eq!(a.status, 200, "{way:?}: {}", a.body);
        assert_eq!(a.headers["x-seen-user"], "bob", "{way:?}");
        let a = ask(&q, way, "app.test", "/", &forged).await;
        assert_eq!(a.status, 401, "{way:?}");
    }
}

/// An HTTP-01 key authorization is answered only under the name its challenge is for; under
/// any other Host the path is a request like any other (here: no backend, 503).
#[tokio::test]
async fn an_acme_answer_is_given_only_for_its_name() {
    let obtained = Arc::new(quayside::proxy::tls::Obtained::default());
    obtained.set_http("tok3n", Some(("site.test", "tok3n.thumb".into())));
    let mut c = test_config();
    c.proxy.acme = Some(obtained);
    let records = Arc::new(Records::default());
    c.proxy.observer = Some(records.clone());
    let q = Quayside::start_with(c).await;
    let path = "/.well-known/acme-challenge/tok3n";
    for way in WAYS {
        for host in ["site.test", "SITE.test:8080", "site.test."] {
            let a = ask(&q, way, host, path, &[]).await;
            assert_eq!(
                (a.status, a.body.as_str()),
                (200, "tok3n.thumb"),
                "{way:?} {host}"
            );
        }
        // The same path spelled otherwise is the same challenge.
        let a = ask(
            &q,
            way,
            "site.test",
            "/.well-known//acme-challenge/%74ok3n",
            &[],
        )
        .await;
        assert_eq!(a.status, 200, "{way:?}");
        for host in ["other.test", "site.test.evil", "127.0.0.1"] {
            let a = ask(&q, way, host, path, &[]).await;
            assert_eq!(a.status, 503, "{way:?} {host}: {}", a.body);
            assert!(!a.body.contains("thumb"), "{way:?} {host}");
            assert_eq!(records.of(&a.id).await.0, way.front(), "{way:?} {host}");
        }
    }
}
