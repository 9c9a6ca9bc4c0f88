//! `forward_auth` to an `https://` service, verified against the system's CA roots: here a CA
//! of the test's, trusted through `SSL_CERT_FILE` as an operator with a private CA would. (A
//! file of its own: the variable is the process's.)

mod common;

use std::sync::Arc;

use common::{Backend, Http, Quayside, full, test_config};
use http::Request;

/// An https auth service for `localhost`: 200 with `X-User: alice` for `X-Token: good`, else
/// 401. Its certificate comes from a CA whose PEM is returned.
async fn tls_auth_server() -> (u16, String) {
    use hyper::service::service_fn;
    let ca = common::TestCa::new("quayside test: auth CA");
    let (leaf, key) = ca.leaf(&["localhost"]);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let good = req.headers().get("x-token").is_some_and(|v| v == "good");
                    let resp = if good {
                        http::Response::builder()
                            .header("x-user", "alice")
                            .body(full("ok"))
                    } else {
                        http::Response::builder()
                            .status(401)
                            .body(full("go away\n"))
                    };
                    Ok::<_, std::convert::Infallible>(resp.unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca.pem)
}

#[tokio::test]
async fn forward_auth_over_https_verifies_the_service() {
    let (port, ca_pem) = tls_auth_server().await;
    let dir = std::env::temp_dir().join(format!("qs-fa-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("roots.pem");
    std::fs::write(&bundle, &ca_pem).unwrap();
    // SAFETY: this test is the file's only one and runs on one thread; nothing else reads the
    // environment meanwhile (the proxy reads the roots at its first https auth request).
    unsafe { std::env::set_var("SSL_CERT_FILE", &bundle) };

    let q = Quayside::start_with(test_config()).await;
    let backend = Backend::start("fa").await;
    let http = Http::new();
    for (name, url) in [
        ("good", format!("https://localhost:{port}/check")),
        // The same service by an address its certificate does not name: not verified.
        ("wrongname", format!("https://127.0.0.1:{port}/check")),
    ] {
        let body = serde_json::json!({"hosts": [format!("{name}.test")],
            "forward_auth": {"url": url, "copy_headers": ["X-User"]}});
        let r = http
            .method(
                "PUT",
                &q.admin_url(&format!("/api/v1/services/{name}")),
                &body.to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = http
            .method(
                "PUT",
                &q.admin_url(&format!("/api/v1/backends/{name}-1")),
                &serde_json::json!({"address": "127.0.0.1", "port": backend.port(), "service": name})
                    .to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let ask = |host: &'static str, token: &'static str| {
        let http = http.clone();
        let url = q.proxy_url("/whoami");
        async move {
            http.send(
                Request::get(url)
                    .header("host", host)
                    .header("x-token", token)
                    .body(full(""))
                    .unwrap(),
            )
            .await
        }
    };
    let ok = ask("good.test", "good").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        ok.headers.get("x-seen-user").map(|v| v.to_str().unwrap()),
        Some("alice"),
        "the auth service's X-User reached the backend"
    );
    let refused = ask("good.test", "bad").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body, "go away\n");
    // A certificate that does not name the host is not believed: 502, never a pass.
    let unverified = ask("wrongname.test", "good").await;
    assert_eq!(unverified.status, 502, "{}", unverified.body);
    assert!(
        unverified.body.contains("authentication service"),
        "{}",
        unverified.body
    );
    let _ = std::fs::remove_dir_all(&dir);
    q.shutdown().await.unwrap();
}
