//! The state file: manual entries, overrides (drain/disable) and service settings as JSON.
//!
//! Saved atomically before the API answers: write a temporary file beside it, fsync it, rename
//! it over the old one, fsync the directory. A file that cannot be read or parsed is never
//! overwritten: quayside refuses to start and names the file and the problem.
//!
//! One process at a time: [`Store::open`] takes an exclusive lock on `<state>.lock` beside the
//! state file (a lock on the state file itself would be lost at each rewrite, which replaces it
//! by rename), after following a `--state` that is a symlink, so that two paths to one file
//! share one lock and the link's target is what is written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AdminState, BackendSpec, Changes, Override, Registry, ServiceConfig, validate};

pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "cannot read state file {path}: {source}; fix its permissions or point --state elsewhere"
    )]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "state file {path} is not valid: {reason}; it was left untouched: repair or move it, then start again"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot save state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "state file {path} is in use by another quayside{}; stop it, or give each its own --state",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error(
        "{link} is a symlink to {target}, but a journal of changes lies beside the link ({journal}): move it beside the target, then start again"
    )]
    JournalBesideLink {
        link: PathBuf,
        target: PathBuf,
        journal: PathBuf,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackend {
    no: String,
    address: String,
    port: u64,
    #[serde(default = "one")]
    weight: u64,
    #[serde(default = "default_service")]
    service: String,
    #[serde(default)]
    state: AdminState,
}

fn one() -> u64 {
    1
}
fn default_service() -> String {
    validate::DEFAULT_SERVICE.to_owned()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOverride {
    no: String,
    state: AdminState,
    /// The container the override was made for; absent in files saved before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container_id: Option<String>,
}

impl FileOverride {
    fn new(no: &str, o: &Override) -> Self {
        FileOverride {
            no: no.to_owned(),
            state: o.state,
            container_id: o.container_id.clone(),
        }
    }

    fn parts(self) -> Result<(String, Override), validate::FieldError> {
        Ok((
            validate::no(&self.no)?,
            Override {
                state: self.state,
                container_id: self.container_id,
            },
        ))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileService {
    name: String,
    #[serde(flatten)]
    config: ServiceConfig,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    #[serde(default)]
    backends: Vec<FileBackend>,
    #[serde(default)]
    overrides: Vec<FileOverride>,
    #[serde(default)]
    services: Vec<FileService>,
}

/// Serialise the parts of the registry that the state file keeps.
pub fn encode(reg: &Registry) -> Vec<u8> {
    let file = StateFile {
        version: VERSION,
        backends: reg.manual().values().map(file_backend).collect(),
        overrides: reg
            .overrides()
            .iter()
            .map(|(no, o)| FileOverride::new(no, o))
            .collect(),
        services: reg
            .services()
            .iter()
            .map(|(name, config)| FileService {
                name: name.clone(),
                config: config.clone(),
            })
            .collect(),
    };
    // Compact: with thousands of entries, bytes written per change matter.
    let mut out = serde_json::to_vec(&file).expect("state serialises");
    out.push(b'\n');
    out
}

/// Parse a state file's bytes into a registry, validating every value as the API would.
pub fn decode(bytes: &[u8]) -> Result<Registry, String> {
    let file: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!(
            "version {} is not supported (this quayside reads version {VERSION})",
            file.version
        ));
    }
    let mut manual = Vec::with_capacity(file.backends.len());
    for (i, b) in file.backends.into_iter().enumerate() {
        let spec = backend_spec(b).map_err(|e| format!("backends[{i}]: {e}"))?;
        manual.push(spec);
    }
    let overrides = file
        .overrides
        .into_iter()
        .map(FileOverride::parts)
        .collect::<Result<Vec<_>, validate::FieldError>>()
        .map_err(|e| format!("overrides: {e}"))?;
    let services = file
        .services
        .into_iter()
        .map(|s| (s.name, s.config))
        .collect();
    Registry::from_parts(manual, overrides, services).map_err(|e| e.to_string())
}

/// One saved change in the journal: the new value of one key of the state file, or its removal.
// (One is written per admin change, none per request: a service's settings, middlewares
// included, are not worth a box here.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Record {
    Backend(FileBackend),
    RemoveBackend(String),
    Override(FileOverride),
    RemoveOverride(String),
    Service(FileService),
    RemoveService(String),
}

fn file_backend(b: &BackendSpec) -> FileBackend {
    FileBackend {
        no: b.no.clone(),
        address: b.addr.to_string(),
        port: b.port as u64,
        weight: b.weight as u64,
        service: b.service.clone(),
        state: b.state,
    }
}

fn backend_spec(b: FileBackend) -> Result<BackendSpec, validate::FieldError> {
    Ok(BackendSpec {
        no: validate::no(&b.no)?,
        addr: validate::ip(&b.address)?,
        port: validate::port_number(b.port)?,
        weight: validate::weight(&b.weight.to_string())?,
        service: validate::service(&b.service)?,
        state: b.state,
    })
}

/// The journal record (framed, [`super::journal`]) for what `changes` touched between
/// `before` and `after`; `None` when nothing the state file keeps changed.
pub fn record(before: &Registry, after: &Registry, changes: &Changes) -> Option<Vec<u8>> {
    let recs = records(before, after, changes);
    if recs.is_empty() {
        return None;
    }
    let json = serde_json::to_vec(&recs).expect("records serialise");
    Some(super::journal::frame(&json))
}

/// The journal's records for what `changes` touched between `before` and `after`.
fn records(before: &Registry, after: &Registry, changes: &Changes) -> Vec<Record> {
    let mut out = Vec::new();
    for no in &changes.nos {
        let (b, a) = (before.manual().get(no), after.manual().get(no));
        if b != a {
            out.push(match a {
                Some(spec) => Record::Backend(file_backend(spec)),
                None => Record::RemoveBackend(no.clone()),
            });
        }
        let (b, a) = (before.overrides().get(no), after.overrides().get(no));
        if b != a {
            out.push(match a {
                Some(o) => Record::Override(FileOverride::new(no, o)),
                None => Record::RemoveOverride(no.clone()),
            });
        }
    }
    for name in &changes.services {
        let (b, a) = (before.services().get(name), after.services().get(name));
        if b != a {
            out.push(match a {
                Some(config) => Record::Service(FileService {
                    name: name.clone(),
                    config: config.clone(),
                }),
                None => Record::RemoveService(name.clone()),
            });
        }
    }
    out
}

fn replay(reg: &mut Registry, rec: Record) -> Result<(), String> {
    match rec {
        Record::Backend(b) => {
            let spec = backend_spec(b).map_err(|e| e.to_string())?;
            reg.restore_manual(&spec.no.clone(), Some(spec));
        }
        Record::RemoveBackend(no) => reg.restore_manual(&no, None),
        Record::Override(o) => {
            let (no, o) = o.parts().map_err(|e| e.to_string())?;
            reg.restore_override(&no, Some(o));
        }
        Record::RemoveOverride(no) => reg.restore_override(&no, None),
        Record::Service(s) => {
            let config = s
                .config
                .validated(&s.name)
                .map_err(|e| format!("service {}: {e}", s.name))?;
            reg.restore_service(&s.name, Some(config));
        }
        Record::RemoveService(name) => reg.restore_service(&name, None),
    }
    Ok(())
}

/// The journal beside a state file: `<state>.journal`.
pub fn journal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

/// The lock file beside a (resolved) state file: `<state>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// The file a `--state` path names: the path itself, or, for a symlink, what it points to
/// (followed to the end, relative targets from the link's folder), so the target is written
/// and not replaced by a file of its own.
pub fn resolve(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    // (At most 40 links, as the kernel allows.)
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => match fs::read_link(&p) {
                Ok(target) if target.is_absolute() => p = target,
                Ok(target) => {
                    p = p
                        .parent()
                        .map_or_else(|| target.clone(), |dir| dir.join(&target))
                }
                Err(_) => break,
            },
            _ => break,
        }
    }
    p
}

