//! PODs (teams that own data) and their managers. Admins manage them; managers and developers
//! read the PODs they belong to. A POD the caller may not see is a 404, never a 403.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorEnvelope};
use super::extract::{AdministerOrg, AuthUser, ClientMeta, JsonBody, PathId, QueryParams, Require};
use super::views::{PersonView, PodDetail, PodPage, PodView, double_option, paging};
use crate::domain::audit::NewAuditEvent;
use crate::domain::text::valid_pod_name;
use crate::domain::{PodId, Role, UserId};
use crate::store::{Pod, PodChange, StoreError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pods, create_pod))
        .routes(routes!(get_pod, update_pod, delete_pod))
        .routes(routes!(set_pod_managers))
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PodListQuery {
    #[validate(range(min = 1, max = 100_000))]
    pub page: Option<u32>,
    #[validate(range(min = 1, max = 100))]
    pub per_page: Option<u32>,
}

/// The PODs the caller can see: all for admins; managed and home PODs for managers; the home POD
/// for developers.
#[utoipa::path(get, path = "/api/v1/pods", tag = "pods", security(("bearer" = [])), params(PodListQuery),
    responses((status = 200, body = PodPage), (status = 401, body = ErrorEnvelope)))]
pub async fn list_pods(
    State(state): State<AppState>,
    auth: AuthUser,
    QueryParams(q): QueryParams<PodListQuery>,
) -> ApiResult<axum::Json<PodPage>> {
    let (page, per_page, limit, offset) = paging(q.page, q.per_page);
    let actor = auth.actor(&state).await?;
    let visible = (actor.role != Role::Admin).then(|| actor.pods());
    let result = state
        .store
        .list_pods(visible.as_deref(), limit, offset)
        .await?;
    Ok(axum::Json(PodPage {
        items: result.items.iter().map(PodView::from).collect(),
        total: result.total,
        page,
        per_page,
    }))
}

fn check_slack_channel(channel: &str) -> ApiResult<()> {
    let body = channel.strip_prefix('#').unwrap_or(channel);
    let ok = !body.is_empty()
        && body.len() <= 80
        && body.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b"-_".contains(&b)
                || b.is_ascii_uppercase()
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "invalid_slack_channel",
            "slack_channel must be a channel name like #payments-approvals or a channel id like C0123ABCD",
        ))
    }
}

fn check_pod_name(name: &str) -> ApiResult<()> {
    if valid_pod_name(name) {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "invalid_pod_name",
            "POD names are 1-64 ASCII letters, digits, spaces, '-', '_' or '.', starting with a letter or digit",
        ))
    }
}

fn name_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::conflict("pod_name_taken", m),
        other => other.into(),
    }
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePodRequest {
    pub name: String,
    /// Where new requests for this POD are announced.
    pub slack_channel: Option<String>,
}

async fn pod_detail(state: &AppState, pod: Pod) -> ApiResult<PodDetail> {
    let (managers, members) = state.store.pod_people(pod.id).await?;
    Ok(PodDetail {
        id: pod.id.0,
        name: pod.name,
        slack_channel: pod.slack_channel,
        created_at: pod.created_at,
        updated_at: pod.updated_at,
        managers: managers.iter().map(PersonView::from).collect(),
        members: members.iter().map(PersonView::from).collect(),
    })
}

/// Create a POD.
#[utoipa::path(post, path = "/api/v1/pods", tag = "pods", security(("bearer" = [])), request_body = CreatePodRequest,
    responses((status = 201, body = PodDetail), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn create_pod(
    State(state): State<AppState>,
    meta: ClientMeta,
    Require(admin, _): Require<AdministerOrg>,
    JsonBody(body): JsonBody<CreatePodRequest>,
) -> ApiResult<(StatusCode, axum::Json<PodDetail>)> {
    let name = body.name.trim();
    check_pod_name(name)?;
    if let Some(c) = &body.slack_channel {
        check_slack_channel(c)?;
    }
    let event = NewAuditEvent::new("pod.created")
        .actor(admin.user.id)
        .origin(meta.ip, meta.user_agent)
        .details(json!({ "name": name, "slack_channel": body.slack_channel }));
    let pod = state
        .store
        .create_pod(name, body.slack_channel.as_deref(), event)
        .await
        .map_err(name_conflict)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(pod_detail(&state, pod).await?),
    ))
}

async fn visible_pod(state: &AppState, auth: &AuthUser, id: PodId) -> ApiResult<Pod> {
    let actor = auth.actor(state).await?;
    if !actor.can_view_pod(id) {
        return Err(ApiError::not_found("POD"));
    }
    state
        .store
        .get_pod(id)
        .await?
        .ok_or_else(|| ApiError::not_found("POD"))
}

