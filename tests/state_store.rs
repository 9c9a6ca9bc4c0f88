//! The state store against what a second process and a real disk do: one process per state
//! file (through any path to it), checked journal records (a torn tail dropped, damage
//! refused), a frozen disk that stops neither health nor reads, a full disk at start that
//! stops nothing but changes, a tiny filesystem that still takes changes. The real binary
//! throughout: its control plane is the one-thread runtime `main` builds.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::Proc;
use common::mount::Mounted;
use common::{Backend, Http};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quayside-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The binary with `--state`, its proxy and admin addresses.
fn spawn(state: &Path) -> (Proc, String, String) {
    let p = Proc::spawn(&["--state", state.to_str().unwrap()]);
    let proxy = p.addr(": proxy listening");
    let admin = p.addr("admin API listening");
    (p, proxy, admin)
}

/// The binary's one-line refusal to start.
fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--no-docker",
        ])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    err
}

fn quayside(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quayside"))
        .args(args)
        .output()
        .unwrap()
}

async fn add(admin: &str, no: &str, port: u16) -> (u16, String) {
    let r = Http::new()
        .get(&format!(
            "http://{admin}/add?no={no}&ip=127.0.0.1&port={port}"
        ))
        .await;
    (r.status.as_u16(), r.body)
}

async fn nos(admin: &str) -> Vec<String> {
    let r = Http::new()
        .get(&format!("http://{admin}/api/v1/backends"))
        .await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["no"].as_str().unwrap().to_owned())
        .collect()
}

