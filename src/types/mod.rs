//! Small value types shared by every layer: durations as settings, labels and JSON write them.
//! A leaf: it imports nothing of quayside's. [`path`] is the one rule for request paths.

pub mod path;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The shortest duration any setting takes.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// The longest duration any setting takes: longer ones are typos or overflow attempts, and
/// nothing quayside times should wait a day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The words every boolean setting given as text takes (labels, environment variables, a
/// flag's `=VALUE`), any case.
pub const BOOLEAN_WORDS: &str = "true/false, yes/no, on/off or 1/0";

/// The one reading of a boolean given as text: `true/false`, `yes/no`, `on/off`, `1/0`, any
/// case, surrounding spaces ignored.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    let v = s.trim();
    const TRUE: [&str; 4] = ["true", "yes", "on", "1"];
    const FALSE: [&str; 4] = ["false", "no", "off", "0"];
    if TRUE.iter().any(|w| v.eq_ignore_ascii_case(w)) {
        Ok(true)
    } else if FALSE.iter().any(|w| v.eq_ignore_ascii_case(w)) {
        Ok(false)
    } else {
        Err(format!("must be {BOOLEAN_WORDS}, got {s:?}"))
    }
}

/// The forms a listen address may take, as a refusal says them.
pub const LISTEN_FORMS: &str = "IP:PORT (0.0.0.0:8080, [::1]:8080), :PORT for every address (IPv6 and IPv4) or localhost:PORT for loopback, e.g. :8080";

/// The one reading of a listen address, for every listener: `IP:PORT`, `[IPv6]:PORT`, `:PORT`
/// (every address: `[::]`, which the listener binds for IPv4 too, or IPv4's alone where the
/// host has no IPv6, as Go tools and Traefik's entry points write it) or `localhost:PORT`
/// (loopback).
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let v = s.trim();
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(a);
    }
    let refuse = || format!("{s:?} is not a listen address: give {LISTEN_FORMS}");
    let (host, port) = v.rsplit_once(':').ok_or_else(refuse)?;
    let port: u16 = port.parse().map_err(|_| refuse())?;
    let ip: IpAddr = match host {
        "" => Ipv6Addr::UNSPECIFIED.into(),
        h if h.eq_ignore_ascii_case("localhost") => Ipv4Addr::LOCALHOST.into(),
        _ => return Err(refuse()),
    };
    Ok(SocketAddr::new(ip, port))
}

/// A listen address in the config file, read by [`parse_listen`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(pub std::net::SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_listen(&s)
            .map(ListenAddr)
            .map_err(serde::de::Error::custom)
    }
}

/// `500ms`, `5s`, `2m`, `1h` (humantime's syntax, so `1h30m` too), or a plain number of
/// seconds; from 1 ms to 24 h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        // A plain number of seconds; one too long for u64 is simply out of range.
        s.parse::<u64>().map_or(Duration::MAX, Duration::from_secs)
    } else {
        match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(humantime::DurationError::NumberOverflow) => Duration::MAX,
            Err(_) => {
                return Err(format!(
                    "must be a duration like 500ms, 5s or 2m, got {s:?}"
                ));
            }
        }
    };
    check_duration(d, s)
}

/// `d` if it is within [`MIN_DURATION`]..=[`MAX_DURATION`]; else an error quoting `shown`.
pub fn check_duration(d: Duration, shown: &str) -> Result<Duration, String> {
    if (MIN_DURATION..=MAX_DURATION).contains(&d) {
        Ok(d)
    } else {
        Err(format!("must be from 1ms to 24h, got {shown:?}"))
    }
}

/// A duration written as `500ms`, `5s`, `2m` (or a number of seconds) in JSON and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl utoipa::PartialSchema for Dur {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("500ms, 5s, 2m, 1h30m: from 1ms to 24h"))
                    .examples(["5s"]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(MAX_DURATION.as_secs()))
                    .description(Some("seconds")),
            )
            .into()
    }
}

impl utoipa::ToSchema for Dur {}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => check_duration(Duration::from_secs(s), &s.to_string()),
            Raw::Text(t) => parse_duration(&t),
        }
        .map(Dur)
        .map_err(serde::de::Error::custom)
    }
}

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a block of one). An
/// IPv4 block also holds the IPv4-mapped IPv6 form of its addresses (`::ffff:10.0.0.1`), as a
/// dual-stack listener reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parse `a.b.c.d/n`, `x::y/n` or a bare address; the error says why, quoting `s`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("must be an address or block like 10.0.0.0/8, got {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("prefix length must be 0-{max}, got {s:?}")),
            },
        };
        Ok(Cidr { addr, bits })
    }

    #[inline]
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// Whether any of `blocks` holds `ip`.
    #[inline]
    pub fn any(blocks: &[Cidr], ip: std::net::IpAddr) -> bool {
        blocks.iter().any(|b| b.contains(ip))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_in_every_form_and_a_refusal_that_says_them() {
        let ok = |s: &str| parse_listen(s).unwrap().to_string();
        assert_eq!(ok("0.0.0.0:8080"), "0.0.0.0:8080");
        assert_eq!(ok("[::1]:8080"), "[::1]:8080");
        assert_eq!(ok(":8080"), "[::]:8080");
        assert_eq!(ok("localhost:18080"), "127.0.0.1:18080");
        assert_eq!(ok("LocalHost:0"), "127.0.0.1:0");
        assert_eq!(ok(" :80 "), "[::]:80");
        for bad in [
            "8080",
            "example.com:80",
            ":http",
            ":65536",
            "localhost",
            "",
            "::1:80",
        ] {
            let e = parse_listen(bad).unwrap_err();
            assert!(
                e.contains(":PORT") && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
        let f: std::collections::HashMap<String, ListenAddr> =
            toml::from_str("a = \":9000\"").unwrap();
        assert_eq!(f["a"].0.to_string(), "[::]:9000");
        let e = toml::from_str::<std::collections::HashMap<String, ListenAddr>>("a = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("localhost:PORT"), "{e}");
    }

    #[test]
    fn booleans_read_one_way() {
        for t in ["true", "TRUE", "Yes", " on ", "1"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["false", "False", "NO", "off", "0"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        for bad in ["", "disabled", "2", "y", "enable", "truee"] {
            let e = parse_bool(bad).unwrap_err();
            assert!(e.contains(BOOLEAN_WORDS), "{e}");
        }
    }

    #[test]
    fn blocks_hold_their_addresses() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let b = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(b.contains(ip("10.1.200.3")));
        assert!(b.contains(ip("::ffff:10.1.0.1")));
        assert!(!b.contains(ip("10.2.0.1")));
        assert!(!b.contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("2001:db8:1::5"))
        );
        assert!(
            !Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("2001:db9::5"))
        );
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0-32"));
        assert!(Cidr::parse("ten").unwrap_err().contains("10.0.0.0/8"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ms").is_err());
        assert_eq!(parse_duration("24h").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("1ms").unwrap(), MIN_DURATION);
        // Out of range, and the multiplications that used to wrap.
        for bad in [
            "25h",
            "86400001ms",
            "5124095576030432h",
            "307445734561825861m",
            "99999999999999999999999s",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("from 1ms to 24h"), "{bad}: {e}");
        }
    }
}