/// An exclusive lock on a state file, held while its [`Store`] lives (released by the kernel
/// when the process ends, however it ends).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Take the lock of the (resolved) state file `path`, or say who holds it.
    pub fn take(path: &Path) -> Result<StateLock, StateError> {
        use std::os::fd::AsRawFd;
        let lpath = lock_path(path);
        let write = |source| StateError::Write {
            path: lpath.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(write)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lpath)
            .map_err(write)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let pid = fs::read_to_string(&lpath)
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                return Err(StateError::Locked {
                    path: path.to_owned(),
                    pid,
                });
            }
            return Err(write(e));
        }
        // Who holds it, for the next one's message (best effort: a full disk must not stop
        // quayside from starting on the state it can read).
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0));
        Ok(StateLock { _file: file })
    }
}

/// Smallest journal that triggers compaction into the state file.
const MIN_COMPACT_BYTES: u64 = 1 << 20;

/// The journal file is grown by this many zero bytes at a time, ahead of the lines written
/// into it: overwriting bytes already on disk leaves the file's size and block map alone, so
/// each line's `fdatasync` flushes just the data, not the inode (BENCHMARKS.md, "The journal is
/// preallocated"). Where that much does not fit, it grows by what the record needs, rounded
/// to a page.
const PREALLOC_BYTES: u64 = 256 << 10;

