//! Database instances: registered by admins with sealed credentials, visible to the PODs allowed
//! to use them, probed and their database lists synced on demand and periodically.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorEnvelope};
use super::extract::{AdministerOrg, AuthUser, ClientMeta, JsonBody, PathId, QueryParams, Require};
use super::views::{double_option, paging};
use crate::config::LimitsConfig;
use crate::domain::audit::NewAuditEvent;
use crate::domain::instance::{self, Engine, LimitOverrides, RunMode, TlsMode};
use crate::domain::text::{find_forbidden_in_line, valid_pod_name};
use crate::domain::{Actor, InstanceId, PodId, Role};
use crate::store::{Instance, StoreError};
use crate::targets;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances, create_instance))
        .routes(routes!(get_instance, update_instance, delete_instance))
        .routes(routes!(test_instance))
        .routes(routes!(list_databases))
        .routes(routes!(sync_databases))
}

/// Connection settings, shown to admins only.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionView {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub tls: TlsMode,
    pub uri: Option<String>,
    pub path: Option<String>,
    /// Whether a secret (password) is stored; the secret itself is never returned.
    pub has_secret: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    pub id: Uuid,
    pub name: String,
    pub engine: Engine,
    /// `production`, `staging`, …
    pub environment: String,
    pub allowed_pod_ids: Vec<Uuid>,
    pub required_approvals: u8,
    pub run_mode: RunMode,
    /// Whether approving from Slack is allowed.
    pub slack_approval: bool,
    /// The instance's own overrides.
    pub limits: LimitOverrides,
    /// What applies to executions: the overrides over the configured defaults.
    #[schema(value_type = Object)]
    pub effective_limits: LimitsConfig,
    pub databases_synced_at: Option<DateTime<Utc>>,
    /// Present for admins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl InstanceView {
    fn new(i: &Instance, defaults: LimitsConfig, admin: bool) -> Self {
        Self {
            id: i.id.0,
            name: i.name.clone(),
            engine: i.engine,
            environment: i.environment.clone(),
            allowed_pod_ids: i.allowed_pods.iter().map(|p| p.0).collect(),
            required_approvals: i.required_approvals,
            run_mode: i.run_mode,
            slack_approval: i.slack_approval,
            limits: i.limits,
            effective_limits: i.limits.apply(defaults),
            databases_synced_at: i.databases_synced_at,
            connection: admin.then(|| ConnectionView {
                host: i.host.clone(),
                port: i.port,
                user: i.username.clone(),
                tls: i.tls_mode,
                uri: i.uri.clone(),
                path: i.path.clone(),
                has_secret: i.secret.is_some(),
            }),
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstancePage {
    pub items: Vec<InstanceView>,
    pub total: i64,
    pub page: u32,
    pub per_page: u32,
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InstanceListQuery {
    #[validate(range(min = 1, max = 100_000))]
    pub page: Option<u32>,
    #[validate(range(min = 1, max = 100))]
    pub per_page: Option<u32>,
}

/// Whether the actor may see (and file requests against) an instance.
pub fn can_use(actor: &Actor, instance: &Instance) -> bool {
    actor.may_use_instance(&instance.allowed_pods)
}

/// Instances the caller may use: all for admins, otherwise those allowed for their PODs.
#[utoipa::path(get, path = "/api/v1/instances", tag = "instances", security(("bearer" = [])), params(InstanceListQuery),
    responses((status = 200, body = InstancePage), (status = 401, body = ErrorEnvelope)))]
pub async fn list_instances(
    State(state): State<AppState>,
    auth: AuthUser,
    QueryParams(q): QueryParams<InstanceListQuery>,
) -> ApiResult<axum::Json<InstancePage>> {
    let (page, per_page, limit, offset) = paging(q.page, q.per_page);
    let actor = auth.actor(&state).await?;
    let pods = (actor.role != Role::Admin).then(|| actor.pods());
    let result = state
        .store
        .list_instances(pods.as_deref(), limit, offset)
        .await?;
    let admin = actor.role == Role::Admin;
    Ok(axum::Json(InstancePage {
        items: result
            .items
            .iter()
            .map(|i| InstanceView::new(i, state.config.limits, admin))
            .collect(),
        total: result.total,
        page,
        per_page,
    }))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstanceRequest {
    pub name: String,
    pub engine: Engine,
    /// PostgreSQL and MongoDB.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// The password; sealed at rest and never returned.
    #[validate(length(max = 4096))]
    pub secret: Option<String>,
    pub tls: Option<TlsMode>,
    /// MongoDB: a connection string without a password, instead of host and port.
    pub uri: Option<String>,
    /// SQLite: a file path relative to the data directory.
    pub path: Option<String>,
    pub environment: String,
    #[serde(default)]
    pub allowed_pod_ids: Vec<Uuid>,
    /// 1-3 distinct approvers (default 1).
    pub required_approvals: Option<u8>,
    pub run_mode: Option<RunMode>,
    pub slack_approval: Option<bool>,
    pub limits: Option<LimitOverrides>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateInstanceRequest {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub host: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u16>, nullable)]
    pub port: Option<Option<u16>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub user: Option<Option<String>>,
    /// A new password; `null` removes the stored one.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub secret: Option<Option<String>>,
    pub tls: Option<TlsMode>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub uri: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub path: Option<Option<String>>,
    pub environment: Option<String>,
    pub allowed_pod_ids: Option<Vec<Uuid>>,
    pub required_approvals: Option<u8>,
    pub run_mode: Option<RunMode>,
    pub slack_approval: Option<bool>,
    /// Replaces all overrides.
    pub limits: Option<LimitOverrides>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_instance", message)
}

/// Checks an instance's settings as a whole, after a create or a merge of a patch.
fn check_instance(state: &AppState, i: &Instance) -> ApiResult<()> {
    if !valid_pod_name(&i.name) {
        return Err(invalid(
            "name must be 1-64 ASCII letters, digits, spaces, '-', '_' or '.', starting with a letter or digit",
        ));
    }
    if !instance::valid_environment(&i.environment) {
        return Err(invalid(
            "environment must be a short lowercase label such as production or staging",
        ));
    }
    if !(1..=3).contains(&i.required_approvals) {
        return Err(invalid("required_approvals must be 1, 2 or 3"));
    }
    if let Some(problem) = i.limits.apply(state.config.limits).out_of_bounds() {
        return Err(invalid(format!("limits: {problem}")));
    }
    if let Some(h) = &i.host
        && !instance::valid_host(h)
    {
        return Err(invalid("host must be a host name or an IP address"));
    }
    if let Some(u) = &i.username
        && (u.is_empty() || u.len() > 128 || find_forbidden_in_line(u).is_some())
    {
        return Err(invalid("user must be 1-128 printable characters"));
    }
    let has = |o: &Option<String>| o.is_some();
    match i.engine {
        Engine::Postgres => {
            if !has(&i.host) || !has(&i.username) {
                return Err(invalid("a PostgreSQL instance needs host and user"));
            }
            if has(&i.uri) || has(&i.path) {
                return Err(invalid(
                    "a PostgreSQL instance takes host, port and user, not uri or path",
                ));
            }
        }
        Engine::Mongodb => {
            match (&i.uri, &i.host) {
                (Some(uri), None) => instance::valid_mongodb_uri(uri).map_err(invalid)?,
                (None, Some(_)) => {}
                _ => {
                    return Err(invalid(
                        "a MongoDB instance takes either uri or host (and port)",
                    ));
                }
            }
            if has(&i.path) {
                return Err(invalid("a MongoDB instance takes no path"));
            }
        }
        Engine::Sqlite => {
            let Some(path) = &i.path else {
                return Err(invalid(
                    "a SQLite instance needs path (relative to the data directory)",
                ));
            };
            if !instance::valid_sqlite_path(path) {
                return Err(invalid(
                    "path must be relative to the data directory and must not contain '..'",
                ));
            }
            if !state.config.data_dir.join(path).is_file() {
                return Err(invalid(format!(
                    "there is no file {path} in the data directory"
                )));
            }
            if is_portal_file(state, path) {
                return Err(invalid(
                    "path names one of the portal's own files (its store or keys), which requests must never reach",
                ));
            }
            if has(&i.host)
                || i.port.is_some()
                || has(&i.username)
                || has(&i.uri)
                || i.secret.is_some()
            {
                return Err(invalid(
                    "a SQLite instance takes only path (no host, port, user, uri or secret)",
                ));
            }
        }
    }
    Ok(())
}

/// Whether a data-directory path is the portal's own store (or its WAL files) or a key file.
fn is_portal_file(state: &AppState, path: &str) -> bool {
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    let Some(target) = canonical(&state.config.data_dir.join(path)) else {
        return false;
    };
    let store = state.config.database_url();
    let store_file = store
        .strip_prefix("sqlite://")
        .or_else(|| store.strip_prefix("sqlite:"))
        .map(std::path::PathBuf::from);
    let mut own: Vec<std::path::PathBuf> = ["jwt.key", crate::MASTER_KEY_FILE, "master.key.new"]
        .iter()
        .map(|f| state.config.data_dir.join(f))
        .collect();
    if let Some(db) = store_file {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            own.push(std::path::PathBuf::from(format!(
                "{}{suffix}",
                db.display()
            )));
        }
    }
    own.iter().filter_map(|p| canonical(p)).any(|p| p == target)
}

