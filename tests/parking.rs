//! Idle keepalive client connections give hyper's buffers back ("parking") and still serve
//! the next request on the same socket.

mod common;

use std::time::Duration;

use common::{Backend, Http, Quayside};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Wait until exactly `n` connections are parked.
async fn parked(q: &Quayside, n: u64, what: &str) {
    common::eventually(5, what, || async {
        (q.runtime.parked_connections() == n).then_some(())
    })
    .await;
}

async fn exchange(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    common::read_responses(s, 1, "b\n").await
}

#[tokio::test]
async fn an_idle_keepalive_connection_is_parked_and_serves_the_next_request() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    http.get(&q.admin_url(&format!("/add?no=b&ip=127.0.0.1&port={}", b.port())))
        .await;
    assert_eq!(q.runtime.parked_connections(), 0);

    // Plain requests (the fast path): the connection holds nothing once it is idle.
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(q.proxy).await.unwrap();
        assert!(
            exchange(&mut s, "/first")
                .await
                .starts_with("HTTP/1.1 200 ")
        );
        conns.push(s);
    }
    // A connection that asked to close is never parked (and is closed).
    let mut closing = TcpStream::connect(q.proxy).await.unwrap();
    closing
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    closing.read_to_end(&mut rest).await.unwrap();
    parked(&q, 3, "the three idle fast-path connections parked").await;

    // A request hyper serves (one with `TE: trailers`): parked once quiet for 0.25-0.5 s.
    let mut slow = TcpStream::connect(q.proxy).await.unwrap();
    slow.write_all(b"GET /te HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        .await
        .unwrap();
    assert!(
        common::read_responses(&mut slow, 1, "b\n")
            .await
            .starts_with("HTTP/1.1 200 ")
    );
    // Not at once: hyper's connection is parked only once quiet (a wait that shows it is not).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(q.runtime.parked_connections(), 3);
    parked(&q, 4, "the connection hyper served parked once quiet").await;
    conns.push(slow);

    // A chunked upload, its body split over two reads: hyper reads it, the I/O layer finds
    // where the body ends, and the connection is parked once quiet too. (`/upload` reads the
    // whole body before it answers; a response that starts before the body has ended leaves
    // the connection unparked.)
    let mut up = TcpStream::connect(q.proxy).await.unwrap();
    up.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        .await
        .unwrap();
    common::read_by_peer(&up).await;
    up.write_all(b"lo\r\n0\r\n\r\n").await.unwrap();
    assert!(
        common::read_responses(&mut up, 1, "5\n")
            .await
            .starts_with("HTTP/1.1 200 ")
    );
    parked(&q, 5, "the chunked upload's connection parked").await;
    conns.push(up);

    // The next request pipelined behind a chunked upload: both answered, and once both are
    // (hyper then holds nothing the service has not seen), the connection is parked too.
    let mut piped = TcpStream::connect(q.proxy).await.unwrap();
    piped
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = common::read_responses(&mut piped, 2, "b\n").await;
    assert_eq!(text.matches("HTTP/1.1 200 ").count(), 2, "{text}");
    parked(&q, 6, "the pipelined connection parked").await;
    conns.push(piped);

    // A request pipelined behind an upload whose body is still to come (the rest is sent
    // only after a while): never parked while the upload is unfinished.
    let mut unfinished = TcpStream::connect(q.proxy).await.unwrap();
    unfinished
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n",
        )
        .await
        .unwrap();
    // Longer than a connection takes to park (0.25-0.5 s): this one must not.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(q.runtime.parked_connections(), 6);
    unfinished
        .write_all(b"0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = common::read_responses(&mut unfinished, 2, "b\n").await;
    assert_eq!(text.matches("HTTP/1.1 200 ").count(), 2, "{text}");
    drop(unfinished);

    // Each parked connection wakes up for its next request, on the same socket, and parks
    // again.
    for s in &mut conns {
        let text = exchange(s, "/second").await;
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        assert!(!text.contains("connection: close"), "{text}");
    }
    parked(&q, 6, "every connection parked again").await;
    drop(conns);
    parked(&q, 0, "closed connections no longer counted").await;
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 16);
}
