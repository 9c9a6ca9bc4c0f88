//! The access log: one line per request (those quayside answered itself too), in JSON or the
//! common log format, to a file or stdout.
//!
//! A request's line is formatted on the worker that served it into that worker's buffer (a
//! lock only the writer also takes, briefly, to swap buffers); a thread of its own writes the
//! buffers out. A slow disk never blocks a request: a buffer that is full drops the line, and
//! [`AccessLog::dropped`] counts it (a metric). `SIGUSR1` makes the writer reopen the file
//! (logrotate's `postrotate`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::proxy::plan::{Observe, Record};

/// Bytes a worker's buffer holds before lines are dropped.
const BUFFER: usize = 1 << 20;
const SHARDS: usize = 64;
/// How often the writer looks at the buffers.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    /// The common log format (`host - - [time] "request" status bytes`).
    Common,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {path}: {source}; check --access-log")]
pub struct OpenError {
    path: String,
    source: std::io::Error,
}

pub struct AccessLog {
    format: Format,
    shards: Box<[Mutex<Vec<u8>>]>,
    dropped: AtomicU64,
    reopen: AtomicBool,
}

impl AccessLog {
    pub fn new(format: Format) -> Arc<AccessLog> {
        Arc::new(AccessLog {
            format,
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            dropped: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
        })
    }

    /// Lines dropped because a buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Reopen the file at the next write (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Open `target` and start the writer thread; it writes until `stop` says so, then once
    /// more and returns.
    pub fn start(
        self: &Arc<Self>,
        target: Target,
        stop: Arc<AtomicBool>,
    ) -> Result<std::thread::JoinHandle<()>, OpenError> {
        let mut out = open(&target)?;
        let log = self.clone();
        let spawned = std::thread::Builder::new()
            .name("qs-access-log".into())
            .spawn(move || {
                let mut spare = Vec::new();
                loop {
                    let stopping = stop.load(Ordering::Relaxed);
                    if log.reopen.swap(false, Ordering::Relaxed) {
                        match open(&target) {
                            Ok(o) => {
                                out = o;
                                tracing::info!(?target, "access log reopened");
                            }
                            Err(e) => tracing::error!(error = %e, "keeping the old access log file"),
                        }
                    }
                    for shard in log.shards.iter() {
                        std::mem::swap(
                            &mut *shard.lock().unwrap_or_else(|e| e.into_inner()),
                            &mut spare,
                        );
                        if !spare.is_empty() {
                            if let Err(e) = out.write_all(&spare) {
                                tracing::warn!(error = %e, "cannot write the access log; its lines are lost until it works again");
                            }
                            spare.clear();
                        }
                    }
                    let _ = out.flush();
                    if stopping {
                        return;
                    }
                    std::thread::sleep(FLUSH_EVERY);
                }
            });
        spawned.map_err(|source| OpenError {
            path: "(writer thread)".into(),
            source,
        })
    }
}

fn open(target: &Target) -> Result<Box<dyn std::io::Write + Send>, OpenError> {
    match target {
        Target::Stdout => Ok(Box::new(std::io::stdout())),
        Target::File(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map(|f| Box::new(std::io::BufWriter::new(f)) as Box<dyn std::io::Write + Send>)
            .map_err(|source| OpenError {
                path: p.display().to_string(),
                source,
            }),
    }
}

thread_local! {
    /// Each worker formats its line here before taking its buffer's lock.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl Observe for AccessLog {
    fn request(&self, r: &Record<'_>) {
        LINE.with_borrow_mut(|line| {
            line.clear();
            match self.format {
                Format::Json => json_line(line, r),
                Format::Common => common_line(line, r),
            }
            let shard = &self.shards[crate::proxy::worker_index() % SHARDS];
            let mut buf = shard.lock().unwrap_or_else(|e| e.into_inner());
            if buf.len() + line.len() > BUFFER {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                buf.extend_from_slice(line.as_bytes());
            }
        });
    }

    fn details(&self) -> bool {
        true
    }
}

/// A JSON string, escaped.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

thread_local! {
    /// The time as RFC 3339 up to the second, and the second it is for: formatted once a
    /// second per worker, not per line.
    static SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Now, as RFC 3339 in UTC with milliseconds.
fn now_rfc3339(out: &mut String) {
    let now = SystemTime::now();
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != since.as_secs() {
            *second = since.as_secs();
            text.clear();
            // "2026-12-01T20:41:07Z" without the "Z".
            let full = humantime::format_rfc3339_seconds(now).to_string();
            text.push_str(full.trim_end_matches('Z'));
        }
        out.push_str(text);
    });
    let _ = write!(out, ".{:03}Z", since.subsec_millis());
}

