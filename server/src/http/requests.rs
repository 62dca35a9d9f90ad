//! Requests: filed by a POD member against an instance the POD may use, revised by their author,
//! reviewed by the POD's managers. Every transition is a conditional update with its audit event;
//! the rules are in `domain::workflow`.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorEnvelope};
use super::extract::{AuthUser, ClientMeta, JsonBody, PathId, QueryParams};
use super::instances::can_use;
use super::views::paging;
use crate::domain::audit::NewAuditEvent;
use crate::domain::text::find_hidden_in_text;
use crate::domain::workflow::{
    self, AuthorAction, AuthorRefusal, Decision, Kind, Mode, RequestFacts, ReviewChannel,
    ReviewRefusal, Status, approval_cutoff, can_view, check_author_action, check_review,
    expires_at,
};
use crate::domain::{Actor, InstanceId, PodId, RequestId, Role, UserId};
use crate::store::{Instance, RequestQuery, RequestRecord, Review, Revision, StoreError};

/// Largest request content accepted, in bytes (design §6).
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_requests, create_request))
        .routes(routes!(get_request, update_request))
        .routes(routes!(cancel_request))
        .routes(routes!(clone_request))
        .routes(routes!(review_request))
        .routes(routes!(explain_request))
        .routes(routes!(check_request))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewView {
    pub id: Uuid,
    pub reviewer_id: Uuid,
    pub reviewer_name: String,
    pub decision: Decision,
    pub comment: String,
    pub revision: i32,
    pub revision_hash: String,
    pub created_at: DateTime<Utc>,
    /// Set when a later revision voided this review.
    pub voided_at: Option<DateTime<Utc>>,
}

