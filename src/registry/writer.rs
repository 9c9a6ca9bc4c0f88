//! The state file's writes, on a thread of their own: the registry task hands each batch's
//! journal record here and waits for it with a bound ([`SAVE_BOUND`]), so that a disk that
//! stops answering (frozen, failing, on a hung network) holds up neither the control plane —
//! health, readiness, metrics and every read of the admin API — nor the registry task for
//! longer than that.
//!
//! A change whose write does not answer within the bound is applied all the same and answered
//! `503` saying it is not saved yet ([`Saved::Pending`]); it is saved when the disk answers (if
//! that write then fails, the state file is rewritten from the registry, retried until it
//! works). A write that fails at once is not applied ([`Saved::Failed`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Registry;
use super::persist::{StateError, Store};

/// How long a change waits for its write before it is answered without it.
pub const SAVE_BOUND: Duration = Duration::from_secs(10);

/// How often a state that could not be saved is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What became of a batch's write.
#[derive(Debug)]
pub enum Saved {
    /// Durable.
    Yes,
    /// Not written: the change must not be applied.
    Failed(String),
    /// Not answered within [`SAVE_BOUND`]: applied, and saved when the disk answers.
    Pending,
}

/// What `/metrics` shows of the writes.
#[derive(Debug, Default)]
pub struct Status {
    /// When the write under way started (ms since `epoch`; 0: none).
    busy_since: AtomicU64,
    /// The last write failed and nothing has been written since.
    failing: AtomicBool,
    /// Writes applied without waiting for them ([`Saved::Pending`]) and not yet durable.
    /// (Signed: the writer may count one done before the registry task counts it given up.)
    unsaved: AtomicI64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Status {
    fn now_ms(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        epoch.elapsed().as_millis() as u64 + 1
    }

    /// How long the write under way has taken (none: no write under way).
    pub fn stuck_for(&self) -> Option<Duration> {
        match self.busy_since.load(Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(self.now_ms().saturating_sub(since))),
        }
    }

    /// Whether changes can be saved now: the last write worked and none is stuck.
    pub fn writable(&self) -> bool {
        !self.failing.load(Relaxed) && self.stuck_for().is_none_or(|d| d < SAVE_BOUND)
    }

    /// Changes applied whose writes are not durable yet.
    pub fn unsaved(&self) -> u64 {
        self.unsaved.load(Relaxed).max(0) as u64
    }
}

enum What {
    Append(Vec<u8>),
    Compact,
}

struct Job {
    what: What,
    /// The registry after the change: what a rewrite of the state file writes.
    registry: Arc<Registry>,
    /// Dropped by a registry task that stopped waiting (and applied the change).
    done: oneshot::Sender<Result<(), StateError>>,
}

/// The writer thread's handle.
pub struct Writer {
    jobs: std::sync::mpsc::Sender<Job>,
    status: Arc<Status>,
    /// Answered when the thread has ended (and the store, its lock included, is closed).
    ended: oneshot::Receiver<()>,
}

impl Writer {
    /// Move `store` onto a thread of its own.
    pub fn spawn(store: Store) -> Writer {
        let status = Arc::new(Status::default());
        status.now_ms();
        let (jobs, rx) = std::sync::mpsc::channel();
        let (end, ended) = oneshot::channel();
        let s = status.clone();
        let spawned = std::thread::Builder::new()
            .name("quayside-state".into())
            .spawn(move || {
                run(store, rx, &s);
                let _ = end.send(());
            });
        if let Err(e) = spawned {
            // Without the thread every change fails as unsaved: said at each, and here once.
            tracing::error!(error = %e, "cannot start the state file's writer thread; changes cannot be saved");
        }
        Writer {
            jobs,
            status,
            ended,
        }
    }

