//! The caller's own account.

use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::Validate;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorEnvelope};
use super::extract::{ClientMeta, JsonBody, SignedIn};
use super::views::{PodRef, UserView, pod_refs};
use crate::domain::audit::NewAuditEvent;
use crate::domain::password::{PasswordProblem, check_new_password};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me))
        .routes(routes!(change_password))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    pub user: UserView,
    pub home_pod: Option<PodRef>,
    /// PODs whose requests this user may review.
    pub managed_pods: Vec<PodRef>,
}

/// Who am I: the caller's account, home POD and managed PODs.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = MeView), (status = 401, body = ErrorEnvelope)))]
pub async fn get_me(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
) -> ApiResult<axum::Json<MeView>> {
    let (home_pod, managed_pods) = pod_refs(&state, &auth.user).await?;
    Ok(axum::Json(MeView {
        user: UserView::from(&auth.user),
        home_pod,
        managed_pods,
    }))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[validate(length(min = 1, max = 1024, message = "must be 1 to 1024 characters"))]
    pub current_password: String,
    #[validate(length(min = 1, max = 1024, message = "must be 1 to 1024 characters"))]
    pub new_password: String,
}

/// Change the caller's password; every other session of theirs ends.
///
/// A wrong current password counts as a failed sign-in (the same lockout applies).
#[utoipa::path(post, path = "/api/v1/me/password", tag = "me", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Password changed"),
        (status = 403, description = "Current password is wrong", body = ErrorEnvelope),
        (status = 422, description = "New password does not meet the policy", body = ErrorEnvelope),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    meta: ClientMeta,
    SignedIn(auth): SignedIn,
    JsonBody(body): JsonBody<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    let user = &auth.user;
    let Some((_, hash)) = state.store.get_credentials(&user.email).await? else {
        return Err(ApiError::unauthorized());
    };
    let ok = state
        .hasher
        .verify(
            SecretString::from(body.current_password.clone()),
            Some(hash),
        )
        .await?;
    if !ok {
        let event = NewAuditEvent::new("auth.password_change_failed")
            .actor(user.id)
            .origin(meta.ip, meta.user_agent)
            .details(json!({ "reason": "password" }));
        state
            .store
            .record_login_failure(user.id, &state.lockout_policy(), event)
            .await?;
        return Err(ApiError::forbidden("the current password is incorrect")
            .with_code("invalid_current_password"));
    }
    if body.new_password == body.current_password {
        return Err(ApiError::unprocessable(
            "weak_password",
            PasswordProblem::SameAsCurrent.message(),
        ));
    }
    check_new_password(
        &body.new_password,
        &user.email,
        state.config.auth.password_min_length,
    )
    .map_err(|p| ApiError::unprocessable("weak_password", p.message()))?;
    let new_hash = state
        .hasher
        .hash(SecretString::from(body.new_password))
        .await?;
    let event = NewAuditEvent::new("auth.password_changed")
        .actor(user.id)
        .origin(meta.ip, meta.user_agent);
    state
        .store
        .change_password(user.id, &new_hash, auth.session.id, event)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
