//! Secrets stay secret: what the read token, the events stream, `/api/v1/discovery` and the log
//! show of password hashes, secret header values and a forward-auth URL's credentials is
//! `<redacted>`; the admin token reads them whole, and a redacted value sent back is refused.
//! The log is this test process's own tracing output, written by quayside's text formatter.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use common::docker::Scope;
use common::{EventStream, Http, Quayside, full, test_config};
use http::Request;
use quayside::admin::Token;
use serde_json::{Value, json};

const ADMIN: &str = "secrets-admin";
const READ: &str = "secrets-read";

/// Everything logged by this test process, as quayside's text log writes it.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buf.clone());
        tracing_subscriber::fmt()
            .fmt_fields(quayside::logging::EscapedFields)
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .init();
        buf
    })
}

fn logged() -> String {
    String::from_utf8_lossy(&log().lock().unwrap()).into_owned()
}

async fn call(q: &Quayside, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(q.admin_url(path))
        .header("authorization", format!("Bearer {token}"))
        .body(full(body.to_owned()))
        .unwrap();
    let r = Http::new().send(req).await;
    (r.status.as_u16(), r.body)
}

#[tokio::test]
async fn the_read_token_events_and_the_log_never_show_a_secret() {
    log();
    let mut c = test_config();
    c.admin.token = Some(Token::new(ADMIN));
    c.admin.read_token = Some(Token::new(READ));
    let q = Quayside::start_with(c).await;
    let mut events = EventStream::open(&q, READ, None).await;
    let hash = bcrypt::hash("pw", 4).unwrap();
    let settings = json!({
        "hosts": ["app.test"],
        "basic_auth": [format!("alice:{hash}"), "bob:$apr1$rPYgkAtb$aVRtlzTrL8jPBfCJSls43."],
        "forward_auth": {"url": "http://fa:hunter2@127.0.0.1:9/check?api_key=k3y1&x=1"},
        "headers": {
            "request": {"Authorization": "Bearer s3cr3t-t0ken", "X-Api-Key": "k3y2", "X-Env": "prod"},
            "response": {"Set-Cookie": "sid=c00kie"}
        }
    });
    let secrets = [
        &hash[7..],
        "rPYgkAtb",
        "hunter2",
        "k3y1",
        "s3cr3t-t0ken",
        "k3y2",
        "c00kie",
    ];
    let (st, body) = call(
        &q,
        ADMIN,
        "PUT",
        "/api/v1/services/app",
        &settings.to_string(),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    for path in ["/api/v1/services/app", "/api/v1/services"] {
        let (st, body) = call(&q, READ, "GET", path, "").await;
        assert_eq!(st, 200, "{body}");
        for s in secrets {
            assert!(!body.contains(s), "{path} shows {s}: {body}");
        }
        for shown in [
            "alice:<redacted>",
            "bob:<redacted>",
            "http://fa:<redacted>@127.0.0.1:9/check?api_key=<redacted>&x=1",
            "prod",
        ] {
            assert!(body.contains(shown), "{path} lacks {shown}: {body}");
        }
    }
    // The event says what changed, redacted.
    let (_, kind, event) = events.next().await;
    assert_eq!(kind, "service_set");
    let text = event.to_string();
    assert!(text.contains("alice:<redacted>"), "{text}");
    for s in secrets {
        assert!(!text.contains(s), "the event shows {s}: {text}");
    }

    // The admin token reads them whole, so GET then PUT round-trips.
    let (_, whole) = call(&q, ADMIN, "GET", "/api/v1/services/app", "").await;
    assert!(whole.contains(&hash), "{whole}");
    let (st, again) = call(&q, ADMIN, "PUT", "/api/v1/services/app", &whole).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(
        serde_json::from_str::<Value>(&again).unwrap(),
        serde_json::from_str::<Value>(&whole).unwrap()
    );
    // What the read token saw, sent back, is refused and changes nothing.
    let (_, redacted) = call(&q, READ, "GET", "/api/v1/services/app", "").await;
    let (st, why) = call(&q, ADMIN, "PUT", "/api/v1/services/app", &redacted).await;
    assert_eq!(st, 400, "{why}");
    assert!(
        why.contains("basic_auth") && why.contains("<redacted>"),
        "{why}"
    );
    let (_, still) = call(&q, ADMIN, "GET", "/api/v1/services/app", "").await;
    assert_eq!(still, whole);

    let log = logged();
    assert!(log.contains("routing changed by hand"), "{log}");
    for s in secrets {
        assert!(!log.contains(s), "the log shows {s}");
    }
}

/// A rejected label is reported in `/api/v1/discovery` and the log with its secret redacted;
/// a label value with a newline stays on its log line.
#[tokio::test]
async fn rejected_labels_are_reported_without_their_secrets() {
    if !common::docker::available() {
        return;
    }
    log();
    let s = Scope::new();
    let q = s.quayside().await;
    let http = Http::new();
    s.run("basic", &[s.label("auth.basic", "alice:plainpw")], &[]);
    s.run(
        "url",
        &[
            s.label("auth.forward.url", "ftp://u:hunter3@auth/"),
            s.label("host", "url.test"),
        ],
        &[],
    );
    s.run(
        "forged",
        &[s.label("weight", "1\n2026-12-07T00:00:00Z  INFO quayside: FORGED")],
        &[],
    );
    for (suffix, label, shown) in [
        ("basic", "auth.basic", "alice:<redacted>"),
        ("url", "auth.forward.url", "ftp://u:<redacted>@auth/"),
    ] {
        let name = s.name(suffix);
        let v = common::eventually(10, "the bad label reported", || async {
            let all: Value =
                serde_json::from_str(&http.get(&q.admin_url("/api/v1/discovery")).await.body)
                    .unwrap();
            all["sources"][0]["containers"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == name.as_str() && c["detail"]["kind"] == "bad_label")
                .cloned()
        })
        .await;
        assert_eq!(v["detail"]["label"], format!("{}.{label}", s.prefix()));
        assert_eq!(v["detail"]["value"], shown, "{v}");
        let text = v.to_string();
        assert!(
            !text.contains("plainpw") && !text.contains("hunter3"),
            "{text}"
        );
    }
    let forged = s.name("forged");
    common::eventually(10, "the forged container's warning", || async {
        logged().contains(&forged).then_some(())
    })
    .await;
    let log = logged();
    assert!(
        !log.contains("plainpw") && !log.contains("hunter3"),
        "{log}"
    );
    assert!(log.contains("alice:<redacted>"), "{log}");
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-12-07T00:00:00Z"),
            "a forged line: {line}"
        );
    }
}
