//! `basic_auth`: users with bcrypt or argon2 hashes. Checking a hash takes milliseconds by
//! design, so the fronts run [`BasicAuth::verify`] off the event loop, and a credential that
//! passed is remembered for a while ([`BasicAuth::known`]) so a client's next requests cost
//! a map lookup.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How long a verified credential is remembered (a changed service config forgets them all).
pub const REMEMBER: Duration = Duration::from_secs(300);
/// Credentials remembered at most; past it the expired ones go, and if none had, all.
const REMEMBERED: usize = 10_000;

pub struct BasicAuth {
    /// `(user, hash)`, in the config's order.
    users: Vec<(String, String)>,
    /// The `WWW-Authenticate` value.
    pub challenge: http::HeaderValue,
    /// `Authorization` values that passed, until when.
    passed: Mutex<fnv::FnvHashMap<Box<[u8]>, Instant>>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("BasicAuth").field("users", &users).finish()
    }
}

impl BasicAuth {
    /// From validated `user:hash` entries; `realm` is shown by browsers.
    pub fn new(entries: &[String], realm: &str) -> BasicAuth {
        let users = entries
            .iter()
            .filter_map(|e| e.split_once(':'))
            .map(|(u, h)| (u.to_owned(), h.to_owned()))
            .collect();
        let realm: String = realm
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
            .collect();
        BasicAuth {
            users,
            challenge: http::HeaderValue::from_str(&format!(
                "Basic realm=\"{realm}\", charset=\"UTF-8\""
            ))
            .unwrap_or_else(|_| http::HeaderValue::from_static("Basic realm=\"quayside\"")),
            passed: Mutex::default(),
        }
    }

    /// The credential of an `Authorization` value, if it is `Basic ...` at all.
    pub fn credential(authorization: &[u8]) -> Option<&[u8]> {
        let (scheme, rest) = authorization.split_at_checked(6)?;
        (scheme.eq_ignore_ascii_case(b"basic ")).then(|| rest.trim_ascii())
    }

    /// Whether `credential` passed within [`REMEMBER`] before `now`.
    pub fn known(&self, credential: &[u8], now: Instant) -> bool {
        let passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
        passed.get(credential).is_some_and(|until| *until > now)
    }

    /// Check `credential` (base64 of `user:password`) against the users' hashes: slow, run it
    /// off the event loop. A pass is remembered.
    pub fn verify(&self, credential: &[u8]) -> bool {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credential) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let ok = self
            .users
            .iter()
            .find(|(u, _)| u.as_bytes() == user)
            .is_some_and(|(_, hash)| check(password, hash));
        if ok {
            let now = Instant::now();
            let mut passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
            if passed.len() >= REMEMBERED {
                passed.retain(|_, until| *until > now);
                if passed.len() >= REMEMBERED {
                    passed.clear();
                }
            }
            passed.insert(credential.into(), now + REMEMBER);
        }
        ok
    }
}

fn check(password: &[u8], hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::PasswordVerifier as _;
        argon2::Argon2::default()
            .verify_password(password, hash)
            .is_ok()
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(user_pass)
            .into_bytes()
    }

    #[test]
    fn listed_users_pass_and_are_remembered() {
        let bc = bcrypt::hash("s3cret", 4).unwrap();
        let a = BasicAuth::new(&[format!("alice:{bc}")], "app");
        let good = basic("alice:s3cret");
        assert!(!a.known(&good, Instant::now()));
        assert!(a.verify(&good));
        assert!(a.known(&good, Instant::now()));
        assert!(!a.known(&good, Instant::now() + REMEMBER + Duration::from_secs(1)));
        assert!(!a.verify(&basic("alice:wrong")));
        assert!(!a.verify(&basic("bob:s3cret")));
        assert!(!a.verify(b"!!notbase64"));
        assert!(!a.verify(&basic("nocolon")));
        assert_eq!(
            BasicAuth::credential(b"Basic YWxpY2U6eA=="),
            Some(&b"YWxpY2U6eA=="[..])
        );
        assert_eq!(BasicAuth::credential(b"Bearer x"), None);
    }

    #[test]
    fn argon2_hashes_are_checked() {
        use argon2::PasswordHasher as _;
        let hash = argon2::Argon2::default()
            .hash_password(b"pw")
            .unwrap()
            .to_string();
        let a = BasicAuth::new(&[format!("carol:{hash}")], "app");
        assert!(a.verify(&basic("carol:pw")));
        assert!(!a.verify(&basic("carol:px")));
    }
}
