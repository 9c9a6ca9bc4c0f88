//! `GET /metrics`: the counts match the requests the test sent (per backend and code, both
//! fronts, answers quayside gave itself), `promtool` accepts the text, series of a removed
//! backend disappear, and a real Prometheus scrapes it with the read token and answers the
//! same counts through its query API.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};

use common::{Backend, Http, Quayside, eventually, full, have_tool, test_config};
use http::{Request, StatusCode};
use quayside::admin::Token;

const ADMIN: &str = "metrics-admin-token";
const READ: &str = "metrics-read-token";

async fn start() -> Quayside {
    let mut c = test_config();
    c.admin.token = Some(Token::new(ADMIN));
    c.admin.read_token = Some(Token::new(READ));
    Quayside::start_with(c).await
}

async fn admin(q: &Quayside, method: &str, path: &str, body: &str) -> common::Reply {
    let req = Request::builder()
        .method(method)
        .uri(q.admin_url(path))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(full(body.to_owned()))
        .unwrap();
    Http::new().send(req).await
}

/// OpenMetrics text, as Prometheus asks for it (`openmetrics`), or the classic format.
async fn scrape_as(q: &Quayside, openmetrics: bool) -> String {
    let mut req =
        Request::get(q.admin_url("/metrics")).header("authorization", format!("Bearer {READ}"));
    if openmetrics {
        req = req.header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        );
    }
    let r = Http::new().send(req.body(full("")).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let want = if openmetrics {
        "application/openmetrics-text"
    } else {
        "text/plain; version=0.0.4"
    };
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with(want),
        "{:?}",
        r.headers
    );
    r.body
}

async fn scrape(q: &Quayside) -> String {
    scrape_as(q, true).await
}

/// `quayside_requests_total` samples: (service, backend, code) → count.
fn requests(text: &str) -> HashMap<(String, String, String), u64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("quayside_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let get = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .unwrap()
                .trim_end_matches('"')
                .to_owned()
        };
        out.insert(
            (get("service"), get("backend"), get("code")),
            value.parse().unwrap(),
        );
    }
    out
}

fn key(service: &str, backend: &str, code: u16) -> (String, String, String) {
    (service.into(), backend.into(), code.to_string())
}

