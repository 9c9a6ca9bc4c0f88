//! Each middleware through the real proxy, from an HTTP/1.1 client (the fast path, or hyper's
//! side where the fast path hands over) and an HTTP/2 client (h2c, hyper's side). An observer
//! records which front answered, so the test shows each front did the work.

mod common;

use std::sync::{Arc, Mutex};

use common::{Backend, Http, Quayside, full, test_config};
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use quayside::proxy::plan::{Front, Observe, Record};
use tokio::io::AsyncReadExt as _;

/// The records of the requests, by request id.
#[derive(Default)]
struct Fronts(Mutex<Vec<(String, Front, String, u16)>>);

impl Observe for Fronts {
    fn request(&self, r: &Record<'_>) {
        let service = r.service.map(|s| s.name.clone()).unwrap_or_default();
        let id = r.meta.map(|m| m.request_id.to_owned()).unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push((id, r.front, service, r.status));
    }

    // (For the request id: the records are handed over as each request ends, which for a
    // response body hyper relays can be after the client has sent its next request.)
    fn details(&self) -> bool {
        true
    }
}

struct Setup {
    q: Quayside,
    fronts: Arc<Fronts>,
    /// The id of the last request [`ask`] sent.
    last_id: Mutex<String>,
    _backend: Backend,
    _auth: tokio::task::JoinHandle<()>,
}

