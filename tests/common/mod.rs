//! Test harness: real backend HTTP servers and a real quayside, all on loopback port 0.
#![allow(dead_code)]

pub mod binary;
pub mod daemon;
pub mod docker;
pub mod mount;
pub mod pebble;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use quayside::{Config, Listeners};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Read raw HTTP/1.1 from `s` until `count` responses are in and the last one's body ends
/// with `body_end` (the test backends answer with a short fixed body).
pub async fn read_responses(s: &mut tokio::net::TcpStream, count: usize, body_end: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf);
        if text.matches("HTTP/1.1 ").count() >= count && text.ends_with(body_end) {
            return text.into_owned();
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response timed out")
            .unwrap();
        assert!(n > 0, "closed after: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2_client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A body of `len` bytes produced in 64 KiB chunks, never held whole.
pub fn streaming_body(len: u64) -> BoxBody {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let stream = futures_stream(len, CHUNK, chunk);
    StreamBody::new(stream).boxed()
}

fn futures_stream(
    len: u64,
    chunk_len: u64,
    chunk: Bytes,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync {
    let mut left = len;
    tokio_stream_from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(chunk_len);
        left -= n;
        Some(Ok(Frame::data(chunk.slice(0..n as usize))))
    })
}

fn tokio_stream_from_fn<T, F: FnMut() -> Option<T> + Send + Sync + Unpin>(
    f: F,
) -> impl futures_core::Stream<Item = T> + Send + Sync {
    struct S<F>(F);
    impl<T, F: FnMut() -> Option<T> + Unpin> futures_core::Stream for S<F> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready((self.0)())
        }
    }
    S(f)
}

/// A backend that answers:
/// - `/slow?ms=N`: waits N ms, then its name;
/// - `/hang`: never answers;
/// - `/status?code=N`: that status;
/// - `/upload`: reads the whole body and answers its length;
/// - `/download?bytes=N`: streams N bytes;
/// - anything else: its name, with the request's view in `x-seen-*` headers.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// `/health` answers 200 while true, 503 while false.
    pub healthy: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct Opts {
    name: Arc<str>,
    hits: Arc<AtomicUsize>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    /// Added to every request.
    delay: Duration,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn query_num(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")[..]))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn backend_handle(o: Opts, req: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    let name = &o.name;
    if req.uri().path() == "/health" {
        let mut r = Response::new(full(""));
        if !o.healthy.load(Ordering::SeqCst) {
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        return Ok(r);
    }
    o.hits.fetch_add(1, Ordering::SeqCst);
    if !o.delay.is_zero() {
        tokio::time::sleep(o.delay).await;
    }
    let path = req.uri().path().to_owned();
    let mut resp = match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_num(&req, "ms"))).await;
            Response::new(full(format!("{name}\n")))
        }
        "/hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/status" => {
            let mut r = Response::new(full(format!("{name} says so\n")));
            *r.status_mut() = StatusCode::from_u16(query_num(&req, "code") as u16).unwrap();
            r
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame.unwrap().into_data() {
                    n += d.len() as u64;
                }
            }
            return Ok(Response::new(full(format!("{n}\n"))));
        }
        "/download" => Response::new(streaming_body(query_num(&req, "bytes"))),
        "/text" => {
            let n = query_num(&req, "bytes") as usize;
            let text: String = (0..n).map(|i| (b'a' + (i % 7) as u8) as char).collect();
            let mut r = Response::new(full(text));
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        _ => Response::new(full(format!("{name}\n"))),
    };
    let h = resp.headers_mut();
    let seen = |v: Option<&http::HeaderValue>| {
        v.cloned()
            .unwrap_or_else(|| http::HeaderValue::from_static("-"))
    };
    h.insert("x-seen-path", path.parse().unwrap());
    h.insert("x-seen-host", seen(req.headers().get("host")));
    h.insert("x-seen-xff", seen(req.headers().get("x-forwarded-for")));
    h.insert("x-seen-xfh", seen(req.headers().get("x-forwarded-host")));
    h.insert("x-seen-xfp", seen(req.headers().get("x-forwarded-proto")));
    h.insert("x-seen-connection", seen(req.headers().get("connection")));
    h.insert("x-seen-secret", seen(req.headers().get("x-hop-secret")));
    h.insert("x-seen-request-id", seen(req.headers().get("x-request-id")));
    h.insert(
        "x-seen-authorization",
        seen(req.headers().get("authorization")),
    );
    h.insert("x-seen-env", seen(req.headers().get("x-env")));
    h.insert("x-seen-real-ip", seen(req.headers().get("x-real-ip")));
    h.insert("x-seen-forwarded", seen(req.headers().get("forwarded")));
    // Every value and every name, for what a repeated or differently spelled header carries.
    let all = |name: &str| {
        let values: Vec<&str> = req
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            http::HeaderValue::from_static("-")
        } else {
            http::HeaderValue::from_str(&values.join(" | ")).unwrap()
        }
    };
    h.insert("x-seen-user", all("x-user"));
    h.insert("x-seen-xff-lines", all("x-forwarded-for"));
    let mut names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    h.insert(
        "x-seen-names",
        http::HeaderValue::from_str(&names.join(",")).unwrap(),
    );
    // An id of the backend's own, which the client must not get in place of the request's.
    h.insert(
        "x-request-id",
        http::HeaderValue::from_static("from-the-backend"),
    );
    // A hop-by-hop header the proxy must not pass back.
    h.insert("keep-alive", http::HeaderValue::from_static("timeout=99"));
    Ok(resp)
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, 0, Duration::ZERO).await
    }

    /// A backend that waits `delay` before every answer.
    pub async fn start_slow(name: &str, delay: Duration) -> Backend {
        Self::start_with(name, 0, delay).await
    }

    /// On a given port (0: any).
    pub async fn start_with(name: &str, port: u16, delay: Duration) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = Opts {
            name: name.into(),
            hits: Arc::new(AtomicUsize::new(0)),
            healthy: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            delay,
        };
        let o2 = opts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let o = o2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| backend_handle(o.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            hits: opts.hits,
            healthy: opts.healthy,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// quayside running in-process on two port-0 listeners.
pub struct Quayside {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// Its data plane's counters.
    pub runtime: Arc<quayside::proxy::Runtime>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), quayside::StartError>>>,
}