impl ReviewView {
    fn new(r: &Review, reviewer_name: String) -> Self {
        Self {
            id: r.id,
            reviewer_id: r.reviewer_id.0,
            reviewer_name,
            decision: r.decision,
            comment: r.comment.clone(),
            revision: r.revision,
            revision_hash: r.revision_hash.clone(),
            created_at: r.created_at,
            voided_at: r.voided_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevisionView {
    pub number: i32,
    /// SHA-256 over kind, mode, content, instance, database and limits: what approvals bind to.
    pub hash: String,
    pub kind: Kind,
    pub mode: Mode,
    pub instance_id: Uuid,
    pub database: String,
    pub content: String,
    pub justification: String,
    pub editor_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// Unified diff of the content against the previous revision (absent for the first).
    pub diff: Option<String>,
    /// What the syntax check found when this revision was saved (absent when no check could
    /// be made). Advice for the reviewer; it does not block the request.
    pub check: Option<crate::check::CheckReport>,
}

/// An execution of the request, as the request lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionRef {
    pub id: Uuid,
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestView {
    pub id: Uuid,
    pub status: Status,
    pub kind: Kind,
    pub mode: Mode,
    pub pod_id: Uuid,
    pub instance_id: Uuid,
    pub database: String,
    pub justification: String,
    pub author_id: Uuid,
    pub author_name: String,
    pub last_editor_id: Uuid,
    /// Current revision number (from 1).
    pub revision: i32,
    /// Hex SHA-256 of the current revision; a review must quote it.
    pub revision_hash: String,
    /// When the request expires if nothing happens (pending: undecided; approved: not run).
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RequestView {
    fn new(r: &RequestRecord, state: &AppState) -> Self {
        Self {
            id: r.id.0,
            status: r.status,
            kind: r.kind,
            mode: r.mode,
            pod_id: r.pod_id.0,
            instance_id: r.instance_id.0,
            database: r.database.clone(),
            justification: r.justification.clone(),
            author_id: r.author_id.0,
            author_name: r.author_name.clone(),
            last_editor_id: r.last_editor_id.0,
            revision: r.revision,
            revision_hash: r.revision_hash.clone(),
            expires_at: expires_at(r.status, r.status_changed_at, &state.config.workflow),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestDetail {
    #[serde(flatten)]
    pub request: RequestView,
    /// The current revision's content.
    pub content: String,
    pub required_approvals: u8,
    /// Distinct valid approvals of the current revision.
    pub approvals: u32,
    pub reviews: Vec<ReviewView>,
    pub revisions: Vec<RevisionView>,
    pub executions: Vec<ExecutionRef>,
    /// Whether the caller may review now; when not, `review_blocked_reason` says why.
    pub can_review: bool,
    pub review_blocked_reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestPage {
    pub items: Vec<RequestView>,
    pub total: i64,
    pub page: u32,
    pub per_page: u32,
}

/// What the workflow rules need to know about a stored request.
pub(crate) fn facts(r: &RequestRecord) -> RequestFacts {
    RequestFacts {
        author: r.author_id,
        last_editor: r.last_editor_id,
        pod: r.pod_id,
        status: r.status,
        revision_hash: r.revision_hash.clone(),
    }
}

fn refusal_error(r: ReviewRefusal) -> ApiError {
    match r {
        ReviewRefusal::NotFound => ApiError::not_found("request"),
        ReviewRefusal::SelfReview => ApiError::forbidden(
            "you wrote or last edited this request, so someone else must review it",
        )
        .with_code("self_review"),
        ReviewRefusal::NotAReviewer => {
            ApiError::forbidden("only managers of the request's POD (or admins) review it")
                .with_code("not_a_reviewer")
        }
        ReviewRefusal::NotPending(s) => ApiError::conflict(
            "not_pending",
            format!("the request is {} and no longer awaits review", s.as_str()),
        ),
        ReviewRefusal::StaleRevision => ApiError::conflict(
            "stale_revision",
            "the request changed since you read it; review the current revision (revision_hash)",
        ),
        ReviewRefusal::AlreadyReviewed => {
            ApiError::conflict("already_reviewed", "you already reviewed this revision")
        }
        ReviewRefusal::CommentRequired => ApiError::unprocessable(
            "comment_required",
            "say why when rejecting or requesting changes",
        ),
        ReviewRefusal::SlackForbidden => {
            ApiError::forbidden("reviews of requests on this instance happen in the portal only")
                .with_code("slack_review_forbidden")
        }
    }
}

/// The content and settings of a request's current revision.
pub(crate) async fn current_revision(state: &AppState, r: &RequestRecord) -> ApiResult<Revision> {
    state
        .store
        .request_revisions(r.id)
        .await?
        .into_iter()
        .find(|v| v.number == r.revision)
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "request {} lacks its current revision",
                r.id
            ))
        })
}

/// The author-only actions, refused with who-may and which-state messages.
pub(crate) fn author_gate(actor: &Actor, r: &RequestRecord, action: AuthorAction) -> ApiResult<()> {
    let (verb, done, code) = match action {
        AuthorAction::Edit => ("edit", "edited", "not_editable"),
        AuthorAction::Cancel => ("cancel", "cancelled", "not_cancellable"),
        AuthorAction::Run => ("run", "run", "not_runnable"),
    };
    check_author_action(actor, &facts(r), action).map_err(|refusal| match refusal {
        AuthorRefusal::NotAuthor => ApiError::forbidden(format!(
            "only the request's author may {verb} it; clone it to propose your own"
        ))
        .with_code("not_author"),
        AuthorRefusal::WrongStatus(s) => ApiError::conflict(
            code,
            format!("the request is {} and cannot be {done} now", s.as_str()),
        ),
    })
}

/// Expires a request whose time ran out (evaluated with the injected clock) and returns it as it
/// now stands.
async fn settle(state: &AppState, r: RequestRecord) -> ApiResult<RequestRecord> {
    match expires_at(r.status, r.status_changed_at, &state.config.workflow) {
        Some(at) if at <= state.clock.now() => {
            let event = NewAuditEvent::new("request.expired")
                .details(json!({ "was": r.status.as_str(), "due": at }));
            state
                .store
                .transition_request(r.id, &[r.status], Status::Expired, event)
                .await?;
            Ok(state.store.get_request(r.id).await?.unwrap_or(r))
        }
        _ => Ok(r),
    }
}

/// Starts an approved request at once when its instance runs on approval and the request is a
/// kind the portal can run. Failures are logged: the request stays approved, and the author (or
/// the next maintenance pass) can still start it.
pub async fn start_if_automatic(state: &AppState, r: &RequestRecord) {
    let automatic = state
        .store
        .get_instance(r.instance_id)
        .await
        .ok()
        .flatten()
        .is_some_and(|i| i.run_mode == crate::domain::instance::RunMode::OnApproval);
    if automatic
        && r.status == Status::Approved
        && let Err(e) = crate::exec::launch(state, r, None).await
    {
        tracing::info!(request = %r.id, code = e.code, error = %e.message, "automatic run did not start");
    }
}

/// Expires every open request whose time ran out, and starts approved automatic ones that have
/// not started (the maintenance task calls this).
pub async fn expire_due(state: &AppState) -> Result<usize, StoreError> {
    let mut n = 0;
    for r in state.store.open_requests().await? {
        if expires_at(r.status, r.status_changed_at, &state.config.workflow)
            .is_some_and(|at| at <= state.clock.now())
        {
            let event =
                NewAuditEvent::new("request.expired").details(json!({ "was": r.status.as_str() }));
            if state
                .store
                .transition_request(r.id, &[r.status], Status::Expired, event)
                .await?
            {
                n += 1;
            }
        } else if r.status == Status::Approved {
            start_if_automatic(state, &r).await;
        }
    }
    Ok(n)
}

async fn visible_request(
    state: &AppState,
    actor: &Actor,
    id: RequestId,
) -> ApiResult<RequestRecord> {
    match state.store.get_request(id).await? {
        Some(r) if can_view(actor, &facts(&r)) => settle(state, r).await,
        _ => Err(ApiError::not_found("request")),
    }
}

fn check_text(field: &str, text: &str) -> ApiResult<()> {
    if let Some(p) = find_hidden_in_text(text) {
        return Err(ApiError::unprocessable(
            "hidden_characters",
            format!("{field} contains {}, which can make code read differently from what runs; remove it", p.describe()),
        )
        .with_details(json!({ "field": field, "line": p.line, "column": p.column, "codepoint": format!("U+{:04X}", p.ch as u32) })));
    }
    Ok(())
}

fn check_content(content: &str) -> ApiResult<()> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(ApiError::unprocessable(
            "content_too_large",
            format!(
                "content is {} bytes; the limit is {MAX_CONTENT_BYTES}",
                content.len()
            ),
        ));
    }
    if content.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "validation_failed",
            "content: must not be blank",
        ));
    }
    check_text("content", content)
}

