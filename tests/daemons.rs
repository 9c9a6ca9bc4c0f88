//! Several Docker daemons: a second `dockerd` of the test's own beside the machine's, reached
//! over TCP with TLS and a client certificate. Both are followed at once; the second is reached
//! at an address (its published ports), its
//! entries are named after it; stopping it fails no request and keeps the first's entries
//! untouched, and once it is back its containers are followed again. A daemon that is no Swarm
//! manager cannot hold `--state-store swarm`; a swarm made on it while quayside runs is
//! followed, and dropped when it leaves.

mod common;

use std::collections::HashSet;

use common::daemon::Daemon;
use common::docker::{self, Scope, wait_routed};
use common::{Http, Load, Quayside, eventually, test_config};
use quayside::discovery::docker::Endpoint;
use serde_json::Value;

async fn sources(http: &Http, q: &Quayside) -> Vec<Value> {
    let all: Value =
        serde_json::from_str(&http.get(&q.admin_url("/api/v1/discovery")).await.body).unwrap();
    all["sources"].as_array().unwrap().clone()
}

/// The Docker source (not the Swarm one: the machine may be a Swarm manager of its own) named
/// `name`.
async fn source(http: &Http, q: &Quayside, name: &str) -> Value {
    sources(http, q)
        .await
        .into_iter()
        .find(|s| s["kind"] == "docker" && s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name}"))
}

/// The containers (by short id) that answer `n` requests.
async fn answering(http: &Http, q: &Quayside, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        let r = http.get(&q.proxy_url("/")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        seen.insert(r.body.lines().next().unwrap_or("").to_owned());
    }
    seen
}

#[tokio::test]
async fn two_daemons_are_followed_and_one_stopping_fails_no_request() {
    if !docker::available() {
        return;
    }
    let mut d2 = Daemon::start_with_tls(&[docker::image()]);
    // Not a Swarm manager: the Swarm state store refuses to start, in one line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quayside"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--docker-host", &d2.host(), "--state-store", "swarm"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("needs a Swarm manager"), "{err}");
    let s = Scope::new();
    let mut c = test_config();
    c.docker.enabled = true;
    c.docker.label_prefix = s.prefix().to_owned();
    c.docker.endpoints = vec![
        Endpoint {
            name: "local".into(),
            ..Default::default()
        },
        // Over TCP with TLS and a client certificate, as a remote daemon is reached.
        {
            let tls = d2.client_tls();
            Endpoint {
                name: "d2".into(),
                host: Some(tls.host),
                address: Some("127.0.0.1".parse().unwrap()),
                tls: Some(quayside::discovery::docker::EndpointTls {
                    ca: tls.ca,
                    cert: tls.cert,
                    key: tls.key,
                }),
            }
        },
    ];
    let q = Quayside::start_with(c).await;
    let http = Http::new();
    // The same container name on both hosts: two entries, the second's under its endpoint.
    let local = s.run("web", &[s.label("enable", "true")], &[]);
    let enable = s.label("enable", "true");
    let remote = d2.docker(&[
        "run",
        "-d",
        "--restart",
        "always",
        "--name",
        &s.name("web"),
        "--label",
        &enable,
        "-p",
        "80",
        docker::image(),
    ]);
    wait_routed(&http, &q, "x", &local).await;
    wait_routed(&http, &q, "x", &remote).await;
    let entry: Value = serde_json::from_str(
        &http
            .get(&q.admin_url(&format!("/api/v1/backends/d2.{}", s.name("web"))))
            .await
            .body,
    )
    .unwrap();
    let port = d2.docker(&["port", &remote, "80/tcp"]);
    let published = port.lines().next().unwrap().rsplit(':').next().unwrap();
    assert_eq!(entry["endpoint"], "d2", "{entry}");
    assert_eq!(entry["address"], "127.0.0.1", "{entry}");
    assert_eq!(entry["port"].to_string(), published, "{entry}");
    // (Docker sources only: where the machine is a Swarm manager of its own, the local
    // daemon's Swarm source is listed too.)
    let names: Vec<Value> = sources(&http, &q)
        .await
        .iter()
        .filter(|s| s["kind"] == "docker")
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, ["d2", "local"]);

    // The second daemon stops (its container with it): no request fails, the first
    // endpoint's entry stays, the second's source says it is disconnected.
    let load = Load::start(&q, "x", 4);
    load.more(50).await;
    d2.stop();
    eventually(15, "d2 reported disconnected", || async {
        (source(&http, &q, "d2").await["state"] == "disconnected").then_some(())
    })
    .await;
    load.more(200).await;
    assert_eq!(
        answering(&http, &q, 10).await,
        HashSet::from([local[..12].to_owned()])
    );
    assert_eq!(source(&http, &q, "local").await["state"], "connected");
    // Back: its container restarts (restart policy) and is followed again.
    d2.resume();
    let again = eventually(30, "d2's container routed again", || async {
        let seen = answering(&http, &q, 10).await;
        (seen.len() == 2).then_some(seen)
    })
    .await;
    assert!(again.contains(&remote[..12]), "{again:?}");
    load.finish("one of two daemons stopped and started", 300)
        .await;
    // (Polled: a daemon that has just come back can drop its first event stream, and its
    // source reads disconnected until the next reconnect, its routes kept meanwhile; a CI run
    // saw that instant.)
    eventually(15, "d2 reported connected again", || async {
        (source(&http, &q, "d2").await["state"] == "connected").then_some(())
    })
    .await;

    // A swarm made while quayside runs is followed without a restart, and left, dropped.
    let swarm_of_d2 = |all: Vec<Value>| {
        all.into_iter()
            .find(|s| s["kind"] == "swarm" && s["name"] == "d2")
    };
    // (On a port of its own: the machine's daemon may be a Swarm manager on 2377 already.)
    let swarm_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let swarm_addr = format!("127.0.0.1:{swarm_port}");
    d2.docker(&[
        "swarm",
        "init",
        "--advertise-addr",
        &swarm_addr,
        "--listen-addr",
        &swarm_addr,
    ]);
    let followed = eventually(15, "d2's swarm followed", || async {
        swarm_of_d2(sources(&http, &q).await).filter(|s| s["state"] == "connected")
    })
    .await;
    assert_eq!(
        followed["endpoint"],
        source(&http, &q, "d2").await["endpoint"]
    );
    d2.docker(&["swarm", "leave", "--force"]);
    eventually(15, "d2's swarm no longer followed", || async {
        swarm_of_d2(sources(&http, &q).await)
            .is_some_and(|s| s["state"] == "not a manager")
            .then_some(())
    })
    .await;
    assert_eq!(source(&http, &q, "d2").await["state"], "connected");
}
