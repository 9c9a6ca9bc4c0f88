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
    c.docker.host = Some(format!("tcp://{addr}"));
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
}