/// The instance and database a request targets, checked against the POD and the synced list.
async fn check_target(
    state: &AppState,
    actor: &Actor,
    pod: PodId,
    instance: InstanceId,
    database: &str,
) -> ApiResult<Instance> {
    let instance = match state.store.get_instance(instance).await? {
        Some(i) if can_use(actor, &i) => i,
        _ => {
            return Err(ApiError::unprocessable(
                "unknown_instance",
                "there is no such instance you may use",
            ));
        }
    };
    if !instance.allowed_pods.contains(&pod) {
        return Err(ApiError::unprocessable(
            "instance_not_allowed",
            format!("instance {} is not allowed for this POD", instance.name),
        ));
    }
    let databases = state.store.instance_databases(instance.id).await?;
    if !databases.iter().any(|d| d == database) {
        return Err(ApiError::unprocessable(
            "unknown_database",
            format!(
                "instance {} has no database {database:?} (as last synced)",
                instance.name
            ),
        )
        .with_details(json!({ "available": databases })));
    }
    Ok(instance)
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequestBody {
    pub pod_id: Uuid,
    pub instance_id: Uuid,
    #[validate(length(min = 1, max = 255, message = "must be 1 to 255 characters"))]
    pub database: String,
    pub kind: Kind,
    pub mode: Mode,
    pub content: String,
    #[validate(length(min = 10, max = 5000, message = "must be 10 to 5000 characters"))]
    pub justification: String,
}

struct Draft {
    pod: PodId,
    instance: InstanceId,
    database: String,
    kind: Kind,
    mode: Mode,
    content: String,
    justification: String,
}

/// Validates and stores a new request; shared by create and clone.
async fn file_request(
    state: &AppState,
    actor: &Actor,
    meta: ClientMeta,
    draft: Draft,
    cloned_from: Option<RequestId>,
) -> ApiResult<RequestRecord> {
    if !actor.may_file_for(draft.pod) || state.store.get_pod(draft.pod).await?.is_none() {
        return Err(
            ApiError::forbidden("you can file requests only for your own POD")
                .with_code("not_in_pod"),
        );
    }
    check_content(&draft.content)?;
    check_text("justification", &draft.justification)?;
    let instance = check_target(state, actor, draft.pod, draft.instance, &draft.database).await?;
    let limits = instance.limits.apply(state.config.limits);
    let hash = workflow::revision_hash(
        draft.kind,
        draft.mode,
        &draft.content,
        instance.id,
        &draft.database,
        &limits,
    );
    let now = state.clock.now();
    let record = RequestRecord {
        id: RequestId::new(),
        author_id: actor.id,
        author_name: String::new(),
        last_editor_id: actor.id,
        pod_id: draft.pod,
        instance_id: instance.id,
        database: draft.database.clone(),
        kind: draft.kind,
        mode: draft.mode,
        justification: draft.justification.clone(),
        status: Status::Pending,
        revision: 1,
        revision_hash: hash.clone(),
        status_changed_at: now,
        created_at: now,
        updated_at: now,
    };
    let check = syntax_check(state, draft.kind, instance.engine, &draft.content).await;
    let first = Revision {
        number: 1,
        kind: draft.kind,
        mode: draft.mode,
        instance_id: instance.id,
        database: draft.database,
        content: draft.content,
        justification: draft.justification,
        limits,
        hash: hash.clone(),
        editor_id: actor.id,
        created_at: now,
        check,
    };
    let event = NewAuditEvent::new("request.created").actor(actor.id).origin(meta.ip, meta.user_agent).details(json!({
        "pod_id": record.pod_id, "instance_id": record.instance_id, "database": record.database,
        "kind": record.kind.as_str(), "mode": record.mode.as_str(), "revision_hash": hash, "cloned_from": cloned_from,
    }));
    state.store.create_request(&record, &first, event).await?;
    // Read back: the stored request carries what the store adds (the author's name).
    Ok(state.store.get_request(record.id).await?.unwrap_or(record))
}

/// File a request.
#[utoipa::path(post, path = "/api/v1/requests", tag = "requests", security(("bearer" = [])), request_body = CreateRequestBody,
    responses((status = 201, body = RequestDetail), (status = 403, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn create_request(
    State(state): State<AppState>,
    meta: ClientMeta,
    auth: AuthUser,
    JsonBody(body): JsonBody<CreateRequestBody>,
) -> ApiResult<(StatusCode, axum::Json<RequestDetail>)> {
    let actor = auth.actor(&state).await?;
    let draft = Draft {
        pod: PodId(body.pod_id),
        instance: InstanceId(body.instance_id),
        database: body.database,
        kind: body.kind,
        mode: body.mode,
        content: body.content,
        justification: body.justification,
    };
    let record = file_request(&state, &actor, meta, draft, None).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(detail(&state, &actor, record).await?),
    ))
}

async fn detail(state: &AppState, actor: &Actor, r: RequestRecord) -> ApiResult<RequestDetail> {
    let revisions = state.store.request_revisions(r.id).await?;
    let reviews = state.store.request_reviews(r.id).await?;
    // A request has a handful of reviewers at most.
    let mut names = std::collections::HashMap::new();
    for v in &reviews {
        if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(v.reviewer_id) {
            let user = state.store.get_user(v.reviewer_id).await?;
            slot.insert(user.map(|u| u.name).unwrap_or_default());
        }
    }
    let required = state
        .store
        .get_instance(r.instance_id)
        .await?
        .map(|i| i.required_approvals)
        .unwrap_or(1);
    let cutoff = approval_cutoff(state.clock.now(), &state.config.workflow);
    let mut approvers: Vec<UserId> = reviews
        .iter()
        .filter(|v| {
            v.revision == r.revision
                && v.voided_at.is_none()
                && v.decision == Decision::Approve
                && v.created_at >= cutoff
        })
        .map(|v| v.reviewer_id)
        .collect();
    approvers.sort();
    approvers.dedup();
    let already = reviews
        .iter()
        .any(|v| v.revision == r.revision && v.voided_at.is_none() && v.reviewer_id == actor.id);
    let verdict = check_review(actor, &facts(&r), &r.revision_hash, already);
    let content = revisions
        .iter()
        .find(|v| v.number == r.revision)
        .map(|v| v.content.clone())
        .unwrap_or_default();
    let mut views: Vec<RevisionView> = Vec::with_capacity(revisions.len());
    for (i, v) in revisions.iter().enumerate() {
        let diff = (i > 0).then(|| {
            similar::TextDiff::from_lines(&revisions[i - 1].content, &v.content)
                .unified_diff()
                .header(
                    &format!("revision {}", revisions[i - 1].number),
                    &format!("revision {}", v.number),
                )
                .to_string()
        });
        views.push(RevisionView {
            number: v.number,
            hash: v.hash.clone(),
            kind: v.kind,
            mode: v.mode,
            instance_id: v.instance_id.0,
            database: v.database.clone(),
            content: v.content.clone(),
            justification: v.justification.clone(),
            editor_id: v.editor_id.0,
            created_at: v.created_at,
            diff,
            check: v.check.clone(),
        });
    }
    Ok(RequestDetail {
        request: RequestView::new(&r, state),
        content,
        required_approvals: required,
        approvals: u32::try_from(approvers.len()).unwrap_or(u32::MAX),
        reviews: reviews
            .iter()
            .map(|v| {
                let name = names.get(&v.reviewer_id).cloned().unwrap_or_default();
                ReviewView::new(v, name)
            })
            .collect(),
        revisions: views,
        executions: state
            .store
            .request_executions(r.id)
            .await?
            .iter()
            .map(|e| ExecutionRef {
                id: e.id.0,
                status: e.status.as_str().to_owned(),
            })
            .collect(),
        can_review: verdict.is_ok(),
        review_blocked_reason: verdict.err().map(|e| refusal_error(e).message),
    })
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Me {
    Me,
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequestListQuery {
    pub status: Option<Status>,
    pub pod_id: Option<Uuid>,
    pub instance_id: Option<Uuid>,
    /// `me`: only requests the caller filed.
    pub author: Option<Me>,
    /// `me`: the reviewer inbox (pending requests the caller may decide and has not reviewed).
    pub awaiting_review: Option<Me>,
    /// Case-insensitive text in the justification.
    #[validate(length(max = 200))]
    pub q: Option<String>,
    #[validate(range(min = 1, max = 100_000))]
    pub page: Option<u32>,
    #[validate(range(min = 1, max = 100))]
    pub per_page: Option<u32>,
}

/// Requests the caller can see, newest first.
#[utoipa::path(get, path = "/api/v1/requests", tag = "requests", security(("bearer" = [])), params(RequestListQuery),
    responses((status = 200, body = RequestPage), (status = 401, body = ErrorEnvelope)))]
pub async fn list_requests(
    State(state): State<AppState>,
    auth: AuthUser,
    QueryParams(q): QueryParams<RequestListQuery>,
) -> ApiResult<axum::Json<RequestPage>> {
    let (page, per_page, limit, offset) = paging(q.page, q.per_page);
    let actor = auth.actor(&state).await?;
    let query = RequestQuery {
        visible_to: (actor.role != Role::Admin).then(|| (actor.id, actor.pods())),
        status: q.status,
        pod_id: q.pod_id.map(PodId),
        instance_id: q.instance_id.map(InstanceId),
        author_id: q.author.map(|_| actor.id),
        awaiting_review_by: q.awaiting_review.map(|_| match actor.role {
            Role::Admin => (actor.id, None),
            Role::Manager => (actor.id, Some(actor.managed_pods.clone())),
            Role::Developer => (actor.id, Some(Vec::new())),
        }),
        search: q.q.filter(|s| !s.trim().is_empty()),
        limit,
        offset,
    };
    let result = state.store.list_requests(&query).await?;
    Ok(axum::Json(RequestPage {
        items: result
            .items
            .iter()
            .map(|r| RequestView::new(r, &state))
            .collect(),
        total: result.total,
        page,
        per_page,
    }))
}

/// One request with its revisions, diffs, reviews and executions.
#[utoipa::path(get, path = "/api/v1/requests/{id}", tag = "requests", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = RequestDetail), (status = 404, body = ErrorEnvelope)))]
pub async fn get_request(
    State(state): State<AppState>,
    auth: AuthUser,
    PathId(id): PathId<RequestId>,
) -> ApiResult<axum::Json<RequestDetail>> {
    let actor = auth.actor(&state).await?;
    let r = visible_request(&state, &actor, id).await?;
    Ok(axum::Json(detail(&state, &actor, r).await?))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequestBody {
    pub content: Option<String>,
    #[validate(length(min = 10, max = 5000, message = "must be 10 to 5000 characters"))]
    pub justification: Option<String>,
    pub instance_id: Option<Uuid>,
    #[validate(length(min = 1, max = 255, message = "must be 1 to 255 characters"))]
    pub database: Option<String>,
    pub kind: Option<Kind>,
    pub mode: Option<Mode>,
}

/// Edit a request (author only, before it runs): a new revision that voids every review and
/// returns it to `pending`.
#[utoipa::path(patch, path = "/api/v1/requests/{id}", tag = "requests", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = UpdateRequestBody,
    responses((status = 200, body = RequestDetail), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope)))]
