//! The audit log (admins only), newest first.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use super::AppState;
use super::error::{ApiResult, ErrorEnvelope};
use super::extract::{QueryParams, ReadAudit, Require};
use super::views::{AuditPage, paging};
use crate::store::AuditQuery;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .routes(routes!(verify_audit))
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditListQuery {
    /// User who acted.
    pub actor: Option<Uuid>,
    /// Exact action, e.g. `auth.login_failed`.
    #[validate(length(max = 100))]
    pub action: Option<String>,
    /// Id of the object acted on.
    #[validate(length(max = 100))]
    pub target: Option<String>,
    /// Inclusive lower bound (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    #[validate(range(min = 1, max = 100_000))]
    pub page: Option<u32>,
    #[validate(range(min = 1, max = 100))]
    pub per_page: Option<u32>,
}

/// Search the audit log.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditListQuery),
    responses((status = 200, body = AuditPage), (status = 403, body = ErrorEnvelope)))]
pub async fn list_audit(
    State(state): State<AppState>,
    _admin: Require<ReadAudit>,
    QueryParams(q): QueryParams<AuditListQuery>,
) -> ApiResult<axum::Json<AuditPage>> {
    let (page, per_page, limit, offset) = paging(q.page, q.per_page);
    let query = AuditQuery {
        actor_id: q.actor,
        action: q.action,
        target_id: q.target,
        since: q.since,
        until: q.until,
        limit,
        offset,
    };
    let result = state.store.list_audit(&query).await?;
    Ok(axum::Json(AuditPage {
        items: result.items,
        total: result.total,
        page,
        per_page,
    }))
}

/// Where the chain broke.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainBreak {
    pub seq: i64,
    pub id: Uuid,
    /// `missing`, `content` or `link`: which check the event failed.
    pub reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainVerdict {
    pub intact: bool,
    /// Events verified (up to the break, if any).
    pub events: i64,
    pub broken: Option<ChainBreak>,
}

/// Walk the whole audit chain and report the first event missing or altered (what
/// `quorum audit verify` does).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = ChainVerdict), (status = 403, body = ErrorEnvelope)))]
pub async fn verify_audit(
    State(state): State<AppState>,
    _admin: Require<ReadAudit>,
) -> ApiResult<axum::Json<ChainVerdict>> {
    use crate::cli::AuditVerdict;
    let verdict = crate::cli::verify_audit(&state.store)
        .await
        .map_err(super::error::ApiError::internal)?;
    Ok(axum::Json(match verdict {
        AuditVerdict::Intact { events } => ChainVerdict {
            intact: true,
            events,
            broken: None,
        },
        AuditVerdict::Broken {
            seq,
            id,
            reason,
            verified,
        } => ChainVerdict {
            intact: false,
            events: verified,
            broken: Some(ChainBreak { seq, id, reason }),
        },
    }))
}
