//! Runtime faults stop only what they must: a stray signal, a response cut short, a backend
//! that accepts and never answers. The real binary where only a process shows it.

mod common;

use std::time::Duration;

use common::binary::Proc;
use common::{Backend, Http};

fn signal(p: &Proc, sig: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    assert_eq!(unsafe { kill(p.child.id() as i32, sig) }, 0);
}

/// Wait until the file at `log` holds `needle`.
async fn logged(log: &std::path::Path, needle: &str, what: &str) {
    common::eventually(5, what, || async {
        std::fs::read_to_string(log)
            .ok()
            .filter(|t| t.contains(needle))
            .map(|_| ())
    })
    .await;
}

const SIGHUP: i32 = 1;
const SIGUSR1: i32 = 10;

/// SIGHUP and SIGUSR1 end neither a quayside without TLS nor one without an access log (the
/// README's logrotate recipe sends SIGUSR1 to every quayside): each says what it did.
#[tokio::test]
async fn stray_signals_end_nothing_and_say_what_they_did() {
    let b = Backend::start("b").await;
    let mut p = Proc::spawn::<&str>(&[]);
    let proxy = p.addr(": proxy listening");
    let admin = p.addr("admin API listening");
    let http = Http::new();
    let add = format!("http://{admin}/add?no=1&ip=127.0.0.1&port={}", b.port());
    assert_eq!(http.get(&add).await.status, 200);
    signal(&p, SIGHUP);
    p.wait_for("SIGHUP: nothing to reload", Duration::from_secs(5));
    signal(&p, SIGUSR1);
    p.wait_for("SIGUSR1: no access log to reopen", Duration::from_secs(5));
    assert!(p.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(http.get(&format!("http://{proxy}/")).await.body, "b\n");
    p.stop();

    // With an access log: SIGUSR1 and SIGHUP reopen it after a rotation.
    let dir = std::env::temp_dir().join(format!("quayside-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let p = Proc::spawn(&["--access-log", log.to_str().unwrap()]);
    let proxy = p.addr(": proxy listening");
    let admin = p.addr("admin API listening");
    let add = format!("http://{admin}/add?no=1&ip=127.0.0.1&port={}", b.port());
    assert_eq!(http.get(&add).await.status, 200);
    for (round, (sig, said)) in [
        (SIGUSR1, "SIGUSR1: reopening the access log"),
        (SIGHUP, "SIGHUP done=reopening the access log"),
    ]
    .into_iter()
    .enumerate()
    {
        let (before, after) = (format!("/before{round}"), format!("/after{round}"));
        http.get(&format!("http://{proxy}{before}")).await;
        logged(&log, &before, "the line written").await;
        let rotated = dir.join("access.log.1");
        std::fs::rename(&log, &rotated).unwrap();
        signal(&p, sig);
        p.wait_for(said, Duration::from_secs(5));
        p.wait_for("access log reopened", Duration::from_secs(5));
        http.get(&format!("http://{proxy}{after}")).await;
        logged(&log, &after, "a new file at the old path").await;
        assert!(!std::fs::read_to_string(&rotated).unwrap().contains(&after));
        std::fs::remove_file(&rotated).unwrap();
    }
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

/// A backend that answers a head promising more than it sends, then closes: `Content-Length`
/// (`chunked` false) or a chunked body cut in the middle of a chunk.
async fn cutting_backend(chunked: bool) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer: &[u8] = if chunked {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
                };
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// A response the backend cuts short counts as one: the access log says `backend_cut`,
/// `quayside_responses_incomplete_total` counts it, on both fronts and for both framings.
#[tokio::test]
async fn a_response_cut_short_is_counted_as_one() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = std::env::temp_dir().join(format!("quayside-cut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let mut c = common::test_config();
    c.access_log = Some((
        quayside::access_log::Target::File(log.clone()),
        quayside::access_log::Format::Json,
    ));
    let q = common::Quayside::start_with(c).await;
    let http = Http::new();
    for (name, chunked) in [("length", false), ("chunked", true)] {
        let port = cutting_backend(chunked).await;
        let put = format!("/api/v1/services/{name}");
        let body = format!(r#"{{"hosts": ["{name}.test"]}}"#);
        assert_eq!(
            http.method("PUT", &q.admin_url(&put), &body).await.status,
            200
        );
        let add = format!("/add?no={name}-1&ip=127.0.0.1&port={port}&service={name}");
        assert_eq!(http.get(&q.admin_url(&add)).await.status, 200);
        // The fast path, and hyper's side (a Connection naming a header of its own).
        for (i, extra) in ["", "Connection: x-hop\r\nX-Hop: 1\r\n"].iter().enumerate() {
            let mut s = tokio::net::TcpStream::connect(q.proxy).await.unwrap();
            let path = format!("/cut-{name}-{i}");
            let req = format!("GET {path} HTTP/1.1\r\nHost: {name}.test\r\n{extra}\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 200"), "{name} {i}: {text}");
            assert!(text.contains("0123456789"), "{text}");
        }
    }
    let lines = common::eventually(5, "four access-log lines", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let cut: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["path"].as_str().is_some_and(|p| p.starts_with("/cut-")))
            .collect();
        (cut.len() == 4).then_some(cut)
    })
    .await;
    for l in &lines {
        assert_eq!(l["outcome"], "backend_cut", "{l}");
        assert_eq!(l["status"], 200, "{l}");
    }
    let metrics = http.get(&q.admin_url("/metrics")).await.body;
    for name in ["length", "chunked"] {
        let want = format!(
            r#"quayside_responses_incomplete_total{{service="{name}",backend="{name}-1",code="200",side="backend"}} 2"#
        );
        assert!(metrics.contains(&want), "{want} in:\n{metrics}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A real process (the static whoami) on `port` named `name`, stopped and killed on drop.
struct Whoami(std::process::Child);

impl Whoami {
    fn start(name: &str) -> (Whoami, u16) {
        let port = common::pebble::free_port();
        let bin = format!(
            "{}/{}/whoami",
            env!("CARGO_MANIFEST_DIR"),
            common::docker::STATIC_BIN_DIR
        );
        let child = std::process::Command::new(bin)
            .env("PORT", port.to_string())
            .env("WHOAMI_NAME", name)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("whoami");
        (Whoami(child), port)
    }

    fn signal(&self, sig: i32) {
        unsafe extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        assert_eq!(unsafe { kill(self.0.id() as i32, sig) }, 0);
    }
}

impl Drop for Whoami {
    fn drop(&mut self) {
        self.signal(SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

/// One of two backends stopped (SIGSTOP: the kernel still accepts its connections, nothing
/// answers) costs a second, not the service: 16 clients in a loop keep being answered, all with
/// 200 (the requests caught on it go to the other backend), it takes no client request while
/// stopped, even after its ejection's cooldowns, and it is let back by a check once it answers
/// again. Before, every client hung on it within a few requests, for the 60 s response timeout,
/// and after each cooldown clients' requests were its trial and hung again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_hangs_costs_a_second_not_the_service() {
    common::docker::build_static(&["whoami"]);
    let (a, a_port) = Whoami::start("a");
    let (b, b_port) = Whoami::start("b");
    let http = Http::new();
    for port in [a_port, b_port] {
        common::eventually(10, "whoami to listen", || async {
            let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            tokio::net::TcpStream::connect(to).await.ok().map(drop)
        })
        .await;
    }
    let q = common::Quayside::start().await;
    for (no, port) in [("a", a_port), ("b", b_port)] {
        let add = format!("/add?no={no}&ip=127.0.0.1&port={port}");
        assert_eq!(http.get(&q.admin_url(&add)).await.status, 200);
    }
    let mut events = common::EventStream::open(&q, "", None).await;
    let load = common::Load::start(&q, "hung.test", 16);
    load.more(200).await;
    b.signal(SIGSTOP);
    // The load goes on, at once (the old code stalled every client within a few requests).
    load.more(300).await;
    let view = |no: &'static str| {
        let (http, url) = (&http, q.admin_url(&format!("/api/v1/backends/{no}")));
        async move {
            let r = http.get(&url).await;
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["health"].clone()
        }
    };
    let ejected = common::eventually(10, "b ejected for not answering", || async {
        let h = view("b").await;
        (h["passive"]["needs_check"] == true).then_some(h)
    })
    .await;
    // The requests caught on it went elsewhere; then, through two cooldowns and two failed
    // checks (each taking 2 s), no client's request is its trial: nothing waits on it.
    common::eventually(5, "the requests caught on b to go elsewhere", || async {
        (view("b").await["in_flight"] == 0).then_some(())
    })
    .await;
    let checks = ejected["passive"]["ejections"].as_u64().unwrap() + 2;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let h = view("b").await;
        assert_eq!(
            h["in_flight"], 0,
            "a client's request went to the stopped b: {h}"
        );
        if h["passive"]["ejections"].as_u64().unwrap() >= checks {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no check failed: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.signal(SIGCONT);
    // Back by a check (GET /, any answer), not by a client's request.
    let why = loop {
        let (_, kind, v) = tokio::time::timeout(Duration::from_secs(70), events.next())
            .await
            .expect("b back within its cooldown");
        if kind == "health_up" && v["no"] == "b" {
            break v["reason"].as_str().unwrap_or_default().to_owned();
        }
    };
    assert!(why.contains("GET / answered"), "{why}");
    common::eventually(10, "b to take requests again", || async {
        let h = view("b").await;
        (h["requests"].as_u64().unwrap() > 0 && h["stalled"] == false).then_some(())
    })
    .await;
    load.finish("one of two backends stopped", 500).await;
    drop(a);
}

/// Backends that are all slow to answer (long polls) are not taken for stalled: with none of
/// them answering while a request waits, the request waits, once, on the backend it went to.
#[tokio::test]
async fn long_polls_on_every_backend_are_left_alone() {
    let slow = Duration::from_millis(2_500);
    let (a, b) = (
        Backend::start_slow("a", slow).await,
        Backend::start_slow("b", slow).await,
    );
    let q = common::Quayside::start().await;
    q.add("a", &a).await;
    q.add("b", &b).await;
    let http = Http::new();
    let url = q.proxy_url("/poll");
    let replies = futures_util::future::join_all((0..4).map(|_| http.get(&url))).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let hits = |b: &Backend| b.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(hits(&a) + hits(&b), 4, "a request was sent twice");
    for no in ["a", "b"] {
        let v = http
            .get(&q.admin_url(&format!("/api/v1/backends/{no}")))
            .await;
        let v: serde_json::Value = serde_json::from_str(&v.body).unwrap();
        assert_eq!(v["health"]["stalled"], false, "{v}");
        assert_eq!(v["health"]["failures"], 0, "{v}");
    }
}
