//! The access log and request ids: one JSON (or common-format) line per request, on both fronts
//! and for answers quayside gave itself, with the request id the client and the backend saw;
//! SIGUSR1 reopens the file. A test binary of its own: it signals its own process.

mod common;

use std::time::Duration;

use common::{Backend, Http, Quayside, eventually, full, test_config};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use quayside::access_log::{Format, Target};
use serde_json::Value;

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("quayside-alog-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("access.log")
}

async fn start(path: &std::path::Path, format: Format) -> Quayside {
    let mut c = test_config();
    c.access_log = Some((Target::File(path.to_owned()), format));
    Quayside::start_with(c).await
}

async fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    eventually(5, &format!("{n} access log lines"), || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= n).then_some(lines)
    })
    .await
}

#[tokio::test]
async fn every_request_is_a_json_line_with_its_request_id() {
    let path = temp("json");
    let b = Backend::start("a").await;
    let q = start(&path, Format::Json).await;
    q.add("a", &b).await;
    let http = Http::new();
    // 1. Fast path, with the client's own id and user agent.
    let req = Request::get(q.proxy_url("/x?y=1"))
        .header("x-request-id", "client-id-1")
        .header("user-agent", "test-agent/1 \"quoted\"")
        .body(full(""))
        .unwrap();
    let r = http.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-request-id"], "client-id-1");
    assert_eq!(r.headers["x-seen-request-id"], "client-id-1");
    assert_eq!(r.headers.get_all("x-request-id").iter().count(), 1);
    // 2. Fast path, an id too long to keep: a new one.
    let long = "x".repeat(200);
    let req = Request::get(q.proxy_url("/status?code=404"))
        .header("x-request-id", long.as_str())
        .body(full(""))
        .unwrap();
    let r = http.send(req).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let made = r.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 32, "{made}");
    assert!(made.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(r.headers["x-seen-request-id"], made.as_str());
    // 3. HTTP/2 (hyper's side): a new id, the same both ways.
    let req = Request::get(q.proxy_url("/h2")).body(full("")).unwrap();
    let resp = common::h2_client().request(req).await.unwrap();
    let h2_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(resp.headers()["x-seen-request-id"], h2_id.as_str());
    assert_ne!(h2_id, made);
    let _ = resp.into_body().collect().await.unwrap();
    // 4. No backend: quayside's own 503.
    let r = http.get(&q.proxy_url("/")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = http.get(&q.admin_url("/delete?no=a")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = http.get(&q.proxy_url("/gone")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // quayside's own answers carry the id too, on both fronts.
    let gone_id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let req = Request::get(q.proxy_url("/gone-h2"))
        .body(full(""))
        .unwrap();
    let resp = common::h2_client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let gone_h2_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();

    let lines = lines(&path, 6).await;
    let v: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |path: &str| {
        v.iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"))
    };
    let first = find("/x?y=1");
    assert_eq!(first["request_id"], "client-id-1");
    assert_eq!(first["user_agent"], "test-agent/1 \"quoted\"");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["status"], 200);
    assert_eq!(first["backend"], "a");
    assert_eq!(first["service"], "default");
    assert_eq!(first["upstream"], format!("127.0.0.1:{}", b.port()));
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["proto"], "HTTP/1.1");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["tls"], false);
    assert_eq!(first["bytes_sent"], 2, "the body \"a\\n\"");
    assert!(first["duration_ms"].as_f64().unwrap() >= first["upstream_ms"].as_f64().unwrap());
    assert!(humantime::parse_rfc3339(first["time"].as_str().unwrap()).is_ok());
    assert_eq!(find("/status?code=404")["request_id"], made.as_str());
    assert_eq!(find("/status?code=404")["status"], 404);
    let h2 = find("/h2");
    assert_eq!(
        (h2["proto"].as_str(), h2["request_id"].as_str()),
        (Some("HTTP/2.0"), Some(h2_id.as_str()))
    );
    let gone = find("/gone");
    assert_eq!(gone["status"], 503);
    assert_eq!(gone["backend"], "");
    assert_eq!(gone["attempts"], 0);
    assert_eq!(gone["upstream_ms"], Value::Null);
    assert_eq!(gone["request_id"], gone_id.as_str());
    assert_eq!(find("/gone-h2")["request_id"], gone_h2_id.as_str());
}

