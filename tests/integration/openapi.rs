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

#[test]
fn no_response_schema_exposes_secrets() {
    let doc = serde_json::to_value(quorum_server::http::openapi())
        .expect("json")
        .to_string()
        .to_lowercase();
    for word in ["password_hash", "token_hash", "jwt_secret", "\"secret\""] {
        assert!(!doc.contains(word), "the API schema mentions {word}");
    }
}
