//! What both fronts share per worker: the routing table, the data plane's settings, this
//! worker's backend pools, the retry budget and the request observer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::codec::headers::RequestHead;
use super::plan::{Client, Observe, Plan, Record, Target, Unread};
use super::retry::RetryBudget;
use super::runtime::{Runtime, worker_index};
use super::upstream::Timeouts;
use super::upstream::pool::{self, UpstreamClient, WorkerPool};
use super::{ProxyConfig, ProxyError};
use crate::routing::{Shared, Upstream};

pub struct Forwarder {
    pub(in crate::proxy) shared: Arc<Shared>,
    pub(in crate::proxy) timeouts: Timeouts,
    /// How long an upgraded connection outlives the routing of its backend.
    pub(in crate::proxy) tunnel_grace: Duration,
    pub(in crate::proxy) budget: RetryBudget,
    pub(in crate::proxy) max_body: u64,
    /// Worker threads of all the proxy's listeners: how many pools a backend may need.
    pub(in crate::proxy) workers: usize,
    /// Where each request's record goes.
    pub(in crate::proxy) observer: Option<Arc<dyn Observe>>,
    /// The observer wants each record's [`super::plan::Meta`].
    pub(in crate::proxy) details: bool,
    pub(in crate::proxy) runtime: Arc<Runtime>,
    /// See [`ProxyConfig::park_after`].
    pub(in crate::proxy) park_after: Duration,
    /// See [`ProxyConfig::trusted_proxies`].
    pub(in crate::proxy) trusted: Arc<[crate::types::Cidr]>,
    pub(in crate::proxy) https_port: u16,
    /// Automatic HTTPS's HTTP-01 challenges (none: off).
    pub(in crate::proxy) acme: Option<Arc<super::tls::Obtained>>,
    /// The client of `forward_auth` requests (made at the first one).
    pub(in crate::proxy) auth_client: std::sync::OnceLock<AuthClient>,
    /// This worker's backend pools, swept of idle connections.
    sweep: pool::Sweep,
}

/// `forward_auth`'s HTTP client, for `http://` and `https://` URLs.
pub type AuthClient = HttpClient<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

impl Forwarder {
    pub fn new(
        shared: Arc<Shared>,
        runtime: Arc<Runtime>,
        config: &ProxyConfig,
        workers: usize,
    ) -> Self {
        Forwarder {
            shared,
            runtime,
            park_after: config.park_after,
            trusted: config.trusted_proxies.clone(),
            https_port: config.https_port,
            acme: config.acme.clone(),
            auth_client: std::sync::OnceLock::new(),
            sweep: pool::Sweep::default(),
            workers,
            timeouts: Timeouts {
                connect: config.connect_timeout,
                pool_idle: config.pool_idle_timeout,
                response_header: config.response_header_timeout,
            },
            tunnel_grace: config.shutdown_timeout,
            budget: RetryBudget::default(),
            max_body: config.max_body_size.unwrap_or(u64::MAX),
            observer: config.observer.clone(),
            details: config.observer.as_ref().is_some_and(|o| o.details()),
        }
    }

    /// This worker's pool for the backend, created on its first request.
    pub(in crate::proxy) fn pool<'a>(&self, upstream: &'a Upstream) -> &'a Arc<WorkerPool> {
        upstream
            .slots
            .slot(worker_index(), self.workers)
            .get_or_init(|| Box::new(self.sweep.new_pool(self.timeouts.pool_idle)))
            .downcast_ref::<Arc<WorkerPool>>()
            .expect("only the proxy fills a backend's worker slots, always with its pool")
    }

    /// The h2c client of a backend that speaks HTTP/2: one multiplexed connection.
    pub(in crate::proxy) fn h2_client<'a>(&self, pool: &'a WorkerPool) -> &'a UpstreamClient {
        pool.h2.get_or_init(|| {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(self.timeouts.connect));
            HttpClient::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(self.timeouts.pool_idle)
                .http2_only(true)
                .build(connector)
        })
    }

    /// Hand a request's record to the observer, if one is installed.
    #[inline]
    pub fn observe<'a>(&self, record: impl FnOnce() -> Record<'a>) {
        if let Some(o) = &self.observer {
            o.request(&record());
        }
    }
}

impl Forwarder {
    /// Answer 408 on `stream` (a head stalled) and record it; the answer carries the request id
    /// the record has.
    pub(in crate::proxy) async fn answer_408<S: tokio::io::AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        client: &Client,
        front: super::plan::Front,
    ) {
        use tokio::io::AsyncWriteExt;
        let id = super::codec::headers::new_request_id(super::plan::random_id());
        let mut answer = Vec::with_capacity(128);
        answer.extend_from_slice(
            b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\nx-request-id: ",
        );
        answer.extend_from_slice(&id);
        answer.extend_from_slice(b"\r\n\r\n");
        let sent = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&answer).await?;
            stream.shutdown().await
        })
        .await;
        tracing::debug!(client = %client.ip, sent = ?sent, "request head stalled; answered 408");
        let id = std::str::from_utf8(&id).unwrap_or("");
        self.observe(|| super::plan::unread(front, Unread::TimedOut, client, id));
    }

    /// Record a request hyper refused before it reached quayside (it wrote the answer).
    pub(in crate::proxy) fn refused_by_hyper(&self, client: &Client, status: u16) {
        self.observe(|| {
            super::plan::unread(
                super::plan::Front::Hyper,
                Unread::Malformed(status),
                client,
                "",
            )
        });
    }
}

