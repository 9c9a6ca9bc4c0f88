//! Routing events: every change of an entry (added, removed, drained, enabled, disabled,
//! pinned, unpinned, updated), of a service's settings (set, removed) and of a backend's health
//! (up, down, ejected), with its time, `no`, service, source, reason and who made it. Each kind
//! is also counted per source, for the metrics. The last [`KEEP`] are kept so a client can resume
//! from the id it saw last; live ones are broadcast (a client that falls behind the channel is
//! dropped, never buffered without bound).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

use super::{Entry, Registry};

/// Events kept for clients that resume.
pub const KEEP: usize = 1000;
/// Live events a client may fall behind by before it is dropped.
const LAG: usize = 256;

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: u64,
    /// RFC 3339, milliseconds.
    pub time: String,
    /// `added`, `removed`, `drained`, `enabled`, `disabled`, `pinned`, `unpinned`, `updated`,
    /// `service_set`, `service_removed`, `health_up`, `health_down` or `ejected`.
    pub kind: &'static str,
    /// The entry (empty for a service's settings).
    pub no: String,
    pub service: String,
    /// `manual`, or the discovery source (`docker`, `docker:<endpoint>` beyond the default).
    pub source: String,
    pub reason: String,
    /// Who made the change (the admin client's address and token kind), when a person did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The event log, shared by the registry task, the data plane and the probes.
pub struct Events {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Event>>,
}

