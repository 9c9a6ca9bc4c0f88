//! Docker discovery against the real engine. Every container and network a test creates
//! carries a per-test label and is removed when the test's `Scope` drops, pass or fail.

mod common;

use common::docker::{Scope, docker};
use common::eventually;
use common::{Backend, Http, Load, Quayside, test_config};
use http::StatusCode;
use serde_json::Value;

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The status of the one Docker source (`GET /api/v1/discovery` lists every source: on a
/// machine that is a Swarm manager of its own, its Swarm source too).
async fn discovery(http: &Http, q: &Quayside) -> Value {
    let all: Value =
        serde_json::from_str(&http.get(&q.admin_url("/api/v1/discovery")).await.body).unwrap();
    let sources = all["sources"].as_array().expect("a list of sources");
    let docker: Vec<&Value> = sources.iter().filter(|s| s["kind"] != "swarm").collect();
    assert_eq!(docker.len(), 1, "{all}");
    assert_eq!(
        (&docker[0]["kind"], &docker[0]["name"]),
        (&Value::from("docker"), &Value::from("default"))
    );
    docker[0].clone()
}

/// The container's discovery entry, by container name.
async fn seen(http: &Http, q: &Quayside, name: &str) -> Option<Value> {
    discovery(http, q).await["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

use common::docker::wait_routed;

#[tokio::test]
async fn labelled_containers_are_routed_others_are_not() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let q = s.quayside().await;
    let http = Http::new();
    let web = s.run("web", &[s.label("enable", "true")], &[]);
    let _plain = s.run("plain", &[], &[]);
    let off = s.run("off", &[s.label("enable", "false")], &[]);
    wait_routed(&http, &q, "x", &web).await;

    let r = http
        .get(&q.admin_url(&format!("/get?no={}", s.name("web"))))
        .await;
    assert!(r.body.contains("source: docker"), "{}", r.body);
    assert!(r.body.contains(&format!("container: {web}")), "{}", r.body);
    let v: Value = serde_json::from_str(
        &http
            .get(&q.admin_url(&format!("/api/v1/backends/{}", s.name("web"))))
            .await
            .body,
    )
    .unwrap();
    assert_eq!(v["container_id"], web.as_str());
    assert_eq!(v["source"], "docker");
    assert_eq!(v["endpoint"], "default");

    // Only `web` takes traffic; `plain` is not ours, `off` is reported as disabled.
    for _ in 0..6 {
        let r = http.get(&q.proxy_url("/")).await;
        assert_eq!(first_line(&r.body), &web[..12]);
    }
    let d = discovery(&http, &q).await;
    assert_eq!(d["state"], "connected");
    assert!(
        humantime::parse_rfc3339(d["last_sync"].as_str().unwrap()).is_ok(),
        "{d}"
    );
    assert_eq!(d["syncs"], 1, "{d}");
    // (Started after the first sync: seen through its events.)
    assert!(d["events"].as_u64().unwrap() >= 1, "{d}");
    // The same in the metrics, and the entry the source added counted as its change.
    let text = http.get(&q.admin_url("/metrics")).await.body;
    let value = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert!(
        value("quayside_discovery_events_total{kind=\"docker\",source=\"default\"}")
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        value("quayside_registry_changes_total{source=\"docker\",kind=\"added\"}")
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let names: Vec<&str> = d["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&s.name("plain").as_str()), "{names:?}");
    let off_seen = seen(&http, &q, &s.name("off"))
        .await
        .expect("off container listed");
    assert_eq!(off_seen["routed"], false);
    assert_eq!(off_seen["detail"]["kind"], "disabled");
    let _ = off;
}

#[tokio::test]
async fn stop_and_kill_remove_backends_without_failed_requests() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let q = s.quayside().await;
    let http = Http::new();
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| s.run(n, &[s.label("service", "default")], &[]))
        .collect();
    for id in &ids {
        wait_routed(&http, &q, "x", id).await;
    }
    // Steady load from 4 clients while containers go away.
    let load = Load::start(&q, "x", 4);
    load.more(100).await;
    tokio::task::spawn_blocking({
        let a = ids[0].clone();
        move || docker(&["stop", &a])
    })
    .await
    .unwrap();
    load.more(100).await;
    tokio::task::spawn_blocking({
        let b = ids[1].clone();
        move || docker(&["kill", &b])
    })
    .await
    .unwrap();
    load.more(200).await;
    load.finish("stop and kill", 400).await;
    // Only c is left.
    for _ in 0..4 {
        assert_eq!(
            first_line(&http.get(&q.proxy_url("/")).await.body),
            &ids[2][..12]
        );
    }
}

#[tokio::test]
async fn replicas_of_a_service_share_traffic_and_hosts_route_between_services() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let q = s.quayside().await;
    let http = Http::new();
    let api_labels = [s.label("service", "api"), s.label("host", "api.test")];
    let api1 = s.run("api-1", &api_labels, &[]);
    let api2 = s.run("api-2", &api_labels, &[]);
    let web = s.run(
        "web",
        &[
            s.label("service", "web"),
            s.label("host", "web.test,*.web.test"),
        ],
        &[],
    );
    wait_routed(&http, &q, "api.test", &api1).await;
    wait_routed(&http, &q, "api.test", &api2).await;
    wait_routed(&http, &q, "www.web.test", &web).await;
    let mut seq = Vec::new();
    for _ in 0..6 {
        seq.push(first_line(&http.get_host(&q.proxy_url("/"), "api.test").await.body).to_owned());
    }
    for pair in seq.windows(2) {
        assert_ne!(pair[0], pair[1], "replicas do not alternate: {seq:?}");
    }
    assert_eq!(
        first_line(&http.get_host(&q.proxy_url("/"), "web.test").await.body),
        &web[..12]
    );
    // Nothing in `default`.
    assert_eq!(
        http.get_host(&q.proxy_url("/"), "other.test").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let svc: Value =
        serde_json::from_str(&http.get(&q.admin_url("/api/v1/services/web")).await.body).unwrap();
    assert_eq!(svc["hosts"], serde_json::json!(["*.web.test", "web.test"]));
}

#[tokio::test]
async fn multiple_networks_need_a_choice() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let q = s.quayside().await;
    let http = Http::new();
    let n1 = s.network("n1");
    let n2 = s.network("n2");
    let both = s.run("both", &[s.label("enable", "true")], &["--network", &n1]);
    docker(&["network", "connect", &n2, &both]);
    let chosen = s.run("chosen", &[s.label("network", &n2)], &["--network", &n1]);
    docker(&["network", "connect", &n2, &chosen]);
    let name = s.name("both");
    let v = eventually(10, "ambiguous network reported", || async {
        seen(&http, &q, &name)
            .await
            .filter(|c| c["detail"]["kind"] == "ambiguous_network")
    })
    .await;
    assert!(v["reason"].as_str().unwrap().contains(&n1), "{v}");
    let chosen_ip = s.ip(&chosen, &n2);
    let name = s.name("chosen");
    eventually(10, "chosen container routed on n2", || async {
        seen(&http, &q, &name)
            .await
            .filter(|c| c["routed"] == true && c["address"] == chosen_ip.as_str())
    })
    .await;
    wait_routed(&http, &q, "x", &chosen).await;
}

#[tokio::test]
async fn healthcheck_gates_routing() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let q = s.quayside().await;
    let http = Http::new();
    let id = s.run(
        "hc",
        &[s.label("enable", "true")],
        &[common::docker::image_hc()],
    );
    let name = s.name("hc");
    // Right after start: health is `starting`, not routed.
    let v = eventually(5, "container seen as starting", || async {
        seen(&http, &q, &name).await
    })
    .await;
    // The first probe runs a second after start, so the start event (handled in
    // milliseconds) must show it unrouted first.
    assert_eq!(
        v["routed"], false,
        "routed before its first health check: {v}"
    );
    assert_eq!(v["detail"]["status"], "starting", "{v}");
    assert_eq!(
        http.get(&q.proxy_url("/")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    wait_routed(&http, &q, "x", &id).await;
    // Make it unhealthy: it is removed from routing.
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &id,
    ]);
    let r = http.get(&format!("http://{ip}/health/fail")).await;
    assert_eq!(r.status, StatusCode::OK);
    eventually(10, "unhealthy container removed", || async {
        (http.get(&q.proxy_url("/")).await.status == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    let v = seen(&http, &q, &name).await.unwrap();
    assert_eq!(v["detail"]["status"], "unhealthy", "{v}");
    // Healthy again: back.
    http.get(&format!("http://{ip}/health/ok")).await;
    wait_routed(&http, &q, "x", &id).await;
}

#[tokio::test]
async fn a_bad_label_is_reported_and_disturbs_nothing() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let q = s.quayside().await;
    let http = Http::new();
    let good = s.run("good", &[s.label("enable", "true")], &[]);
    s.run("bad", &[s.label("port", "eighty")], &[]);
    s.run("badw", &[s.label("weight", "9999")], &[]);
    wait_routed(&http, &q, "x", &good).await;
    for (suffix, label, value) in [("bad", "port", "eighty"), ("badw", "weight", "9999")] {
        let name = s.name(suffix);
        let v = eventually(5, "bad label reported", || async {
            seen(&http, &q, &name)
                .await
                .filter(|c| c["detail"]["kind"] == "bad_label")
        })
        .await;
        assert_eq!(v["detail"]["label"], format!("{}.{label}", s.prefix()));
        assert_eq!(v["detail"]["value"], value);
        assert_eq!(v["routed"], false);
    }
    for _ in 0..4 {
        assert_eq!(
            first_line(&http.get(&q.proxy_url("/")).await.body),
            &good[..12]
        );
    }
}

#[tokio::test]
async fn a_manual_pin_overrides_a_container_until_deleted() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let q = s.quayside().await;
    let http = Http::new();
    let labels = [s.label("service", "pinsvc"), s.label("host", "pin.test")];
    let c = s.run("pinme", &labels, &[]);
    wait_routed(&http, &q, "pin.test", &c).await;
    let local = Backend::start("pinned-local").await;
    let no = s.name("pinme");
    // No service= given: the pin stays in the container's service, so its host still works.
    let r = http
        .get(&q.admin_url(&format!("/add?no={no}&ip=127.0.0.1&port={}", local.port())))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        http.get_host(&q.proxy_url("/"), "pin.test").await.body,
        "pinned-local\n"
    );
    let r = http.get(&q.admin_url(&format!("/get?no={no}"))).await;
    assert!(
        r.body.contains("source: manual")
            && r.body.contains("pinned: true")
            && r.body.contains("service: pinsvc\n"),
        "{}",
        r.body
    );
    // Unpin: the container's own entry is back.
    http.get(&q.admin_url(&format!("/delete?no={no}"))).await;
    wait_routed(&http, &q, "pin.test", &c).await;
    // Delete of the unpinned discovered entry disables it; enable brings it back.
    http.get(&q.admin_url(&format!("/delete?no={no}"))).await;
    assert!(
        http.get(&q.admin_url(&format!("/get?no={no}")))
            .await
            .body
            .contains("state: disabled")
    );
    assert_eq!(
        http.get_host(&q.proxy_url("/"), "pin.test").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    http.method(
        "POST",
        &q.admin_url(&format!("/api/v1/backends/{no}/enable")),
        "",
    )
    .await;
    wait_routed(&http, &q, "pin.test", &c).await;
}

#[tokio::test]
async fn service_settings_from_the_api_win_over_labels_until_deleted() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let q = s.quayside().await;
    let http = Http::new();
    let c = s.run(
        "lbl",
        &[s.label("service", "lbl"), s.label("host", "label.test")],
        &[],
    );
    wait_routed(&http, &q, "label.test", &c).await;
    let url = q.admin_url("/api/v1/services/lbl");
    let r = http.method("PUT", &url, r#"{"hosts":["api.test"]}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains(r#""settings_from":"api""#), "{}", r.body);
    wait_routed(&http, &q, "api.test", &c).await;
    assert_eq!(
        http.get_host(&q.proxy_url("/"), "label.test").await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the label's host still routes to the service"
    );
    // Without the operator's settings, the labels' apply again.
    assert_eq!(
        http.method("DELETE", &url, "").await.status,
        StatusCode::NO_CONTENT
    );
    wait_routed(&http, &q, "label.test", &c).await;
}

#[tokio::test]
async fn a_paused_container_is_not_routed_until_unpaused() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let q = s.quayside().await;
    let http = Http::new();
    let c = s.run("paused", &[s.label("enable", "true")], &[]);
    wait_routed(&http, &q, "x", &c).await;
    docker(&["pause", &c]);
    let no = s.name("paused");
    eventually(10, "the paused container taken out", || async {
        let st = http
            .get(&q.admin_url(&format!("/get?no={no}")))
            .await
            .status;
        (st == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let r = http.get(&q.proxy_url("/")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    docker(&["unpause", &c]);
    wait_routed(&http, &q, "x", &c).await;
}

/// `/get?no=` of a container's entry.
async fn get_no(http: &Http, q: &Quayside, no: &str) -> String {
    http.get(&q.admin_url(&format!("/get?no={no}"))).await.body
}

#[tokio::test]
async fn drains_and_disables_of_containers_survive_a_restart_until_replaced() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let dir = std::env::temp_dir().join(format!("{}-state", s.id));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let config = || {
        let mut c = test_config();
        c.docker.enabled = true;
        c.docker.label_prefix = s.prefix().to_owned();
        c.state = Some(state.clone());
        c
    };
    let q = Quayside::start_with(config()).await;
    let http = Http::new();
    let on = [s.label("enable", "true")];
    let (a, b, c) = (
        s.run("a", &on, &[]),
        s.run("b", &on, &[]),
        s.run("c", &on, &[]),
    );
    for id in [&a, &b, &c] {
        wait_routed(&http, &q, "x", id).await;
    }
    let (na, nb) = (s.name("a"), s.name("b"));
    let r = http
        .method(
            "POST",
            &q.admin_url(&format!("/api/v1/backends/{na}/drain")),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        http.get(&q.admin_url(&format!("/delete?no={nb}")))
            .await
            .status,
        StatusCode::OK
    );
    q.shutdown().await.unwrap();

    // A new process with the same state file: the first syncs must not lift the overrides.
    let q = Quayside::start_with(config()).await;
    eventually(10, "all three containers seen again", || async {
        let d = discovery(&http, &q).await;
        let n = d["containers"]
            .as_array()?
            .iter()
            .filter(|c| c["routed"] == true)
            .count();
        (n == 3).then_some(())
    })
    .await;
    assert!(get_no(&http, &q, &na).await.contains("state: draining\n"));
    assert!(get_no(&http, &q, &nb).await.contains("state: disabled\n"));
    for _ in 0..6 {
        assert_eq!(
            first_line(&http.get(&q.proxy_url("/")).await.body),
            &c[..12]
        );
    }
    let saved = std::fs::read_to_string(&state).unwrap_or_default()
        + &std::fs::read_to_string(dir.join("state.json.journal")).unwrap_or_default();
    assert!(
        saved.contains(&a) && saved.contains(&b),
        "ids kept: {saved}"
    );

    // Gone: no entry, and /get says the drain waits for the container.
    docker(&["rm", "-f", &a]);
    eventually(10, "a's entry gone, its drain kept and said so", || async {
        get_no(&http, &q, &na)
            .await
            .contains("an override (draining) is kept for its container")
            .then_some(())
    })
    .await;
    // Replaced (same name, new container): the new one is not drained.
    let a2 = s.run("a", &on, &[]);
    eventually(10, "the replacement routed and active", || async {
        get_no(&http, &q, &na)
            .await
            .contains(&format!("container: {a2}"))
            .then_some(())
    })
    .await;
    assert!(get_no(&http, &q, &na).await.contains("state: active\n"));
    wait_routed(&http, &q, "x", &a2).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn containers_started_while_quayside_was_down_are_found() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let c = s.run("early", &[s.label("enable", "true")], &[]);
    let q = s.quayside().await;
    let http = Http::new();
    wait_routed(&http, &q, "x", &c).await;
}

/// A unix-socket proxy in front of the Docker socket that the test can cut and restore.
struct SocketProxy {
    path: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl SocketProxy {
    fn start(path: &std::path::Path) -> SocketProxy {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    if let Ok(mut up) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                    }
                });
            }
        });
        SocketProxy {
            path: path.to_owned(),
            task,
        }
    }

    /// Close the socket and every connection through it.
    fn cut(self) {
        self.task.abort(); // drops the JoinSet, aborting every relayed connection
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn losing_the_docker_connection_keeps_routes_and_resyncs() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", s.id));
    let proxy = SocketProxy::start(&sock);
    let mut c = test_config();
    c.docker.enabled = true;
    c.docker.label_prefix = s.prefix().to_owned();
    c.docker.endpoints = vec![quayside::discovery::docker::Endpoint::at(format!(
        "unix://{}",
        sock.display()
    ))];
    let q = Quayside::start_with(c).await;
    let http = Http::new();
    let a = s.run("a", &[s.label("enable", "true")], &[]);
    wait_routed(&http, &q, "x", &a).await;

    proxy.cut();
    eventually(10, "discovery reports the lost connection", || async {
        let d = discovery(&http, &q).await;
        (d["state"] == "disconnected").then_some(())
    })
    .await;
    // The last known routes keep serving.
    assert_eq!(
        first_line(&http.get(&q.proxy_url("/")).await.body),
        &a[..12]
    );
    // Meanwhile: a goes away, b arrives.
    docker(&["rm", "-f", &a]);
    let b = s.run("b", &[s.label("enable", "true")], &[]);

    let _proxy = SocketProxy::start(&sock);
    wait_routed(&http, &q, "x", &b).await;
    // No stale route to a survives the resync.
    for _ in 0..4 {
        assert_eq!(
            first_line(&http.get(&q.proxy_url("/")).await.body),
            &b[..12]
        );
    }
    let d = eventually(5, "connected again", || async {
        let d = discovery(&http, &q).await;
        (d["state"] == "connected").then_some(d)
    })
    .await;
    assert!(d["reconnects"].as_u64().unwrap() >= 1);
    // The first sync and the one after reconnecting (more if the cut took a few tries).
    assert!(d["syncs"].as_u64().unwrap() >= 2, "{d}");
    let _ = std::fs::remove_file(&sock);
}

