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
        common::eventually(5, "the line written", || async {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains(&before))
                .map(|_| ())
        })
        .await;
        let rotated = dir.join("access.log.1");
        std::fs::rename(&log, &rotated).unwrap();
        signal(&p, sig);
        p.wait_for(said, Duration::from_secs(5));
        p.wait_for("access log reopened", Duration::from_secs(5));
        http.get(&format!("http://{proxy}{after}")).await;
        common::eventually(5, "a new file at the old path", || async {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains(&after))
                .map(|_| ())
        })
        .await;
        assert!(!std::fs::read_to_string(&rotated).unwrap().contains(&after));
        std::fs::remove_file(&rotated).unwrap();
    }
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}
