//! Following a client's requests through the bytes hyper reads, by their framing, however the
//! reads split them (pure: fed bytes, no I/O). `server::conn` feeds it every read of a
//! connection that hyper serves, for two things hyper cannot tell it:
//! - a request head with both `Content-Length` and `Transfer-Encoding` (hyper reads such a
//!   request as chunked, drops the length and closes afterwards; quayside refuses it with
//!   400), by the request's number on the connection;
//! - whether the bytes read so far are exactly the requests hyper has handed to the service
//!   (nothing of a next request sits in hyper's buffer), which parking needs.
//!
//! Requests are delimited as RFC 9112 section 6 and hyper delimit them: a head up to its blank
//! line (empty lines before it skipped), then a chunked body if `Transfer-Encoding` is there,
//! else `Content-Length` bytes, else nothing. Where that can no longer be followed (a length
//! that is not one number, both framings, an `Upgrade` or `CONNECT`, after which the bytes may
//! be a tunnel's, a chunked body that is not, an overlong head) it stops, and is never again
//! between requests (so the connection is never parked).

use super::body::Remaining;
use super::parse::Framing;

/// Longest request head followed; a longer one stops the follower (hyper answers 431 to it
/// long before).
const HEAD_MAX: usize = 64 << 10;

/// The framing facts of a request head, gathered line by line as it arrives (each byte is
/// looked at once, however the reads split the head; only an incomplete line is kept).
#[derive(Debug, Default)]
struct Head {
    /// The [`request_key`] of its request line, once that is complete (a hash: no copy of the
    /// line per request).
    key: Option<u64>,
    /// The start of a line whose end has not arrived.
    partial: Vec<u8>,
    /// Bytes of the head so far.
    len: usize,
    /// A `Content-Length` line, and its value if it is one plain number (all such lines agree).
    has_content_length: bool,
    content_length: Option<u64>,
    /// A `Transfer-Encoding` line.
    transfer_encoding: bool,
    /// An `Upgrade` line, or the method `CONNECT`: what follows may not be HTTP.
    upgrade: bool,
}

impl Head {
    /// The next bytes of the head: how many of them it took, if it ended in them.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut pos = 0;
        while let Some(i) = bytes[pos..].iter().position(|&b| b == b'\n') {
            let end = pos + i;
            let ended = if self.partial.is_empty() {
                self.line(&bytes[pos..end])
            } else {
                let mut kept = std::mem::take(&mut self.partial);
                kept.extend_from_slice(&bytes[pos..end]);
                let ended = self.line(&kept);
                kept.clear();
                self.partial = kept;
                ended
            };
            self.len += end + 1 - pos;
            pos = end + 1;
            if ended {
                return Some(pos);
            }
        }
        self.partial.extend_from_slice(&bytes[pos..]);
        self.len += bytes.len() - pos;
        None
    }

    /// One line of the head (without its `\n`); true if it is the blank line that ends it.
    fn line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.key.is_none() {
            self.upgrade = line.starts_with(b"CONNECT ");
            let mut words = line.split(|&b| b == b' ');
            let method = words.next().unwrap_or_default();
            self.key = Some(request_key(method, words.next().unwrap_or_default()));
            return false;
        }
        if line.is_empty() {
            return true;
        }
        let value = |name: &[u8]| {
            (line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name))
                .then(|| line[name.len()..].trim_ascii())
        };
        if let Some(v) = value(b"content-length:") {
            let n = std::str::from_utf8(v)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok());
            self.content_length = if self.has_content_length && self.content_length != n {
                None
            } else {
                n
            };
            self.has_content_length = true;
        }
        self.transfer_encoding |= value(b"transfer-encoding:").is_some();
        self.upgrade |= value(b"upgrade:").is_some();
        false
    }
}

/// A request's method and target, hashed: what tells the request the service sees apart from
/// another (a guard, should the follower ever count requests otherwise than hyper).
pub fn request_key(method: &[u8], target: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (method, target).hash(&mut h);
    h.finish()
}

