//! One record per request from the one request plan, whichever front served it: the fast path
//! (plain HTTP/1.1) and hyper's side (HTTP/2 here) hand the same facts to the observer.

mod common;

use std::sync::{Arc, Mutex};

use common::{Backend, Http, Quayside, eventually, full, test_config};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use quayside::proxy::plan::{Front, Observe, Record};

/// What a test keeps of a record.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    front: Front,
    service: Option<String>,
    backend: Option<String>,
    status: u16,
    attempts: u32,
    body_bytes: u64,
    answered: bool,
}

#[derive(Default)]
struct Collect(Mutex<Vec<Seen>>);

impl Observe for Collect {
    fn request(&self, r: &Record<'_>) {
        self.0.lock().unwrap().push(Seen {
            front: r.front,
            service: r.service.map(|s| s.name.clone()),
            backend: r.backend.map(|b| b.no.clone()),
            status: r.status,
            attempts: r.attempts,
            body_bytes: r.body_bytes,
            answered: r.upstream.is_some(),
        });
    }
}

async fn start() -> (Quayside, Arc<Collect>) {
    let seen = Arc::new(Collect::default());
    let mut c = test_config();
    c.proxy.observer = Some(seen.clone());
    (Quayside::start_with(c).await, seen)
}

/// Send one GET on `front`; the status and body the client got.
async fn get(q: &Quayside, front: Front, path: &str) -> (StatusCode, String) {
    match front {
        Front::Fast => {
            let r = Http::new().get(&q.proxy_url(path)).await;
            (r.status, r.body)
        }
        Front::Hyper => {
            let req = Request::get(q.proxy_url(path)).body(full("")).unwrap();
            let resp = common::h2_client().request(req).await.unwrap();
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    }
}

/// The records so far, once there are `n`.
async fn records(seen: &Collect, n: usize) -> Vec<Seen> {
    eventually(5, &format!("{n} records"), || async {
        let v = seen.0.lock().unwrap().clone();
        (v.len() >= n).then_some(v)
    })
    .await
}

/// A port nothing listens on.
async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn both_fronts_record_the_same_facts_for_an_answered_request() {
    let b = Backend::start("a").await;
    for front in [Front::Fast, Front::Hyper] {
        let (q, seen) = start().await;
        q.add("a", &b).await;
        let (status, body) = get(&q, front, "/x").await;
        assert_eq!(status, StatusCode::OK);
        let got = records(&seen, 1).await;
        assert_eq!(
            got,
            vec![Seen {
                front,
                service: Some("default".into()),
                backend: Some("a".into()),
                status: 200,
                attempts: 1,
                body_bytes: body.len() as u64,
                answered: true,
            }],
            "{front:?}"
        );
    }
}

#[tokio::test]
async fn both_fronts_record_what_quayside_answered_itself() {
    let dead = dead_port().await;
    for front in [Front::Fast, Front::Hyper] {
        let (q, seen) = start().await;
        // No backend: 503, no backend in the record, nothing tried.
        let (status, body) = get(&q, front, "/").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        // A backend that refuses connections: 502 naming it, one attempt.
        let add = format!("/add?no=dead&ip=127.0.0.1&port={dead}");
        assert_eq!(Http::new().get(&q.admin_url(&add)).await.status, 200);
        let (status2, body2) = get(&q, front, "/").await;
        assert_eq!(status2, StatusCode::BAD_GATEWAY, "{body2}");
        let got = records(&seen, 2).await;
        let expect = |status: u16, backend: Option<&str>, attempts, body: &str| Seen {
            front,
            service: Some("default".into()),
            backend: backend.map(Into::into),
            status,
            attempts,
            body_bytes: body.len() as u64,
            answered: false,
        };
        assert_eq!(
            got,
            vec![
                expect(503, None, 0, &body),
                expect(502, Some("dead"), 1, &body2)
            ],
            "{front:?}"
        );
    }
}

#[tokio::test]
async fn both_fronts_record_a_retry_as_two_attempts() {
    let b = Backend::start("a").await;
    let dead = dead_port().await;
    for front in [Front::Fast, Front::Hyper] {
        let (q, seen) = start().await;
        let http = Http::new();
        let r = http
            .method(
                "PUT",
                &q.admin_url("/api/v1/services/default"),
                r#"{"lb":"round_robin"}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let add = format!("/add?no=dead&ip=127.0.0.1&port={dead}");
        assert_eq!(http.get(&q.admin_url(&add)).await.status, 200);
        q.add("a", &b).await;
        // Round robin starts one of two requests at the dead backend; the retry answers.
        for _ in 0..2 {
            let (status, body) = get(&q, front, "/").await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "a\n"));
        }
        let got = records(&seen, 2).await;
        assert!(
            got.iter()
                .all(|s| s.front == front && s.status == 200 && s.backend.as_deref() == Some("a")),
            "{got:?}"
        );
        assert!(got.iter().any(|s| s.attempts == 2), "{got:?}");
    }
}
