//! Swarm, for real, on one single-node swarm (made here and left when the tests end, unless one
//! was already there):
//! - services: an attachable overlay network, quayside in a container on it (the routing mesh
//!   does not work on this machine, and the host cannot reach overlay addresses), and a
//!   labelled service of `FROM scratch` whoami tasks. Scaling 3 → 5 → 2 serves exactly the
//!   running tasks; rolling `docker service update --force` under load fails no request;
//! - the state store: replicas with `--state-store swarm` share manual entries and drains,
//!   concurrent changes on both are kept, and `kill -9` loses nothing acknowledged.
//!
//! Everything is labelled and removed at the end, also on failure.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::docker::{CLEANUP_LABEL, docker};
use common::{Http, eventually};
use serde_json::Value;

const TOKEN: &str = "swarm-test-token";

/// The quayside and whoami images, built once for this binary's tests (tags of its own) and
/// removed when the process exits.
fn images() -> &'static [String; 2] {
    static IMAGES: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    IMAGES.get_or_init(|| {
        let pid = std::process::id();
        let images = [
            format!("quayside-test-swarm:{pid}"),
            format!("quayside-test-swarm-whoami:{pid}"),
        ];
        let st = Command::new("bash")
            .arg("scripts/build-images.sh")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PROFILE", "dev")
            .env("QUAYSIDE_IMAGE", &images[0])
            .env("WHOAMI_IMAGE", &images[1])
            .status()
            .unwrap();
        assert!(st.success(), "scripts/build-images.sh failed");
        extern "C" fn remove() {
            let pid = std::process::id();
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .arg(format!("quayside-test-swarm:{pid}"))
                .arg(format!("quayside-test-swarm-whoami:{pid}"))
                .output();
        }
        unsafe extern "C" {
            fn atexit(f: extern "C" fn()) -> i32;
        }
        unsafe { atexit(remove) };
        images
    })
}

/// One single-node swarm for the tests of this binary: made on first use unless the machine is
/// in one already, and left when the process exits (pass or fail) if it was made here.
fn ensure_swarm() {
    static MADE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        if state != "active" {
            // `swarm init` also makes the docker_gwbridge network, which `leave` keeps.
            let had_gwbridge = Command::new("docker")
                .args(["network", "inspect", "docker_gwbridge"])
                .output()
                .is_ok_and(|o| o.status.success());
            docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            extern "C" fn leave() {
                let _ = Command::new("docker")
                    .args(["swarm", "leave", "--force"])
                    .output();
            }
            extern "C" fn leave_and_remove_gwbridge() {
                leave();
                let _ = Command::new("docker")
                    .args(["network", "rm", "docker_gwbridge"])
                    .output();
            }
            unsafe extern "C" {
                fn atexit(f: extern "C" fn()) -> i32;
            }
            unsafe {
                atexit(if had_gwbridge {
                    leave
                } else {
                    leave_and_remove_gwbridge
                })
            };
        }
    });
}

