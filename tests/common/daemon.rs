//! A second Docker daemon of the test's own: its own socket, data and exec roots, an empty
//! config file (the machine's daemon.json sets `data-root`), the `vfs` storage driver, no
//! iptables, and its own bridge made first (with `--bridge none` it would delete the first
//! daemon's `docker0`). It is stopped and everything it made (bridge, directories) removed on
//! drop, also when the test fails.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::docker::docker;

pub struct Daemon {
    pub dir: PathBuf,
    pub bridge: String,
    child: Option<Child>,
    /// The port of its TCP+TLS listener (client certificates required), if it has one.
    tls_port: Option<u16>,
}

/// The client's side of a daemon's TLS: where it listens and the files to connect with.
pub struct ClientTls {
    pub host: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Daemon {
    /// Start it and load `images` (from the first daemon) into it.
    pub fn start(images: &[&str]) -> Daemon {
        Self::start_with(images, false)
    }

    /// The same, also listening on TCP with TLS, as `dockerd --tlsverify` does: a CA of the
    /// test's own signs its server certificate (for 127.0.0.1) and a client certificate.
    pub fn start_with_tls(images: &[&str]) -> Daemon {
        Self::start_with(images, true)
    }

    fn start_with(images: &[&str], tls: bool) -> Daemon {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("quayside-dockerd-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        // Interface names have at most 15 characters; the subnet is one of 200 by process.
        let bridge = format!("qsbr{}", pid % 100_000);
        let subnet = format!("10.213.{}.1/24", pid % 200 + 20);
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        for args in [
            vec!["link", "add", "name", &bridge, "type", "bridge"],
            vec!["addr", "add", &subnet, "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tls_port = tls.then(|| {
            write_certs(&dir.join("tls"));
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let mut d = Daemon {
            dir,
            bridge,
            child: None,
            tls_port,
        };
        d.resume();
        for image in images {
            let mut save = Command::new("docker")
                .args(["save", image])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = Command::new("docker")
                .args(["-H", &d.host(), "load", "-q"])
                .stdin(save.stdout.take().unwrap())
                .output()
                .unwrap();
            let _ = save.wait();
            assert!(
                out.status.success(),
                "loading {image}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        d
    }

    /// `unix://<its socket>`
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// How a client reaches its TLS listener (panics if it has none).
    pub fn client_tls(&self) -> ClientTls {
        let t = self.dir.join("tls");
        ClientTls {
            host: format!("tcp://127.0.0.1:{}", self.tls_port.expect("a TLS daemon")),
            ca: t.join("ca.pem"),
            cert: t.join("cert.pem"),
            key: t.join("key.pem"),
        }
    }

    /// `docker -H <it> args…`
    pub fn docker(&self, args: &[&str]) -> String {
        let host = self.host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// Start it (again), and wait until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let d = &self.dir;
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(port) = self.tls_port {
            let t = d.join("tls");
            tls_args.push("--tlsverify".into());
            for (flag, file) in [
                ("--tlscacert", "ca.pem"),
                ("--tlscert", "server.pem"),
                ("--tlskey", "server-key.pem"),
            ] {
                tls_args.push(flag.into());
                tls_args.push(t.join(file).into());
            }
            tls_args.push("--host".into());
            tls_args.push(format!("tcp://127.0.0.1:{port}").into());
        }
        let child = Command::new("dockerd")
            .args(&tls_args)
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .args(["--storage-driver", "vfs", "--iptables=false", "--bridge"])
            .arg(&self.bridge)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("docker")
                .args(["-H", &self.host(), "info", "--format", "{{.ServerVersion}}"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the second dockerd did not answer within 30 s: {}",
                std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop it as `systemctl stop docker` would (SIGTERM: its containers are stopped too), and
    /// wait until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = Command::new("docker")
                .args(["-H", &self.host(), "ps", "-aq"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["-H", &self.host(), "rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        self.stop();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        // (vfs layers are plain directories: removing the data root removes its images.)
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir` (the names
/// `dockerd --tlsverify` and Docker clients use).
fn write_certs(dir: &std::path::Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    for (stem, names, usage) in [
        (
            "server",
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        ("client", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (cert_file, key_file) = if stem == "server" {
            ("server.pem", "server-key.pem")
        } else {
            ("cert.pem", "key.pem")
        };
        std::fs::write(dir.join(cert_file), cert.pem()).unwrap();
        std::fs::write(dir.join(key_file), key.serialize_pem()).unwrap();
    }
}
