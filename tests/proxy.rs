//! Forwarding behaviour: errors classified as 502/503/504, headers, timeouts, shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Http, Quayside, test_config};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn add(http: &Http, q: &Quayside, no: &str, port: u16) {
    let r = http
        .get(&q.admin_url(&format!("/add?no={no}&ip=127.0.0.1&port={port}")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn empty_pool_is_503_naming_the_service() {
    let q = Quayside::start().await;
    let r = Http::new().get(&q.proxy_url("/anything")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.body,
        "503 Service Unavailable: no backend available for service default\n"
    );
}

#[tokio::test]
async fn dead_backend_is_502_and_hanging_backend_is_504() {
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = test_config();
    cfg.proxy.response_header_timeout = Duration::from_millis(300);
    let q = Quayside::start_with(cfg).await;
    let http = Http::new();
    add(&http, &q, "dead", dead_port).await;
    let r = http.get(&q.proxy_url("/")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.body.contains("could not connect to backend dead"),
        "{}",
        r.body
    );

    let b = Backend::start("slowpoke").await;
    add(&http, &q, "dead", b.port()).await;
    let t = Instant::now();
    let r = http.get(&q.proxy_url("/hang")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(r.body.contains("did not answer"), "{}", r.body);

    // A backend's own 500 passes through untouched.
    let r = http.get(&q.proxy_url("/status?code=500")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.body, "slowpoke says so\n");
}

#[tokio::test]
async fn connect_timeout_is_504() {
    // A loopback listener that never accepts, with its backlog filled: further SYNs go
    // unanswered, so the connect hangs until the timeout.
    let l = socket2_listener_full_backlog();
    let port = l.local_addr().unwrap().port();
    let mut cfg = test_config();
    cfg.proxy.connect_timeout = Duration::from_millis(300);
    let q = Quayside::start_with(cfg).await;
    let http = Http::new();
    add(&http, &q, "full", port).await;
    // Fill the accept queue so further connects hang.
    let mut fillers = Vec::new();
    for _ in 0..16 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(100),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let r = http.get(&q.proxy_url("/")).await;
    assert!(
        r.status == StatusCode::GATEWAY_TIMEOUT,
        "got {} {}",
        r.status,
        r.body
    );
    assert!(r.body.contains("timed out connecting"), "{}", r.body);
    drop(l);
}

fn socket2_listener_full_backlog() -> std::net::TcpListener {
    // std binds with a large backlog; listen(0) via libc keeps the queue at its minimum.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        fn listen(fd: i32, backlog: i32) -> i32;
    }
    unsafe { listen(l.as_raw_fd(), 0) };
    l
}

#[tokio::test]
async fn headers_are_forwarded_and_hop_by_hop_stripped() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    add(&http, &q, "b", b.port()).await;
    let req = http::Request::get(q.proxy_url("/h"))
        .header("host", "app.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "do-not-pass")
        .body(common::full(""))
        .unwrap();
    let r = http.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-seen-host"], "app.example.com");
    assert_eq!(r.headers["x-seen-xfh"], "app.example.com");
    assert_eq!(r.headers["x-seen-xfp"], "http");
    assert_eq!(r.headers["x-seen-xff"], "203.0.113.9, 127.0.0.1");
    assert_eq!(r.headers["x-seen-secret"], "-");
    assert!(!r.headers.contains_key("keep-alive"), "{:?}", r.headers);
}

#[tokio::test]
async fn upstream_connections_are_kept_alive() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    add(&http, &q, "b", b.port()).await;
    // After sequential requests, ask the kernel how many ESTABLISHED sockets go to b.
    for _ in 0..50 {
        assert_eq!(http.get(&q.proxy_url("/")).await.status, StatusCode::OK);
    }
    let established = established_to(b.port());
    assert_eq!(
        established, 1,
        "50 sequential requests used {established} backend connections"
    );

    // Draining the backend closes its idle pooled connection.
    let r = http
        .method("POST", &q.admin_url("/api/v1/backends/b/drain"), "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    common::eventually(5, "idle pooled connection closed after drain", || async {
        (established_to(b.port()) == 0).then_some(())
    })
    .await;
}

/// ESTABLISHED TCP sockets (IPv4) whose local port is `port`: the backend's side.
fn established_to(port: u16) -> usize {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "01" && f[1].ends_with(&format!(":{port:04X}"))
        })
        .count()
}

#[tokio::test]
async fn slow_client_headers_are_cut_off() {
    let b = Backend::start("b").await;
    let mut cfg = test_config();
    cfg.proxy.client_header_timeout = Duration::from_millis(500);
    let q = Quayside::start_with(cfg).await;
    add(&Http::new(), &q, "b", b.port()).await;
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains(" 500 "), "{text}");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    add(&http, &q, "b", b.port()).await;
    let proxy = q.proxy;
    let inflight = {
        let http = http.clone();
        let url = q.proxy_url("/slow?ms=700");
        tokio::spawn(async move { http.get(&url).await })
    };
    common::eventually(5, "the slow request reached the backend", || async {
        (b.hits.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let t = Instant::now();
    q.shutdown().await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "did not wait: {:?}",
        t.elapsed()
    );
    let r = inflight.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "b\n"));
    // No longer accepting.
    assert!(TcpStream::connect(proxy).await.is_err());
}

