//! Liveness, readiness and metrics endpoints (outside `/api/v1`, unauthenticated, not rate-limited).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready when the store answers within two seconds. The body also says whether scripts can run
/// (`sandbox`: `preparing`, `ready` or `unavailable`), which does not change the status: a portal
/// whose sandbox is down still serves everything else.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
    let (status, mut body) = match ping {
        Ok(Ok(())) => (StatusCode::OK, json!({ "status": "ready" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "status": "unavailable", "reason": "store unreachable" }),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unavailable", "reason": "store timed out" }),
        ),
    };
    body["sandbox"] = json!(state.sandbox.readiness().as_str());
    (status, axum::Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    let ready = state.sandbox.readiness() == crate::sandbox::Readiness::Ready;
    super::metrics::gauge(
        &mut text,
        "quorum_sandbox_ready",
        "1 when scripts can run (the sandbox's guest is compiled), else 0.",
        u8::from(ready),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