/// `promtool check metrics` accepts `text` (skipped without promtool, unless required).
fn promtool_accepts(text: &str) {
    if !have_tool("promtool", "apt-get install prometheus") {
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn counts_match_the_requests_sent_and_gone_backends_disappear() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let q = start().await;
    for (no, be) in [("a", &a), ("b", &b)] {
        let r = admin(
            &q,
            "GET",
            &format!("/add?no={no}&ip=127.0.0.1&port={}", be.port()),
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = admin(
        &q,
        "PUT",
        "/api/v1/services/empty",
        r#"{"hosts":["empty.test"]}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let http = Http::new();
    let h2 = common::h2_client();
    let mut sent: HashMap<(String, String, String), u64> = HashMap::new();
    // 20 on the fast path, 10 over HTTP/2 (hyper's side), some 404s from the backends.
    for i in 0..30 {
        let path = if i % 5 == 0 { "/status?code=404" } else { "/" };
        let resp = if i < 20 {
            let r = http.get(&q.proxy_url(path)).await;
            (r.status, r.body)
        } else {
            let req = Request::get(q.proxy_url(path)).body(full("")).unwrap();
            let resp = h2.request(req).await.unwrap();
            let status = resp.status();
            use http_body_util::BodyExt;
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        // By status here; by backend below, from the backends' own hit counters.
        *sent
            .entry(key("default", "*", resp.0.as_u16()))
            .or_default() += 1;
    }
    // A service with no backend: 503 from quayside itself, backend "".
    for _ in 0..3 {
        let r = http.get_host(&q.proxy_url("/"), "empty.test").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let text = eventually(5, "all requests counted", || async {
        let text = scrape(&q).await;
        let total: u64 = requests(&text).values().sum();
        (total == 33).then_some(text)
    })
    .await;
    let got = requests(&text);
    assert_eq!(got.get(&key("empty", "", 503)), Some(&3), "{got:?}");
    for code in [200, 404] {
        let per_backend: u64 = ["a", "b"]
            .iter()
            .map(|be| got.get(&key("default", be, code)).copied().unwrap_or(0))
            .sum();
        assert_eq!(
            per_backend,
            sent[&key("default", "*", code)],
            "code {code}: {got:?}"
        );
    }
    // Per backend: what each backend itself saw.
    for (no, be) in [("a", &a), ("b", &b)] {
        let counted: u64 = [200, 404]
            .iter()
            .map(|c| got.get(&key("default", no, *c)).copied().unwrap_or(0))
            .sum();
        assert_eq!(
            counted,
            be.hits.load(std::sync::atomic::Ordering::SeqCst) as u64,
            "{no}: {got:?}"
        );
    }
    assert!(
        text.contains("quayside_request_duration_seconds_count{service=\"default\"} 30"),
        "{text}"
    );
    assert!(text.contains("quayside_backend_up{service=\"default\",backend=\"a\",source=\"manual\",state=\"active\"} 1"), "{text}");
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    assert!(text.ends_with("# EOF\n"));
    // promtool (Prometheus's own parser and linter) accepts the classic format, with the
    // same counts.
    let text = scrape_as(&q, false).await;
    assert_eq!(requests(&text), got);
    promtool_accepts(&text);
    // Drained: up 0 with its state; deleted: its series are gone.
    let r = admin(&q, "POST", "/api/v1/backends/b/drain", "").await;
    assert_eq!(r.status, StatusCode::OK);
    let text = scrape(&q).await;
    assert!(text.contains("quayside_backend_up{service=\"default\",backend=\"b\",source=\"manual\",state=\"draining\"} 0"), "{text}");
    let r = admin(&q, "DELETE", "/api/v1/backends/b", "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let text = eventually(5, "b's series gone", || async {
        let text = scrape(&q).await;
        (!text.contains("backend=\"b\"")).then_some(text)
    })
    .await;
    assert!(text.contains("backend=\"a\""), "{text}");
}

/// The value of the sample `series` (its name and labels exactly as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn control_plane_changes_state_writes_and_probes_are_counted() {
    let dir = std::env::temp_dir().join(format!("quayside-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut c = test_config();
    c.admin.token = Some(Token::new(ADMIN));
    c.admin.read_token = Some(Token::new(READ));
    c.state = Some(dir.join("state.json"));
    let q = Quayside::start_with(c).await;
    let (up, down) = (Backend::start("up").await, Backend::start("down").await);
    down.healthy
        .store(false, std::sync::atomic::Ordering::Relaxed);
    for (no, b, service) in [
        ("u", &up, "checked"),
        ("d", &down, "checked"),
        ("x", &up, "other"),
    ] {
        let body = format!(
            r#"{{"address": "127.0.0.1", "port": {}, "service": "{service}"}}"#,
            b.port()
        );
        let r = admin(&q, "PUT", &format!("/api/v1/backends/{no}"), &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = admin(&q, "POST", "/api/v1/backends/x/drain", "").await;
    assert_eq!(r.status, StatusCode::OK);
    let body = r#"{"health": {"path": "/health", "interval": "200ms", "fall": 2}}"#;
    let r = admin(&q, "PUT", "/api/v1/services/checked", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let text = eventually(10, "probes counted and d marked down", || async {
        let text = scrape(&q).await;
        let failed = sample(
            &text,
            "quayside_backend_probes_total{service=\"checked\",backend=\"d\",result=\"failed\"}",
        )?;
        let passed = sample(
            &text,
            "quayside_backend_probes_total{service=\"checked\",backend=\"u\",result=\"passed\"}",
        )?;
        let down = sample(
            &text,
            "quayside_backend_health_changes_total{source=\"manual\",kind=\"health_down\"}",
        )?;
        (failed >= 2.0 && passed >= 1.0 && down == 1.0).then_some(text)
    })
    .await;
    let changes = |kind: &str| {
        sample(
            &text,
            &format!("quayside_registry_changes_total{{source=\"manual\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(changes("added"), Some(3.0), "{text}");
    assert_eq!(changes("drained"), Some(1.0), "{text}");
    assert_eq!(changes("service_set"), Some(1.0), "{text}");
    assert_eq!(changes("removed"), None, "{text}");
    // Five changes, each appended to the journal and made durable before it was answered.
    let writes = sample(&text, "quayside_state_write_duration_seconds_count").unwrap();
    assert_eq!(writes, 5.0, "{text}");
    let le_1s = sample(
        &text,
        "quayside_state_write_duration_seconds_bucket{le=\"1.0\"}",
    );
    assert_eq!(le_1s, Some(5.0), "{text}");
    promtool_accepts(&scrape_as(&q, false).await);
    q.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Prometheus server of the test's own, scraping `target` every second with `token`.
struct Prometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prometheus {
    /// With examples/prometheus.yml as its comment says to run it (the token written to
    /// `quayside-read-token` beside it), scraping every second and at `target`.
    fn start(target: std::net::SocketAddr, token: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("quayside-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/prometheus.yml"
        ))
        .unwrap();
        assert!(
            example.contains("echo \"$QUAYSIDE_ADMIN_READ_TOKEN\" > examples/quayside-read-token")
                && example.contains("credentials_file: quayside-read-token"),
            "{example}"
        );
        std::fs::write(dir.join("quayside-read-token"), format!("{token}\n")).unwrap();
        let config = example
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("\"127.0.0.1:8001\"", &format!("\"{target}\""));
        assert_ne!(
            config, example,
            "the example's interval and target are where they were"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        // promtool accepts it, its token file found where the comment puts it.
        if have_tool("promtool", "apt-get install prometheus") {
            let out = Command::new("promtool")
                .args(["check", "config"])
                .arg(dir.join("prometheus.yml"))
                .output()
                .unwrap();
            assert!(out.status.success(), "promtool: {out:?}");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        Prometheus { child, port, dir }
    }

    /// The value of an instant query that returns one sample.
    async fn query(&self, q: &str) -> Option<f64> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.port,
            form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        );
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let resp = client.get(url.parse().ok()?).await.ok()?;
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_counts_with_the_read_token() {
    if !have_tool("prometheus", "apt-get install prometheus") {
        return;
    }
    let a = Backend::start("a").await;
    let q = start().await;
    let r = admin(
        &q,
        "GET",
        &format!("/add?no=a&ip=127.0.0.1&port={}", a.port()),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let http = Http::new();
    for _ in 0..25 {
        assert_eq!(http.get(&q.proxy_url("/")).await.status, StatusCode::OK);
    }
    for _ in 0..5 {
        let r = http.get(&q.proxy_url("/status?code=404")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    let prom = Prometheus::start(q.admin, READ);
    eventually(60, "Prometheus to have scraped all 30 requests", || async {
        let v = prom.query("sum(quayside_requests_total)").await?;
        (v == 30.0).then_some(())
    })
    .await;
    let by_code = |code: u16| {
        format!("sum(quayside_requests_total{{service=\"default\",backend=\"a\",code=\"{code}\"}})")
    };
    assert_eq!(prom.query(&by_code(200)).await, Some(25.0));
    assert_eq!(prom.query(&by_code(404)).await, Some(5.0));
    assert_eq!(prom.query("up{job=\"quayside\"}").await, Some(1.0));
    assert_eq!(
        prom.query("quayside_backend_up{backend=\"a\"}").await,
        Some(1.0)
    );
}
