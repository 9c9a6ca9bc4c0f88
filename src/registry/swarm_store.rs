//! `--state-store swarm`: the operator's state (manual entries, overrides, service settings)
//! kept in the Swarm's own replicated store, so every replica of quayside agrees on it.
//!
//! Swarm configs are immutable, so each change writes the next generation, `<name>-<n>`, with
//! the whole state in the state file's format (gzipped, with a label saying so, beyond
//! [`COMPRESS_OVER`]: a config holds at most 500 KB). Swarm refuses a name that exists, which
//! is what orders the writers: a replica that finds its next name taken lost the race, reads the
//! newest generation, applies its changes on top and tries the next name. Every replica follows
//! `config` events and adopts a newer generation as soon as it is created. Generations older
//! than the previous one are removed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use base64::Engine;
use bollard::Docker;
use bollard::models::ConfigSpec;
use bollard::query_parameters::{EventsOptions, ListConfigsOptions};
use futures_util::StreamExt;

use super::{Registry, persist};

/// The label every generation carries: the store's name.
pub const STORE_LABEL: &str = "quayside.state-store";
/// The label that says a generation's data is gzipped.
const ENCODING_LABEL: &str = "quayside.state-encoding";
/// The `--instance` of the quayside whose state it is (absent: one without an instance).
const INSTANCE_LABEL: &str = "quayside.state-instance";
/// Data larger than this is gzipped (a config holds at most 500 KB).
const COMPRESS_OVER: usize = 400 * 1024;
const LIMIT: usize = 500 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "--state-store swarm needs a Swarm manager, and the Docker endpoint {0} is not one (a worker, or no swarm): point --docker-host at a manager, or use the state file"
    )]
    NotManager(String),
    #[error("cannot reach the Docker endpoint {endpoint} for --state-store swarm: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the Swarm state {name} cannot be read: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("another replica wrote generation {0} first")]
    Taken(u64),
    #[error(
        "the Swarm state store {name} belongs to {theirs}, and this quayside is {mine}: give it a --state-store-name of its own (or leave it unset: an instance gets quayside-state-<instance>)"
    )]
    OtherInstance {
        name: String,
        theirs: String,
        mine: String,
    },
    #[error("cannot write the Swarm state: {0}")]
    Write(String),
    #[error(
        "the state is {0} bytes even compressed, over the 500 KB a Swarm config holds; use the state file"
    )]
    TooLarge(usize),
}

/// The Swarm store of one quayside deployment (all its replicas share `name`).
pub struct SwarmStore {
    docker: Docker,
    name: String,
    /// This quayside's `--instance`, written on every generation.
    instance: Option<String>,
    /// The newest generation this replica has written or adopted (0: none yet).
    generation: u64,
}

impl SwarmStore {
    /// Connect to the manager at `endpoint` and read the newest generation of `name`.
    pub async fn open(
        endpoint: &str,
        name: &str,
        instance: Option<&str>,
    ) -> Result<(Option<Registry>, SwarmStore), StoreError> {
        let unreachable = |e: bollard::errors::Error| StoreError::Unreachable {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        };
        let docker = Docker::connect_with_host(endpoint)
            .map_err(unreachable)?
            .negotiate_version()
            .await
            .map_err(unreachable)?;
        let info = docker.info().await.map_err(unreachable)?;
        if !info
            .swarm
            .and_then(|s| s.control_available)
            .unwrap_or(false)
        {
            return Err(StoreError::NotManager(endpoint.to_owned()));
        }
        let mut store = SwarmStore {
            docker,
            name: name.to_owned(),
            instance: instance.map(str::to_owned),
            generation: 0,
        };
        store.check_instance().await?;
        let newest = store.newest().await?;
        let reg = newest.map(|(g, reg)| {
            store.generation = g;
            reg
        });
        Ok((reg, store))
    }

