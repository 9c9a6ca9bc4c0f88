//! Automatic HTTPS: a certificate from an ACME CA for every exact host name in the services'
//! rules, answered by HTTP-01 on the plain listener or TLS-ALPN-01 on the TLS listener, kept
//! beside the state file, reused after a restart and renewed two thirds into its life.
//!
//! One task ([`Acme::run`]) owns the schedule: once a second it reads the names the registry's
//! services ask for, leaves out those a configured certificate (`--tls-cert`) covers, and orders
//! whichever is due, up to four at once, each name by itself. A failed order backs off for that name only
//! ([`schedule`]); the CA's rate limits are kept on this side ([`schedule::Window`]). What it
//! obtains goes to the proxy through [`Obtained`], read lock-free per handshake.

pub mod client;
pub mod keep;
pub mod schedule;
pub mod store;
pub mod swarm;
pub mod x509;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::proxy::tls::{Obtained, Tls, certified_key};
use keep::Keep;
use schedule::{Entry, Held, Ledger, Outcome, Want, Window};

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How long one order may take, from asking to the certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(180);
/// With several replicas: how long a challenge is up before the CA is told to check it, so
/// every replica (following the swarm once a second) answers it.
const PROPAGATION: Duration = Duration::from_secs(2);
/// Orders in flight at once (each name is ordered by itself, so one failing holds up none).
const PARALLEL_ORDERS: usize = 4;
/// With several replicas: how soon a replica looks again at a name another one is ordering.
const ELSEWHERE_RECHECK: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    Http01,
    TlsAlpn01,
}

/// The `--acme-*` settings.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    pub email: String,
    pub directory: String,
    /// Trust this CA (PEM) for the ACME server's HTTPS instead of the system's roots.
    pub ca_cert: Option<std::path::PathBuf>,
    pub challenge: Challenge,
}

/// The schedule's state: each name's entry, and the rate-limit windows.
struct State {
    entries: BTreeMap<String, Entry>,
    /// Names no service asks for any more, kept with their backoff: a container that comes
    /// and goes does not reset a failing name's wait.
    dormant: BTreeMap<String, Entry>,
    /// New orders of the account.
    orders: Window,
    /// Certificates issued per name.
    issued: BTreeMap<String, Window>,
    /// The names being ordered now.
    ordering: std::collections::BTreeSet<String>,
    /// The outcomes and the account's pause as kept (the windows above hold the counts).
    ledger: Ledger,
    issued_total: u64,
    failed_total: u64,
}

/// Automatic HTTPS, shared by its task, the admin API and the metrics.
pub struct Acme {
    pub config: AcmeConfig,
    keep: Keep,
    obtained: Arc<Obtained>,
    state: Mutex<State>,
    wake: Notify,
    /// The routing table generation whose hosts were last reconciled (kept certificates
    /// loaded): `/readyz` waits for it.
    reconciled: std::sync::atomic::AtomicU64,
    /// The kept ledger was read (before any name is taken in: its waits are the names').
    ledger_read: tokio::sync::OnceCell<()>,
}

/// Why a renewal was not started.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(
        "{0} gets no certificate from ACME (not an exact host name of a service's rules, or served by a configured certificate); GET /api/v1/tls lists the names"
    )]
    NotOurs(String),
    #[error(
        "{name} was issued {count} certificates in the last 7 days, the CA's limit for one name; the next renewal is possible at {at}"
    )]
    Limit {
        name: String,
        count: usize,
        at: String,
    },
}