/// `docker service …` that Swarm may refuse with "update out of sequence" when it changed the
/// service itself in between (e.g. its endpoint just after `create`): read again and retry.
fn service(args: &[&str]) {
    for _ in 0..20 {
        let out = Command::new("docker")
            .arg("service")
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("out of sequence"),
            "docker service {}: {err}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("docker service {}: still out of sequence", args.join(" "));
}

struct World {
    id: String,
    images: [String; 2],
    /// Images a test built for itself (removed with the world).
    extra_images: Vec<String>,
    network: String,
    service: String,
    proxy: String,
    admin: String,
}

impl World {
    fn start() -> World {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "qts{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let images = images().clone();
        ensure_swarm();
        let mut w = World {
            id: id.clone(),
            extra_images: Vec::new(),
            images,
            network: format!("{id}-net"),
            service: format!("{id}-web"),
            proxy: String::new(),
            admin: String::new(),
        };
        let cleanup = format!("{CLEANUP_LABEL}={id}");
        docker(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "--label",
            &cleanup,
            &w.network,
        ]);
        let q = docker(&[
            "run",
            "-d",
            "--name",
            &format!("{id}-quayside"),
            "--label",
            &cleanup,
            "--network",
            &w.network,
            "-p",
            "127.0.0.1::8080",
            "-p",
            "127.0.0.1::8001",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-e",
            "QUAYSIDE_LOG=info,quayside=debug",
            &w.images[0],
            "--admin-listen",
            "0.0.0.0:8001",
            "--admin-token",
            TOKEN,
            "--label-prefix",
            &id,
            "--state",
            "/data/state.json",
        ]);
        let port = |p: &str| {
            let out = docker(&["port", &q, p]);
            out.lines().next().unwrap().to_owned()
        };
        w.proxy = format!("http://{}", port("8080/tcp"));
        w.admin = format!("http://{}", port("8001/tcp"));
        w
    }

    fn label(&self, key: &str, value: &str) -> String {
        format!("{}.{key}={value}", self.id)
    }

    /// The whoami image with a HEALTHCHECK (exec form: the image has no shell) asking `port`.
    fn image_with_healthcheck(&mut self, suffix: &str, port: u16) -> String {
        let tag = format!("{}-{suffix}:test", self.id);
        let ctx = std::env::temp_dir().join(format!("{}-{suffix}", self.id));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM {}\nHEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD [\"/whoami\", \"check\", \"{port}\"]\n",
                self.images[1]
            ),
        )
        .unwrap();
        docker(&["build", "-q", "-t", &tag, ctx.to_str().unwrap()]);
        let _ = std::fs::remove_dir_all(&ctx);
        self.extra_images.push(tag.clone());
        tag
    }

    /// `docker service create -d` of `image` on the world's network, with the cleanup label
    /// and `labels`.
    fn service(&self, name: &str, labels: &[String], image: &str) {
        self.service_with(name, labels, &[], image)
    }

    /// The same, its tasks' containers also carrying `container_labels`.
    fn service_with(
        &self,
        name: &str,
        labels: &[String],
        container_labels: &[String],
        image: &str,
    ) {
        let cleanup = format!("{CLEANUP_LABEL}={}", self.id);
        let mut args = vec![
            "service", "create", "-d", "--name", name, "--label", &cleanup,
        ];
        for l in labels {
            args.extend(["--label", l.as_str()]);
        }
        for l in container_labels {
            args.extend(["--container-label", l.as_str()]);
        }
        args.extend(["--network", &self.network, image]);
        docker(&args);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = Command::new("docker")
                .args(["logs", "--tail", "60", &format!("{}-quayside", self.id)])
                .output();
            if let Ok(l) = logs {
                eprintln!("quayside's log:\n{}", String::from_utf8_lossy(&l.stderr));
            }
        }
        let label = format!("label={CLEANUP_LABEL}={}", self.id);
        let run = |args: &[&str]| {
            let _ = Command::new("docker").args(args).output();
        };
        let ids = |args: &[&str]| {
            Command::new("docker")
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        for s in ids(&["service", "ls", "-q", "--filter", &label]) {
            run(&["service", "rm", &s]);
        }
        for c in ids(&["ps", "-aq", "--filter", &label]) {
            run(&["rm", "-f", "-v", &c]);
        }
        // The services' task containers go away shortly after the services.
        let deadline = Instant::now() + Duration::from_secs(30);
        let on_network = format!("network={}", self.network);
        while !ids(&["ps", "-aq", "--filter", &on_network]).is_empty() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        for image in &self.extra_images {
            run(&["rmi", "-f", image]);
        }
        for n in ids(&["network", "ls", "-q", "--filter", &label]) {
            run(&["network", "rm", &n]);
        }
    }
}

async fn admin_send(http: &Http, w: &World, method: &str, path: &str, body: &str) -> u16 {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", w.admin))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(common::full(body.to_owned()))
        .unwrap();
    let r = http.send(req).await;
    assert!(
        r.status.is_success(),
        "{method} {path}: {} {}",
        r.status,
        r.body
    );
    r.status.as_u16()
}

