//! The root docker-compose.yml, for real: images built offline by scripts/build-images.sh
//! (debug profile, tags of the test's own), `docker-compose up`, traffic through the published
//! port, the examples' pin and drain blocks as written, a drain kept across a restart of the
//! quayside container; `down -v` and the images removed at the end (also on failure).

mod common;

use std::process::Command;

use common::Http;
use common::docker::docker;
use common::eventually;
use http::StatusCode;

/// The admin token the test's stack runs with (in the environment, as `.env` would give it).
const TOKEN: &str = "compose-test-token";
/// The read-only token (Prometheus's), passed through as `.env` would give it.
const READ_TOKEN: &str = "compose-test-read-token";

struct Project {
    name: String,
    root: &'static str,
    /// Image tags of this test's own, passed to build-images.sh and Compose.
    images: [(&'static str, String); 2],
}

impl Project {
    fn new(root: &'static str) -> Project {
        let pid = std::process::id();
        Project {
            name: format!("qtcompose{pid}"),
            root,
            images: [
                ("QUAYSIDE_IMAGE", format!("quayside-test-compose:{pid}")),
                (
                    "WHOAMI_IMAGE",
                    format!("quayside-test-compose-whoami:{pid}"),
                ),
            ],
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.root)
            .env("COMPOSE_PROJECT_NAME", &self.name)
            .env("QUAYSIDE_ADMIN_TOKEN", TOKEN)
            .env("QUAYSIDE_ADMIN_READ_TOKEN", READ_TOKEN)
            .envs(self.images.iter().map(|(k, v)| (*k, v.as_str())));
        c
    }

    fn compose(&self, args: &[&str], envs: &[(&str, String)]) -> std::process::Output {
        self.command("docker-compose")
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("docker-compose")
    }
}

/// The label of the containers the test starts beside the project (removed with it).
const EXTRA_LABEL: &str = "quayside-test-compose-extra";

impl Drop for Project {
    fn drop(&mut self) {
        let filter = format!("label={EXTRA_LABEL}={}", self.name);
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        if let Ok(out) = out {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            for id in ids.split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let _ = self.compose(&["down", "-v", "--remove-orphans"], &[]);
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.images[0].1, &self.images[1].1])
            .output();
    }
}

/// The shell block that follows `heading` in examples/README.md.
fn example(root: &str, heading: &str) -> String {
    let text = std::fs::read_to_string(format!("{root}/examples/README.md")).unwrap();
    let after = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"))..];
    let start = after.find("```sh\n").unwrap() + 6;
    let len = after[start..].find("```").unwrap();
    after[start..start + len].to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_compose_example_routes_by_scale_host_and_path() {
    if !common::docker::available() {
        return;
    }
    if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("QUAYSIDE_REQUIRE_DOCKER").ok().as_deref() != Some("1"),
            "QUAYSIDE_REQUIRE_DOCKER=1 but docker-compose is missing"
        );
        eprintln!("SKIPPED: docker-compose is not installed");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let project = Project::new(root);
    let st = project
        .command("bash")
        .arg("scripts/build-images.sh")
        .env("PROFILE", "dev")
        .status()
        .unwrap();
    assert!(st.success(), "scripts/build-images.sh failed");

    // Without a token (no .env), Compose refuses to start and says what to do.
    let bare = std::env::temp_dir().join(format!("quayside-compose-{}", std::process::id()));
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(
        format!("{root}/docker-compose.yml"),
        bare.join("docker-compose.yml"),
    )
    .unwrap();
    let out = Command::new("docker-compose")
        .arg("config")
        .current_dir(&bare)
        .env_remove("QUAYSIDE_ADMIN_TOKEN")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&bare);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("create .env with QUAYSIDE_ADMIN_TOKEN"),
        "{err}"
    );
    let (http_port, admin_port) = (free_port(), free_port());
    let env = [
        ("QUAYSIDE_HTTP_PORT", http_port.to_string()),
        ("QUAYSIDE_ADMIN_PORT", admin_port.to_string()),
    ];
    let out = project.compose(&["up", "-d"], &env);
    assert!(
        out.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let http = Http::new();
    let proxy = format!("http://127.0.0.1:{http_port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    // All four example containers routed.
    eventually(30, "four containers routed", || async {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            probe(&format!("{admin}/api/v1/discovery")),
        )
        .await
        .ok()
        .flatten()?;
        let v: serde_json::Value = serde_json::from_str(&r).ok()?;
        let routed = v["sources"][0]["containers"]
            .as_array()?
            .iter()
            .filter(|c| c["routed"] == true)
            .count();
        (routed == 4).then_some(())
    })
    .await;
    // The image's HEALTHCHECK (`quayside healthcheck`, asking /readyz) passes.
    let id = String::from_utf8_lossy(&project.compose(&["ps", "-q", "quayside"], &env).stdout)
        .trim()
        .to_owned();
    eventually(30, "the quayside container healthy", || async {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Health.Status}}", &id])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "healthy").then_some(())
    })
    .await;
    // The image carries CA roots, for a public ACME CA's HTTPS (and https forward auth).
    let out = Command::new("docker")
        .args([
            "cp",
            &format!("{id}:/etc/ssl/certs/ca-certificates.crt"),
            "-",
        ])
        .output()
        .unwrap();
    let roots = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && roots.matches("BEGIN CERTIFICATE").count() > 50,
        "no CA roots in the image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The admin API answers only with the token.
    let r = http.get(&format!("{admin}/api/v1/discovery")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    // The read token of .env reaches quayside: Prometheus scrapes /metrics with it.
    let with_read = |path: &str| {
        http::Request::get(format!("{admin}{path}"))
            .header("authorization", format!("Bearer {READ_TOKEN}"))
            .body(common::full(""))
            .unwrap()
    };
    let r = http.send(with_read("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("quayside_backend_up"), "{}", r.body);
    // Plain HTTP: no certificate is missing, for api.localhost or anything else.
    let r = http.send(with_read("/api/v1/tls")).await;
    let tls: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(tls["https"], false, "{tls}");
    assert_eq!(tls["names"], serde_json::json!([]), "{tls}");
    // web: two replicas alternate.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = http.get(&format!("{proxy}/")).await;
        assert_eq!(r.status, StatusCode::OK);
        seen.push(r.body.lines().next().unwrap().to_owned());
    }
    assert_ne!(seen[0], seen[1], "{seen:?}");
    assert_eq!(seen[0], seen[2], "{seen:?}");
    // api by host, docs by path with the prefix stripped.
    let api = http.get_host(&format!("{proxy}/"), "api.localhost").await;
    assert!(!seen.contains(&api.body.lines().next().unwrap().to_owned()));
    let docs = http.get(&format!("{proxy}/docs/page")).await;
    assert!(docs.body.contains("GET /page HTTP/1.1"), "{}", docs.body);

    // quayside runs in the project's network: a labelled container on the default bridge
    // only is not routed (quayside could not reach it) and says which network to join; one
    // on both is routed at its address on the shared one.
    let extra = |name: &str, host: &str, network: &str| {
        let (cname, cleanup) = (
            format!("{}-{name}", project.name),
            format!("{EXTRA_LABEL}={}", project.name),
        );
        let (host, service) = (
            format!("quayside.host={host}"),
            format!("quayside.service={name}"),
        );
        docker(&[
            "run",
            "-d",
            "--name",
            &cname,
            "--label",
            &cleanup,
            "--label",
            &host,
            "--label",
            &service,
            "--network",
            network,
            &project.images[1].1,
        ])
    };
    let shared = format!("{}_default", project.name);
    extra("stray", "stray.test", "bridge");
    let both = extra("both", "both.test", &shared);
    docker(&["network", "connect", "bridge", &both]);
    let stray = eventually(30, "the stray container listed", || async {
        let r = probe(&format!("{admin}/api/v1/discovery")).await?;
        let v: serde_json::Value = serde_json::from_str(&r).ok()?;
        v["sources"][0]["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == format!("{}-stray", project.name))
            .cloned()
    })
    .await;
    assert_eq!(stray["routed"], false, "{stray}");
    assert_eq!(stray["detail"]["kind"], "no_shared_network", "{stray}");
    assert_eq!(
        stray["detail"]["own"],
        serde_json::json!([shared]),
        "{stray}"
    );
    assert!(
        stray["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("docker network connect {shared} <container>")),
        "{stray}"
    );
    eventually(30, "the container on both networks answering", || async {
        let r = http.get_host(&format!("{proxy}/"), "both.test").await;
        (r.status == StatusCode::OK && r.body.starts_with(&both[..12])).then_some(())
    })
    .await;

    // The examples' pin and drain blocks, as written, whatever the project is called.
    let run = |heading: &str| {
        let script = example(root, heading).replace("127.0.0.1:8001", &admin[7..]);
        let out = project
            .command("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{heading}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let pin = run("## Pin a container by hand");
    assert!(
        pin.contains("pinned: true") && pin.contains("service: api\n"),
        "{pin}"
    );
    let drain = run("## Drain before maintenance");
    assert!(
        drain.contains(r#""state":"draining""#) && drain.contains(r#""state":"active""#),
        "{drain}"
    );

    // A drain lasts across `docker-compose restart quayside`.
    let web = String::from_utf8_lossy(&project.compose(&["ps", "-q", "web"], &env).stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let web = docker_name(&web);
    let drain = http::Request::post(format!("{admin}/api/v1/backends/{web}/drain"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(common::full(""))
        .unwrap();
    let r = http.send(drain).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let out = project.compose(&["restart", "quayside"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = eventually(30, "quayside back with the web containers", || async {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            probe(&format!("{admin}/get?no={web}")),
        )
        .await
        .ok()
        .flatten()?;
        r.contains("source: docker").then_some(r)
    })
    .await;
    assert!(get.contains("state: draining"), "{get}");
}

fn docker_name(id: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Name}}", id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches('/')
        .to_owned()
}

/// GET with the admin token that returns None instead of panicking while the stack starts.
async fn probe(url: &str) -> Option<String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = http::Request::get(url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Empty::new())
        .ok()?;
    let resp = client.request(req).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}
