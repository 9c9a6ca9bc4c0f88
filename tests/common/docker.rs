//! Docker test harness: a `FROM scratch` whoami image built from the workspace's static
//! binary, containers and networks labelled with a per-test id and removed on drop (also when
//! the test fails).
#![allow(dead_code)]

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const CLEANUP_LABEL: &str = "quayside-test";

/// The whoami test image: a tag of this test process's own, never a user's image, removed when
/// the process exits.
pub fn image() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| format!("quayside-test-whoami:{}", std::process::id()))
}

/// The same with a HEALTHCHECK (exec form: a scratch image has no shell) every second.
pub fn image_hc() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| format!("quayside-test-whoami-hc:{}", std::process::id()))
}

/// Remove this process's test images when it exits (the test harness exits through `exit`,
/// which runs `atexit` handlers, whether the tests passed or not).
fn remove_images_at_exit() {
    extern "C" fn remove() {
        let _ = Command::new("docker")
            .args(["rmi", "-f", image_hc(), image()])
            .output();
    }
    unsafe extern "C" {
        fn atexit(f: extern "C" fn()) -> i32;
    }
    unsafe { atexit(remove) };
}

/// Run `docker` with `args`; returns trimmed stdout, panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether Docker tests can run. Without a daemon they are skipped with a printed reason,
/// unless `QUAYSIDE_REQUIRE_DOCKER=1` (CI), where that is a failure.
pub fn available() -> bool {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let r = OK.get_or_init(|| {
        let out = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                build_image();
                Ok(())
            }
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
            Err(e) => Err(format!("docker CLI not found: {e}")),
        }
    });
    match r {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("QUAYSIDE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
                panic!("QUAYSIDE_REQUIRE_DOCKER=1 but Docker is not usable: {why}");
            }
            eprintln!(
                "SKIPPED: Docker is not usable here ({why}); set QUAYSIDE_REQUIRE_DOCKER=1 to make this a failure"
            );
            false
        }
    }
}

/// Where `cargo build --target x86_64-unknown-linux-gnu` puts static binaries for images; the
/// tests build the debug profile (seconds for whoami, no LTO for quayside).
pub const STATIC_BIN_DIR: &str = "target-static/x86_64-unknown-linux-gnu/debug";

/// Build static binaries of the workspace's `packages` for `FROM scratch` images.
pub fn build_static(packages: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec![
        "build",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--target-dir",
        "target-static",
    ];
    for p in packages {
        args.extend(["-p", p]);
    }
    let status = Command::new(cargo)
        .current_dir(root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // (As scripts/build-images.sh builds them, so the two share one build.)
        .env("CARGO_INCREMENTAL", "0")
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .args(&args)
        .status()
        .expect("cargo");
    assert!(status.success(), "building static {packages:?} failed");
}

/// Build the static whoami binary and the images (once per test binary).
fn build_image() {
    let root = env!("CARGO_MANIFEST_DIR");
    build_static(&["whoami"]);
    remove_images_at_exit();
    let ctx = std::env::temp_dir().join(format!("quayside-whoami-ctx-{}", std::process::id()));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(
        format!("{root}/{STATIC_BIN_DIR}/whoami"),
        ctx.join("whoami"),
    )
    .unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY whoami /whoami\nEXPOSE 80\nENTRYPOINT [\"/whoami\"]\n",
    )
    .unwrap();
    docker(&["build", "-q", "-t", image(), ctx.to_str().unwrap()]);
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nHEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD [\"/whoami\", \"check\"]\n", image()),
    )
    .unwrap();
    docker(&["build", "-q", "-t", image_hc(), ctx.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(ctx);
}

/// One test's Docker world: its own label prefix (so parallel tests don't see each other's
/// containers) and a cleanup label on everything it creates.
pub struct Scope {
    pub id: String,
}

impl Scope {
    pub fn new() -> Scope {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "qt{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        Scope { id }
    }

    /// A quayside in-process that follows this scope's containers (by its label prefix).
    pub async fn quayside(&self) -> super::Quayside {
        let mut c = super::test_config();
        c.docker.enabled = true;
        c.docker.label_prefix = self.prefix().to_owned();
        super::Quayside::start_with(c).await
    }

    /// The label prefix the test's quayside uses.
    pub fn prefix(&self) -> &str {
        &self.id
    }

    /// `<prefix>.<key>=<value>`
    pub fn label(&self, key: &str, value: &str) -> String {
        format!("{}.{key}={value}", self.id)
    }

    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.id)
    }

    /// `docker run -d` with the cleanup label, a name, labels and extra args; returns the id.
    pub fn run(&self, suffix: &str, labels: &[String], extra: &[&str]) -> String {
        let name = self.name(suffix);
        let cleanup = format!("{CLEANUP_LABEL}={}", self.id);
        let mut args: Vec<&str> = vec!["run", "-d", "--name", &name, "--label", &cleanup];
        for l in labels {
            args.push("--label");
            args.push(l);
        }
        args.extend_from_slice(extra);
        if !extra.contains(&image()) && !extra.contains(&image_hc()) {
            args.push(image());
        }
        docker(&args)
    }

    pub fn network(&self, suffix: &str) -> String {
        let name = self.name(suffix);
        let cleanup = format!("{CLEANUP_LABEL}={}", self.id);
        docker(&["network", "create", "--label", &cleanup, &name]);
        name
    }

    /// The container's IP on `network`.
    pub fn ip(&self, container: &str, network: &str) -> String {
        docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            container,
        ])
    }
}

impl Default for Scope {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let filter = format!("label={CLEANUP_LABEL}={}", self.id);
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .output();
        }
        let nets = Command::new("docker")
            .args(["network", "ls", "-q", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for n in nets.split_whitespace() {
            let _ = Command::new("docker").args(["network", "rm", n]).output();
        }
    }
}

/// Wait until a GET of `/` with `host` is answered by a container whose hostname starts
/// with `id_prefix` (whoami answers with its hostname = short container id).
pub async fn wait_routed(http: &super::Http, q: &super::Quayside, host: &str, id: &str) {
    let short = &id[..12];
    super::eventually(
        10,
        &format!("container {short} routed for {host}"),
        || async {
            let r = http.get_host(&q.proxy_url("/"), host).await;
            let first = r.body.lines().next().unwrap_or("");
            (r.status == http::StatusCode::OK && first == short).then_some(())
        },
    )
    .await;
}
