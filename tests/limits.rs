//! Limits with clear status codes: body size (413), header size (431), connection count;
//! pipelined requests on one connection.

mod common;

use std::time::Duration;

use common::{Backend, Http, Quayside, streaming_body, test_config};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn add(http: &Http, q: &Quayside, b: &Backend) {
    http.get(&q.admin_url(&format!(
        "/add?no={}&ip=127.0.0.1&port={}",
        b.name,
        b.port()
    )))
    .await;
}

/// Read from `s` until `n` HTTP responses' heads have been seen (bodies are short).
async fn read_responses(s: &mut TcpStream, n: usize) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while String::from_utf8_lossy(&buf).matches("HTTP/1.1 ").count() < n
        || !String::from_utf8_lossy(&buf).ends_with('\n')
    {
        let k = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response timed out")
            .unwrap();
        if k == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..k]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let b = Backend::start("b").await;
    let mut c = test_config();
    c.proxy.max_body_size = Some(1000);
    let q = Quayside::start_with(c).await;
    let http = Http::new();
    add(&http, &q, &b).await;
    // Declared length over the limit: refused before any backend sees it.
    let r = http
        .method("POST", &q.proxy_url("/upload"), &"x".repeat(2000))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.body.contains("limit of 1000 bytes"), "{}", r.body);
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Chunked, no length: cut off when it passes the limit.
    let req = http::Request::post(q.proxy_url("/upload"))
        .body(streaming_body(5000))
        .unwrap();
    let r = http.send(req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    // Under the limit: fine.
    let r = http
        .method("POST", &q.proxy_url("/upload"), &"x".repeat(900))
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "900\n"));
}

#[tokio::test]
async fn huge_headers_get_431() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    add(&Http::new(), &q, &b).await;
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    let big = "y".repeat(600 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let text = read_responses(&mut s, 1).await;
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "{}",
        &text[..text.len().min(200)]
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    add(&Http::new(), &q, &b).await;
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\nGET /third HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_responses(&mut s, 3).await;
    let order: Vec<usize> = ["/first", "/second", "/third"]
        .iter()
        .map(|p| {
            text.find(&format!("x-seen-path: {p}"))
                .unwrap_or(usize::MAX)
        })
        .collect();
    assert!(order[0] < order[1] && order[1] < order[2], "{text}");
}

#[tokio::test]
async fn connections_over_the_limit_wait_to_be_accepted() {
    let b = Backend::start("b").await;
    let mut c = test_config();
    c.proxy.max_connections = 2;
    c.proxy.workers = 1;
    let q = Quayside::start_with(c).await;
    add(&Http::new(), &q, &b).await;
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = TcpStream::connect(q.proxy).await.unwrap();
    first.write_all(req).await.unwrap();
    read_responses(&mut first, 1).await;
    let mut second = TcpStream::connect(q.proxy).await.unwrap();
    second.write_all(req).await.unwrap();
    read_responses(&mut second, 1).await;
    // The third is in the backlog: not served while two are open.
    let mut third = TcpStream::connect(q.proxy).await.unwrap();
    third.write_all(req).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(400), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the connection limit");
    drop(first);
    let text = read_responses(&mut third, 1).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_stalled_request_head_gets_408_and_an_idle_connection_just_closes() {
    let b = Backend::start("b").await;
    let mut c = test_config();
    c.proxy.client_header_timeout = Duration::from_millis(400);
    let q = Quayside::start_with(c).await;
    add(&Http::new(), &q, &b).await;

    // Half a request head, then nothing: 408, then the connection closes.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let text = common::read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // The same after an answered request on a keepalive connection.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_responses(&mut s, 1).await.starts_with("HTTP/1.1 200 "));
    s.write_all(b"GET /two HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let text = common::read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");

    // A keepalive connection that stays quiet between requests is closed without a word.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = common::read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert!(!text.contains("408"), "{text:?}");
}

#[tokio::test]
async fn ambiguous_framing_is_refused() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    add(&Http::new(), &q, &b).await;
    let hits = || b.hits.load(std::sync::atomic::Ordering::SeqCst);

    // Each of these gets 400 and reaches no backend.
    for req in [
        // two different lengths
        &b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello"
            [..],
        // a length that is not a plain number
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        // chunked is not the last coding
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        // Transfer-Encoding in HTTP/1.0
        b"POST /upload HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // whitespace before the colon
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    ] {
        let mut s = TcpStream::connect(q.proxy).await.unwrap();
        s.write_all(req).await.unwrap();
        let text = common::read_to_close(&mut s).await;
        assert!(
            text.starts_with("HTTP/1.1 400 "),
            "{:?} → {text:?}",
            String::from_utf8_lossy(req)
        );
    }
    assert_eq!(hits(), 0);

    // Content-Length and chunked together: 400, nothing forwarded, and the connection
    // closes, so the bytes after the body are never taken for a second request.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let text = common::read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 400 "), "{text:?}");
    assert!(
        text.contains("Content-Length and Transfer-Encoding"),
        "{text:?}"
    );
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text:?}");
    assert_eq!(hits(), 0);
}

#[tokio::test]
async fn split_and_pipelined_heads_get_the_same_answers_as_whole_ones() {
    let b = Backend::start("b").await;
    let mut c = test_config();
    c.proxy.client_header_timeout = Duration::from_millis(400);
    let q = Quayside::start_with(c).await;
    add(&Http::new(), &q, &b).await;
    let hits = || b.hits.load(std::sync::atomic::Ordering::SeqCst);
    let conflict = &b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..];

    // Content-Length and chunked in a head that arrives in two parts: still 400 and closed.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(&conflict[..40]).await.unwrap();
    common::read_by_peer(&s).await;
    s.write_all(&conflict[40..]).await.unwrap();
    let text = common::read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 400 "), "{text:?}");
    assert_eq!(hits(), 0);

    // Behind a pipelined request: that one is answered, then 400 and closed.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    let mut batch = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    batch.extend_from_slice(conflict);
    s.write_all(&batch).await.unwrap();
    let text = common::read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert_eq!(text.matches("HTTP/1.1 400 ").count(), 1, "{text:?}");
    assert_eq!(hits(), 1);

    // A head that stalls behind a pipelined request: that one is answered, then 408.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let text = common::read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert_eq!(text.matches("HTTP/1.1 408 ").count(), 1, "{text:?}");
    assert_eq!(hits(), 2);

    // A head and a small body written apart, the way many clients send them: served.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    common::read_by_peer(&s).await;
    s.write_all(b"hello").await.unwrap();
    assert!(read_responses(&mut s, 1).await.starts_with("HTTP/1.1 200 "));
    assert_eq!(hits(), 3);
}
