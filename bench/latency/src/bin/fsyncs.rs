//! fsyncs: durable small writes at a fixed rate and nothing else, the way quayside's state
//! journal makes each admin change durable (a 120-byte line written over zeros already on
//! disk, then `fdatasync`), so a benchmark can tell what the disk's durability costs on this
//! machine from what quayside adds to it.
//!
//! `fsyncs PATH RATE SECONDS` prints one line: writes made and the rate achieved. The file is
//! removed at the end.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const FILE_BYTES: u64 = 1 << 20;
const LINE: usize = 120;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: fsyncs PATH RATE SECONDS");
        std::process::exit(2);
    }
    let rate: f64 = args[2].parse().expect("RATE");
    let secs: f64 = args[3].parse().expect("SECONDS");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&args[1])
        .expect("open the file");
    f.write_all_at(&vec![0u8; FILE_BYTES as usize], 0)
        .expect("preallocate");
    f.sync_all().expect("sync");
    let mut line = [b'x'; LINE];
    line[LINE - 1] = b'\n';
    let start = Instant::now();
    let mut done = 0u64;
    let mut at = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all_at(&line, at).expect("write");
        f.sync_data().expect("fdatasync");
        at = (at + LINE as u64) % (FILE_BYTES - LINE as u64);
        done += 1;
        let due = start + Duration::from_secs_f64(done as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let el = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&args[1]);
    println!("writes {done} rate {:.0}/s", done as f64 / el);
}
