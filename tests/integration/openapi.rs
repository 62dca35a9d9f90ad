//! The OpenAPI document: generated from the handlers, served at `/api/v1/openapi.json`, and
//! snapshot-tested so every change to the API surface shows up in review.

use reqwest::StatusCode;

use crate::harness::{StoreKind, TestApp};

#[test]
fn openapi_document_snapshot() {
    let doc = serde_json::to_value(quorum_server::http::openapi()).expect("json");
    insta::assert_json_snapshot!("openapi", doc, { ".info.version" => "[version]" });
}

#[tokio::test]
async fn served_document_is_the_generated_one() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let r = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let served: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        served,
        serde_json::to_value(quorum_server::http::openapi()).expect("json")
    );
    assert_eq!(
        served["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// R6: no response schema carries a credential-like field, however deeply nested.
#[test]
fn no_response_schema_exposes_secrets() {
    use serde_json::Value;
    const DENIED: &[&str] = &[
        "password",
        "password_hash",
        "secret",
        "secret_ciphertext",
        "token_hash",
        "dsn",
        "jwt_secret",
        "master_key",
        "key_id",
    ];
    let doc = serde_json::to_value(quorum_server::http::openapi()).expect("json");
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.trim_start_matches("#/components/schemas/").to_owned());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut pending = Vec::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("operation").values() {
            refs(&op["responses"], &mut pending);
        }
    }
    let schemas = &doc["components"]["schemas"];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let schema = &schemas[&name];
        if let Some(props) = schema["properties"].as_object() {
            for key in props.keys() {
                assert!(
                    !DENIED.contains(&key.as_str()),
                    "response schema {name} has a field {key}"
                );
            }
        }
        refs(schema, &mut pending);
    }
    assert!(
        seen.contains("InstanceView") && seen.contains("UserView"),
        "the walk reached the response schemas: {seen:?}"
    );
}

/// Every `$ref` names a schema the document defines (generators such as openapi-typescript,
/// which the frontend's types come from, refuse dangling references).
#[test]
fn every_reference_resolves() {
    use serde_json::Value;
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = serde_json::to_value(quorum_server::http::openapi()).expect("json");
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    let dangling: Vec<_> = found
        .iter()
        .filter(|r| {
            let name = r.trim_start_matches("#/components/schemas/");
            doc["components"]["schemas"].get(name).is_none()
        })
        .collect();
    assert!(dangling.is_empty(), "{dangling:?}");
}
