//! The Docker adapter: list, inspect and follow events, feeding [`Discovery`] and sending the
//! result to the registry.
//!
//! Order on every (re)connect: note the time, list and inspect the labelled containers, then
//! follow events *since that time*, so nothing that happens between the list and the
//! subscription is missed (events replayed twice are harmless: handling is idempotent). While
//! the daemon is unreachable the last known routes stay; reconnects back off from 100 ms to
//! 5 s and end with a full resync that drops containers that vanished meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::labels::ContainerInfo;
use super::sources::{Activity, Slot, SourceStatus, Sources};
use super::{Discovery, short};
use crate::registry::{Source, SourceId};
use crate::routing::Handle;

/// The name of the Docker endpoint given by `--docker-host` (or the default socket): entries
/// it finds say `"endpoint": "default"`.
pub const DEFAULT_NAME: &str = crate::registry::DEFAULT_ENDPOINT;

pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// One Docker daemon to follow (`--docker-host [NAME=]URI`, or a `[[docker]]` table).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Its entries say `"endpoint": NAME`; beyond the first endpoint, their `no` starts with
    /// `NAME.` (see [`Watcher::new`]).
    pub name: String,
    /// `None`: `$DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// Client certificate, key and CA for a `tcp://` daemon that requires TLS.
    pub tls: Option<EndpointTls>,
    /// The IP at which this host's published ports are reached; `None`: containers' own IPs.
    pub address: Option<std::net::IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Endpoint {
    /// The default endpoint at `host`.
    pub fn at(host: impl Into<String>) -> Endpoint {
        Endpoint {
            name: DEFAULT_NAME.to_owned(),
            host: Some(host.into()),
            ..Default::default()
        }
    }
}
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The endpoint to use: the flag, else `$DOCKER_HOST`, else the local socket. An endpoint
/// quayside cannot speak to (`ssh://`, a typo) is an error to report at start, not a reason to
/// retry for ever.
pub fn resolve_endpoint(flag: Option<&str>) -> Result<String, EndpointError> {
    let (raw, from) = match flag {
        Some(f) => (f.to_owned(), "--docker-host"),
        None => match std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty()) {
            Some(h) => (h, "DOCKER_HOST"),
            None => (DEFAULT_SOCKET.to_owned(), "the default"),
        },
    };
    let endpoint = if raw.starts_with('/') {
        format!("unix://{raw}")
    } else {
        raw
    };
    let scheme = endpoint.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("unix" | "tcp" | "http" | "https") => Ok(endpoint),
        _ => Err(EndpointError { endpoint, from }),
    }
}

/// A Docker endpoint quayside cannot use.
#[derive(Debug, thiserror::Error)]
#[error(
    "Docker endpoint {endpoint:?} (from {from}) is not supported: use unix:///path/to/docker.sock, tcp://host:2375, tcp://host:2376 with DOCKER_TLS_VERIFY=1, or https://host:2376 (for ssh://, forward the socket with ssh -L and use tcp://), or pass --no-docker"
)]
pub struct EndpointError {
    pub endpoint: String,
    pub from: &'static str,
}

/// A bollard error in words a person can act on: its own message (for a connection failure
/// only `client error (Connect)`) followed by the root cause, e.g. `Connection refused`.
fn describe(e: &bollard::errors::Error, endpoint: &str) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let top = e.to_string();
    let cause = root.to_string();
    let connect = top.contains("(Connect)")
        || root
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    if connect {
        format!("cannot connect to {endpoint}: {cause}")
    } else if top.contains(&cause) {
        top
    } else {
        format!("{top}: {cause}")
    }
}

#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("{0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("the event stream ended")]
    StreamEnded,
    #[error("quayside is stopping")]
    Stopped,
    #[error("the endpoint became or stopped being a Swarm manager")]
    SwarmChanged,
}

/// How often the endpoint is asked whether it is a Swarm manager (besides network events).
const SWARM_CHECK: Duration = Duration::from_secs(5);