fn json_line(out: &mut String, r: &Record<'_>) {
    out.push_str("{\"time\":\"");
    now_rfc3339(out);
    out.push('"');
    let field = |out: &mut String, name: &str, v: &str| {
        let _ = write!(out, ",\"{name}\":");
        string(out, v);
    };
    let m = r.meta;
    // (Addresses need no escaping: written as they are.)
    match m {
        Some(m) => {
            let _ = write!(out, ",\"client\":\"{}\"", m.client);
        }
        None => out.push_str(",\"client\":\"\""),
    }
    field(out, "method", m.map_or("", |m| m.method));
    field(out, "host", m.map_or("", |m| m.host));
    field(out, "path", m.map_or("", |m| m.target));
    field(out, "proto", m.map_or("", |m| m.proto));
    let _ = write!(
        out,
        ",\"status\":{},\"bytes_sent\":{},\"outcome\":\"{}\",\"duration_ms\":{:.3}",
        r.status,
        r.body_bytes,
        r.outcome.as_str(),
        r.duration.as_secs_f64() * 1000.0
    );
    match r.upstream {
        Some(u) => {
            let _ = write!(out, ",\"upstream_ms\":{:.3}", u.as_secs_f64() * 1000.0);
        }
        None => out.push_str(",\"upstream_ms\":null"),
    }
    field(out, "service", r.service.map_or("", |s| s.name.as_str()));
    field(out, "backend", r.backend.map_or("", |b| b.no.as_str()));
    match r.backend {
        Some(b) => {
            let _ = write!(out, ",\"upstream\":\"{}\"", b.addr);
        }
        None => out.push_str(",\"upstream\":\"\""),
    }
    let _ = write!(out, ",\"attempts\":{}", r.attempts);
    field(out, "request_id", m.map_or("", |m| m.request_id));
    let _ = write!(out, ",\"tls\":{}", m.is_some_and(|m| m.tls));
    field(out, "user_agent", m.map_or("", |m| m.user_agent));
    out.push_str("}\n");
}

/// `client - - [01/Dec/2026:20:00:00 +0000] "GET /path HTTP/1.1" 200 123`.
fn common_line(out: &mut String, r: &Record<'_>) {
    let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    // 2026-12-01T20:00:00Z
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = t
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("Jan");
    match r.meta {
        Some(m) => {
            let _ = write!(out, "{}", m.client);
        }
        None => out.push('-'),
    }
    let _ = write!(
        out,
        " - - [{}/{month}/{}:{} +0000] \"",
        t.get(8..10).unwrap_or("01"),
        t.get(0..4).unwrap_or("1970"),
        t.get(11..19).unwrap_or("00:00:00"),
    );
    match r.meta {
        Some(m) => {
            quoted(out, m.method);
            out.push(' ');
            quoted(out, m.target);
            out.push(' ');
            out.push_str(m.proto);
        }
        None => out.push('-'),
    }
    let _ = write!(out, "\" {} ", r.status);
    if r.body_bytes == 0 {
        out.push_str("-\n");
    } else {
        let _ = writeln!(out, "{}", r.body_bytes);
    }
}

/// Text inside the common format's quotes, escaped as nginx escapes it: `"` and `\\` with a
/// backslash, control characters as `\\xHH`, so nothing a client sends ends the field or the
/// line.
fn quoted(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_time_is_rfc3339_with_milliseconds() {
        let mut a = String::new();
        now_rfc3339(&mut a);
        let mut b = String::new();
        now_rfc3339(&mut b);
        for t in [&a, &b] {
            assert_eq!(t.len(), 24, "{t}");
            assert!(humantime::parse_rfc3339(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn the_common_formats_request_cannot_be_broken_out_of() {
        let mut s = String::new();
        quoted(
            &mut s,
            "/x\\\"a\\\" 200 9\n1.2.3.4 - - [x] \"GET / HTTP/1.1\u{7f}",
        );
        assert_eq!(
            s,
            "/x\\\\\\\"a\\\\\\\" 200 9\\x0A1.2.3.4 - - [x] \\\"GET / HTTP/1.1\\x7F"
        );
        // Every quote left in the field is escaped: an unescaped one would end it.
        let unescaped = s
            .char_indices()
            .filter(|(i, c)| {
                *c == '"' && s[..*i].chars().rev().take_while(|c| *c == '\\').count() % 2 == 0
            })
            .count();
        assert_eq!(unescaped, 0, "{s}");
        assert!(!s.contains('\n'));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\u000ad\u0001é""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }
}
