//! Automatic HTTPS with several replicas (`--state-store swarm`): the account, the certificates
//! and the challenges in flight kept as Swarm configs beside the state store's, so every
//! replica serves the same certificates and answers a challenge another replica ordered.
//!
//! - Certificates: `<store>-acme-cert-<hash>-<n>`, the newest generation wins (older ones but
//!   the previous are removed), chain and key as JSON. Configs are readable by whoever reaches
//!   the Docker API, which can run anything on the host anyway; Swarm secrets cannot be read
//!   back, so they cannot carry a certificate from one replica to another.
//! - Ordering: one replica at a time per name, by creating `<store>-acme-lock-<hash>`: Swarm
//!   refuses a name that exists, so the second replica learns the first is ordering. A lock
//!   older than [`STALE_LOCK`] (its replica died mid-order) is taken over.
//! - The rate limits' ledger ([`super::schedule::Ledger`]): `<store>-acme-ledger-<hash>-<n>`,
//!   generations as certificates; each replica merges its own into the newest before writing.
//! - Challenges: `<store>-acme-http01-<hash>` (a token's key authorization) and
//!   `<store>-acme-alpn-<hash>` (a name's TLS-ALPN-01 digest), removed after the order. The
//!   others follow every config once a second ([`SwarmKeep::snapshot`]).
//!
//! Config names are at most 64 characters: the DNS name, token and directory are in labels,
//! the name carries a hash of them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bollard::Docker;
use bollard::models::ConfigSpec;
use bollard::query_parameters::ListConfigsOptions;

use super::store::{DiskError, Pem};

/// The label every ACME config carries: the state store's name.
pub const ACME_LABEL: &str = "quayside.acme-store";
const KIND: &str = "quayside.acme-kind";
const KEY: &str = "quayside.acme-key";
const DIRECTORY: &str = "quayside.acme-directory";
const SINCE: &str = "quayside.acme-since";
/// A lock older than this is taken over: its replica has died (an order takes at most
/// [`super::ORDER_TIMEOUT`]).
pub const STALE_LOCK: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct SwarmKeep {
    docker: Docker,
    store: String,
    directory: String,
    /// [`STALE_LOCK`], but for tests of the takeover.
    stale_after: Duration,
}

impl std::fmt::Debug for SwarmKeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SwarmKeep({})", self.store)
    }
}

/// What the swarm holds now: each name's newest certificate, and the challenges in flight.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub certs: HashMap<String, (u64, Pem)>,
    /// HTTP-01 token → `name\nkey authorization` (the name the challenge is for).
    pub http01: HashMap<String, String>,
    /// Name → TLS-ALPN-01 digest.
    pub alpn: HashMap<String, Vec<u8>>,
}

