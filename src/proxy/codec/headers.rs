//! Header rewriting for forwarded requests and responses.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1) that never cross the proxy.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Longest client `X-Request-Id` kept.
pub const MAX_REQUEST_ID: usize = 128;

/// A client's `X-Request-Id` is kept if it is 1 to [`MAX_REQUEST_ID`] visible ASCII
/// characters (no spaces: it goes into logs as one word); otherwise quayside makes one.
pub fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.iter().all(|b| (0x21..0x7f).contains(b))
}

/// A new request id: 32 hex digits of a random 128-bit number.
pub fn new_request_id(random: u128) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in random.to_be_bytes().iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// The request's id: the client's `X-Request-Id` if it is kept, else a new one; in `headers`
/// as the one `X-Request-Id` (the backend gets it).
pub fn settle_request_id(headers: &mut HeaderMap, random: impl FnOnce() -> u128) -> HeaderValue {
    let id = request_id(headers, random);
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

/// The request's id (see [`settle_request_id`]), without setting it.
pub fn request_id(headers: &HeaderMap, random: impl FnOnce() -> u128) -> HeaderValue {
    let given = headers
        .get(&X_REQUEST_ID)
        .filter(|v| valid_request_id(v.as_bytes()))
        .cloned();
    let mut id = given.unwrap_or_else(|| {
        HeaderValue::from_bytes(&new_request_id(random())).expect("hex digits are a valid value")
    });
    // Never indexed by HPACK: each value is new, and indexing one only evicts useful entries
    // from the HTTP/2 header table (which cost the encoder a table search per response).
    id.set_sensitive(true);
    id
}

/// Remove hop-by-hop headers, including any named in `Connection`.
/// `Transfer-Encoding` is left to hyper, which re-frames the body on each leg.
///
/// One pass over the (few) headers present notes which of these are there; only those are
/// removed (each removal hashes its name). `Connection: keep-alive`/`close`/`upgrade`, what
/// nearly every backend sends, names nothing beyond the standard list.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Bit i: HOP_BY_HOP[i] present; bit 8: Transfer-Encoding.
    let mut found = 0u16;
    let mut names_others = false;
    for (k, v) in headers.iter() {
        if *k == header::TRANSFER_ENCODING {
            found |= 1 << 8;
        } else if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            found |= 1 << i;
            if i == 0 {
                names_others |= v
                    .as_bytes()
                    .split(|b| *b == b',')
                    .map(|t| t.trim_ascii())
                    .any(|t| {
                        !(t.is_empty()
                            || t.eq_ignore_ascii_case(b"keep-alive")
                            || t.eq_ignore_ascii_case(b"close")
                            || t.eq_ignore_ascii_case(b"upgrade"))
                    });
            }
        }
    }
    if found == 0 {
        return;
    }
    if names_others {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if found & (1 << 8) != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
}

/// What a request's forwarding headers say upstream (see `plan::forwarding`, which decides
/// it for both fronts).
#[derive(Clone, Copy, Debug)]
pub struct Forwarding<'a> {
    /// The connection's peer: appended to `X-Forwarded-For`.
    pub peer: &'a HeaderValue,
    /// The client address decided (`--trusted-proxies`): `X-Real-IP`.
    pub client: &'a HeaderValue,
    /// `http` or `https`: `X-Forwarded-Proto`.
    pub proto: &'a HeaderValue,
    /// The client's own `X-Forwarded-For` lines are kept (joined, then appended to).
    pub keep_xff: bool,
    /// The client's own `Forwarded` is kept (its peer is a trusted proxy).
    pub keep_forwarded: bool,
}

/// Set `X-Forwarded-For` (appending the peer to the client's lines, joined into one list, if
/// kept), `X-Real-IP`, `-Proto` and `-Host`; drop the client's `Forwarded` unless kept.
pub fn set_forwarded(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let mut joined: Vec<u8> = Vec::new();
    if f.keep_xff {
        for line in headers.get_all(&X_FORWARDED_FOR) {
            let line = line.as_bytes().trim_ascii();
            if !line.is_empty() {
                joined.extend_from_slice(line);
                joined.extend_from_slice(b", ");
            }
        }
    }
    let xff = if joined.is_empty() {
        f.peer.clone()
    } else {
        joined.extend_from_slice(f.peer.as_bytes());
        HeaderValue::from_bytes(&joined).unwrap_or_else(|_| f.peer.clone())
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_REAL_IP.clone(), f.client.clone());
    headers.insert(X_FORWARDED_PROTO.clone(), f.proto.clone());
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    if !f.keep_forwarded {
        headers.remove(header::FORWARDED);
    }
}

/// Why a request's host is refused (a 400): the host quayside routes by must be the host the
/// backend is told, so there must be exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.as_str())]
pub enum HostError {
    Several,
    Invalid,
    Missing,
    Differs,
}