#[tokio::test]
async fn quayside_starts_and_serves_without_docker() {
    // Pointed at a socket that does not exist: starts, serves manual entries, says why.
    let mut c = test_config();
    c.docker.enabled = true;
    c.docker.endpoints = vec![quayside::discovery::docker::Endpoint::at(
        "unix:///nonexistent/docker.sock",
    )];
    let q = Quayside::start_with(c).await;
    let http = Http::new();
    let b = Backend::start("manual").await;
    http.get(&q.admin_url(&format!("/add?no=1&ip=127.0.0.1&port={}", b.port())))
        .await;
    assert_eq!(http.get(&q.proxy_url("/")).await.body, "manual\n");
    let d = eventually(5, "disconnected state", || async {
        let d = discovery(&http, &q).await;
        (d["state"] == "disconnected").then_some(d)
    })
    .await;
    assert!(d["last_error"].as_str().unwrap().len() > 5, "{d}");

    // A TCP endpoint nobody listens on: the error says so, with the address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let mut c = test_config();
    c.docker.enabled = true;
    c.docker.endpoints = vec![quayside::discovery::docker::Endpoint::at(format!(
        "tcp://{addr}"
    ))];
    let q = Quayside::start_with(c).await;
    let d = eventually(5, "disconnected state", || async {
        let d = discovery(&http, &q).await;
        (d["state"] == "disconnected").then_some(d)
    })
    .await;
    let e = d["last_error"].as_str().unwrap();
    assert!(
        e.to_ascii_lowercase().contains("connection refused") && e.contains(&addr.to_string()),
        "{e}"
    );
}