/// The last id, the kept events, and the events so far by kind and source.
type Ring = (
    u64,
    VecDeque<Arc<Event>>,
    BTreeMap<(&'static str, String), u64>,
);

impl Default for Events {
    fn default() -> Self {
        Events {
            ring: Mutex::new((0, VecDeque::with_capacity(KEEP), BTreeMap::new())),
            live: broadcast::channel(LAG).0,
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

/// What [`Events::emit`] needs besides the kind.
pub struct About<'a> {
    pub no: &'a str,
    pub service: &'a str,
    pub source: String,
    pub reason: String,
    pub by: Option<String>,
}

impl Events {
    pub fn emit(&self, kind: &'static str, about: About<'_>) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.0 += 1;
        match ring.2.get_mut(&(kind, about.source.clone())) {
            Some(n) => *n += 1,
            None => {
                ring.2.insert((kind, about.source.clone()), 1);
            }
        }
        let event = Arc::new(Event {
            id: ring.0,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind,
            no: about.no.to_owned(),
            service: about.service.to_owned(),
            source: about.source,
            reason: about.reason,
            by: about.by,
        });
        // A change an operator made is logged with who made it; the others are logged where
        // they are found (discovery, health), so only at debug here.
        match &event.by {
            Some(by) => tracing::info!(
                kind,
                no = %event.no,
                service = %event.service,
                by = %by,
                reason = %event.reason,
                "routing changed by hand (through the admin API, or another replica)"
            ),
            None => tracing::debug!(
                kind,
                no = %event.no,
                service = %event.service,
                source = %event.source,
                reason = %event.reason,
                "routing changed"
            ),
        }
        if ring.1.len() == KEEP {
            ring.1.pop_front();
        }
        ring.1.push_back(event.clone());
        // (Sent under the lock, so a subscriber sees each event once: in the backlog or live.)
        let _ = self.live.send(event);
    }

    /// How many events of each kind each source caused so far.
    pub fn counts(&self) -> Vec<((&'static str, String), u64)> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.2.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    /// The kept events after `last` (all kept ones without it), and a receiver of the ones
    /// that follow them.
    pub fn subscribe(
        &self,
        last: Option<u64>,
    ) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let backlog = ring
            .1
            .iter()
            .filter(|e| last.is_none_or(|l| e.id > l))
            .cloned()
            .collect();
        (backlog, self.live.subscribe())
    }

    /// Events for the entries `nos` changed from `before` to `after`.
    pub fn diff<'a>(
        &self,
        before: &Registry,
        after: &Registry,
        nos: impl Iterator<Item = &'a String>,
        by: impl Fn(&str) -> Option<String>,
    ) {
        for no in nos {
            let (old, new) = (before.get(no), after.get(no));
            let change: Option<(&'static str, &Entry, String)> = match (&old, &new) {
                (None, Some(n)) => Some(("added", n, added(n))),
                (Some(o), None) => Some(("removed", o, removed(o))),
                (Some(o), Some(n)) if o.pinned != n.pinned => Some(if n.pinned {
                    (
                        "pinned",
                        n,
                        "a manual entry overrides the discovered one".into(),
                    )
                } else {
                    (
                        "unpinned",
                        n,
                        "the manual entry is gone; the discovered one routes again".into(),
                    )
                }),
                (Some(o), Some(n)) if o.spec.state != n.spec.state => {
                    let kind = match n.spec.state {
                        super::AdminState::Active => "enabled",
                        super::AdminState::Draining => "drained",
                        super::AdminState::Disabled => "disabled",
                    };
                    let why = format!(
                        "state {} -> {}",
                        o.spec.state.as_str(),
                        n.spec.state.as_str()
                    );
                    Some((kind, n, why))
                }
                (Some(o), Some(n)) if o.spec != n.spec || o.source != n.source => {
                    let why = format!(
                        "now {}:{} weight {} in service {}",
                        n.spec.addr, n.spec.port, n.spec.weight, n.spec.service
                    );
                    Some(("updated", n, why))
                }
                _ => None,
            };
            if let Some((kind, e, reason)) = change {
                self.emit(
                    kind,
                    About {
                        no,
                        service: &e.spec.service,
                        source: source_of(e),
                        reason,
                        by: by(no),
                    },
                );
            }
        }
    }
}

impl Events {
    /// Events for the services `names` whose settings changed from `before` to `after`.
    pub fn services<'a>(
        &self,
        before: &Registry,
        after: &Registry,
        names: impl Iterator<Item = &'a String>,
        by: impl Fn(&str) -> Option<String>,
    ) {
        for name in names {
            let (old, new) = (before.service_config(name), after.service_config(name));
            let (old_source, new_source) =
                (before.service_source(name), after.service_source(name));
            if old == new && old_source == new_source {
                continue;
            }
            let (kind, source, reason) = match new_source {
                Some(source) => (
                    "service_set",
                    source.clone(),
                    // (Secrets redacted: events reach the read token, the dashboard and
                    // the log.)
                    match serde_json::to_string(&new.0.redacted()) {
                        Ok(json) => format!("settings from {source}: {json}"),
                        Err(_) => format!("settings from {source}"),
                    },
                ),
                None => (
                    "service_removed",
                    old_source.unwrap_or_default(),
                    "its own settings are gone; the defaults apply".into(),
                ),
            };
            self.emit(
                kind,
                About {
                    no: "",
                    service: name,
                    source,
                    reason,
                    by: by(name),
                },
            );
        }
    }

    /// A health change of the backend `no` of `service`, as `registry` knows the entry.
    pub fn health(
        &self,
        kind: &'static str,
        registry: &Registry,
        no: &str,
        service: &str,
        reason: String,
    ) {
        let source = registry.get(no).map(|e| source_of(&e)).unwrap_or_default();
        self.emit(
            kind,
            About {
                no,
                service,
                source,
                reason,
                by: None,
            },
        );
    }
}

/// `manual`, `docker`, or `docker:<endpoint>` for endpoints other than the default.
pub fn source_of(e: &Entry) -> String {
    match &e.endpoint {
        Some(name) => source_name(e.source, name),
        None => e.source.as_str().to_owned(),
    }
}

/// The name of the source `kind` at the endpoint `name`, as events and metrics give it.
pub fn source_name(kind: super::Source, name: &str) -> String {
    if name == super::DEFAULT_ENDPOINT || kind == super::Source::Manual {
        kind.as_str().to_owned()
    } else {
        format!("{}:{name}", kind.as_str())
    }
}

fn added(e: &Entry) -> String {
    match &e.container_id {
        Some(id) => format!(
            "container {} found by the {} source",
            &id[..id.len().min(12)],
            source_of(e)
        ),
        None => format!("added by hand at {}:{}", e.spec.addr, e.spec.port),
    }
}

fn removed(e: &Entry) -> String {
    match &e.container_id {
        Some(id) => format!(
            "container {} no longer routed (stopped, removed or unlabelled)",
            &id[..id.len().min(12)]
        ),
        None => "removed by hand".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resuming_client_gets_what_it_missed_and_no_more_than_kept() {
        let ev = Events::default();
        let about = || About {
            no: "1",
            service: "default",
            source: "manual".into(),
            reason: "test".into(),
            by: None,
        };
        for _ in 0..(KEEP + 5) {
            ev.emit("added", about());
        }
        let (all, _) = ev.subscribe(None);
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].id, 6);
        let (after, mut rx) = ev.subscribe(Some(KEEP as u64 + 3));
        assert_eq!(
            after.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![KEEP as u64 + 4, KEEP as u64 + 5]
        );
        ev.emit("removed", about());
        assert_eq!(rx.try_recv().unwrap().kind, "removed");
    }
}