impl HostError {
    pub fn as_str(self) -> &'static str {
        match self {
            HostError::Several => "more than one Host header",
            HostError::Invalid => "invalid Host header",
            HostError::Missing => "missing Host header",
            HostError::Differs => "Host header differs from :authority",
        }
    }
}

/// Settle the one host of a request, and make its `Host` header say it: more than one `Host`,
/// or an invalid one, is refused (RFC 9112 §3.2); an HTTP/1 absolute-form target decides the
/// host and replaces `Host` (§3.2.2); an HTTP/1.1 request without `Host` is refused; an HTTP/2
/// `:authority` becomes the `Host`, and a `Host` that names another is refused (RFC 9113
/// §8.3.1).
pub fn settle_host(
    version: http::Version,
    uri: &http::Uri,
    headers: &mut HeaderMap,
) -> Result<(), HostError> {
    let mut all = headers.get_all(header::HOST).iter();
    let given = all.next();
    if all.next().is_some() {
        return Err(HostError::Several);
    }
    if let Some(h) = given
        && !h.is_empty()
        && !valid_authority(h.as_bytes())
    {
        return Err(HostError::Invalid);
    }
    let Some(authority) = uri.authority() else {
        return match given {
            None if version == http::Version::HTTP_11 => Err(HostError::Missing),
            _ => Ok(()),
        };
    };
    // The `http` crate parsed it as a URI authority already: only user info is left to refuse.
    if authority.as_str().contains('@') {
        return Err(HostError::Invalid);
    }
    if version == http::Version::HTTP_2
        && let Some(h) = given
        && !h
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Err(HostError::Differs);
    }
    // Already says it (an HTTP/2 client that sent both): no new header value to allocate.
    if given.is_some_and(|h| h.as_bytes() == authority.as_str().as_bytes()) {
        return Ok(());
    }
    let v = HeaderValue::from_str(authority.as_str()).map_err(|_| HostError::Invalid)?;
    headers.insert(header::HOST, v);
    Ok(())
}

/// `host[:port]` as RFC 3986 allows it in a Host header: a reg-name (unreserved, sub-delims,
/// percent-encoded), an IPv4 address or a bracketed IP literal; no user info, no spaces.
pub fn valid_authority(v: &[u8]) -> bool {
    let (host, port) = match v.iter().rposition(|&b| b == b':') {
        // A colon inside brackets belongs to an IPv6 literal.
        Some(i) if !v[i..].contains(&b']') => (&v[..i], &v[i + 1..]),
        _ => (v, &b""[..]),
    };
    if !port.iter().all(u8::is_ascii_digit) || port.len() > 5 {
        return false;
    }
    match host {
        [] => false,
        [b'[', inner @ .., b']'] => inner
            .iter()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')),
        _ => host
            .iter()
            .all(|&b| unreserved(b) || sub_delim(b) || b == b'%'),
    }
}

pub use crate::types::path::unreserved;

/// RFC 3986's sub-delims: `!$&'()*+,;=`.
#[inline]
pub fn sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// The protocol a request asks to switch to (`Connection: upgrade` and `Upgrade: X`).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` that pins a client to backend `no`, when its service has sticky sessions
/// (cookie `name`) and the client's cookie did not already name `no` (`had`). Names are
/// `[A-Za-z0-9._-]`, so no quoting.
pub fn sticky_cookie(name: Option<&str>, had: Option<&str>, no: &str) -> Option<HeaderValue> {
    let name = name.filter(|_| had != Some(no))?;
    Some(
        HeaderValue::from_str(&format!("{name}={no}; Path=/; HttpOnly; SameSite=Lax"))
            .expect("validated cookie name and no"),
    )
}

/// The host name of a `Host` value or authority, without port or IPv6 brackets.
#[inline]
pub fn host_only(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    // (A byte search: `rsplit_once(':')`'s char searcher was a call of its own per request.)
    match authority.bytes().rposition(|b| b == b':') {
        Some(i) if authority.as_bytes()[i + 1..].iter().all(u8::is_ascii_digit) => &authority[..i],
        _ => authority,
    }
}

/// How a front reads a request head's headers (each front keeps its own parsed form).
pub trait RequestHead {
    /// The first value of header `name`.
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// The value of cookie `name`.
    fn cookie(&self, name: &str) -> Option<&str>;
}

