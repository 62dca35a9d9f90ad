//! The HTTP API: one module per resource, each with its own router, assembled in `router`.

pub mod audit;
pub mod auth;
pub mod error;
pub mod executions;
pub mod extract;
pub mod frontend;
pub mod health;
pub mod instances;
pub mod me;
pub mod metrics;
pub mod middleware;
pub mod pods;
pub mod requests;
pub mod slack;
pub mod users;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_governor::GovernorLayer;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{PasswordHasher, TokenKeys};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::lockout::LockoutPolicy;
use crate::store::SharedStore;
use error::ApiError;
use metrics::Metrics;

/// Everything a handler may need, cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub clock: SharedClock,
    pub tokens: Arc<TokenKeys>,
    pub hasher: PasswordHasher,
    pub metrics: Arc<Metrics>,
    pub secrets: Arc<crate::secrets::SecretBox>,
    /// This process's id, recorded as the owner of the executions it runs.
    pub process: Arc<str>,
    /// Execution slots of this process (`executor.max_concurrent`).
    pub executions: Arc<tokio::sync::Semaphore>,
    /// Signalled when an execution ends, so waiting approved requests start without delay.
    pub slot_freed: Arc<tokio::sync::Notify>,
    /// Starts the single-use children scripts run in.
    pub sandbox: Arc<crate::sandbox::Sandbox>,
    /// PostgreSQL target connections kept between executions.
    pub target_idle: Arc<crate::targets::IdleConnections>,
    /// MongoDB clients kept between executions.
    pub mongo_clients: Arc<crate::mongo::Clients>,
    /// The Slack Web API or webhook; None when Slack is not configured.
    pub slack: Option<crate::notify::SlackClient>,
}

impl AppState {
    pub fn lockout_policy(&self) -> LockoutPolicy {
        let a = &self.config.auth;
        LockoutPolicy {
            delay_after: a.lockout_delay_after,
            lock_after: a.lockout_lock_after,
            max_delay: chrono::Duration::seconds(a.lockout_max_delay_secs),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Quorum API", description = "Query-approval portal: requests, reviews, sandboxed execution, audit."),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorEnvelope, requests::Me, users::UserStatus)),
    tags(
        (name = "auth", description = "Sign-in, tokens and sessions"),
        (name = "me", description = "The caller's account"),
        (name = "users", description = "User administration (admins)"),
        (name = "pods", description = "PODs and their managers"),
        (name = "instances", description = "Database instances (admins register; PODs use)"),
        (name = "requests", description = "Requests, revisions and reviews"),
        (name = "executions", description = "Running approved requests; results and downloads"),
        (name = "audit", description = "The hash-chained audit log (admins)"),
        (name = "slack", description = "Approving from Slack; the outbox of Slack deliveries (admins)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

type IpGovernor = GovernorConfig<middleware::ClientIpKey, governor::middleware::NoOpMiddleware>;

fn rate_limiter(period: Duration, burst: u32) -> Arc<IpGovernor> {
    let config = GovernorConfigBuilder::default()
        .key_extractor(middleware::ClientIpKey)
        .period(period)
        .burst_size(burst)
        .error_handler(|e| {
            let wait = match e {
                tower_governor::GovernorError::TooManyRequests { wait_time, .. } => wait_time,
                _ => 1,
            };
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from your address; slow down",
            )
            .with_retry_after(i64::try_from(wait).unwrap_or(60))
            .into_response()
        })
        .finish();
    #[expect(
        clippy::expect_used,
        reason = "period and burst are validated non-zero by Config"
    )]
    Arc::new(config.expect("rate limit config is validated"))
}

/// The OpenAPI document, generated from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes(auth::limited_router()).split_for_parts().1
}

/// Every `/api/v1` route; `sign_in` is the sign-in router, with or without its rate limit.
fn api_routes(sign_in: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(sign_in)
        .merge(auth::router())
        .merge(me::router())
        .merge(users::router())
        .merge(pods::router())
        .merge(instances::router())
        .merge(requests::router())
        .merge(executions::router())
        .merge(audit::router())
        .merge(slack::router())
}

/// Rate limiters whose per-key state must be pruned periodically.
#[derive(Debug, Clone)]
pub struct Limiters {
    auth: Arc<IpGovernor>,
    api: Arc<IpGovernor>,
}

impl Limiters {
    pub fn prune(&self) {
        self.auth.limiter().retain_recent();
        self.api.limiter().retain_recent();
    }
}

/// The complete application: API, health endpoints, fallbacks and every cross-cutting layer.
pub fn router(state: AppState) -> (Router, Limiters) {
    let rl = &state.config.rate_limit;
    let limiters = Limiters {
        // Nanosecond periods: never zero for any u32 rate, so `finish()` cannot refuse them.
        auth: rate_limiter(
            Duration::from_nanos(60_000_000_000 / u64::from(rl.auth_per_minute)),
            rl.auth_burst,
        ),
        api: rate_limiter(
            Duration::from_nanos(1_000_000_000 / u64::from(rl.api_per_second)),
            rl.api_burst,
        ),
    };
    let limited = auth::limited_router().layer(GovernorLayer {
        config: limiters.auth.clone(),
    });
    let (api, openapi) = api_routes(limited)
        .layer(GovernorLayer {
            config: limiters.api.clone(),
        })
        .split_for_parts();
    let openapi = Arc::new(openapi);
    let limit = state.config.server.body_limit_bytes;
    let app = Router::new()
        .merge(api)
        .route(
            "/api/v1/openapi.json",
            get(move || async move { axum::Json(openapi.as_ref().clone()) }),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(frontend::serve)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::body_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::metrics,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::client_ip,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::security_headers,
        ))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state);
    (app, limiters)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "there is no such endpoint; see /api/v1/openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support that HTTP method",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
}
