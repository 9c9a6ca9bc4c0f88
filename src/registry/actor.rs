//! The registry task: the single writer. Sources send [`Command`]s through a [`Handle`]; the task
//! applies them in batches (whatever has queued up), appends what they changed to the state
//! journal once per batch (on the writer thread, [`super::writer`]), and only then publishes the
//! new registry and the table built from it (a [`Publish`] type: the routing table, defined in
//! the layer above; updated for the touched entries and services only) and answers the senders.
//! So an OK is never sent before the change is durable, a burst of changes costs one fsync, not
//! one each, and the cost of a change does not grow with the number of backends. A write that
//! does not answer within [`super::writer::SAVE_BOUND`] is answered as applied but not saved.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use super::{Changes, Command, Registry, RegistryError, persist};

/// Most commands applied (and saved) together.
const MAX_BATCH: usize = 4096;

/// What the registry task publishes beside the registry after every change: built from the
/// registry, then updated from the previous one for what changed.
pub trait Publish: Send + Sync + Sized + 'static {
    fn build(reg: &Registry) -> Self;
    fn update(reg: &Registry, prev: &Self, changes: &Changes) -> Self;
    /// Called once `self` has replaced `prev` in [`Shared::table`].
    fn replaced(&self, prev: &Self, changes: &Changes);
}

/// What the rest of quayside reads: the latest registry and the table built from it.
pub struct Shared<T> {
    pub registry: ArcSwap<Registry>,
    pub table: ArcSwap<T>,
    /// Tables published so far (the first is 1).
    pub generation: std::sync::atomic::AtomicU64,
    /// What changed, as events.
    pub events: super::events::Events,
    /// How long the state file's writes take (none: no state file).
    pub state_writes: Option<Arc<persist::WriteTimes>>,
    /// Whether the state file can be written now (none: no state file).
    pub state_status: Option<Arc<super::writer::Status>>,
}

tokio::task_local! {
    /// Who is asking for the changes made in this task (the admin API sets it per request).
    pub static BY: Option<String>;
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Rejected(#[from] RegistryError),
    #[error("{0}; the change was not applied")]
    Persist(String),
    #[error(
        "the state file's disk did not answer within {} s: the change is applied, and is saved when the disk answers (lost if quayside stops before)",
        super::writer::SAVE_BOUND.as_secs()
    )]
    Unsaved,
    #[error("quayside is shutting down; the change was not applied")]
    Closed,
}

type Reply = oneshot::Sender<Result<(), ApplyError>>;

#[allow(clippy::large_enum_variant)] // nearly every message is an `Apply`
enum Msg {
    /// A command, and who asked for it.
    Apply(Command, Reply, Option<String>),
    /// Fold the journal into the state file (clean shutdown).
    Compact(oneshot::Sender<()>),
    /// Close the store (its writes done, a state file's lock released) and stop.
    Close(oneshot::Sender<()>),
    /// A generation of the Swarm store another replica wrote.
    Adopt(u64, Box<Registry>),
}

