//! The state journal's framing: what a record looks like on disk and how a journal is read
//! back, PostgreSQL's WAL rule: every record is checked (its length and a CRC-32), only a torn
//! last record (a crash in the middle of an append, never acknowledged) is dropped, and
//! anything else that is not a record refuses to start. Pure: no I/O.
//!
//! A record is `#LLLLLLLLCCCCCCCC JSON\n`: `#`, the JSON's length and its CRC-32 (IEEE) as 8 hex
//! digits each, a space, the JSON (one line), a newline. Journals written before records were
//! checked hold bare JSON lines (`[...]\n`); those still load, checked only by parsing. The
//! file is zero-filled ahead of its records (preallocation), so the journal ends at the first
//! zero byte after a record.

/// Bytes before a record's JSON: `#`, two 8-digit hex numbers and a space.
const HEADER: usize = 18;

/// One record's bytes, ready to be appended.
pub fn frame(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + json.len() + 1);
    out.extend_from_slice(format!("#{:08x}{:08x} ", json.len(), crc32fast::hash(json)).as_bytes());
    out.extend_from_slice(json);
    out.push(b'\n');
    out
}

/// A journal read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Read<'a> {
    /// Each record's offset and JSON, in order.
    pub records: Vec<(usize, &'a [u8])>,
    /// Where the last whole record ends: the journal's length once a torn tail is cut off.
    pub end: usize,
    /// Where a torn last record starts, if there is one (it was never acknowledged).
    pub torn: Option<usize>,
}

/// Why a journal is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset}: {why}")]
pub struct Corrupt {
    pub offset: usize,
    pub why: &'static str,
}

/// Read a journal's bytes: its records, or why it cannot be trusted.
pub fn read(bytes: &[u8]) -> Result<Read<'_>, Corrupt> {
    let mut records = Vec::new();
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        if rest.iter().all(|&b| b == 0) {
            // The end: nothing, or the zeros preallocated after the records.
            return Ok(Read {
                records,
                end: at,
                torn: None,
            });
        }
        match record(rest) {
            Some((json, len)) => {
                records.push((at, json));
                at += len;
            }
            None => {
                // Not a whole record. The last one, torn by a crash, if no record follows it;
                // anything else (damage in the middle, stray bytes) loses acknowledged
                // records, so it is refused.
                if (at + 1..bytes.len()).any(|i| starts_record(&bytes[i..])) {
                    return Err(Corrupt {
                        offset: at,
                        why: if rest[0] == 0 {
                            "zero bytes in the middle of the journal, followed by records"
                        } else {
                            "a damaged record, followed by records"
                        },
                    });
                }
                return Ok(Read {
                    records,
                    end: at,
                    torn: Some(at),
                });
            }
        }
    }
}

/// The record at the start of `b`: its JSON and its length on disk.
fn record(b: &[u8]) -> Option<(&[u8], usize)> {
    match b.first()? {
        b'#' => {
            let (len, crc) = (hex(b.get(1..9)?)?, hex(b.get(9..17)?)?);
            let len = usize::try_from(len).ok()?;
            if b.get(17) != Some(&b' ') {
                return None;
            }
            let json = b.get(HEADER..HEADER + len)?;
            (b.get(HEADER + len) == Some(&b'\n') && crc32fast::hash(json) == crc)
                .then_some((json, HEADER + len + 1))
        }
        // A line written before records were checked: a JSON array, one line.
        b'[' => {
            let nl = b.iter().position(|&c| c == b'\n')?;
            let line = &b[..nl];
            (!line.contains(&0) && serde_json::from_slice::<serde_json::Value>(line).is_ok())
                .then_some((line, nl + 1))
        }
        _ => None,
    }
}

/// Whether a whole record starts at the beginning of `b` (one after a bad spot means the bad
/// spot was not the journal's torn end). An unchecked line counts only after a newline.
fn starts_record(b: &[u8]) -> bool {
    match b.first() {
        Some(b'#') => record(b).is_some(),
        Some(b'\n') => b.get(1) == Some(&b'[') && record(&b[1..]).is_some(),
        _ => false,
    }
}

