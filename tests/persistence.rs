//! The state file: survives restarts and `kill -9`, refuses to start on a corrupt file.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Backend, Http, Quayside};
use http::StatusCode;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quayside-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = temp_dir("restart");
    let state = dir.join("sub/state.json");
    let b = Backend::start("b").await;
    let http = Http::new();

    let q = Quayside::start_with_state(state.clone()).await;
    for no in ["1", "2"] {
        let r = http
            .get(&q.admin_url(&format!(
                "/add?no={no}&ip=127.0.0.1&port={}&weight=4",
                b.port()
            )))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    http.method("POST", &q.admin_url("/api/v1/backends/2/drain"), "")
        .await;
    http.method(
        "PUT",
        &q.admin_url("/api/v1/services/api"),
        r#"{"hosts":["api.example.com"]}"#,
    )
    .await;
    q.shutdown().await.unwrap();

    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"version\":1"), "{text}");

    let q = Quayside::start_with_state(state.clone()).await;
    let r = http.get(&q.admin_url("/get?no=1")).await;
    assert!(
        r.body.contains(&format!("port: {}", b.port())),
        "{}",
        r.body
    );
    assert!(r.body.contains("weight: 4"), "{}", r.body);
    assert!(
        http.get(&q.admin_url("/get?no=2"))
            .await
            .body
            .contains("state: draining")
    );
    let svc = http.get(&q.admin_url("/api/v1/services/api")).await;
    assert!(svc.body.contains("api.example.com"), "{}", svc.body);
    assert_eq!(http.get(&q.proxy_url("/")).await.body, "b\n");
    q.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// The state file and its journal hold password hashes and header secrets: they are made
/// 0600 whatever the umask, and an older world-readable one is tightened at start.
#[tokio::test]
async fn state_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = temp_dir("private");
    let state = dir.join("state.json");
    let journal = dir.join("state.json.journal");
    let http = Http::new();
    let q = Quayside::start_with_state(state.clone()).await;
    let r = http
        .get(&q.admin_url("/add?no=1&ip=127.0.0.1&port=9"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(mode(&journal), 0o600);
    q.shutdown().await.unwrap();
    assert_eq!(mode(&state), 0o600);
    // As an older quayside (or a umask of 022) left them.
    for p in [&state, &journal] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let q = Quayside::start_with_state(state.clone()).await;
    // (Loaded once the admin API answers.)
    assert!(
        http.get(&q.admin_url("/get?no=1"))
            .await
            .body
            .contains("port: 9")
    );
    assert_eq!((mode(&state), mode(&journal)), (0o600, 0o600));
    q.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_corrupt_state_file_is_refused_and_left_alone() {
    let dir = temp_dir("corrupt");
    let state = dir.join("state.json");
    for bad in [
        &b"{ not json"[..],
        br#"{"version": 7}"#,
        br#"{"version": 1, "backends": [{"no": "1", "address": "x.y", "port": 80}]}"#,
    ] {
        std::fs::write(&state, bad).unwrap();
        let mut q = Quayside::start_with_state(state.clone()).await;
        let err = q.task.take().unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), err)
            .await
            .expect("run() should return at once")
            .unwrap()
            .expect_err("run() must refuse a corrupt state file");
        let msg = err.to_string();
        assert!(msg.contains(&state.display().to_string()), "{msg}");
        assert!(msg.contains("not valid"), "{msg}");
        assert_eq!(std::fs::read(&state).unwrap(), bad, "the file was modified");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The binary, with its proxy and admin addresses.
struct Proc {
    p: common::binary::Proc,
    proxy: String,
    admin: String,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let p = common::binary::Proc::spawn(args);
        let proxy = p.addr(": proxy listening");
        let admin = p.addr("admin API listening");
        Proc { p, proxy, admin }
    }
}

#[tokio::test]
async fn ok_means_durable_even_after_kill_9() {
    let dir = temp_dir("kill9");
    let state = dir.join("state.json");
    let state_arg = state.to_str().unwrap();
    let http = Http::new();
    let p = Proc::spawn(&["--state", state_arg]);
    for i in 0..20 {
        let r = http
            .get(&format!(
                "http://{}/add?no=n{i}&ip=127.0.0.1&port={}",
                p.admin,
                9000 + i
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // SIGKILL right after the last OK.
    let mut p = p;
    p.p.child.kill().unwrap();
    p.p.child.wait().unwrap();
    drop(p);

    let p = Proc::spawn(&["--state", state_arg]);
    let r = http
        .get(&format!("http://{}/api/v1/backends", p.admin))
        .await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["backends"].as_array().unwrap().len(), 20, "{}", r.body);
    let r = http.get(&format!("http://{}/get?no=n19", p.admin)).await;
    assert!(r.body.contains("port: 9019"), "{}", r.body);
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn binary_exits_0_on_sigterm_and_refuses_corrupt_state() {
    let dir = temp_dir("sigterm");
    let b = Backend::start("b").await;
    let state = dir.join("state.json");
    let mut p = Proc::spawn(&["--state", state.to_str().unwrap()]);
    let http = Http::new();
    http.get(&format!(
        "http://{}/add?no=1&ip=127.0.0.1&port={}",
        p.admin,
        b.port()
    ))
    .await;
    assert_eq!(http.get(&format!("http://{}/", p.proxy)).await.body, "b\n");
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    unsafe { kill(p.p.child.id() as i32, 15) };
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = p.p.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status.expect("still running 5 s after SIGTERM").code(),
        Some(0)
    );

    std::fs::write(&state, "garbage").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--no-docker",
        ])
        .args(["--state", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(state.to_str().unwrap()) && err.contains("not valid"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "garbage");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_lists_the_flags_and_precedence() {
    let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--admin-listen",
        "--state",
        "--no-docker",
        "--docker-host",
        "--config",
        "Precedence",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}