/// The smallest step the journal grows by when [`PREALLOC_BYTES`] do not fit.
const PAGE: u64 = 4096;

/// The state file plus its journal, as the registry task keeps them.
///
/// A change is one line appended to the journal (a JSON array of records, each the new value
/// of one key) and fsynced: its cost does not grow with the registry. When the journal grows
/// past the state file's size (and at least 1 MiB), the state file is rewritten atomically
/// from the registry and the journal emptied. Replaying a journal over a newer state file
/// gives the same result (each record sets a value), so a crash between the two steps is safe.
///
/// The journal file is zero-filled ahead of its records (`PREALLOC_BYTES`); its records are
/// checked ([`super::journal`]).
pub struct Store {
    /// The state file (resolved: a symlink's target).
    path: PathBuf,
    _lock: StateLock,
    journal: File,
    /// Bytes of complete lines.
    journal_len: u64,
    /// Bytes in the file: lines, then zeros.
    journal_cap: u64,
    snapshot_len: u64,
    /// How long its writes took, for the metrics.
    times: std::sync::Arc<WriteTimes>,
}

/// Upper bounds of the state-file write duration buckets, in seconds (an append is one write
/// and an fdatasync; a rewrite, a few).
pub const WRITE_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// The durations of the state file's writes (journal appends and rewrites), in buckets.
#[derive(Debug, Default)]
pub struct WriteTimes {
    /// Per bucket of [`WRITE_BUCKETS`] (not cumulative), then the overflow.
    buckets: [std::sync::atomic::AtomicU64; WRITE_BUCKETS.len() + 1],
    sum_nanos: std::sync::atomic::AtomicU64,
}

impl WriteTimes {
    fn observe(&self, since: std::time::Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        let d = since.elapsed();
        let secs = d.as_secs_f64();
        let i = WRITE_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(WRITE_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// Per bucket (upper bound, count in it; not cumulative), the count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        let list: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    WRITE_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                    n.load(Relaxed),
                )
            })
            .collect();
        let count = list.iter().map(|(_, n)| n).sum();
        (list, count, self.sum_nanos.load(Relaxed) as f64 / 1e9)
    }
}

impl Store {
    /// How long this store's writes took.
    pub fn times(&self) -> std::sync::Arc<WriteTimes> {
        self.times.clone()
    }

