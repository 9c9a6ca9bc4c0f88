//! Filesystems of a test's own, for what only a real disk shows: a small tmpfs that fills up,
//! an ext4 image on a loop device that `fsfreeze` freezes. Each is unmounted (thawed first) and
//! removed when dropped, pass or fail. They need root; without it a test is skipped, unless
//! `QUAYSIDE_REQUIRE_DOCKER=1` (CI), where that is a failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub struct Mounted {
    pub dir: PathBuf,
    image: Option<PathBuf>,
    frozen: AtomicBool,
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn fresh_dir(kind: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "quayside-test-{kind}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `None` (skipped, with the reason printed) where mounting is not allowed here.
fn or_skip(r: Result<Mounted, String>) -> Option<Mounted> {
    match r {
        Ok(m) => Some(m),
        Err(e) => {
            assert!(
                std::env::var("QUAYSIDE_REQUIRE_DOCKER").ok().as_deref() != Some("1"),
                "QUAYSIDE_REQUIRE_DOCKER=1 but a test filesystem cannot be mounted: {e}"
            );
            eprintln!("SKIPPED: cannot mount a test filesystem ({e}); run as root");
            None
        }
    }
}

impl Mounted {
    /// A tmpfs of `size` (`64k`, `1m`).
    pub fn tmpfs(size: &str) -> Option<Mounted> {
        let dir = fresh_dir("tmpfs");
        let opts = format!("size={size},mode=0755");
        or_skip(
            run(
                "mount",
                &["-t", "tmpfs", "-o", &opts, "tmpfs", dir.to_str().unwrap()],
            )
            .map(|()| Mounted {
                dir,
                image: None,
                frozen: AtomicBool::new(false),
            }),
        )
    }

    /// An ext4 filesystem of `mb` MiB in an image file, on a loop device (it can be frozen).
    pub fn ext4(mb: u32) -> Option<Mounted> {
        let dir = fresh_dir("ext4");
        let image = dir.with_extension("img");
        let made = (|| {
            let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
            f.set_len(u64::from(mb) << 20).map_err(|e| e.to_string())?;
            run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()])?;
            run(
                "mount",
                &["-o", "loop", image.to_str().unwrap(), dir.to_str().unwrap()],
            )
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&image);
        }
        or_skip(made.map(|()| Mounted {
            dir,
            image: Some(image),
            frozen: AtomicBool::new(false),
        }))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `fsfreeze -f`: every write to it waits until [`Mounted::thaw`].
    pub fn freeze(&self) {
        run("fsfreeze", &["-f", self.dir.to_str().unwrap()]).unwrap();
        self.frozen.store(true, Ordering::SeqCst);
    }

    pub fn thaw(&self) {
        if self.frozen.swap(false, Ordering::SeqCst) {
            run("fsfreeze", &["-u", self.dir.to_str().unwrap()]).unwrap();
        }
    }

    /// Thaws it when dropped: declare it after a process that writes here, so that the
    /// process is never killed (and waited for) while a write of its own is frozen.
    pub fn thaw_guard(&self) -> Thaw<'_> {
        Thaw(self)
    }

    /// Fill it up with one file (`filler`), to the last byte.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0x55u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
        // What is left is less than a block; take that too.
        while f.write_all(&[0x55]).is_ok() {}
        p
    }
}

pub struct Thaw<'a>(&'a Mounted);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.thaw();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.thaw();
        let _ = run("umount", &[self.dir.to_str().unwrap()]);
        if Path::new(&self.dir).exists() {
            let _ = std::fs::remove_dir(&self.dir);
        }
        if let Some(i) = &self.image {
            let _ = std::fs::remove_file(i);
        }
    }
}