pub async fn update_request(
    State(state): State<AppState>,
    meta: ClientMeta,
    auth: AuthUser,
    PathId(id): PathId<RequestId>,
    JsonBody(body): JsonBody<UpdateRequestBody>,
) -> ApiResult<axum::Json<RequestDetail>> {
    let actor = auth.actor(&state).await?;
    let r = visible_request(&state, &actor, id).await?;
    author_gate(&actor, &r, AuthorAction::Edit)?;
    let current = current_revision(&state, &r).await?;
    let content = body.content.unwrap_or(current.content);
    let justification = body.justification.unwrap_or(current.justification);
    let database = body.database.unwrap_or(current.database);
    check_content(&content)?;
    check_text("justification", &justification)?;
    let instance = check_target(
        &state,
        &actor,
        r.pod_id,
        body.instance_id
            .map(InstanceId)
            .unwrap_or(current.instance_id),
        &database,
    )
    .await?;
    let limits = instance.limits.apply(state.config.limits);
    let (kind, mode) = (
        body.kind.unwrap_or(current.kind),
        body.mode.unwrap_or(current.mode),
    );
    let hash = workflow::revision_hash(kind, mode, &content, instance.id, &database, &limits);
    if hash == r.revision_hash && justification == r.justification {
        return Err(ApiError::unprocessable(
            "no_change",
            "the edit changes nothing",
        ));
    }
    let check = syntax_check(&state, kind, instance.engine, &content).await;
    let next = Revision {
        number: r.revision + 1,
        kind,
        mode,
        instance_id: instance.id,
        database,
        content,
        justification,
        limits,
        hash,
        editor_id: actor.id,
        created_at: state.clock.now(),
        check,
    };
    let event = NewAuditEvent::new("request.revised")
        .actor(actor.id)
        .origin(meta.ip, meta.user_agent)
        .details(json!({
            "previous_status": r.status.as_str(), "approvals_voided": r.status == Status::Approved
        }));
    state
        .store
        .revise_request(id, r.revision, &next, event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict(
                "not_editable",
                "the request changed meanwhile (started running or was edited); reload it",
            ),
            other => other.into(),
        })?;
    let r = state
        .store
        .get_request(id)
        .await?
        .ok_or_else(|| ApiError::not_found("request"))?;
    Ok(axum::Json(detail(&state, &actor, r).await?))
}

