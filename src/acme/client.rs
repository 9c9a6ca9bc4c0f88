//! One order with the ACME server (instant-acme): the account, the challenge set up in
//! [`Obtained`] for the proxy's listeners to answer, and the certificate fetched.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use super::{AcmeConfig, Challenge};
use crate::proxy::tls::{Obtained, certified_key};

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("the ACME server {directory} could not be used: {reason}")]
    Account { directory: String, reason: String },
    #[error("the CA refused the order: {0}")]
    Refused(String),
    #[error(
        "the CA offers no {0} challenge for this name; try --acme-challenge with the other type"
    )]
    NoChallenge(&'static str),
    #[error("validation failed: {0}")]
    Invalid(String),
    #[error("{0}")]
    Other(String),
}

impl OrderError {
    /// The CA said it is rate-limiting this account or name.
    pub fn rate_limited(&self) -> bool {
        self.to_string().contains("rateLimited")
    }
}

fn other(e: impl std::fmt::Display) -> OrderError {
    OrderError::Other(e.to_string())
}

/// The CA's problem document as its detail and type, else the error's text.
fn said(e: instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => match (p.detail, p.r#type) {
            (Some(d), Some(t)) => format!("{d} ({t})"),
            (Some(d), None) => d,
            (None, t) => t.unwrap_or_else(|| "the CA gave no reason".into()),
        },
        e => chain(&e),
    }
}

/// An error and its causes on one line (hyper's "client error (Connect)" says little alone).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The account: the stored one (credentials JSON), or a new one, returned with its credentials
/// to store.
pub async fn account(
    config: &AcmeConfig,
    stored: Option<&[u8]>,
) -> Result<(Account, Option<Vec<u8>>), OrderError> {
    let fail = |reason: String| OrderError::Account {
        directory: config.directory.clone(),
        reason,
    };
    let builder = match &config.ca_cert {
        Some(pem) => Account::builder_with_root(pem),
        None => Account::builder(),
    }
    .map_err(|e| fail(said(e)))?;
    if let Some(json) = stored {
        let creds = serde_json::from_slice(json)
            .map_err(|e| fail(format!("the stored account cannot be read: {e}")))?;
        let account = builder
            .from_credentials(creds)
            .await
            .map_err(|e| fail(said(e)))?;
        return Ok((account, None));
    }
    let contact = format!("mailto:{}", config.email);
    let (account, creds) = builder
        .create(
            &NewAccount {
                contact: &[&contact],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            None,
        )
        .await
        .map_err(|e| fail(said(e)))?;
    let json = serde_json::to_vec_pretty(&creds).map_err(|e| fail(e.to_string()))?;
    Ok((account, Some(json)))
}

/// A certificate for `name`: its chain and key as PEM. With `share` (several replicas), the
/// challenge is also put up in the swarm, that long before the CA is told to check it.
pub async fn order(
    account: &Account,
    name: &str,
    challenge: Challenge,
    obtained: &Obtained,
    share: Option<(&super::swarm::SwarmKeep, Duration)>,
) -> Result<(String, String), OrderError> {
    let ids = [Identifier::Dns(name.to_owned())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| OrderError::Refused(said(e)))?;
    // What was put up for the CA to see, taken down whatever the outcome.
    let mut tokens = Vec::new();
    let mut shared_alpn = false;
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(other)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(OrderError::Invalid(format!(
                        "the authorization is {other:?}"
                    )));
                }
            }
            let (kind, label) = match challenge {
                Challenge::Http01 => (ChallengeType::Http01, "http-01"),
                Challenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
            };
            let mut ch = authz
                .challenge(kind)
                .ok_or(OrderError::NoChallenge(label))?;
            let key_auth = ch.key_authorization();
            match challenge {
                Challenge::Http01 => {
                    let token = ch.token.clone();
                    let answer = key_auth.as_str().to_owned();
                    obtained.set_http(&token, Some((name, answer.clone().into())));
                    tokens.push(token.clone());
                    if let Some((keep, _)) = share {
                        // The name goes with it: a replica answers only under that name.
                        let shared = format!("{name}\n{answer}");
                        keep.challenge("http01", &token, Some(shared.as_bytes()))
                            .await
                            .map_err(other)?;
                    }
                }
                Challenge::TlsAlpn01 => {
                    let digest = key_auth.digest();
                    obtained.set_alpn(name, Some(alpn_cert(name, digest.as_ref())?));
                    if let Some((keep, _)) = share {
                        shared_alpn = true;
                        keep.challenge("alpn", name, Some(digest.as_ref()))
                            .await
                            .map_err(other)?;
                    }
                }
            }
            if let Some((_, wait)) = share {
                tokio::time::sleep(wait).await;
            }
            ch.set_ready()
                .await
                .map_err(|e| OrderError::Invalid(said(e)))?;
        }
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(90));
        let status = order
            .poll_ready(&policy)
            .await
            .map_err(|e| OrderError::Invalid(said(e)))?;
        if status != OrderStatus::Ready {
            return Err(OrderError::Invalid(why_invalid(&mut order).await));
        }
        let key = order
            .finalize()
            .await
            .map_err(|e| OrderError::Refused(said(e)))?;
        let chain = order
            .poll_certificate(&policy)
            .await
            .map_err(|e| OrderError::Refused(said(e)))?;
        Ok((chain, key))
    }
    .await;
    for t in tokens {
        obtained.set_http(&t, None);
        if let Some((keep, _)) = share {
            let _ = keep.challenge("http01", &t, None).await;
        }
    }
    if challenge == Challenge::TlsAlpn01 {
        obtained.set_alpn(name, None);
        if let (Some((keep, _)), true) = (share, shared_alpn) {
            let _ = keep.challenge("alpn", name, None).await;
        }
    }
    result
}

/// The CA's own words on a failed validation (the challenge's error), or the order's.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                return said(instant_acme::Error::Api(p.clone()));
            }
        }
    }
    match &order.state().error {
        Some(p) => p.to_string(),
        None => "the order became invalid".into(),
    }
}

/// The self-signed certificate a TLS-ALPN-01 validation expects (RFC 8737): the name, and the
/// key authorization's digest in the critical acmeIdentifier extension.
pub fn alpn_cert(name: &str, digest: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>, OrderError> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(other)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(other)?;
    let cert = params.self_signed(&key).map_err(other)?;
    certified_key(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).map_err(OrderError::Other)
}