/// A second quayside on the same state file, by its path or through a symlink, refuses to
/// start in one line naming the file and the holder; so does `state import` into it. Export
/// reads it as it is. Once the first is gone, the second starts, with every acknowledged entry.
#[tokio::test]
async fn one_quayside_per_state_file() {
    let dir = temp_dir("lock");
    let state = dir.join("state.json");
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&state, &link).unwrap();
    let (mut a, _, admin) = spawn(&state);
    for i in 1..=3 {
        assert_eq!(add(&admin, &format!("a{i}"), 9000 + i).await.0, 200);
    }
    let holder = a.child.id();
    for path in [&state, &link] {
        let err = refused(&["--state", path.to_str().unwrap()]);
        assert!(err.contains(state.to_str().unwrap()), "{err}");
        assert!(err.contains(&format!("pid {holder}")), "{err}");
        assert!(err.contains("in use by another quayside"), "{err}");
    }
    let backup = dir.join("backup.json");
    std::fs::write(&backup, r#"{"version":1,"backends":[]}"#).unwrap();
    let out = quayside(&[
        "--state",
        link.to_str().unwrap(),
        "state",
        "import",
        backup.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another quayside"), "{err}");
    let out = quayside(&["--state", state.to_str().unwrap(), "state", "export"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("\"a3\""), "{out:?}");
    a.stop();
    let (_b, _, admin) = spawn(&link);
    assert_eq!(nos(&admin).await, ["a1", "a2", "a3"]);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Bytes that are not a record before acknowledged records refuse to start, naming the offset,
/// and leave both files as they were; a torn last record is dropped with a warning naming it.
#[tokio::test]
async fn a_damaged_journal_is_refused_and_a_torn_tail_dropped() {
    let dir = temp_dir("journal");
    let state = dir.join("state.json");
    let journal = dir.join("state.json.journal");
    let (mut p, _, admin) = spawn(&state);
    for no in ["j1", "j2", "j3"] {
        assert_eq!(add(&admin, no, 9000).await.0, 200);
    }
    p.stop(); // SIGKILL: the changes are in the journal only
    let whole = std::fs::read(&journal).unwrap();
    let first = whole.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut damaged = whole.clone();
    damaged[first..first + 4].fill(0);
    std::fs::write(&journal, &damaged).unwrap();
    let err = refused(&["--state", state.to_str().unwrap()]);
    assert!(err.contains(&format!("byte {first}")), "{err}");
    assert!(err.contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&journal).unwrap(), damaged);
    assert!(!state.exists());

    // Torn: the last record cut in the middle, as a crash mid-append leaves it.
    let end = whole.iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let last = whole[..end - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let mut torn = whole[..last + 12].to_vec();
    torn.extend([0u8; 100]);
    std::fs::write(&journal, &torn).unwrap();
    let (p, _, admin) = spawn(&state);
    let warned = p.logged("torn last record", Duration::from_secs(5));
    assert!(warned.contains(&format!("offset={last}")), "{warned}");
    assert_eq!(nos(&admin).await, ["j1", "j2"]);
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

/// With the state on a frozen filesystem, `/healthz`, `/readyz`, `/metrics` and reads of the
/// admin API answer at once; a change answers 503 after the bound saying it is applied and not
/// yet saved, is routed, and is saved once the disk thaws.
#[tokio::test]
async fn a_frozen_disk_stops_neither_health_nor_reads() {
    let Some(fs) = Mounted::ext4(16) else { return };
    let state = fs.path("state.json");
    let b = Backend::start("frozen").await;
    let (p, proxy, admin) = spawn(&state);
    let _thaw = fs.thaw_guard();
    assert_eq!(add(&admin, "before", b.port()).await.0, 200);
    fs.freeze();
    let change = tokio::spawn({
        let admin = admin.clone();
        let port = b.port();
        async move {
            let started = Instant::now();
            let r = Http::new()
                .get(&format!(
                    "http://{admin}/add?no=during&ip=127.0.0.1&port={port}&service=late"
                ))
                .await;
            (r.status.as_u16(), r.body, started.elapsed())
        }
    });
    // Meanwhile (the change waits on the disk), the control plane answers at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/backends",
        "/get?no=before",
    ] {
        let started = Instant::now();
        let r = Http::new().get(&format!("http://{admin}{path}")).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} waited {:?}",
            started.elapsed()
        );
    }
    let out = quayside(&["--admin-listen", &admin, "healthcheck"]);
    assert!(out.status.success(), "{out:?}");
    let (status, body, took) = change.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("is applied, and is saved when the disk answers"),
        "{body}"
    );
    assert!(took >= Duration::from_secs(9), "{took:?}");
    let metrics = Http::new()
        .get(&format!("http://{admin}/metrics"))
        .await
        .body;
    assert!(metrics.contains("quayside_state_writable 0"), "{metrics}");
    assert!(
        metrics.contains("quayside_state_unsaved_changes 1"),
        "{metrics}"
    );
    // Applied: routed.
    let r = Http::new().get(&format!("http://{proxy}/")).await;
    assert_eq!(r.status, 200);
    let r = Http::new()
        .get(&format!("http://{admin}/get?no=during"))
        .await;
    assert!(r.body.contains("service: late"), "{}", r.body);
    // Thawed: saved, and still there after a kill -9.
    fs.thaw();
    common::eventually(20, "the change saved", || async {
        let m = Http::new()
            .get(&format!("http://{admin}/metrics"))
            .await
            .body;
        (m.contains("quayside_state_unsaved_changes 0") && m.contains("quayside_state_writable 1"))
            .then_some(())
    })
    .await;
    drop(p);
    let (_p, _, admin) = spawn(&state);
    assert_eq!(nos(&admin).await, ["before", "during"]);
}

/// After a crash, a restart on a full filesystem starts and serves what was saved; changes get
/// 503 (and are not applied) until space returns, which the metrics and the log say.
#[tokio::test]
async fn a_full_disk_at_start_stops_nothing_but_changes() {
    let Some(fs) = Mounted::tmpfs("1m") else {
        return;
    };
    let state = fs.path("state.json");
    let b = Backend::start("full").await;
    let (mut p, _, admin) = spawn(&state);
    assert_eq!(add(&admin, "saved", b.port()).await.0, 200);
    p.stop();
    // (Without the zeros reserved after its records, the journal has no room left either.)
    let journal = fs.path("state.json.journal");
    let bytes = std::fs::read(&journal).unwrap();
    let end = bytes.iter().rposition(|&b| b == b'\n').unwrap() + 1;
    std::fs::File::options()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(end as u64)
        .unwrap();
    let filler = fs.fill();
    let (p, proxy, admin) = spawn(&state);
    p.logged("serving what was loaded", Duration::from_secs(5));
    assert_eq!(
        Http::new().get(&format!("http://{proxy}/")).await.body,
        "full\n"
    );
    let r = Http::new().get(&format!("http://{admin}/readyz")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (status, body) = add(&admin, "refused", b.port()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not applied"), "{body}");
    assert_eq!(nos(&admin).await, ["saved"]);
    let metrics = Http::new()
        .get(&format!("http://{admin}/metrics"))
        .await
        .body;
    assert!(metrics.contains("quayside_state_writable 0"), "{metrics}");
    std::fs::remove_file(filler).unwrap();
    assert_eq!(add(&admin, "later", b.port()).await.0, 200);
    let metrics = Http::new()
        .get(&format!("http://{admin}/metrics"))
        .await
        .body;
    assert!(metrics.contains("quayside_state_writable 1"), "{metrics}");
    drop(p);
    let (_p, _, admin) = spawn(&state);
    assert_eq!(nos(&admin).await, ["later", "saved"]);
}

/// A 64 KiB filesystem takes changes: the journal grows by what fits.
#[tokio::test]
async fn a_small_filesystem_takes_changes() {
    let Some(fs) = Mounted::tmpfs("64k") else {
        return;
    };
    let state = fs.path("state.json");
    let (mut p, _, admin) = spawn(&state);
    for i in 0..40 {
        let (status, body) = add(&admin, &format!("s{i}"), 9000).await;
        assert_eq!(status, 200, "change {i}: {body}");
    }
    p.stop();
    let (_p, _, admin) = spawn(&state);
    assert_eq!(nos(&admin).await.len(), 40);
}