/// A cheap, cloneable way to change and read the registry.
pub struct Handle<T> {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T: Publish> Handle<T> {
    /// Start the registry task with `initial` state; `store` is where changes are saved.
    pub fn spawn(initial: Registry, store: Option<Store>) -> Handle<T> {
        let state_writes = match &store {
            Some(Store::File(s)) => Some(s.times()),
            _ => None,
        };
        let store = store.map(|s| match s {
            Store::File(file) => Saving::File(super::writer::Writer::spawn(file)),
            Store::Swarm(swarm) => Saving::Swarm(swarm),
        });
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(T::build(&initial)),
            registry: ArcSwap::from_pointee(initial),
            generation: std::sync::atomic::AtomicU64::new(1),
            events: Default::default(),
            state_writes,
            state_status: match &store {
                Some(Saving::File(w)) => Some(w.status().clone()),
                _ => None,
            },
        });
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        tokio::spawn(run(rx, shared.clone(), store));
        Handle { tx, shared }
    }

    /// Apply a command; returns once it is saved and published.
    pub async fn apply(&self, cmd: Command) -> Result<(), ApplyError> {
        let (reply, rx) = oneshot::channel();
        let by = BY.try_with(Clone::clone).ok().flatten();
        self.tx
            .send(Msg::Apply(cmd, reply, by))
            .await
            .map_err(|_| ApplyError::Closed)?;
        rx.await.map_err(|_| ApplyError::Closed)?
    }

    /// Rewrite the state file from the registry and empty its journal (on a clean shutdown,
    /// so the state file alone is complete).
    pub async fn compact(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Compact(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Fold the journal into the state file, then close the store (a state file's lock is
    /// released once this returns: another quayside, or this one run again, may open it) and
    /// stop the registry task; changes asked for after it are refused.
    pub async fn close(&self) {
        self.compact().await;
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Adopt generation `g` of the Swarm store, written by another replica (ignored unless
    /// newer than what this replica has).
    pub async fn adopt(&self, g: u64, reg: Registry) {
        let _ = self.tx.send(Msg::Adopt(g, Box::new(reg))).await;
    }

    /// The registry as of the last published change.
    pub fn registry(&self) -> Arc<Registry> {
        self.shared.registry.load_full()
    }

    pub fn shared(&self) -> &Arc<Shared<T>> {
        &self.shared
    }
}

/// Where the registry task saves the operator's changes.
pub enum Store {
    /// The state file and its journal (one host).
    File(persist::Store),
    /// Swarm configs shared by every replica (`--state-store swarm`).
    Swarm(super::swarm_store::SwarmStore),
}

/// A [`Store`] as the registry task uses it: the state file behind its writer thread.
enum Saving {
    File(super::writer::Writer),
    Swarm(super::swarm_store::SwarmStore),
}

/// Attempts at writing a batch to the Swarm store when other replicas keep winning.
const SWARM_TRIES: usize = 10;

/// One batch's commands, applied to `base`: the registry after them, what changed, and each
/// command's result.
fn apply_batch(
    base: &Registry,
    cmds: Vec<Command>,
    mut changes: Changes,
) -> (Registry, Changes, Vec<Result<(), RegistryError>>) {
    let mut next = Registry::clone(base);
    let results = cmds
        .into_iter()
        .map(|cmd| next.apply_tracked(cmd, &mut changes))
        .collect();
    (next, changes, results)
}

async fn run<T: Publish>(
    mut rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared<T>>,
    mut store: Option<Saving>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let current = shared.registry.load_full();
        let mut cmds = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut compact = Vec::new();
        let mut close = None;
        // A newer generation another replica wrote (the newest of the batch).
        let mut adopt: Option<(u64, Box<Registry>)> = None;
        // Who asked for the change of each entry (by `no`) and service (by name).
        let mut by_no: std::collections::HashMap<String, String> = Default::default();
        let mut by_service: std::collections::HashMap<String, String> = Default::default();
        for msg in batch.drain(..) {
            match msg {
                Msg::Apply(cmd, reply, by) => {
                    if let Some(by) = by {
                        if let Some(no) = cmd.no() {
                            by_no.insert(no.to_owned(), by);
                        } else if let Some(name) = cmd.service() {
                            by_service.insert(name.to_owned(), by);
                        }
                    }
                    cmds.push(cmd);
                    replies.push(reply);
                }
                Msg::Compact(done) => compact.push(done),
                Msg::Close(done) => close = Some(done),
                Msg::Adopt(g, reg) => {
                    if adopt.as_ref().is_none_or(|(have, _)| g > *have) {
                        adopt = Some((g, reg));
                    }
                }
            }
        }
        let mut base = Arc::clone(&current);
        let mut adopted = Changes::default();
        if let (Some((g, theirs)), Some(Saving::Swarm(s))) = (adopt, &mut store)
            && g > s.generation()
        {
            let (reg, changes) = current.with_operator_state(&theirs);
            s.adopted(g);
            base = Arc::new(reg);
            adopted = changes;
            for no in &adopted.nos {
                by_no
                    .entry(no.clone())
                    .or_insert_with(|| "another replica".into());
            }
            for name in &adopted.services {
                by_service
                    .entry(name.clone())
                    .or_insert_with(|| "another replica".into());
            }
        }
        // Kept only where a write can lose a race and the batch is applied again (a discovery
        // sync's command holds every entry its source found: not copied for nothing).
        let again = matches!(store, Some(Saving::Swarm(_))).then(|| cmds.clone());
        let (mut next, mut changes, mut results) = apply_batch(&base, cmds, adopted);
        let mut unsaved = false;
        let saved = match &mut store {
            // On the writer thread, never here: a disk that stops answering holds up neither
            // the control plane nor this task past the bound. Requests that arrive meanwhile
            // form the next batch.
            Some(Saving::File(writer)) => {
                let record = persist::record(&base, &next, &changes);
                match writer
                    .save(record, Arc::new(next.clone()), !compact.is_empty())
                    .await
                {
                    super::writer::Saved::Yes => Ok(()),
                    super::writer::Saved::Pending => {
                        unsaved = true;
                        Ok(())
                    }
                    super::writer::Saved::Failed(msg) => Err(msg),
                }
            }
            Some(Saving::Swarm(store)) if !next.same_operator_state(&base) => {
                let mut tries = 0;
                loop {
                    match store.save(&next).await {
                        Ok(()) => break Ok(()),
                        Err(super::swarm_store::StoreError::Taken(_)) if tries < SWARM_TRIES => {
                            // Another replica won: our changes go on top of its state.
                            tries += 1;
                            match store.newest().await {
                                Ok(Some((g, theirs))) => {
                                    let (reg, adopted) = current.with_operator_state(&theirs);
                                    store.adopted(g);
                                    base = Arc::new(reg);
                                    let cmds = again.clone().unwrap_or_default();
                                    (next, changes, results) = apply_batch(&base, cmds, adopted);
                                }
                                Ok(None) => {}
                                Err(e) => break Err(e.to_string()),
                            }
                        }
                        Err(e) => break Err(e.to_string()),
                    }
                }
            }
            Some(Saving::Swarm(_)) | None => Ok(()),
        };
        let next = Arc::new(next);
        match saved {
            Ok(()) => {
                if !changes.is_empty() {
                    let prev = shared.table.load_full();
                    let table = Arc::new(T::update(&next, &prev, &changes));
                    shared.table.store(table.clone());
                    shared
                        .generation
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    table.replaced(&prev, &changes);
                    shared.registry.store(next.clone());
                    shared
                        .events
                        .diff(&current, &next, changes.nos.iter(), |no| {
                            by_no.get(no).cloned()
                        });
                    shared
                        .events
                        .services(&current, &next, changes.services.iter(), |name| {
                            by_service.get(name).cloned()
                        });
                }
                for (r, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(match r {
                        Ok(()) if unsaved => Err(ApplyError::Unsaved),
                        r => r.map_err(ApplyError::from),
                    });
                }
            }
            Err(msg) => {
                tracing::error!(error = %msg, "could not save the state; rejected the pending changes. Check the disk and the permissions of the --state path (or the Swarm manager, with --state-store swarm)");
                for (r, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(match r {
                        Ok(()) => Err(ApplyError::Persist(msg.clone())),
                        Err(e) => Err(e.into()),
                    });
                }
            }
        }
        for done in compact {
            let _ = done.send(());
        }
        if let Some(done) = close {
            if let Some(Saving::File(writer)) = store.take() {
                writer.close(CLOSE_WAIT).await;
            }
            let _ = done.send(());
            // (Dropping the receiver refuses whatever is asked after: nothing would save it.)
            return;
        }
    }
}

/// How long closing waits for the state file's last write.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
