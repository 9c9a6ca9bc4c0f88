//! Protocol handling through the proxy: upgrades (WebSocket and others) tunnelled both ways.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use common::{Backend, BoxBody, Http, Quayside, full};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that accepts `Upgrade: echo` and then echoes every byte.
async fn echo_upgrade_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    let wants = req.headers().get("upgrade").is_some_and(|v| v == "echo")
                        && req
                            .headers()
                            .get("connection")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"));
                    if !wants {
                        return Ok::<_, Infallible>(Response::new(full("no upgrade asked\n")));
                    }
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(up) = on.await {
                            let mut io = TokioIo::new(up);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    let resp: Response<BoxBody> = Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("upgrade", "echo")
                        .header("connection", "upgrade")
                        .body(full(""))
                        .unwrap();
                    Ok(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

async fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(got, msg);
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("head timed out")
            .unwrap();
        assert!(
            n > 0,
            "closed before the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn upgrades_are_tunnelled_and_survive_table_changes() {
    let port = echo_upgrade_backend().await;
    let q = Quayside::start().await;
    let http = Http::new();
    http.get(&q.admin_url(&format!("/add?no=ws&ip=127.0.0.1&port={port}")))
        .await;

    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );

    echo(&mut s, b"hello through the tunnel").await;
    // The routing table changes (even the tunnel's own entry is replaced): the tunnel stays.
    let other = Backend::start("other").await;
    http.get(&q.admin_url(&format!("/add?no=other&ip=127.0.0.1&port={}", other.port())))
        .await;
    http.get(&q.admin_url("/delete?no=ws")).await;
    echo(&mut s, b"still here").await;

    // A plain request without the upgrade headers is just a request.
    let r = http.get(&q.proxy_url("/x")).await;
    assert_eq!(r.body, "other\n");
}

#[tokio::test]
async fn http2_clients_with_prior_knowledge_reach_http1_backends() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    q.add("b", &b).await;
    let client = common::h2_client();
    for _ in 0..3 {
        // HTTP/2 carries the authority as `:authority`; there is no Host header.
        let req = Request::get(format!("http://{}/h2", q.proxy))
            .body(full(""))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), StatusCode::OK);
        // The backend saw the client's authority as Host, not its own address.
        let host = resp.headers()["x-seen-host"].to_str().unwrap().to_owned();
        assert_eq!(host, q.proxy.to_string());
        assert!(!resp.headers().contains_key("connection"));
        assert!(!resp.headers().contains_key("keep-alive"));
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"b\n");
    }
}

/// An h2c-only backend answering like a gRPC server: a body, then `grpc-status` trailers.
async fn h2c_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let te = req
                        .headers()
                        .get("te")
                        .map(|v| v.to_str().unwrap_or("").to_owned())
                        .unwrap_or_default();
                    let version = format!("{:?}", req.version());
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let frames: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>> = vec![
                        Ok(hyper::body::Frame::data(bytes::Bytes::from(format!(
                            "{version} te={te}"
                        )))),
                        Ok(hyper::body::Frame::trailers(trailers)),
                    ];
                    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                    Ok::<_, Infallible>(Response::new(http_body_util::BodyExt::boxed(body)))
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn h2c_backends_get_http2_with_trailers_end_to_end() {
    let port = h2c_backend().await;
    let q = Quayside::start().await;
    let http = Http::new();
    http.get(&q.admin_url(&format!(
        "/add?no=grpc&ip=127.0.0.1&port={port}&service=grpc"
    )))
    .await;
    let r = http
        .method(
            "PUT",
            &q.admin_url("/api/v1/services/grpc"),
            r#"{"path_prefix":"/helloworld.Greeter/","protocol":"h2c"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let client = common::h2_client();
    let req = Request::post(format!("http://{}/helloworld.Greeter/SayHello", q.proxy))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(full("\0\0\0\0\0"))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    assert_eq!(body, "HTTP/2.0 te=trailers");
}

#[tokio::test]
async fn expect_100_continue_waits_for_the_backend() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    q.add("b", &b).await;

    // A backend that reads the body: its 100 Continue comes through, then the answer.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    s.write_all(b"hello").await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let mut body = [0u8; 2];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"5\n");

    // A backend that answers without reading the body: the client is never told to send it.
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(
        b"POST /status?code=401 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");

    // The next request still works (a fresh upstream connection if need be).
    let r = Http::new().get(&q.proxy_url("/")).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "b\n"));
}

#[tokio::test]
async fn a_tunnel_outlives_its_backend_s_drain_by_the_grace_period_only() {
    let port = echo_upgrade_backend().await;
    let mut c = common::test_config();
    c.proxy.shutdown_timeout = Duration::from_millis(600);
    let q = Quayside::start_with(c).await;
    let http = Http::new();
    http.get(&q.admin_url(&format!("/add?no=ws&ip=127.0.0.1&port={port}")))
        .await;
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 101"));
    // Unrelated table changes, for longer than the grace period: the tunnel stays.
    for i in 0..4 {
        http.get(&q.admin_url(&format!("/add?no=other{i}&ip=127.0.0.1&port=9")))
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        echo(&mut s, b"still open").await;
    }
    // Its backend is drained: still open within the grace period, closed after it.
    let r = http
        .method("POST", &q.admin_url("/api/v1/backends/ws/drain"), "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    echo(&mut s, b"in the grace period").await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the tunnel should have been closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "tunnel still open after the grace period");
}

#[tokio::test]
async fn a_pipelined_batch_ending_mid_head_survives_a_pause() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    q.add("b", &b).await;
    // Two cases: the start of the second request in the same packet as the first, and in
    // a packet of its own before the first response.
    for split in [false, true] {
        let mut s = TcpStream::connect(q.proxy).await.unwrap();
        if split {
            s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            s.write_all(b"GET /two HTTP/1.1\r\nHo").await.unwrap();
        } else {
            s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHo")
                .await
                .unwrap();
        }
        let first = common::read_responses(&mut s, 1, "b\n").await;
        assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
        // Longer than an idle connection waits before it is parked (0.25-0.5 s).
        tokio::time::sleep(Duration::from_millis(800)).await;
        s.write_all(b"st: x\r\n\r\n").await.unwrap();
        let second = common::read_responses(&mut s, 1, "b\n").await;
        assert!(
            second.starts_with("HTTP/1.1 200 "),
            "split={split}: the second request lost its start: {second}"
        );
    }
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 4);
}