async fn check_pods(state: &AppState, ids: &[Uuid]) -> ApiResult<Vec<PodId>> {
    let mut pods: Vec<PodId> = ids.iter().copied().map(PodId).collect();
    pods.sort();
    pods.dedup();
    let mut unknown = Vec::new();
    for p in &pods {
        if state.store.get_pod(*p).await?.is_none() {
            unknown.push(p.to_string());
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::unprocessable(
            "unknown_pod",
            "allowed_pod_ids names PODs that do not exist",
        )
        .with_details(json!({ "pod_ids": unknown })));
    }
    Ok(pods)
}

fn check_secret(secret: &str) -> ApiResult<SecretString> {
    if secret.is_empty() || secret.chars().any(char::is_control) {
        return Err(invalid(
            "secret must be non-empty and contain no control characters",
        ));
    }
    Ok(SecretString::from(secret.to_owned()))
}

fn conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::conflict("instance_name_taken", m),
        StoreError::NotFound => ApiError::not_found("instance"),
        other => other.into(),
    }
}

/// What an audit event may say about an instance: everything but the secret.
fn audit_details(i: &Instance, secret_changed: bool) -> serde_json::Value {
    json!({
        "name": i.name, "engine": i.engine.as_str(), "host": i.host, "port": i.port, "user": i.username,
        "tls": i.tls_mode.as_str(), "uri": i.uri, "path": i.path, "environment": i.environment,
        "allowed_pod_ids": i.allowed_pods, "required_approvals": i.required_approvals,
        "run_mode": i.run_mode.as_str(), "slack_approval": i.slack_approval, "limits": i.limits,
        "secret_changed": secret_changed,
    })
}

