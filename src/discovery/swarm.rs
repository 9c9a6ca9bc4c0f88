//! Swarm services, the pure part: what the Docker API says about the labelled services, their
//! tasks and the tasks' addresses turned into the container shape [`Discovery`](super::Discovery)
//! already evaluates, so a task is routed by the same label rules as a container (a service's
//! labels are its tasks' labels) and explained the same way.
//!
//! A task is an entry while it runs: `<service>.<slot>` (replicated) or `<service>.<node>`
//! (global). One whose desired state is no longer `running` (an update or a scale-down stopping
//! it) is drained at once, under `<service>.<slot>.<task>` so that the task replacing it in the
//! same slot (start-first updates run both) takes the slot's name.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::labels::ContainerInfo;

/// A service as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A task as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    pub id: String,
    pub service_id: String,
    /// `None` for a global service's task.
    pub slot: Option<i64>,
    pub node_id: String,
    /// `running`, `starting`, `shutdown`, ... (a task with a HEALTHCHECK is `starting` until it
    /// passes).
    pub state: String,
    pub desired: String,
    /// Unix time of creation, in nanoseconds.
    pub created: i64,
}

/// One task to evaluate: its container-shaped view, and whether it is being stopped.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    pub info: ContainerInfo,
    pub stopping: bool,
}

/// The running tasks of `services` among `tasks`, with their addresses (`addresses`: task id →
/// network name → IP).
pub fn task_infos(
    services: &[ServiceView],
    tasks: &[TaskView],
    addresses: &BTreeMap<String, BTreeMap<String, IpAddr>>,
) -> Vec<TaskInfo> {
    let by_id: BTreeMap<&str, &ServiceView> = services.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut out = Vec::new();
    for t in tasks {
        let Some(svc) = by_id.get(t.service_id.as_str()) else {
            continue;
        };
        if t.state != "running" {
            continue;
        }
        let base = match t.slot {
            Some(slot) => format!("{}.{slot}", svc.name),
            None => format!("{}.{}", svc.name, short(&t.node_id)),
        };
        let stopping = t.desired != "running";
        let name = if stopping {
            format!("{base}.{}", &t.id[..t.id.len().min(6)])
        } else {
            base
        };
        let networks = addresses
            .get(&t.id)
            .map(|n| n.iter().map(|(k, v)| (k.clone(), Some(*v))).collect())
            .unwrap_or_default();
        out.push(TaskInfo {
            info: ContainerInfo {
                id: t.id.clone(),
                name,
                created: t.created,
                labels: svc.labels.clone(),
                running: true,
                paused: false,
                // (Swarm keeps a task `starting` until its HEALTHCHECK passes.)
                health: None,
                networks,
                exposed_ports: Vec::new(),
                published: BTreeMap::new(),
                host_network: false,
            },
            stopping,
        });
    }
    out
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, slot: i64, state: &str, desired: &str) -> TaskView {
        TaskView {
            id: id.into(),
            service_id: "s1".into(),
            slot: Some(slot),
            node_id: "node0123456789".into(),
            state: state.into(),
            desired: desired.into(),
            created: 1,
        }
    }

    #[test]
    fn running_tasks_by_slot_and_the_stopping_ones_apart() {
        let services = vec![ServiceView {
            id: "s1".into(),
            name: "web".into(),
            labels: [("quayside.port".to_string(), "80".to_string())].into(),
        }];
        let tasks = vec![
            task("aaaaaaaaa", 1, "running", "shutdown"),
            task("bbbbbbbbb", 1, "running", "running"),
            task("ccccccccc", 2, "starting", "running"),
            task("ddddddddd", 3, "shutdown", "shutdown"),
            TaskView {
                service_id: "other".into(),
                ..task("eeeeeeeee", 1, "running", "running")
            },
        ];
        let ip: IpAddr = "10.0.1.3".parse().unwrap();
        let addresses = [("bbbbbbbbb".to_string(), [("net".to_string(), ip)].into())].into();
        let infos = task_infos(&services, &tasks, &addresses);
        let names: Vec<(&str, bool)> = infos
            .iter()
            .map(|t| (t.info.name.as_str(), t.stopping))
            .collect();
        assert_eq!(names, [("web.1.aaaaaa", true), ("web.1", false)]);
        assert_eq!(infos[1].info.networks["net"], Some(ip));
        assert_eq!(infos[1].info.labels["quayside.port"], "80");
        let global = TaskView {
            slot: None,
            ..task("fffffffff", 0, "running", "running")
        };
        assert_eq!(
            task_infos(&services, &[global], &addresses)[0].info.name,
            "web.node01234567"
        );
    }
}
