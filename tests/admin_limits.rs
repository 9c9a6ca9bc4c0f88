//! What clients of the admin listener can hold: idle and half-sent connections are closed,
//! connections and event streams are capped (503 over a cap, counted in `/metrics`), and under
//! a flood with a small open-files limit the proxy port goes on serving; an accept loop that
//! runs out of descriptors keeps serving what it has, backs off and says so once.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, EventStream, Http, Quayside, test_config};
use quayside::admin::server::Limits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Read until the peer closes (or fails); what came, and when it ended.
async fn until_closed(s: &mut TcpStream, within: Duration) -> (String, Instant) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&buf).into(), Instant::now());
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "still open after {within:?}: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
}

#[tokio::test]
async fn idle_and_half_sent_admin_connections_are_closed_and_capped() {
    let mut c = test_config();
    c.admin.limits = Limits {
        head: Duration::from_millis(600),
        idle: Duration::from_millis(1500),
        connections: 4,
        event_streams: 1,
    };
    let q = Quayside::start_with(c).await;
    let started = Instant::now();
    // Four that send nothing, one of them half a head: all four places taken.
    let mut held = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(q.admin).await.unwrap();
        if i == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .unwrap();
        }
        held.push(s);
    }
    // The fifth is answered 503 and closed at once.
    let mut fifth = TcpStream::connect(q.admin).await.unwrap();
    let (text, _) = until_closed(&mut fifth, Duration::from_secs(2)).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("4 connections open"), "{text}");
    // The four are closed once the head time is up, not before.
    for s in &mut held {
        let (_, at) = until_closed(s, Duration::from_secs(5)).await;
        let after = at - started;
        assert!(
            after >= Duration::from_millis(500),
            "closed after {after:?}"
        );
    }
    // A keep-alive connection waiting for its next request head has the head time for it.
    let mut s = TcpStream::connect(q.admin).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let asked = Instant::now();
    let (text, at) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(at - asked >= Duration::from_millis(500), "{:?}", at - asked);

    // One event stream at a time: the second is a 503 while the first is open.
    let first = EventStream::open(&q, "-", None).await;
    let http = Http::new();
    let r = http.get(&q.admin_url("/api/v1/events")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("event streams"), "{}", r.body);
    drop(first);
    common::eventually(5, "the stream's place freed", || async {
        let r = http.get(&q.admin_url("/api/v1/events")).await;
        (r.status == 200).then_some(())
    })
    .await;
    let metrics = http.get(&q.admin_url("/metrics")).await.body;
    for want in [
        r#"quayside_admin_refused_total{kind="connections"} 1"#,
        r#"quayside_admin_refused_total{kind="event_streams"} 1"#,
    ] {
        assert!(metrics.contains(want), "{want} in:\n{metrics}");
    }
}

/// `ulimit -n 1024` and 1,100 connections to the admin port that send nothing: the proxy port
/// serves throughout, the admin API refuses what is over its cap and answers again once the
/// head time is up. Then 1,100 connections to the proxy port: the accept loop runs out of
/// descriptors, says so once, serves the connections it has, and accepts again when they go.
#[tokio::test]
async fn a_flood_of_idle_connections_stops_neither_port() {
    // This test's own end holds them all.
    let (soft, hard) = limit();
    assert!(
        hard >= 4096,
        "the test needs 4,096 descriptors, the hard limit is {hard}"
    );
    set_limit(hard.min(65536), hard);
    let _restore = Restore(soft, hard);

    let backend = Backend::start("b").await;
    let p = common::binary::Proc::spawn_with_open_files(&["--workers", "1"], 512, 1024);
    let proxy = p.addr("proxy listening");
    let admin = p.addr("admin API listening");
    let raised = p.wait_for("open-files limit", Duration::from_secs(10));
    assert!(raised.contains("from=512 to=1024"), "{raised}");
    let http = Http::new();
    let add = format!(
        "http://{admin}/add?no=1&ip=127.0.0.1&port={}",
        backend.port()
    );
    assert_eq!(http.get(&add).await.status, 200);
    let proxy_url = format!("http://{proxy}/");

    let mut flood = Vec::new();
    for i in 0..1100 {
        let mut s = TcpStream::connect(&admin).await.unwrap();
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /api/v1/services HTTP/1.1\r\nHo").await;
        }
        flood.push(s);
    }
    for _ in 0..20 {
        assert_eq!(http.get(&proxy_url).await.body, "b\n");
    }
    // Over the cap: a 503 saying why (once the flood's own refusals, which wait half a second
    // each for a head that never comes, are done: meanwhile one may be closed unanswered).
    let text = common::eventually(5, "a 503 from the admin API", || async {
        let mut s = TcpStream::connect(&admin).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let (text, _) = until_closed(&mut s, Duration::from_secs(3)).await;
        text.starts_with("HTTP/1.1 503").then_some(text)
    })
    .await;
    assert!(text.contains("256 connections open"), "{text}");
    // The held ones are closed after the head time (10 s), and the API answers again.
    common::eventually(20, "the admin API answering again", || async {
        let mut s = TcpStream::connect(&admin).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let (text, _) = until_closed(&mut s, Duration::from_secs(3)).await;
        text.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    let metrics = http.get(&format!("http://{admin}/metrics")).await.body;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"quayside_admin_refused_total{kind="connections"} "#))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= 800, "{refused}");
    drop(flood);

    // Out of descriptors on the proxy port.
    let mut kept = TcpStream::connect(&proxy).await.unwrap();
    let ask = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    kept.write_all(ask).await.unwrap();
    common::read_responses(&mut kept, 1, "b\n").await;
    let mut flood = Vec::new();
    for _ in 0..1100 {
        flood.push(TcpStream::connect(&proxy).await.unwrap());
    }
    let lines = p.lines_until("cannot accept connections", Duration::from_secs(10));
    assert!(
        lines.last().unwrap().contains("listener=\"proxy\""),
        "{lines:?}"
    );
    // What it has is served meanwhile.
    for _ in 0..5 {
        kept.write_all(ask).await.unwrap();
        common::read_responses(&mut kept, 1, "b\n").await;
    }
    drop(flood);
    let lines = p.lines_until("accepting connections again", Duration::from_secs(20));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("cannot accept connections"))
            .count(),
        0,
        "said once: {lines:#?}"
    );
    assert_eq!(http.get(&proxy_url).await.body, "b\n");
}

fn limit() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    (r.rlim_cur, r.rlim_max)
}

fn set_limit(soft: u64, hard: u64) {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
}

/// Puts this process's open-files limit back.
struct Restore(u64, u64);

impl Drop for Restore {
    fn drop(&mut self) {
        set_limit(self.0, self.1);
    }
}