/// Withdraw a request (author only, before it runs).
#[utoipa::path(post, path = "/api/v1/requests/{id}/cancel", tag = "requests", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = RequestDetail), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope)))]
pub async fn cancel_request(
    State(state): State<AppState>,
    meta: ClientMeta,
    auth: AuthUser,
    PathId(id): PathId<RequestId>,
) -> ApiResult<axum::Json<RequestDetail>> {
    let actor = auth.actor(&state).await?;
    let r = visible_request(&state, &actor, id).await?;
    author_gate(&actor, &r, AuthorAction::Cancel)?;
    let event = NewAuditEvent::new("request.cancelled")
        .actor(actor.id)
        .origin(meta.ip, meta.user_agent);
    let from = [Status::Pending, Status::ChangesRequested, Status::Approved];
    if !state
        .store
        .transition_request(id, &from, Status::Cancelled, event)
        .await?
    {
        return Err(ApiError::conflict(
            "not_cancellable",
            format!(
                "the request is {} and can no longer be cancelled",
                r.status.as_str()
            ),
        ));
    }
    let r = state
        .store
        .get_request(id)
        .await?
        .ok_or_else(|| ApiError::not_found("request"))?;
    Ok(axum::Json(detail(&state, &actor, r).await?))
}

/// Start a new request from any request the caller can see (the caller becomes its author).
#[utoipa::path(post, path = "/api/v1/requests/{id}/clone", tag = "requests", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 201, body = RequestDetail), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn clone_request(
    State(state): State<AppState>,
    meta: ClientMeta,
    auth: AuthUser,
    PathId(id): PathId<RequestId>,
) -> ApiResult<(StatusCode, axum::Json<RequestDetail>)> {
    let actor = auth.actor(&state).await?;
    let r = visible_request(&state, &actor, id).await?;
    let current = current_revision(&state, &r).await?;
    let draft = Draft {
        pod: r.pod_id,
        instance: current.instance_id,
        database: current.database,
        kind: current.kind,
        mode: current.mode,
        content: current.content,
        justification: current.justification,
    };
    let record = file_request(&state, &actor, meta, draft, Some(id)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(detail(&state, &actor, record).await?),
    ))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    pub decision: Decision,
    #[validate(length(max = 5000, message = "must be at most 5000 characters"))]
    #[serde(default)]
    pub comment: String,
    /// The `revision_hash` of the revision reviewed.
    #[validate(length(equal = 64, message = "must be the 64-character revision_hash"))]
    pub revision_hash: String,
}