/// Where the follower is in the client's byte stream.
#[derive(Debug, Default)]
enum Phase {
    /// Between requests: nothing of the next one read yet (but empty lines).
    #[default]
    Idle,
    /// In a head whose blank line has not arrived.
    Head(Head),
    /// A body to come.
    Body(Remaining),
    /// The framing can no longer be followed.
    Lost,
}

/// Follows one connection's requests (see the module doc). Starts between requests.
#[derive(Debug, Default)]
pub struct Follower {
    /// Requests read to their end so far.
    done: u32,
    phase: Phase,
    /// The number and [`request_key`] of the request whose head carries both framings, if one
    /// has (the follower stops there: hyper closes the connection after it).
    conflict: Option<(u32, u64)>,
}

impl Follower {
    /// The next bytes read from the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Lost => return,
                Phase::Idle => {
                    let blank = bytes.iter().take_while(|&&b| b == b'\r' || b == b'\n');
                    bytes = &bytes[blank.count()..];
                    if !bytes.is_empty() {
                        self.phase = Phase::Head(Head::default());
                    }
                }
                Phase::Head(head) => match head.feed(bytes) {
                    Some(n) => {
                        let head = std::mem::take(head);
                        self.phase = self.after_head(head);
                        bytes = &bytes[n..];
                    }
                    None => {
                        if head.len > HEAD_MAX {
                            self.phase = Phase::Lost;
                        }
                        return;
                    }
                },
                Phase::Body(left) => match left.relay(bytes) {
                    Ok(n) => {
                        bytes = &bytes[n..];
                        if left.is_done() {
                            self.end_request();
                        }
                    }
                    // Not chunked after all: hyper answers 400 and closes.
                    Err(_) => self.phase = Phase::Lost,
                },
            }
        }
    }

    /// True if the bytes fed so far are exactly `requests` whole requests: nothing of a
    /// further one, nor a body still to come.
    pub fn between(&self, requests: u32) -> bool {
        matches!(self.phase, Phase::Idle) && self.done == requests
    }

    /// The framing can no longer be followed.
    #[cfg(test)]
    fn lost(&self) -> bool {
        matches!(self.phase, Phase::Lost)
    }

    /// If request number `n` (from 0) on the connection is the one with both framings: its
    /// [`request_key`].
    pub fn conflict(&self, n: u32) -> Option<u64> {
        match self.conflict {
            Some((at, key)) if at == n => Some(key),
            _ => None,
        }
    }

    /// The phase after a complete head.
    fn after_head(&mut self, head: Head) -> Phase {
        if head.has_content_length && head.transfer_encoding {
            self.conflict
                .get_or_insert((self.done, head.key.unwrap_or_default()));
            return Phase::Lost;
        }
        if head.upgrade {
            return Phase::Lost;
        }
        match (
            head.transfer_encoding,
            head.has_content_length,
            head.content_length,
        ) {
            (true, _, _) => Phase::Body(Remaining::new(Framing::Chunked)),
            (false, true, None) => Phase::Lost,
            (false, true, Some(n)) if n > 0 => Phase::Body(Remaining::new(Framing::Length(n))),
            _ => {
                self.done = self.done.saturating_add(1);
                Phase::Idle
            }
        }
    }

    fn end_request(&mut self) {
        self.done = self.done.saturating_add(1);
        self.phase = Phase::Idle;
    }
}

#[cfg(test)]
mod tests {
    use super::{Follower, Head, request_key};
    use crate::proxy::codec::parse::{Chunks, Verdict};

    fn fed(reads: &[&[u8]]) -> Follower {
        let mut f = Follower::default();
        for r in reads {
            f.feed(r);
        }
        f
    }

    /// A head fed whole: what it found, and its length if it ended.
    fn scan(bytes: &[u8]) -> (Head, Option<usize>) {
        let mut h = Head::default();
        let n = h.feed(bytes);
        (h, n)
    }

