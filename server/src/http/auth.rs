//! Sign-in, token refresh with rotation and reuse detection, sign-out, and the caller's sessions.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::Validate;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorEnvelope};
use super::extract::{ClientMeta, JsonBody, PathId, SignedIn};
use super::views::{SessionView, UserView};
use crate::auth::refresh;
use crate::domain::SessionId;
use crate::domain::audit::NewAuditEvent;
use crate::domain::lockout::{Gate, LockoutPolicy};
use crate::domain::text::normalize_email;
use crate::store::{RevokeReason, Session, User};

/// Routes that get the stricter per-IP sign-in limit.
pub fn limited_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh_token))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(list_sessions))
        .routes(routes!(revoke_session))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[validate(length(min = 1, max = 320, message = "must be 1 to 320 characters"))]
    pub email: String,
    #[validate(length(min = 1, max = 1024, message = "must be 1 to 1024 characters"))]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub user: UserView,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the email or password is incorrect",
    )
}

fn refresh_cookie(state: &AppState, token: &str) -> HeaderValue {
    let secure = if state.config.auth.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let value = format!(
        "{}={token}; Path={}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        refresh::COOKIE_NAME,
        refresh::COOKIE_PATH,
        state.config.auth.refresh_absolute_secs
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie(state: &AppState) -> HeaderValue {
    let secure = if state.config.auth.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let value = format!(
        "{}=; Path={}; Max-Age=0; HttpOnly; SameSite=Strict{secure}",
        refresh::COOKIE_NAME,
        refresh::COOKIE_PATH
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn presented_refresh_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == refresh::COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

fn token_response(
    state: &AppState,
    user: &User,
    session: SessionId,
    cookie: HeaderValue,
) -> ApiResult<Response> {
    let (access_token, _) = state
        .tokens
        .issue(user.id, session, user.role, state.clock.now())?;
    let body = TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.tokens.ttl_secs(),
        user: UserView::from(user),
    };
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Sign in with email and password.
///
/// Unknown emails and wrong passwords get the same answer after the same work. After repeated
/// failures on one account attempts are delayed (429 with `Retry-After`), then the account locks
/// (423) until an admin unlocks it.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; the refresh cookie is set", body = TokenResponse),
        (status = 401, description = "Wrong email or password", body = ErrorEnvelope),
        (status = 423, description = "Account locked", body = ErrorEnvelope),
        (status = 429, description = "Too many attempts", body = ErrorEnvelope),
    ))]
pub async fn login(
    State(state): State<AppState>,
    meta: ClientMeta,
    JsonBody(body): JsonBody<LoginRequest>,
) -> ApiResult<Response> {
    let password = SecretString::from(body.password);
    let email = normalize_email(&body.email);
    let creds = match &email {
        Some(e) => state.store.get_credentials(e).await?,
        None => None,
    };
    let audit =
        |action| NewAuditEvent::new(action).origin(meta.ip.clone(), meta.user_agent.clone());
    let Some((user, hash)) = creds else {
        state.hasher.verify(password, None).await?;
        state.metrics.auth_failure("unknown_user");
        let attempted: String = body.email.chars().take(320).collect();
        state
            .store
            .append_audit(
                audit("auth.login_failed")
                    .details(json!({ "email": attempted, "reason": "unknown_user" })),
            )
            .await?;
        return Err(invalid_credentials());
    };
    let now = state.clock.now();
    match LockoutPolicy::gate(user.locked_at.is_some(), user.delayed_until, now) {
        Gate::Open => {}
        Gate::Locked => {
            state.metrics.auth_failure("locked");
            state
                .store
                .append_audit(
                    audit("auth.login_refused")
                        .target("user", user.id)
                        .details(json!({ "reason": "locked" })),
                )
                .await?;
            return Err(ApiError::new(
                StatusCode::LOCKED,
                "account_locked",
                "this account is locked after too many failed sign-ins; ask an admin to unlock it",
            ));
        }
        Gate::Wait { retry_after_secs } => {
            state.metrics.auth_failure("throttled");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "login_throttled",
                format!("too many failed sign-ins; try again in {retry_after_secs} s"),
            )
            .with_retry_after(retry_after_secs));
        }
    }
    let ok = state.hasher.verify(password, Some(hash)).await?;
    if !ok {
        state.metrics.auth_failure("password");
        let event = audit("auth.login_failed")
            .actor(user.id)
            .details(json!({ "reason": "password" }));
        state
            .store
            .record_login_failure(user.id, &state.lockout_policy(), event)
            .await?;
        return Err(invalid_credentials());
    }
    if user.disabled {
        state.metrics.auth_failure("disabled");
        state
            .store
            .append_audit(
                audit("auth.login_refused")
                    .target("user", user.id)
                    .details(json!({ "reason": "disabled" })),
            )
            .await?;
        return Err(invalid_credentials());
    }
    let session = Session {
        id: SessionId::new(),
        user_id: user.id,
        user_agent: meta.user_agent.clone(),
        ip: meta.ip.clone(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + chrono::Duration::seconds(state.config.auth.refresh_absolute_secs),
        revoked_at: None,
        revoked_reason: None,
    };
    let token = refresh::generate();
    state
        .store
        .start_session(
            &session,
            &refresh::hash(&token),
            state.config.auth.max_sessions_per_user,
            audit("auth.login").actor(user.id),
        )
        .await?;
    token_response(&state, &user, session.id, refresh_cookie(&state, &token))
}

/// Exchange the refresh cookie for a new access token; the cookie is rotated.
///
/// Presenting a refresh token that was already exchanged ends its whole session (family): one
/// of the two holders is not the user.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    responses(
        (status = 200, description = "New access token; the refresh cookie is rotated", body = TokenResponse),
        (status = 401, description = "Missing, unknown, reused or expired refresh token", body = ErrorEnvelope),
    ))]