/// Approve, reject or request changes on the current revision.
#[utoipa::path(post, path = "/api/v1/requests/{id}/reviews", tag = "requests", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = ReviewBody,
    responses((status = 200, body = RequestDetail), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope)))]
pub async fn review_request(
    State(state): State<AppState>,
    meta: ClientMeta,
    auth: AuthUser,
    PathId(id): PathId<RequestId>,
    JsonBody(body): JsonBody<ReviewBody>,
) -> ApiResult<axum::Json<RequestDetail>> {
    let actor = auth.actor(&state).await?;
    let r = decide(&state, &actor, id, body, meta, ReviewChannel::Portal).await?;
    Ok(axum::Json(detail(&state, &actor, r).await?))
}

/// The request as `actor` may review it: visible to them or in a POD they review for, and
/// settled (expired if its time ran out).
pub(crate) async fn reviewable_request(
    state: &AppState,
    actor: &Actor,
    id: RequestId,
) -> ApiResult<RequestRecord> {
    match state.store.get_request(id).await? {
        Some(r) if can_view(actor, &facts(&r)) || workflow::is_reviewer_for(actor, r.pod_id) => {
            settle(state, r).await
        }
        _ => Err(ApiError::not_found("request")),
    }
}

/// Checks that `actor` may make this decision on the request as it stands, from this channel
/// (the rules of `workflow::check_review`, `check_decision` and `check_channel`); a self-review
/// attempt is audited. Returns the approvals the request's instance requires.
pub(crate) async fn check_reviewer(
    state: &AppState,
    actor: &Actor,
    r: &RequestRecord,
    body: &ReviewBody,
    meta: &ClientMeta,
    channel: ReviewChannel,
) -> ApiResult<u8> {
    check_text("comment", &body.comment)?;
    let reviews = state.store.request_reviews(r.id).await?;
    let already = reviews
        .iter()
        .any(|v| v.revision == r.revision && v.voided_at.is_none() && v.reviewer_id == actor.id);
    let instance = state.store.get_instance(r.instance_id).await?;
    let checked = check_review(actor, &facts(r), &body.revision_hash, already)
        .and_then(|()| workflow::check_decision(body.decision, &body.comment))
        .and_then(|()| {
            workflow::check_channel(channel, instance.as_ref().is_some_and(|i| i.slack_approval))
        });
    if let Err(refusal) = checked {
        if refusal == ReviewRefusal::SelfReview {
            let event = NewAuditEvent::new("request.review_refused")
                .actor(actor.id)
                .origin(meta.ip.clone(), meta.user_agent.clone())
                .target("request", r.id)
                .details(json!({ "reason": "self_review" }));
            state.store.append_audit(event).await?;
        }
        return Err(refusal_error(refusal));
    }
    Ok(instance.map_or(1, |i| i.required_approvals))
}