    /// Refuse a store another instance's replicas write (two instances given one name).
    async fn check_instance(&self) -> Result<(), StoreError> {
        let Some((_, id)) = self.generations().await?.pop() else {
            return Ok(());
        };
        let Ok(config) = self.docker.inspect_config(&id).await else {
            return Ok(()); // (Replaced meanwhile: the read that follows says more.)
        };
        let theirs = config
            .spec
            .and_then(|s| s.labels)
            .and_then(|l| l.get(INSTANCE_LABEL).cloned());
        if theirs == self.instance {
            return Ok(());
        }
        let who = |i: &Option<String>| match i {
            Some(n) => format!("quayside instance {n}"),
            None => "the quayside without --instance".to_owned(),
        };
        Err(StoreError::OtherInstance {
            name: self.name.clone(),
            theirs: who(&theirs),
            mine: who(&self.instance),
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A generation adopted from another replica.
    pub fn adopted(&mut self, generation: u64) {
        self.generation = self.generation.max(generation);
    }

    /// The generations that exist, by number: (generation, config id).
    async fn generations(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let configs = self
            .docker
            .list_configs(Some(ListConfigsOptions {
                filters: Some(HashMap::from([(
                    "label".to_owned(),
                    vec![format!("{STORE_LABEL}={}", self.name)],
                )])),
            }))
            .await
            .map_err(|e| StoreError::Write(e.to_string()))?;
        let mut out: Vec<(u64, String)> = configs
            .into_iter()
            .filter_map(|c| {
                let name = c.spec?.name?;
                let g = self.generation_of(&name)?;
                Some((g, c.id?))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// `7` for `<name>-7`.
    pub fn generation_of(&self, config: &str) -> Option<u64> {
        config
            .strip_prefix(self.name.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// The newest generation and its state, if there is one.
    pub async fn newest(&self) -> Result<Option<(u64, Registry)>, StoreError> {
        let Some((g, id)) = self.generations().await?.pop() else {
            return Ok(None);
        };
        Ok(Some((g, self.read(g, &id).await?)))
    }

    /// The state in generation `g` (config `id`).
    pub async fn read(&self, g: u64, id: &str) -> Result<Registry, StoreError> {
        let name = format!("{}-{g}", self.name);
        let corrupt = |reason: String| StoreError::Corrupt {
            name: name.clone(),
            reason,
        };
        let config = self
            .docker
            .inspect_config(id)
            .await
            .map_err(|e| corrupt(e.to_string()))?;
        let spec = config.spec.unwrap_or_default();
        let data = base64::engine::general_purpose::STANDARD
            .decode(spec.data.unwrap_or_default())
            .map_err(|e| corrupt(e.to_string()))?;
        let gzipped = spec
            .labels
            .unwrap_or_default()
            .get(ENCODING_LABEL)
            .is_some_and(|e| e == "gzip");
        decode(&data, gzipped).map_err(corrupt)
    }

    /// Write `reg` as the next generation. [`StoreError::Taken`] if another replica wrote it
    /// first: read the newest, apply the changes on top, and try again.
    pub async fn save(&mut self, reg: &Registry) -> Result<(), StoreError> {
        let next = self.generation + 1;
        let (data, gzip) = encode(reg)?;
        let mut labels = HashMap::from([(STORE_LABEL.to_owned(), self.name.clone())]);
        if gzip {
            labels.insert(ENCODING_LABEL.to_owned(), "gzip".to_owned());
        }
        if let Some(i) = &self.instance {
            labels.insert(INSTANCE_LABEL.to_owned(), i.clone());
        }
        let spec = ConfigSpec {
            name: Some(format!("{}-{next}", self.name)),
            labels: Some(labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            templating: None,
        };
        match self.docker.create_config(spec).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => return Err(StoreError::Taken(next)),
            Err(e) => return Err(StoreError::Write(e.to_string())),
        }
        self.generation = next;
        // Old generations go (the previous one stays, for a replica reading it right now).
        let docker = self.docker.clone();
        let old: Vec<String> = self
            .generations()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|(g, _)| *g + 1 < next)
            .map(|(_, id)| id)
            .collect();
        tokio::spawn(async move {
            for id in old {
                let _ = docker.delete_config(&id).await;
            }
        });
        Ok(())
    }
}

/// The state file's bytes for `reg`, gzipped beyond [`COMPRESS_OVER`]; and whether they are.
pub fn encode(reg: &Registry) -> Result<(Vec<u8>, bool), StoreError> {
    let json = persist::encode(reg);
    if json.len() <= COMPRESS_OVER {
        return Ok((json, false));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json)
        .map_err(|e| StoreError::Write(e.to_string()))?;
    let out = gz.finish().map_err(|e| StoreError::Write(e.to_string()))?;
    if out.len() > LIMIT {
        return Err(StoreError::TooLarge(out.len()));
    }
    Ok((out, true))
}

/// The state in a generation's data, gzipped or not.
pub fn decode(data: &[u8], gzipped: bool) -> Result<Registry, String> {
    if !gzipped {
        return persist::decode(data);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    persist::decode(&out)
}

/// Follow the store's `config` events on `endpoint` and hand every newer generation to
/// `adopt` (with its number), until `stop`. Reconnects with a backoff; after each (re)connect it
/// reads the newest generation, so nothing written meanwhile is missed.
pub async fn follow<F, Fut>(
    endpoint: String,
    name: String,
    adopt: F,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    F: Fn(u64, Registry) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let docker = Docker::connect_with_host(&endpoint)
                .map_err(|e| e.to_string())?
                .negotiate_version()
                .await
                .map_err(|e| e.to_string())?;
            let store = SwarmStore {
                docker: docker.clone(),
                name: name.clone(),
                // (Reads only: it writes nothing.)
                instance: None,
                generation: 0,
            };
            // Events from a little before the read of the newest generation: the stream is
            // only asked for once polled, after that read, and a generation another replica
            // wrote in between would otherwise wait for the next one (a replica served a
            // service without the backend set just after it).
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs().saturating_sub(5))
                .unwrap_or(0);
            let mut events = docker.events(Some(EventsOptions {
                since: Some(since.to_string()),
                until: None,
                filters: Some(HashMap::from([
                    ("type".to_owned(), vec!["config".to_owned()]),
                    ("event".to_owned(), vec!["create".to_owned()]),
                ])),
            }));
            // The newest generation handed over; replayed events of older ones are skipped.
            let mut adopted = 0;
            if let Some((g, reg)) = store.newest().await.map_err(|e| e.to_string())? {
                adopted = g;
                adopt(g, reg).await;
            }
            while let Some(ev) = events.next().await {
                let ev = ev.map_err(|e| e.to_string())?;
                let actor = ev.actor.unwrap_or_default();
                let config_name = actor
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get("name"))
                    .cloned()
                    .unwrap_or_default();
                let (Some(g), Some(id)) = (store.generation_of(&config_name), actor.id) else {
                    continue;
                };
                if g <= adopted {
                    continue;
                }
                match store.read(g, &id).await {
                    Ok(reg) => {
                        adopted = g;
                        adopt(g, reg).await
                    }
                    // Removed already (a newer one follows), or unreadable: said, and skipped.
                    Err(e) => tracing::warn!(error = %e, "skipped a Swarm state generation"),
                }
            }
            Err::<(), String>("the event stream ended".into())
        };
        let err = tokio::select! {
            r = session => r.err().unwrap_or_default(),
            _ = stop.wait_for(|s| *s) => return,
        };
        tracing::warn!(%endpoint, error = %err, "lost the Swarm state store's events; retrying (replicas' changes arrive once it is back)");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{AdminState, BackendSpec, Command};

    fn with_entries(n: usize) -> Registry {
        let mut reg = Registry::new();
        for i in 0..n {
            reg.apply(Command::upsert(BackendSpec {
                no: format!("backend-number-{i:06}"),
                addr: [10, (i >> 16) as u8, (i >> 8) as u8, i as u8].into(),
                port: 8080,
                weight: 1,
                service: format!("service-{}", i % 50),
                state: AdminState::Active,
            }))
            .unwrap();
        }
        reg
    }

    #[test]
    fn small_states_are_plain_large_ones_gzipped_and_both_read_back() {
        let small = with_entries(10);
        let (data, gzip) = encode(&small).unwrap();
        assert!(!gzip);
        assert!(decode(&data, false).unwrap().same_operator_state(&small));
        // Some 5,000 entries: over the plain limit, well under it compressed.
        let large = with_entries(5000);
        assert!(persist::encode(&large).len() > COMPRESS_OVER);
        let (data, gzip) = encode(&large).unwrap();
        assert!(gzip && data.len() < LIMIT, "{} bytes", data.len());
        assert!(decode(&data, true).unwrap().same_operator_state(&large));
    }
}
