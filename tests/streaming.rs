//! Large bodies stream through the proxy in both directions with bounded memory.
//! Alone in its own test binary so the process's peak RSS belongs to this test.

mod common;

use common::{Backend, Http, Quayside, streaming_body};
use http::StatusCode;
use http_body_util::BodyExt;

const SIZE: u64 = 256 * 1024 * 1024;
/// Far below SIZE: buffering either body whole would blow through it.
const MAX_GROWTH_KB: u64 = 64 * 1024;

fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_megabytes_stream_both_ways_with_bounded_memory() {
    let b = Backend::start("b").await;
    let q = Quayside::start().await;
    let http = Http::new();
    http.get(&q.admin_url(&format!("/add?no=1&ip=127.0.0.1&port={}", b.port())))
        .await;
    // Warm up pools and allocator so the baseline is fair.
    let r = http
        .send(
            http::Request::post(q.proxy_url("/upload"))
                .body(streaming_body(1 << 20))
                .unwrap(),
        )
        .await;
    assert_eq!(r.body, format!("{}\n", 1 << 20));
    let base = peak_rss_kb();

    // Upload: the backend counts the bytes it receives.
    let r = http
        .send(
            http::Request::post(q.proxy_url("/upload"))
                .body(streaming_body(SIZE))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, format!("{SIZE}\n"));

    // Download: count bytes as they arrive, never holding the body.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<common::BoxBody>();
    let resp = client
        .request(
            http::Request::get(q.proxy_url(&format!("/download?bytes={SIZE}")))
                .body(common::full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            got += d.len() as u64;
        }
    }
    assert_eq!(got, SIZE);

    let growth = peak_rss_kb().saturating_sub(base);
    eprintln!(
        "peak RSS grew by {growth} kB while streaming 2 x {} MiB",
        SIZE >> 20
    );
    assert!(growth < MAX_GROWTH_KB, "peak RSS grew by {growth} kB");
}