    /// Load the registry from the state file and its journal (both may be missing), holding
    /// the state file's lock, and open the journal for appending. A torn last record (a crash
    /// in the middle of a write, never acknowledged) is cut off, with a warning; anything else
    /// unreadable refuses to start and changes nothing. The journal is then folded into the
    /// state file; if that cannot be written (a full disk), quayside starts all the same, on
    /// what it loaded.
    pub fn open(path: &Path) -> Result<(Option<Registry>, Store), StateError> {
        let given = path;
        let path = resolve(given);
        if path != given {
            let beside_link = journal_path(given);
            if fs::metadata(&beside_link).is_ok_and(|m| m.len() > 0) {
                return Err(StateError::JournalBesideLink {
                    link: given.to_owned(),
                    target: path,
                    journal: beside_link,
                });
            }
        }
        let lock = StateLock::take(&path)?;
        let (reg, snapshot_len, journal_end) = read_state(&path)?;
        let jpath = journal_path(&path);
        let write = |source| StateError::Write {
            path: jpath.clone(),
            source,
        };
        let journal = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&jpath)
            .map_err(write)?;
        for p in [path.as_path(), jpath.as_path()] {
            owner_only(p).map_err(|source| StateError::Write {
                path: p.to_owned(),
                source,
            })?;
        }
        let file_len = journal.metadata().map_err(write)?.len();
        if let Some(torn) = journal_end.torn {
            tracing::warn!(path = %jpath.display(), offset = torn, "cut off a torn last record of the state journal (a crash in the middle of a write, never acknowledged)");
            // Cut the torn record and the zeros; they are written again when needed.
            journal.set_len(journal_end.end as u64).map_err(write)?;
            journal.sync_all().map_err(write)?;
        }
        let cap = if journal_end.torn.is_some() {
            journal_end.end as u64
        } else {
            file_len
        };
        let mut store = Store {
            times: Default::default(),
            path,
            _lock: lock,
            journal,
            journal_len: journal_end.end as u64,
            journal_cap: cap,
            snapshot_len,
        };
        if let Some(r) = reg.as_ref().filter(|_| store.journal_len > 0) {
            // Start from a complete state file again, if the disk lets us.
            if let Err(e) = store.compact(r) {
                tracing::warn!(error = %e, "could not fold the state journal into the state file at start; serving what was loaded (the journal holds it). Changes are refused until the disk takes writes again");
            }
        }
        Ok((reg, store))
    }

    /// The state file this store writes (a `--state` symlink's target).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make the changes between `before` and `after` durable. Returns once they are.
    pub fn save(
        &mut self,
        before: &Registry,
        after: &Registry,
        changes: &Changes,
    ) -> Result<(), StateError> {
        match record(before, after, changes) {
            Some(line) => self.append(&line, after),
            None => Ok(()),
        }
    }

    /// Append one journal record (from [`record`]), or, when the journal has grown past the
    /// state file, rewrite the state file from `after` instead. Returns once it is durable.
    pub fn append(&mut self, line: &[u8], after: &Registry) -> Result<(), StateError> {
        let started = std::time::Instant::now();
        let jpath = journal_path(&self.path);
        let write = |source| StateError::Write {
            path: jpath.clone(),
            source,
        };
        if self.journal_len + line.len() as u64 > self.snapshot_len.max(MIN_COMPACT_BYTES) {
            return self.compact(after);
        }
        let at = self.journal_len;
        let appended = self
            .reserve(line.len() as u64)
            .and_then(|()| self.journal.write_all_at(line, at))
            .and_then(|()| self.journal.sync_data());
        if let Err(e) = appended {
            // Never leave half a line for the next one to follow.
            let _ = self.journal.set_len(self.journal_len);
            self.journal_cap = self.journal_len;
            return Err(write(e));
        }
        self.journal_len += line.len() as u64;
        self.times.observe(started);
        Ok(())
    }

    /// Make sure `n` bytes after the records are already on disk (as zeros), growing the file
    /// by [`PREALLOC_BYTES`] at a time, or, where that does not fit, by what is needed.
    fn reserve(&mut self, n: u64) -> io::Result<()> {
        if self.journal_len + n <= self.journal_cap {
            return Ok(());
        }
        let need = self.journal_len + n - self.journal_cap;
        let mut result = Ok(());
        for grow in [need.max(PREALLOC_BYTES), need.div_ceil(PAGE) * PAGE] {
            let zeros = vec![0u8; grow as usize];
            result = self
                .journal
                .write_all_at(&zeros, self.journal_cap)
                .and_then(|()| self.journal.sync_all());
            if result.is_ok() {
                self.journal_cap += grow;
                return Ok(());
            }
            // (What a failed step wrote is zeros past the records: harmless, and written over.)
        }
        result
    }

    /// Whether changes are waiting in the journal (not yet folded into the state file).
    pub fn has_journal(&self) -> bool {
        self.journal_len > 0
    }

    /// Rewrite the state file from `reg` (atomically) and empty the journal.
    pub fn compact(&mut self, reg: &Registry) -> Result<(), StateError> {
        let started = std::time::Instant::now();
        let bytes = encode(reg);
        save(&self.path, &bytes)?;
        self.snapshot_len = bytes.len() as u64;
        if self.journal_len > 0 {
            let write = |source| StateError::Write {
                path: journal_path(&self.path),
                source,
            };
            self.journal.set_len(0).map_err(write)?;
            self.journal.sync_all().map_err(write)?;
            self.journal_len = 0;
            self.journal_cap = 0;
        }
        self.times.observe(started);
        Ok(())
    }
}

