//! A client that pipelines mixed requests over one connection (some the fast path takes, some
//! it leaves to hyper), written in pieces split at arbitrary points, and pauses between bursts
//! so hyper gives the connection back to the fast path: every request reaches the backend once
//! and every answer comes back, in order. A test binary of its own: it counts parked
//! connections, which are per process.

mod common;

use common::{Backend, Quayside};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The bodies of the responses in `text`, in order.
fn bodies(text: &str) -> Vec<&str> {
    text.split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split_once("\r\n\r\n").map_or("", |(_, body)| body))
        .collect()
}

#[tokio::test]
async fn pipelined_bursts_split_anywhere_are_all_answered_in_order_across_parking() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    q.add("b", &b).await;
    let mut s = TcpStream::connect(q.proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    // xorshift: the same bursts every run.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut sent = 0;
    let mut through_hyper = 0;
    for burst in 0..16 {
        let mut bytes = Vec::new();
        let mut answers = Vec::new();
        for i in 0..1 + next(4) {
            let kind = next(4);
            let req = match kind {
                // Plain: the fast path's.
                0 => format!("GET /p{burst}-{i} HTTP/1.1\r\nHost: x\r\n\r\n"),
                // `TE: trailers` and chunked bodies: hyper's.
                1 => format!("GET /t{burst}-{i} HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n"),
                2 => "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_owned(),
                _ => "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".to_owned(),
            };
            through_hyper += usize::from(kind == 1 || kind == 2);
            bytes.extend_from_slice(req.as_bytes());
            answers.push(["b\n", "b\n", "5\n", "3\n"][kind]);
        }
        let mut cuts = vec![next(bytes.len()), next(bytes.len())];
        cuts.sort_unstable();
        let mut from = 0;
        for to in cuts.into_iter().chain([bytes.len()]) {
            s.write_all(&bytes[from..to]).await.unwrap();
            from = to;
            // Each part read on its own: the split is real, not merged in the socket.
            common::read_by_peer(&s).await;
        }
        let text = common::read_responses(&mut s, answers.len(), answers.last().unwrap()).await;
        assert_eq!(bodies(&text), answers, "burst {burst}: {text}");
        assert_eq!(
            text.matches("HTTP/1.1 200 ").count(),
            answers.len(),
            "burst {burst}: {text}"
        );
        sent += answers.len();
        if burst % 4 == 3 {
            // Quiet: whether hyper or the fast path had it, the connection ends up idle on
            // the fast path, holding no buffers.
            common::eventually(5, "the connection parked", || async {
                (q.runtime.parked_connections() == 1).then_some(())
            })
            .await;
        }
    }
    assert!(
        through_hyper >= 8,
        "only {through_hyper} requests went to hyper"
    );
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), sent);
}