/// Applies a review decision with every rule of the workflow, from the portal or from Slack,
/// and starts the request when the approval completes it on an automatic instance.
pub(crate) async fn decide(
    state: &AppState,
    actor: &Actor,
    id: RequestId,
    body: ReviewBody,
    meta: ClientMeta,
    channel: ReviewChannel,
) -> ApiResult<RequestRecord> {
    let r = reviewable_request(state, actor, id).await?;
    let required = check_reviewer(state, actor, &r, &body, &meta, channel).await?;
    let review = Review {
        id: Uuid::now_v7(),
        revision: r.revision,
        revision_hash: body.revision_hash,
        reviewer_id: actor.id,
        decision: body.decision,
        comment: body.comment,
        created_at: state.clock.now(),
        voided_at: None,
    };
    let event = NewAuditEvent::new("request.reviewed")
        .actor(actor.id)
        .origin(meta.ip, meta.user_agent)
        .details(json!({ "via": channel.as_str() }));
    let cutoff = approval_cutoff(state.clock.now(), &state.config.workflow);
    let status = state
        .store
        .review_request(id, r.revision, &review, required, cutoff, event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) if m == "already_reviewed" => {
                refusal_error(ReviewRefusal::AlreadyReviewed)
            }
            StoreError::Conflict(_) => refusal_error(ReviewRefusal::StaleRevision),
            other => other.into(),
        })?;
    let r = state
        .store
        .get_request(id)
        .await?
        .ok_or_else(|| ApiError::not_found("request"))?;
    if status == Status::Approved {
        start_if_automatic(state, &r).await;
        return Ok(state.store.get_request(id).await?.unwrap_or(r));
    }
    Ok(r)
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    pub instance_id: Uuid,
    #[validate(length(min = 1, max = 255, message = "must be 1 to 255 characters"))]
    pub database: String,
    pub content: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainResponse {
    pub plans: Vec<crate::exec::StatementPlan>,
}

