//! `/readyz`: ready once every discovery source has finished its first sync or reported that
//! it cannot connect; open without a token, like `/healthz`.

mod common;

use common::{Http, Quayside, eventually, test_config};
use http::StatusCode;

#[tokio::test]
async fn ready_at_once_without_discovery() {
    let mut c = test_config();
    c.admin.token = Some(quayside::admin::Token::new("t"));
    let q = Quayside::start_with(c).await;
    let r = Http::new().get(&q.admin_url("/readyz")).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ready\n"));
}

#[tokio::test]
async fn not_ready_while_a_docker_endpoint_has_not_answered_then_ready_once_it_fails() {
    // An endpoint that accepts connections and never answers: the first sync cannot finish.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let mut c = test_config();
    c.docker.enabled = true;
    c.docker.endpoints = vec![quayside::discovery::docker::Endpoint::at(format!(
        "tcp://{addr}"
    ))];
    let q = Quayside::start_with(c).await;
    let http = Http::new();
    let r = eventually(5, "the source to be listed", || async {
        let r = http.get(&q.admin_url("/readyz")).await;
        (r.status != StatusCode::NOT_FOUND).then_some(r)
    })
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(
        r.body.contains("docker source default") && r.body.contains("first sync"),
        "{}",
        r.body
    );
    // The endpoint goes away: the source reports that it cannot connect, which is ready
    // (manual entries and the state file serve meanwhile).
    held.abort();
    let _ = held.await;
    eventually(10, "ready once the endpoint failed", || async {
        let r = http.get(&q.admin_url("/readyz")).await;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
}

#[test]
fn the_healthcheck_subcommand_asks_readyz() {
    let p = common::binary::Proc::spawn::<&str>(&[]);
    let admin = p.addr("admin API listening");
    let run = |addr: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_quayside"))
            .args(["--admin-listen", addr, "healthcheck"])
            .output()
            .unwrap()
    };
    let out = run(&admin);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
    // Nothing there: exit 1, one line saying so.
    drop(p);
    let out = run(&admin);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot ask the admin API"), "{err}");
    // An admin API on every address (`:PORT`) is asked on loopback.
    let p = common::binary::Proc::spawn_with_admin(":0", &["--admin-token", "hc-token"]);
    let admin = p.addr("admin API listening");
    let port = admin.rsplit(':').next().unwrap();
    let out = run(&format!(":{port}"));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_healthcheck_speaks_tls_to_a_tls_admin_listener_pinned_to_its_certificate() {
    let dir = std::env::temp_dir().join(format!("quayside-hc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The certificate names the operator's host, not 127.0.0.1: pinned, it is still accepted.
    for stem in ["admin", "other"] {
        let c = rcgen::generate_simple_self_signed(vec!["admin.example.com".into()]).unwrap();
        std::fs::write(dir.join(format!("{stem}.crt")), c.cert.pem()).unwrap();
        std::fs::write(
            dir.join(format!("{stem}.key")),
            c.signing_key.serialize_pem(),
        )
        .unwrap();
    }
    let cert = dir.join("admin.crt").display().to_string();
    let key = dir.join("admin.key").display().to_string();
    let p = common::binary::Proc::spawn(&["--admin-tls-cert", &cert, "--admin-tls-key", &key]);
    let admin = p.addr("admin API listening");
    let run = |cert: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_quayside"))
            .args([
                "--admin-listen",
                &admin,
                "--admin-tls-cert",
                cert,
                "--admin-tls-key",
                &key,
            ])
            .arg("healthcheck")
            .output()
            .unwrap()
    };
    let out = run(&cert);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
    // Another certificate than the listener's: refused, in one line.
    let out = run(&dir.join("other.crt").display().to_string());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("another certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