    /// End the thread once its writes are done, closing the store (its lock released); waits
    /// at most `within` (a disk that does not answer keeps it).
    pub async fn close(self, within: Duration) {
        drop(self.jobs);
        if tokio::time::timeout(within, self.ended).await.is_err() {
            tracing::warn!(
                "the state file's last write has not finished; not waiting for it any longer"
            );
        }
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Save a batch: `record` (a journal record, none if only `compact` is asked) and
    /// `registry` after it; `compact`: rewrite the state file and empty the journal too.
    pub async fn save(
        &self,
        record: Option<Vec<u8>>,
        registry: Arc<Registry>,
        compact: bool,
    ) -> Saved {
        let what = match (record, compact) {
            (_, true) => What::Compact,
            (Some(line), false) => What::Append(line),
            (None, false) => return Saved::Yes,
        };
        let (done, rx) = oneshot::channel();
        let job = Job {
            what,
            registry,
            done,
        };
        if self.jobs.send(job).is_err() {
            return Saved::Failed("the state file's writer thread is gone".into());
        }
        // A disk that has not answered a write for the bound already: the change does not
        // wait for it again.
        let wait = match self.status.stuck_for() {
            Some(d) if d >= SAVE_BOUND => Duration::ZERO,
            _ => SAVE_BOUND,
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(()))) => Saved::Yes,
            Ok(Ok(Err(e))) => Saved::Failed(e.to_string()),
            Ok(Err(_)) => Saved::Failed("the state file's writer thread is gone".into()),
            Err(_) => {
                self.status.unsaved.fetch_add(1, Relaxed);
                Saved::Pending
            }
        }
    }
}

/// The writer thread: each job in order; a state that was applied without its write and then
/// could not be written is rewritten whole, retried every [`RETRY`] until it works.
fn run(mut store: Store, rx: std::sync::mpsc::Receiver<Job>, status: &Status) {
    // The newest registry applied without being saved, while its writes keep failing.
    let mut behind: Option<Arc<Registry>> = None;
    let mut unsaved_in_behind: i64 = 0;
    loop {
        let job = match &behind {
            None => rx.recv().ok(),
            Some(_) => match rx.recv_timeout(RETRY) {
                Ok(job) => Some(job),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        let Some(job) = job else {
            if let Some(reg) = behind.clone() {
                // Nothing new: try the rewrite again.
                if write(&mut store, status, |s| s.compact(&reg)).is_ok() {
                    status.unsaved.fetch_sub(unsaved_in_behind, Relaxed);
                    (behind, unsaved_in_behind) = (None, 0);
                }
                continue;
            }
            return;
        };
        // While behind, every job is a rewrite from its registry (the newest applied).
        let result = match (&job.what, &behind) {
            (What::Append(line), None) => {
                write(&mut store, status, |s| s.append(line, &job.registry))
            }
            // (A clean shutdown's rewrite, with nothing in the journal: nothing to do.)
            (What::Compact, None) if !store.has_journal() => Ok(()),
            _ => write(&mut store, status, |s| s.compact(&job.registry)),
        };
        let saved = result.is_ok();
        if saved && behind.take().is_some() {
            status.unsaved.fetch_sub(unsaved_in_behind, Relaxed);
            unsaved_in_behind = 0;
        }
        // Nobody waits any more: the change was applied without this write.
        if job.done.send(result).is_err() {
            if saved {
                status.unsaved.fetch_sub(1, Relaxed);
            } else {
                // Applied, but not written: the rewrite is retried until the disk takes it.
                behind = Some(job.registry);
                unsaved_in_behind += 1;
            }
        }
    }
}

/// One write, with the status kept for the metrics and the log.
fn write(
    store: &mut Store,
    status: &Status,
    f: impl FnOnce(&mut Store) -> Result<(), StateError>,
) -> Result<(), StateError> {
    status.busy_since.store(status.now_ms(), Relaxed);
    let result = f(store);
    let took = status.stuck_for().unwrap_or_default();
    status.busy_since.store(0, Relaxed);
    let was_failing = status.failing.swap(result.is_err(), Relaxed);
    match &result {
        Err(e) if !was_failing => {
            tracing::error!(error = %e, "cannot save the state file; changes are refused until it can be written again (check the disk's space and health); routing goes on");
        }
        Ok(()) if was_failing || took >= SAVE_BOUND => {
            tracing::info!(path = %store.path().display(), took_ms = took.as_millis() as u64, "the state file is written again");
        }
        _ => {}
    }
    if took >= SAVE_BOUND {
        tracing::warn!(path = %store.path().display(), took_ms = took.as_millis() as u64, "a state file write took longer than the bound; the changes it held were applied and answered as not saved yet");
    }
    result
}