pub fn test_config() -> Config {
    let mut c = Config {
        state: None,
        ..Default::default()
    };
    c.docker.enabled = false;
    c.proxy.connect_timeout = Duration::from_secs(2);
    c.proxy.response_header_timeout = Duration::from_secs(5);
    c.proxy.shutdown_timeout = Duration::from_secs(5);
    c
}

impl Quayside {
    pub async fn start() -> Quayside {
        Self::start_with(test_config()).await
    }

    pub async fn start_with_state(path: PathBuf) -> Quayside {
        let mut c = test_config();
        c.state = Some(path);
        Self::start_with(c).await
    }

    pub async fn start_with(config: Config) -> Quayside {
        if let Ok(filter) = std::env::var("QUAYSIDE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy_addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel();
        let runtime = Arc::new(quayside::proxy::Runtime::default());
        let task = tokio::spawn(quayside::run_with(
            Listeners {
                proxy,
                admin,
                tls: None,
            },
            config,
            runtime.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Quayside {
            proxy: proxy_addr,
            admin: admin_addr,
            runtime,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Ask it to stop and wait until `run` returns.
    pub async fn shutdown(mut self) -> Result<(), quayside::StartError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    /// Register `b` as backend `no` (default service) through the seed API.
    pub async fn add(&self, no: &str, b: &Backend) {
        let url = format!("/add?no={no}&ip=127.0.0.1&port={}", b.port());
        let reply = Http::new().get(&self.admin_url(&url)).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.body);
    }
}

impl Drop for Quayside {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A plain HTTP/1.1 client (with its own keepalive pool).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, BoxBody>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(&self, req: Request<BoxBody>) -> Reply {
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let (parts, body) = resp.into_parts();
        // An event stream does not end: its head is the answer.
        if parts
            .headers
            .get("content-type")
            .is_some_and(|v| v == "text/event-stream")
        {
            return Reply {
                status: parts.status,
                headers: parts.headers,
                body: String::new(),
            };
        }
        let bytes = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(full("")).unwrap()).await
    }

    pub async fn get_host(&self, url: &str, host: &str) -> Reply {
        self.send(
            Request::get(url)
                .header("host", host)
                .body(full(""))
                .unwrap(),
        )
        .await
    }

    pub async fn method(&self, method: &str, url: &str, body: &str) -> Reply {
        self.send(
            Request::builder()
                .method(method)
                .uri(url)
                .header("content-type", "application/json")
                .body(full(body.to_owned()))
                .unwrap(),
        )
        .await
    }
}

/// Whether the external `tool` runs here (`tool --version`). Without it the test is skipped with
/// a printed reason, unless external tools are required (`QUAYSIDE_REQUIRE_DOCKER=1`, as
/// `.ci/run` sets), where that is a failure; `install` says how to get it.
#[allow(dead_code)]
pub fn have_tool(tool: &str, install: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("QUAYSIDE_REQUIRE_DOCKER").ok().as_deref() != Some("1"),
            "QUAYSIDE_REQUIRE_DOCKER=1 but {tool} is missing ({install})"
        );
        eprintln!("SKIPPED: {tool} is not installed ({install})");
    }
    ok
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after `secs` with `what`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clients sending GETs for `host` in a loop, counting answers other than 200.
pub struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(q: &Quayside, host: &'static str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (http, url) = (Http::new(), q.proxy_url("/"));
                let (stop, failures, total) = (stop.clone(), failures.clone(), total.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let r = http.get_host(&url, host).await;
                        total.fetch_add(1, Ordering::SeqCst);
                        if r.status != StatusCode::OK {
                            failures.fetch_add(1, Ordering::SeqCst);
                            eprintln!("failed: {} {}", r.status, r.body.trim());
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            failures,
            total,
            clients,
        }
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Wait until `n` more requests have been answered: the load is flowing.
    pub async fn more(&self, n: usize) {
        let until = self.total() + n;
        eventually(10, "the load to go on", || async {
            (self.total() >= until).then_some(())
        })
        .await;
    }

    /// Stop the clients; at least `min_total` requests were sent and none failed.
    pub async fn finish(self, what: &str, min_total: usize) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.await.unwrap();
        }
        let (failures, total) = (
            self.failures.load(Ordering::SeqCst),
            self.total.load(Ordering::SeqCst),
        );
        eprintln!("{what}: {total} requests, {failures} failed");
        assert!(
            total > min_total,
            "too little load to mean anything: {total}"
        );
        assert_eq!(failures, 0, "{failures} of {total} requests failed");
    }
}

/// `0100007F:93D1` (a `/proc/net/tcp` address: IPv4 in host byte order, port in hex).
fn proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::from((ip.to_le_bytes(), port)))
}