    #[test]
    fn a_head_is_measured() {
        let bytes = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET";
        let (h, n) = scan(bytes);
        assert_eq!(n, Some(bytes.len() - 8));
        assert_eq!(h.key, Some(request_key(b"POST", b"/a")));
        assert!(h.has_content_length && !h.transfer_encoding && !h.upgrade);
        assert_eq!(h.content_length, Some(5));
        // Incomplete: no length yet, even with the blank line's \r in.
        assert_eq!(scan(b"GET / HTTP/1.1\r\nHost: x\r\n\r").1, None);
        assert_eq!(scan(b"GET / HTTP/1.1\r\nHo").1, None);
        // Bare LF line ends count as hyper counts them.
        assert_eq!(scan(b"GET / HTTP/1.1\nHost: x\n\n").1, Some(24));
        // Two different lengths, or one that is not a plain number: no length.
        let two = scan(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(two.0.content_length, None);
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n")
                .0
                .content_length,
            None
        );
        // What may turn into a tunnel.
        assert!(
            scan(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
                .0
                .upgrade
        );
        assert!(scan(b"CONNECT x:443 HTTP/1.1\r\n\r\n").0.upgrade);
        // Fed a byte at a time: the same, with only the line in progress kept.
        let mut h = Head::default();
        for (i, b) in bytes[..bytes.len() - 8].iter().enumerate() {
            assert!(h.partial.len() <= 18);
            let ended = h.feed(std::slice::from_ref(b));
            assert_eq!(ended.is_some(), i == bytes.len() - 9, "at {i}");
        }
        assert_eq!(h.len, bytes.len() - 8);
        assert_eq!(h.content_length, Some(5));
    }

    #[test]
    fn framing_headers_are_found_only_in_the_head() {
        fn conflict(bytes: &[u8]) -> Option<u64> {
            let (h, _) = scan(bytes);
            (h.has_content_length && h.transfer_encoding).then(|| h.key.unwrap())
        }
        let both = b"POST /a?b HTTP/1.1\r\nHost: x\r\ncontent-length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(conflict(both), Some(request_key(b"POST", b"/a?b")));
        assert!(
            conflict(b"POST / HTTP/1.1\nTRANSFER-ENCODING: chunked\nContent-Length: 1\n").is_some()
        );
        assert!(conflict(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n").is_none());
        assert!(conflict(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_none());
        // In the body, not the head.
        assert!(
            conflict(
                b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nTransfer-Encoding: chunked\r\n"
            )
            .is_none()
        );
        // A header merely named like them.
        assert!(
            conflict(b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encodings: x\r\n\r\n")
                .is_none()
        );
        // The request line is not a header.
        assert!(
            conflict(b"content-length: / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_none()
        );
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    const CHUNKED: &[u8] =
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const BOTH: &[u8] =
        b"POST /a?b HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn requests_are_counted_to_their_ends() {
        assert!(fed(&[]).between(0));
        assert!(fed(&[GET]).between(1));
        // A head split over reads, and a body after its head.
        assert!(fed(&[b"GET / HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n"]).between(1));
        let sized: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n",
            b"ab",
            b"cd",
        ];
        assert!(fed(sized).between(1));
        assert!(!fed(&sized[..2]).between(1));
        // The start of a second request, in the same read or a later one.
        assert!(!fed(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HT"]).between(1));
        assert!(!fed(&[GET, b"GET / HT"]).between(1));
        assert!(!fed(&[b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n", b"abG"]).between(1));
        assert!(fed(&[&[GET, GET, CHUNKED].concat()]).between(3));
        // Empty lines between requests are skipped, as hyper skips them.
        assert!(fed(&[GET, b"\r\n", b"\r\nGET / HTTP/1.1\r\n\r\n"]).between(2));
        // A chunked body ends where its last chunk and trailers end, split anywhere.
        for at in 1..CHUNKED.len() {
            let (a, b) = CHUNKED.split_at(at);
            assert!(fed(&[a, b]).between(1), "split at {at}");
            assert!(!fed(&[a, b, b"G"]).between(1), "split at {at}, then more");
        }
        assert!(!fed(&[&CHUNKED[..CHUNKED.len() - 3]]).between(1));
        // Where the framing cannot be followed.
        for lost in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            BOTH,
        ] {
            let f = fed(&[lost, GET]);
            assert!(f.lost(), "{lost:?}");
            assert!(!f.between(1) && !f.between(2));
        }
        assert!(fed(&[&vec![b'a'; super::HEAD_MAX + 1]]).lost());
        // A length at the top of u64 is followed (the body never ends in practice).
        let huge = fed(&[b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nab"]);
        assert!(!huge.lost() && !huge.between(1));
    }

    #[test]
    fn the_request_with_both_framings_is_found_by_its_number() {
        // Alone, behind bodyless, sized and chunked requests (one whose body merely looks
        // like such a head), in one read or split anywhere.
        let fake = format!("POST /s HTTP/1.1\r\nContent-Length: {}\r\n\r\n", BOTH.len());
        let sized = [fake.as_bytes(), BOTH].concat();
        for before in [
            vec![],
            vec![GET],
            vec![GET, CHUNKED, GET],
            vec![CHUNKED, &sized[..], GET],
        ] {
            let stream = [before.concat(), BOTH.to_vec(), GET.to_vec()].concat();
            let n = before.len() as u32;
            let f = fed(&[&stream]);
            assert_eq!(
                f.conflict(n),
                Some(request_key(b"POST", b"/a?b")),
                "{before:?}"
            );
            assert!((0..n).all(|i| f.conflict(i).is_none()));
            for at in 1..stream.len() {
                let (a, b) = stream.split_at(at);
                assert_eq!(fed(&[a, b]).conflict(n), f.conflict(n), "split at {at}");
            }
        }
        // Such bytes inside a body find nothing.
        let f = fed(&[&sized, GET]);
        assert!((0..3).all(|i| f.conflict(i).is_none()));
        assert!(f.between(2));
    }

    proptest::proptest! {
        /// However the reads split a stream of requests, the follower ends where it ends when
        /// fed it whole.
        #[test]
        fn reads_split_anywhere_change_nothing(
            kinds in proptest::collection::vec(0usize..5, 0..6),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let parts: [&[u8]; 5] = [GET, CHUNKED, BOTH, b"\r\n", b"PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"];
            let stream: Vec<u8> = kinds.iter().flat_map(|&k| parts[k].to_vec()).collect();
            let whole = fed(&[&stream]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut f = Follower::default();
            let mut from = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                f.feed(&stream[from..c]);
                from = c;
            }
            proptest::prop_assert_eq!(f.done, whole.done);
            proptest::prop_assert_eq!(f.lost(), whole.lost());
            proptest::prop_assert_eq!(&f.conflict, &whole.conflict);
            let requests = kinds.iter().take_while(|&&k| k != 2).filter(|&&k| k != 3).count();
            proptest::prop_assert_eq!(whole.done as usize, requests);
            proptest::prop_assert_eq!(whole.lost(), kinds.contains(&2));
        }
    }

    /// Where httparse (hyper's parser) says a request generated below ends: its head, then a
    /// chunked body if it has `Transfer-Encoding`, else its `Content-Length` (always 3 here).
    /// `None` if it refuses the head.
    fn hyper_end(bytes: &[u8], body: &[u8]) -> Option<(usize, bool)> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let head = match req.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return None,
        };
        let has = |name: &str| {
            req.headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name))
        };
        let (te, cl) = (has("transfer-encoding"), has("content-length"));
        Some((head + if te || cl { body.len() } else { 0 }, te && cl))
    }

    proptest::proptest! {
        /// The follower ends a request where hyper's parser does, and finds both framings
        /// where it does, for heads built from the lines that matter to framing (and some
        /// that merely look like them), with either line end and blank lines in front.
        #[test]
        fn requests_end_where_hyper_ends_them(
            blank in 0usize..3,
            method in proptest::sample::select(vec!["GET", "POST", "PUT"]),
            lines in proptest::collection::vec(proptest::sample::select(vec![
                "Host: x",
                "Content-Length: 3",
                "content-length:3",
                "Content-Length:  03 ",
                "Transfer-Encoding: chunked",
                "transfer-encoding:chunked",
                "X-A: Content-Length: 9",
                "X-Content-Length: 7",
                "Upgrade-Insecure-Requests: 1",
            ]), 0..5),
            crlf in proptest::bool::ANY,
            cut in 0usize..200,
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut head = eol.repeat(blank);
            head += &format!("{method} /p HTTP/1.1{eol}");
            for l in &lines {
                head += l;
                head += eol;
            }
            head += eol;
            let chunked = lines.iter().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding"));
            let body: &[u8] = if chunked { b"3\r\nabc\r\n0\r\n\r\n" } else { b"abc" };
            let stream = [head.as_bytes(), body, GET].concat();
            let Some((end, both)) = hyper_end(&stream, body) else {
                return Ok(());
            };
            // The fast path frames the requests it takes alike, and refuses the same heads.
            let mut slots = crate::proxy::codec::parse::header_slots();
            match crate::proxy::codec::parse::request(&stream, &mut slots, u64::MAX) {
                Verdict::Fast(r) => proptest::prop_assert_eq!(r.head_len + r.body_len, end),
                Verdict::Conflict => proptest::prop_assert!(both),
                Verdict::Slow | Verdict::Partial => proptest::prop_assert!(!both),
            }
            let cut = cut.min(stream.len());
            let f = fed(&[&stream[..cut], &stream[cut..]]);
            if both {
                proptest::prop_assert!(f.conflict(0).is_some());
                proptest::prop_assert!(f.lost());
            } else {
                proptest::prop_assert!(f.conflict(0).is_none());
                proptest::prop_assert!(f.between(2), "{:?}", String::from_utf8_lossy(&stream));
                proptest::prop_assert!(fed(&[&stream[..end]]).between(1));
                proptest::prop_assert!(!fed(&[&stream[..end - 1]]).between(1));
            }
        }

        /// Any bytes at all: the fast path's parsers take them without a panic.
        #[test]
        fn the_fast_paths_parsers_take_any_bytes(
            bytes in proptest::collection::vec(proptest::sample::select(
                b"\r\n :;0123456789abcdefGETPOSTHTTP/1.content-lengthtransfer-encodingchunked".to_vec()
            ), 0..400),
            head in proptest::bool::ANY,
        ) {
            use crate::proxy::codec::parse::{header_slots, request, response, response_slots};
            let _ = request(&bytes, &mut header_slots(), u64::MAX);
            let _ = response(&bytes, &mut response_slots(), head);
            let _ = Chunks::default().feed(&bytes);
        }

        /// Any bytes at all, split anywhere: no panic, and the same result as fed whole.
        #[test]
        fn any_bytes_split_anywhere(
            bytes in proptest::collection::vec(proptest::sample::select(
                b"\r\n :0123456789abcdefGETPOSTHTTP/1.content-lengthtransfer-encodingchunked".to_vec()
            ), 0..300),
            cut in 0usize..300,
        ) {
            let cut = cut.min(bytes.len());
            let (a, b) = bytes.split_at(cut);
            let (split, whole) = (fed(&[a, b]), fed(&[&bytes]));
            proptest::prop_assert_eq!(split.done, whole.done);
            proptest::prop_assert_eq!(split.lost(), whole.lost());
            proptest::prop_assert_eq!(&split.conflict, &whole.conflict);
        }
    }
}
