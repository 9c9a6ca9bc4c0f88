//! `basic_auth`: users with bcrypt, argon2, or htpasswd's MD5 (`$apr1$`) and `{SHA}` hashes.
//! Checking a hash takes milliseconds by design, so the fronts run [`BasicAuth::verify`] off
//! the event loop, and a credential that passed is remembered for a while
//! ([`BasicAuth::known`]) so a client's next requests cost a map lookup. An unknown user costs
//! a check against a user's hash all the same, so the time taken does not tell which users
//! exist.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::registry::middleware::HashScheme;

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
    /// From validated `user:hash` entries; `realm` is shown by browsers (it is the service's
    /// name, which a warning about weak hashes names too).
    pub fn new(entries: &[String], realm: &str) -> BasicAuth {
        let users: Vec<(String, String)> = entries
            .iter()
            .filter_map(|e| e.split_once(':'))
            .map(|(u, h)| (u.to_owned(), h.to_owned()))
            .collect();
        let weak: Vec<&str> = users
            .iter()
            .filter(|(_, h)| HashScheme::of(h).is_some_and(HashScheme::weak))
            .map(|(u, _)| u.as_str())
            .collect();
        if !weak.is_empty() {
            // (Once per service: compiled again only when its settings change.)
            tracing::warn!(service = %realm, users = ?weak, "basic_auth users have MD5 or SHA-1 password hashes, which are cracked fast if they leak; make bcrypt ones with `htpasswd -nB USER`");
        }
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
        let ok = match self.users.iter().find(|(u, _)| u.as_bytes() == user) {
            Some((_, hash)) => check(password, hash),
            None => {
                // An unknown user takes as long as a known one: checked against the first
                // user's hash (same scheme and cost), the answer thrown away.
                if let Some((_, hash)) = self.users.first() {
                    std::hint::black_box(check(password, hash));
                }
                false
            }
        };
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
    use subtle::ConstantTimeEq as _;
    match HashScheme::of(hash) {
        Some(HashScheme::Argon2) => {
            use argon2::PasswordVerifier as _;
            argon2::Argon2::default()
                .verify_password(password, hash)
                .is_ok()
        }
        Some(HashScheme::Bcrypt) => bcrypt::verify(password, hash).unwrap_or(false),
        Some(HashScheme::Md5 { apr1 }) => {
            let magic = if apr1 { "$apr1$" } else { "$1$" };
            let salt = hash[magic.len()..].split('$').next().unwrap_or("");
            md5_crypt(password, salt.as_bytes(), magic)
                .as_bytes()
                .ct_eq(hash.as_bytes())
                .into()
        }
        Some(HashScheme::Sha1) => {
            use sha1::Digest as _;
            let digest = sha1::Sha1::digest(password);
            let ours = base64::engine::general_purpose::STANDARD.encode(digest);
            ours.as_bytes().ct_eq(&hash.as_bytes()[5..]).into()
        }
        None => false,
    }
}

/// MD5-crypt, as Apache (`$apr1$`) and glibc (`$1$`) write it (Poul-Henning Kamp's
/// algorithm: 1,000 rounds of MD5 over the password and salt).
fn md5_crypt(pw: &[u8], salt: &[u8], magic: &str) -> String {
    use md5::{Digest as _, Md5};
    const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let alt = Md5::new()
        .chain_update(pw)
        .chain_update(salt)
        .chain_update(pw)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(pw)
        .chain_update(magic.as_bytes())
        .chain_update(salt);
    for chunk in pw.chunks(16) {
        ctx.update(&alt[..chunk.len()]);
    }
    let mut i = pw.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(pw);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(pw);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(pw);
        }
        fin = c.finalize();
    }
    let mut out = format!("{magic}{}$", String::from_utf8_lossy(salt));
    let mut push = |v: u32, n: usize| {
        for k in 0..n {
            out.push(char::from(CRYPT64[((v >> (6 * k)) & 0x3f) as usize]));
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push(
            (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c]),
            4,
        );
    }
    push(u32::from(fin[11]), 2);
    out
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
    fn htpasswds_md5_and_sha1_hashes_are_checked() {
        // What `htpasswd -nbm`, `openssl passwd -1 -salt abcdefgh`, `openssl passwd -apr1
        // -salt xyz` and `htpasswd -nbs` print for the password "pw" (and "" for the last).
        for (hash, pw) in [
            ("$apr1$rPYgkAtb$aVRtlzTrL8jPBfCJSls43.", "pw"),
            ("$1$abcdefgh$IQtUouv7y7Q9dRWkQEPCc.", "pw"),
            ("$apr1$xyz$lWpymBJAYnaCb.rvOu/tW0", "pw"),
            ("$apr1$xyz$Pix4eE3fQHxJjb6LqtyMK1", ""),
            ("{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM=", "pw"),
        ] {
            let a = BasicAuth::new(&[format!("dave:{hash}")], "app");
            let right = basic(&format!("dave:{pw}"));
            assert!(a.verify(&right), "{hash}");
            assert!(!a.verify(&basic("dave:px")), "{hash}");
        }
        assert_eq!(
            md5_crypt(b"a password longer than sixteen bytes", b"s4lt", "$apr1$").len(),
            "$apr1$s4lt$".len() + 22
        );
    }

    #[test]
    fn an_unknown_user_costs_a_hash_check_too() {
        // A lower bound only (a slow machine cannot make it pass wrongly): without the check
        // against a user's hash, an unknown user is answered in microseconds.
        let bc = bcrypt::hash("s3cret", 8).unwrap();
        let a = BasicAuth::new(&[format!("alice:{bc}")], "app");
        let started = Instant::now();
        assert!(!a.verify(&basic("alice:wrong")));
        let known = started.elapsed();
        let started = Instant::now();
        assert!(!a.verify(&basic("mallory:wrong")));
        let unknown = started.elapsed();
        assert!(unknown * 4 > known, "unknown {unknown:?}, known {known:?}");
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
