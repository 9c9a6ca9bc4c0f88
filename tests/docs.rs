//! The README says what the code does: its label table is the code's list of labels, and the
//! outputs it shows for the admin API are what a running quayside answers.

mod common;

use common::{Http, Quayside, test_config};
use quayside::discovery::labels::LABELS;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The README's `console` blocks: each command (after `$ `) with the output shown under it.
fn shown_commands(readme: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        match (inside, line) {
            (false, "```console") => inside = true,
            (true, "```") => inside = false,
            (true, l) => match l.strip_prefix("$ ") {
                Some(cmd) => out.push((cmd.to_owned(), String::new())),
                None => {
                    if let Some((_, shown)) = out.last_mut() {
                        shown.push_str(l);
                        shown.push('\n');
                    }
                }
            },
            _ => {}
        }
    }
    out
}

/// The admin API's answers the README shows (the seed walkthrough's `/add`, `/get`,
/// `/delete`, the OpenAPI summary) are what the server answers, run in order as shown.
#[tokio::test]
async fn the_readme_shows_what_the_admin_api_answers() {
    let q = Quayside::start_with(test_config()).await;
    let http = Http::new();
    let mut checked = 0;
    for (cmd, shown) in shown_commands(&readme()) {
        // `curl '127.0.0.1:8001/PATH'` (the seed API, on the default admin address).
        let plain = cmd
            .strip_prefix("curl '127.0.0.1:8001")
            .and_then(|rest| rest.strip_suffix('\''));
        if let Some(path) = plain {
            let got = http.get(&q.admin_url(path)).await.body;
            assert_eq!(got, shown, "README: $ {cmd}");
            checked += 1;
        } else if cmd.contains("/api/v1/openapi.json") && cmd.contains("len(d[\"paths\"])") {
            let doc: serde_json::Value =
                serde_json::from_str(&http.get(&q.admin_url("/api/v1/openapi.json")).await.body)
                    .unwrap();
            let got = format!(
                "{} {} paths\n",
                doc["openapi"].as_str().unwrap(),
                doc["paths"].as_object().unwrap().len()
            );
            assert_eq!(got, shown, "README: $ {cmd}");
            checked += 1;
        }
    }
    // An entry as the README shows one (the drain's answer): the same fields, nested alike,
    // as a manual entry's (which has no container id).
    let (cmd, shown) = shown_commands(&readme())
        .into_iter()
        .find(|(c, _)| c.contains("/api/v1/backends/web-1/drain"))
        .expect("the README's drain example");
    let shown: serde_json::Value =
        serde_json::from_str(&shown).unwrap_or_else(|e| panic!("README: $ {cmd}: {e}"));
    let add = "/api/v1/backends/web-1";
    let put = http
        .send(
            http::Request::put(q.admin_url(add))
                .body(common::full(r#"{"address": "127.0.0.1", "port": 80}"#))
                .unwrap(),
        )
        .await;
    assert!(put.status.is_success(), "{}", put.body);
    let drained = http
        .send(
            http::Request::post(q.admin_url("/api/v1/backends/web-1/drain"))
                .body(common::full(""))
                .unwrap(),
        )
        .await;
    let got: serde_json::Value = serde_json::from_str(&drained.body).unwrap();
    let mut want = fields(&got);
    want.insert("container_id".into());
    assert_eq!(fields(&shown), want, "README: $ {cmd}");
    checked += 1;
    // The walkthrough's two adds, two gets and a delete, the OpenAPI line and the entry.
    assert!(
        checked >= 7,
        "only {checked} of the README's outputs checked"
    );
}

/// Every field of a JSON object, nested ones as `outer.inner`.
fn fields(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            out.insert(k.clone());
            for inner in fields(v) {
                out.insert(format!("{k}.{inner}"));
            }
        }
    }
    out
}

#[test]
fn the_readme_label_table_is_the_list_of_labels() {
    let readme = readme();
    let rows: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `quayside."))
        .collect();
    let want: Vec<String> = LABELS
        .iter()
        .map(|l| format!("| `quayside.{}` | {} |", l.name, l.meaning))
        .collect();
    assert_eq!(
        rows, want,
        "README.md's label table differs from discovery::labels::LABELS"
    );
}

/// Every route of the admin API is in the README (as `/path` or `METHOD /path`).
#[test]
fn the_readme_names_every_admin_route() {
    let readme = readme();
    let missing: Vec<&str> = quayside::admin::route_list()
        .iter()
        .map(|(path, _, _)| *path)
        .filter(|p| {
            *p != "/" && !readme.contains(&format!("`{p}")) && !readme.contains(&format!(" {p}"))
        })
        .collect();
    assert!(missing.is_empty(), "README.md does not name: {missing:?}");
}
