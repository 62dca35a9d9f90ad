//! HTTP behaviour every endpoint shares: the error envelope, bad input of every kind, security
//! headers, health, readiness and metrics.

use std::io::{Read, Write};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Actor, StoreKind, TestApp};
use crate::store_tests;

async fn send_raw(
    app: &TestApp,
    token: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let body_for_retry = body.clone();
    let mut req = app
        .client
        .post(app.url("/api/v1/pods"))
        .bearer_auth(token)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        // The portal may answer (413) and close before a large body is all sent; the client then
        // fails writing it. Send it again on a plain socket, which reads the answer regardless.
        Err(e) if e.is_request() => raw_post(app, token, content_type, &body_for_retry).await,
        Err(e) => panic!("send: {e}"),
    }
}

/// `POST /api/v1/pods` on a plain socket: writes what it can of the body and reads the answer.
async fn raw_post(
    app: &TestApp,
    token: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value) {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut head = format!(
        "POST /api/v1/pods HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    let body = body.to_vec();
    let response = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(head.as_bytes()).expect("write the head");
        // The answer may come, and the socket close, before the body is all written.
        let _ = s.write_all(&body);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("join");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let json = response
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

store_tests! {
    async fn bad_bodies_get_a_4xx_with_a_code_and_write_nothing(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let json_ct = Some("application/json");
        let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
            (json_ct, b"{".to_vec(), 400, "malformed_json"),
            (json_ct, b"".to_vec(), 400, "malformed_json"),
            (json_ct, "[".repeat(100_000).into_bytes(), 400, "malformed_json"),
            (json_ct, br#"{"name": 1e999999}"#.to_vec(), 400, "malformed_json"),
            (json_ct, vec![0xff, 0xfe, 0x00, 0x7b], 400, "malformed_json"),
            (json_ct, br#"{"name": "x\u0000y"}"#.to_vec(), 422, "invalid_character"),
            (json_ct, br#"{"name": "ok-pod", "status": "approved"}"#.to_vec(), 422, "unknown_field"),
            (json_ct, br#"{"name": "a", "name": "b"}"#.to_vec(), 422, "duplicate_field"),
            (json_ct, br#"{"name": ["x"]}"#.to_vec(), 422, "invalid_body"),
            (json_ct, br#"{}"#.to_vec(), 422, "missing_field"),
            (Some("text/plain"), br#"{"name": "ok-pod"}"#.to_vec(), 415, "unsupported_media_type"),
            (None, br#"{"name": "ok-pod"}"#.to_vec(), 415, "unsupported_media_type"),
            (Some("application/json; charset=utf-16"), br#"{"name": "ok-pod"}"#.to_vec(), 415, "unsupported_media_type"),
            (json_ct, format!(r#"{{"name": "{}"}}"#, "x".repeat(1_100_000)).into_bytes(), 413, "payload_too_large"),
        ];
        for (ct, body, status, code) in cases {
            let preview = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
            let (s, b) = send_raw(&app, &admin.token, ct, body).await;
            assert_eq!((s.as_u16(), b["error"]["code"].as_str()), (status, Some(code)), "{ct:?} {preview} → {b}");
            assert!(b["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(b["error"]["request_id"].is_string());
        }
        let (_, pods) = app.get("/api/v1/pods", &admin.token).await;
        assert_eq!(pods["total"], 2, "nothing was written");
    }

    async fn malformed_ids_are_400_and_unknown_ids_404(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let long = "a".repeat(10_000);
        for bad in ["not-a-uuid", "%00", "..%2F..%2Fetc", long.as_str(), "0190f5a47d3c7b1e9f002b6c1d8e4a10"] {
            let (s, b) = app.get(&format!("/api/v1/users/{bad}"), &admin.token).await;
            assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_id")), "{bad}");
        }
        let id = app.user_id("dan@example.com").await;
        assert_eq!(app.get(&format!("/api/v1/users/{}", id.to_uppercase()), &admin.token).await.0, StatusCode::OK);
        let (s, b) = app.get(&format!("/api/v1/users/{}", uuid::Uuid::new_v4()), &admin.token).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    }

    async fn health_readiness_metrics_and_headers(kind) {
        let app = TestApp::spawn(kind).await;
        let r = app.client.get(app.url("/healthz")).send().await.expect("healthz");
        assert_eq!(r.status(), StatusCode::OK);
        let r = app.client.get(app.url("/readyz")).send().await.expect("readyz");
        assert_eq!(r.status(), StatusCode::OK);
        let s = app.login(Actor::Developer).await;
        let r = app.client.get(app.url("/api/v1/me")).bearer_auth(&s.token).header("x-request-id", "trace-123").send().await.expect("me");
        let h = r.headers();
        assert_eq!(h["x-request-id"], "trace-123");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
        assert!(h["content-security-policy"].to_str().expect("ascii").contains("frame-ancestors 'none'"));
        assert!(h.get("strict-transport-security").is_none(), "HSTS only when configured");
        let text = app.metrics().await;
        assert!(text.contains(r#"quorum_http_requests_total{method="GET",route="/api/v1/me",status="200"} 1"#), "{text}");
        assert!(text.contains(r#"quorum_http_request_duration_seconds_bucket{method="POST",route="/api/v1/auth/login",status="200",le="+Inf"} 1"#), "{text}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let admin = app.login(Actor::Admin).await;
    let (s, b) = app.get("/api/v1/nothing-here", &admin.token).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("route_not_found"))
    );
    let (s, b) = app
        .call(
            Method::PUT,
            "/api/v1/me",
            Some(&admin.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    let (s, _) = app
        .call(Method::DELETE, "/api/v1/users", Some(&admin.token), None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn hsts_when_configured_and_forwarded_for_only_from_trusted_proxies() {
    let app = TestApp::spawn_with(
        StoreKind::Sqlite,
        "[server]\nhsts = true\ntrusted_proxies = [\"127.0.0.0/8\"]",
    )
    .await;
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", "198.51.100.23")
        .json(&json!({"email": "dan@example.com", "password": crate::harness::PASSWORD}))
        .send()
        .await
        .expect("login");
    assert!(
        r.headers()["strict-transport-security"]
            .to_str()
            .expect("ascii")
            .contains("max-age=")
    );
    let s = crate::harness::Session::from_login(r).await;
    let (_, sessions) = app.get("/api/v1/auth/sessions", &s.token).await;
    assert_eq!(sessions[0]["ip"], "198.51.100.23");

    let untrusted = TestApp::spawn(StoreKind::Sqlite).await;
    let r = untrusted
        .client
        .post(untrusted.url("/api/v1/auth/login"))
        .header("x-forwarded-for", "198.51.100.23")
        .json(&json!({"email": "dan@example.com", "password": crate::harness::PASSWORD}))
        .send()
        .await
        .expect("login");
    let s = crate::harness::Session::from_login(r).await;
    let (_, sessions) = untrusted.get("/api/v1/auth/sessions", &s.token).await;
    assert_eq!(sessions[0]["ip"], "127.0.0.1", "spoofed header ignored");
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_it_is_sent() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let handle = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        // Claims 100 MiB but sends only the headers: the answer must come without the body.
        write!(s, "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n").expect("write");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let response = handle.await.expect("join");
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"), "{response}");
}

#[tokio::test]
async fn graceful_shutdown_returns_cleanly() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    app.login(Actor::Developer).await;
    let dir = app.stop().await;
    assert!(dir.path().exists());
}

/// The browser UI: app routes fall back to `index.html` (revalidated on every load), hashed
/// assets are cached for a year, a missing asset is a 404, and API paths never get the app.
#[tokio::test]
async fn the_ui_is_served_with_a_fallback_and_cache_headers() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    let page = get("/requests/0190f5a4-7d3c-7b1e-9f00-2b6c1d8e4a10")
        .await
        .expect("get");
    assert_eq!(page.status(), StatusCode::OK);
    let header = |r: &reqwest::Response, h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header(&page, "content-type").starts_with("text/html"));
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert!(header(&page, "content-security-policy").contains("script-src 'self'"));
    let html = page.text().await.expect("text");
    // Built (`cargo xtask test` builds it first): the app's hashed script is cached for a year.
    // Not built: the page says how to build it.
    match html
        .split("src=\"/assets/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
    {
        Some(asset) => {
            let r = get(&format!("/assets/{asset}")).await.expect("asset");
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(
                header(&r, "cache-control"),
                "public, max-age=31536000, immutable"
            );
            assert!(header(&r, "content-type").contains("javascript"));
        }
        None => assert!(html.contains("npm run build"), "{html}"),
    }
    let missing = get("/assets/not-there-1234.js").await.expect("missing");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let api = get("/api/v2/anything").await.expect("api");
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    assert!(header(&api, "content-type").starts_with("application/json"));
    let post = app
        .client
        .post(app.url("/requests"))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
}
