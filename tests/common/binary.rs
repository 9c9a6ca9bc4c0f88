//! The real `quayside` binary as a child process, for what only a process can show (SIGKILL,
//! SIGTERM, SIGHUP, exit codes). Its log is read line by line to learn the bound addresses.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line it has logged so far.
    all: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Its working directory, of its own (so its default state file is never the checkout's,
    /// nor another test's); removed on drop.
    dir: std::path::PathBuf,
}

impl Proc {
    /// Start it on port 0 without Docker, plus `args`.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Proc {
        Self::spawn_with_admin("127.0.0.1:0", args)
    }

    /// The same with the admin API on `admin`.
    pub fn spawn_with_admin<S: AsRef<std::ffi::OsStr>>(admin: &str, args: &[S]) -> Proc {
        Self::spawn_full("127.0.0.1:0", admin, args, None)
    }

    /// The same with the proxy on `listen` and the admin API on `admin`.
    pub fn spawn_on<S: AsRef<std::ffi::OsStr>>(listen: &str, admin: &str, args: &[S]) -> Proc {
        Self::spawn_full(listen, admin, args, None)
    }

    /// Start it with its open-files limit set to `(soft, hard)` (as `ulimit -n`).
    pub fn spawn_with_open_files<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        soft: u64,
        hard: u64,
    ) -> Proc {
        Self::spawn_full("127.0.0.1:0", "127.0.0.1:0", args, Some((soft, hard)))
    }

    fn spawn_full<S: AsRef<std::ffi::OsStr>>(
        listen: &str,
        admin: &str,
        args: &[S],
        open_files: Option<(u64, u64)>,
    ) -> Proc {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "quayside-proc-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quayside"));
        cmd.current_dir(&dir)
            .args(["--listen", listen, "--admin-listen", admin, "--no-docker"])
            .args(args)
            .env("QUAYSIDE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((soft, hard)) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        let all = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = all.clone();
        // Also keeps the pipe drained so the child never blocks on it.
        std::thread::spawn(move || {
            for l in stderr.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(l.clone());
                let _ = tx.send(l);
            }
        });
        Proc {
            child,
            lines,
            all,
            dir,
        }
    }

    /// The next log line containing `needle` (earlier lines are skipped).
    pub fn wait_for(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no log line with {needle:?} within {within:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("quayside exited before logging {needle:?}")
                }
            }
        }
    }

    /// A line it has logged, ever, containing `needle`, waiting up to `within` for one.
    pub fn logged(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.all.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every log line up to the next one containing `needle`, that one included.
    pub fn lines_until(&self, needle: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let done = l.contains(needle);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!("no log line with {needle:?} within {within:?} ({e}): {seen:#?}"),
            }
        }
    }

    /// The `addr=` field of the next line containing `needle`.
    pub fn addr(&self, needle: &str) -> String {
        let line = self.wait_for(needle, Duration::from_secs(10));
        line.split("addr=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no addr= in {line:?}"))
            .to_owned()
    }
}

impl Proc {
    /// Stop it (SIGKILL) and wait.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
