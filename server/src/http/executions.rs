//! Executions of approved requests: starting a `manual` one, reading status and the
//! per-statement report, paging through stored rows, and downloading them as CSV or JSON.
//! Visibility follows the request: whoever may see the request may see its executions.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorEnvelope};
use super::extract::{AuthUser, PathId, QueryParams};
use super::requests::{author_gate, facts};
use crate::domain::execution::{Column, ExecError, ExecStatus, StatementReport, to_csv};
use crate::domain::workflow::{AuthorAction, can_view};
use crate::domain::{Actor, ExecutionId, RequestId};
use crate::store::Execution;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_request))
        .routes(routes!(get_execution))
        .routes(routes!(execution_rows))
        .routes(routes!(download_csv))
        .routes(routes!(download_json))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionView {
    pub id: Uuid,
    pub request_id: Uuid,
    pub status: ExecStatus,
    /// The revision that ran and its hash (what the approvals were bound to).
    pub revision: i32,
    pub revision_hash: String,
    pub error: Option<ExecError>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub statements: Vec<StatementReport>,
    /// Scripts: the value the script returned (any JSON value).
    pub result: Option<serde_json::Value>,
    /// Scripts: `console` output in order.
    pub logs: Vec<crate::domain::execution::LogLine>,
    /// Scripts: every `db.*` call in order (only on `GET /executions/{id}`).
    pub calls: Vec<crate::domain::execution::CallRecord>,
    /// Scripts: what the sandbox child reported (protections in force, peak memory).
    pub sandbox: Option<crate::domain::execution::SandboxReport>,
}

impl From<&Execution> for ExecutionView {
    fn from(e: &Execution) -> Self {
        Self {
            id: e.id.0,
            request_id: e.request_id.0,
            status: e.status,
            revision: e.revision,
            revision_hash: e.revision_hash.clone(),
            error: e.error.clone(),
            started_at: e.started_at,
            finished_at: e.finished_at,
            duration_ms: e.finished_at.map(|f| (f - e.started_at).num_milliseconds()),
            statements: e.statements.clone(),
            result: e.result.clone(),
            logs: e.logs.clone(),
            calls: Vec::new(),
            sandbox: e.sandbox.clone(),
        }
    }
}

async fn visible_execution(
    state: &AppState,
    actor: &Actor,
    id: ExecutionId,
) -> ApiResult<Execution> {
    let Some(e) = state.store.get_execution(id).await? else {
        return Err(ApiError::not_found("execution"));
    };
    match state.store.get_request(e.request_id).await? {
        Some(r) if can_view(actor, &facts(&r)) => Ok(e),
        _ => Err(ApiError::not_found("execution")),
    }
}

/// Run an approved request now (its author; the way `manual` instances run).
#[utoipa::path(post, path = "/api/v1/requests/{id}/run", tag = "executions", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses(
        (status = 202, description = "Claimed and started", body = ExecutionView),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "Not approved, already ran, changed or expired", body = ErrorEnvelope),
    ))]
pub async fn run_request(
    State(state): State<AppState>,
    auth: AuthUser,
    PathId(id): PathId<RequestId>,
) -> ApiResult<(StatusCode, axum::Json<ExecutionView>)> {
    let actor = auth.actor(&state).await?;
    let r = match state.store.get_request(id).await? {
        Some(r) if can_view(&actor, &facts(&r)) => r,
        _ => return Err(ApiError::not_found("request")),
    };
    author_gate(&actor, &r, AuthorAction::Run)?;
    let execution = crate::exec::launch(&state, &r, Some(actor.id)).await?;
    let e = state
        .store
        .get_execution(execution)
        .await?
        .ok_or_else(|| ApiError::not_found("execution"))?;
    Ok((StatusCode::ACCEPTED, axum::Json(ExecutionView::from(&e))))
}