/// Wait until every byte written on `s` so far has been read by the program at the other end
/// (IPv4 loopback): `s` holds nothing unsent and the peer's socket nothing unread, as the
/// kernel reports in `/proc/net/tcp`. A test that splits a request over two writes calls this
/// between them, which proves the server got the two parts in two reads.
pub async fn read_by_peer(s: &tokio::net::TcpStream) {
    let (me, peer) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
    eventually(
        5,
        "the server to read what was sent so far",
        || async move {
            let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
            let (mut unsent, mut unread) = (None, None);
            for line in table.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (local, remote) = (proc_addr(f.get(1)?)?, proc_addr(f.get(2)?)?);
                let (tx, rx) = f.get(4)?.split_once(':')?;
                if local == me && remote == peer {
                    unsent = u64::from_str_radix(tx, 16).ok();
                }
                if local == peer && remote == me {
                    unread = u64::from_str_radix(rx, 16).ok();
                }
            }
            (unsent? == 0 && unread? == 0).then_some(())
        },
    )
    .await;
}

/// Read until the peer closes the connection (a reset counts as closing); panics if it is
/// still open after 5 s. Returns what came.
pub async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("the connection should close");
    String::from_utf8_lossy(&all).into_owned()
}

/// A CA of a test's own, issuing leaf certificates (for TLS servers the test starts).
pub struct TestCa {
    /// The CA's certificate, PEM: what a client trusts.
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names, or IP addresses) and its key.
    pub fn leaf(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName((*n).try_into().unwrap()),
            })
            .collect();
        let key = rcgen::KeyPair::generate().unwrap();
        (params.signed_by(&key, &self.issuer).unwrap(), key)
    }
}

/// An open `GET /api/v1/events` stream.
pub struct EventStream {
    body: Incoming,
    text: String,
}

impl EventStream {
    /// Open it with `token`, after event `last` if given.
    pub async fn open(q: &Quayside, token: &str, last: Option<u64>) -> EventStream {
        Self::open_at(q, token, "/api/v1/events", last).await
    }

    /// Open `path` (the events' path with a query) with `token`, after event `last` if given.
    pub async fn open_at(q: &Quayside, token: &str, path: &str, last: Option<u64>) -> EventStream {
        let mut req =
            Request::get(q.admin_url(path)).header("authorization", format!("Bearer {token}"));
        if let Some(id) = last {
            req = req.header("last-event-id", id.to_string());
        }
        let client = Client::builder(TokioExecutor::new()).build_http::<BoxBody>();
        let resp = client.request(req.body(full("")).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        EventStream {
            body: resp.into_body(),
            text: String::new(),
        }
    }

    /// The next event: (id, kind, data).
    pub async fn next(&mut self) -> (u64, String, serde_json::Value) {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}:")))
                        .map(|v| v.trim().to_owned())
                };
                let Some(data) = field("data") else { continue }; // a keep-alive comment
                return (
                    field("id").unwrap().parse().unwrap(),
                    field("event").unwrap(),
                    serde_json::from_str(&data).unwrap(),
                );
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), self.body.frame())
                .await
                .expect("an event within 5 s")
                .expect("the stream is open")
                .unwrap();
            if let Ok(d) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&d));
            }
        }
    }
}

/// An HTTP/1.1 server on a port-0 loopback listener answering every request with `answer`
/// (forward-auth services and the like); its port, and its task (abort it, or drop the runtime).
pub async fn serve_fn<F, Fut>(answer: F) -> (u16, JoinHandle<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<BoxBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, task)
}
