//! Discovery: sources that find backends on their own.
//!
//! [`Discovery`] is the pure state of the Docker source: the containers seen with our labels,
//! each evaluated by [`labels::evaluate`]. It turns into the registry's input with
//! [`Discovery::sync_command`] and explains itself with [`Discovery::status`]. The [`docker`]
//! adapter fills it from the Docker API (list, inspect, events) and sends the result to the
//! registry.

pub mod docker;
pub mod labels;
pub mod sources;
pub mod swarm;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::registry::{AdminState, BackendSpec, Command, Discovered, ServiceConfig, SourceId};
use labels::{ContainerInfo, Skip};

/// The label Docker gives the container of a Swarm task (its task id).
pub const TASK_LABEL: &str = "com.docker.swarm.task.id";

/// One container as discovery sees it.
#[derive(Clone, Debug)]
struct Seen {
    info: ContainerInfo,
    verdict: Result<labels::Routable, Skip>,
    /// Its stop signal was sent (`kill` event): no new requests.
    draining: bool,
}

/// The containers seen with our labels, by id.
#[derive(Clone, Debug)]
pub struct Discovery {
    source: SourceId,
    prefix: String,
    own_networks: Vec<String>,
    /// The IP at which this host's published ports are reached (`address` of the endpoint):
    /// with it, a container is reached there at the host port published for its port.
    pub address: Option<std::net::IpAddr>,
    /// Put before every `no` with a dot (endpoints other than the first).
    pub qualifier: Option<String>,
    /// Containers of Swarm tasks are left out (the Swarm source routes them, as tasks).
    pub skip_tasks: bool,
    /// This quayside's `--instance`: only containers labelled for it are routed.
    pub instance: Option<String>,
    containers: BTreeMap<String, Seen>,
}

/// A container's line in `GET /api/v1/discovery`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub routed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub draining: bool,
    /// Why it is not routed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Labels under the prefix that quayside does not know (and so ignores).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Skip>,
}