/// Read the state file and its journal without writing anything: the registry they hold
/// (none if neither exists), the state file's length, and where the journal's records end.
fn read_state(path: &Path) -> Result<(Option<Registry>, u64, JournalEnd), StateError> {
    let corrupt = |path: &Path, reason| StateError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let read = |path: &Path| match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_owned(),
            source,
        }),
    };
    let snapshot = read(path)?;
    let mut reg = match &snapshot {
        Some(bytes) => Some(decode(bytes).map_err(|r| corrupt(path, r))?),
        None => None,
    };
    let jpath = journal_path(path);
    let journal_bytes = read(&jpath)?.unwrap_or_default();
    let journal =
        super::journal::read(&journal_bytes).map_err(|e| corrupt(&jpath, e.to_string()))?;
    for (offset, json) in &journal.records {
        let at = |e: String| corrupt(&jpath, format!("the record at byte {offset}: {e}"));
        let recs: Vec<Record> = serde_json::from_slice(json).map_err(|e| at(e.to_string()))?;
        let r = reg.get_or_insert_with(Registry::new);
        for rec in recs {
            replay(r, rec).map_err(at)?;
        }
    }
    let end = JournalEnd {
        end: journal.end,
        torn: journal.torn,
    };
    Ok((reg, snapshot.map_or(0, |b| b.len() as u64), end))
}

/// Where a journal's records end, and where a torn last record starts.
struct JournalEnd {
    end: usize,
    torn: Option<usize>,
}

/// The state a state file and its journal hold, read without taking the lock or writing
/// anything (`quayside state export` of a running quayside's file).
pub fn load(path: &Path) -> Result<Option<Registry>, StateError> {
    read_state(&resolve(path)).map(|(reg, _, _)| reg)
}

/// Make a state file readable by its owner only (it holds password hashes and header
/// secrets), saying so when it was not; a missing file is fine.
fn owner_only(path: &Path) -> io::Result<()> {
    let mode = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        tracing::info!(path = %path.display(), was = %format!("{mode:o}"), "made the state file readable by its owner only (0600): it holds password hashes and header secrets");
    }
    Ok(())
}

