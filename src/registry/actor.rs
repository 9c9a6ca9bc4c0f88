//! The registry task: the single writer. Sources send [`Command`]s through a [`Handle`]; the task
//! applies them in batches (whatever has queued up), saves the state file once per batch, and only
//! then publishes the new registry and routing table and answers the senders. So an OK is never
//! sent before the change is durable, and a burst of changes costs one fsync, not one each.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use super::{Command, Registry, RegistryError, persist};
use crate::routing::RoutingTable;

/// Most commands applied (and saved) together.
const MAX_BATCH: usize = 4096;

/// What the rest of quayside reads: the latest registry and routing table.
pub struct Shared {
    pub registry: ArcSwap<Registry>,
    pub table: ArcSwap<RoutingTable>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Rejected(#[from] RegistryError),
    #[error("{0}; the change was not applied")]
    Persist(String),
    #[error("quayside is shutting down; the change was not applied")]
    Closed,
}

type Reply = oneshot::Sender<Result<(), ApplyError>>;

/// A cheap, cloneable way to change and read the registry.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<(Command, Reply)>,
    shared: Arc<Shared>,
}

impl Handle {
    /// Start the registry task with `initial` state; `state_path` is where changes are saved.
    pub fn spawn(initial: Registry, state_path: Option<PathBuf>) -> Handle {
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(RoutingTable::build(&initial, None)),
            registry: ArcSwap::from_pointee(initial),
        });
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        tokio::spawn(run(rx, shared.clone(), state_path));
        Handle { tx, shared }
    }

    /// Apply a command; returns once it is saved and published.
    pub async fn apply(&self, cmd: Command) -> Result<(), ApplyError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((cmd, reply))
            .await
            .map_err(|_| ApplyError::Closed)?;
        rx.await.map_err(|_| ApplyError::Closed)?
    }

    /// The registry as of the last published change.
    pub fn registry(&self) -> Arc<Registry> {
        self.shared.registry.load_full()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

async fn run(
    mut rx: mpsc::Receiver<(Command, Reply)>,
    shared: Arc<Shared>,
    state_path: Option<PathBuf>,
) {
    let mut batch = Vec::new();
    // What the state file holds now; discovery churn that leaves it unchanged costs no write.
    let mut saved_bytes = persist::encode(&shared.registry.load());
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let current = shared.registry.load_full();
        let mut next = Registry::clone(&current);
        let results: Vec<(Result<(), RegistryError>, Reply)> = batch
            .drain(..)
            .map(|(cmd, reply)| (next.apply(cmd), reply))
            .collect();
        // Any accepted command counts as a change (a no-op re-add costs one write).
        let changed = results.iter().any(|(r, _)| r.is_ok());
        let bytes = if changed {
            persist::encode(&next)
        } else {
            Vec::new()
        };
        let saved = match &state_path {
            Some(path) if changed && bytes != saved_bytes => {
                let path = path.clone();
                let to_write = bytes.clone();
                let r = tokio::task::spawn_blocking(move || persist::save(&path, &to_write))
                    .await
                    .unwrap_or_else(|e| {
                        Err(persist::StateError::Write {
                            path: PathBuf::new(),
                            source: std::io::Error::other(e.to_string()),
                        })
                    });
                if r.is_ok() {
                    saved_bytes = bytes;
                }
                r
            }
            _ => Ok(()),
        };
        match saved {
            Ok(()) => {
                if changed {
                    let prev = shared.table.load();
                    let table = RoutingTable::build(&next, Some(&prev));
                    shared.table.store(Arc::new(table));
                    shared.registry.store(Arc::new(next));
                }
                for (r, reply) in results {
                    let _ = reply.send(r.map_err(ApplyError::from));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not save the state file; rejected the pending changes. Check the disk and the permissions of the --state path");
                let msg = e.to_string();
                for (r, reply) in results {
                    let _ = reply.send(match r {
                        Ok(()) => Err(ApplyError::Persist(msg.clone())),
                        Err(e) => Err(e.into()),
                    });
                }
            }
        }
    }
}
