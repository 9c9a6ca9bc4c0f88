//! The root docker-compose.yml, for real: images built offline by scripts/build-images.sh,
//! `docker-compose up`, traffic through the published port, `down -v` at the end (also on
//! failure).

mod common;

use std::process::Command;

use common::Http;
use common::docker::eventually;
use http::StatusCode;

struct Project {
    name: String,
    root: &'static str,
}

impl Project {
    fn compose(&self, args: &[&str], envs: &[(&str, String)]) -> std::process::Output {
        Command::new("docker-compose")
            .current_dir(self.root)
            .arg("-p")
            .arg(&self.name)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("docker-compose")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans"], &[]);
    }
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
    let st = Command::new("bash")
        .arg(format!("{root}/scripts/build-images.sh"))
        .status()
        .unwrap();
    assert!(st.success(), "scripts/build-images.sh failed");

    let project = Project {
        name: format!("qtcompose{}", std::process::id()),
        root,
    };
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
        let routed = v["containers"]
            .as_array()?
            .iter()
            .filter(|c| c["routed"] == true)
            .count();
        (routed == 4).then_some(())
    })
    .await;
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
}

/// GET that returns None instead of panicking while the stack starts.
async fn probe(url: &str) -> Option<String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(url.parse().ok()?).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}
