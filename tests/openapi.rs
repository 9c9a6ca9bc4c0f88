//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document of the whole admin API, served by the
//! running server. Every route the router has is an operation of the document and every
//! operation is a route; every reference resolves; the guard's token and refusals are
//! documented as the guard applies them. (`.ci/run` also fuzzes the running API from this
//! document with Schemathesis: `scripts/fuzz-admin.sh`.)

mod common;

use std::collections::BTreeSet;

use common::{Http, Quayside};
use quayside::admin::Access;
use serde_json::Value;

async fn document() -> Value {
    let q = Quayside::start().await;
    let r = Http::new().get(&q.admin_url("/api/v1/openapi.json")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    serde_json::from_str(&r.body).expect("the document is JSON")
}

#[tokio::test]
async fn the_document_and_the_router_have_the_same_routes() {
    let doc = document().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                documented.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    let mut routed = BTreeSet::new();
    for (path, methods, _) in quayside::admin::route_list() {
        for m in methods.split(", ") {
            routed.insert((path.to_string(), m.to_owned()));
        }
    }
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes not in the document: {missing:?}"
    );
    assert!(extra.is_empty(), "operations that are no route: {extra:?}");
    assert!(routed.len() >= 28, "only {} route methods", routed.len());
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().unwrap_or_default().to_owned());
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_reference_resolves_and_the_guard_is_documented() {
    let doc = document().await;
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(
        all.len() > 20,
        "the responses refer to their types: {}",
        all.len()
    );
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a reference outside the schemas: {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
    for (path, methods, access) in quayside::admin::route_list() {
        for m in methods.split(", ") {
            let method: http::Method = m.parse().unwrap();
            let op = &doc["paths"][path][m.to_lowercase()];
            let access = access.unwrap_or_else(|| Access::of_method(&method));
            let what = format!("{m} {path}");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.contains_key("403"),
                "{what}: the Host check's 403"
            );
            if access == Access::Open {
                assert_eq!(op["security"], serde_json::json!([{}]), "{what} is open");
                assert!(!responses.contains_key("401"), "{what}");
            } else {
                assert_eq!(op["security"], serde_json::json!([{"token": []}]), "{what}");
                assert!(responses.contains_key("401"), "{what}: no token, 401");
            }
            // Answers under /api/ are JSON, the others text (as the routes answer).
            if let Some(c) = op["responses"]["401"]["content"].as_object() {
                let want = if path.starts_with("/api/") {
                    "application/json"
                } else {
                    "text/plain"
                };
                assert!(c.contains_key(want), "{what}: 401 as {want}");
            }
        }
    }
    // A backend as the API answers it, field by field.
    let backend = &doc["components"]["schemas"]["BackendView"]["properties"];
    for field in [
        "no",
        "address",
        "port",
        "weight",
        "service",
        "source",
        "endpoint",
        "state",
        "container_id",
        "pinned",
        "health",
    ] {
        assert!(backend[field].is_object(), "BackendView.{field}");
    }
}