pub struct Watcher {
    endpoint: String,
    tls: Option<EndpointTls>,
    registry: Handle,
    sources: Sources,
    status: Slot,
    /// Swarm services, once the endpoint turned out to be a Swarm manager.
    swarm: Option<SwarmSource>,
    /// How often the tasks of labelled services are listed (Docker sends no task events).
    swarm_poll: Duration,
    discovery: Discovery,
    seen: Activity,
    /// The current session got as far as a full sync.
    synced: bool,
    /// A network was created or removed (as `docker swarm init`/`leave` do): look again
    /// whether the endpoint is a Swarm manager.
    recheck_swarm: bool,
}

impl Watcher {
    /// A watcher of the Docker daemon `endpoint` (its host resolved); its status goes to
    /// `sources`. With `qualify` (every endpoint but the first), the `no` of its entries
    /// starts with the endpoint's name and a dot, so two hosts' containers never share one.
    pub fn new(
        endpoint: Endpoint,
        qualify: bool,
        (prefix, instance): (&str, Option<String>),
        registry: Handle,
        sources: &Sources,
    ) -> Self {
        let name = endpoint.name.clone();
        let host = endpoint.host.clone().unwrap_or_default();
        let source = SourceId::new(Source::Docker, &name);
        let status = sources.slot(
            source.clone(),
            SourceStatus::connecting(Source::Docker.as_str(), &name, &host, prefix),
        );
        let mut discovery = Discovery::new(source, prefix, Vec::new());
        discovery.address = endpoint.address;
        discovery.qualifier = qualify.then_some(name);
        discovery.instance = instance;
        Watcher {
            endpoint: host,
            tls: endpoint.tls,
            registry,
            sources: sources.clone(),
            status,
            swarm: None,
            swarm_poll: Duration::from_secs(1),
            discovery,
            seen: Activity::default(),
            synced: false,
            recheck_swarm: false,
        }
    }

    /// List the tasks of labelled Swarm services every `poll` (default 1 s).
    pub fn swarm_poll(mut self, poll: Duration) -> Self {
        self.swarm_poll = poll;
        self
    }