/// Register an instance.
#[utoipa::path(post, path = "/api/v1/instances", tag = "instances", security(("bearer" = [])), request_body = CreateInstanceRequest,
    responses((status = 201, body = InstanceView), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn create_instance(
    State(state): State<AppState>,
    meta: ClientMeta,
    Require(admin, _): Require<AdministerOrg>,
    JsonBody(body): JsonBody<CreateInstanceRequest>,
) -> ApiResult<(StatusCode, axum::Json<InstanceView>)> {
    let now = state.clock.now();
    let id = InstanceId::new();
    let secret = body.secret.as_deref().map(check_secret).transpose()?;
    let default_port = match body.engine {
        Engine::Postgres => Some(5432),
        Engine::Mongodb if body.host.is_some() => Some(27017),
        _ => None,
    };
    let instance = Instance {
        id,
        name: body.name.trim().to_owned(),
        engine: body.engine,
        host: body.host,
        port: body.port.or(default_port),
        username: body.user,
        tls_mode: body.tls.unwrap_or_default(),
        uri: body.uri,
        path: body.path,
        environment: body.environment,
        required_approvals: body.required_approvals.unwrap_or(1),
        run_mode: body.run_mode.unwrap_or_default(),
        slack_approval: body.slack_approval.unwrap_or(true),
        limits: body.limits.unwrap_or_default(),
        secret: secret.as_ref().map(|s| state.secrets.seal(id.0, s)),
        allowed_pods: check_pods(&state, &body.allowed_pod_ids).await?,
        databases_synced_at: None,
        created_at: now,
        updated_at: now,
    };
    check_instance(&state, &instance)?;
    let event = NewAuditEvent::new("instance.created")
        .actor(admin.user.id)
        .origin(meta.ip, meta.user_agent)
        .details(audit_details(&instance, secret.is_some()));
    state
        .store
        .create_instance(&instance, event)
        .await
        .map_err(conflict)?;
    // A first database list right away, so the instance is usable at once; a failure here is
    // not fatal (the admin sees it through `test` and `databases/sync`).
    if let Err(e) = sync(&state, &instance, None).await {
        tracing::info!(instance = %instance.id, code = e.code, error = %e.message, "initial database sync failed");
    }
    let stored = state
        .store
        .get_instance(id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(InstanceView::new(&stored, state.config.limits, true)),
    ))
}