#[tokio::test]
async fn the_common_format_and_sigusr1_reopen() {
    let path = temp("common");
    let b = Backend::start("a").await;
    let q = start(&path, Format::Common).await;
    q.add("a", &b).await;
    let http = Http::new();
    assert_eq!(http.get(&q.proxy_url("/one")).await.status, StatusCode::OK);
    let first = lines(&path, 1).await;
    let re = |l: &str| {
        // 127.0.0.1 - - [01/Dec/2026:20:00:00 +0000] "GET /one HTTP/1.1" 200 2
        let (client, rest) = l.split_once(" - - [").unwrap();
        let (time, rest) = rest.split_once("] \"").unwrap();
        let (request, rest) = rest.split_once("\" ").unwrap();
        assert_eq!(client, "127.0.0.1", "{l}");
        assert_eq!(time.len(), 26, "{l}");
        assert!(time.ends_with(" +0000"), "{l}");
        (request.to_owned(), rest.to_owned())
    };
    assert_eq!(re(&first[0]), ("GET /one HTTP/1.1".into(), "200 2".into()));
    // logrotate: move the file, signal, and the next line goes to a new file at the path.
    let rotated = path.with_extension("1");
    std::fs::rename(&path, &rotated).unwrap();
    let pid = std::process::id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-USR1", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The writer reopens on its next round; until the new file exists, lines may still go to
    // the old one, so send until one lands in the new file.
    eventually(5, "a line in the reopened file", || async {
        assert_eq!(http.get(&q.proxy_url("/two")).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let text = std::fs::read_to_string(&path).ok()?;
        text.contains("GET /two").then_some(())
    })
    .await;
    assert!(
        std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("GET /one")
    );
}

/// Requests quayside answers before it can read them are logged too: a head that stalls (408,
/// with the request id the answer carried) and heads hyper refuses (400, 431).
#[tokio::test]
async fn stalled_and_malformed_requests_get_a_line() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = temp("unread");
    let mut c = test_config();
    c.access_log = Some((Target::File(path.to_owned()), Format::Json));
    c.proxy.client_header_timeout = Duration::from_millis(300);
    let q = Quayside::start_with(c).await;
    let answer = |sent: Vec<u8>| async move {
        let mut s = tokio::net::TcpStream::connect(q.proxy).await.unwrap();
        s.write_all(&sent).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    // Half a head, then nothing (the fast path waits for the rest, then answers).
    let stalled = answer(b"GET /never HTTP/1.1\r\nHost: x\r\n".to_vec()).await;
    assert!(stalled.starts_with("HTTP/1.1 408 "), "{stalled:?}");
    let id = stalled
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no request id in {stalled:?}"))
        .to_owned();
    // Not HTTP at all: hyper refuses it with 400.
    let garbage = answer(b"\x01\x02 nonsense\r\n\r\n".to_vec()).await;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage:?}");
    // A head larger than hyper takes: 431.
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        big.extend_from_slice(format!("x-filler-{i}: {}\r\n", "y".repeat(2000)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let large = answer(big).await;
    assert!(large.starts_with("HTTP/1.1 431 "), "{large:?}");

    let v: Vec<Value> = lines(&path, 3)
        .await
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // (Lines from different workers may come in any order.)
    let mut statuses: Vec<u64> = v.iter().map(|l| l["status"].as_u64().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [400, 408, 431], "{v:?}");
    let timed_out = v.iter().find(|l| l["status"] == 408).unwrap();
    assert_eq!(timed_out["request_id"], id.as_str());
    for l in &v {
        assert_eq!(l["client"], "127.0.0.1", "{l}");
        assert_eq!(
            (l["service"].as_str(), l["backend"].as_str()),
            (Some(""), Some("")),
            "{l}"
        );
        assert_eq!(l["attempts"], 0, "{l}");
    }
    // And counted, as answers quayside gave itself.
    let text = Http::new().get(&q.admin_url("/metrics")).await.body;
    for code in [408, 400, 431] {
        let series =
            format!("quayside_requests_total{{service=\"\",backend=\"\",code=\"{code}\"}} 1");
        assert!(text.contains(&series), "{series} in {text}");
    }
}
