//! The status of every discovery source, one shape for all of them (`GET /api/v1/discovery`
//! lists them). Each source owns a [`Slot`] and replaces its status there as it changes; the
//! admin API reads them all.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use super::ContainerStatus;
use crate::registry::SourceId;

/// One source's status.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SourceStatus {
    /// `docker` (later `swarm`).
    pub kind: &'static str,
    /// The source's name: entries it finds carry it as `endpoint`.
    pub name: String,
    /// Where it connects, e.g. `unix:///var/run/docker.sock`.
    pub endpoint: String,
    pub label_prefix: String,
    /// `connecting`, `connected` or `disconnected`.
    pub state: &'static str,
    pub last_error: Option<String>,
    /// When the last event was handled (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = Option<String>)]
    pub last_event: Option<SystemTime>,
    /// When the last full sync was done (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = Option<String>)]
    pub last_sync: Option<SystemTime>,
    pub reconnects: u64,
    /// Events received from the endpoint (all of them, whether they changed routing or not).
    pub events: u64,
    /// Full listings done (the first sync and one after each reconnect).
    pub syncs: u64,
    /// Every labelled container it sees: routed or not, and why.
    pub containers: Vec<ContainerStatus>,
    pub conflicts: Vec<Conflict>,
}

/// What a source has seen of its endpoint so far (part of its status).
#[derive(Clone, Debug, Default)]
pub struct Activity {
    pub last_event: Option<SystemTime>,
    pub last_sync: Option<SystemTime>,
    pub reconnects: u64,
    pub events: u64,
    pub syncs: u64,
}

impl SourceStatus {
    /// A source that has not connected yet.
    pub fn connecting(kind: &'static str, name: &str, endpoint: &str, label_prefix: &str) -> Self {
        SourceStatus {
            kind,
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
            label_prefix: label_prefix.to_owned(),
            state: "connecting",
            last_error: None,
            last_event: None,
            last_sync: None,
            reconnects: 0,
            events: 0,
            syncs: 0,
            containers: Vec::new(),
            conflicts: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Conflict {
    pub container: String,
    pub message: String,
}

/// A time as RFC 3339 in UTC with milliseconds, e.g. `2026-12-01T17:00:12.345Z`.
fn rfc3339<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

/// Every source's latest status, by source.
#[derive(Clone, Default)]
pub struct Sources(Arc<Mutex<BTreeMap<SourceId, Arc<SourceStatus>>>>);

impl Sources {
    /// A slot for `source`, starting with `initial`.
    pub fn slot(&self, source: SourceId, initial: SourceStatus) -> Slot {
        let slot = Slot {
            sources: self.clone(),
            source,
        };
        slot.set(initial);
        slot
    }

    /// Why quayside is not ready yet: the sources that have neither finished their first sync
    /// nor reported that they cannot connect (none: ready).
    pub fn not_ready(&self) -> Vec<String> {
        self.lock()
            .values()
            .filter(|s| s.state == "connecting")
            .map(|s| {
                format!(
                    "{} source {} ({}) has not finished its first sync",
                    s.kind, s.name, s.endpoint
                )
            })
            .collect()
    }

    /// Every source's status, in source order.
    pub fn list(&self) -> Vec<Arc<SourceStatus>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SourceId, Arc<SourceStatus>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where one source keeps its status.
pub struct Slot {
    sources: Sources,
    source: SourceId,
}

impl Slot {
    pub fn set(&self, status: SourceStatus) {
        self.sources
            .lock()
            .insert(self.source.clone(), Arc::new(status));
    }

    pub fn source(&self) -> &SourceId {
        &self.source
    }
}