fn fnv(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn err(what: &str, e: impl std::fmt::Display) -> DiskError {
    DiskError {
        path: format!("swarm config {what}"),
        reason: e.to_string(),
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CertData {
    chain: String,
    key: String,
}

/// A config as read: kind, key, generation, data.
struct Item {
    id: String,
    kind: String,
    key: String,
    generation: u64,
    since: u64,
    data: Vec<u8>,
}

impl SwarmKeep {
    pub fn new(docker: Docker, store: &str, directory: &str) -> SwarmKeep {
        SwarmKeep {
            docker,
            store: store.to_owned(),
            directory: directory.to_owned(),
            stale_after: STALE_LOCK,
        }
    }

    /// The same, taking over a lock older than `d` instead of [`STALE_LOCK`] (tests).
    pub fn stale_after(mut self, d: Duration) -> SwarmKeep {
        self.stale_after = d;
        self
    }

    fn name(&self, kind: &str, key: &str, generation: Option<u64>) -> String {
        let h = fnv(&[&self.directory, key]);
        match generation {
            Some(g) => format!("{}-acme-{kind}-{h}-{g}", self.store),
            None => format!("{}-acme-{kind}-{h}", self.store),
        }
    }

    /// Create a config; `Ok(false)`: the name exists.
    async fn create(
        &self,
        kind: &str,
        key: &str,
        generation: Option<u64>,
        data: &[u8],
    ) -> Result<bool, DiskError> {
        let name = self.name(kind, key, generation);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let labels = HashMap::from([
            (ACME_LABEL.to_owned(), self.store.clone()),
            (KIND.to_owned(), kind.to_owned()),
            (KEY.to_owned(), key.to_owned()),
            (DIRECTORY.to_owned(), self.directory.clone()),
            (SINCE.to_owned(), now.to_string()),
        ]);
        let spec = ConfigSpec {
            name: Some(name.clone()),
            labels: Some(labels),
            data: Some(b64().encode(data)),
            templating: None,
        };
        match self.docker.create_config(spec).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(false),
            Err(e) => Err(err(&name, e)),
        }
    }

    async fn remove(&self, kind: &str, key: &str, generation: Option<u64>) {
        let name = self.name(kind, key, generation);
        let _ = self.docker.delete_config(&name).await;
    }

    /// Every ACME config of this store and directory.
    async fn items(&self) -> Result<Vec<Item>, DiskError> {
        let configs = self
            .docker
            .list_configs(Some(ListConfigsOptions {
                filters: Some(HashMap::from([(
                    "label".to_owned(),
                    vec![format!("{ACME_LABEL}={}", self.store)],
                )])),
            }))
            .await
            .map_err(|e| err(&format!("list ({})", self.store), e))?;
        Ok(configs
            .into_iter()
            .filter_map(|c| {
                let spec = c.spec?;
                let labels = spec.labels?;
                if labels.get(DIRECTORY) != Some(&self.directory) {
                    return None;
                }
                let name = spec.name?;
                let generation = name
                    .rsplit_once('-')
                    .and_then(|(_, g)| g.parse().ok())
                    .unwrap_or(0);
                Some(Item {
                    id: c.id?,
                    kind: labels.get(KIND)?.clone(),
                    key: labels.get(KEY)?.clone(),
                    generation,
                    since: labels.get(SINCE).and_then(|s| s.parse().ok()).unwrap_or(0),
                    data: b64().decode(spec.data?).ok()?,
                })
            })
            .collect())
    }

    pub async fn account(&self) -> Result<Option<Vec<u8>>, DiskError> {
        Ok(self
            .items()
            .await?
            .into_iter()
            .find(|i| i.kind == "account")
            .map(|i| i.data))
    }

    /// Keep `json` as the account unless another replica kept one first: the one kept.
    pub async fn save_account(&self, json: &[u8]) -> Result<Vec<u8>, DiskError> {
        if self.create("account", "account", None, json).await? {
            return Ok(json.to_vec());
        }
        self.account()
            .await?
            .ok_or_else(|| err("account", "taken, then not found"))
    }

    pub async fn snapshot(&self) -> Result<Snapshot, DiskError> {
        let mut out = Snapshot::default();
        for i in self.items().await? {
            match i.kind.as_str() {
                "cert" => {
                    let Ok(d) = serde_json::from_slice::<CertData>(&i.data) else {
                        continue;
                    };
                    let newer = out.certs.get(&i.key).is_none_or(|(g, _)| *g < i.generation);
                    if newer {
                        let pem = (d.chain.into_bytes(), d.key.into_bytes());
                        out.certs.insert(i.key, (i.generation, pem));
                    }
                }
                "http01" => {
                    out.http01
                        .insert(i.key, String::from_utf8_lossy(&i.data).into_owned());
                }
                "alpn" => {
                    out.alpn.insert(i.key, i.data);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    pub async fn cert(&self, name: &str) -> Result<Option<Pem>, DiskError> {
        Ok(self.snapshot().await?.certs.remove(name).map(|(_, p)| p))
    }

    /// The next generation of `name`'s certificate; the older ones but the previous go.
    pub async fn save_cert(&self, name: &str, chain: &[u8], key: &[u8]) -> Result<(), DiskError> {
        let data = serde_json::to_vec(&CertData {
            chain: String::from_utf8_lossy(chain).into_owned(),
            key: String::from_utf8_lossy(key).into_owned(),
        })
        .map_err(|e| err(name, e))?;
        self.save_generation("cert", name, &data).await
    }

    /// The rate limits' ledger the replicas share (JSON), if one was kept.
    pub async fn ledger(&self) -> Result<Option<Vec<u8>>, DiskError> {
        Ok(self
            .items()
            .await?
            .into_iter()
            .filter(|i| i.kind == "ledger")
            .max_by_key(|i| i.generation)
            .map(|i| i.data))
    }

    pub async fn save_ledger(&self, json: &[u8]) -> Result<(), DiskError> {
        self.save_generation("ledger", "limits", json).await
    }

    /// `data` as the next generation of `kind`/`key` (configs cannot change); the older ones
    /// but the previous go.
    async fn save_generation(&self, kind: &str, key: &str, data: &[u8]) -> Result<(), DiskError> {
        let held: Vec<Item> = self
            .items()
            .await?
            .into_iter()
            .filter(|i| i.kind == kind && i.key == key)
            .collect();
        let mut next = held.iter().map(|i| i.generation).max().unwrap_or(0) + 1;
        while !self.create(kind, key, Some(next), data).await? {
            next += 1;
        }
        for old in held.iter().filter(|i| i.generation + 1 < next) {
            let _ = self.docker.delete_config(&old.id).await;
        }
        Ok(())
    }

    /// Take the order of `name` for this replica; `false`: another one is ordering it.
    pub async fn claim(&self, name: &str) -> Result<bool, DiskError> {
        // (Swarm refuses an empty config: the lock says whose it is.)
        let whose = format!("pid {}", std::process::id());
        if self.create("lock", name, None, whose.as_bytes()).await? {
            return Ok(true);
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stale = self.items().await?.into_iter().any(|i| {
            i.kind == "lock"
                && i.key == name
                && now.saturating_sub(i.since) > self.stale_after.as_secs()
        });
        if stale {
            tracing::warn!(name = %name, "taking over a stale ACME order lock (its replica stopped mid-order)");
            self.remove("lock", name, None).await;
            return self.create("lock", name, None, whose.as_bytes()).await;
        }
        Ok(false)
    }

    pub async fn release(&self, name: &str) {
        self.remove("lock", name, None).await;
    }

    /// Put up (Some) or take down (None) a challenge answer for the other replicas.
    pub async fn challenge(
        &self,
        kind: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), DiskError> {
        match value {
            Some(v) => {
                if !self.create(kind, key, None, v).await? {
                    // A leftover of an earlier order: replaced.
                    self.remove(kind, key, None).await;
                    self.create(kind, key, None, v).await?;
                }
            }
            None => self.remove(kind, key, None).await,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_stay_within_swarms_limit() {
        let docker =
            Docker::connect_with_http("http://127.0.0.1:1", 1, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let k = SwarmKeep::new(
            docker,
            "quayside-state",
            "https://acme-v02.api.letsencrypt.org/directory",
        );
        let long = format!("{}.example.com", "a".repeat(63));
        for (kind, g) in [("cert", Some(99_999)), ("http01", None), ("lock", None)] {
            let n = k.name(kind, &long, g);
            assert!(n.len() <= 64, "{n}");
        }
        // Distinct keys, distinct names; the same key, the same name.
        assert_ne!(
            k.name("cert", "a.test", Some(1)),
            k.name("cert", "b.test", Some(1))
        );
        assert_eq!(
            k.name("lock", "a.test", None),
            k.name("lock", "a.test", None)
        );
    }
}