#[tokio::test]
async fn garbage_requests_get_4xx_not_500() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    add(&Http::new(), &q, "b", b.port()).await;
    for raw in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(q.proxy).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(
            !text.starts_with("HTTP/1.1 5"),
            "{:?} → {text}",
            String::from_utf8_lossy(raw)
        );
        assert!(
            !text.starts_with("HTTP/1.1 2"),
            "{:?} → {text}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[tokio::test]
async fn requests_that_never_reached_a_backend_are_retried_elsewhere() {
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let b = Backend::start("alive").await;
    let q = Quayside::start().await;
    let http = Http::new();
    add(&http, &q, "dead", dead_port).await;
    add(&http, &q, "alive", b.port()).await;
    // A small body arrives whole with its head and is held: the request goes elsewhere too,
    // since connecting failed and no backend saw it.
    for _ in 0..2 {
        let r = http
            .method("POST", &q.proxy_url("/upload"), "payload")
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // A streamed (chunked) body is not replayed: it went to the first attempt. Round-robin
    // sends one of these two to the dead backend.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(q.proxy).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npayload\r\n0\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        statuses.push(String::from_utf8_lossy(&buf[..12.min(buf.len())]).into_owned());
    }
    assert!(
        statuses.contains(&"HTTP/1.1 502".to_owned()),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&"HTTP/1.1 200".to_owned()),
        "{statuses:?}"
    );
    // Bodiless requests are retried on the other backend: none fails.
    for _ in 0..6 {
        let r = http.get(&q.proxy_url("/")).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "alive\n"));
    }
    // After 3 failures in a row the dead backend is ejected (passive health).
    let v: serde_json::Value =
        serde_json::from_str(&http.get(&q.admin_url("/api/v1/backends/dead")).await.body).unwrap();
    assert_eq!(v["health"]["available"], false, "{v}");
    assert!(
        v["health"]["passive"]["ejections"].as_u64().unwrap() >= 1,
        "{v}"
    );
}

/// A backend that answers the first request on each connection (keep-alive) and closes the
/// connection without a word when a second one arrives on it: what a backend whose keepalive
/// timeout fires just as a pooled connection is reused looks like. Counts its connections.
async fn closes_reused_connections() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                // Read the first head (and a small body, if one is announced).
                while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nfresh\n")
                    .await;
                // The next request on this connection: closed on.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (port, conns)
}

#[tokio::test]
async fn a_request_lost_to_the_idle_close_race_goes_out_again_if_it_is_safe() {
    let (port, conns) = closes_reused_connections().await;
    let q = Quayside::start().await;
    let http = Http::new();
    add(&http, &q, "racy", port).await;
    let r = http.get(&q.proxy_url("/")).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "fresh\n"));
    // The pooled connection has now been idle a while; the backend closes it when reused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http.get(&q.proxy_url("/")).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "fresh\n"),
        "a GET lost on a reused connection was not sent again"
    );
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Also right away: a backend may close a connection it has just answered on (hyper does
    // when the request body was not read in time), so a lost GET goes out again on a
    // connection used a moment ago too, on the fast path and on hyper's (`TE` sends it there).
    for te in [None, Some("trailers")] {
        let get = || {
            let mut req = http::Request::get(q.proxy_url("/"));
            if let Some(te) = te {
                req = req.header("te", te);
            }
            http.send(req.body(common::full("")).unwrap())
        };
        let r = get().await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (StatusCode::OK, "fresh\n"),
            "{te:?}"
        );
        let r = get().await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (StatusCode::OK, "fresh\n"),
            "a GET lost on a connection reused at once was not sent again ({te:?})"
        );
    }
    // A POST may have been acted on: it is not sent again, the client gets a 502.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http.method("POST", &q.proxy_url("/"), "once").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
}

#[tokio::test]
async fn idle_upstream_connections_close_after_the_pool_idle_timeout() {
    let b = Backend::start("b").await;
    let mut cfg = test_config();
    cfg.proxy.pool_idle_timeout = Duration::from_millis(400);
    let q = Quayside::start_with(cfg).await;
    let http = Http::new();
    add(&http, &q, "b", b.port()).await;
    assert_eq!(http.get(&q.proxy_url("/")).await.status, StatusCode::OK);
    assert_eq!(established_to(b.port()), 1);
    common::eventually(5, "idle pooled connection closed by the sweep", || async {
        (established_to(b.port()) == 0).then_some(())
    })
    .await;
    // And the next request opens a new one.
    assert_eq!(http.get(&q.proxy_url("/")).await.status, StatusCode::OK);
}