pub async fn refresh_token(
    State(state): State<AppState>,
    meta: ClientMeta,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let refuse = |code: &'static str, message: &str, reason: &'static str| {
        state.metrics.auth_failure(reason);
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
            .header(header::SET_COOKIE, clear_cookie(&state))
    };
    let Some(token) = presented_refresh_token(&headers) else {
        return Err(refuse(
            "refresh_missing",
            "no refresh cookie was sent; sign in again",
            "refresh_missing",
        ));
    };
    if !refresh::well_formed(&token) {
        return Err(refuse(
            "refresh_invalid",
            "the refresh token is not valid; sign in again",
            "refresh_invalid",
        ));
    }
    let Some(record) = state.store.find_refresh(&refresh::hash(&token)).await? else {
        return Err(refuse(
            "refresh_invalid",
            "the refresh token is not valid; sign in again",
            "refresh_invalid",
        ));
    };
    let session = &record.session;
    let reuse = |state: &AppState| {
        let event = NewAuditEvent::new("auth.refresh_reuse")
            .actor(session.user_id)
            .origin(meta.ip.clone(), meta.user_agent.clone())
            .details(json!({ "token_id": record.token_id }));
        let store = state.store.clone();
        let session_id = session.id;
        async move {
            store
                .revoke_session(session_id, RevokeReason::RefreshReuse, None, event)
                .await
        }
    };
    if record.rotated_at.is_some() {
        reuse(&state).await?;
        return Err(refuse(
            "refresh_reused",
            "this refresh token was already used, so the session has been ended for safety; sign in again",
            "refresh_reuse",
        ));
    }
    let now = state.clock.now();
    let idle_limit = chrono::Duration::seconds(state.config.auth.refresh_idle_secs);
    if session.revoked_at.is_some()
        || session.expires_at <= now
        || now - session.last_seen_at > idle_limit
    {
        return Err(refuse(
            "session_expired",
            "your session has ended; sign in again",
            "session",
        ));
    }
    let Some(user) = state
        .store
        .get_user(session.user_id)
        .await?
        .filter(|u| !u.disabled)
    else {
        return Err(refuse(
            "session_expired",
            "your session has ended; sign in again",
            "disabled",
        ));
    };
    let next = refresh::generate();
    let rotated = state
        .store
        .rotate_refresh(
            record.token_id,
            session.id,
            &refresh::hash(&next),
            meta.ip.as_deref(),
            meta.user_agent.as_deref(),
        )
        .await?;
    if !rotated {
        // Another request exchanged the same token between our read and our write.
        reuse(&state).await?;
        return Err(refuse(
            "refresh_reused",
            "this refresh token was already used, so the session has been ended for safety; sign in again",
            "refresh_reuse",
        ));
    }
    token_response(&state, &user, session.id, refresh_cookie(&state, &next))
}

/// Sign out this device: ends the session and revokes the presented access token at once.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Signed out"), (status = 401, body = ErrorEnvelope)))]
pub async fn logout(
    State(state): State<AppState>,
    meta: ClientMeta,
    SignedIn(auth): SignedIn,
) -> ApiResult<Response> {
    let event = NewAuditEvent::new("auth.logout")
        .actor(auth.user.id)
        .origin(meta.ip, meta.user_agent);
    let jti = Some((auth.claims.jti, auth.claims.expires_at()));
    state
        .store
        .revoke_session(auth.session.id, RevokeReason::Logout, jti, event)
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_cookie(&state))],
    )
        .into_response())
}

/// Sign out everywhere: ends every session of the caller.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Every session ended"), (status = 401, body = ErrorEnvelope)))]
pub async fn logout_all(
    State(state): State<AppState>,
    meta: ClientMeta,
    SignedIn(auth): SignedIn,
) -> ApiResult<Response> {
    let event = NewAuditEvent::new("auth.logout_all")
        .actor(auth.user.id)
        .origin(meta.ip, meta.user_agent);
    let jti = Some((auth.claims.jti, auth.claims.expires_at()));
    state
        .store
        .revoke_user_sessions(auth.user.id, None, RevokeReason::LogoutAll, jti, event)
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_cookie(&state))],
    )
        .into_response())
}

/// The caller's signed-in devices.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Vec<SessionView>), (status = 401, body = ErrorEnvelope)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
) -> ApiResult<axum::Json<Vec<SessionView>>> {
    let sessions = state.store.list_sessions(auth.user.id).await?;
    Ok(axum::Json(
        sessions
            .iter()
            .map(|s| SessionView::new(s, s.id == auth.session.id))
            .collect(),
    ))
}

/// End one of the caller's sessions (sign a device out).
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses((status = 204, description = "Session ended"), (status = 404, body = ErrorEnvelope)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    meta: ClientMeta,
    SignedIn(auth): SignedIn,
    PathId(id): PathId<SessionId>,
) -> ApiResult<Response> {
    let session = state
        .store
        .get_session(id)
        .await?
        .filter(|s| s.user_id == auth.user.id && s.revoked_at.is_none());
    let Some(session) = session else {
        return Err(ApiError::not_found("session"));
    };
    let current = session.id == auth.session.id;
    let jti = current.then(|| (auth.claims.jti, auth.claims.expires_at()));
    let event = NewAuditEvent::new("auth.session_revoked")
        .actor(auth.user.id)
        .origin(meta.ip, meta.user_agent);
    state
        .store
        .revoke_session(session.id, RevokeReason::SessionRevoked, jti, event)
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if current {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, clear_cookie(&state));
    }
    Ok(response)
}
