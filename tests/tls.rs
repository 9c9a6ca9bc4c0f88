//! TLS termination: certificates chosen by SNI, HTTP/1.1 and ALPN h2 over TLS, reload without
//! dropping open connections.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Backend, Http, test_config};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use quayside::Listeners;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

fn write_cert(dir: &Path, stem: &str, name: &str) -> CertificateDer<'static> {
    let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    std::fs::write(dir.join(format!("{stem}.crt")), c.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.key")),
        c.signing_key.serialize_pem(),
    )
    .unwrap();
    c.cert.der().clone()
}

fn connector(roots: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

/// An HTTP/2 connection over TLS (ALPN h2, which the server must pick) to `name` at `addr`.
async fn h2_over(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    name: &str,
) -> hyper::client::conn::http2::SendRequest<common::BoxBody> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let s = connector(&[root], &[b"h2"])
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    h2
}

async fn get_over(
    sender: &mut hyper::client::conn::http1::SendRequest<common::BoxBody>,
    host: &str,
) -> (http::HeaderMap, String) {
    let req = http::Request::get("/tls")
        .header("host", host)
        .body(common::full(""))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (headers, String::from_utf8_lossy(&body).into_owned())
}

/// Start quayside with TLS on `config` and the backend on `backend_port` registered as no=1:
/// the plain proxy, admin and TLS addresses (it stops when the returned sender is dropped).
async fn start_tls(
    config: quayside::Config,
    backend_port: u16,
) -> (
    std::net::SocketAddr,
    std::net::SocketAddr,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::sync::Arc<quayside::proxy::Runtime>,
) {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (plain_addr, admin_addr, tls_addr) = (
        proxy.local_addr().unwrap(),
        admin.local_addr().unwrap(),
        tls.local_addr().unwrap(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = std::sync::Arc::new(quayside::proxy::Runtime::default());
    tokio::spawn(quayside::run_with(
        Listeners {
            proxy,
            admin,
            tls: Some(tls),
        },
        config,
        runtime.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let url = format!("http://{admin_addr}/add?no=1&ip=127.0.0.1&port={backend_port}");
    assert_eq!(Http::new().get(&url).await.status, 200);
    (plain_addr, admin_addr, tls_addr, stop, runtime)
}

#[tokio::test]
async fn tls_by_sni_with_h2_and_reload_without_dropping_connections() {
    let dir = std::env::temp_dir().join(format!("quayside-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a1 = write_cert(&dir, "a", "a.test");
    let b = write_cert(&dir, "b", "b.test");

    let backend = Backend::start("tls-backend").await;
    let mut config = test_config();
    config.tls.certs = vec![dir.join("a.crt"), dir.join("b.crt")];
    config.tls.keys = vec![dir.join("a.key"), dir.join("b.key")];
    let (_, admin_addr, tls_addr, _stop, _) = start_tls(config, backend.port()).await;
    let http = Http::new();

    // SNI picks the certificate: each name verifies only against its own root.
    for (name, root) in [("a.test", &a1), ("b.test", &b)] {
        let tcp = TcpStream::connect(tls_addr).await.unwrap();
        let s = connector(&[root], &[b"http/1.1"])
            .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let (headers, body) = get_over(&mut send, name).await;
        assert_eq!(body, "tls-backend\n");
        assert_eq!(headers["x-seen-xfp"], "https");
        assert_eq!(headers["x-seen-host"], name);
    }

    // ALPN h2 over TLS.
    let mut h2 = h2_over(tls_addr, &a1, "a.test").await;
    let req = http::Request::get("https://a.test/h2")
        .body(common::full(""))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seen-host"], "a.test");

    // An open HTTP/1.1 connection on the old certificate...
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let s = connector(&[&a1], &[b"http/1.1"])
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .unwrap();
    let (mut old, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(get_over(&mut old, "a.test").await.1, "tls-backend\n");

    // ...survives a reload that replaces a.test's certificate; new handshakes get the new one.
    let a2 = write_cert(&dir, "a", "a.test");
    let r = http
        .method(
            "POST",
            &format!("http://{admin_addr}/api/v1/tls/reload"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get_over(&mut old, "a.test").await.1, "tls-backend\n");
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    assert!(
        connector(&[&a1], &[b"http/1.1"])
            .connect(ServerName::try_from("a.test").unwrap(), tcp)
            .await
            .is_err(),
        "still serving the old certificate after reload"
    );
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    connector(&[&a2], &[b"http/1.1"])
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .unwrap();

    // A broken file: reload refuses, the current certificates stay.
    std::fs::write(dir.join("b.key"), "not a key").unwrap();
    let r = http
        .method(
            "POST",
            &format!("http://{admin_addr}/api/v1/tls/reload"),
            "",
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("b.key"), "{}", r.body);
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    connector(&[&b], &[b"http/1.1"])
        .connect(ServerName::try_from("b.test").unwrap(), tcp)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_binary_reloads_certificates_on_sighup() {
    let dir = std::env::temp_dir().join(format!("quayside-tls-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = write_cert(&dir, "a", "a.test");
    let (cert, key, state) = (dir.join("a.crt"), dir.join("a.key"), dir.join("state.json"));
    let p = common::binary::Proc::spawn(&[
        "--tls-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
        "--state".as_ref(),
        state.as_os_str(),
    ] as &[&std::ffi::OsStr]);
    let tls_addr = p.addr("HTTPS proxy listening");
    // Only signal once the SIGHUP handler is in place.
    p.wait_for("SIGHUP reloads them", std::time::Duration::from_secs(10));
    let handshake = |root: CertificateDer<'static>| {
        let addr = tls_addr.clone();
        async move {
            let tcp = TcpStream::connect(&addr).await.unwrap();
            connector(&[&root], &[b"http/1.1"])
                .connect(ServerName::try_from("a.test").unwrap(), tcp)
                .await
                .is_ok()
        }
    };
    assert!(handshake(old.clone()).await);
    let new = write_cert(&dir, "a", "a.test");
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    unsafe { kill(p.child.id() as i32, 1) };
    // Once the reload is logged, new handshakes get the new certificate.
    p.wait_for(
        "SIGHUP done=reloaded 1 TLS certificate pair(s)",
        std::time::Duration::from_secs(5),
    );
    assert!(handshake(new).await);
    assert!(!handshake(old).await);
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

/// Raw HTTP/1.1 over TLS: what a stalled head, ambiguous framing and a request hyper serves
/// get (the same answers as on the plain port).
#[tokio::test]
async fn raw_http1_over_tls_gets_408_400_and_falls_back_to_hyper() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = std::env::temp_dir().join(format!("quayside-tls-raw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = write_cert(&dir, "a", "a.test");
    let backend = Backend::start("tls-backend").await;
    let mut config = test_config();
    config.tls.certs = vec![dir.join("a.crt")];
    config.tls.keys = vec![dir.join("a.key")];
    // Longer than the quiet time after which hyper hands a connection back (PARK_AFTER, twice).
    config.proxy.client_header_timeout = std::time::Duration::from_millis(1000);
    let (_, _, tls_addr, _stop, runtime) = start_tls(config, backend.port()).await;
    let open = || async {
        let tcp = TcpStream::connect(tls_addr).await.unwrap();
        connector(&[&root], &[b"http/1.1"])
            .connect(ServerName::try_from("a.test").unwrap(), tcp)
            .await
            .unwrap()
    };
    /// What the first read after a request brings (a whole small response, here).
    async fn first_read<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        buf.truncate(n);
        buf
    }
    // A request with both Content-Length and chunked.
    let both = b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

    // Half a head, then nothing: 408 and closed.
    let mut s = open().await;
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: a.test\r\n")
        .await
        .unwrap();
    let text = common::read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");

    // Content-Length and chunked together, behind a pipelined request: 200, then 400, closed.
    let mut s = open().await;
    s.write_all(&[&b"GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n"[..], both].concat())
        .await
        .unwrap();
    let text = common::read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert_eq!(text.matches("HTTP/1.1 400 ").count(), 1, "{text:?}");
    assert!(
        text.contains("Content-Length and Transfer-Encoding"),
        "{text:?}"
    );

    // A chunked upload goes to hyper, which keeps serving the connection.
    let mut s = open().await;
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = common::read_to_close(&mut s).await;
    assert_eq!(text.matches("HTTP/1.1 200 ").count(), 2, "{text:?}");
    assert_eq!(text.matches("tls-backend\n").count(), 2, "{text:?}");

    // Once hyper serves the connection (after a chunked upload), the same rules hold there:
    // a head with Content-Length and chunked gets 400, and a head that stalls gets 408.
    let upload = b"POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    for (next, status) in [
        (&both[..], "400"),
        (&b"GET /slow HTTP/1.1\r\nHost: a.test\r\n"[..], "408"),
    ] {
        let mut s = open().await;
        s.write_all(upload).await.unwrap();
        assert!(first_read(&mut s).await.starts_with(b"HTTP/1.1 200 "));
        s.write_all(next).await.unwrap();
        let text = common::read_to_close(&mut s).await;
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text:?}");
    }

    // Also when that head is pipelined behind the upload in the same read, right behind it
    // or further back.
    let get = &b"GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n"[..];
    for between in [0, 1, 2] {
        let mut s = open().await;
        let mut bytes = upload.to_vec();
        for _ in 0..between {
            bytes.extend_from_slice(get);
        }
        bytes.extend_from_slice(both);
        s.write_all(&bytes).await.unwrap();
        let text = common::read_to_close(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
        assert_eq!(
            text.matches("HTTP/1.1 200 ").count(),
            1 + between,
            "{text:?}"
        );
        assert_eq!(text.matches("HTTP/1.1 400 ").count(), 1, "{text:?}");
    }

    // The same head split over two reads, on hyper (before the connection is parked), as the
    // next request or pipelined behind the upload: 400 all the same.
    for pipelined in [false, true] {
        for at in [12, 40, both.len() - 40, both.len() - 3] {
            let mut s = open().await;
            if pipelined {
                s.write_all(&[&upload[..], &both[..at]].concat())
                    .await
                    .unwrap();
            } else {
                s.write_all(upload).await.unwrap();
                assert!(first_read(&mut s).await.starts_with(b"HTTP/1.1 200 "));
                s.write_all(&both[..at]).await.unwrap();
            }
            s.flush().await.unwrap();
            common::read_by_peer(s.get_ref().0).await;
            s.write_all(&both[at..]).await.unwrap();
            let text = common::read_to_close(&mut s).await;
            let what = format!("pipelined {pipelined}, split at {at}: {text:?}");
            assert_eq!(
                text.matches("HTTP/1.1 200 ").count(),
                usize::from(pipelined),
                "{what}"
            );
            assert_eq!(text.matches("HTTP/1.1 400 ").count(), 1, "{what}");
        }
    }

    // Once quiet, hyper hands the connection back to the fast path, which finds a
    // conflicting head split over two reads too. (`TE` sends the request to hyper.)
    let mut s = open().await;
    s.write_all(b"GET /te HTTP/1.1\r\nHost: a.test\r\nTE: trailers\r\n\r\n")
        .await
        .unwrap();
    assert!(first_read(&mut s).await.starts_with(b"HTTP/1.1 200 "));
    common::eventually(5, "hyper handed the quiet connection back", || async {
        (runtime.parked_connections() == 1).then_some(())
    })
    .await;
    let (head, tail) = both.split_at(both.len() - 40);
    s.write_all(head).await.unwrap();
    s.flush().await.unwrap();
    common::read_by_peer(s.get_ref().0).await;
    s.write_all(tail).await.unwrap();
    let text = common::read_to_close(&mut s).await;
    assert_eq!(text.matches("HTTP/1.1 200 ").count(), 0, "{text:?}");
    assert_eq!(text.matches("HTTP/1.1 400 ").count(), 1, "{text:?}");
}

/// A backend answering `ok` to every request on keepalive connections, counting the
/// connections it accepts.
async fn counting_backend() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut chunk).await {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn plain_and_tls_workers_keep_backend_connections_of_their_own() {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    let dir = std::env::temp_dir().join(format!("quayside-tls-pools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = write_cert(&dir, "a", "a.test");
    let (backend, accepted) = counting_backend().await;
    let mut config = test_config();
    config.tls.certs = vec![dir.join("a.crt")];
    config.tls.keys = vec![dir.join("a.key")];
    // One worker per listener: the plain one and the TLS one.
    config.proxy.workers = 1;
    let (plain_addr, _, tls_addr, _stop, _) = start_tls(config, backend.port()).await;

    async fn get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        while !buf.ends_with(b"ok\n") {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut chunk))
                .await
                .expect("an answer")
                .unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        assert!(buf.starts_with(b"HTTP/1.1 200 "), "{buf:?}");
    }
    // Two plain requests, one after the other, on one backend connection (pooled).
    let mut plain = TcpStream::connect(plain_addr).await.unwrap();
    get(&mut plain).await;
    get(&mut plain).await;
    assert_eq!(accepted.load(SeqCst), 1);
    // A TLS request: the TLS worker opens a connection of its own; it does not take the
    // plain worker's (whose I/O that worker's thread drives).
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let mut secure = connector(&[&root], &[b"http/1.1"])
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .unwrap();
    get(&mut secure).await;
    get(&mut secure).await;
    assert_eq!(accepted.load(SeqCst), 2);
    get(&mut plain).await;
    assert_eq!(accepted.load(SeqCst), 2);
}

#[tokio::test]
async fn the_admin_api_can_be_served_over_tls() {
    let dir = std::env::temp_dir().join(format!("quayside-admin-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let der = write_cert(&dir, "admin", "localhost");
    let mut config = test_config();
    config.admin.token = Some(quayside::admin::Token::new("tls-admin-token"));
    config.admin.tls = Some((dir.join("admin.crt"), dir.join("admin.key")));
    let q = common::Quayside::start_with(config).await;
    let tcp = common::eventually(5, "the admin listener", || async {
        TcpStream::connect(q.admin).await.ok()
    })
    .await;
    let tls = connector(&[&der], &[b"http/1.1"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for (token, want) in [(None, 401), (Some("tls-admin-token"), 200)] {
        let mut req = http::Request::get("/api/v1/backends").header("host", "localhost");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = sender
            .send_request(req.body(common::full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "{token:?}");
        let _ = resp.into_body().collect().await;
    }
    // Plain HTTP to the TLS listener gets no HTTP answer.
    let mut plain = TcpStream::connect(q.admin).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut plain,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = common::read_to_close(&mut plain).await;
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `https_redirect` and `hsts` on the service: plain HTTP is redirected, HTTPS answered with
/// `Strict-Transport-Security`, over HTTP/1.1 (the fast path) and h2 alike.
#[tokio::test]
async fn https_redirect_and_hsts_over_tls() {
    let dir = std::env::temp_dir().join(format!("quayside-hsts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = write_cert(&dir, "h", "h.test");
    let backend = Backend::start("hsts-backend").await;
    let mut config = test_config();
    config.tls.certs = vec![dir.join("h.crt")];
    config.tls.keys = vec![dir.join("h.key")];
    config.proxy.https_port = 8443;
    let (plain, admin, tls_addr, _stop, _) = start_tls(config, backend.port()).await;
    let http = Http::new();
    let r = http
        .method(
            "PUT",
            &format!("http://{admin}/api/v1/services/default"),
            r#"{"https_redirect": true, "hsts": "max-age=60; includeSubDomains"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http
        .get_host(&format!("http://{plain}/x?y=1"), "h.test")
        .await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "https://h.test:8443/x?y=1");
    assert!(!r.headers.contains_key("strict-transport-security"));

    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let s = connector(&[&root], &[b"http/1.1"])
        .connect(ServerName::try_from("h.test").unwrap(), tcp)
        .await
        .unwrap();
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (headers, body) = get_over(&mut h1, "h.test").await;
    assert_eq!(body, "hsts-backend\n");
    assert_eq!(
        headers["strict-transport-security"],
        "max-age=60; includeSubDomains"
    );

    let mut h2 = h2_over(tls_addr, &root, "h.test").await;
    let req = http::Request::get("https://h.test/h2")
        .body(common::full(""))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=60; includeSubDomains"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
