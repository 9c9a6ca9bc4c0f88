//! A real ACME server for the tests: Debian's `pebble`, with `pebble-challtestsrv` as its DNS
//! (every name resolves to 127.0.0.1 unless a test says otherwise), killed on drop; and
//! quayside on fixed listeners with TLS (a restart keeps the ports pebble validates on).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use quayside::acme::{AcmeConfig, Challenge};
use quayside::{Config, Listeners};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

use super::{Http, eventually, test_config};

pub fn free_port() -> u16 {
    // (Taken and given back: the CA's processes bind it right after.)
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind(l.local_addr().unwrap());
    match udp {
        Ok(_) => l.local_addr().unwrap().port(),
        Err(_) => free_port(),
    }
}

/// pebble and pebble-challtestsrv, killed on drop.
pub struct Pebble {
    pub dir: PathBuf,
    children: Vec<Child>,
    /// The directory URL.
    pub directory: String,
    /// The CA of pebble's own HTTPS (what `--acme-ca-cert` trusts).
    pub api_ca: PathBuf,
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
    pub async fn start(http_port: u16, tls_port: u16) -> Pebble {
        Self::start_with(http_port, tls_port, None).await
    }

    /// With certificates valid for `validity` seconds (pebble's default: 5 years).
    pub async fn start_with(http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        let dir = std::env::temp_dir().join(format!(
            "qs-pebble-{}-{}",
            std::process::id(),
            quayside::proxy::plan::random_id() as u32
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // pebble's own HTTPS certificate, from a CA of the test's.
        let ca = super::TestCa::new("quayside test: pebble API CA");
        let (leaf_cert, leaf_key) = ca.leaf(&["localhost", "127.0.0.1"]);
        let api_ca = dir.join("api-ca.pem");
        std::fs::write(&api_ca, &ca.pem).unwrap();
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
        let mut config = config;
        if let Some(v) = validity {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
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
    pub async fn resolve(&self, host: &str, ip: &str) {
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
    pub async fn issuing_root(&self) -> CertificateDer<'static> {
        let pem = https_get(&self.api_ca, self.management, "/roots/0").await;
        rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// What pebble logged, for a failure's message.
    pub fn logs(&self) -> String {
        ["pebble.log", "pebble.err", "challtestsrv.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn client_config(roots: &[CertificateDer<'static>]) -> rustls::ClientConfig {
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
pub async fn https_get(ca: &Path, port: u16, path: &str) -> String {
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
    let text = super::read_to_close(&mut s).await;
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The leaf certificate quayside's TLS listener serves for `name`, verified against `root`,
/// and the body of a GET through it.
pub async fn served(
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
    Ok((leaf, super::read_to_close(&mut s).await))
}

/// quayside on fixed listeners (so a restart keeps the ports pebble validates on).
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), quayside::StartError>>,
    pub admin: SocketAddr,
}

impl Running {
    pub async fn start(proxy: u16, tls: u16, config: Config) -> Running {
        if let Ok(filter) = std::env::var("QUAYSIDE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub async fn tls_view(&self) -> Value {
        let r = Http::new().get(&self.url("/api/v1/tls")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// The `/api/v1/tls` entry for `name`.
    pub async fn name(&self, name: &str) -> Value {
        let v = self.tls_view().await;
        v["names"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub async fn put(&self, path: &str, body: Value) {
        let r = Http::new()
            .method("PUT", &self.url(path), &body.to_string())
            .await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
    }

    pub async fn stop(mut self) {
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

pub fn acme_config(p: &Pebble, state: &Path, challenge: Challenge) -> Config {
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
pub fn have_pebble() -> bool {
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

pub async fn wait_state(q: &Running, p: &Pebble, name: &str, state: &str) -> Value {
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