/// Show the plan of a query before filing or deciding on it; nothing is executed.
#[utoipa::path(post, path = "/api/v1/requests/explain", tag = "requests", security(("bearer" = [])), request_body = ExplainBody,
    responses(
        (status = 200, body = ExplainResponse),
        (status = 422, description = "Not explainable, or the database refused the statement", body = ErrorEnvelope),
        (status = 502, description = "The instance could not be reached", body = ErrorEnvelope),
    ))]
pub async fn explain_request(
    State(state): State<AppState>,
    auth: AuthUser,
    JsonBody(body): JsonBody<ExplainBody>,
) -> ApiResult<axum::Json<ExplainResponse>> {
    use crate::domain::execution::ErrorKind;
    let actor = auth.actor(&state).await?;
    check_content(&body.content)?;
    let instance = match state
        .store
        .get_instance(InstanceId(body.instance_id))
        .await?
    {
        Some(i) if can_use(&actor, &i) => i,
        _ => {
            return Err(ApiError::unprocessable(
                "unknown_instance",
                "there is no such instance you may use",
            ));
        }
    };
    let databases = state.store.instance_databases(instance.id).await?;
    if !databases.contains(&body.database) {
        return Err(ApiError::unprocessable(
            "unknown_database",
            format!(
                "instance {} has no database {:?}",
                instance.name, body.database
            ),
        )
        .with_details(json!({ "available": databases })));
    }
    let secret = match &instance.secret {
        Some(sealed) => Some(state.secrets.open(instance.id.0, sealed).map_err(|e| {
            ApiError::unprocessable(
                "credential_unavailable",
                format!("the instance's credential cannot be used: {e}"),
            )
        })?),
        None => None,
    };
    let limits = instance.limits.apply(state.config.limits);
    let plans = crate::exec::explain(
        &instance,
        secret.as_ref(),
        &body.database,
        &body.content,
        &limits,
        &state.config.data_dir,
    )
    .await
    .map_err(|e| match e.kind {
        ErrorKind::TargetUnavailable => {
            ApiError::new(StatusCode::BAD_GATEWAY, "target_unavailable", e.message)
        }
        ErrorKind::Unsupported => ApiError::unprocessable("engine_unsupported", e.message),
        _ => ApiError::unprocessable("explain_failed", e.message)
            .with_details(json!({ "statement": e.statement, "sqlstate": e.sqlstate })),
    })?;
    Ok(axum::Json(ExplainResponse { plans }))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    pub kind: Kind,
    /// The engine of the instance the content is meant for: it picks the SQL dialect, and for
    /// MongoDB a `query` is a mongosh-style expression.
    pub engine: crate::domain::instance::Engine,
    pub content: String,
}

/// The check stored with a revision; `None` (logged) when no check could be made.
async fn syntax_check(
    state: &AppState,
    kind: Kind,
    engine: crate::domain::instance::Engine,
    content: &str,
) -> Option<crate::check::CheckReport> {
    match crate::check::check(&state.sandbox, &state.config.limits, kind, engine, content).await {
        Ok(report) => Some(report),
        Err(e) => {
            tracing::warn!(error = %e, "the syntax check of a revision could not run");
            None
        }
    }
}

/// Parse a query or script without running it: syntax errors with line and column, and for SQL
/// which statements a read or a write request may run. Nothing reaches a database.
#[utoipa::path(post, path = "/api/v1/requests/check", tag = "requests", security(("bearer" = [])), request_body = CheckBody,
    responses(
        (status = 200, description = "The check ran; `ok` says whether the content parsed", body = crate::check::CheckReport),
        (status = 422, description = "Content missing or too large", body = ErrorEnvelope),
        (status = 503, description = "The script sandbox is not available", body = ErrorEnvelope),
    ))]
pub async fn check_request(
    State(state): State<AppState>,
    auth: AuthUser,
    JsonBody(body): JsonBody<CheckBody>,
) -> ApiResult<axum::Json<crate::check::CheckReport>> {
    auth.actor(&state).await?;
    check_content(&body.content)?;
    let report = crate::check::check(
        &state.sandbox,
        &state.config.limits,
        body.kind,
        body.engine,
        &body.content,
    )
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sandbox_unavailable",
            format!("the script could not be checked: {e}"),
        )
    })?;
    Ok(axum::Json(report))
}
