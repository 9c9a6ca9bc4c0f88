//! Host and path matching: exact host beats wildcard host beats any host; within those, the
//! longest path prefix wins. Lookups allocate only when the host has upper-case letters.

use std::collections::HashMap;

/// Rules as `(host, prefix, service index)`; `host` is `None` for "any host", a wildcard is
/// stored as `*.example.com`, and an empty prefix matches every path.
#[derive(Debug, Default)]
pub struct Matcher {
    exact: HashMap<String, Vec<(String, usize)>>,
    /// Keyed by the suffix after `*` (e.g. `.example.com`).
    wildcard: HashMap<String, Vec<(String, usize)>>,
    any_host: Vec<(String, usize)>,
}

/// Whether `prefix` covers `path` whole segments at a time: `/docs` matches `/docs`, `/docs/`
/// and `/docs/a`, not `/docsx`; a prefix ending in `/` matches whatever follows it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || matches!(path.as_bytes().get(prefix.len()), None | Some(b'/' | b'?')))
}

fn longest_prefix(rules: &[(String, usize)], path: &str) -> Option<usize> {
    // Sorted longest first at build time.
    rules
        .iter()
        .find(|(p, _)| prefix_matches(p, path))
        .map(|(_, i)| *i)
}

impl Matcher {
    pub fn new(rules: Vec<(Option<String>, String, usize)>) -> Self {
        let mut m = Matcher::default();
        for (host, prefix, i) in rules {
            let list = match host {
                None => &mut m.any_host,
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => m.wildcard.entry(suffix.to_owned()).or_default(),
                    None => m.exact.entry(h).or_default(),
                },
            };
            list.push((prefix, i));
        }
        let sort = |v: &mut Vec<(String, usize)>| v.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        m.exact.values_mut().for_each(sort);
        m.wildcard.values_mut().for_each(sort);
        sort(&mut m.any_host);
        m
    }

    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(i) = self.exact.get(host).and_then(|r| longest_prefix(r, path)) {
            return Some(i);
        }
        if !self.wildcard.is_empty() {
            // `a.b.example.com` tries `.b.example.com`, then `.example.com`, then `.com`.
            for (pos, _) in host.match_indices('.') {
                if let Some(i) = self
                    .wildcard
                    .get(&host[pos..])
                    .and_then(|r| longest_prefix(r, path))
                {
                    return Some(i);
                }
            }
        }
        longest_prefix(&self.any_host, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m() -> Matcher {
        Matcher::new(vec![
            (Some("api.example.com".into()), "".into(), 1),
            (Some("api.example.com".into()), "/v2".into(), 2),
            (Some("*.example.com".into()), "".into(), 3),
            (Some("*.b.example.com".into()), "".into(), 4),
            (None, "/static".into(), 5),
            (None, "/static/img".into(), 6),
        ])
    }

    #[test]
    fn precedence() {
        let m = m();
        assert_eq!(m.find("api.example.com", "/"), Some(1));
        assert_eq!(m.find("API.Example.com", "/v2/x"), Some(2));
        assert_eq!(m.find("api.example.com.", "/v2/x"), Some(2));
        assert_eq!(m.find("www.example.com", "/static"), Some(3));
        assert_eq!(m.find("x.b.example.com", "/"), Some(4));
        assert_eq!(m.find("example.com", "/"), None);
        assert_eq!(m.find("other", "/static/img/a.png"), Some(6));
        assert_eq!(m.find("other", "/static/css"), Some(5));
        assert_eq!(m.find("other", "/"), None);
        // A prefix matches whole segments only.
        assert_eq!(m.find("other", "/staticx"), None);
        assert_eq!(m.find("other", "/static/imgx"), Some(5));
        assert_eq!(m.find("other", "/static?v=1"), Some(5));
        let slash = Matcher::new(vec![(None, "/a/".into(), 1)]);
        assert_eq!(slash.find("h", "/a/b"), Some(1));
        assert_eq!(slash.find("h", "/a"), None);
    }

    proptest! {
        /// An exact-host rule always beats a wildcard or hostless one for its host, whatever the path.
        #[test]
        fn exact_host_wins(sub in "[a-z]{1,8}", path in "/[a-z/]{0,12}") {
            let host = format!("{sub}.example.com");
            let m = Matcher::new(vec![
                (Some(host.clone()), "".into(), 1),
                (Some("*.example.com".into()), "".into(), 2),
                (None, "".into(), 3),
            ]);
            prop_assert_eq!(m.find(&host, &path), Some(1));
            prop_assert_eq!(m.find(&format!("z{sub}.example.com"), &path), Some(2));
            prop_assert_eq!(m.find("elsewhere.org", &path), Some(3));
        }

        /// Among hostless rules the longest matching prefix wins.
        #[test]
        fn longest_prefix_wins(a in "/[a-z]{1,4}", b in "[a-z]{1,4}", rest in "(/[a-z/]{0,6})?") {
            let long = format!("{a}/{b}");
            let m = Matcher::new(vec![(None, a.clone(), 1), (None, long.clone(), 2)]);
            let path = format!("{long}{rest}");
            prop_assert_eq!(m.find("h", &path), Some(2));
            prop_assert_eq!(m.find("h", &a), Some(1));
        }
    }
}