impl RequestHead for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        cookie(self, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_id_is_the_number_in_hex() {
        let id = new_request_id(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(&id, b"0123456789abcdeffedcba9876543210");
        assert!(valid_request_id(&id));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"has space"));
        assert!(!valid_request_id(&[b'x'; 129]));
    }

    #[test]
    fn strips_connection_named_and_standard() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    /// The plain definition: remove every standard hop-by-hop name, Transfer-Encoding, and
    /// every name listed in any `Connection` header.
    fn strip_reference(h: &mut HeaderMap) {
        let mut names: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
            .collect();
        names.extend(HOP_BY_HOP.iter().cloned());
        names.push(header::TRANSFER_ENCODING);
        for n in names {
            h.remove(n);
        }
    }

    proptest::proptest! {
        #[test]
        fn strip_matches_the_plain_definition(
            picks in proptest::collection::vec((0usize..14, 0usize..7), 0..10)
        ) {
            const NAMES: [&str; 14] = [
                "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                "transfer-encoding", "proxy-authorization", "x-a", "x-b", "host",
                "content-length", "date", "server",
            ];
            const VALUES: [&str; 7] = [
                "keep-alive", "close", "Upgrade", "x-a", "close, X-B", " keep-alive , x-a ", "1",
            ];
            let mut h = HeaderMap::new();
            for (n, v) in picks {
                h.append(
                    HeaderName::from_static(NAMES[n]),
                    HeaderValue::from_static(VALUES[v]),
                );
            }
            let mut expected = h.clone();
            strip_reference(&mut expected);
            strip_hop_by_hop(&mut h);
            proptest::prop_assert_eq!(h, expected);
        }
    }

    #[test]
    fn forwarded_appends() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.example.com"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static(" "));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        let (peer, client, proto) = (
            HeaderValue::from_static("127.0.0.1"),
            HeaderValue::from_static("10.0.0.2"),
            HeaderValue::from_static("http"),
        );
        let mut f = Forwarding {
            peer: &peer,
            client: &client,
            proto: &proto,
            keep_xff: true,
            keep_forwarded: false,
        };
        let mut kept = h.clone();
        set_forwarded(&mut h, &f);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-real-ip"], "10.0.0.2");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key("forwarded"));
        (f.keep_xff, f.keep_forwarded) = (false, true);
        set_forwarded(&mut kept, &f);
        assert_eq!(kept["x-forwarded-for"], "127.0.0.1");
        assert_eq!(kept["forwarded"], "for=6.6.6.6");
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; sticky=web-2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=3"));
        assert_eq!(cookie(&h, "sticky"), Some("web-2"));
        assert_eq!(cookie(&h, "b"), Some("3"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn one_host_is_settled() {
        use http::Version;
        let settle = |v: Version, uri: &str, hosts: &[&str]| {
            let mut h = HeaderMap::new();
            for host in hosts {
                h.append(header::HOST, HeaderValue::from_str(host).unwrap());
            }
            let uri: http::Uri = uri.parse().unwrap();
            settle_host(v, &uri, &mut h).map(|()| {
                h.get_all(header::HOST)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
        };
        let h11 = Version::HTTP_11;
        assert_eq!(settle(h11, "/", &["a.test"]), Ok(vec!["a.test".into()]));
        assert_eq!(
            settle(h11, "/", &["[::1]:8080"]),
            Ok(vec!["[::1]:8080".into()])
        );
        assert_eq!(settle(h11, "/", &[""]), Ok(vec!["".into()]));
        assert_eq!(
            settle(h11, "/", &["a.test", "b.test"]),
            Err(HostError::Several)
        );
        assert_eq!(
            settle(h11, "/", &["a.test", "a.test"]),
            Err(HostError::Several)
        );
        for bad in [
            "a.test b.test",
            "u@a.test",
            "a.test:80x",
            "a.test/x",
            "[zz]",
            ":80",
        ] {
            assert_eq!(settle(h11, "/", &[bad]), Err(HostError::Invalid), "{bad}");
        }
        assert_eq!(settle(h11, "/", &[]), Err(HostError::Missing));
        assert_eq!(settle(Version::HTTP_10, "/", &[]), Ok(vec![]));
        // Absolute form: the target's authority wins and replaces Host.
        assert_eq!(
            settle(h11, "http://b.test/c", &["a.test"]),
            Ok(vec!["b.test".into()])
        );
        assert_eq!(
            settle(h11, "http://b.test:81/c", &[]),
            Ok(vec!["b.test:81".into()])
        );
        // HTTP/2: :authority becomes Host; a Host naming another is refused.
        let h2 = Version::HTTP_2;
        assert_eq!(
            settle(h2, "https://a.test/", &[]),
            Ok(vec!["a.test".into()])
        );
        assert_eq!(
            settle(h2, "https://a.test/", &["A.test"]),
            Ok(vec!["a.test".into()])
        );
        assert_eq!(
            settle(h2, "https://a.test/", &["b.test"]),
            Err(HostError::Differs)
        );
        assert_eq!(settle(h2, "/", &["b.test"]), Ok(vec!["b.test".into()]));
    }

    #[test]
    fn host_only_cases() {
        assert_eq!(host_only("a.com:8080"), "a.com");
        assert_eq!(host_only("a.com"), "a.com");
        assert_eq!(host_only("[::1]:80"), "::1");
        assert_eq!(host_only("[::1]"), "::1");
    }
}
