//! The HTTP/1.1 fast path against scripted backends: what it relays, how it frames each kind
//! of response, when it reuses a backend connection and when the client's must close.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Http, Quayside};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers each request head it reads with the next scripted response, and
/// closes the connection after the responses marked so. It records the heads it saw and how
/// many connections it accepted.
struct Scripted {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    conns: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start(script: Vec<(&'static str, bool)>) -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (h, c) = (heads.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (h, script) = (h.clone(), script.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head: Vec<u8> = buf.drain(..end).collect();
                        let head = String::from_utf8_lossy(&head).into_owned();
                        // Skip a Content-Length body.
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        while buf.len() < len {
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..len);
                        h.lock().unwrap().push(head);
                        let Some((resp, close)) = script.lock().unwrap().pop_front() else {
                            return;
                        };
                        if s.write_all(resp.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        Scripted { port, heads, conns }
    }
}

/// A scripted backend, quayside in front of it, and a client connection to quayside.
async fn setup(script: Vec<(&'static str, bool)>) -> (Scripted, Quayside, TcpStream) {
    let b = Scripted::start(script).await;
    let q = proxy_to(&b).await;
    let s = TcpStream::connect(q.proxy).await.unwrap();
    (b, q, s)
}

async fn proxy_to(b: &Scripted) -> Quayside {
    proxy_to_with(b, common::test_config()).await
}

async fn proxy_to_with(b: &Scripted, config: quayside::Config) -> Quayside {
    let q = Quayside::start_with(config).await;
    let r = Http::new()
        .get(&q.admin_url(&format!("/add?no=s&ip=127.0.0.1&port={}", b.port)))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    q
}

/// Read from `s` until `needle` has arrived (or fail after 5 s).
async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &str) -> String {
    loop {
        if let Some(i) = String::from_utf8_lossy(buf).find(needle) {
            let end = i + needle.len();
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            return text;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("timed out")
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Send `req` and read until `needle` has arrived.
async fn exchange(s: &mut TcpStream, buf: &mut Vec<u8>, req: &str, needle: &str) -> String {
    s.write_all(req.as_bytes()).await.unwrap();
    read_until(s, buf, needle).await
}

#[tokio::test]
async fn informational_and_chunked_responses_are_relayed_as_sent() {
    let (b, _q, mut s) = setup(vec![
        (
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
        ),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    ]).await;
    let mut buf = Vec::new();
    let text = exchange(
        &mut s,
        &mut buf,
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        "X-Trailer: t\r\n\r\n",
    )
    .await;
    assert!(
        text.starts_with(
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
        "{text}"
    );
    // The same client and backend connections carry the next exchange.
    let text = exchange(
        &mut s,
        &mut buf,
        "GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        "\r\n\r\nok",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(b.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_delimited_by_close_is_relayed_and_closes_the_client_connection() {
    let (_b, _q, mut s) = setup(vec![("HTTP/1.1 200 OK\r\n\r\nall of it", true)]).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = common::read_to_close(&mut s).await;
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nall of it"), "{text}");
}

#[tokio::test]
async fn a_backend_connection_that_says_close_is_not_reused() {
    let (b, _q, mut s) = setup(vec![
        (
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\none",
            true,
        ),
        ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo", false),
    ])
    .await;
    let mut buf = Vec::new();
    let first = exchange(
        &mut s,
        &mut buf,
        "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "one",
    )
    .await;
    // The backend's Connection header is its own: the client's connection stays open.
    assert!(
        !first.to_ascii_lowercase().contains("connection:"),
        "{first}"
    );
    exchange(
        &mut s,
        &mut buf,
        "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
        "two",
    )
    .await;
    assert_eq!(b.conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_cut_short_by_the_backend_closes_the_client_connection() {
    let (_b, _q, mut s) = setup(vec![(
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        true,
    )])
    .await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The client sees the head and the 3 bytes, then the end of the connection (so it can
    // tell the body is short), not a hang.
    let text = common::read_to_close(&mut s).await;
    assert!(text.contains("Content-Length: 10\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nabc"), "{text}");
}

#[tokio::test]
async fn an_invalid_response_is_a_502_and_the_client_connection_goes_on() {
    let (_b, _q, mut s) = setup(vec![
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            true,
        ),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    ])
    .await;
    let mut buf = Vec::new();
    // POST: not idempotent, so not sent again after the invalid answer.
    let text = exchange(
        &mut s,
        &mut buf,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        "invalid response\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
    let text = exchange(
        &mut s,
        &mut buf,
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "\r\n\r\nok",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
}

#[tokio::test]
async fn the_answer_to_head_has_no_body_and_the_connection_is_reused() {
    let (b, _q, mut s) = setup(vec![
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
        ("HTTP/1.1 204 No Content\r\n\r\n", false),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    ])
    .await;
    let mut buf = Vec::new();
    let head = exchange(
        &mut s,
        &mut buf,
        "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(head.contains("Content-Length: 5\r\n"), "{head}");
    let no_content = exchange(
        &mut s,
        &mut buf,
        "DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(no_content.starts_with("HTTP/1.1 204 "), "{no_content}");
    let text = exchange(
        &mut s,
        &mut buf,
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "\r\n\r\nok",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(buf.is_empty());
    assert_eq!(b.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn pipelined_requests_are_rewritten_and_answered_in_order() {
    let (b, _q, mut s) = setup(vec![
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#1", false),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#2", false),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#3", false),
    ])
    .await;
    let mut buf = Vec::new();
    s.write_all(
        b"GET /1 HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.9.9.9\r\nX-Forwarded-Proto: https\r\nX-Custom: kept\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n\r\nbody\
          GET /3?q=1 HTTP/1.1\r\nHost: app.test\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_until(&mut s, &mut buf, "#3").await;
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    assert!(text.find("#1") < text.find("#2") && text.find("#2") < text.find("#3"));
    let heads = b.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    let first = heads[0].to_ascii_lowercase();
    assert!(first.starts_with("get /1 http/1.1\r\n"), "{first}");
    assert!(first.contains("\r\nx-custom: kept\r\n"), "{first}");
    assert!(
        first.contains("\r\nx-forwarded-for: 10.9.9.9, 127.0.0.1\r\n"),
        "{first}"
    );
    assert!(first.contains("\r\nx-forwarded-proto: http\r\n"), "{first}");
    assert!(
        first.contains("\r\nx-forwarded-host: app.test\r\n"),
        "{first}"
    );
    assert!(!first.contains("keep-alive"), "{first}");
    assert!(!first.contains("connection:"), "{first}");
    assert!(heads[1].starts_with("POST /2 HTTP/1.1\r\n"), "{}", heads[1]);
    assert!(
        heads[2].starts_with("GET /3?q=1 HTTP/1.1\r\n"),
        "{}",
        heads[2]
    );
}

/// HTTP/2 clients' bodiless requests go to HTTP/1.1 backends over the fast path's raw
/// connections: every kind of response framing comes out decoded, connections are reused when
/// the backend allows it, and a broken answer is a 502 or a broken stream, never a hang.
#[tokio::test]
async fn http2_clients_get_decoded_bodies_over_reused_backend_connections() {
    use http_body_util::BodyExt;
    let b = Scripted::start(vec![
        (
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n\
             5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
        ),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
        ("HTTP/1.1 204 No Content\r\n\r\n", false),
        ("HTTP/1.1 200 OK\r\n\r\nall of it", true),
        (
            "HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nContent-Length: 3\r\n\r\none",
            true,
        ),
        ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", true),
        ("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast", false),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nh1", false),
    ])
    .await;
    // One worker: one pool per backend, which both kinds of client share.
    let mut c = common::test_config();
    c.proxy.workers = 1;
    let q = proxy_to_with(&b, c).await;
    let client = common::h2_client();
    let send = |method: &str, path: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", q.proxy))
            .header("x-custom", "kept")
            .body(common::full(""))
            .unwrap();
        let fut = client.request(req);
        async move {
            let resp = tokio::time::timeout(Duration::from_secs(5), fut)
                .await
                .expect("no answer")?;
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let (parts, body) = resp.into_parts();
            let body = tokio::time::timeout(Duration::from_secs(5), body.collect())
                .await
                .expect("the body hung")
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned());
            Ok::<_, hyper_util::client::legacy::Error>((parts, body))
        }
    };
    let send_raw = send;
    let send = |method: &'static str, path: &'static str| {
        let f = send_raw(method, path);
        async move { f.await.expect("request failed") }
    };

    let (p, body) = send("GET", "/chunked?q=1").await;
    assert_eq!(p.status, 200);
    assert_eq!(body.unwrap(), "hello world");
    assert_eq!(p.headers["x-a"], "1");
    assert!(!p.headers.contains_key("transfer-encoding"), "{p:?}");
    assert!(!p.headers.contains_key("content-length"), "{p:?}");

    let (p, body) = send("GET", "/length").await;
    assert_eq!((p.status.as_u16(), body.unwrap().as_str()), (200, "ok"));
    assert_eq!(p.headers["content-length"], "2");

    let (p, body) = send("HEAD", "/head").await;
    assert_eq!((p.status.as_u16(), body.unwrap().as_str()), (200, ""));
    assert_eq!(p.headers["content-length"], "5");

    let (p, body) = send("DELETE", "/x").await;
    assert_eq!((p.status.as_u16(), body.unwrap().as_str()), (204, ""));

    let (p, body) = send("GET", "/until-close").await;
    assert_eq!(
        (p.status.as_u16(), body.unwrap().as_str()),
        (200, "all of it")
    );
    // Five exchanges, one backend connection: each went back to the pool after its body.
    assert_eq!(b.conns.load(Ordering::SeqCst), 1);

    let (p, body) = send("GET", "/close").await;
    assert_eq!((p.status.as_u16(), body.unwrap().as_str()), (200, "one"));
    assert!(!p.headers.contains_key("connection"), "{p:?}");
    assert!(!p.headers.contains_key("x-hop"), "{p:?}");
    assert_eq!(b.conns.load(Ordering::SeqCst), 2);

    // Cut short: the stream breaks (the client can tell; its head and reset may arrive
    // together), and the proxy goes on.
    if let Ok((p, body)) = send_raw("GET", "/short").await {
        assert_eq!(p.status, 200);
        assert!(body.is_err(), "{body:?}");
    }

    let (p, body) = send("GET", "/invalid").await;
    assert_eq!(p.status, 502, "{body:?}");

    let (p, body) = send("GET", "/last").await;
    assert_eq!((p.status.as_u16(), body.unwrap().as_str()), (200, "last"));
    assert_eq!(b.conns.load(Ordering::SeqCst), 5);
    // An HTTP/1.1 client's request on the fast path takes the same pooled connection.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    let text = exchange(
        &mut s,
        &mut Vec::new(),
        "GET /h1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "h1",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(b.conns.load(Ordering::SeqCst), 5);

    let heads = b.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 10, "{heads:?}");
    let first = heads[0].to_ascii_lowercase();
    assert!(
        first.starts_with("get /chunked?q=1 http/1.1\r\n"),
        "{first}"
    );
    assert!(
        first.contains(&format!("\r\nhost: {}\r\n", q.proxy)),
        "{first}"
    );
    assert!(first.contains("\r\nx-custom: kept\r\n"), "{first}");
    assert!(
        first.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{first}"
    );
    assert!(
        heads[2].starts_with("HEAD /head HTTP/1.1\r\n"),
        "{}",
        heads[2]
    );
    assert!(
        heads[3].starts_with("DELETE /x HTTP/1.1\r\n"),
        "{}",
        heads[3]
    );
}

/// A response head with 100 headers (hyper's client takes up to 100) passes on both of the
/// fast path's legs: to an HTTP/1.1 client, and to an HTTP/2 one.
#[tokio::test]
async fn a_response_with_a_hundred_headers_is_relayed() {
    use http_body_util::BodyExt;
    let mut resp = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..98 {
        resp.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    resp.push_str("Content-Length: 2\r\n\r\nok");
    let resp: &'static str = resp.leak();
    let (_b, q, mut s) = setup(vec![(resp, false), (resp, false)]).await;
    let text = exchange(
        &mut s,
        &mut Vec::new(),
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "\r\n\r\nok",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\nX-H97: 97\r\n"), "{text}");

    let client = common::h2_client();
    let req = http::Request::get(format!("http://{}/", q.proxy))
        .body(common::full(""))
        .unwrap();
    let r = client.request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-h97"], "97");
    assert_eq!(r.headers()["x-h0"], "0");
    assert_eq!(
        &r.into_body().collect().await.unwrap().to_bytes()[..],
        b"ok"
    );
}