/// One POD with its managers and members.
#[utoipa::path(get, path = "/api/v1/pods/{id}", tag = "pods", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = PodDetail), (status = 404, body = ErrorEnvelope)))]
pub async fn get_pod(
    State(state): State<AppState>,
    auth: AuthUser,
    PathId(id): PathId<PodId>,
) -> ApiResult<axum::Json<PodDetail>> {
    let pod = visible_pod(&state, &auth, id).await?;
    Ok(axum::Json(pod_detail(&state, pod).await?))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePodRequest {
    pub name: Option<String>,
    /// `null` removes the channel.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub slack_channel: Option<Option<String>>,
}

/// Rename a POD or change its Slack channel.
#[utoipa::path(patch, path = "/api/v1/pods/{id}", tag = "pods", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = UpdatePodRequest,
    responses((status = 200, body = PodDetail), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
pub async fn update_pod(
    State(state): State<AppState>,
    meta: ClientMeta,
    Require(admin, _): Require<AdministerOrg>,
    PathId(id): PathId<PodId>,
    JsonBody(body): JsonBody<UpdatePodRequest>,
) -> ApiResult<axum::Json<PodDetail>> {
    let name = body.name.as_deref().map(str::trim).map(str::to_owned);
    if let Some(n) = &name {
        check_pod_name(n)?;
    }
    if let Some(Some(c)) = &body.slack_channel {
        check_slack_channel(c)?;
    }
    let change = PodChange {
        name,
        slack_channel: body.slack_channel,
    };
    let event = NewAuditEvent::new("pod.updated")
        .actor(admin.user.id)
        .origin(meta.ip, meta.user_agent)
        .details(json!({ "name": change.name, "slack_channel": change.slack_channel }));
    let pod = state
        .store
        .update_pod(id, &change, event)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("POD"),
            other => name_conflict(other),
        })?;
    Ok(axum::Json(pod_detail(&state, pod).await?))
}

/// Delete a POD that no user has as their home POD.
#[utoipa::path(delete, path = "/api/v1/pods/{id}", tag = "pods", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
pub async fn delete_pod(
    State(state): State<AppState>,
    meta: ClientMeta,
    Require(admin, _): Require<AdministerOrg>,
    PathId(id): PathId<PodId>,
) -> ApiResult<StatusCode> {
    let pod = state
        .store
        .get_pod(id)
        .await?
        .ok_or_else(|| ApiError::not_found("POD"))?;
    let event = NewAuditEvent::new("pod.deleted")
        .actor(admin.user.id)
        .origin(meta.ip, meta.user_agent)
        .details(json!({ "name": pod.name }));
    state
        .store
        .delete_pod(id, event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::conflict("pod_in_use", m),
            StoreError::NotFound => ApiError::not_found("POD"),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetManagersRequest {
    /// The complete list of managers (replaces the current one). Each must be a manager or admin.
    #[validate(length(max = 50, message = "at most 50 managers"))]
    pub user_ids: Vec<Uuid>,
}

/// Replace the managers of a POD.
#[utoipa::path(put, path = "/api/v1/pods/{id}/managers", tag = "pods", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = SetManagersRequest,
    responses((status = 200, body = PodDetail), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn set_pod_managers(
    State(state): State<AppState>,
    meta: ClientMeta,
    Require(admin, _): Require<AdministerOrg>,
    PathId(id): PathId<PodId>,
    JsonBody(body): JsonBody<SetManagersRequest>,
) -> ApiResult<axum::Json<PodDetail>> {
    let pod = state
        .store
        .get_pod(id)
        .await?
        .ok_or_else(|| ApiError::not_found("POD"))?;
    let mut ids: Vec<UserId> = body.user_ids.into_iter().map(UserId).collect();
    ids.sort();
    ids.dedup();
    let mut invalid = Vec::new();
    for uid in &ids {
        match state.store.get_user(*uid).await? {
            Some(u) if u.role.can_manage_pods() && !u.disabled => {}
            _ => invalid.push(uid.to_string()),
        }
    }
    if !invalid.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_manager",
            "every POD manager must be an active user with the manager or admin role",
        )
        .with_details(json!({ "user_ids": invalid })));
    }
    let event = NewAuditEvent::new("pod.managers_set")
        .actor(admin.user.id)
        .origin(meta.ip, meta.user_agent)
        .details(json!({ "user_ids": ids }));
    state.store.set_pod_managers(id, &ids, event).await?;
    Ok(axum::Json(pod_detail(&state, pod).await?))
}
