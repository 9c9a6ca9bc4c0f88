//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven through WebDriver. It loads the page from a running quayside, sees
//! the backends, drains one with its button (confirmed), sees the change in the page and
//! through the API, sees a backend added through the API appear without a reload, follows the
//! live figures, works from the keyboard and at phone width, asks for a token where one is
//! needed (and disables its actions for a read-only one), and logs no console errors.
//! One chromedriver and one browser session for the whole file.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Backend, Http, Quayside, eventually, test_config};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use quayside::admin::Token;
use serde_json::{Value, json};

/// chromedriver on a port of its own, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    eventually(20, "chromedriver listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await;
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,800", "--no-first-run"],
    });
    if std::path::Path::new("/usr/bin/chromium").exists() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    let caps = json!({
        "goog:chromeOptions": options,
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

/// A chromedriver command beyond WebDriver's: POST `session/<id>/<path>` with `body`.
#[derive(Debug)]
struct Chromedriver(&'static str, Value);

impl WebDriverCompatibleCommand for Chromedriver {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/{}",
            session.unwrap_or_default(),
            self.0
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.1.to_string()))
    }
}

/// Console entries at error level since the last call (chromedriver's log endpoint).
async fn console_errors(c: &Client) -> Vec<String> {
    let log = c
        .issue_cmd(Chromedriver("se/log", json!({"type": "browser"})))
        .await
        .expect("the browser log");
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The text of the first element `css` finds, if any.
async fn text_of(c: &Client, css: &str) -> Option<String> {
    let e = c.find(Locator::Css(css)).await.ok()?;
    e.text().await.ok()
}

async fn wait_text(c: &Client, css: &str, want: &str) {
    eventually(10, &format!("{css} reads {want:?}"), || async {
        (text_of(c, css).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

async fn button(c: &Client, no: &str, name: &str) -> fantoccini::elements::Element {
    c.find(Locator::XPath(&format!(
        "//tr[@data-no='{no}']//button[normalize-space()='{name}']"
    )))
    .await
    .unwrap_or_else(|e| panic!("{name} button of {no}: {e}"))
}

async fn api_state(q: &Quayside, no: &str, token: Option<&str>) -> String {
    let mut req = http::Request::get(q.admin_url(&format!("/api/v1/backends/{no}")));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = Http::new().send(req.body(common::full("")).unwrap()).await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["state"].as_str().unwrap_or_default().to_owned()
}

/// Click Confirm in the confirmation dialog, once it asks a question containing `asks`.
async fn confirm(c: &Client, asks: &str) {
    let ok = c
        .wait()
        .for_element(Locator::Css("#confirm-dialog[open] #confirm-ok"))
        .await
        .unwrap();
    let question = text_of(c, "#confirm-text").await.unwrap();
    assert!(question.contains(asks), "{question}");
    ok.click().await.unwrap();
}

/// Enter on whatever has the focus.
async fn press_enter(c: &Client) {
    let focused = c.active_element().await.unwrap();
    focused.send_keys("\u{E007}").await.unwrap();
}

/// Requests through the proxy until dropped, so the figures move.
struct Traffic(Arc<AtomicBool>);

impl Traffic {
    fn start(q: &Quayside) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, url) = (stop.clone(), q.proxy_url("/"));
        tokio::spawn(async move {
            let http = Http::new();
            while !s.load(Ordering::Relaxed) {
                http.get_host(&url, "web.test").await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Traffic(stop)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_pool_and_acts_on_it() {
    if !common::have_tool("chromedriver", "apt-get install chromium chromium-driver") {
        return;
    }
    let driver = start_driver().await;
    let c = browser(&driver).await;
    let (b1, b2, b3) = (
        Backend::start("b1").await,
        Backend::start("b2").await,
        Backend::start("b3").await,
    );

    // No tokens, on loopback: no prompt, everything allowed.
    let q = Quayside::start().await;
    let http = Http::new();
    for (no, b) in [("a1", &b1), ("a2", &b2)] {
        let url = format!("/add?no={no}&ip=127.0.0.1&port={}&service=web", b.port());
        assert_eq!(http.get(&q.admin_url(&url)).await.status, 200);
    }
    let r = http
        .method(
            "PUT",
            &q.admin_url("/api/v1/services/web"),
            r#"{"hosts": ["web.test"], "lb": "least_conn"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let traffic = Traffic::start(&q);

    c.goto(&q.admin_url("/")).await.unwrap();
    // The console is read for real: an error logged on purpose is seen (and so cleared).
    c.execute("console.error('quayside-test-marker')", vec![])
        .await
        .unwrap();
    let seen = console_errors(&c).await;
    assert!(
        seen.iter().any(|m| m.contains("quayside-test-marker")),
        "the browser log is read: {seen:?}"
    );
    let url = c.current_url().await.unwrap();
    assert_eq!(url.path(), "/dashboard/", "/ leads to the dashboard");
    wait_text(&c, "tr[data-no='a1'] td.state", "active").await;
    wait_text(&c, "tr[data-no='a2'] td.state", "active").await;
    assert!(
        c.find(Locator::Css("#token-dialog[open]")).await.is_err(),
        "no token prompt without tokens"
    );
    let rules = text_of(&c, "article[data-service='web'] .rules")
        .await
        .unwrap();
    assert!(
        rules.contains("web.test") && rules.contains("least_conn"),
        "the service's rules: {rules}"
    );
    // Without a TLS listener nothing is served over HTTPS: the certificates' section says so
    // and lists no name (not the service's host name as lacking a certificate).
    eventually(10, "the section says HTTPS is off", || async {
        let summary = text_of(&c, "#tls-summary").await?;
        summary.contains("HTTPS is off").then_some(())
    })
    .await;
    assert!(
        c.find(Locator::Css("#tls tr")).await.is_err(),
        "no certificate rows without HTTPS"
    );
    // (A picture of the certificates' section, to look at beside the README's.)
    c.execute("document.getElementById('tls-h').scrollIntoView()", vec![])
        .await
        .unwrap();
    let shot = c.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-tls.png");
    std::fs::write(&path, shot).unwrap();
    c.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    // Live figures: requests per second appear while the traffic runs.
    eventually(15, "a1's requests per second above 0", || async {
        let t = text_of(&c, "tr[data-no='a1'] td.rps").await?;
        (t.parse::<f64>().ok()? > 0.0).then_some(())
    })
    .await;
    let chart = c
        .find(Locator::Css(
            "article[data-service='web'] svg.chart polyline.rps",
        ))
        .await
        .unwrap();
    assert!(
        chart
            .attr("points")
            .await
            .unwrap()
            .is_some_and(|p| p.contains(',')),
        "the service's chart is drawn"
    );

    // Drain a1 by its button, confirmed.
    c.execute("window.__sameDocument = true;", vec![])
        .await
        .unwrap();
    button(&c, "a1", "Drain").await.click().await.unwrap();
    confirm(&c, "Drain a1").await;
    wait_text(&c, "tr[data-no='a1'] td.state", "draining").await;
    assert_eq!(api_state(&q, "a1", None).await, "draining");
    assert!(
        !button(&c, "a1", "Drain").await.is_enabled().await.unwrap(),
        "Drain is disabled on a draining backend"
    );

    // Added through the API: it appears without a reload, and the drain shows as an event.
    let url = format!("/add?no=a3&ip=127.0.0.1&port={}&service=web", b3.port());
    assert_eq!(http.get(&q.admin_url(&url)).await.status, 200);
    wait_text(&c, "tr[data-no='a3'] td.state", "active").await;
    // The drain shows in the timeline with who made it (the page's own call, as the API's).
    eventually(
        10,
        "the drained event in the timeline, by the page's caller",
        || async {
            for li in c.find_all(Locator::Css("#events li")).await.ok()? {
                let t = li.text().await.ok()?;
                if t.contains("drained") && t.contains("by 127.0.0.1 (no token)") {
                    return Some(());
                }
            }
            None
        },
    )
    .await;
    let same = c
        .execute("return window.__sameDocument === true;", vec![])
        .await;
    assert_eq!(same.unwrap(), json!(true), "the page was not reloaded");

    // From the keyboard: Enable a1 with Enter on its button and on Confirm.
    c.execute(
        "document.evaluate(\"//tr[@data-no='a1']//button[normalize-space()='Enable']\", document, null, 9, null).singleNodeValue.focus();",
        vec![],
    )
    .await
    .unwrap();
    press_enter(&c).await;
    c.wait()
        .for_element(Locator::Css("#confirm-dialog[open]"))
        .await
        .unwrap();
    press_enter(&c).await;
    wait_text(&c, "tr[data-no='a1'] td.state", "active").await;
    assert_eq!(api_state(&q, "a1", None).await, "active");

    // Delete a3 by its button: the row goes, and so does the entry.
    button(&c, "a3", "Delete").await.click().await.unwrap();
    confirm(&c, "Delete a3").await;
    eventually(10, "a3's row gone", || async {
        c.find(Locator::Css("tr[data-no='a3']"))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let r = http.get(&q.admin_url("/api/v1/backends/a3")).await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Dark when the system is: the page follows prefers-color-scheme.
    let background = "return getComputedStyle(document.body).backgroundColor;";
    let light = c.execute(background, vec![]).await.unwrap();
    let media = |scheme: &str| {
        json!({"cmd": "Emulation.setEmulatedMedia",
               "params": {"features": [{"name": "prefers-color-scheme", "value": scheme}]}})
    };
    c.issue_cmd(Chromedriver("goog/cdp/execute", media("dark")))
        .await
        .unwrap();
    let dark = c.execute(background, vec![]).await.unwrap();
    assert_ne!(light, dark, "a dark background in dark mode");
    assert_eq!(dark, json!("rgb(13, 17, 23)"));
    c.issue_cmd(Chromedriver("goog/cdp/execute", media("light")))
        .await
        .unwrap();

    // (The README's screenshot: with some seconds of the chart drawn.)
    eventually(20, "ten seconds of points in the chart", || async {
        let points = chart.attr("points").await.ok()??;
        (points.split(' ').count() >= 10).then_some(())
    })
    .await;
    let shot = c.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, shot).unwrap();
    eprintln!("screenshot at 1280x800: {}", path.display());

    // Phone width: nothing wider than the screen.
    c.set_window_size(390, 844).await.unwrap();
    eventually(10, "no horizontal scrolling at phone width", || async {
        let w = c
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .ok()?;
        (w[0].as_f64()? <= w[1].as_f64()?).then_some(())
    })
    .await;
    c.set_window_size(1280, 800).await.unwrap();

    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    // (Away from the page first: its calls to a stopped server would be errors.)
    c.goto("about:blank").await.unwrap();
    drop(traffic);
    q.shutdown().await.unwrap();

    // With tokens: the page asks for one; with the read token its actions are disabled.
    let mut config = test_config();
    config.admin.token = Some(Token::new("dash-admin"));
    config.admin.read_token = Some(Token::new("dash-read"));
    let q = Quayside::start_with(config).await;
    let add =
        http::Request::get(q.admin_url(&format!("/add?no=t1&ip=127.0.0.1&port={}", b1.port())))
            .header("authorization", "Bearer dash-admin")
            .body(common::full(""))
            .unwrap();
    assert_eq!(http.send(add).await.status, 200);
    c.goto(&q.admin_url("/dashboard/")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("#token-dialog[open] #token-input"))
        .await
        .unwrap();
    // Cancelled: the page says a token is what is missing (not that discovery is off).
    c.find(Locator::XPath(
        "//dialog[@id='token-dialog']//button[normalize-space()='Cancel']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    wait_text(
        &c,
        "#sources p.empty",
        "Not shown: this page has no token (Token, top right).",
    )
    .await;
    c.find(Locator::Id("token-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let input = c
        .wait()
        .for_element(Locator::Css("#token-dialog[open] #token-input"))
        .await
        .unwrap();
    // The token and a real Enter key (WebDriver's U+E007): the form's first submit button
    // is "Use token" (it was Cancel, and Enter threw the token away).
    input.send_keys("dash-read\u{E007}").await.unwrap();
    wait_text(&c, "tr[data-no='t1'] td.state", "active").await;
    wait_text(&c, "#access", "read-only").await;
    for name in ["Drain", "Enable", "Pin", "Delete"] {
        assert!(
            !button(&c, "t1", name).await.is_enabled().await.unwrap(),
            "{name} is disabled for the read token"
        );
    }
    let stored = c
        .execute("return sessionStorage.getItem('quayside-token');", vec![])
        .await
        .unwrap();
    assert_eq!(
        stored,
        json!("dash-read"),
        "the token is kept in sessionStorage"
    );
    assert!(
        !c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains("dash-read"),
        "never in the URL"
    );
    assert_eq!(api_state(&q, "t1", Some("dash-read")).await, "active");
    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    c.goto("about:blank").await.unwrap();
    q.shutdown().await.unwrap();

    // With Docker: the source, a container's backend, and a container not routed with why.
    if common::docker::available() {
        let s = common::docker::Scope::new();
        let q = s.quayside().await;
        let good = s.run("good", &[s.label("enable", "true")], &[]);
        s.run("bad", &[s.label("port", "eighty")], &[]);
        common::docker::wait_routed(&http, &q, "x", &good).await;
        c.goto(&q.admin_url("/dashboard/")).await.unwrap();
        let no = s.name("good");
        wait_text(
            &c,
            &format!("tr[data-no='{no}'] td.source"),
            "docker: default",
        )
        .await;
        wait_text(
            &c,
            "#sources tr[data-source='default'] td.state",
            "connected",
        )
        .await;
        // Pin the container's entry to another address, then delete the pin: the container's
        // address is back.
        let container_addr = text_of(&c, &format!("tr[data-no='{no}'] td.address"))
            .await
            .unwrap();
        button(&c, &no, "Pin").await.click().await.unwrap();
        let port = c
            .wait()
            .for_element(Locator::Css("#pin-dialog[open] #pin-port"))
            .await
            .unwrap();
        port.clear().await.unwrap();
        port.send_keys(&b1.port().to_string()).await.unwrap();
        let address = c.find(Locator::Css("#pin-address")).await.unwrap();
        address.clear().await.unwrap();
        address.send_keys("127.0.0.1").await.unwrap();
        c.find(Locator::XPath(
            "//dialog[@id='pin-dialog']//button[normalize-space()='Pin']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        confirm(&c, &format!("Pin {no} to 127.0.0.1:{}", b1.port())).await;
        wait_text(&c, &format!("tr[data-no='{no}'] td.pinned"), "pinned").await;
        wait_text(
            &c,
            &format!("tr[data-no='{no}'] td.address"),
            &format!("127.0.0.1:{}", b1.port()),
        )
        .await;
        button(&c, &no, "Delete").await.click().await.unwrap();
        confirm(&c, &format!("Delete {no}")).await;
        wait_text(&c, &format!("tr[data-no='{no}'] td.pinned"), "–").await;
        wait_text(
            &c,
            &format!("tr[data-no='{no}'] td.address"),
            &container_addr,
        )
        .await;
        let bad = s.name("bad");
        eventually(10, "the bad container listed as not routed", || async {
            let t = text_of(&c, "#unrouted").await?;
            (t.contains(&bad) && t.contains("eighty")).then_some(())
        })
        .await;
        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "console errors: {errors:#?}");
        c.goto("about:blank").await.unwrap();
        q.shutdown().await.unwrap();
    }
    c.close().await.unwrap();
}
