//! The one rule for a request's path, applied before routing on every front (README, "Paths"):
//! what routing, every middleware and the backend see is the same path, however the client
//! spelled it.
//!
//! - Percent-encoded unreserved characters are decoded (`%73` is `s`, `%2e` is `.`), and the
//!   hex digits of every other escape are upper-cased (RFC 3986 §6.2.2.1-2).
//! - Repeated slashes are merged; `.` and `..` segments are resolved (§5.2.4, §6.2.2.3).
//! - A `..` above the root, a NUL (`%00`) or a `%` without two hex digits is refused.
//!
//! That is the path forwarded ([`Normal::forward`]). Rules (a service's `path_prefix`) match a
//! stricter reading of it ([`Normal::matching`]), the one a backend that decodes more than it
//! should would serve: `%2F` and `%5C` read as `/` there, and a segment's path parameters
//! (`;…`, as servlet containers strip them, so `/..;/` is `/../`) are dropped, before slashes
//! and dot segments are resolved again. The forwarded path keeps `%2F` and `%5C` encoded, so
//! APIs that carry an encoded slash inside a segment (`projects/group%2Fproject`) still work.
//!
//! A path that is already normal costs one scan and nothing is allocated.

use std::borrow::Cow;

/// Why a path is refused (a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.as_str())]
pub enum PathError {
    Nul,
    AboveRoot,
    BadEscape,
}

impl PathError {
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::Nul => "the path has a NUL byte (%00)",
            PathError::AboveRoot => "the path goes above the root with '..'",
            PathError::BadEscape => "the path has a '%' that is not followed by two hex digits",
        }
    }
}

/// A path under the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normal<'a> {
    /// The path the backend gets.
    pub forward: Cow<'a, str>,
    /// What rules match, when it differs from `forward`.
    matching: Option<Box<str>>,
}

impl Normal<'_> {
    /// The path that rules (a service's `path_prefix`) are matched against.
    #[inline]
    pub fn matching(&self) -> &str {
        self.matching.as_deref().unwrap_or(&self.forward)
    }

    /// Whether the path is exactly as the client sent it.
    #[inline]
    pub fn unchanged(&self) -> bool {
        matches!(self.forward, Cow::Borrowed(_))
    }
}

/// Normalise a request's path (without its query). A path that does not start with `/`
/// (`*` of `OPTIONS *`) is left as it is.
#[inline]
pub fn normalize(path: &str) -> Result<Normal<'_>, PathError> {
    if scan(path.as_bytes()).1 {
        return Ok(Normal {
            forward: Cow::Borrowed(path),
            matching: None,
        });
    }
    normalize_slow(path)
}

/// A request target (path and query) the rule changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// Path and query, as the backend gets them.
    pub forward: String,
    /// Where the path ends in `forward`.
    pub path_len: usize,
    /// The path rules match.
    pub matching: String,
}

/// A request target (path and query) under the rule: where its path ends, and what the rule
/// made of it if it changed anything (`None`: already normal; one scan, nothing allocated).
#[inline(always)]
pub fn target(raw: &str) -> Result<(usize, Option<Box<Rewritten>>), PathError> {
    match scan(raw.as_bytes()) {
        (end, true) => Ok((end, None)),
        (end, false) => rewrite(raw, end).map(|r| (end, r)),
    }
}

#[cold]
fn rewrite(raw: &str, end: usize) -> Result<Option<Box<Rewritten>>, PathError> {
    let n = normalize_slow(&raw[..end])?;
    if n.unchanged() && n.matching.is_none() {
        return Ok(None);
    }
    let matching = n.matching().to_owned();
    let path_len = n.forward.len();
    let mut forward = n.forward.into_owned();
    forward.push_str(&raw[end..]);
    Ok(Some(Box::new(Rewritten {
        forward,
        path_len,
        matching,
    })))
}