impl Discovery {
    pub fn new(source: SourceId, prefix: &str, own_networks: Vec<String>) -> Self {
        Discovery {
            source,
            prefix: prefix.to_owned(),
            own_networks,
            address: None,
            qualifier: None,
            skip_tasks: false,
            instance: None,
            containers: BTreeMap::new(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Add or re-evaluate a container (after start, health change, network change ...).
    /// A container without our labels is forgotten.
    pub fn upsert(&mut self, info: ContainerInfo) {
        if !labels::is_ours(&info.labels, &self.prefix)
            || (self.skip_tasks && info.labels.contains_key(TASK_LABEL))
        {
            self.containers.remove(&info.id);
            return;
        }
        let verdict = labels::instance_of(&info.labels, &self.prefix, self.instance.as_deref())
            .and_then(|()| labels::evaluate(&info, &self.prefix, &self.own_networks, self.address))
            .and_then(|r| self.qualify(r));
        // (Another quayside's container: its labels are not this one's to judge.)
        let theirs = matches!(verdict, Err(Skip::OtherInstance { .. }));
        if !self.containers.contains_key(&info.id) && !theirs {
            let unknown = labels::unknown(&info.labels, &self.prefix);
            if !unknown.is_empty() {
                tracing::warn!(container = %info.name, labels = ?unknown, "unknown labels are ignored; check their spelling (the README lists every label)");
            }
        }
        if let Err(skip) = &verdict {
            let known = self
                .containers
                .get(&info.id)
                .map(|s| s.verdict.as_ref().err() == Some(skip))
                .unwrap_or(false);
            // A container on its way out (stopped, or draining since its kill) loses its
            // networks as a matter of course: nothing for an operator to do.
            let leaving =
                !info.running || self.containers.get(&info.id).is_some_and(|s| s.draining);
            let mine = *skip != Skip::Disabled && !theirs;
            if !known && mine && !leaving {
                tracing::warn!(container = %info.name, id = %short(&info.id), reason = %skip, "container not routed");
            } else if !known && leaving {
                tracing::debug!(container = %info.name, id = %short(&info.id), reason = %skip, "container on its way out not routed");
            }
        }
        // A re-inspect after `kill` keeps draining until the container dies or restarts.
        let draining = self.containers.get(&info.id).is_some_and(|s| s.draining) && info.running;
        self.containers.insert(
            info.id.clone(),
            Seen {
                info,
                verdict,
                draining,
            },
        );
    }

    /// `r` with its `no` put under this endpoint's name, if it has one.
    fn qualify(&self, mut r: labels::Routable) -> Result<labels::Routable, Skip> {
        if let Some(q) = &self.qualifier {
            let no = format!("{q}.{}", r.no);
            r.no = crate::registry::validate::no(&no).map_err(|e| Skip::BadLabel {
                label: format!("{}.no", self.prefix),
                value: r.no.clone(),
                reason: format!(
                    "with its endpoint's name ({no}) it {}; set a shorter no label",
                    e.reason
                ),
            })?;
        }
        Ok(r)
    }

    pub fn remove(&mut self, id: &str) -> bool {
        self.containers.remove(id).is_some()
    }

    /// The container got its stop signal: stop sending it new requests.
    pub fn drain(&mut self, id: &str) -> bool {
        match self.containers.get_mut(id) {
            Some(s) if !s.draining => {
                s.draining = true;
                true
            }
            _ => false,
        }
    }

    /// A restart clears draining.
    pub fn undrain(&mut self, id: &str) {
        if let Some(s) = self.containers.get_mut(id) {
            s.draining = false;
        }
    }

    /// Replace everything with a fresh listing (after a (re)connect).
    pub fn replace_all(&mut self, infos: Vec<ContainerInfo>) {
        let old = std::mem::take(&mut self.containers);
        for info in infos {
            self.upsert(info);
        }
        // Keep drains of containers that are still there.
        for (id, s) in old {
            if s.draining
                && let Some(now) = self.containers.get_mut(&id)
            {
                now.draining = now.info.running;
            }
        }
    }

    /// Containers in "first one wins" order: oldest first, then by id.
    fn ordered(&self) -> Vec<&Seen> {
        let mut v: Vec<&Seen> = self.containers.values().collect();
        v.sort_by(|a, b| (a.info.created, &a.info.id).cmp(&(b.info.created, &b.info.id)));
        v
    }

    /// The registry command that replaces the discovered set, and the conflicts found
    /// (duplicate `no`, disagreeing service labels) as `(container name, message)`.
    pub fn sync_command(&self) -> (Command, Vec<(String, String)>) {
        let mut backends: BTreeMap<String, Discovered> = BTreeMap::new();
        let mut services: BTreeMap<String, (ServiceConfig, String)> = BTreeMap::new();
        let mut conflicts = Vec::new();
        for s in self.ordered() {
            let Ok(r) = &s.verdict else { continue };
            if let Some(first) = backends.get(&r.no) {
                conflicts.push((
                    s.info.name.clone(),
                    format!(
                        "no {:?} is already used by container {}; set a distinct no label",
                        r.no,
                        short(&first.container_id)
                    ),
                ));
                continue;
            }
            if let Some(cfg) = &r.service_config {
                match services.get(&r.service) {
                    Some((first, by)) if first != cfg => conflicts.push((
                        s.info.name.clone(),
                        format!(
                            "service {} labels differ from those of container {by}, which came first and wins",
                            r.service
                        ),
                    )),
                    Some(_) => {}
                    None => {
                        services.insert(r.service.clone(), (cfg.clone(), s.info.name.clone()));
                    }
                }
            }
            backends.insert(
                r.no.clone(),
                Discovered {
                    spec: BackendSpec {
                        no: r.no.clone(),
                        addr: r.addr,
                        port: r.port,
                        weight: r.weight,
                        service: r.service.clone(),
                        state: if s.draining {
                            AdminState::Draining
                        } else {
                            AdminState::Active
                        },
                    },
                    container_id: s.info.id.clone(),
                    source: self.source.clone(),
                },
            );
        }
        (
            Command::SyncDiscovered {
                source: self.source.clone(),
                backends: backends.into_values().collect(),
                services: services.into_iter().map(|(k, (c, _))| (k, c)).collect(),
            },
            conflicts,
        )
    }

    /// This source's status, as `/api/v1/discovery` lists it.
    pub fn source_status(
        &self,
        endpoint: &str,
        state: &'static str,
        error: Option<String>,
        seen: &sources::Activity,
    ) -> sources::SourceStatus {
        let (_, conflicts) = self.sync_command();
        sources::SourceStatus {
            kind: self.source.kind.as_str(),
            name: self.source.name.clone(),
            endpoint: endpoint.to_owned(),
            label_prefix: self.prefix.clone(),
            state,
            last_error: error,
            last_event: seen.last_event,
            last_sync: seen.last_sync,
            reconnects: seen.reconnects,
            events: seen.events,
            syncs: seen.syncs,
            containers: self.status(),
            conflicts: conflicts
                .into_iter()
                .map(|(container, message)| sources::Conflict { container, message })
                .collect(),
        }
    }

    /// Every container seen, routed or not and why.
    pub fn status(&self) -> Vec<ContainerStatus> {
        let (cmd, conflicts) = self.sync_command();
        let Command::SyncDiscovered { backends, .. } = cmd else {
            unreachable!()
        };
        self.ordered()
            .into_iter()
            .map(|s| {
                let routed = backends.iter().any(|b| b.container_id == s.info.id);
                let conflict = conflicts
                    .iter()
                    .find(|(name, _)| *name == s.info.name)
                    .map(|(_, m)| m.clone());
                let (reason, detail) = match &s.verdict {
                    Err(skip) => (Some(skip.to_string()), Some(skip.clone())),
                    Ok(_) => (conflict, None),
                };
                let ok = s.verdict.as_ref().ok();
                ContainerStatus {
                    id: s.info.id.clone(),
                    name: s.info.name.clone(),
                    routed,
                    no: ok.map(|r| r.no.clone()),
                    service: ok.map(|r| r.service.clone()),
                    address: ok.map(|r| r.addr.to_string()),
                    port: ok.map(|r| r.port),
                    draining: s.draining,
                    reason,
                    unknown_labels: labels::unknown(&s.info.labels, &self.prefix),
                    detail,
                }
            })
            .collect()
    }
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, name: &str, created: i64, labels: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: name.into(),
            created,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            running: true,
            paused: false,
            health: None,
            networks: [(
                "bridge".to_string(),
                Some(format!("172.17.0.{created}").parse().unwrap()),
            )]
            .into(),
            exposed_ports: vec![80],
            published: Default::default(),
            host_network: false,
        }
    }

    fn backends(d: &Discovery) -> Vec<Discovered> {
        match d.sync_command().0 {
            Command::SyncDiscovered { backends, .. } => backends,
            _ => unreachable!(),
        }
    }

    #[test]
    fn first_container_wins_service_labels_and_no() {
        let mut d = Discovery::new(
            SourceId::new(crate::registry::Source::Docker, "default"),
            "quayside",
            vec![],
        );
        d.upsert(info(
            "b",
            "api-2",
            2,
            &[
                ("quayside.service", "api"),
                ("quayside.host", "b.example.com"),
            ],
        ));
        d.upsert(info(
            "a",
            "api-1",
            1,
            &[
                ("quayside.service", "api"),
                ("quayside.host", "a.example.com"),
            ],
        ));
        d.upsert(info("c", "dup", 3, &[("quayside.no", "api-1")]));
        let (cmd, conflicts) = d.sync_command();
        let Command::SyncDiscovered {
            backends, services, ..
        } = cmd
        else {
            unreachable!()
        };
        assert_eq!(backends.len(), 2);
        assert_eq!(services[0].1.hosts, vec!["a.example.com"]);
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        let st = d.status();
        let dup = st.iter().find(|s| s.name == "dup").unwrap();
        assert!(!dup.routed);
        assert!(dup.reason.as_ref().unwrap().contains("already used"));
        assert!(dup.unknown_labels.is_empty());
        // A misspelt label is ignored, and said so.
        d.upsert(info("t", "typo", 4, &[("quayside.prot", "8080")]));
        let st = d.status();
        let typo = st.iter().find(|s| s.name == "typo").unwrap();
        assert_eq!(typo.unknown_labels, vec!["quayside.prot".to_string()]);
        assert!(typo.routed);
    }

    #[test]
    fn entries_of_endpoints_beyond_the_first_are_named_after_it() {
        let mut d = Discovery::new(
            SourceId::new(crate::registry::Source::Docker, "edge"),
            "quayside",
            vec![],
        );
        d.qualifier = Some("edge".into());
        d.upsert(info("a", "web", 1, &[("quayside.enable", "true")]));
        let long = "x".repeat(60);
        d.upsert(info("b", "other", 2, &[("quayside.no", long.as_str())]));
        let (Command::SyncDiscovered { backends, .. }, _) = d.sync_command() else {
            unreachable!()
        };
        let nos: Vec<&str> = backends.iter().map(|b| b.spec.no.as_str()).collect();
        assert_eq!(nos, ["edge.web"]);
        let status = d.status();
        let reason = status[1].reason.as_deref().unwrap();
        assert!(reason.contains("set a shorter no label"), "{reason}");
    }

    #[test]
    fn kill_drains_until_gone_and_unlabelled_are_ignored() {
        let mut d = Discovery::new(
            SourceId::new(crate::registry::Source::Docker, "default"),
            "quayside",
            vec![],
        );
        d.upsert(info("a", "web", 1, &[("quayside.enable", "true")]));
        d.upsert(info("z", "plain", 1, &[("other", "x")]));
        assert_eq!(backends(&d).len(), 1);
        assert!(d.drain("a"));
        assert_eq!(backends(&d)[0].spec.state, AdminState::Draining);
        // Re-inspect while still running keeps it draining; a full resync too.
        d.upsert(info("a", "web", 1, &[("quayside.enable", "true")]));
        d.replace_all(vec![info("a", "web", 1, &[("quayside.enable", "true")])]);
        assert_eq!(backends(&d)[0].spec.state, AdminState::Draining);
        d.undrain("a");
        assert_eq!(backends(&d)[0].spec.state, AdminState::Active);
        assert!(d.remove("a"));
        assert!(backends(&d).is_empty());
        // Full resync drops what vanished.
        d.upsert(info("q", "gone", 1, &[("quayside.enable", "true")]));
        d.replace_all(vec![]);
        assert!(d.status().is_empty());
    }
}