    /// Run until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        let mut last_logged: Option<String> = None;
        self.publish_status("connecting", None);
        loop {
            let result = tokio::select! {
                r = self.session() => r,
                _ = stop.wait_for(|s| *s) => Err(WatchError::Stopped),
            };
            let err = match result {
                Err(WatchError::Stopped) => return,
                // A swarm made or left: a new session at once, which follows it (or not).
                Err(WatchError::SwarmChanged) => continue,
                Err(WatchError::Docker(e)) => describe(&e, &self.endpoint),
                Err(e) => e.to_string(),
                Ok(()) => unreachable!("a session only ends with an error"),
            };
            if std::mem::take(&mut self.synced) {
                // The connection worked for a while: start the backoff over.
                backoff = BACKOFF_MIN;
            }
            if last_logged.as_deref() != Some(err.as_str()) {
                tracing::warn!(
                    endpoint = %self.endpoint,
                    error = %err,
                    "lost or cannot reach the Docker daemon; serving the last known routes and retrying (backoff 100ms to 5s). Check that Docker runs and that quayside may use its socket, or pass --no-docker"
                );
                last_logged = Some(err.clone());
            } else {
                tracing::debug!(endpoint = %self.endpoint, error = %err, "Docker still unreachable");
            }
            self.publish_status("disconnected", Some(err.clone()));
            if let Some(swarm) = &mut self.swarm {
                swarm.seen.reconnects += 1;
                swarm.publish_status("disconnected", Some(err));
            }
            self.seen.reconnects += 1;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection: sync, then follow events until something breaks.
    async fn session(&mut self) -> Result<(), WatchError> {
        let docker = match &self.tls {
            None => Docker::connect_with_host(&self.endpoint)?,
            Some(t) => Docker::connect_with_ssl(
                &self.endpoint,
                &t.key,
                &t.cert,
                &t.ca,
                120,
                bollard::API_DEFAULT_VERSION,
            )?,
        }
        .negotiate_version()
        .await?;
        let own = own_networks(&docker).await;
        if !own.is_empty() {
            tracing::info!(networks = ?own, "quayside runs in a container; preferring its networks");
        }
        self.discovery = Discovery {
            own_networks: own,
            ..self.discovery.clone()
        };
        // A Swarm manager: its services are followed too, and its task containers are left to
        // them.
        let manager = self.follow_swarm(&docker).await?;
        let mut types = vec!["container".to_owned(), "network".to_owned()];
        if manager {
            types.push("service".to_owned());
        }
        // Events from a little before the list, so the gap is covered.
        let since = unix_now() - 5.0;
        let mut events = docker.events(Some(EventsOptions {
            since: Some(format!("{since:.0}")),
            until: None,
            filters: Some(HashMap::from([("type".to_owned(), types)])),
        }));
        let infos = list_ours(&docker, self.discovery.prefix()).await?;
        let count = infos.len();
        self.discovery.replace_all(infos);
        self.seen.last_sync = Some(SystemTime::now());
        self.seen.syncs += 1;
        self.synced = true;
        self.publish().await;
        if let Some(swarm) = &mut self.swarm {
            swarm.discovery.own_networks = self.discovery.own_networks.clone();
            swarm.sync(&docker, &self.registry, true).await?;
        }
        tracing::info!(endpoint = %self.endpoint, containers = count, "connected to Docker and synced");
        self.publish_status("connected", None);

        let mut poll = tokio::time::interval(self.swarm_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A swarm made or left while quayside runs: looked for on network events, and every
        // few seconds whatever the events say.
        let mut swarm_check = tokio::time::interval(SWARM_CHECK);
        swarm_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        swarm_check.reset();
        loop {
            // (Tasks are listed only while some service is labelled.)
            let polling = self.swarm.as_ref().is_some_and(|s| s.labelled);
            let ev = tokio::select! {
                ev = events.next() => ev,
                _ = poll.tick(), if polling => {
                    if let Some(swarm) = &mut self.swarm {
                        swarm.sync(&docker, &self.registry, false).await?;
                    }
                    continue;
                }
                _ = swarm_check.tick() => {
                    if self.follow_swarm(&docker).await? != manager {
                        // (The event filter and the containers' verdicts depend on it.)
                        return Err(WatchError::SwarmChanged);
                    }
                    continue;
                }
            };
            let Some(ev) = ev else {
                return Err(WatchError::StreamEnded);
            };
            let mut changed = self.handle(&docker, ev?).await?;
            // Coalesce whatever else has already arrived into one publish.
            while let Some(Some(ev)) = events.next().now_or_never() {
                changed |= self.handle(&docker, ev?).await?;
            }
            if changed {
                self.publish().await;
            }
            if std::mem::take(&mut self.recheck_swarm)
                && self.follow_swarm(&docker).await? != manager
            {
                return Err(WatchError::SwarmChanged);
            }
            if let Some(swarm) = &mut self.swarm
                && std::mem::take(&mut swarm.dirty)
            {
                swarm.sync(&docker, &self.registry, true).await?;
            }
            self.publish_status("connected", None);
        }
    }

    /// Apply one event to the discovery state; true if it may have changed routing.
    async fn handle(&mut self, docker: &Docker, ev: EventMessage) -> Result<bool, WatchError> {
        let action = ev.action.as_deref().unwrap_or("");
        let actor = ev.actor.unwrap_or_default();
        self.seen.events += 1;
        self.seen.last_event = ev
            .time_nano
            .and_then(|n| u64::try_from(n).ok())
            .map(Duration::from_nanos)
            .or(ev
                .time
                .and_then(|t| u64::try_from(t).ok())
                .map(Duration::from_secs))
            .map(|since_epoch| UNIX_EPOCH + since_epoch);
        if ev.typ == Some(EventMessageTypeEnum::NETWORK) && matches!(action, "create" | "destroy") {
            self.recheck_swarm = true;
        }
        if ev.typ == Some(EventMessageTypeEnum::SERVICE) {
            if let Some(swarm) = &mut self.swarm {
                swarm.dirty = true;
                swarm.seen.events += 1;
            }
            return Ok(false);
        }
        // A task's container getting its stop signal on this node: drain the task at once
        // (the task listing would see it only at the next poll).
        if action == "kill"
            && let Some(swarm) = &mut self.swarm
            && let Some(task) = actor
                .attributes
                .as_ref()
                .and_then(|a| a.get(super::TASK_LABEL))
            && swarm.discovery.drain(task)
        {
            tracing::info!(task = %short(task), "Swarm task is stopping; draining it");
            swarm.dirty = true;
        }
        let id = match ev.typ {
            Some(EventMessageTypeEnum::CONTAINER) => actor.id.unwrap_or_default(),
            Some(EventMessageTypeEnum::NETWORK) if matches!(action, "connect" | "disconnect") => {
                actor
                    .attributes
                    .and_then(|a| a.get("container").cloned())
                    .unwrap_or_default()
            }
            _ => return Ok(false),
        };
        if id.is_empty() {
            return Ok(false);
        }
        Ok(match action {
            "kill" => {
                let drained = self.discovery.drain(&id);
                if drained {
                    tracing::info!(id = %short(&id), "container is stopping; draining it");
                }
                drained
            }
            "die" | "stop" | "pause" | "destroy" | "oom" => {
                let removed = self.discovery.remove(&id);
                if removed {
                    tracing::info!(id = %short(&id), action, "container removed from routing");
                }
                removed
            }
            "start" | "unpause" | "restart" | "rename" | "update" | "connect" | "disconnect" => {
                if action == "start" || action == "restart" || action == "unpause" {
                    self.discovery.undrain(&id);
                }
                self.reinspect(docker, &id).await?
            }
            a if a.starts_with("health_status") => self.reinspect(docker, &id).await?,
            _ => false,
        })
    }

    /// Whether the endpoint is a Swarm manager now; follows its services from when it
    /// becomes one, and drops them (their tasks leave routing) when it stops being one.
    async fn follow_swarm(&mut self, docker: &Docker) -> Result<bool, WatchError> {
        let manager = docker
            .info()
            .await?
            .swarm
            .and_then(|s| s.control_available)
            .unwrap_or(false);
        self.discovery.skip_tasks = manager;
        if manager && self.swarm.is_none() {
            self.swarm = Some(SwarmSource::new(
                &self.sources,
                &self.discovery,
                &self.endpoint,
            ));
            tracing::info!(endpoint = %self.endpoint, "the Docker endpoint is a Swarm manager; following labelled services too");
        } else if !manager && let Some(mut swarm) = self.swarm.take() {
            swarm.discovery.replace_all(Vec::new());
            let (cmd, _) = swarm.discovery.sync_command();
            if let Err(e) = self.registry.apply(cmd).await {
                tracing::error!(error = %e, "could not remove the Swarm tasks from routing");
            }
            swarm.publish_status("not a manager", None);
            tracing::info!(endpoint = %self.endpoint, "the Docker endpoint is no longer a Swarm manager (it left the swarm, or was demoted); its services' tasks are out of routing");
        }
        Ok(manager)
    }

    async fn reinspect(&mut self, docker: &Docker, id: &str) -> Result<bool, WatchError> {
        Ok(match docker.inspect_container(id, None).await {
            Ok(c) => {
                let info = container_info(c);
                if info.running {
                    self.discovery.upsert(info);
                    true
                } else {
                    // Stopped: nothing to route or explain (it is listed again once it starts).
                    self.discovery.remove(id)
                }
            }
            Err(e) if is_not_found(&e) => {
                tracing::debug!(id = %short(id), "container is gone");
                self.discovery.remove(id)
            }
            // Anything else (connection cut, daemon error) ends the session: the resync after
            // reconnecting finds the truth; until then the last known routes stay.
            Err(e) => return Err(e.into()),
        })
    }

    async fn publish(&mut self) {
        let (cmd, conflicts) = self.discovery.sync_command();
        for (container, message) in &conflicts {
            tracing::warn!(%container, "{message}");
        }
        if let Err(e) = self.registry.apply(cmd).await {
            tracing::error!(error = %e, "could not apply discovered backends");
        }
    }

    fn publish_status(&self, state: &'static str, error: Option<String>) {
        self.status.set(
            self.discovery
                .source_status(&self.endpoint, state, error, &self.seen),
        );
    }
}

/// The Swarm services an endpoint that is a manager has: a source of their own.
struct SwarmSource {
    discovery: Discovery,
    status: Slot,
    endpoint: String,
    /// Some service carries our labels (tasks are polled only then).
    labelled: bool,
    /// A service event (or a task drain) asks for a listing now.
    dirty: bool,
    seen: Activity,
    /// What was last sent to the registry (nothing is sent while it stays the same).
    sent: Option<crate::registry::Command>,
}

impl SwarmSource {
    fn publish_status(&self, state: &'static str, error: Option<String>) {
        self.status.set(
            self.discovery
                .source_status(&self.endpoint, state, error, &self.seen),
        );
    }

    fn new(sources: &Sources, containers: &Discovery, endpoint: &str) -> SwarmSource {
        let source = SourceId::new(Source::Swarm, &containers.source.name);
        let mut discovery = Discovery::new(source.clone(), containers.prefix(), Vec::new());
        discovery.qualifier = containers.qualifier.clone();
        discovery.instance = containers.instance.clone();
        let status = sources.slot(
            source,
            SourceStatus::connecting(
                Source::Swarm.as_str(),
                &containers.source.name,
                endpoint,
                containers.prefix(),
            ),
        );
        SwarmSource {
            discovery,
            status,
            endpoint: endpoint.to_owned(),
            labelled: false,
            dirty: false,
            seen: Activity::default(),
            sent: None,
        }
    }

    /// List the labelled services, their tasks and the tasks' addresses, and send the result
    /// to the registry if it changed (`full`: a resync after a connect or a service event).
    async fn sync(
        &mut self,
        docker: &Docker,
        registry: &Handle,
        full: bool,
    ) -> Result<(), WatchError> {
        use bollard::query_parameters::{InspectNetworkOptions, ListTasksOptions};
        let prefix = self.discovery.prefix().to_owned();
        let mut services = Vec::new();
        let mut networks = std::collections::BTreeSet::new();
        for s in docker.list_services(None).await? {
            let (Some(id), Some(spec)) = (s.id, s.spec) else {
                continue;
            };
            let labels: BTreeMap<String, String> =
                spec.labels.unwrap_or_default().into_iter().collect();
            if !super::labels::is_ours(&labels, &prefix) {
                continue;
            }
            for n in spec
                .task_template
                .and_then(|t| t.networks)
                .into_iter()
                .flatten()
                .chain(spec.networks.into_iter().flatten())
            {
                networks.extend(n.target);
            }
            services.push(super::swarm::ServiceView {
                id,
                name: spec.name.unwrap_or_default(),
                labels,
            });
        }
        self.labelled = !services.is_empty();
        let tasks = if services.is_empty() {
            Vec::new()
        } else {
            let ids = services.iter().map(|s| s.id.clone()).collect();
            docker
                .list_tasks(Some(ListTasksOptions {
                    filters: Some(HashMap::from([("service".to_owned(), ids)])),
                }))
                .await?
                .into_iter()
                .filter_map(|t| {
                    let status = t.status?;
                    Some(super::swarm::TaskView {
                        id: t.id?,
                        service_id: t.service_id?,
                        slot: t.slot,
                        node_id: t.node_id.unwrap_or_default(),
                        state: status.state?.to_string(),
                        desired: t.desired_state?.to_string(),
                        created: t.created_at.as_deref().map(rfc3339_nanos).unwrap_or(0),
                    })
                })
                .collect()
        };
        // Task addresses: a Swarm network's verbose listing has every task on it, on any node.
        let mut addresses: BTreeMap<String, BTreeMap<String, IpAddr>> = BTreeMap::new();
        for net in &networks {
            let n = match docker
                .inspect_network(
                    net,
                    Some(InspectNetworkOptions {
                        verbose: true,
                        scope: Some("swarm".into()),
                    }),
                )
                .await
            {
                Ok(n) => n,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let name = n.name.unwrap_or_default();
            for svc in n.services.unwrap_or_default().into_values() {
                for t in svc["Tasks"].as_array().into_iter().flatten() {
                    // `web.1.<task id>`, or `web.<node id>.<task id>`.
                    let task = t["Name"].as_str().and_then(|n| n.rsplit('.').next());
                    let ip = t["EndpointIP"].as_str().and_then(|ip| ip.parse().ok());
                    if let (Some(task), Some(ip)) = (task, ip) {
                        addresses
                            .entry(task.to_owned())
                            .or_default()
                            .insert(name.clone(), ip);
                    }
                }
            }
        }
        let infos = super::swarm::task_infos(&services, &tasks, &addresses);
        let stopping: Vec<String> = infos
            .iter()
            .filter(|t| t.stopping)
            .map(|t| t.info.id.clone())
            .collect();
        self.discovery
            .replace_all(infos.into_iter().map(|t| t.info).collect());
        for id in &stopping {
            self.discovery.drain(id);
        }
        self.seen.syncs += u64::from(full);
        self.seen.last_sync = Some(SystemTime::now());
        let (cmd, conflicts) = self.discovery.sync_command();
        if self.sent.as_ref() != Some(&cmd) {
            for (task, message) in &conflicts {
                tracing::warn!(%task, "{message}");
            }
            if let Err(e) = registry.apply(cmd.clone()).await {
                tracing::error!(error = %e, "could not apply Swarm tasks");
            } else {
                self.sent = Some(cmd);
            }
        }
        self.publish_status("connected", None);
        Ok(())
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Running containers with any label under `prefix`, inspected.
async fn list_ours(docker: &Docker, prefix: &str) -> Result<Vec<ContainerInfo>, WatchError> {
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: false,
            ..Default::default()
        }))
        .await?;
    let mut out = Vec::new();
    for c in list {
        let labels: BTreeMap<String, String> = c.labels.unwrap_or_default().into_iter().collect();
        if !super::labels::is_ours(&labels, prefix) {
            continue;
        }
        let Some(id) = c.id else { continue };
        match docker.inspect_container(&id, None).await {
            Ok(i) => out.push(container_info(i)),
            Err(e) => {
                tracing::debug!(id = %short(&id), error = %e, "container vanished during sync")
            }
        }
    }
    Ok(out)
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The networks of quayside's own container, when it runs in one: found by its host name
/// (Docker's default is the short container id), else by the container id in the paths of
/// its own mounts (a container given a `hostname:` of its own).
async fn own_networks(docker: &Docker) -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let by_mount = own_container_id(&mountinfo);
    let in_container = std::path::Path::new("/.dockerenv").exists() || by_mount.is_some();
    if !in_container {
        return Vec::new();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    for id in [Some(host.trim()), by_mount].into_iter().flatten() {
        if id.is_empty() {
            continue;
        }
        if let Ok(c) = docker.inspect_container(id, None).await {
            return container_info(c).networks.into_keys().collect();
        }
    }
    tracing::warn!(
        hostname = host.trim(),
        "quayside seems to run in a container but cannot find it through this Docker endpoint (by its host name or the id in its mounts); containers on networks it is not on may be routed and time out: set quayside.network on them, or run quayside on the host or with a daemon that runs it"
    );
    Vec::new()
}

/// The id of the container whose mounts these are (`/proc/self/mountinfo`): Docker mounts
/// `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` from `…/containers/<id>/`.
fn own_container_id(mountinfo: &str) -> Option<&str> {
    mountinfo.lines().find_map(|line| {
        let rest = &line[line.find("/containers/")? + "/containers/".len()..];
        let id = rest.get(..64)?;
        (id.bytes().all(|b| b.is_ascii_hexdigit()) && rest[64..].starts_with('/')).then_some(id)
    })
}

/// The parts of `docker inspect` that discovery uses.
pub fn container_info(c: ContainerInspectResponse) -> ContainerInfo {
    let config = c.config.unwrap_or_default();
    let state = c.state.unwrap_or_default();
    let health = state
        .health
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty() && s != "none");
    let host_network = c
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        == Some("host");
    let settings = c.network_settings.unwrap_or_default();
    // `80/tcp` → the first host port it is published on.
    let published = settings
        .ports
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, bindings)| {
            let (port, proto) = key.split_once('/').unwrap_or((&key, "tcp"));
            let port: u16 = port.parse().ok().filter(|_| proto == "tcp")?;
            let host = bindings?
                .into_iter()
                .find_map(|b| b.host_port?.parse::<u16>().ok())?;
            Some((port, host))
        })
        .collect();
    let networks = settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| {
            let ip = ep
                .ip_address
                .filter(|s| !s.is_empty())
                .or(ep.global_ipv6_address.filter(|s| !s.is_empty()))
                .and_then(|s| s.parse::<IpAddr>().ok());
            (name, ip)
        })
        .collect();
    let mut exposed_ports: Vec<u16> = config
        .exposed_ports
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            (proto == "tcp").then(|| port.parse().ok()).flatten()
        })
        .collect();
    exposed_ports.sort_unstable();
    exposed_ports.dedup();
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        created: c.created.as_deref().map(rfc3339_nanos).unwrap_or(0),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        running: state.running.unwrap_or(false),
        paused: state.paused.unwrap_or(false),
        health,
        networks,
        exposed_ports,
        published,
        host_network,
    }
}