/// The one scan of a target: where its path ends (its `?`, or its end), and whether the path
/// needs nothing: no `%`, `\` or `;`, no empty, `.` or `..` segment.
#[inline(always)]
fn scan(p: &[u8]) -> (usize, bool) {
    if p.first() != Some(&b'/') {
        return (p.iter().position(|&b| b == b'?').unwrap_or(p.len()), true);
    }
    let end = |i: usize| {
        i + p[i..]
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(p.len() - i)
    };
    // The end of a segment: the next `/`, the query, or the end.
    let ends = |b: Option<&u8>| matches!(b, None | Some(b'/' | b'?'));
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'?' => return (i, true),
            b'%' | b'\\' | b';' => return (end(i), false),
            b'/' => match p.get(i + 1) {
                Some(b'/') => return (end(i), false),
                Some(b'.') if ends(p.get(i + 2)) => return (end(i), false),
                Some(b'.') if p.get(i + 2) == Some(&b'.') && ends(p.get(i + 3)) => {
                    return (end(i), false);
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    (p.len(), true)
}

#[cold]
fn normalize_slow(path: &str) -> Result<Normal<'_>, PathError> {
    let forward = resolve(&decode(path.as_bytes())?)?;
    let matching = strict(&forward)?;
    let forward = into_string(forward);
    Ok(Normal {
        matching: matching.map(|m| into_string(m).into_boxed_str()),
        forward: if forward == path {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(forward)
        },
    })
}

/// The path for rules, from the forwarded one: `None` when it is the same.
fn strict(forward: &[u8]) -> Result<Option<Vec<u8>>, PathError> {
    let has = |pat: &[u8]| forward.windows(pat.len()).any(|w| w == pat);
    if !(has(b"%2F") || has(b"%5C") || forward.contains(&b';')) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(forward.len());
    let mut i = 0;
    let mut in_params = false;
    while i < forward.len() {
        let b = forward[i];
        let slash = b == b'/'
            || matches!(
                &forward[i..],
                [b'%', b'2', b'F', ..] | [b'%', b'5', b'C', ..]
            );
        if slash {
            out.push(b'/');
            in_params = false;
            i += if b == b'/' { 1 } else { 3 };
            continue;
        }
        if b == b';' {
            in_params = true;
        }
        if !in_params {
            out.push(b);
        }
        i += 1;
    }
    resolve(&out).map(Some)
}

/// Decode escapes of unreserved characters and upper-case the others; a raw `\` is written as
/// `%5C` (it is no path character, and some servers read it as `/`).
fn decode(p: &[u8]) -> Result<Vec<u8>, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'%' => {
                let (Some(h), Some(l)) = (hex(p.get(i + 1)), hex(p.get(i + 2))) else {
                    return Err(PathError::BadEscape);
                };
                let c = (h << 4) | l;
                if c == 0 {
                    return Err(PathError::Nul);
                }
                if unreserved(c) {
                    out.push(c);
                } else {
                    out.extend_from_slice(&[b'%', HEX[usize::from(h)], HEX[usize::from(l)]]);
                }
                i += 3;
            }
            b'\\' => {
                out.extend_from_slice(b"%5C");
                i += 1;
            }
            0 => return Err(PathError::Nul),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Merge repeated slashes and resolve `.` and `..` segments of a path that starts with `/`
/// (a path that does not is returned as it is). A trailing slash is kept; a `..` above the
/// root is an error.
fn resolve(p: &[u8]) -> Result<Vec<u8>, PathError> {
    let Some(rest) = p.strip_prefix(b"/") else {
        return Ok(p.to_vec());
    };
    let mut out: Vec<u8> = Vec::with_capacity(p.len());
    let mut trailing = false;
    for seg in rest.split(|&b| b == b'/') {
        trailing = true;
        match seg {
            b"" | b"." => {}
            b".." => {
                let Some(last) = out.iter().rposition(|&b| b == b'/') else {
                    return Err(PathError::AboveRoot);
                };
                out.truncate(last);
            }
            s => {
                out.push(b'/');
                out.extend_from_slice(s);
                trailing = false;
            }
        }
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    Ok(out)
}

fn hex(b: Option<&u8>) -> Option<u8> {
    let b = *b?;
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986's unreserved characters: letters, digits, `-`, `.`, `_`, `~`.
#[inline]
pub fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The bytes are ASCII from a `&str` with ASCII-only edits, or the input's other bytes
/// unchanged, so they are UTF-8; checked anyway, never trusted.
fn into_string(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fwd(p: &str) -> String {
        normalize(p).unwrap().forward.into_owned()
    }

    fn rule(p: &str) -> String {
        normalize(p).unwrap().matching().to_owned()
    }

    #[test]
    fn the_issues_spellings_all_reach_the_same_path() {
        for p in [
            "/secret/x",
            "//secret/x",
            "/%73ecret/x",
            "/%73%65%63%72%65%74/x",
            "/./secret/x",
            "/x/../secret/x",
            "/%2e/secret/x",
            "/a/%2E%2E/secret/x",
            "/secret//x",
            "/secret/./x",
            "/secret/x/y/..",
        ] {
            let n = normalize(p).unwrap();
            let want = if p.ends_with("..") {
                "/secret/x/"
            } else {
                "/secret/x"
            };
            assert_eq!(n.matching(), want, "{p}");
            assert_eq!(n.forward, want, "{p}");
        }
        // An encoded slash is one for rules, and stays encoded for the backend.
        let n = normalize("/%2fsecret/x").unwrap();
        assert_eq!(n.matching(), "/secret/x");
        assert_eq!(n.forward, "/%2Fsecret/x");
        let n = normalize("/a%2F..%2F..%2Fsecret").unwrap_err();
        assert_eq!(n, PathError::AboveRoot);
        assert_eq!(rule("/x/a%2f..%2fsecret/y"), "/x/secret/y");
        assert_eq!(fwd("/x/a%2f..%2fsecret/y"), "/x/a%2F..%2Fsecret/y");
        assert_eq!(rule("/a%5c..%5csecret"), "/secret");
        assert_eq!(fwd("/a\\b"), "/a%5Cb");
        assert_eq!(rule("/a\\..\\secret"), "/secret");
    }

    #[test]
    fn path_parameters_are_not_part_of_a_rules_segment() {
        assert_eq!(rule("/x/..;/secret/y"), "/secret/y");
        assert_eq!(fwd("/x/..;/secret/y"), "/x/..;/secret/y");
        assert_eq!(rule("/secret;jsessionid=1/x"), "/secret/x");
        assert_eq!(rule("/a;b"), "/a");
    }

    #[test]
    fn what_is_kept_and_what_is_refused() {
        // Trailing slashes are kept; the root stays the root.
        assert_eq!(fwd("/a/"), "/a/");
        assert_eq!(fwd("/a/."), "/a/");
        assert_eq!(fwd("/a/.."), "/");
        assert_eq!(fwd("//"), "/");
        assert_eq!(fwd("/"), "/");
        // Names that only look like dot segments are names.
        assert_eq!(fwd("/a/.b/..c/.../x."), "/a/.b/..c/.../x.");
        // Escapes of reserved and other characters stay, upper-cased.
        assert_eq!(fwd("/a%20b%3f%c3%a9"), "/a%20b%3F%C3%A9");
        assert_eq!(fwd("/%7euser/%41"), "/~user/A");
        // OPTIONS * and other non-paths are left alone.
        assert_eq!(fwd("*"), "*");
        for (p, e) in [
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
            ("/a%00b", PathError::Nul),
            ("/a%", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
        ] {
            assert_eq!(normalize(p).unwrap_err(), e, "{p}");
        }
    }

    #[test]
    fn a_target_is_rewritten_only_when_its_path_changes() {
        assert_eq!(target("/a/b?x=/../%2e").unwrap(), (4, None));
        assert_eq!(target("/a%20b?q").unwrap(), (6, None));
        assert_eq!(target("*").unwrap(), (1, None));
        let (end, r) = target("//a/./b?x=//").unwrap();
        assert_eq!(end, 7);
        let r = r.unwrap();
        assert_eq!(
            (r.forward.as_str(), r.path_len, r.matching.as_str()),
            ("/a/b?x=//", 4, "/a/b")
        );
        // A dot segment ended by the query is one.
        assert_eq!(target("/a/.?q").unwrap().1.unwrap().forward, "/a/?q");
        assert_eq!(target("/a/..?q").unwrap().1.unwrap().forward, "/?q");
        let r = target("/%2fx").unwrap().1.unwrap();
        assert_eq!((r.forward.as_str(), r.matching.as_str()), ("/%2Fx", "/x"));
        assert_eq!(target("/..?q").unwrap_err(), PathError::AboveRoot);
    }

    #[test]
    fn a_normal_path_is_borrowed() {
        for p in ["/", "/a/b", "/a/b/", "/a.b/c..d/.e", "/static/app.js"] {
            let n = normalize(p).unwrap();
            assert!(matches!(n.forward, Cow::Borrowed(_)), "{p}");
            assert!(n.unchanged());
            assert_eq!(n.matching(), p);
        }
        // A path that had to be looked at but was already normal is still the client's.
        assert!(normalize("/a%20b").unwrap().unchanged());
    }

    /// A path segment with some of its characters percent-encoded at random.
    fn spelled(segment: &str, mask: u32) -> String {
        segment
            .bytes()
            .enumerate()
            .map(|(i, b)| {
                if mask & (1 << (i % 32)) != 0 {
                    format!("%{b:02x}")
                } else {
                    (b as char).to_string()
                }
            })
            .collect()
    }

    proptest! {
        /// Normalising twice changes nothing more, and neither form has an empty or dot
        /// segment left.
        #[test]
        fn idempotent_and_clean(p in "(/[a-z.%;2Ff]{0,4}){0,6}/?") {
            let Ok(n) = normalize(&p) else { return Ok(()); };
            for form in [n.forward.as_ref(), n.matching()] {
                let again = normalize(form).unwrap();
                prop_assert_eq!(again.forward.as_ref(), form);
                prop_assert!(!form.contains("//"), "{}", form);
                prop_assert!(!form.contains("/./") && !form.contains("/../"), "{}", form);
                prop_assert!(!form.ends_with("/.") && !form.ends_with("/.."), "{}", form);
            }
            prop_assert!(!n.matching().contains("%2F") && !n.matching().contains(';'));
        }

        /// However its unreserved characters are percent-encoded, a path means one thing.
        #[test]
        fn encoding_unreserved_characters_changes_nothing(
            segs in proptest::collection::vec("[A-Za-z0-9._~-]{1,6}", 1..5),
            masks in proptest::collection::vec(any::<u32>(), 5),
        ) {
            let plain: String = segs.iter().map(|s| format!("/{s}")).collect();
            let encoded: String = segs
                .iter()
                .zip(&masks)
                .map(|(s, m)| format!("/{}", spelled(s, *m)))
                .collect();
            prop_assert_eq!(normalize(&plain).map(|n| n.forward.into_owned()),
                normalize(&encoded).map(|n| n.forward.into_owned()));
        }
    }
}