async fn visible_instance(
    state: &AppState,
    auth: &AuthUser,
    id: InstanceId,
) -> ApiResult<(Instance, Actor)> {
    let actor = auth.actor(state).await?;
    match state.store.get_instance(id).await? {
        Some(i) if can_use(&actor, &i) => Ok((i, actor)),
        _ => Err(ApiError::not_found("instance")),
    }
}

/// One instance.
#[utoipa::path(get, path = "/api/v1/instances/{id}", tag = "instances", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = InstanceView), (status = 404, body = ErrorEnvelope)))]
pub async fn get_instance(
    State(state): State<AppState>,
    auth: AuthUser,
    PathId(id): PathId<InstanceId>,
) -> ApiResult<axum::Json<InstanceView>> {
    let (instance, actor) = visible_instance(&state, &auth, id).await?;
    Ok(axum::Json(InstanceView::new(
        &instance,
        state.config.limits,
        actor.role == Role::Admin,
    )))
}

/// Change an instance's settings, allowed PODs, limits or secret.
#[utoipa::path(patch, path = "/api/v1/instances/{id}", tag = "instances", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = UpdateInstanceRequest,
    responses((status = 200, body = InstanceView), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn update_instance(
    State(state): State<AppState>,
    meta: ClientMeta,
    Require(admin, _): Require<AdministerOrg>,
    PathId(id): PathId<InstanceId>,
    JsonBody(body): JsonBody<UpdateInstanceRequest>,
) -> ApiResult<axum::Json<InstanceView>> {
    let mut i = state
        .store
        .get_instance(id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    let secret_changed = body.secret.is_some();
    if let Some(name) = body.name {
        i.name = name.trim().to_owned();
    }
    if let Some(v) = body.host {
        i.host = v;
    }
    if let Some(v) = body.port {
        i.port = v;
    }
    if let Some(v) = body.user {
        i.username = v;
    }
    if let Some(v) = body.tls {
        i.tls_mode = v;
    }
    if let Some(v) = body.uri {
        i.uri = v;
    }
    if let Some(v) = body.path {
        i.path = v;
    }
    if let Some(v) = body.environment {
        i.environment = v;
    }
    if let Some(ids) = body.allowed_pod_ids {
        i.allowed_pods = check_pods(&state, &ids).await?;
    }
    if let Some(v) = body.required_approvals {
        i.required_approvals = v;
    }
    if let Some(v) = body.run_mode {
        i.run_mode = v;
    }
    if let Some(v) = body.slack_approval {
        i.slack_approval = v;
    }
    if let Some(v) = body.limits {
        i.limits = v;
    }
    match body.secret {
        Some(Some(s)) => i.secret = Some(state.secrets.seal(i.id.0, &check_secret(&s)?)),
        Some(None) => i.secret = None,
        None => {}
    }
    i.updated_at = state.clock.now();
    check_instance(&state, &i)?;
    let event = NewAuditEvent::new("instance.updated")
        .actor(admin.user.id)
        .origin(meta.ip, meta.user_agent)
        .details(audit_details(&i, secret_changed));
    state
        .store
        .update_instance(&i, event)
        .await
        .map_err(conflict)?;
    Ok(axum::Json(InstanceView::new(&i, state.config.limits, true)))
}

/// Remove an instance no request refers to (retire one with history by clearing its allowed PODs).
#[utoipa::path(delete, path = "/api/v1/instances/{id}", tag = "instances", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "Requests refer to it", body = ErrorEnvelope)))]
pub async fn delete_instance(
    State(state): State<AppState>,
    meta: ClientMeta,
    Require(admin, _): Require<AdministerOrg>,
    PathId(id): PathId<InstanceId>,
) -> ApiResult<StatusCode> {
    let i = state
        .store
        .get_instance(id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    let event = NewAuditEvent::new("instance.deleted")
        .actor(admin.user.id)
        .origin(meta.ip, meta.user_agent)
        .details(json!({ "name": i.name }));
    state
        .store
        .delete_instance(id, event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::conflict("instance_in_use", m),
            other => conflict(other),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Opens the instance's sealed secret; a secret that no longer decrypts is reported, not hidden.
fn open_secret(state: &AppState, i: &Instance) -> ApiResult<Option<SecretString>> {
    match &i.secret {
        None => Ok(None),
        Some(sealed) => state.secrets.open(i.id.0, sealed).map(Some).map_err(|e| {
            tracing::error!(instance = %i.id, error = %e, "instance credential cannot be decrypted");
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "credential_unavailable",
                format!("the stored credential of this instance cannot be used: {e}; set the secret again"),
            )
        }),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    pub ok: bool,
    pub server_version: Option<String>,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

/// Connect to the instance and report its server version and the round trip, or the error.
#[utoipa::path(post, path = "/api/v1/instances/{id}/test", tag = "instances", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TestResult), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn test_instance(
    State(state): State<AppState>,
    _admin: Require<AdministerOrg>,
    PathId(id): PathId<InstanceId>,
) -> ApiResult<axum::Json<TestResult>> {
    let i = state
        .store
        .get_instance(id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    let secret = open_secret(&state, &i)?;
    let result = match targets::probe(&i, secret.as_ref(), &state.config.data_dir).await {
        Ok(p) => TestResult {
            ok: true,
            server_version: Some(p.server_version),
            latency_ms: Some((p.latency.as_secs_f64() * 1000.0 * 100.0).round() / 100.0),
            error: None,
        },
        Err(e) => TestResult {
            ok: false,
            server_version: None,
            latency_ms: None,
            error: Some(e.to_string()),
        },
    };
    Ok(axum::Json(result))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseList {
    pub databases: Vec<String>,
    pub synced_at: Option<DateTime<Utc>>,
}

/// The databases requests may name on this instance (as last synced).
#[utoipa::path(get, path = "/api/v1/instances/{id}/databases", tag = "instances", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = DatabaseList), (status = 404, body = ErrorEnvelope)))]
pub async fn list_databases(
    State(state): State<AppState>,
    auth: AuthUser,
    PathId(id): PathId<InstanceId>,
) -> ApiResult<axum::Json<DatabaseList>> {
    let (instance, _) = visible_instance(&state, &auth, id).await?;
    let databases = state.store.instance_databases(id).await?;
    Ok(axum::Json(DatabaseList {
        databases,
        synced_at: instance.databases_synced_at,
    }))
}

/// Refreshes an instance's database list from the instance itself.
pub async fn sync(
    state: &AppState,
    i: &Instance,
    actor: Option<crate::domain::UserId>,
) -> Result<Vec<String>, ApiError> {
    let secret = open_secret(state, i)?;
    let names = targets::list_databases(i, secret.as_ref(), &state.config.data_dir)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "target_unavailable", e.to_string()))?;
    let mut event = NewAuditEvent::new("instance.databases_synced");
    if let Some(a) = actor {
        event = event.actor(a);
    }
    state
        .store
        .set_instance_databases(i.id, &names, event)
        .await?;
    Ok(names)
}

/// Refresh the database list from the instance now.
#[utoipa::path(post, path = "/api/v1/instances/{id}/databases/sync", tag = "instances", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = DatabaseList),
        (status = 404, body = ErrorEnvelope),
        (status = 502, description = "The instance could not be reached", body = ErrorEnvelope),
    ))]
pub async fn sync_databases(
    State(state): State<AppState>,
    Require(admin, _): Require<AdministerOrg>,
    PathId(id): PathId<InstanceId>,
) -> ApiResult<axum::Json<DatabaseList>> {
    let i = state
        .store
        .get_instance(id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    let databases = sync(&state, &i, Some(admin.user.id)).await?;
    let synced_at = state
        .store
        .get_instance(id)
        .await?
        .and_then(|i| i.databases_synced_at);
    Ok(axum::Json(DatabaseList {
        databases,
        synced_at,
    }))
}