#[tokio::test]
async fn a_tcp_docker_endpoint_works() {
    if !common::docker::available() {
        return;
    }
    // A loopback TCP endpoint relaying to the local socket, as `dockerd -H tcp://...` would be.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut up) = tokio::net::UnixStream::connect("/var/run/docker.sock").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
            });
        }
    });
    let s = Scope::new();
    let mut c = test_config();
    c.docker.enabled = true;
    c.docker.label_prefix = s.prefix().to_owned();
    c.docker.endpoints = vec![quayside::discovery::docker::Endpoint::at(format!(
        "tcp://{addr}"
    ))];
    let q = Quayside::start_with(c).await;
    let http = Http::new();
    let id = s.run("tcp", &[s.label("enable", "true")], &[]);
    wait_routed(&http, &q, "x", &id).await;
    let d = discovery(&http, &q).await;
    assert_eq!(d["endpoint"], format!("tcp://{addr}"));
    // Times are RFC 3339, not epoch numbers.
    for field in ["last_sync", "last_event"] {
        let t = d[field].as_str().unwrap_or_else(|| panic!("{field}: {d}"));
        assert!(humantime::parse_rfc3339(t).is_ok(), "{field}: {t}");
    }
    relay.abort();
}

/// Two quaysides on one Docker host, on purpose: the one started with `--instance blue` routes
/// only containers labelled `instance=blue`, the one without routes only those without the
/// label; each lists the other's as belonging to another quayside, not as an error.
#[tokio::test]
async fn two_instances_on_one_host_route_their_own_containers() {
    if !common::docker::available() {
        return;
    }
    let s = Scope::new();
    let plain = s.quayside().await;
    let blue = {
        let mut c = test_config();
        c.docker.enabled = true;
        c.docker.label_prefix = s.prefix().to_owned();
        c.docker.instance = Some("blue".into());
        Quayside::start_with(c).await
    };
    let http = Http::new();
    let mine = s.run("mine", &[s.label("enable", "true")], &[]);
    let theirs = s.run(
        "theirs",
        &[s.label("enable", "true"), s.label("instance", "blue")],
        &[],
    );
    wait_routed(&http, &plain, "x", &mine).await;
    wait_routed(&http, &blue, "x", &theirs).await;
    for _ in 0..6 {
        let r = http.get(&plain.proxy_url("/")).await;
        assert_eq!(first_line(&r.body), &mine[..12]);
        let r = http.get(&blue.proxy_url("/")).await;
        assert_eq!(first_line(&r.body), &theirs[..12]);
    }
    for (q, other, label) in [(&plain, "theirs", Some("blue")), (&blue, "mine", None)] {
        let v = seen(&http, q, &s.name(other)).await.expect("listed");
        assert_eq!(v["routed"], false, "{v}");
        assert_eq!(v["detail"]["kind"], "other_instance", "{v}");
        assert_eq!(v["detail"]["instance"], serde_json::json!(label), "{v}");
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .starts_with("belongs to another quayside"),
            "{v}"
        );
    }
    let _ = (mine, theirs);
}