/// An execution: status, timings, error, per-statement report.
#[utoipa::path(get, path = "/api/v1/executions/{id}", tag = "executions", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = ExecutionView), (status = 404, body = ErrorEnvelope)))]
pub async fn get_execution(
    State(state): State<AppState>,
    auth: AuthUser,
    PathId(id): PathId<ExecutionId>,
) -> ApiResult<axum::Json<ExecutionView>> {
    let actor = auth.actor(&state).await?;
    let e = visible_execution(&state, &actor, id).await?;
    let mut view = ExecutionView::from(&e);
    view.calls = state.store.execution_calls(e.id).await?;
    Ok(axum::Json(view))
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RowsQuery {
    /// Which statement's rows (0-based); default: the last statement that returned rows.
    pub statement: Option<usize>,
    #[validate(range(max = 10_000_000))]
    pub offset: Option<usize>,
    #[validate(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RowsPage {
    pub statement: usize,
    pub columns: Vec<Column>,
    /// Each row is an array of JSON values in column order.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<serde_json::Value>>,
    pub offset: usize,
    pub limit: usize,
    /// Rows stored for this statement.
    pub total: usize,
    /// More rows existed than the limits allowed to store.
    pub truncated: bool,
}

/// The statement whose rows an execution displays by default: the last that read or returned
/// rows (scripts have no statements: their displayed rows are result 0).
pub(crate) fn shown_statement(e: &Execution) -> usize {
    e.statements
        .iter()
        .rev()
        .find(|s| s.class == "read" || s.rows_returned > 0)
        .map(|s| s.index)
        .unwrap_or(0)
}

async fn result_of(
    state: &AppState,
    e: &Execution,
    statement: Option<usize>,
) -> ApiResult<crate::domain::execution::ResultSet> {
    let index = statement.unwrap_or_else(|| shown_statement(e));
    state
        .store
        .execution_result(e.id, index)
        .await?
        .ok_or_else(|| ApiError::not_found("result"))
}

/// A page of stored rows.
#[utoipa::path(get, path = "/api/v1/executions/{id}/rows", tag = "executions", security(("bearer" = [])),
    params(("id" = Uuid, Path), RowsQuery),
    responses((status = 200, body = RowsPage), (status = 404, body = ErrorEnvelope)))]
pub async fn execution_rows(
    State(state): State<AppState>,
    auth: AuthUser,
    PathId(id): PathId<ExecutionId>,
    QueryParams(q): QueryParams<RowsQuery>,
) -> ApiResult<axum::Json<RowsPage>> {
    let actor = auth.actor(&state).await?;
    let e = visible_execution(&state, &actor, id).await?;
    let result = result_of(&state, &e, q.statement).await?;
    let (offset, limit) = (q.offset.unwrap_or(0), q.limit.unwrap_or(100));
    let total = result.rows.len();
    let rows = result.rows.into_iter().skip(offset).take(limit).collect();
    Ok(axum::Json(RowsPage {
        statement: result.statement,
        columns: result.columns,
        rows,
        offset,
        limit,
        total,
        truncated: result.truncated,
    }))
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    pub statement: Option<usize>,
}

fn attachment(e: &Execution, ext: &str, content_type: &'static str, body: String) -> Response {
    let disposition = format!("attachment; filename=\"quorum-{}.{ext}\"", e.id);
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

/// The stored rows as RFC 4180 CSV.
#[utoipa::path(get, path = "/api/v1/executions/{id}/result.csv", tag = "executions", security(("bearer" = [])),
    params(("id" = Uuid, Path), DownloadQuery),
    responses((status = 200, description = "CSV", content_type = "text/csv"), (status = 404, body = ErrorEnvelope)))]
pub async fn download_csv(
    State(state): State<AppState>,
    auth: AuthUser,
    PathId(id): PathId<ExecutionId>,
    QueryParams(q): QueryParams<DownloadQuery>,
) -> ApiResult<Response> {
    let actor = auth.actor(&state).await?;
    let e = visible_execution(&state, &actor, id).await?;
    let result = result_of(&state, &e, q.statement).await?;
    Ok(attachment(
        &e,
        "csv",
        "text/csv; charset=utf-8",
        to_csv(&result),
    ))
}

/// The stored rows as a JSON array of objects keyed by column name.
#[utoipa::path(get, path = "/api/v1/executions/{id}/result.json", tag = "executions", security(("bearer" = [])),
    params(("id" = Uuid, Path), DownloadQuery),
    responses((status = 200, description = "JSON", content_type = "application/json"), (status = 404, body = ErrorEnvelope)))]
pub async fn download_json(
    State(state): State<AppState>,
    auth: AuthUser,
    PathId(id): PathId<ExecutionId>,
    QueryParams(q): QueryParams<DownloadQuery>,
) -> ApiResult<Response> {
    let actor = auth.actor(&state).await?;
    let e = visible_execution(&state, &actor, id).await?;
    let result = result_of(&state, &e, q.statement).await?;
    let objects: Vec<serde_json::Map<String, serde_json::Value>> = result
        .rows
        .into_iter()
        .map(|row| {
            result
                .columns
                .iter()
                .map(|c| c.name.clone())
                .zip(row)
                .collect()
        })
        .collect();
    let body = serde_json::to_string(&objects).map_err(|e| ApiError::internal(e.into()))?;
    Ok(attachment(&e, "json", "application/json", body))
}
