//! Where automatic HTTPS keeps its account and certificates, whichever store it is.

use super::store::{Disk, DiskError, Pem};
use super::swarm::SwarmKeep;

/// Where automatic HTTPS keeps its account and certificates: files beside the state file, or
/// the swarm's configs (several replicas, [`super::swarm`]).
#[derive(Clone, Debug)]
pub enum Keep {
    Disk(Disk),
    Swarm(SwarmKeep),
}

impl Keep {
    /// Where, for logs.
    pub fn describe(&self) -> String {
        match self {
            Keep::Disk(d) => d.dir().display().to_string(),
            Keep::Swarm(s) => format!("{s:?}"),
        }
    }

    pub fn swarm(&self) -> Option<&SwarmKeep> {
        match self {
            Keep::Swarm(s) => Some(s),
            Keep::Disk(_) => None,
        }
    }

    pub async fn account(&self) -> Result<Option<Vec<u8>>, DiskError> {
        match self {
            Keep::Disk(d) => d.account(),
            Keep::Swarm(s) => s.account().await,
        }
    }

    /// Keep a new account's credentials; the credentials kept (another replica's, if it kept
    /// one first).
    pub async fn save_account(&self, json: &[u8]) -> Result<Vec<u8>, DiskError> {
        match self {
            Keep::Disk(d) => d.save_account(json).map(|()| json.to_vec()),
            Keep::Swarm(s) => s.save_account(json).await,
        }
    }

    pub async fn cert(&self, name: &str) -> Result<Option<Pem>, DiskError> {
        match self {
            Keep::Disk(d) => d.cert(name),
            Keep::Swarm(s) => s.cert(name).await,
        }
    }

    pub async fn save_cert(&self, name: &str, chain: &[u8], key: &[u8]) -> Result<(), DiskError> {
        match self {
            Keep::Disk(d) => d.save_cert(name, chain, key),
            Keep::Swarm(s) => s.save_cert(name, chain, key).await,
        }
    }

    pub async fn ledger(&self) -> Result<Option<Vec<u8>>, DiskError> {
        match self {
            Keep::Disk(d) => d.ledger(),
            Keep::Swarm(s) => s.ledger().await,
        }
    }

    pub async fn save_ledger(&self, json: &[u8]) -> Result<(), DiskError> {
        match self {
            Keep::Disk(d) => d.save_ledger(json),
            Keep::Swarm(s) => s.save_ledger(json).await,
        }
    }

    /// Take `name`'s order for this replica (always, with files: one replica).
    pub async fn claim(&self, name: &str) -> Result<bool, DiskError> {
        match self {
            Keep::Disk(_) => Ok(true),
            Keep::Swarm(s) => s.claim(name).await,
        }
    }

    pub async fn release(&self, name: &str) {
        if let Keep::Swarm(s) = self {
            s.release(name).await;
        }
    }
}
