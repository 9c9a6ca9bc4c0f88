//! The routing table: an immutable snapshot built from the registry and read per request.
//!
//! [`RoutingTable::build`] is pure. The data plane loads the current table from an
//! `ArcSwap` (no lock), finds the service with [`RoutingTable::route`] and asks its balancer for
//! a backend.

mod matcher;

pub use matcher::Matcher;

use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::Authority;

use crate::balance::Balancer;
use crate::registry::{AdminState, DEFAULT_SERVICE, Registry};

/// A backend as the data plane sees it.
#[derive(Debug)]
pub struct Upstream {
    pub no: String,
    pub addr: SocketAddr,
    /// `ip:port`, ready for the upstream request URI.
    pub authority: Authority,
}

/// One service: its routable backends and how to pick among them.
#[derive(Debug)]
pub struct ServiceRoute {
    pub name: String,
    /// Prefix removed from the path before forwarding.
    pub strip_prefix: Option<String>,
    pub backends: Vec<Arc<Upstream>>,
    pub balancer: Balancer,
}

impl ServiceRoute {
    #[inline]
    pub fn pick(&self) -> Option<&Arc<Upstream>> {
        self.balancer.pick().map(|i| &self.backends[i])
    }

    /// A pick that is none of `tried` (for a retry), if the service has one.
    pub fn pick_other(&self, tried: &[Arc<Upstream>]) -> Option<&Arc<Upstream>> {
        (0..self.backends.len())
            .filter_map(|_| self.pick())
            .find(|u| !tried.iter().any(|t| Arc::ptr_eq(t, u)))
    }
}

#[derive(Debug)]
pub struct RoutingTable {
    services: Vec<Arc<ServiceRoute>>,
    matcher: Matcher,
    default: usize,
}

impl RoutingTable {
    /// An empty table: every request gets 503 from the `default` service.
    pub fn empty() -> Self {
        Self::build(&Registry::new())
    }

    pub fn build(reg: &Registry) -> Self {
        let names = reg.service_names();
        let index: std::collections::HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let index_of = |name: &str| index.get(name).copied();
        let mut members: Vec<Vec<(Arc<Upstream>, u32)>> = vec![Vec::new(); names.len()];
        for e in reg.entries() {
            if e.spec.state != AdminState::Active {
                continue;
            }
            let Some(i) = index_of(&e.spec.service) else {
                continue;
            };
            let addr = e.spec.socket_addr();
            let authority: Authority = addr
                .to_string()
                .parse()
                .expect("a socket address is a valid authority");
            members[i].push((
                Arc::new(Upstream {
                    no: e.spec.no.clone(),
                    addr,
                    authority,
                }),
                e.spec.weight,
            ));
        }
        let mut rules = Vec::new();
        let services: Vec<Arc<ServiceRoute>> = names
            .iter()
            .zip(members)
            .enumerate()
            .map(|(i, (name, members))| {
                let (cfg, by_operator) = reg.service_config(name);
                for h in cfg.hosts.iter().map(Some).chain(
                    cfg.hosts
                        .is_empty()
                        .then_some(None)
                        .filter(|_| cfg.path_prefix.is_some()),
                ) {
                    let rule = (h.cloned(), cfg.path_prefix.clone().unwrap_or_default(), i);
                    rules.push((!by_operator, rule));
                }
                let weights: Vec<u32> = members.iter().map(|(_, w)| *w).collect();
                Arc::new(ServiceRoute {
                    name: name.clone(),
                    strip_prefix: cfg.path_prefix.filter(|_| cfg.strip_prefix),
                    backends: members.into_iter().map(|(u, _)| u).collect(),
                    balancer: Balancer::build(cfg.lb, &weights),
                })
            })
            .collect();
        // Operators' rules first: on an identical rule the matcher keeps the first.
        rules.sort_by_key(|(from_labels, _)| *from_labels);
        let rules = rules.into_iter().map(|(_, r)| r).collect();
        let default = index_of(DEFAULT_SERVICE).expect("default service always exists");
        RoutingTable {
            services,
            matcher: Matcher::new(rules),
            default,
        }
    }

    /// The service for a request to `host` (no port, any case) and `path`.
    #[inline]
    pub fn route(&self, host: &str, path: &str) -> &Arc<ServiceRoute> {
        let i = self.matcher.find(host, path).unwrap_or(self.default);
        &self.services[i]
    }

    pub fn service(&self, name: &str) -> Option<&Arc<ServiceRoute>> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{BackendSpec, Command, ServiceConfig};

    fn add(r: &mut Registry, no: &str, port: u16, service: &str, weight: u32) {
        r.apply(Command::Upsert(BackendSpec {
            no: no.into(),
            addr: "127.0.0.1".parse().unwrap(),
            port,
            weight,
            service: service.into(),
            state: AdminState::Active,
        }))
        .unwrap();
    }

    #[test]
    fn build_routes_by_host_and_skips_inactive() {
        let mut r = Registry::new();
        add(&mut r, "a", 1, "default", 1);
        add(&mut r, "b", 2, "api", 1);
        add(&mut r, "c", 3, "api", 1);
        r.apply(Command::SetState {
            no: "c".into(),
            state: AdminState::Draining,
        })
        .unwrap();
        r.apply(Command::PutService {
            name: "api".into(),
            config: ServiceConfig {
                hosts: vec!["api.example.com".into()],
                ..Default::default()
            },
        })
        .unwrap();
        let t = RoutingTable::build(&r);
        let s = t.route("api.example.com", "/x");
        assert_eq!(s.name, "api");
        assert_eq!(s.backends.len(), 1);
        assert_eq!(s.pick().unwrap().no, "b");
        assert_eq!(t.route("other", "/").name, "default");
        assert_eq!(
            t.route("other", "/").pick().unwrap().authority,
            "127.0.0.1:1"
        );
    }

    #[test]
    fn empty_table_has_default_without_backends() {
        let t = RoutingTable::empty();
        let s = t.route("x", "/");
        assert_eq!(s.name, "default");
        assert!(s.pick().is_none());
    }
}
