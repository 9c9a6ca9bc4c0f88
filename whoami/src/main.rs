//! whoami: a tiny HTTP/1.1 server, std only, so it links statically in seconds and runs in a
//! `FROM scratch` image.
//!
//! Answers every request with its name (first line), then the request line and headers it saw.
//! - `GET /health`: 200 while healthy, 503 after `/health/fail`, healthy again after `/health/ok`.
//! - `GET /slow?ms=N`: waits N ms first.
//!
//! Settings (env): `PORT` (default 80), `WHOAMI_NAME` (default the host name),
//! `WHOAMI_IGNORE_SIGTERM=1` (keep serving on SIGTERM, like a server that never stops cleanly),
//! `WHOAMI_DELAY_MS` (wait this long before every answer: a slow backend),
//! `WHOAMI_SIGTERM_503=MS` (like many real servers on SIGTERM: MS milliseconds later it answers
//! every request with 503 and closes the connection, for 2 s, then exits).
//! `whoami check [PORT]` is a HEALTHCHECK client: exits 0 if `/health` answers 200.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static UNHEALTHY: AtomicBool = AtomicBool::new(false);
/// SIGTERM arrived (set by the signal handler, read by the thread that acts on it).
static TERMINATED: AtomicBool = AtomicBool::new(false);
/// Answering 503 to everything: the server is on its way out.
static STOPPING: AtomicBool = AtomicBool::new(false);

extern "C" fn note_term(_: i32) {
    TERMINATED.store(true, Ordering::SeqCst);
}

unsafe extern "C" {
    fn signal(sig: i32, handler: usize) -> usize;
    fn _exit(code: i32) -> !;
}

extern "C" fn exit_now(_: i32) {
    unsafe { _exit(0) }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(80);
    if args.get(1).map(String::as_str) == Some("check") {
        let port = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(port);
        std::process::exit(if check(port) { 0 } else { 1 });
    }
    const SIGTERM: i32 = 15;
    const SIGINT: i32 = 2;
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let handler = if flag("WHOAMI_IGNORE_SIGTERM") {
        1 // SIG_IGN
    } else if let Some(after) = std::env::var("WHOAMI_SIGTERM_503")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        // Only an atomic store in the handler; the rest happens on an ordinary thread.
        std::thread::spawn(move || {
            while !TERMINATED.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(after));
            STOPPING.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(2));
            std::process::exit(0);
        });
        note_term as *const () as usize
    } else {
        exit_now as *const () as usize
    };
    unsafe {
        signal(SIGTERM, handler);
        signal(SIGINT, exit_now as *const () as usize);
    }
    let name = std::env::var("WHOAMI_NAME").unwrap_or_else(|_| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "whoami".to_owned())
    });
    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| {
        eprintln!("whoami: cannot listen on port {port}: {e}");
        std::process::exit(1)
    });
    let delay = Duration::from_millis(
        std::env::var("WHOAMI_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    eprintln!("whoami {name} listening on port {port}");
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &name, delay);
        });
    }
}

fn check(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200"
}

fn serve(stream: TcpStream, name: &str, delay: Duration) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut headers = Vec::new();
        let mut content_length = 0usize;
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                } else if k == "connection" {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
            headers.push(line);
        }
        // Discard any request body.
        std::io::copy(
            &mut (&mut reader).take(content_length as u64),
            &mut std::io::sink(),
        )?;
        let target = request_line.split_whitespace().nth(1).unwrap_or("/");
        if !delay.is_zero() && !target.starts_with("/health") {
            std::thread::sleep(delay);
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut status = "200 OK";
        if STOPPING.load(Ordering::SeqCst) {
            status = "503 Service Unavailable";
            close = true;
        }
        match path {
            "/health" if UNHEALTHY.load(Ordering::SeqCst) => status = "503 Service Unavailable",
            "/health/fail" => UNHEALTHY.store(true, Ordering::SeqCst),
            "/health/ok" => UNHEALTHY.store(false, Ordering::SeqCst),
            "/slow" => {
                let ms = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
            }
            _ => {}
        }
        let mut body = format!("{name}\n{}", request_line.trim_end());
        for h in &headers {
            body.push('\n');
            body.push_str(h);
        }
        body.push('\n');
        // One write for the whole answer: `write!` on the socket would send each piece of the
        // format on its own, and a container killed between them would leave a truncated
        // response that no proxy can retry (its head was already relayed).
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        out.write_all(answer.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}
