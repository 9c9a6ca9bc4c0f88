//! churn: admin API changes at a fixed rate, from a cheap client, so a benchmark charges the
//! proxy (not a Python load generator) for table changes under load.
//!
//! `churn ADMIN_ADDR RATE SECONDS` alternates `/add?no=churnK…` and `/delete?no=churnK` for 50
//! entries of the service `churn` over one keepalive connection; prints one line: changes
//! applied, the rate achieved, and the number of answers that were not 200.
//!
//! `churn ADDR RATE SECONDS get` sends the same sequence of requests as `GET /get?no=churnK`
//! (changing nothing): what serving the requests alone costs, on quayside's admin API or on
//! any server that answers 200 to every path (nginx `return 200`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: churn ADMIN_ADDR RATE SECONDS [get]");
        std::process::exit(2);
    }
    let rate: f64 = args[2].parse().expect("RATE");
    let secs: f64 = args[3].parse().expect("SECONDS");
    let read_only = args.get(4).is_some_and(|m| m == "get");
    let s = TcpStream::connect(&args[1]).expect("connect to the admin API");
    s.set_nodelay(true).ok();
    let mut w = s.try_clone().expect("clone socket");
    let mut r = BufReader::new(s);
    let start = Instant::now();
    let (mut done, mut failed) = (0u64, 0u64);
    let mut line = String::new();
    while start.elapsed().as_secs_f64() < secs {
        let k = done % 100;
        let req = if read_only {
            format!(
                "GET /get?no=churn{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                k / 2
            )
        } else if k % 2 == 0 {
            format!(
                "GET /add?no=churn{}&ip=127.0.0.1&port=18081&service=churn HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                k / 2
            )
        } else {
            format!(
                "GET /delete?no=churn{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                k / 2
            )
        };
        w.write_all(req.as_bytes()).expect("send");
        // Status line, headers up to the blank line, then Content-Length bytes.
        line.clear();
        r.read_line(&mut line).expect("status");
        // (`/get` of an entry that is not there answers 404: fine when only reading.)
        let ok = line.split(' ').nth(1) == Some("200") || read_only;
        let mut len = 0usize;
        loop {
            line.clear();
            r.read_line(&mut line).expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).expect("body");
        done += 1;
        failed += u64::from(!ok);
        let due = start + Duration::from_secs_f64(done as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "changes {done} rate {:.0}/s failed {failed}",
        done as f64 / el
    );
}