async fn put_service(q: &Quayside, name: &str, body: serde_json::Value) {
    let r = Http::new()
        .method(
            "PUT",
            &q.admin_url(&format!("/api/v1/services/{name}")),
            &body.to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{name}: {}", r.body);
}

/// A forward-auth service: 200 with `X-User: alice` for `X-Token: good`, else 401 with a body
/// of its own.
async fn auth_server() -> (u16, tokio::task::JoinHandle<()>) {
    common::serve_fn(|req: Request<hyper::body::Incoming>| async move {
        let good = req.headers().get("x-token").is_some_and(|v| v == "good");
        let uri = req
            .headers()
            .get("x-forwarded-uri")
            .cloned()
            .unwrap_or(http::HeaderValue::from_static("-"));
        let resp = if good {
            http::Response::builder()
                .header("x-user", "alice")
                .header("x-other", "not copied")
                .body(full("ok"))
        } else {
            http::Response::builder()
                .status(401)
                .header("www-authenticate", "Bearer")
                .header("x-asked-uri", uri)
                .body(full("go away\n"))
        };
        resp.unwrap()
    })
    .await
}

async fn setup() -> Setup {
    let fronts = Arc::new(Fronts::default());
    let mut c = test_config();
    c.proxy.observer = Some(fronts.clone());
    c.proxy.trusted_proxies = Arc::from([quayside::types::Cidr::parse("127.0.0.1").unwrap()]);
    c.proxy.https_port = 8443;
    let q = Quayside::start_with(c).await;
    let backend = Backend::start("mw").await;
    let (auth_port, auth) = auth_server().await;
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let services = [
        (
            "redir",
            serde_json::json!({"https_redirect": true, "hsts": "max-age=60"}),
        ),
        ("deny", serde_json::json!({"ip_allow": ["10.0.0.0/8"]})),
        (
            "allow",
            serde_json::json!({"ip_allow": ["127.0.0.0/8", "203.0.113.0/24"]}),
        ),
        ("xff", serde_json::json!({"ip_allow": ["203.0.113.0/24"]})),
        (
            "limited",
            serde_json::json!({"rate_limit": {"average": 1, "burst": 2, "period": "60s"}}),
        ),
        (
            "basic",
            serde_json::json!({"basic_auth": [format!("alice:{hash}")]}),
        ),
        (
            "headers",
            serde_json::json!({"headers": {
                "request": {"X-Env": "prod"},
                "response": {"X-Added": "yes", "X-Seen-Host": ""}
            }}),
        ),
        ("gz", serde_json::json!({"compress": true})),
        (
            "fwd",
            serde_json::json!({"forward_auth": {
                "url": format!("http://127.0.0.1:{auth_port}/check"),
                "copy_headers": ["X-User"]
            }}),
        ),
    ];
    for (name, mut cfg) in services {
        cfg["hosts"] = serde_json::json!([format!("{name}.test")]);
        put_service(&q, name, cfg).await;
        let url = format!(
            "/add?no={name}-1&ip=127.0.0.1&port={}&service={name}",
            backend.port()
        );
        assert_eq!(Http::new().get(&q.admin_url(&url)).await.status, 200);
    }
    Setup {
        q,
        fronts,
        last_id: Mutex::default(),
        _backend: backend,
        _auth: auth,
    }
}

/// A request to `host` with extra headers, on a new connection, by HTTP/1.1 (`h2`: false)
/// or HTTP/2 with prior knowledge (h2c; `:authority` names the host).
async fn ask(
    s: &Setup,
    h2: bool,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = tokio::net::TcpStream::connect(s.q.proxy).await.unwrap();
    let mut b = if h2 {
        Request::get(format!("http://{host}{path}"))
    } else {
        Request::get(path).header("host", host)
    };
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let id = format!(
        "mw-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    *s.last_id.lock().unwrap() = id.clone();
    let req = b.header("x-request-id", id).body(full("")).unwrap();
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Setup {
    /// Which front answered the last request, and with what, once its record is in; it must
    /// have been routed to `service`.
    async fn answered(&self, service: &str) -> (Front, u16) {
        let id = self.last_id.lock().unwrap().clone();
        let (front, name, status) = common::eventually(5, "the request's record", || {
            let found = self
                .fronts
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.0 == id)
                .map(|(_, f, n, st)| (*f, n.clone(), *st));
            async move { found }
        })
        .await;
        assert_eq!(name, service, "{id}");
        (front, status)
    }
}

fn front(h2: bool) -> Front {
    if h2 { Front::Hyper } else { Front::Fast }
}

#[tokio::test]
async fn each_middleware_on_both_fronts() {
    let s = setup().await;

    for h2 in [false, true] {
        let tag = if h2 { "h2" } else { "h1" };
        // https_redirect: 308 to --https-port, the path and query kept; ACME's path spared.
        let (st, h, _) = ask(&s, h2, "redir.test", "/a/b?c=1", &[]).await;
        assert_eq!(st, 308, "{tag}");
        assert_eq!(h["location"], "https://redir.test:8443/a/b?c=1", "{tag}");
        assert_eq!(s.answered("redir").await, (front(h2), 308), "{tag}");
        let acme = "/.well-known/acme-challenge/x";
        let (st, h, _) = ask(&s, h2, "redir.test", acme, &[]).await;
        assert_eq!(st, 200, "{tag}");
        // HSTS only over HTTPS.
        assert!(!h.contains_key("strict-transport-security"), "{tag}");

        // ip_allow: 403 for others; --trusted-proxies lets X-Forwarded-For name the client.
        let (st, _, body) = ask(&s, h2, "deny.test", "/", &[]).await;
        assert_eq!(st, 403, "{tag}: {body:?}");
        assert_eq!(s.answered("deny").await, (front(h2), 403), "{tag}");
        assert_eq!(ask(&s, h2, "allow.test", "/", &[]).await.0, 200, "{tag}");
        assert_eq!(ask(&s, h2, "xff.test", "/", &[]).await.0, 403, "{tag}");
        let via = [("x-forwarded-for", "198.51.100.1, 203.0.113.5")];
        let (st, h, _) = ask(&s, h2, "xff.test", "/", &via).await;
        assert_eq!(st, 200, "{tag}");
        assert_eq!(h["x-seen-xff"], "198.51.100.1, 203.0.113.5, 127.0.0.1");
        assert_eq!(s.answered("xff").await, (front(h2), 200), "{tag}");
        // A trusted proxy's own hop is skipped; a spoofed first entry is not believed.
        let spoof = [("x-forwarded-for", "203.0.113.5, 198.51.100.1")];
        assert_eq!(ask(&s, h2, "xff.test", "/", &spoof).await.0, 403, "{tag}");

        // headers: set on the way in, set and removed on the way out.
        let (st, h, _) = ask(&s, h2, "headers.test", "/", &[("x-env", "dev")]).await;
        assert_eq!(st, 200, "{tag}");
        assert_eq!(h["x-seen-env"], "prod", "{tag}");
        assert_eq!(h["x-added"], "yes", "{tag}");
        assert!(!h.contains_key("x-seen-host"), "{tag}");
        assert_eq!(s.answered("headers").await, (front(h2), 200), "{tag}");

        // basic_auth: 401 with the challenge, then the user in, without the header upstream.
        let (st, h, _) = ask(&s, h2, "basic.test", "/", &[]).await;
        assert_eq!(st, 401, "{tag}");
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic realm=\"basic\""),
            "{tag}"
        );
        let wrong = format!("Basic {}", b64("alice:nope"));
        assert_eq!(
            ask(&s, h2, "basic.test", "/", &[("authorization", &wrong)])
                .await
                .0,
            401
        );
        let right = format!("Basic {}", b64("alice:s3cret"));
        let (st, h, _) = ask(&s, h2, "basic.test", "/", &[("authorization", &right)]).await;
        assert_eq!(st, 200, "{tag}");
        assert_eq!(h["x-seen-authorization"], "-", "{tag}: not forwarded");
        // Remembered now: on a new connection the fast path lets it through itself.
        let (st, _, _) = ask(&s, h2, "basic.test", "/", &[("authorization", &right)]).await;
        assert_eq!(st, 200);
        assert_eq!(s.answered("basic").await, (front(h2), 200), "{tag}");

        // forward_auth: its 401 goes to the client as it is; a 2xx copies X-User only.
        let (st, h, body) = ask(&s, h2, "fwd.test", "/p?q=1", &[]).await;
        assert_eq!(st, 401, "{tag}");
        assert_eq!(&body[..], b"go away\n", "{tag}");
        assert_eq!(h["www-authenticate"], "Bearer", "{tag}");
        assert_eq!(h["x-asked-uri"], "/p?q=1", "{tag}");
        let (st, h, _) = ask(&s, h2, "fwd.test", "/", &[("x-token", "good")]).await;
        assert_eq!(st, 200, "{tag}");
        assert_eq!(h["x-seen-user"], "alice", "{tag}");
        // (Forward auth is hyper's side's on both.)
        assert_eq!(s.answered("fwd").await, (Front::Hyper, 200), "{tag}");

        // compress: by Accept-Encoding, over 1 KiB, text only.
        for (enc, want) in [
            ("gzip", "gzip"),
            ("br;q=1, gzip;q=0.5", "br"),
            ("zstd", "zstd"),
        ] {
            let (st, h, body) = ask(
                &s,
                h2,
                "gz.test",
                "/text?bytes=20000",
                &[("accept-encoding", enc)],
            )
            .await;
            assert_eq!(st, 200, "{tag} {enc}");
            assert_eq!(h["content-encoding"], want, "{tag} {enc}");
            assert!(body.len() < 2000, "{tag} {enc}: {} bytes", body.len());
            let plain = decode(want, &body).await;
            assert_eq!(plain.len(), 20000, "{tag} {enc}");
            assert!(plain.starts_with(b"abcdefgab"), "{tag} {enc}");
        }
        let (_, h, body) = ask(
            &s,
            h2,
            "gz.test",
            "/text?bytes=100",
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert!(!h.contains_key("content-encoding"), "{tag}: small");
        assert_eq!(body.len(), 100);
        let (_, h, _) = ask(&s, h2, "gz.test", "/text?bytes=5000", &[]).await;
        assert!(!h.contains_key("content-encoding"), "{tag}: not asked");
        let (_, h, _) = ask(
            &s,
            h2,
            "gz.test",
            "/download?bytes=5000",
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert!(!h.contains_key("content-encoding"), "{tag}: not text");
    }

    // rate_limit: a burst of 2, then 429 with Retry-After, on either front (the bucket is the
    // client's, shared by both).
    assert_eq!(ask(&s, false, "limited.test", "/", &[]).await.0, 200);
    assert_eq!(ask(&s, true, "limited.test", "/", &[]).await.0, 200);
    let (st, h, _) = ask(&s, false, "limited.test", "/", &[]).await;
    assert_eq!(st, 429);
    assert_eq!(s.answered("limited").await, (Front::Fast, 429));
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let (st, h, _) = ask(&s, true, "limited.test", "/", &[]).await;
    assert_eq!(st, 429);
    assert!(h.contains_key("retry-after"));
    assert_eq!(s.answered("limited").await, (Front::Hyper, 429));
    // Another client (by X-Forwarded-For, from a trusted proxy) has its own bucket.
    let other = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(ask(&s, false, "limited.test", "/", &other).await.0, 200);
}

#[tokio::test]
async fn bad_settings_are_400s_naming_the_field_and_change_nothing() {
    let q = Quayside::start().await;
    let http = Http::new();
    let url = q.admin_url("/api/v1/services/web");
    for (body, field) in [
        (r#"{"basic_auth": ["alice:secret"]}"#, "basic_auth"),
        (r#"{"ip_allow": ["10.0.0.0/40"]}"#, "ip_allow"),
        (r#"{"rate_limit": {"average": 0}}"#, "rate_limit.average"),
        (r#"{"rate_limit": {"burst": 5}}"#, "rate_limit"),
        (
            r#"{"forward_auth": {"url": "auth:4181"}}"#,
            "forward_auth.url",
        ),
        (
            r#"{"headers": {"request": {"Host": "x"}}}"#,
            "headers.request",
        ),
        (r#"{"hsts": "one year"}"#, "hsts"),
        (r#"{"compress": "yes"}"#, "compress"),
    ] {
        let r = http.method("PUT", &url, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(field), "{body}: {}", r.body);
    }
    let r = http.get(&url).await;
    assert_eq!(r.status, 404, "nothing was stored: {}", r.body);
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn decode(enc: &str, body: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    let mut out = Vec::new();
    match enc {
        "gzip" => GzipDecoder::new(body).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(body).read_to_end(&mut out).await,
        _ => ZstdDecoder::new(body).read_to_end(&mut out).await,
    }
    .unwrap();
    out
}

/// htpasswd's default hash (apr1 MD5, what `htpasswd -nb alice pw` prints, as nginx and
/// Traefik users have them) and its `{SHA}` work as bcrypt does, on both fronts.
#[tokio::test]
async fn htpasswds_own_hashes_let_their_users_in() {
    let q = Quayside::start().await;
    let backend = Backend::start("md5").await;
    let cfg = serde_json::json!({
        "hosts": ["md5.test"],
        "basic_auth": [
            "alice:$apr1$rPYgkAtb$aVRtlzTrL8jPBfCJSls43.",
            "bob:{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM="
        ]
    });
    put_service(&q, "md5", cfg).await;
    let url = format!(
        "/add?no=md5-1&ip=127.0.0.1&port={}&service=md5",
        backend.port()
    );
    assert_eq!(Http::new().get(&q.admin_url(&url)).await.status, 200);
    let s = Setup {
        q,
        fronts: Arc::default(),
        last_id: Mutex::default(),
        _backend: backend,
        _auth: tokio::spawn(async {}),
    };
    for h2 in [false, true] {
        for (user, status) in [("alice:pw", 200), ("bob:pw", 200), ("alice:px", 401)] {
            let auth = format!("Basic {}", b64(user));
            let (st, _, _) = ask(&s, h2, "md5.test", "/", &[("authorization", &auth)]).await;
            assert_eq!(st, status, "h2: {h2} {user}");
        }
    }
}

/// A new password goes from the fast path to hyper's side before any middleware runs, so a
/// rate limit counts the request once.
#[tokio::test]
async fn a_new_password_is_counted_once_by_the_rate_limit() {
    let q = Quayside::start().await;
    let backend = Backend::start("once").await;
    let hash = bcrypt::hash("pw", 4).unwrap();
    let cfg = serde_json::json!({
        "hosts": ["once.test"],
        "basic_auth": [format!("bob:{hash}")],
        "rate_limit": {"average": 1, "burst": 1, "period": "60s"}
    });
    put_service(&q, "once", cfg).await;
    let url = format!(
        "/add?no=once-1&ip=127.0.0.1&port={}&service=once",
        backend.port()
    );
    assert_eq!(Http::new().get(&q.admin_url(&url)).await.status, 200);
    let auth = format!("Basic {}", b64("bob:pw"));
    let req = || {
        Request::get(q.proxy_url("/"))
            .header("host", "once.test")
            .header("authorization", auth.as_str())
            .body(full(""))
            .unwrap()
    };
    assert_eq!(Http::new().send(req()).await.status, 200);
    assert_eq!(Http::new().send(req()).await.status, 429);
}

/// With `--trusted-proxies` set, an `X-Forwarded-For` from a peer that is not one of them is
/// replaced, on both fronts (without the flag it is appended to, as before).
#[tokio::test]
async fn an_untrusted_peers_forwarded_for_is_replaced() {
    let fronts = Arc::new(Fronts::default());
    let mut c = test_config();
    c.proxy.observer = Some(fronts.clone());
    c.proxy.trusted_proxies = Arc::from([quayside::types::Cidr::parse("10.0.0.0/8").unwrap()]);
    let q = Quayside::start_with(c).await;
    let backend = Backend::start("xff").await;
    q.add("1", &backend).await;
    let s = Setup {
        q,
        fronts,
        last_id: Mutex::default(),
        _backend: backend,
        _auth: tokio::spawn(async {}),
    };
    for h2 in [false, true] {
        let spoofed = [("x-forwarded-for", "203.0.113.5")];
        let (st, h, _) = ask(&s, h2, "any.test", "/", &spoofed).await;
        assert_eq!(st, 200);
        assert_eq!(h["x-seen-xff"], "127.0.0.1", "h2: {h2}");
        assert_eq!(s.answered("default").await, (front(h2), 200));
    }
}