fn hex(digits: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(digits).ok()?;
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn journal(records: &[&str], zeros: usize) -> Vec<u8> {
        let mut out: Vec<u8> = records.iter().flat_map(|r| frame(r.as_bytes())).collect();
        out.extend(std::iter::repeat_n(0, zeros));
        out
    }

    #[test]
    fn records_round_trip_before_the_zeros() {
        let j = journal(&["[1]", "[2,3]"], 100);
        let r = read(&j).unwrap();
        let jsons: Vec<&[u8]> = r.records.iter().map(|(_, j)| *j).collect();
        assert_eq!(jsons, [&b"[1]"[..], b"[2,3]"]);
        assert_eq!((r.end, r.torn), (j.len() - 100, None));
        assert_eq!(
            frame(b"[]"),
            format!("#00000002{:08x} []\n", crc32fast::hash(b"[]")).as_bytes()
        );
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_said_where() {
        let whole = journal(&["[1]", "[2]"], 0);
        let second = frame(b"[2]").len();
        for cut in 1..second {
            let mut j = whole[..whole.len() - cut].to_vec();
            j.extend([0u8; 64]);
            let r = read(&j).unwrap();
            assert_eq!(r.records.len(), 1, "cut {cut}");
            assert_eq!(r.torn, Some(whole.len() - second), "cut {cut}");
        }
        // Torn as pages can tear: its start never reached the disk, its end did.
        let mut j = journal(&["[1]"], 0);
        let start = j.len();
        let mut last = frame(br#"[{"a":"0123456789"}]"#);
        last[..10].fill(0);
        j.extend(last);
        j.extend([0u8; 32]);
        assert_eq!(read(&j).unwrap().torn, Some(start));
    }

    #[test]
    fn damage_before_a_record_refuses_the_journal() {
        // The issue's case: four zero bytes after the first line, two acknowledged lines after.
        let mut j = journal(&["[1]"], 0);
        let at = j.len();
        j.extend([0u8; 4]);
        j.extend(journal(&["[2]", "[3]"], 64));
        let e = read(&j).unwrap_err();
        assert_eq!(e.offset, at);
        assert!(e.why.contains("zero bytes"), "{e}");
        // A flipped bit in a record with another after it.
        let mut j = journal(&["[1]", "[22]", "[3]"], 0);
        let second = frame(b"[1]").len();
        j[second + HEADER + 1] = b'3';
        let e = read(&j).unwrap_err();
        assert_eq!(e.offset, second);
        // Stray bytes before a record.
        let mut j = b"xx".to_vec();
        j.extend(journal(&["[1]"], 0));
        assert_eq!(read(&j).unwrap_err().offset, 0);
    }

    #[test]
    fn journals_of_unchecked_lines_still_load() {
        let mut j = b"[1]\n[2]\n".to_vec();
        j.extend(frame(b"[3]"));
        j.extend(b"[4,"); // a torn unchecked line
        j.extend([0u8; 16]);
        let r = read(&j).unwrap();
        assert_eq!(r.records.len(), 3);
        assert_eq!(r.torn, Some(8 + frame(b"[3]").len()));
        // Damage among them is still damage.
        let mut j = b"[1]\n\0\0\0\0[2]\n[3]\n".to_vec();
        j.extend([0u8; 8]);
        assert_eq!(read(&j).unwrap_err().offset, 4);
    }

    proptest! {
        /// Cutting a journal anywhere (a crash mid-append) loses at most its last record and
        /// never refuses it; every whole record before the cut is read back.
        #[test]
        fn any_cut_keeps_every_whole_record(
            records in proptest::collection::vec("\\[[0-9a-z,\"]{0,40}\\]", 1..8),
            cut_at in any::<proptest::sample::Index>(),
            zeros in 0usize..64,
        ) {
            let refs: Vec<&str> = records.iter().map(String::as_str).collect();
            let whole = journal(&refs, 0);
            let cut = cut_at.index(whole.len() + 1);
            let mut j = whole[..cut].to_vec();
            j.extend(std::iter::repeat_n(0, zeros));
            let r = read(&j).unwrap();
            let mut ends = 0;
            let mut complete = 0;
            for rec in &refs {
                ends += frame(rec.as_bytes()).len();
                if ends <= cut {
                    complete += 1;
                }
            }
            prop_assert_eq!(r.records.len(), complete);
            prop_assert_eq!(r.torn.is_some(), cut < whole.len() && r.end < cut);
        }
    }
}