/// The validity of the first certificate of a PEM chain.
fn leaf_validity(chain: &[u8]) -> Option<(SystemTime, SystemTime)> {
    use rustls_pki_types::pem::PemObject;
    let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(chain)
        .next()?
        .ok()?;
    x509::validity(&leaf)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Acme {
    /// What it obtains is kept in `keep` and served through `obtained`.
    pub fn new(config: AcmeConfig, keep: Keep, obtained: Arc<Obtained>) -> Acme {
        Acme {
            keep,
            config,
            obtained,
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                dormant: BTreeMap::new(),
                orders: schedule::orders_window(),
                issued: BTreeMap::new(),
                ordering: Default::default(),
                ledger: Ledger::default(),
                issued_total: 0,
                failed_total: 0,
            }),
            wake: Notify::new(),
            reconciled: std::sync::atomic::AtomicU64::new(0),
            ledger_read: tokio::sync::OnceCell::new(),
        }
    }

    /// Load the kept certificates of the names the services ask for now: at start, before
    /// the TLS listener accepts (a restart serves them at once), and after every change of
    /// the routing table ([`Acme::run`]).
    pub async fn reconcile_now(&self, shared: &crate::routing::Shared, tls: &Tls) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ledger_read
            .get_or_init(|| async { self.load_ledger().await })
            .await;
        let generation = shared.generation.load(Relaxed);
        let registry = shared.registry.load_full();
        let wanted = schedule::wanted(
            registry
                .services_in_force()
                .flat_map(|(_, s)| s.hosts.iter().map(String::as_str)),
        );
        self.reconcile(&wanted, tls).await;
        self.reconciled.fetch_max(generation, Relaxed);
    }

    /// Whether the kept certificates of the hosts of routing table `generation` are loaded.
    pub fn caught_up(&self, generation: u64) -> bool {
        self.reconciled.load(std::sync::atomic::Ordering::Relaxed) >= generation
    }

    /// Where it keeps what it obtains, for logs.
    pub fn kept_in(&self) -> String {
        self.keep.describe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // (Only this module's short, panic-free sections hold it.)
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Orders issued and failed since start.
    pub fn orders(&self) -> (u64, u64) {
        let s = self.lock();
        (s.issued_total, s.failed_total)
    }

    /// Renew `name` (or every name ACME serves) at once, whatever its certificate's age.
    /// Returns the names to be renewed.
    pub fn renew(&self, name: Option<&str>) -> Result<Vec<String>, RenewError> {
        let now = SystemTime::now();
        let mut guard = self.lock();
        let s = &mut *guard;
        let names: Vec<String> = match name {
            Some(n) => {
                let n = n.trim_end_matches('.').to_ascii_lowercase();
                if !s.entries.contains_key(&n) {
                    return Err(RenewError::NotOurs(n));
                }
                vec![n]
            }
            None => s.entries.keys().cloned().collect(),
        };
        for n in &names {
            if let Some(w) = s.issued.get_mut(n)
                && let Some(until) = w.full_until(now)
            {
                return Err(RenewError::Limit {
                    name: n.clone(),
                    count: w.len(now),
                    at: rfc3339(until),
                });
            }
        }
        for n in &names {
            if let Some(e) = s.entries.get_mut(n) {
                e.forced = true;
                e.not_before = None;
            }
        }
        drop(guard);
        self.wake.notify_one();
        Ok(names)
    }

    /// Keep the schedule's names to the exact names `wanted` asks for that no configured
    /// certificate covers; a name new to it starts from its kept certificate, if any.
    async fn reconcile(&self, wanted: &BTreeMap<String, Want>, tls: &Tls) {
        let ours: std::collections::BTreeSet<&String> = wanted
            .iter()
            .filter(|(n, w)| **w == Want::Order && tls.covering(n).is_none())
            .map(|(n, _)| n)
            .collect();
        let new: Vec<String> = {
            let mut guard = self.lock();
            let s = &mut *guard;
            let gone: Vec<String> = s
                .entries
                .keys()
                .filter(|n| !ours.contains(n))
                .cloned()
                .collect();
            for n in gone {
                if let Some(e) = s.entries.remove(&n) {
                    s.dormant.insert(n, e);
                }
            }
            let mut new = Vec::new();
            for n in ours {
                if s.entries.contains_key(n) {
                    continue;
                }
                match s.dormant.remove(n) {
                    Some(e) => {
                        s.entries.insert(n.clone(), e);
                    }
                    None => new.push(n.clone()),
                }
            }
            new
        };
        for n in new {
            let mut entry = Entry::default();
            self.lock().ledger.resume(&n, &mut entry);
            match self.keep.cert(&n).await {
                Ok(Some((chain, key))) => match self.install(&n, &chain, &key) {
                    Ok(held) => {
                        tracing::info!(name = %n, not_after = %rfc3339(held.not_after), kept_in = %self.keep.describe(), "serving the kept certificate");
                        entry.held = Some(held);
                    }
                    Err(e) => {
                        tracing::warn!(name = %n, error = %e, kept_in = %self.keep.describe(), "the kept certificate cannot be used; ordering a new one");
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(name = %n, error = %e, "cannot read the kept certificate; ordering a new one")
                }
            }
            self.lock().entries.entry(n).or_insert(entry);
        }
    }

    /// Serve a chain and key (PEM) for `name`; its validity.
    fn install(&self, name: &str, chain: &[u8], key: &[u8]) -> Result<Held, String> {
        let certified = certified_key(chain, key)?;
        let leaf = certified.cert.first().ok_or("no certificate")?;
        let (not_before, not_after) =
            x509::validity(leaf).ok_or("the certificate's validity cannot be read")?;
        if not_after <= SystemTime::now() {
            return Err(format!("it expired at {}", rfc3339(not_after)));
        }
        self.obtained.set_cert(name, Some(certified));
        Ok(Held {
            not_before,
            not_after,
        })
    }

    /// The first due name the rate limits allow, marked as being ordered; a name the limits
    /// hold back waits until they allow it.
    fn next_due(&self, now: SystemTime) -> Option<String> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let account_full = s.orders.full_until(now);
        for (name, e) in s.entries.iter_mut() {
            if e.next_order() > now || s.ordering.contains(name) {
                continue;
            }
            if let Some(until) = account_full {
                e.not_before = Some(until);
                e.last_error = Some(format!(
                    "waiting for the CA's limit of {} new orders per {} hours",
                    s.orders.max,
                    s.orders.span.as_secs() / 3600
                ));
                continue;
            }
            let issued = s
                .issued
                .entry(name.clone())
                .or_insert_with(schedule::duplicates_window);
            if let Some(until) = issued.full_until(now) {
                e.not_before = Some(until);
                e.forced = false;
                e.last_error = Some(format!(
                    "waiting for the CA's limit of {} certificates per name per 7 days",
                    issued.max
                ));
                continue;
            }
            // (Counted when started, so orders started together keep to the limit; a name
            // another replica turns out to be ordering counts too, on the safe side.)
            s.orders.record(now);
            s.ordering.insert(name.clone());
            return Some(name.clone());
        }
        None
    }

    /// Order `name`'s certificate and record the outcome.
    async fn order_one(&self, name: &str, account: &tokio::sync::OnceCell<instant_acme::Account>) {
        // With several replicas, one orders a name; the others get its certificate from the
        // swarm (`follow`).
        match self.keep.claim(name).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(name = %name, "another replica is ordering this name");
                let mut s = self.lock();
                s.ordering.remove(name);
                if let Some(e) = s.entries.get_mut(name) {
                    e.not_before = Some(SystemTime::now() + ELSEWHERE_RECHECK);
                }
                return;
            }
            Err(e) => {
                tracing::warn!(name = %name, error = %e, "cannot take the order of this name; trying again shortly");
                let mut s = self.lock();
                s.ordering.remove(name);
                if let Some(e) = s.entries.get_mut(name) {
                    e.not_before = Some(SystemTime::now() + ELSEWHERE_RECHECK);
                }
                return;
            }
        }
        // The order counts against the account's limit from now, also if quayside is stopped
        // before it ends.
        self.keep_ledger().await;
        tracing::info!(name = %name, directory = %self.config.directory, challenge = ?self.config.challenge, "ordering a certificate");
        let result = tokio::time::timeout(ORDER_TIMEOUT, async {
            let a = account.get_or_try_init(|| self.account()).await?;
            let share = self.keep.swarm().map(|k| (k, PROPAGATION));
            client::order(a, name, self.config.challenge, &self.obtained, share).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(client::OrderError::Other(format!(
                "no certificate within {}s",
                ORDER_TIMEOUT.as_secs()
            )))
        });
        let now = SystemTime::now();
        let outcome = match result {
            Ok((chain, key)) => match self.install(name, chain.as_bytes(), key.as_bytes()) {
                Ok(held) => {
                    if let Err(e) = self
                        .keep
                        .save_cert(name, chain.as_bytes(), key.as_bytes())
                        .await
                    {
                        // Served now; ordered again after a restart.
                        tracing::error!(name = %name, error = %e, "cannot keep the certificate; it is served but will be ordered again after a restart");
                    }
                    Ok(held)
                }
                Err(e) => Err(client::OrderError::Other(format!(
                    "the issued certificate: {e}"
                ))),
            },
            Err(e) => Err(e),
        };
        self.keep.release(name).await;
        self.record(name, now, outcome);
        self.keep_ledger().await;
    }

    /// An order's outcome, in the schedule and in the ledger.
    fn record(&self, name: &str, now: SystemTime, outcome: Result<Held, client::OrderError>) {
        let mut guard = self.lock();
        let s = &mut *guard;
        s.ordering.remove(name);
        match outcome {
            Ok(held) => {
                tracing::info!(name = %name, not_after = %rfc3339(held.not_after), renew_at = %rfc3339(held.renew_at()), "certificate obtained");
                s.issued_total += 1;
                s.issued
                    .entry(name.to_owned())
                    .or_insert_with(schedule::duplicates_window)
                    .record(now);
                if let Some(e) = s.entries.get_mut(name) {
                    e.succeeded(held);
                }
            }
            Err(err) => {
                s.failed_total += 1;
                let rate_limited = err.rate_limited();
                if rate_limited {
                    // An account-wide limit, as far as this side can tell: the others wait too.
                    let until = now + schedule::RATE_LIMITED_WAIT;
                    schedule::pause_all(s.entries.values_mut(), until);
                    let until = Some(schedule::millis(until));
                    s.ledger.paused_until = s.ledger.paused_until.max(until);
                }
                if let Some(e) = s.entries.get_mut(name) {
                    e.failed(now, err.to_string(), rate_limited);
                    let retry = e.not_before.map(rfc3339).unwrap_or_default();
                    let serving = if e.held.is_some() {
                        "the current certificate is still served"
                    } else {
                        "the name has no certificate yet"
                    };
                    tracing::warn!(name = %name, error = %err, retry_at = %retry, "could not obtain a certificate ({serving}); check that the CA reaches this host on port 80 (http-01) or 443 (tls-alpn-01) for this name");
                }
            }
        }
        if let Some(e) = s.entries.get(name) {
            let outcome = Outcome {
                at: schedule::millis(now),
                failures: e.failures,
                retry_at: e
                    .not_before
                    .filter(|_| e.failures > 0)
                    .map(schedule::millis),
                error: e.last_error.clone().filter(|_| e.failures > 0),
            };
            s.ledger.outcomes.insert(name.to_owned(), outcome);
        }
    }

    /// The counts, outcomes and pause as this side knows them.
    fn ledger(&self, now: SystemTime) -> Ledger {
        let mut guard = self.lock();
        let s = &mut *guard;
        let mut l = s.ledger.clone();
        l.orders = s.orders.times(now).map(schedule::millis).collect();
        l.issued = s
            .issued
            .iter_mut()
            .map(|(n, w)| (n.clone(), w.times(now).map(schedule::millis).collect()))
            .collect();
        l
    }

    /// Take in a kept ledger: its counts, outcomes and pause join this side's.
    fn adopt(&self, kept: &Ledger) {
        let now = SystemTime::now();
        let mut merged = self.ledger(now);
        merged.merge(kept);
        merged.prune(now);
        let times = |v: &Vec<u64>| {
            v.iter()
                .map(|t| schedule::from_millis(*t))
                .collect::<Vec<_>>()
        };
        let mut s = self.lock();
        s.orders = schedule::orders_window().with_times(times(&merged.orders));
        s.issued = merged
            .issued
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    schedule::duplicates_window().with_times(times(v)),
                )
            })
            .collect();
        s.ledger = merged;
    }

    /// Read the kept ledger (at start: the counts and waits from before a restart).
    async fn load_ledger(&self) {
        match self.keep.ledger().await {
            Ok(None) => {}
            Ok(Some(json)) => match serde_json::from_slice::<Ledger>(&json) {
                Ok(kept) => self.adopt(&kept),
                Err(e) => {
                    tracing::warn!(kept_in = %self.keep.describe(), error = %e, "the rate limits' ledger cannot be read; counting the CA's limits from now (it is written again after the next order)")
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the rate limits' ledger; counting the CA's limits from now")
            }
        }
    }

    /// Keep the ledger, merged with the kept one (another replica's orders count too).
    async fn keep_ledger(&self) {
        if let Ok(Some(json)) = self.keep.ledger().await
            && let Ok(kept) = serde_json::from_slice::<Ledger>(&json)
        {
            self.adopt(&kept);
        }
        let now = SystemTime::now();
        let mut mine = self.ledger(now);
        mine.prune(now);
        // (Plain data: serializing it cannot fail.)
        let json = serde_json::to_vec_pretty(&mine).unwrap_or_default();
        if let Err(e) = self.keep.save_ledger(&json).await {
            tracing::error!(kept_in = %self.keep.describe(), error = %e, "cannot keep the rate limits' ledger; after a restart the CA's limits are counted from then");
        }
    }

    /// The kept account, or a new one, kept (with several replicas: the one kept first).
    async fn account(&self) -> Result<instant_acme::Account, client::OrderError> {
        let kept =
            self.keep.account().await.map_err(|e| {
                client::OrderError::Other(format!("cannot read the ACME account: {e}"))
            })?;
        let (a, new) = client::account(&self.config, kept.as_deref()).await?;
        let Some(json) = new else {
            return Ok(a);
        };
        let kept =
            self.keep.save_account(&json).await.map_err(|e| {
                client::OrderError::Other(format!("cannot keep the ACME account: {e}"))
            })?;
        if kept == json {
            tracing::info!(kept_in = %self.keep.describe(), "ACME account created");
            return Ok(a);
        }
        // Another replica kept one first: that one, then.
        Ok(client::account(&self.config, Some(&kept)).await?.0)
    }

    /// With several replicas: once a second, serve the certificates another replica obtained
    /// and answer the challenges it has up, until `stop`.
    async fn follow(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(keep) = self.keep.swarm().cloned() else {
            return;
        };
        let mut followed_http: std::collections::HashSet<String> = Default::default();
        let mut followed_alpn: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        // Each name's certificate generation looked at already (parsed once, not every second).
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        loop {
            match keep.snapshot().await {
                Ok(snap) => {
                    for (name, (generation, (chain, key))) in &snap.certs {
                        if seen.get(name) == Some(generation) {
                            continue;
                        }
                        let held = self.lock().entries.get(name).map(|e| e.held);
                        let Some(held) = held else { continue };
                        seen.insert(name.clone(), *generation);
                        let Some((_, not_after)) = leaf_validity(chain) else {
                            continue;
                        };
                        if held.is_some_and(|h| h.not_after >= not_after) {
                            continue;
                        }
                        if let Ok(h) = self.install(name, chain, key) {
                            tracing::info!(name = %name, not_after = %rfc3339(h.not_after), "serving the certificate another replica obtained");
                            if let Some(e) = self.lock().entries.get_mut(name) {
                                e.succeeded(h);
                            }
                        }
                    }
                    for (token, shared) in &snap.http01 {
                        // `name\nkey authorization` (one without a name is not answered).
                        let Some((name, answer)) = shared.split_once('\n') else {
                            continue;
                        };
                        if followed_http.insert(token.clone()) {
                            let answer = answer.to_owned().into_bytes().into();
                            self.obtained.set_http(token, Some((name, answer)));
                        }
                    }
                    followed_http.retain(|t| {
                        let keep = snap.http01.contains_key(t);
                        if !keep {
                            self.obtained.set_http(t, None);
                        }
                        keep
                    });
                    for (name, digest) in &snap.alpn {
                        if followed_alpn.get(name) != Some(digest)
                            && let Ok(cert) = client::alpn_cert(name, digest)
                        {
                            self.obtained.set_alpn(name, Some(cert));
                            followed_alpn.insert(name.clone(), digest.clone());
                        }
                    }
                    followed_alpn.retain(|n, _| {
                        let keep = snap.alpn.contains_key(n);
                        if !keep {
                            self.obtained.set_alpn(n, None);
                        }
                        keep
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the swarm's ACME configs; trying again")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Keep the certificates of the services' names until `stop` turns true.
    pub async fn run(
        self: Arc<Self>,
        shared: Arc<crate::routing::Shared>,
        tls: Arc<Tls>,
        mut stop: watch::Receiver<bool>,
    ) {
        let account = tokio::sync::OnceCell::new();
        let follower = tokio::spawn(self.clone().follow(stop.clone()));
        let mut orders = futures_util::stream::FuturesUnordered::new();
        // Every routing change wakes it: a host that appears (a container's labels) has its
        // kept certificate served, or its order started, at once.
        let (_, mut changed) = shared.events.subscribe(Some(u64::MAX));
        loop {
            self.reconcile_now(&shared, &tls).await;
            if *stop.borrow() {
                let _ = follower.await;
                return;
            }
            while orders.len() < PARALLEL_ORDERS {
                match self.next_due(SystemTime::now()) {
                    Some(name) => orders.push(async {
                        let name = name;
                        self.order_one(&name, &account).await
                    }),
                    None => break,
                }
            }
            // Once a second (or when an order ends): a name new to the services is ordered
            // within that.
            tokio::select! {
                Some(()) = futures_util::StreamExt::next(&mut orders), if !orders.is_empty() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.wake.notified() => {}
                _ = changed.recv() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// One name's certificate, as `GET /api/v1/tls` and the metrics show it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct NameView {
    pub name: String,
    /// `file` (a configured certificate), `acme`, or `none`.
    pub source: &'static str,
    /// `valid`, `ordering`, `pending` (no certificate yet), `failed` (the last order failed;
    /// a held certificate is still served), `needs_certificate` (a wildcard or an automatic
    /// HTTPS that is off) or `skipped` (not a name a CA certifies).
    pub state: &'static str,
    /// The configured certificate's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// When the certificate will be renewed (ACME).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<String>,
    /// The next order after a failure (ACME).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// Orders failed in a row.
    #[serde(skip_serializing_if = "is_zero")]
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The expiry as seconds since the epoch (for the metrics).
    #[serde(skip)]
    pub expiry_unix: Option<i64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl NameView {
    fn new(name: String, source: &'static str, state: &'static str) -> NameView {
        NameView {
            name,
            source,
            state,
            file: None,
            not_before: None,
            not_after: None,
            renew_at: None,
            retry_at: None,
            failures: 0,
            last_error: None,
            expiry_unix: None,
        }
    }

    fn validity(mut self, not_before: SystemTime, not_after: SystemTime) -> NameView {
        self.not_before = Some(rfc3339(not_before));
        self.not_after = Some(rfc3339(not_after));
        self.expiry_unix = Some(unix(not_after));
        self
    }
}

/// Every name: the configured certificates' names and the services' host names, each with
/// where its certificate comes from.
pub fn names(hosts: &[&str], tls: Option<&Tls>, acme: Option<&Acme>) -> Vec<NameView> {
    let mut out: BTreeMap<String, NameView> = BTreeMap::new();
    // Without a TLS listener (no certificate given, no automatic HTTPS) nothing is served over
    // HTTPS, so no name lacks a certificate.
    if tls.is_none() && acme.is_none() {
        return Vec::new();
    }
    if let Some(tls) = tls {
        for (path, leaf) in tls.configured() {
            let validity = x509::validity(&leaf);
            for name in x509::dns_names(&leaf) {
                let mut v = NameView::new(name.clone(), "file", "valid");
                v.file = Some(path.display().to_string());
                if let Some((nb, na)) = validity {
                    v = v.validity(nb, na);
                }
                out.entry(name).or_insert(v);
            }
        }
    }
    let state = acme.map(|a| a.lock());
    for (name, want) in schedule::wanted(hosts.iter().copied()) {
        if out.contains_key(&name) {
            continue;
        }
        // A configured (wildcard) certificate serves the name.
        if want == Want::Order
            && let Some((path, leaf)) = tls.and_then(|t| t.covering(&name))
        {
            let mut v = NameView::new(name.clone(), "file", "valid");
            v.file = Some(path.display().to_string());
            if let Some((nb, na)) = x509::validity(&leaf) {
                v = v.validity(nb, na);
            }
            out.insert(name, v);
            continue;
        }
        let v = match (&want, &state) {
            (Want::Skip(_), _) => NameView::new(name.clone(), "none", "skipped"),
            (Want::Wildcard, _) => NameView::new(name.clone(), "none", "needs_certificate"),
            (Want::Order, None) => NameView::new(name.clone(), "none", "needs_certificate"),
            (Want::Order, Some(s)) => match s.entries.get(&name) {
                None => NameView::new(name.clone(), "none", "pending"),
                Some(e) => {
                    let st = if s.ordering.contains(&name) {
                        "ordering"
                    } else if e.failures > 0 {
                        "failed"
                    } else if e.held.is_some() {
                        "valid"
                    } else {
                        "pending"
                    };
                    let mut v = NameView::new(name.clone(), "acme", st);
                    if let Some(h) = e.held {
                        v = v.validity(h.not_before, h.not_after);
                        v.renew_at = Some(rfc3339(h.renew_at()));
                    }
                    if e.failures > 0 {
                        v.retry_at = e.not_before.map(rfc3339);
                    }
                    v.failures = e.failures;
                    v.last_error = e.last_error.clone();
                    v
                }
            },
        };
        let mut v = v;
        if let Want::Skip(reason) = want {
            v.last_error = Some(reason.to_owned());
        } else if want == Want::Wildcard {
            v.last_error = Some(
                "a wildcard name: give a certificate for it with --tls-cert (ACME wildcards need DNS-01)"
                    .into(),
            );
        } else if state.is_none() {
            v.last_error = Some(
                "no certificate covers it; give one with --tls-cert or turn on --acme-email".into(),
            );
        }
        out.insert(name, v);
    }
    out.into_values().collect()
}