/// A request after the pipeline's first phase ([`Forwarder::admit`]).
pub enum Admission<'t> {
    /// Routed: the client's address, the target as the path rule reads it, the plan and its
    /// first pick (`None`: nothing to pick).
    Routed(IpAddr, Target<'t>, Plan, Option<Arc<Upstream>>),
    /// Answered before routing (a target the path rule refuses: 400; an ACME challenge).
    Answered(IpAddr, ProxyError),
}

/// The request pipeline's phases, in the order a request meets them: both fronts call these,
/// each applying the decisions in its own form.
impl Forwarder {
    /// The first phase of every request, on either front: who the client is (the peer, or
    /// with `--trusted-proxies` what its `X-Forwarded-For` lines say), the target by the one
    /// path rule, an ACME challenge answered, then the route and the first pick.
    #[inline]
    pub(in crate::proxy) fn admit<'t, 'h>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'h [u8]>,
        (raw_target, host): (&'t str, &str),
        head: &impl RequestHead,
    ) -> Admission<'t> {
        let ip = if self.trusted.is_empty() {
            peer
        } else {
            super::plan::client_ip(peer, forwarded_for, &self.trusted)
        };
        let target = match Target::new(raw_target) {
            Ok(t) => t,
            Err(e) => return Admission::Answered(ip, ProxyError::BadRequest(e.as_str())),
        };
        // (The test inline: the call alone cost every request when automatic HTTPS is off.)
        if self.acme.is_some()
            && let Some(answer) =
                super::plan::acme_answer(self.acme.as_deref(), host, target.forward_path())
        {
            return Admission::Answered(ip, answer);
        }
        let (plan, first) = Plan::new(&self.shared.table.load(), host, &target, head, ip);
        Admission::Routed(ip, target, plan, first)
    }

    /// The service's middlewares' verdict on a request (`m`), the same on both fronts: who
    /// asks (address as [`Forwarder::admit`] found it, over TLS or not), for which host and
    /// target, with which credentials.
    #[inline]
    pub(in crate::proxy) fn gate(
        &self,
        m: &crate::middleware::Middleware,
        (client, tls): (IpAddr, bool),
        (host, target): (&str, &str),
        authorization: Option<&[u8]>,
        now: std::time::Instant,
    ) -> crate::middleware::Gate {
        let ask = crate::middleware::Ask {
            client,
            tls,
            host,
            target,
            authorization,
            https_port: self.https_port,
        };
        m.gate(&ask, now)
    }

    /// A routed request is about to be forwarded: it earns the retry budget its share.
    #[inline]
    pub(in crate::proxy) fn forwarding(&self) {
        self.budget.deposit();
    }

    /// An attempt on `upstream` failed with `err`: the backend's passive health is told, and
    /// the answer is where the request goes next, if anywhere (see [`Plan::failed`]), the same
    /// on both fronts.
    #[inline]
    pub(in crate::proxy) fn next_after(
        &self,
        plan: &mut Plan,
        (err, upstream): (&ProxyError, Arc<Upstream>),
        (replayable, idempotent): (bool, bool),
    ) -> Option<Arc<Upstream>> {
        plan.failed(
            err,
            upstream,
            (&self.budget, &self.shared),
            replayable,
            idempotent,
        )
    }

    /// A request the proxy answers itself with an error (`plan`: its plan, if it was routed):
    /// logged and recorded here, once for both fronts; each writes the answer in its own form.
    #[cold]
    pub(in crate::proxy) fn refused(
        &self,
        front: super::plan::Front,
        e: &ProxyError,
        plan: Option<&Plan>,
        meta: Option<super::plan::Meta<'_>>,
    ) {
        log_failure(e);
        self.observe(|| super::plan::refused(front, e, plan, meta));
    }
}

/// Log a request that was not forwarded: a warning for a backend's failure, a debug line for
/// what the client or the table made of it.
fn log_failure(e: &ProxyError) {
    match e {
        ProxyError::NoBackend { .. }
        | ProxyError::AllDown { .. }
        | ProxyError::BadRequest(_)
        | ProxyError::Answered(_) => {
            tracing::debug!(error = %e, "request not forwarded")
        }
        _ => tracing::warn!(error = %e, "request failed"),
    }
}
