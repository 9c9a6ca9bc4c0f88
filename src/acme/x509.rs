//! The two things quayside reads from a certificate: its validity period (to renew it in time
//! and report its expiry) and its DNS names (to know which names a configured certificate
//! serves). A small DER walk over the X.509 structure, without a parser crate: nothing else of
//! the certificate is interpreted, and anything unexpected is `None`.

use std::time::{Duration, SystemTime};

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The element at the start of `input`, which must have tag `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match element(input)? {
        (t, body, rest) if t == tag => Some((body, rest)),
        _ => None,
    }
}

const SEQUENCE: u8 = 0x30;

/// The tbsCertificate's fields after the version: serial, signature, issuer, validity, ….
fn tbs(der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    // [0] EXPLICIT version, absent for v1.
    Some(match element(tbs)? {
        (0xa0, _, rest) => rest,
        _ => tbs,
    })
}

/// `notBefore` and `notAfter`.
pub fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let fields = tbs(der)?;
    let (_, rest) = expect(fields, 0x02)?; // serialNumber
    let (_, rest) = expect(rest, SEQUENCE)?; // signature
    let (_, rest) = expect(rest, SEQUENCE)?; // issuer
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (t1, b1, rest) = element(validity)?;
    let (t2, b2, _) = element(rest)?;
    Some((time(t1, b1)?, time(t2, b2)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day, hour, min, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The DNS names of the subjectAltName extension, lowercased (none if it has none).
pub fn dns_names(der: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(fields) = tbs(der) else {
        return out;
    };
    // serial, signature, issuer, validity, subject, subjectPublicKeyInfo, then the optional
    // issuerUniqueID [1], subjectUniqueID [2] and extensions [3].
    let mut rest = fields;
    for _ in 0..6 {
        match element(rest) {
            Some((_, _, r)) => rest = r,
            None => return out,
        }
    }
    while let Some((tag, body, r)) = element(rest) {
        rest = r;
        if tag != 0xa3 {
            continue;
        }
        let Some((mut exts, _)) = expect(body, SEQUENCE) else {
            return out;
        };
        while let Some((ext, r)) = expect(exts, SEQUENCE) {
            exts = r;
            let Some((oid, mut value)) = expect(ext, 0x06) else {
                continue;
            };
            if oid != [0x55, 0x1d, 0x11] {
                continue;
            }
            if let Some((_, r)) = expect(value, 0x01) {
                value = r; // critical
            }
            let Some((octets, _)) = expect(value, 0x04) else {
                continue;
            };
            let Some((mut names, _)) = expect(octets, SEQUENCE) else {
                continue;
            };
            while let Some((tag, name, r)) = element(names) {
                names = r;
                if tag == 0x82
                    && let Ok(s) = std::str::from_utf8(name)
                {
                    out.push(s.to_ascii_lowercase());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cert(names: &[&str], from: (i32, u8, u8), to: (i32, u8, u8)) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn ymd(y: i64, m: i64, d: i64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs((days_from_civil(y, m, d) * 86_400) as u64)
    }

    #[test]
    fn reads_validity_and_names() {
        let der = cert(
            &["App.Example.com", "*.example.org"],
            (2026, 1, 2),
            (2026, 4, 2),
        );
        assert_eq!(validity(&der), Some((ymd(2026, 1, 2), ymd(2026, 4, 2))));
        assert_eq!(dns_names(&der), ["app.example.com", "*.example.org"]);
    }

    #[test]
    fn both_time_forms() {
        // Until 2049 UTCTime, from 2050 GeneralizedTime.
        let der = cert(&["a.test"], (1999, 12, 31), (2051, 3, 1));
        assert_eq!(validity(&der), Some((ymd(1999, 12, 31), ymd(2051, 3, 1))));
    }

    #[test]
    fn the_epoch_is_day_zero() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(validity(b""), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
        assert!(dns_names(&[0x30, 0x03, 0x30, 0x01, 0x02]).is_empty());
        let der = cert(&["a.test"], (2026, 1, 2), (2026, 4, 2));
        for cut in [1, 10, 100, der.len() - 1] {
            assert_eq!(validity(&der[..cut]), None);
        }
    }

    proptest! {
        #[test]
        fn any_dates_read_back(y1 in 1970i32..2100, d1 in 1u8..28, m1 in 1u8..=12, days in 1u64..4000) {
            let from = ymd(i64::from(y1), i64::from(m1), i64::from(d1));
            let until = from + Duration::from_secs(days * 86_400);
            let secs = until.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
            // Back from days to a civil date, by search from the start date's year.
            let mut y = y1 as i64;
            while days_from_civil(y + 1, 1, 1) * 86_400 <= secs { y += 1; }
            let mut m = 1;
            while m < 12 && days_from_civil(y, m + 1, 1) * 86_400 <= secs { m += 1; }
            let d = secs / 86_400 - days_from_civil(y, m, 1) + 1;
            let der = cert(&["a.test"], (y1, m1, d1), (y as i32, m as u8, d as u8));
            prop_assert_eq!(validity(&der), Some((from, until)));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validity(&bytes);
            let _ = dns_names(&bytes);
        }
    }
}
