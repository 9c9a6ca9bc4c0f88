//! Automatic HTTPS against a real ACME server: Debian's `pebble`, with `pebble-challtestsrv`
//! as its DNS (every name resolves to 127.0.0.1 unless the test says otherwise), its HTTP-01
//! and TLS-ALPN-01 ports pointed at quayside's plain and TLS listeners. Each test starts its
//! own pair and kills them when it ends, passing or failing.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Http, eventually, test_config};
use quayside::acme::{AcmeConfig, Challenge};
use quayside::{Config, Listeners};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

fn free_port() -> u16 {
    // (Taken and given back: the CA's processes bind it right after.)
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind(l.local_addr().unwrap());
    match udp {
        Ok(_) => l.local_addr().unwrap().port(),
        Err(_) => free_port(),
    }
}

/// pebble and pebble-challtestsrv, killed on drop.
struct Pebble {
    dir: PathBuf,
    children: Vec<Child>,
    /// The directory URL.
    directory: String,
    /// The CA of pebble's own HTTPS (what `--acme-ca-cert` trusts).
    api_ca: PathBuf,
    management: u16,
    dns_management: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pebble {
    /// Validations go to `http_port` (HTTP-01) and `tls_port` (TLS-ALPN-01) on 127.0.0.1.
    async fn start(http_port: u16, tls_port: u16) -> Pebble {
        let dir = std::env::temp_dir().join(format!(
            "qs-pebble-{}-{}",
            std::process::id(),
            quayside::proxy::plan::random_id() as u32
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // pebble's own HTTPS certificate, from a CA of the test's.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "quayside test: pebble API CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let api_ca = dir.join("api-ca.pem");
        std::fs::write(&api_ca, ca_cert.pem()).unwrap();
        std::fs::write(dir.join("api.pem"), leaf_cert.pem()).unwrap();
        std::fs::write(dir.join("api.key"), leaf_key.serialize_pem()).unwrap();

        let (listen, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("api.pem"),
            "privateKey": dir.join("api.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| Stdio::from(std::fs::File::create(dir.join(name)).unwrap());
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv runs");
        let mut p = Pebble {
            dir: dir.clone(),
            children: vec![dns_server],
            directory: format!("https://127.0.0.1:{listen}/dir"),
            api_ca,
            management,
            dns_management,
        };
        let ca = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // No random waits before validating, and no nonces refused at random.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble runs");
        p.children.push(ca);
        for port in [listen, management, dns_management] {
            eventually(20, "pebble and challtestsrv listening", || async move {
                TcpStream::connect(("127.0.0.1", port)).await.ok()
            })
            .await;
        }
        p
    }

    /// Resolve `host` to `ip` instead of 127.0.0.1.
    async fn resolve(&self, host: &str, ip: &str) {
        let body = serde_json::json!({"host": host, "addresses": [ip]}).to_string();
        let r = Http::new()
            .method(
                "POST",
                &format!("http://127.0.0.1:{}/add-a", self.dns_management),
                &body,
            )
            .await;
        assert_eq!(r.status, 200, "challtestsrv add-a: {}", r.body);
    }

    /// The root that pebble's issued certificates chain to.
    async fn issuing_root(&self) -> CertificateDer<'static> {
        let pem = https_get(&self.api_ca, self.management, "/roots/0").await;
        rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// What pebble logged, for a failure's message.
    fn logs(&self) -> String {
        ["pebble.log", "pebble.err", "challtestsrv.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn client_config(roots: &[CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth()
}

/// GET over HTTPS from pebble's management interface (its own CA trusted).
async fn https_get(ca: &Path, port: u16, path: &str) -> String {
    let ca: CertificateDer<'static> = rustls_pki_types::pem::PemObject::from_pem_file(ca).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut s = TlsConnector::from(Arc::new(client_config(&[ca])))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let text = common::read_to_close(&mut s).await;
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The leaf certificate quayside's TLS listener serves for `name`, verified against `root`,
/// and the body of a GET through it.
async fn served(
    tls: SocketAddr,
    root: &CertificateDer<'static>,
    name: &str,
) -> Result<(Vec<u8>, String), String> {
    let tcp = TcpStream::connect(tls).await.map_err(|e| e.to_string())?;
    let mut s = TlsConnector::from(Arc::new(client_config(std::slice::from_ref(root))))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    use tokio::io::AsyncWriteExt;
    s.write_all(
        format!("GET /hello HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok((leaf, common::read_to_close(&mut s).await))
}

/// quayside on fixed listeners (so a restart keeps the ports pebble validates on).
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), quayside::StartError>>,
    admin: SocketAddr,
}

impl Running {
    async fn start(proxy: u16, tls: u16, config: Config) -> Running {
        let bind = |port: u16| async move {
            // (Right after a restart the old socket may still be closing.)
            eventually(10, "the port free again", || async move {
                TcpListener::bind(("127.0.0.1", port)).await.ok()
            })
            .await
        };
        let proxy = bind(proxy).await;
        let tls = bind(tls).await;
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(quayside::run(
            Listeners {
                proxy,
                admin,
                tls: Some(tls),
            },
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Running {
            stop: Some(stop),
            task,
            admin: admin_addr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    async fn tls_view(&self) -> Value {
        let r = Http::new().get(&self.url("/api/v1/tls")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// The `/api/v1/tls` entry for `name`.
    async fn name(&self, name: &str) -> Value {
        let v = self.tls_view().await;
        v["names"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    async fn put(&self, path: &str, body: Value) {
        let r = Http::new()
            .method("PUT", &self.url(path), &body.to_string())
            .await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn acme_config(p: &Pebble, state: &Path, challenge: Challenge) -> Config {
    let mut c = test_config();
    c.state = Some(state.to_owned());
    c.acme = Some(AcmeConfig {
        email: "ops@quayside.test".into(),
        directory: p.directory.clone(),
        ca_cert: Some(p.api_ca.clone()),
        challenge,
    });
    c
}

/// Both programs run (they have no `--version`: `-h` is enough to see them start).
fn have_pebble() -> bool {
    let runs = |tool: &str| Command::new(tool).arg("-h").output().is_ok();
    let ok = runs("pebble") && runs("pebble-challtestsrv");
    if !ok {
        assert!(
            std::env::var("QUAYSIDE_REQUIRE_DOCKER").ok().as_deref() != Some("1"),
            "QUAYSIDE_REQUIRE_DOCKER=1 but pebble is missing (apt-get install -y pebble)"
        );
        eprintln!("SKIPPED: pebble is not installed (apt-get install -y pebble)");
    }
    ok
}

async fn wait_state(q: &Running, p: &Pebble, name: &str, state: &str) -> Value {
    let what = format!("{name} {state}");
    let mut last = Value::Null;
    let got = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            last = q.name(name).await;
            if last["state"] == state {
                return last.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let discovery = Http::new().get(&q.url("/api/v1/discovery")).await.body;
    let tls_text = Http::new().get(&q.url("/api/v1/tls")).await.body;
    got.unwrap_or_else(|_| {
        panic!(
            "{what}: last {last}\ndiscovery: {discovery}\ntls: {}\n{}",
            tls_text,
            p.logs()
        )
    })
}

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
    for f in ["app.test.crt", "app.test.key", "account.json"] {
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

    // A restart serves the stored certificate at once, without ordering.
    q.stop().await;
    let q = Running::start(proxy, tls, acme_config(&pebble, &state, Challenge::Http01)).await;
    let again = eventually(
        20,
        "the stored certificate served after the restart",
        || {
            let root = root.clone();
            async move {
                served(([127, 0, 0, 1], tls).into(), &root, "app.test")
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert_eq!(again.0, leaf, "the same certificate after the restart");
    assert!(again.1.ends_with("\r\n\r\napp\n"), "{}", again.1);
    let app = q.name("app.test").await;
    assert_eq!(app["state"], "valid", "{app}");
    let view = q.tls_view().await;
    assert_eq!(view["orders"]["issued"], 0, "no new order: {view}");

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