/// Write `bytes` to `path` atomically and durably.
pub fn save(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let wrap = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(wrap)?;
    let name = path
        .file_name()
        .ok_or_else(|| wrap(io::Error::other("the path names no file")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(wrap)?;
    // (A temporary file left by a crash may have been made before files were 0600.)
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(wrap)?;
    f.write_all(bytes).map_err(wrap)?;
    f.sync_all().map_err(wrap)?;
    drop(f);
    fs::rename(&tmp, path).map_err(wrap)?;
    File::open(&dir).and_then(|d| d.sync_all()).map_err(wrap)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Command;

    #[test]
    fn round_trip() {
        let mut r = Registry::new();
        r.apply(Command::upsert(BackendSpec {
            no: "1".into(),
            addr: "::1".parse().unwrap(),
            port: 8081,
            weight: 3,
            service: "api".into(),
            state: AdminState::Draining,
        }))
        .unwrap();
        r.apply(Command::PutService {
            name: "api".into(),
            config: ServiceConfig {
                hosts: vec!["api.example.com".into()],
                path_prefix: Some("/v1".into()),
                strip_prefix: true,
                ..Default::default()
            },
        })
        .unwrap();
        assert_eq!(decode(&encode(&r)).unwrap(), r);
    }

    #[test]
    fn overrides_keep_their_container_id() {
        use crate::registry::Discovered;
        let path = tmp("override-id");
        let (_, mut store) = Store::open(&path).unwrap();
        let source = crate::registry::SourceId::new(crate::registry::Source::Docker, "default");
        let web = |id: &str| Command::SyncDiscovered {
            source: source.clone(),
            backends: vec![Discovered {
                spec: BackendSpec {
                    no: "web".into(),
                    addr: "10.0.0.2".parse().unwrap(),
                    port: 80,
                    weight: 1,
                    service: "default".into(),
                    state: AdminState::Active,
                },
                container_id: id.into(),
                source: source.clone(),
            }],
            services: vec![],
        };
        let mut r = step(&mut store, &Registry::new(), vec![web("c1")]);
        r = step(
            &mut store,
            &r,
            vec![Command::SetState {
                no: "web".into(),
                state: AdminState::Draining,
            }],
        );
        drop(store);
        let (loaded, _) = Store::open(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#"{"no":"web","state":"draining","container_id":"c1"}"#),
            "{text}"
        );
        assert_eq!(loaded.unwrap().overrides(), r.overrides());
        // A file from before ids were kept still loads; the id comes with the first sync,
        // and that is saved too.
        fs::write(
            &path,
            r#"{"version":1,"overrides":[{"no":"web","state":"disabled"}]}"#,
        )
        .unwrap();
        let (loaded, mut store) = Store::open(&path).unwrap();
        let loaded = loaded.unwrap();
        assert_eq!(loaded.overrides()["web"].container_id, None);
        let r = step(&mut store, &loaded, vec![web("c7")]);
        drop(store);
        let (again, _) = Store::open(&path).unwrap();
        let again = again.unwrap();
        let o = &again.overrides()["web"];
        assert_eq!(
            (o.state, o.container_id.as_deref()),
            (AdminState::Disabled, Some("c7"))
        );
        assert_eq!(r.get("web").unwrap().spec.state, AdminState::Disabled);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("quayside-persist-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d.join("state.json")
    }

    fn upsert(no: &str, port: u16) -> Command {
        Command::upsert(BackendSpec {
            no: no.into(),
            addr: "127.0.0.1".parse().unwrap(),
            port,
            weight: 1,
            service: "default".into(),
            state: AdminState::Active,
        })
    }

    /// Apply `cmds` as one batch and save it; returns the new registry.
    fn step(store: &mut Store, reg: &Registry, cmds: Vec<Command>) -> Registry {
        let mut next = reg.clone();
        let mut ch = Changes::default();
        for c in cmds {
            next.apply_tracked(c, &mut ch).unwrap();
        }
        store.save(reg, &next, &ch).unwrap();
        next
    }

    #[test]
    fn journal_round_trip_and_torn_tail() {
        let path = tmp("journal");
        let (r0, mut store) = Store::open(&path).unwrap();
        assert!(r0.is_none());
        let mut r = Registry::new();
        r = step(&mut store, &r, vec![upsert("a", 1), upsert("b", 2)]);
        r = step(&mut store, &r, vec![Command::Remove { no: "a".into() }]);
        r = step(
            &mut store,
            &r,
            vec![Command::SetState {
                no: "b".into(),
                state: AdminState::Draining,
            }],
        );
        // Nothing but the journal so far: each change was one line, written into the
        // zeros preallocated ahead of it (the file did not grow per line).
        assert!(!path.exists());
        let bytes = fs::read(journal_path(&path)).unwrap();
        assert_eq!(bytes.len() as u64, PREALLOC_BYTES);
        let end = bytes.iter().position(|&b| b == 0).unwrap();
        assert!(bytes[end..].iter().all(|&b| b == 0));
        let journal = String::from_utf8(bytes[..end].to_vec()).unwrap();
        assert_eq!(journal.lines().count(), 3, "{journal}");
        drop(store);
        // A crash in the middle of the next line leaves half of it among the zeros.
        let f = OpenOptions::new()
            .write(true)
            .open(journal_path(&path))
            .unwrap();
        f.write_all_at(br#"[{"backend":{"no":"c","#, end as u64)
            .unwrap();
        drop(f);
        let (loaded, store) = Store::open(&path).unwrap();
        assert_eq!(loaded.unwrap(), r);
        // Opening folded the journal into the state file.
        assert_eq!(store.journal_len, 0);
        assert_eq!(decode(&fs::read(&path).unwrap()).unwrap(), r);
        assert_eq!(fs::read(journal_path(&path)).unwrap().len(), 0);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_journal_grows_past_its_preallocation_and_reopens_cleanly() {
        let path = tmp("prealloc");
        let (_, mut store) = Store::open(&path).unwrap();
        let mut r = Registry::new();
        // Lines of ~100 bytes: past 256 KiB after ~2,600 of them.
        for i in 0..3_000u16 {
            r = step(&mut store, &r, vec![upsert(&format!("b{}", i % 50), i + 1)]);
        }
        let len = fs::metadata(journal_path(&path)).unwrap().len();
        assert_eq!(len, 2 * PREALLOC_BYTES, "grown by whole chunks");
        assert!(store.journal_len > PREALLOC_BYTES);
        drop(store);
        // A clean reopen (no torn line, zeros after the lines) loads everything.
        let (loaded, store) = Store::open(&path).unwrap();
        assert_eq!(loaded.unwrap(), r);
        assert_eq!(store.journal_len, 0);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn replaying_a_journal_over_a_newer_state_file_changes_nothing() {
        // A crash after the state file was rewritten but before the journal was emptied.
        let path = tmp("replay");
        let (_, mut store) = Store::open(&path).unwrap();
        let mut r = Registry::new();
        r = step(&mut store, &r, vec![upsert("a", 1)]);
        r = step(
            &mut store,
            &r,
            vec![Command::Remove { no: "a".into() }, upsert("b", 2)],
        );
        r = step(&mut store, &r, vec![upsert("a", 3)]);
        let journal = fs::read(journal_path(&path)).unwrap();
        save(&path, &encode(&r)).unwrap();
        fs::write(journal_path(&path), &journal).unwrap();
        drop(store);
        assert_eq!(Store::open(&path).unwrap().0.unwrap(), r);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_bad_journal_record_is_named() {
        let path = tmp("badline");
        fs::write(journal_path(&path), "[]\n[{\"backend\":{\"no\":\"a\"}}]\n").unwrap();
        let e = Store::open(&path).err().unwrap().to_string();
        assert!(
            e.contains("state.json.journal") && e.contains("record at byte 3"),
            "{e}"
        );
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn records_are_checked_and_damage_before_one_refuses_the_files_untouched() {
        let path = tmp("damage");
        let (_, mut store) = Store::open(&path).unwrap();
        let mut r = Registry::new();
        for (i, no) in ["a", "b", "c"].iter().enumerate() {
            r = step(&mut store, &r, vec![upsert(no, i as u16 + 1)]);
        }
        drop(store);
        let jpath = journal_path(&path);
        let mut bytes = fs::read(&jpath).unwrap();
        assert!(bytes.starts_with(b"#"), "checked records");
        // Four zero bytes after the first record: the two after it were acknowledged.
        let first = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[first..first + 4].fill(0);
        fs::write(&jpath, &bytes).unwrap();
        let e = Store::open(&path).err().unwrap().to_string();
        assert!(e.contains(&format!("byte {first}")), "{e}");
        assert!(e.contains("left untouched"), "{e}");
        assert_eq!(
            fs::read(&jpath).unwrap(),
            bytes,
            "the journal was not touched"
        );
        assert!(!path.exists(), "no state file was made");
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn one_process_at_a_time_through_any_path() {
        let path = tmp("lock");
        let link = path.with_file_name("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let (_, store) = Store::open(&link).unwrap();
        for p in [&path, &link] {
            match Store::open(p).err().unwrap() {
                StateError::Locked { path: locked, pid } => {
                    assert_eq!(locked, path);
                    assert_eq!(pid, Some(std::process::id()));
                }
                e => panic!("{e}"),
            }
        }
        drop(store);
        assert!(Store::open(&path).is_ok(), "free once the first is gone");
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_symlinked_state_file_is_written_through() {
        let path = tmp("symlink");
        let link = path.with_file_name("link.json");
        std::os::unix::fs::symlink("state.json", &link).unwrap();
        let (_, mut store) = Store::open(&link).unwrap();
        let r = step(&mut store, &Registry::new(), vec![upsert("a", 1)]);
        store.compact(&r).unwrap();
        drop(store);
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(decode(&fs::read(&path).unwrap()).unwrap(), r);
        assert_eq!(Store::open(&link).unwrap().0.unwrap(), r);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn bad_files_are_named() {
        assert!(decode(b"{").is_err());
        assert!(
            decode(br#"{"version":2}"#)
                .unwrap_err()
                .contains("version 2")
        );
        let e = decode(br#"{"version":1,"backends":[{"no":"1","address":"1.2.3.4","port":0}]}"#)
            .unwrap_err();
        assert!(e.contains("backends[0]: port"), "{e}");
    }
}