/// Nanoseconds since the epoch of an RFC 3339 UTC time as Docker writes it
/// (`2026-11-25T15:38:01.123456789Z`); 0 when it cannot be read.
pub fn rfc3339_nanos(s: &str) -> i64 {
    humantime::parse_rfc3339(s)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn its_own_container_id_is_read_from_its_mounts() {
        let id = "4f1e7c0d9a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5";
        let mountinfo = format!(
            "612 593 0:55 / / rw,relatime - overlay overlay rw\n\
             625 612 254:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(own_container_id(&mountinfo), Some(id));
        assert_eq!(
            own_container_id("612 593 0:55 / / rw - overlay overlay rw\n"),
            None
        );
        assert_eq!(
            own_container_id("1 2 3:4 /var/lib/docker/containers/short/hostname /etc/hostname\n"),
            None
        );
    }

    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_nanos("1970-01-01T00:00:00Z"), 0);
        assert_eq!(
            rfc3339_nanos("2000-03-01T00:00:01.5Z"),
            951_868_801_500_000_000
        );
        assert!(rfc3339_nanos("2026-11-25T15:38:01Z") < rfc3339_nanos("2026-11-25T15:38:01.1Z"));
        assert_eq!(rfc3339_nanos("garbage"), 0);
    }

    #[test]
    fn endpoint_resolution() {
        assert_eq!(
            resolve_endpoint(Some("/tmp/d.sock")).unwrap(),
            "unix:///tmp/d.sock"
        );
        assert_eq!(
            resolve_endpoint(Some("tcp://127.0.0.1:2375")).unwrap(),
            "tcp://127.0.0.1:2375"
        );
        for bad in ["ssh://user@host", "127.0.0.1:2375", "tpc://h:2375"] {
            let e = resolve_endpoint(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("--docker-host"), "{e}");
        }
    }
}