async fn admin_get(http: &Http, w: &World, path: &str) -> Value {
    let req = http::Request::get(format!("{}{path}", w.admin))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(common::full(""))
        .unwrap();
    let r = http.send(req).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// The `no`s of the Swarm entries, sorted.
async fn swarm_entries(http: &Http, w: &World) -> Vec<String> {
    let all = admin_get(http, w, "/api/v1/backends").await;
    let mut nos: Vec<String> = all["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "swarm")
        .map(|e| e["no"].as_str().unwrap().to_owned())
        .collect();
    nos.sort();
    nos
}

/// The running tasks' container ids (12 characters), as Docker lists them.
fn running_tasks(w: &World) -> HashSet<String> {
    docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={}", w.service),
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// Which containers answer `n` requests.
async fn answering(http: &Http, w: &World, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        let r = http.get(&format!("{}/", w.proxy)).await;
        if r.status == 200 {
            seen.insert(r.body.lines().next().unwrap_or("").to_owned());
        }
    }
    seen
}

/// Scale to `n` and wait until exactly the running tasks are routed; returns how long after
/// `docker service scale` returned the last of them became routable.
async fn scale(http: &Http, w: &World, n: usize) -> Duration {
    service(&["scale", "-d", &format!("{}={n}", w.service)]);
    let started = Instant::now();
    let want: Vec<String> = (1..=n).map(|i| format!("{}.{i}", w.service)).collect();
    eventually(60, &format!("{n} tasks routed"), || async {
        (swarm_entries(http, w).await == want).then_some(())
    })
    .await;
    let routed = started.elapsed();
    let tasks = eventually(30, "docker lists exactly the running tasks", || async {
        let t = running_tasks(w);
        (t.len() == n).then_some(t)
    })
    .await;
    let seen = eventually(30, "every running task answers", || async {
        let seen = answering(http, w, 20 * n).await;
        (seen == tasks).then_some(seen)
    })
    .await;
    assert_eq!(seen.len(), n);
    routed
}

#[tokio::test]
async fn swarm_services_are_routed_by_task_and_updates_fail_no_request() {
    if !common::docker::available() {
        return;
    }
    let w = World::start();
    let http = Http::new();
    let cleanup = format!("{CLEANUP_LABEL}={}", w.id);
    docker(&[
        "service",
        "create",
        "-d",
        "--name",
        &w.service,
        "--label",
        &cleanup,
        "--label",
        &w.label("port", "80"),
        "--network",
        &w.network,
        "--replicas",
        "3",
        "--update-delay",
        "0s",
        "--stop-grace-period",
        "2s",
        &w.images[1],
    ]);
    let first = scale(&http, &w, 3).await;
    // Load from here on: scaling, pinning and rolling updates fail none of its requests.
    let stop = Arc::new(AtomicBool::new(false));
    let (total, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, total, failed) = (stop.clone(), total.clone(), failed.clone());
            let url = format!("{}/", w.proxy);
            tokio::spawn(async move {
                let http = Http::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = http.get(&url).await;
                    total.fetch_add(1, Ordering::SeqCst);
                    if r.status != 200 {
                        failed.fetch_add(1, Ordering::SeqCst);
                        eprintln!("failed: {} {}", r.status, r.body.trim());
                    }
                }
            })
        })
        .collect();
    let up = scale(&http, &w, 5).await;
    let down = scale(&http, &w, 2).await;
    // A pin by `no` overrides a task as it does a container: slot 1 pinned to slot 2's
    // address, every request goes to slot 2's task; unpinned, both answer again.
    let all = admin_get(&http, &w, "/api/v1/backends").await;
    let slot = |n: u32| {
        all["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["no"] == format!("{}.{n}", w.service))
            .unwrap()
            .clone()
    };
    let two = slot(2)["address"].as_str().unwrap().to_owned();
    let one = format!("/api/v1/backends/{}.1", w.service);
    let pin = format!(r#"{{"address": "{two}", "port": 80}}"#);
    admin_send(&http, &w, "PUT", &one, &pin).await;
    eventually(10, "only slot 2's task answers", || async {
        (answering(&http, &w, 20).await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(admin_get(&http, &w, &one).await["pinned"], true);
    admin_send(&http, &w, "DELETE", &one, "").await;
    eventually(10, "both tasks answer again", || async {
        (answering(&http, &w, 40).await == running_tasks(&w)).then_some(())
    })
    .await;
    eprintln!("scale to routable: 3 tasks {first:?}, 5 tasks {up:?}, 2 tasks {down:?}");
    let d = admin_get(&http, &w, "/api/v1/discovery").await;
    let kinds: Vec<&str> = d["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["docker", "swarm"], "{d}");

    // A rolling update (stop-first, the default) and one start-first.
    for order in ["stop-first", "start-first"] {
        let before = running_tasks(&w);
        service(&[
            "update",
            "--force",
            "--update-order",
            order,
            "--detach=false",
            "-q",
            &w.service,
        ]);
        eventually(60, &format!("{order}: the new tasks answer"), || async {
            let now = running_tasks(&w);
            let seen = answering(&http, &w, 40).await;
            (now.len() == 2 && now.is_disjoint(&before) && seen == now).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let (total, failed) = (total.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("scaling and rolling updates: {total} requests, {failed} failed");
    assert!(total > 200, "too little load to mean anything: {total}");
    assert_eq!(failed, 0, "{failed} of {total} requests failed");
}

/// Removes the test's state-store configs (by their label) when dropped.
struct Configs(String);

impl Drop for Configs {
    fn drop(&mut self) {
        // The state's generations, and automatic HTTPS's account, certificates and locks.
        for key in ["quayside.state-store", quayside::acme::swarm::ACME_LABEL] {
            let label = format!("label={key}={}", self.0);
            let ids = Command::new("docker")
                .args(["config", "ls", "-q", "--filter", &label])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in ids.split_whitespace() {
                let _ = Command::new("docker").args(["config", "rm", id]).output();
            }
        }
    }
}

/// A generation another replica writes just after this one read the newest, before its event
/// stream is open, still reaches it: the stream starts from before the read. (Generation 2 is
/// written from inside the hand-over of generation 1, which `follow` makes before it asks for
/// the stream; a replica missed such a one until the next change, and served a service
/// without the backend set just after it.)
#[tokio::test]
async fn a_generation_written_while_a_replica_starts_following_reaches_it() {
    use quayside::registry::swarm_store::{SwarmStore, follow};
    if !common::docker::available() {
        return;
    }
    ensure_swarm();
    let name = format!("qts{}-follow", std::process::id());
    let _configs = Configs(name.clone());
    let endpoint = quayside::discovery::docker::resolve_endpoint(None).unwrap();
    let (_, mut writer) = SwarmStore::open(&endpoint, &name, None).await.unwrap();
    let empty = quayside::registry::Registry::default();
    writer.save(&empty).await.unwrap();
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let (tx, mut adopted) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(follow(
        endpoint,
        name.clone(),
        move |g, _| {
            let (writer, tx, empty) = (writer.clone(), tx.clone(), empty.clone());
            async move {
                if g == 1 {
                    writer.lock().await.save(&empty).await.unwrap();
                }
                let _ = tx.send(g);
            }
        },
        stopped,
    ));
    assert_eq!(adopted.recv().await, Some(1));
    let next = tokio::time::timeout(Duration::from_secs(10), adopted.recv()).await;
    assert_eq!(next, Ok(Some(2)), "generation 2 never reached the follower");
    let _ = stop.send(true);
    follower.await.unwrap();
}

async fn nos(http: &Http, admin: &str) -> Vec<String> {
    let r = http.get(&format!("{admin}/api/v1/backends")).await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let mut nos: Vec<String> = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["no"].as_str().unwrap().to_owned())
        .collect();
    nos.sort();
    nos
}

/// The tests that run replicas in this process take turns: two pairs at once, each following
/// the swarm's configs, slowed each other's changes past their deadlines (seen once in CI).
static IN_PROCESS_REPLICAS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn replicas_share_their_state_through_the_swarm_store() {
    if !common::docker::available() {
        return;
    }
    let _turn = IN_PROCESS_REPLICAS.lock().await;
    ensure_swarm();
    let name = format!("qts{}-state", std::process::id());
    let _configs = Configs(name.clone());
    let replica = || {
        let mut c = common::test_config();
        c.state_store = quayside::config::StateStore::Swarm { name: name.clone() };
        common::Quayside::start_with(c)
    };
    let (a, b) = (replica().await, replica().await);
    let http = Http::new();
    // Both have read the store (else a change made meanwhile is simply part of what the
    // other starts with, and no event says it came from another replica).
    for q in [&a, &b] {
        eventually(10, "the replica ready", || async {
            (http.get(&q.admin_url("/readyz")).await.status == 200).then_some(())
        })
        .await;
    }
    let backend = common::Backend::start("pinned").await;
    // An /add on one replica routes on the other.
    let started = Instant::now();
    a.add("p1", &backend).await;
    eventually(10, "the other replica routes p1", || async {
        let r = http.get(&b.proxy_url("/")).await;
        (r.status == 200 && r.body.starts_with("pinned")).then_some(())
    })
    .await;
    eprintln!(
        "an /add on one replica routed by the other after {:?}",
        started.elapsed()
    );
    // The other replica's event says where the change came from.
    let added = event_line(b.admin, "\"no\":\"p1\"").await;
    assert!(added.contains("\"by\":\"another replica\""), "{added}");
    // Changes made on both at once are all kept, on both.
    let port = backend.port();
    let adds = (0..10).flat_map(|i| {
        [(&a, format!("a{i}")), (&b, format!("b{i}"))].map(|(q, no)| {
            let url = q.admin_url(&format!("/add?no={no}&ip=127.0.0.1&port={port}"));
            async move { Http::new().get(&url).await.status }
        })
    });
    for status in futures_util::future::join_all(adds).await {
        assert_eq!(status, 200);
    }
    let mut want: Vec<String> = (0..10)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .chain(["p1".to_owned()])
        .collect();
    want.sort();
    for q in [&a, &b] {
        let admin = format!("http://{}", q.admin);
        eventually(10, "every change on both replicas", || async {
            (nos(&http, &admin).await == want).then_some(())
        })
        .await;
    }
    // Each write made a generation; only the newest two are kept.
    let kept = eventually(10, "old generations removed", || async {
        let names = docker(&[
            "config",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("label=quayside.state-store={name}"),
        ]);
        let n = names.lines().count();
        (n <= 2).then_some(names)
    })
    .await;
    assert!(
        kept.lines().all(|l| l.starts_with(&format!("{name}-"))),
        "{kept}"
    );
    // A drain on one is a drain on the other.
    let r = http
        .method("POST", &b.admin_url("/api/v1/backends/p1/drain"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the drain reaches the other replica", || async {
        let r = http.get(&a.admin_url("/api/v1/backends/p1")).await;
        let v: Value = serde_json::from_str(&r.body).ok()?;
        (v["state"] == "draining").then_some(())
    })
    .await;

    // A replica killed with SIGKILL right after its change was acknowledged loses nothing.
    let args = [
        "--state-store",
        "swarm",
        "--state-store-name",
        name.as_str(),
    ];
    let mut p = common::binary::Proc::spawn(&args);
    let admin = format!("http://{}", p.addr("admin API listening"));
    let r = http
        .get(&format!("{admin}/add?no=k1&ip=127.0.0.1&port={port}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    p.stop();
    let p = common::binary::Proc::spawn(&args);
    let admin = format!("http://{}", p.addr("admin API listening"));
    want.push("k1".into());
    want.sort();
    assert_eq!(nos(&http, &admin).await, want);
    eventually(10, "the in-process replicas have k1 too", || async {
        (nos(&http, &format!("http://{}", a.admin)).await == want).then_some(())
    })
    .await;

    // Another instance given the same store name is refused in one line (it would take
    // over this deployment's state).
    let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .args(["--instance", "blue"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "the Swarm state store {name} belongs to the quayside without --instance"
        )),
        "{err}"
    );

    // `quayside state export` reads the swarm's state; `import` replaces it, and the running
    // replicas take it at once.
    let quayside = |more: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_quayside"))
            .args(args)
            .args(more)
            .output()
            .unwrap();
        assert!(out.status.success(), "{more:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let exported = quayside(&["state", "export"]);
    assert!(exported.contains("\"no\":\"k1\""), "{exported}");
    let file = std::env::temp_dir().join(format!("{name}-import.json"));
    std::fs::write(
        &file,
        format!(
            r#"{{"version":1,"backends":[{{"no":"only","address":"127.0.0.1","port":{port}}}]}}"#
        ),
    )
    .unwrap();
    quayside(&["state", "import", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    for q in [&a, &b] {
        let admin = format!("http://{}", q.admin);
        eventually(10, "the imported state on both replicas", || async {
            (nos(&http, &admin).await == ["only"]).then_some(())
        })
        .await;
    }
}

/// The first line of `admin`'s event stream (`/api/v1/events`, from the start of what it
/// keeps) that contains `needle`.
async fn event_line(admin: std::net::SocketAddr, needle: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        let mut buf = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no event with {needle} within 10 s: {text}"))
            .unwrap();
        assert!(n > 0, "the event stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// `GET url` (http://127.0.0.1:port/path) as raw HTTP/1.0, or `None` when it cannot connect
/// (nothing there yet): the status and body.
async fn try_get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Removes a stack (and the state its quayside kept) when dropped.
struct Stack {
    name: String,
    configs: Configs,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["stack", "rm", &self.name])
            .output();
        // Its containers and network go shortly after.
        let label = format!("label=com.docker.stack.namespace={}", self.name);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let left = Command::new("docker")
                .args(["ps", "-aq", "--filter", &label])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            let net = Command::new("docker")
                .args(["network", "ls", "-q", "--filter", &label])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            if !left && !net {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = &self.configs;
    }
}

#[tokio::test]
async fn the_example_stack_file_deploys_and_routes() {
    if !common::docker::available() {
        return;
    }
    ensure_swarm();
    let [quayside_image, whoami_image] = images();
    let name = format!("qtst{}", std::process::id());
    let state = format!("{name}-state");
    let _stack = Stack {
        name: name.clone(),
        configs: Configs(state.clone()),
    };
    let (http_port, admin_port) = (free_port(), free_port());
    let token = "stack-test-token";
    let out = Command::new("docker")
        .args(["stack", "deploy", "-c", "examples/stack.yml", &name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("QUAYSIDE_IMAGE", quayside_image)
        .env("WHOAMI_IMAGE", whoami_image)
        .env("QUAYSIDE_HTTP_PORT", http_port.to_string())
        .env("QUAYSIDE_ADMIN_PORT", admin_port.to_string())
        .env("QUAYSIDE_ADMIN_TOKEN", token)
        .env("QUAYSIDE_STATE_STORE_NAME", &state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The three tasks of web answer, in turn. (Nothing listens until quayside's task runs.)
    let seen = eventually(
        60,
        "the stack's web tasks answer through quayside",
        || async {
            let mut seen = HashSet::new();
            for _ in 0..30 {
                if let Some((200, body)) = try_get(http_port, "/", None).await {
                    seen.insert(body.lines().next().unwrap_or("").to_owned());
                }
            }
            (seen.len() == 3).then_some(seen)
        },
    )
    .await;
    assert_eq!(seen.len(), 3);
    // The admin API wants the token, and the state goes to the swarm.
    let (status, _) = try_get(admin_port, "/api/v1/backends", None).await.unwrap();
    assert_eq!(status, 401);
    let add = "/add?no=manual-1&ip=127.0.0.1&port=9";
    let (status, body) = try_get(admin_port, add, Some(token)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let configs = docker(&[
        "config",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("label=quayside.state-store={state}"),
    ]);
    assert_eq!(configs, format!("{state}-1"));
}

#[tokio::test]
async fn tasks_wait_for_their_healthcheck_are_routed_once_and_say_why_not() {
    if !common::docker::available() {
        return;
    }
    let mut w = World::start();
    let http = Http::new();
    let healthy = w.image_with_healthcheck("hc-ok", 80);
    // Its check asks a port nothing listens on: never healthy.
    let failing = w.image_with_healthcheck("hc-bad", 81);
    let port = w.label("port", "80");
    let (ok, bad, noport) = (
        format!("{}-ok", w.id),
        format!("{}-bad", w.id),
        format!("{}-noport", w.id),
    );
    w.service(&bad, std::slice::from_ref(&port), &failing);
    w.service(&noport, &[w.label("enable", "true")], &w.images[1].clone());
    w.service(&ok, std::slice::from_ref(&port), &healthy);
    // Its task's container carries our labels too: it is routed once, as the task.
    let labelled = format!("{}-labelled", w.id);
    let both = [w.label("enable", "true"), port.clone()];
    w.service_with(&labelled, &both, &both, &w.images[1].clone());
    let routed = [format!("{labelled}.1"), format!("{ok}.1")];
    // The healthy one is routed once its check passes; the failing one never is.
    eventually(60, "the healthy and the labelled tasks routed", || async {
        (swarm_entries(&http, &w).await == routed).then_some(())
    })
    .await;
    let all = admin_get(&http, &w, "/api/v1/backends").await;
    let sources: Vec<&str> = all["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["swarm", "swarm"], "{all}");
    // The task without a port label is listed as not routed, saying which label to set.
    let d = admin_get(&http, &w, "/api/v1/discovery").await;
    let swarm = d["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "swarm")
        .unwrap()
        .clone();
    let task = swarm["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == format!("{noport}.1"))
        .unwrap_or_else(|| panic!("{noport}.1 not listed: {swarm}"));
    assert_eq!(task["routed"], false, "{task}");
    let reason = task["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("{}.port", w.id)), "{reason}");
    // Swarm keeps the failing task `starting` (then replaces it): still not routed.
    let states = docker(&["service", "ps", "--format", "{{.CurrentState}}", &bad]);
    assert!(!states.contains("Running"), "{states}");
    assert_eq!(swarm_entries(&http, &w).await, routed);
}

/// A TCP relay on `port` for the CA's HTTP-01 validations: each connection goes to the replica
/// that is *not* ordering `name` (by its `GET /api/v1/tls`), so the challenge is answered by
/// the other one. `replicas`: each one's admin address and proxy port, once they run. Counts
/// the connections relayed that way.
async fn relay_to_the_other(
    port: u16,
    name: &'static str,
    replicas: Arc<std::sync::OnceLock<[(std::net::SocketAddr, u16); 2]>>,
) -> Arc<AtomicUsize> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let crossed = Arc::new(AtomicUsize::new(0));
    let counted = crossed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let (counted, replicas) = (counted.clone(), replicas.clone());
            tokio::spawn(async move {
                let Some(replicas) = replicas.get().copied() else {
                    return;
                };
                let mut states = Vec::new();
                for (admin, _) in replicas {
                    let r = Http::new().get(&format!("http://{admin}/api/v1/tls")).await;
                    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
                    let state = v["names"]
                        .as_array()
                        .and_then(|a| a.iter().find(|n| n["name"] == name))
                        .and_then(|n| n["state"].as_str())
                        .unwrap_or("")
                        .to_owned();
                    states.push(state);
                }
                let to = match (states[0].as_str(), states[1].as_str()) {
                    ("ordering", s) if s != "ordering" => {
                        counted.fetch_add(1, Ordering::SeqCst);
                        replicas[1].1
                    }
                    (s, "ordering") if s != "ordering" => {
                        counted.fetch_add(1, Ordering::SeqCst);
                        replicas[0].1
                    }
                    _ => replicas[0].1,
                };
                if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    crossed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_automatic_https_and_answer_each_others_challenges() {
    use common::pebble::{Pebble, Running, acme_config, free_port, have_pebble, served};
    if !common::docker::available() || !have_pebble() {
        return;
    }
    let _turn = IN_PROCESS_REPLICAS.lock().await;
    ensure_swarm();
    let store = format!("qts{}-acme", std::process::id());
    let _configs = Configs(store.clone());
    let ports = [(free_port(), free_port()), (free_port(), free_port())];
    let replicas = Arc::new(std::sync::OnceLock::new());
    let relay_port = free_port();
    let crossed = relay_to_the_other(relay_port, "share.test", replicas.clone()).await;
    let pebble = Pebble::start(relay_port, free_port()).await;
    let replica = |(proxy, tls): (u16, u16)| {
        let mut c = acme_config(
            &pebble,
            &pebble.dir.join("unused.json"),
            quayside::acme::Challenge::Http01,
        );
        c.state = None;
        c.state_store = quayside::config::StateStore::Swarm {
            name: store.clone(),
        };
        Running::start(proxy, tls, c)
    };
    let (a, b) = (replica(ports[0]).await, replica(ports[1]).await);
    let _ = replicas.set([(a.admin, ports[0].0), (b.admin, ports[1].0)]);
    let http = Http::new();
    for q in [&a, &b] {
        eventually(10, "the replica ready", || async {
            (http.get(&q.url("/readyz")).await.status == 200).then_some(())
        })
        .await;
    }
    let backend = common::Backend::start("shared").await;
    // The service and its backend, set on one replica, are the other's too (the state store).
    a.put(
        "/api/v1/services/app",
        serde_json::json!({"hosts": ["share.test"]}),
    )
    .await;
    a.put(
        "/api/v1/backends/1",
        serde_json::json!({"address": "127.0.0.1", "port": backend.port(), "service": "app"}),
    )
    .await;
    let root = pebble.issuing_root().await;
    let mut leaves = Vec::new();
    for (q, (_, tls)) in [(&a, ports[0]), (&b, ports[1])] {
        let view = common::pebble::wait_state(q, &pebble, "share.test", "valid").await;
        assert_eq!(view["source"], "acme", "{view}");
        let (leaf, body) = eventually(20, "share.test served", || {
            let root = root.clone();
            async move {
                // (The backend set on one replica reaches the other through the store.)
                served(([127, 0, 0, 1], tls).into(), &root, "share.test")
                    .await
                    .ok()
                    .filter(|(_, body)| body.ends_with("\r\n\r\nshared\n"))
            }
        })
        .await;
        assert!(body.ends_with("\r\n\r\nshared\n"), "{body}");
        leaves.push(leaf);
    }
    assert_eq!(
        leaves[0], leaves[1],
        "both replicas serve the one certificate"
    );
    let mut issued = 0;
    for q in [&a, &b] {
        issued += q.tls_view().await["orders"]["issued"].as_u64().unwrap();
    }
    assert_eq!(issued, 1, "one replica ordered the name");
    // The rate limits' ledger the replicas share counts that one certificate (and will after
    // a restart of either).
    let keep = quayside::acme::swarm::SwarmKeep::new(
        bollard::Docker::connect_with_local_defaults().unwrap(),
        &store,
        &pebble.directory,
    );
    let ledger: quayside::acme::schedule::Ledger = eventually(10, "the ledger kept", || async {
        let json = keep.ledger().await.ok()??;
        serde_json::from_slice(&json).ok()
    })
    .await;
    assert_eq!(ledger.issued["share.test"].len(), 1, "{ledger:?}");
    assert!(!ledger.orders.is_empty(), "{ledger:?}");
    assert!(
        crossed.load(Ordering::SeqCst) >= 1,
        "the CA's validation reached the replica that was not ordering, and passed"
    );
    a.stop().await;
    b.stop().await;
}

/// A replica that died mid-order leaves its lock config behind: another replica takes the
/// order over once the lock is older than the takeover age, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_left_by_a_dead_replica_is_taken_over_when_stale() {
    use quayside::acme::swarm::SwarmKeep;
    if !common::docker::available() {
        return;
    }
    // (Its config churn beside a pair of replicas slowed their store past a deadline in CI:
    // it takes its turn with them.)
    let _turn = IN_PROCESS_REPLICAS.lock().await;
    ensure_swarm();
    let store = format!("qts{}-lock", std::process::id());
    let _configs = Configs(store.clone());
    let docker = || bollard::Docker::connect_with_local_defaults().unwrap();
    let directory = "https://ca.quayside.test/dir";
    let dead = SwarmKeep::new(docker(), &store, directory);
    assert!(
        dead.claim("stale.test").await.unwrap(),
        "the first replica takes the order"
    );
    // (It dies here: no release.)
    let patient = SwarmKeep::new(docker(), &store, directory);
    assert!(
        !patient.claim("stale.test").await.unwrap(),
        "a fresh lock holds at the default 10 minutes"
    );
    let quick = SwarmKeep::new(docker(), &store, directory).stale_after(Duration::from_secs(1));
    // (Lock ages are whole seconds: past 1 s is 2 s after it was made, at most 3.)
    eventually(10, "the stale lock taken over", || async {
        quick.claim("stale.test").await.unwrap().then_some(())
    })
    .await;
    assert!(
        !patient.claim("stale.test").await.unwrap(),
        "the new owner's lock holds in turn"
    );
    quick.release("stale.test").await;
    assert!(
        patient.claim("stale.test").await.unwrap(),
        "released: free again"
    );
    patient.release("stale.test").await;
}
