//! latency: fixed-rate HTTP/1.1 load with latency measured from the *scheduled* send time of
//! each request (as wrk2 does), so a stalled server is charged for the requests it delayed.
//!
//! `latency ADDR RATE SECONDS [CONNECTIONS [WARMUP]]` → one line: rate achieved, p50, p99,
//! p99.9, max (ms), errors. With WARMUP seconds (default 0), requests go out at RATE for that
//! long first and are not counted: the first ~50 ms of a run (64 connections just opened, every
//! process waking up) are slow for every server and otherwise make up about half of a 5-second
//! run's slowest 1 %. With `LATENCY_DUMP=FILE`, every request's scheduled time (µs from the start),
//! latency (µs) and connection number go to FILE, one per line, to see when slow ones happen.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: latency ADDR RATE SECONDS [CONNECTIONS [WARMUP]]");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let rate: f64 = args[2].parse().expect("RATE");
    let secs: f64 = args[3].parse().expect("SECONDS");
    let conns: usize = args.get(4).map_or(64, |c| c.parse().expect("CONNECTIONS"));
    let warmup: f64 = args.get(5).map_or(0.0, |w| w.parse().expect("WARMUP"));
    let skip = (rate * warmup) as u64;
    let total = skip + (rate * secs) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for conn in 0..conns {
        let (addr, next) = (addr.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut s = TcpStream::connect(&addr).await.expect("connect");
            s.set_nodelay(true).ok();
            let req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    break;
                }
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                // tokio's timer ticks in milliseconds: sleep to just before, then yield until due.
                if let Some(early) = due.checked_sub(Duration::from_millis(2)) {
                    tokio::time::sleep_until(early.into()).await;
                }
                while Instant::now() < due {
                    tokio::task::yield_now().await;
                }
                if s.write_all(req).await.is_err() || !read_response(&mut s, &mut buf).await {
                    errors += 1;
                    s = match TcpStream::connect(&addr).await {
                        Ok(s) => s,
                        Err(_) => break,
                    };
                    continue;
                }
                if k >= skip {
                    let at = due.duration_since(start).as_micros() as u64;
                    lat.push((due.elapsed().as_micros() as u64, at, conn));
                }
            }
            (lat, errors)
        }));
    }
    let mut timed = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        timed.extend(l);
        errors += e;
    }
    if let Ok(path) = std::env::var("LATENCY_DUMP") {
        timed.sort_unstable_by_key(|&(_, at, _)| at);
        let lines: String = timed
            .iter()
            .map(|(lat, at, conn)| format!("{at} {lat} {conn}\n"))
            .collect();
        std::fs::write(&path, lines).expect("LATENCY_DUMP file");
    }
    let mut all: Vec<u64> = timed.iter().map(|&(lat, _, _)| lat).collect();
    let elapsed = start.elapsed().as_secs_f64() - warmup;
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |&v| v as f64 / 1000.0)
    };
    println!(
        "rate {:.0}/s p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms max {:.3} ms errors {}",
        all.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        all.last().map_or(0.0, |&v| v as f64 / 1000.0),
        errors
    );
}

/// Read one response with a Content-Length body (what the benchmark backends send).
async fn read_response(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut have = 0;
    loop {
        let Ok(n) = s.read(&mut buf[have..]).await else {
            return false;
        };
        if n == 0 {
            return false;
        }
        have += n;
        let text = &buf[..have];
        if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&text[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if have >= end + 4 + len {
                return head.starts_with("http/1.1 2");
            }
        }
        if have == buf.len() {
            return false;
        }
    }
}
