//! Automatic HTTPS against a real ACME server: Debian's `pebble`, with `pebble-challtestsrv`
//! as its DNS (every name resolves to 127.0.0.1 unless the test says otherwise), its HTTP-01
//! and TLS-ALPN-01 ports pointed at quayside's plain and TLS listeners. Each test starts its
//! own pair and kills them when it ends, passing or failing.

mod common;

use common::pebble::{Pebble, Running, acme_config, free_port, have_pebble, served, wait_state};
use common::{Backend, Http, eventually, test_config};
use quayside::Listeners;
use quayside::acme::{AcmeConfig, Challenge};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_serves_reuses_after_restart_and_renews_when_asked() {
    if !have_pebble() {
        return;
    }
    let (proxy, tls) = (free_port(), free_port());
    let pebble = Pebble::start(proxy, tls).await;
    // A name the CA cannot reach: its order fails, its neighbours are unaffected.
    pebble.resolve("down.test", "127.0.0.2").await;
    let backend = Backend::start("app").await;
    let state_dir = pebble.dir.join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    let state = state_dir.join("state.json");

    let q = Running::start(proxy, tls, acme_config(&pebble, &state, Challenge::Http01)).await;
    q.put(
        "/api/v1/services/app",
        serde_json::json!({"hosts": ["app.test", "down.test"]}),
    )
    .await;
    q.put(
        "/api/v1/services/wild",
        serde_json::json!({"hosts": ["*.wild.test"]}),
    )
    .await;
    q.put(
        "/api/v1/backends/1",
        serde_json::json!({"address": "127.0.0.1", "port": backend.port(), "service": "app"}),
    )
    .await;

    // An order counts in the kept ledger as it starts (a quayside stopped mid-order still
    // counts it after the restart): the file holds orders before any has an outcome.
    eventually(30, "the first order kept as it starts", || async {
        let dir = std::fs::read_dir(state_dir.join("acme"))
            .ok()?
            .next()?
            .ok()?
            .path();
        let kept: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("limits.json")).ok()?).ok()?;
        let started = kept["orders"].as_array().is_some_and(|o| !o.is_empty());
        let ended = kept["outcomes"].as_object().is_some_and(|o| !o.is_empty());
        (started && !ended).then_some(())
    })
    .await;
    let app = wait_state(&q, &pebble, "app.test", "valid").await;
    assert_eq!(app["source"], "acme", "{app}");
    assert!(
        app["not_after"].is_string() && app["renew_at"].is_string(),
        "{app}"
    );
    let root = pebble.issuing_root().await;
    let (leaf, body) = served(([127, 0, 0, 1], tls).into(), &root, "app.test")
        .await
        .expect("app.test is served a certificate pebble issued");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with("\r\n\r\napp\n"), "{body}");
    // A challenge token quayside is not waiting on goes to the service like any request.
    let other = Http::new()
        .get_host(
            &format!("http://127.0.0.1:{proxy}/.well-known/acme-challenge/not-ours"),
            "app.test",
        )
        .await;
    assert_eq!((other.status.as_u16(), other.body.as_str()), (200, "app\n"));

    let down = wait_state(&q, &pebble, "down.test", "failed").await;
    assert_eq!(down["source"], "acme");
    assert!(down["failures"].as_u64() >= Some(1), "{down}");
    assert!(down["retry_at"].is_string(), "{down}");
    assert!(
        down["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("validation failed")),
        "{down}"
    );
    // A name that leaves the services and comes back keeps its wait: no new order.
    let failed = q.tls_view().await["orders"]["failed"].clone();
    q.put(
        "/api/v1/services/app",
        serde_json::json!({"hosts": ["app.test"]}),
    )
    .await;
    eventually(10, "down.test no longer listed", || async {
        (q.name("down.test").await == serde_json::Value::Null).then_some(())
    })
    .await;
    // (The schedule drops it at its next once-a-second look; nothing shows that from outside.)
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    q.put(
        "/api/v1/services/app",
        serde_json::json!({"hosts": ["app.test", "down.test"]}),
    )
    .await;
    let back = eventually(5, "down.test listed again, still failed", || async {
        let v = q.name("down.test").await;
        (v["state"] == "failed").then_some(v)
    })
    .await;
    assert_eq!(back["retry_at"], down["retry_at"], "{back}");
    // (Something that must not happen: the schedule runs once a second, so give it two.)
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        q.tls_view().await["orders"]["failed"],
        failed,
        "no new order"
    );
    let wild = q.name("*.wild.test").await;
    assert_eq!(wild["state"], "needs_certificate", "{wild}");
    assert!(
        wild["last_error"].as_str().unwrap().contains("--tls-cert"),
        "{wild}"
    );

    // Kept beside the state file, readable by the owner only.
    let kept = q.tls_view().await;
    assert_eq!(kept["orders"]["issued"], 1, "{kept}");
    let acme_dir = std::fs::read_dir(state_dir.join("acme"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in [
        "app.test.crt",
        "app.test.key",
        "account.json",
        "limits.json",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(acme_dir.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // The expiry is a metric.
    let m = Http::new().get(&q.url("/metrics")).await.body;
    assert!(
        m.lines().any(|l| l.starts_with(
            "quayside_tls_certificate_expiry_timestamp_seconds{name=\"app.test\",source=\"acme\"}"
        )),
        "{m}"
    );
    assert!(
        m.contains("quayside_acme_orders_total{result=\"issued\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("quayside_acme_order_failures{name=\"down.test\"}"),
        "{m}"
    );

    // A restart serves the stored certificate at once, without ordering: by the time /readyz
    // says ready, the first handshake gets it.
    q.stop().await;
    let q = Running::start(proxy, tls, acme_config(&pebble, &state, Challenge::Http01)).await;
    eventually(10, "ready after the restart", || async {
        (Http::new().get(&q.url("/readyz")).await.status == 200).then_some(())
    })
    .await;
    let again = served(([127, 0, 0, 1], tls).into(), &root, "app.test")
        .await
        .expect("the kept certificate on the first handshake once ready");
    assert_eq!(again.0, leaf, "the same certificate after the restart");
    assert!(again.1.ends_with("\r\n\r\napp\n"), "{}", again.1);
    let app = q.name("app.test").await;
    assert_eq!(app["state"], "valid", "{app}");
    let view = q.tls_view().await;
    assert_eq!(view["orders"]["issued"], 0, "no new order: {view}");
    // The failing name keeps its wait across the restart (the ledger beside the
    // certificates): same failures, same retry time, and no order meanwhile.
    let kept = eventually(10, "down.test failed again after the restart", || async {
        let v = q.name("down.test").await;
        (v["state"] == "failed").then_some(v)
    })
    .await;
    assert_eq!(kept["failures"], down["failures"], "{kept}");
    assert_eq!(kept["retry_at"], down["retry_at"], "{kept}");
    assert_eq!(kept["last_error"], down["last_error"], "{kept}");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let view = q.tls_view().await;
    assert_eq!(view["orders"]["failed"], 0, "no order of down.test: {view}");

    // A forced renewal orders a new one and serves it.
    let r = Http::new()
        .method("POST", &q.url("/api/v1/tls/renew?name=app.test"), "")
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.body.contains("app.test"), "{}", r.body);
    let renewed = eventually(60, "the renewed certificate served", || {
        let (root, leaf) = (root.clone(), leaf.clone());
        async move {
            served(([127, 0, 0, 1], tls).into(), &root, "app.test")
                .await
                .ok()
                .filter(|(l, _)| *l != leaf)
        }
    })
    .await;
    assert!(renewed.1.ends_with("\r\n\r\napp\n"), "{}", renewed.1);
    let view = q.tls_view().await;
    assert_eq!(view["orders"]["issued"], 1, "{view}");

    // Renewals past the CA's limit of 5 certificates per name per week are refused (429),
    // without asking the CA.
    let mut issued = 1;
    loop {
        let r = Http::new()
            .method("POST", &q.url("/api/v1/tls/renew?name=app.test"), "")
            .await;
        if r.status == 429 {
            assert!(
                r.body.contains("app.test") && r.body.contains("7 days"),
                "{}",
                r.body
            );
            break;
        }
        assert_eq!(r.status, 202, "{}", r.body);
        issued += 1;
        eventually(30, "the forced renewal issued", || async {
            (q.tls_view().await["orders"]["issued"] == issued).then_some(())
        })
        .await;
        assert!(issued <= 4, "a sixth certificate this week was ordered");
    }
    // (The first of the five was issued before the restart: the ledger counted it.)
    assert_eq!(issued, 4, "four certificates since the restart, then 429");

    // A name that is not ACME's is a clear 404.
    let r = Http::new()
        .method("POST", &q.url("/api/v1/tls/renew?name=nope.test"), "")
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("nope.test"), "{}", r.body);
    q.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_and_a_configured_certificate_wins_for_its_name() {
    if !have_pebble() {
        return;
    }
    let (proxy, tls, nowhere) = (free_port(), free_port(), free_port());
    // HTTP-01 would go nowhere: only TLS-ALPN-01 on the TLS listener can pass.
    let pebble = Pebble::start(nowhere, tls).await;
    let backend = Backend::start("alpn").await;
    let state = pebble.dir.join("state.json");
    // own.test has a certificate of the operator's.
    let own = rcgen::generate_simple_self_signed(vec!["own.test".to_owned()]).unwrap();
    let (own_crt, own_key) = (pebble.dir.join("own.crt"), pebble.dir.join("own.key"));
    std::fs::write(&own_crt, own.cert.pem()).unwrap();
    std::fs::write(&own_key, own.signing_key.serialize_pem()).unwrap();
    let mut config = acme_config(&pebble, &state, Challenge::TlsAlpn01);
    config.tls.certs = vec![own_crt.clone()];
    config.tls.keys = vec![own_key];

    let q = Running::start(proxy, tls, config).await;
    q.put(
        "/api/v1/services/app",
        serde_json::json!({"hosts": ["alpn.test", "own.test"]}),
    )
    .await;
    q.put(
        "/api/v1/backends/1",
        serde_json::json!({"address": "127.0.0.1", "port": backend.port(), "service": "app"}),
    )
    .await;
    let alpn = wait_state(&q, &pebble, "alpn.test", "valid").await;
    assert_eq!(alpn["source"], "acme", "{alpn}");
    let root = pebble.issuing_root().await;
    let (_, body) = served(([127, 0, 0, 1], tls).into(), &root, "alpn.test")
        .await
        .expect("alpn.test is served a certificate pebble issued");
    assert!(body.ends_with("\r\n\r\nalpn\n"), "{body}");

    let own_view = q.name("own.test").await;
    assert_eq!(own_view["source"], "file", "{own_view}");
    assert_eq!(own_view["file"], own_crt.display().to_string());
    let (leaf, _) = served(([127, 0, 0, 1], tls).into(), own.cert.der(), "own.test")
        .await
        .expect("own.test is served the configured certificate");
    assert_eq!(leaf, own.cert.der().to_vec());
    let view = q.tls_view().await;
    assert_eq!(
        view["orders"]["issued"], 1,
        "only alpn.test was ordered: {view}"
    );
    let r = Http::new()
        .method("POST", &q.url("/api/v1/tls/renew?name=own.test"), "")
        .await;
    assert_eq!(
        r.status, 404,
        "a configured name is not renewed by ACME: {}",
        r.body
    );
    q.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_container_gets_a_certificate() {
    if !have_pebble() || !common::docker::available() {
        return;
    }
    let s = common::docker::Scope::new();
    let (proxy, tls) = (free_port(), free_port());
    let pebble = Pebble::start(proxy, tls).await;
    let state = pebble.dir.join("state.json");
    let mut config = acme_config(&pebble, &state, Challenge::Http01);
    config.docker.enabled = true;
    config.docker.label_prefix = s.prefix().to_owned();
    let q = Running::start(proxy, tls, config).await;
    let id = s.run(
        "web",
        &[s.label("service", "lab"), s.label("host", "lab.test")],
        &[],
    );
    let lab = wait_state(&q, &pebble, "lab.test", "valid").await;
    assert_eq!(lab["source"], "acme", "{lab}");
    // Over HTTPS by SNI, to the container (whoami answers with its short id).
    let root = pebble.issuing_root().await;
    let (_, body) = served(([127, 0, 0, 1], tls).into(), &root, "lab.test")
        .await
        .expect("lab.test is served a certificate pebble issued");
    let answer = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(answer.lines().next(), Some(&id[..12]), "{body}");
    q.stop().await;
    // A restart: the host comes back with the container's labels (after the first sync),
    // and once /readyz says ready the first handshake gets the kept certificate.
    let mut config = acme_config(&pebble, &state, Challenge::Http01);
    config.docker.enabled = true;
    config.docker.label_prefix = s.prefix().to_owned();
    let q = Running::start(proxy, tls, config).await;
    eventually(10, "ready after the restart", || async {
        (Http::new().get(&q.url("/readyz")).await.status == 200).then_some(())
    })
    .await;
    let (_, body) = served(([127, 0, 0, 1], tls).into(), &root, "lab.test")
        .await
        .expect("the kept certificate on the first handshake once ready");
    assert!(body.contains(&id[..12]), "{body}");
    assert_eq!(q.tls_view().await["orders"]["issued"], 0);
    q.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_two_thirds_into_their_life() {
    if !have_pebble() {
        return;
    }
    let (proxy, tls) = (free_port(), free_port());
    // 12-second certificates: each is renewed at its 8th second, without being asked.
    let pebble = Pebble::start_with(proxy, tls, Some(12)).await;
    let state = pebble.dir.join("state.json");
    let q = Running::start(proxy, tls, acme_config(&pebble, &state, Challenge::Http01)).await;
    q.put(
        "/api/v1/services/app",
        serde_json::json!({"hosts": ["short.test"]}),
    )
    .await;
    let first = wait_state(&q, &pebble, "short.test", "valid").await;
    let (nb, renew, na) = (
        first["not_before"].as_str().unwrap().to_owned(),
        first["renew_at"].as_str().unwrap().to_owned(),
        first["not_after"].as_str().unwrap().to_owned(),
    );
    let t = |s: &str| humantime::parse_rfc3339(s).unwrap();
    let life = t(&na).duration_since(t(&nb)).unwrap().as_secs_f64();
    let at = t(&renew).duration_since(t(&nb)).unwrap().as_secs_f64();
    assert!(
        (at / life - 2.0 / 3.0).abs() < 0.1,
        "renewal at {at} s of {life} s"
    );
    let root = pebble.issuing_root().await;
    let (leaf, _) = served(([127, 0, 0, 1], tls).into(), &root, "short.test")
        .await
        .unwrap();
    let renewed = eventually(30, "a renewed certificate served, unasked", || {
        let (root, leaf, first) = (root.clone(), leaf.clone(), first.clone());
        let q = &q;
        async move {
            let now = q.name("short.test").await;
            if now["not_after"] == first["not_after"] {
                return None;
            }
            let (l, _) = served(([127, 0, 0, 1], tls).into(), &root, "short.test")
                .await
                .ok()?;
            (l != leaf).then_some(now)
        }
    })
    .await;
    assert_eq!(renewed["state"], "valid", "{renewed}");
    assert!(q.tls_view().await["orders"]["issued"].as_u64() >= Some(2));
    q.stop().await;
}

#[tokio::test]
async fn automatic_https_needs_a_state_file() {
    let mut c = test_config();
    c.acme = Some(AcmeConfig {
        email: "ops@quayside.test".into(),
        directory: "https://127.0.0.1:1/dir".into(),
        ca_cert: None,
        challenge: Challenge::Http01,
    });
    let listeners = Listeners {
        proxy: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tls: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
    };
    let err = quayside::run(listeners, c, async {}).await.unwrap_err();
    assert!(err.to_string().contains("--state"), "{err}");
}
