//! The SQL both stores share. `impl_store!` expands to the `Store` implementation for one
//! backend; the SQL is portable between SQLite and PostgreSQL (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`, no server-side clock: instants come from the injected clock).
//!
//! Writes go through `self.write_tx()`, which on SQLite first takes the in-process writer lock
//! (one writer at a time, so a deferred transaction never fails with SQLITE_BUSY half-way), and
//! audit appends run `Self::AUDIT_LOCK_SQL` so two replicas cannot both extend the chain from
//! the same previous hash.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Page, Pod, PodSummary, Session, StoreError, User};
use crate::domain::audit::AuditEvent;
use crate::domain::{PodId, Role, SessionId, UserId};

pub(super) const USER_COLUMNS: &str = "u.id, u.email, u.name, u.role, u.home_pod_id, u.disabled, \
    u.must_change_password, u.failed_logins, u.delayed_until, u.locked_at, u.slack_user_id, \
    u.password_changed_at, u.created_at, u.updated_at";

pub(super) const SESSION_COLUMNS: &str = "s.id, s.user_id, s.user_agent, s.ip, s.created_at, s.last_seen_at, s.expires_at, s.revoked_at, s.revoked_reason";

pub(super) const AUDIT_COLUMNS: &str = "seq, id, at, actor_id, action, target_type, target_id, ip, user_agent, details, prev_hash, hash";

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: Uuid,
    email: String,
    name: String,
    role: String,
    home_pod_id: Option<Uuid>,
    disabled: bool,
    must_change_password: bool,
    failed_logins: i32,
    delayed_until: Option<DateTime<Utc>>,
    locked_at: Option<DateTime<Utc>>,
    slack_user_id: Option<String>,
    password_changed_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        Ok(User {
            id: UserId(r.id),
            role: Role::parse(&r.role)
                .ok_or_else(|| StoreError::Corrupt(format!("role {:?}", r.role)))?,
            email: r.email,
            name: r.name,
            home_pod_id: r.home_pod_id.map(PodId),
            disabled: r.disabled,
            must_change_password: r.must_change_password,
            failed_logins: r.failed_logins,
            delayed_until: r.delayed_until,
            locked_at: r.locked_at,
            slack_user_id: r.slack_user_id,
            password_changed_at: r.password_changed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub(super) fn users(rows: Vec<UserRow>) -> Result<Vec<User>, StoreError> {
    rows.into_iter().map(User::try_from).collect()
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    id: Uuid,
    user_id: Uuid,
    user_agent: Option<String>,
    ip: Option<String>,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    revoked_reason: Option<String>,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Session {
            id: SessionId(r.id),
            user_id: UserId(r.user_id),
            user_agent: r.user_agent,
            ip: r.ip,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            revoked_reason: r.revoked_reason,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuthRow {
    #[sqlx(flatten)]
    user: UserRow,
    s_id: Uuid,
    s_user_agent: Option<String>,
    s_ip: Option<String>,
    s_created_at: DateTime<Utc>,
    s_last_seen_at: DateTime<Utc>,
    s_expires_at: DateTime<Utc>,
    s_revoked_at: Option<DateTime<Utc>>,
    s_revoked_reason: Option<String>,
    jti_revoked: bool,
}

impl TryFrom<AuthRow> for super::AuthContext {
    type Error = StoreError;
    fn try_from(r: AuthRow) -> Result<Self, StoreError> {
        let user = User::try_from(r.user)?;
        Ok(super::AuthContext {
            session: Session {
                id: SessionId(r.s_id),
                user_id: user.id,
                user_agent: r.s_user_agent,
                ip: r.s_ip,
                created_at: r.s_created_at,
                last_seen_at: r.s_last_seen_at,
                expires_at: r.s_expires_at,
                revoked_at: r.s_revoked_at,
                revoked_reason: r.s_revoked_reason,
            },
            user,
            jti_revoked: r.jti_revoked,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RefreshRow {
    token_id: Uuid,
    rotated_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    session: SessionRow,
}

impl From<RefreshRow> for super::RefreshRecord {
    fn from(r: RefreshRow) -> Self {
        super::RefreshRecord {
            token_id: r.token_id,
            rotated_at: r.rotated_at,
            session: r.session.into(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct PodRow {
    id: Uuid,
    name: String,
    slack_channel: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<PodRow> for Pod {
    fn from(r: PodRow) -> Self {
        Pod {
            id: PodId(r.id),
            name: r.name,
            slack_channel: r.slack_channel,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct PodSummaryRow {
    #[sqlx(flatten)]
    pod: PodRow,
    manager_count: i64,
    member_count: i64,
}

impl From<PodSummaryRow> for PodSummary {
    fn from(r: PodSummaryRow) -> Self {
        PodSummary {
            pod: r.pod.into(),
            manager_count: r.manager_count,
            member_count: r.member_count,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    seq: i64,
    id: Uuid,
    at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    action: String,
    target_type: Option<String>,
    target_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    details: String,
    prev_hash: String,
    hash: String,
}

impl From<AuditRow> for AuditEvent {
    fn from(r: AuditRow) -> Self {
        // A details text that is not JSON (tampering) is kept as a string so the verifier can
        // still hash the exact stored bytes.
        let details = serde_json::from_str(&r.details)
            .unwrap_or_else(|_| serde_json::Value::String(r.details.clone()));
        AuditEvent {
            seq: r.seq,
            id: r.id,
            at: r.at,
            actor_id: r.actor_id,
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            ip: r.ip,
            user_agent: r.user_agent,
            details,
            prev_hash: r.prev_hash,
            hash: r.hash,
            details_raw: r.details,
        }
    }
}

pub(super) const INSTANCE_COLUMNS: &str = "i.id, i.name, i.engine, i.host, i.port, i.username, i.tls_mode, i.uri, i.path, \
    i.environment, i.required_approvals, i.run_mode, i.slack_approval, i.limits, i.secret_ciphertext, i.secret_key_id, \
    i.databases_synced_at, i.created_at, i.updated_at";

#[derive(sqlx::FromRow)]
pub(super) struct InstanceRow {
    id: Uuid,
    name: String,
    engine: String,
    host: Option<String>,
    port: Option<i32>,
    username: Option<String>,
    tls_mode: String,
    uri: Option<String>,
    path: Option<String>,
    environment: String,
    required_approvals: i32,
    run_mode: String,
    slack_approval: bool,
    limits: String,
    secret_ciphertext: Option<Vec<u8>>,
    secret_key_id: Option<String>,
    databases_synced_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl InstanceRow {
    pub(super) fn id(&self) -> Uuid {
        self.id
    }

    pub(super) fn into_instance(
        self,
        allowed_pods: Vec<PodId>,
    ) -> Result<super::Instance, StoreError> {
        use crate::domain::instance::{Engine, RunMode, TlsMode};
        let corrupt = |what: &str, v: &str| {
            StoreError::Corrupt(format!("instance {}: {what} {v:?}", self.id))
        };
        Ok(super::Instance {
            id: crate::domain::InstanceId(self.id),
            engine: Engine::parse(&self.engine).ok_or_else(|| corrupt("engine", &self.engine))?,
            tls_mode: TlsMode::parse(&self.tls_mode)
                .ok_or_else(|| corrupt("tls_mode", &self.tls_mode))?,
            run_mode: RunMode::parse(&self.run_mode)
                .ok_or_else(|| corrupt("run_mode", &self.run_mode))?,
            limits: serde_json::from_str(&self.limits)
                .map_err(|_| corrupt("limits", &self.limits))?,
            port: self
                .port
                .map(|p| u16::try_from(p).map_err(|_| corrupt("port", &p.to_string())))
                .transpose()?,
            required_approvals: u8::try_from(self.required_approvals).unwrap_or(1),
            secret: match (self.secret_ciphertext, self.secret_key_id) {
                (Some(bytes), Some(key_id)) => Some(crate::secrets::Sealed { bytes, key_id }),
                _ => None,
            },
            name: self.name,
            host: self.host,
            username: self.username,
            uri: self.uri,
            path: self.path,
            environment: self.environment,
            slack_approval: self.slack_approval,
            allowed_pods,
            databases_synced_at: self.databases_synced_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub(super) const REQUEST_COLUMNS: &str = "r.id, r.author_id, r.last_editor_id, r.pod_id, r.instance_id, r.database_name, \
    r.kind, r.mode, r.justification, r.status, r.revision, r.revision_hash, r.status_changed_at, r.created_at, r.updated_at, \
    (SELECT u.name FROM users u WHERE u.id = r.author_id) AS author_name";

#[derive(sqlx::FromRow)]
pub(super) struct RequestRow {
    id: Uuid,
    author_id: Uuid,
    last_editor_id: Uuid,
    pod_id: Uuid,
    instance_id: Uuid,
    database_name: String,
    kind: String,
    mode: String,
    justification: String,
    status: String,
    revision: i32,
    revision_hash: String,
    status_changed_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    author_name: Option<String>,
}

impl TryFrom<RequestRow> for super::RequestRecord {
    type Error = StoreError;
    fn try_from(r: RequestRow) -> Result<Self, StoreError> {
        use crate::domain::workflow::{Kind, Mode, Status};
        let corrupt =
            |what: &str, v: &str| StoreError::Corrupt(format!("request {}: {what} {v:?}", r.id));
        Ok(super::RequestRecord {
            id: crate::domain::RequestId(r.id),
            author_id: UserId(r.author_id),
            author_name: r.author_name.unwrap_or_default(),
            last_editor_id: UserId(r.last_editor_id),
            pod_id: PodId(r.pod_id),
            instance_id: crate::domain::InstanceId(r.instance_id),
            kind: Kind::parse(&r.kind).ok_or_else(|| corrupt("kind", &r.kind))?,
            mode: Mode::parse(&r.mode).ok_or_else(|| corrupt("mode", &r.mode))?,
            status: Status::parse(&r.status).ok_or_else(|| corrupt("status", &r.status))?,
            database: r.database_name,
            justification: r.justification,
            revision: r.revision,
            revision_hash: r.revision_hash,
            status_changed_at: r.status_changed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub(super) fn requests(rows: Vec<RequestRow>) -> Result<Vec<super::RequestRecord>, StoreError> {
    rows.into_iter().map(TryInto::try_into).collect()
}

#[derive(sqlx::FromRow)]
pub(super) struct RevisionRow {
    number: i32,
    kind: String,
    mode: String,
    instance_id: Uuid,
    database_name: String,
    content: String,
    justification: String,
    limits: String,
    hash: String,
    editor_id: Uuid,
    created_at: DateTime<Utc>,
    syntax_check: Option<String>,
}

impl TryFrom<RevisionRow> for super::Revision {
    type Error = StoreError;
    fn try_from(r: RevisionRow) -> Result<Self, StoreError> {
        use crate::domain::workflow::{Kind, Mode};
        let corrupt = |what: &str| StoreError::Corrupt(format!("revision {}: {what}", r.number));
        Ok(super::Revision {
            number: r.number,
            kind: Kind::parse(&r.kind).ok_or_else(|| corrupt("kind"))?,
            mode: Mode::parse(&r.mode).ok_or_else(|| corrupt("mode"))?,
            limits: serde_json::from_str(&r.limits).map_err(|_| corrupt("limits"))?,
            instance_id: crate::domain::InstanceId(r.instance_id),
            database: r.database_name,
            content: r.content,
            justification: r.justification,
            hash: r.hash,
            editor_id: UserId(r.editor_id),
            created_at: r.created_at,
            check: r
                .syntax_check
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("syntax check"))?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ReviewRow {
    id: Uuid,
    revision: i32,
    revision_hash: String,
    reviewer_id: Uuid,
    decision: String,
    comment: String,
    created_at: DateTime<Utc>,
    voided_at: Option<DateTime<Utc>>,
}

impl TryFrom<ReviewRow> for super::Review {
    type Error = StoreError;
    fn try_from(r: ReviewRow) -> Result<Self, StoreError> {
        Ok(super::Review {
            id: r.id,
            decision: crate::domain::workflow::Decision::parse(&r.decision)
                .ok_or_else(|| StoreError::Corrupt(format!("review {}: decision", r.id)))?,
            revision: r.revision,
            revision_hash: r.revision_hash,
            reviewer_id: UserId(r.reviewer_id),
            comment: r.comment,
            created_at: r.created_at,
            voided_at: r.voided_at,
        })
    }
}

/// A case-insensitive substring pattern for `LIKE … ESCAPE '\\'`, with the wildcards in the
/// user's text taken literally.
pub(super) fn like_pattern(s: &str) -> String {
    format!(
        "%{}%",
        s.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

pub(super) const EXECUTION_COLUMNS: &str = "id, request_id, revision, revision_hash, status, owner, lease_until, target_txid, \
    started_at, finished_at, error, statements, result, logs, sandbox";

#[derive(sqlx::FromRow)]
pub(super) struct ExecutionRow {
    id: Uuid,
    request_id: Uuid,
    revision: i32,
    revision_hash: String,
    status: String,
    owner: String,
    lease_until: DateTime<Utc>,
    target_txid: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    error: Option<String>,
    statements: String,
    result: Option<String>,
    logs: String,
    sandbox: Option<String>,
}

impl TryFrom<ExecutionRow> for super::Execution {
    type Error = StoreError;
    fn try_from(r: ExecutionRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("execution {}: {what}", r.id));
        Ok(super::Execution {
            id: crate::domain::ExecutionId(r.id),
            request_id: crate::domain::RequestId(r.request_id),
            status: crate::domain::execution::ExecStatus::parse(&r.status)
                .ok_or_else(|| corrupt("status"))?,
            error: r
                .error
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("error"))?,
            statements: serde_json::from_str(&r.statements).map_err(|_| corrupt("statements"))?,
            result: r
                .result
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("result"))?,
            logs: serde_json::from_str(&r.logs).map_err(|_| corrupt("logs"))?,
            sandbox: r
                .sandbox
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("sandbox"))?,
            revision: r.revision,
            revision_hash: r.revision_hash,
            owner: r.owner,
            lease_until: r.lease_until,
            target_txid: r.target_txid,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

pub(super) const DELIVERY_COLUMNS: &str = "id, dedupe_key, request_id, kind, event, state, attempts, \
    next_attempt_at, lease_until, last_error, history, channel, ts, created_at, finished_at";

#[derive(sqlx::FromRow)]
pub(super) struct DeliveryRow {
    id: Uuid,
    dedupe_key: String,
    request_id: Uuid,
    kind: String,
    event: String,
    state: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    lease_until: Option<DateTime<Utc>>,
    last_error: Option<String>,
    history: String,
    channel: Option<String>,
    ts: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<DeliveryRow> for super::Delivery {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("slack_outbox {}: {what}", r.id));
        Ok(super::Delivery {
            id: r.id,
            request_id: crate::domain::RequestId(r.request_id),
            kind: crate::domain::slack::DeliveryKind::parse(&r.kind)
                .ok_or_else(|| corrupt("kind"))?,
            event: serde_json::from_str(&r.event).map_err(|_| corrupt("event"))?,
            history: serde_json::from_str(&r.history).map_err(|_| corrupt("history"))?,
            dedupe_key: r.dedupe_key,
            state: r.state,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            lease_until: r.lease_until,
            last_error: r.last_error,
            channel: r.channel,
            ts: r.ts,
            created_at: r.created_at,
            finished_at: r.finished_at,
        })
    }
}

pub(super) fn deliveries(rows: Vec<DeliveryRow>) -> Result<Vec<super::Delivery>, StoreError> {
    rows.into_iter().map(TryInto::try_into).collect()
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn page<T, R: Into<T>>(rows: Vec<R>, total: i64) -> Page<T> {
    Page {
        items: rows.into_iter().map(Into::into).collect(),
        total,
    }
}

/// Maps a unique-constraint violation to `Conflict` with a readable message.
pub(super) fn conflict_on_unique(err: sqlx::Error, what: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_owned())
        }
        _ => StoreError::Database(err),
    }
}

macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn insert_audit(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                event: $crate::domain::audit::NewAuditEvent,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<()> {
                use $crate::domain::audit::{chain_hash, ChainFields, GENESIS_HASH};
                sqlx::query(Self::AUDIT_LOCK_SQL).execute(&mut *conn).await?;
                let prev: Option<String> =
                    sqlx::query_scalar("SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut *conn)
                        .await?;
                let prev = prev.unwrap_or_else(|| GENESIS_HASH.to_owned());
                let id = uuid::Uuid::now_v7();
                let details = event.details.to_string();
                let actor = event.actor_id.map(|a| a.0);
                let fields = ChainFields {
                    id,
                    at,
                    actor_id: actor,
                    action: event.action,
                    target_type: event.target_type,
                    target_id: event.target_id.as_deref(),
                    ip: event.ip.as_deref(),
                    user_agent: event.user_agent.as_deref(),
                    details: &details,
                };
                let hash = chain_hash(&prev, &fields);
                let deliveries = if self.outbox {
                    $crate::domain::slack::deliveries_for(&event, id)
                } else {
                    Vec::new()
                };
                sqlx::query(
                    "INSERT INTO audit_events (id, at, actor_id, action, target_type, target_id, ip, user_agent, details, prev_hash, hash) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(id)
                .bind(at)
                .bind(actor)
                .bind(event.action)
                .bind(event.target_type)
                .bind(event.target_id.as_deref())
                .bind(event.ip.as_deref())
                .bind(event.user_agent.as_deref())
                .bind(&details)
                .bind(&prev)
                .bind(&hash)
                .execute(&mut *conn)
                .await?;
                // Slack hears of the event through the outbox, in the event's own transaction:
                // committed together or not at all.
                for d in deliveries {
                    sqlx::query(
                        "INSERT INTO slack_outbox (id, dedupe_key, request_id, kind, event, state, next_attempt_at, created_at) \
                         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6) ON CONFLICT (dedupe_key) DO NOTHING",
                    )
                    .bind(uuid::Uuid::now_v7())
                    .bind(&d.dedupe_key)
                    .bind(d.request)
                    .bind(d.kind.as_str())
                    .bind($crate::store::sql::to_json(&d.event)?)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }

            async fn revoke_sessions_where(
                conn: &mut <$db as sqlx::Database>::Connection,
                user: $crate::domain::UserId,
                except: Option<$crate::domain::SessionId>,
                reason: $crate::store::RevokeReason,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<u64> {
                let done = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
                     WHERE user_id = $3 AND revoked_at IS NULL AND ($4 IS NULL OR id <> $4)",
                )
                .bind(now)
                .bind(reason.as_str())
                .bind(user)
                .bind(except)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected())
            }

            async fn deny_jti(
                conn: &mut <$db as sqlx::Database>::Connection,
                jti: Option<(uuid::Uuid, chrono::DateTime<chrono::Utc>)>,
            ) -> $crate::store::StoreResult<()> {
                if let Some((jti, expires_at)) = jti {
                    sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
                        .bind(jti)
                        .bind(expires_at)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            }

            async fn load_instance(
                conn: &mut <$db as sqlx::Database>::Connection,
                row: $crate::store::sql::InstanceRow,
                id: uuid::Uuid,
            ) -> $crate::store::StoreResult<$crate::store::Instance> {
                let pods: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT pod_id FROM instance_pods WHERE instance_id = $1")
                    .bind(id)
                    .fetch_all(&mut *conn)
                    .await?;
                row.into_instance(pods.into_iter().map($crate::domain::PodId).collect())
            }

            async fn write_instance(
                conn: &mut <$db as sqlx::Database>::Connection,
                i: &$crate::store::Instance,
                insert: bool,
            ) -> $crate::store::StoreResult<()> {
                let sql = if insert {
                    "INSERT INTO instances (name, name_key, engine, host, port, username, tls_mode, uri, path, environment, \
                     required_approvals, run_mode, slack_approval, limits, secret_ciphertext, secret_key_id, created_at, updated_at, id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
                } else {
                    "UPDATE instances SET name = $1, name_key = $2, engine = $3, host = $4, port = $5, username = $6, \
                     tls_mode = $7, uri = $8, path = $9, environment = $10, required_approvals = $11, run_mode = $12, \
                     slack_approval = $13, limits = $14, secret_ciphertext = $15, secret_key_id = $16, created_at = $17, \
                     updated_at = $18 WHERE id = $19"
                };
                let limits = serde_json::to_string(&i.limits).map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?;
                let done = sqlx::query(sql)
                    .bind(&i.name)
                    .bind($crate::domain::text::pod_name_key(&i.name))
                    .bind(i.engine.as_str())
                    .bind(i.host.as_deref())
                    .bind(i.port.map(i32::from))
                    .bind(i.username.as_deref())
                    .bind(i.tls_mode.as_str())
                    .bind(i.uri.as_deref())
                    .bind(i.path.as_deref())
                    .bind(&i.environment)
                    .bind(i32::from(i.required_approvals))
                    .bind(i.run_mode.as_str())
                    .bind(i.slack_approval)
                    .bind(limits)
                    .bind(i.secret.as_ref().map(|s| s.bytes.clone()))
                    .bind(i.secret.as_ref().map(|s| s.key_id.clone()))
                    .bind(i.created_at)
                    .bind(i.updated_at)
                    .bind(i.id)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| $crate::store::sql::conflict_on_unique(e, "an instance with this name already exists"))?;
                if done.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                sqlx::query("DELETE FROM instance_pods WHERE instance_id = $1").bind(i.id).execute(&mut *conn).await?;
                for pod in &i.allowed_pods {
                    sqlx::query("INSERT INTO instance_pods (instance_id, pod_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(i.id)
                        .bind(pod)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            }

            async fn insert_revision(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: $crate::domain::RequestId,
                rev: &$crate::store::Revision,
            ) -> $crate::store::StoreResult<()> {
                let limits = serde_json::to_string(&rev.limits).map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?;
                let check = rev
                    .check
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO request_revisions (request_id, number, kind, mode, instance_id, database_name, content, \
                     justification, limits, hash, editor_id, created_at, syntax_check) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(id)
                .bind(rev.number)
                .bind(rev.kind.as_str())
                .bind(rev.mode.as_str())
                .bind(rev.instance_id)
                .bind(&rev.database)
                .bind(&rev.content)
                .bind(&rev.justification)
                .bind(limits)
                .bind(&rev.hash)
                .bind(rev.editor_id)
                .bind(rev.created_at)
                .bind(check)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// Appends `column IN (ids…)`, or a condition matching nothing for an empty list.
            fn push_in<'a>(b: &mut sqlx::QueryBuilder<'a, $db>, column: &str, ids: &'a [$crate::domain::PodId]) {
                if ids.is_empty() {
                    b.push(" 1 = 0");
                    return;
                }
                b.push(format!(" {column} IN ("));
                let mut sep = b.separated(", ");
                for id in ids {
                    sep.push_bind(*id);
                }
                b.push(")");
            }

            async fn fetch_user(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: $crate::domain::UserId,
            ) -> $crate::store::StoreResult<$crate::store::User> {
                let sql = format!("SELECT {} FROM users u WHERE u.id = $1", $crate::store::sql::USER_COLUMNS);
                let row: $crate::store::sql::UserRow =
                    sqlx::query_as(&sql).bind(id).fetch_optional(&mut *conn).await?.ok_or($crate::store::StoreError::NotFound)?;
                row.try_into()
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> $crate::store::Backend {
                Self::BACKEND
            }

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn migrate(&self) -> $crate::store::StoreResult<()> {
                Self::MIGRATOR.run(&self.pool).await?;
                Ok(())
            }

            async fn count_users(&self) -> $crate::store::StoreResult<i64> {
                Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await?)
            }

            async fn count_active_admins(&self) -> $crate::store::StoreResult<i64> {
                Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = FALSE")
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn get_user(&self, id: $crate::domain::UserId) -> $crate::store::StoreResult<Option<$crate::store::User>> {
                let sql = format!("SELECT {} FROM users u WHERE u.id = $1", $crate::store::sql::USER_COLUMNS);
                let row: Option<$crate::store::sql::UserRow> = sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn get_credentials(
                &self,
                email: &str,
            ) -> $crate::store::StoreResult<Option<($crate::store::User, String)>> {
                let sql = format!("SELECT {} FROM users u WHERE u.email = $1", $crate::store::sql::USER_COLUMNS);
                let row: Option<$crate::store::sql::UserRow> = sqlx::query_as(&sql).bind(email).fetch_optional(&self.pool).await?;
                let Some(row) = row else { return Ok(None) };
                let user: $crate::store::User = row.try_into()?;
                let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
                    .bind(user.id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(Some((user, hash)))
            }

            async fn list_users(
                &self,
                q: &$crate::store::UserQuery,
            ) -> $crate::store::StoreResult<$crate::store::Page<$crate::store::User>> {
                fn filters<'a>(b: &mut sqlx::QueryBuilder<'a, $db>, q: &'a $crate::store::UserQuery) {
                    b.push(" WHERE 1 = 1");
                    if let Some(s) = &q.search {
                        let pattern = $crate::store::sql::like_pattern(s);
                        b.push(" AND (LOWER(u.email) LIKE ").push_bind(pattern.clone()).push(" ESCAPE '\\'");
                        b.push(" OR LOWER(u.name) LIKE ").push_bind(pattern).push(" ESCAPE '\\')");
                    }
                    if let Some(r) = q.role {
                        b.push(" AND u.role = ").push_bind(r.as_str());
                    }
                    if let Some(p) = q.pod_id {
                        b.push(" AND u.home_pod_id = ").push_bind(p);
                    }
                    if let Some(d) = q.disabled {
                        b.push(" AND u.disabled = ").push_bind(d);
                    }
                    match q.locked {
                        Some(true) => { b.push(" AND u.locked_at IS NOT NULL"); }
                        Some(false) => { b.push(" AND u.locked_at IS NULL"); }
                        None => {}
                    }
                }
                let mut count = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM users u");
                filters(&mut count, q);
                let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
                let mut b = sqlx::QueryBuilder::<$db>::new(format!("SELECT {} FROM users u", $crate::store::sql::USER_COLUMNS));
                filters(&mut b, q);
                b.push(" ORDER BY u.email LIMIT ").push_bind(q.limit).push(" OFFSET ").push_bind(q.offset);
                let rows: Vec<$crate::store::sql::UserRow> = b.build_query_as().fetch_all(&self.pool).await?;
                Ok($crate::store::Page { items: $crate::store::sql::users(rows)?, total })
            }

            async fn create_user(
                &self,
                new: &$crate::store::NewUser,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<$crate::store::User> {
                let now = self.clock.now();
                let id = $crate::domain::UserId::new();
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "INSERT INTO users (id, email, name, password_hash, role, home_pod_id, must_change_password, \
                     password_changed_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8)",
                )
                .bind(id)
                .bind(&new.email)
                .bind(&new.name)
                .bind(&new.password_hash)
                .bind(new.role.as_str())
                .bind(new.home_pod_id)
                .bind(new.must_change_password)
                .bind(now)
                .execute(&mut *tx.tx)
                .await
                .map_err(|e| $crate::store::sql::conflict_on_unique(e, "a user with this email already exists"))?;
                self.insert_audit(&mut tx.tx, audit.target("user", id), now).await?;
                let user = Self::fetch_user(&mut tx.tx, id).await?;
                tx.commit().await?;
                Ok(user)
            }

            async fn update_user(
                &self,
                id: $crate::domain::UserId,
                change: &$crate::store::UserChange,
                revoke: Option<$crate::store::RevokeReason>,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<$crate::store::User> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let before = Self::fetch_user(&mut tx.tx, id).await?;
                let home = change.home_pod_id.unwrap_or(before.home_pod_id);
                let reset = change.reset_password_hash.is_some();
                sqlx::query(
                    "UPDATE users SET name = $1, role = $2, home_pod_id = $3, disabled = $4, updated_at = $5, \
                     password_hash = COALESCE($6, password_hash), \
                     must_change_password = CASE WHEN $7 THEN TRUE ELSE must_change_password END, \
                     password_changed_at = CASE WHEN $7 THEN $5 ELSE password_changed_at END \
                     WHERE id = $8",
                )
                .bind(change.name.as_deref().unwrap_or(&before.name))
                .bind(change.role.unwrap_or(before.role).as_str())
                .bind(home)
                .bind(change.disabled.unwrap_or(before.disabled))
                .bind(now)
                .bind(change.reset_password_hash.as_deref())
                .bind(reset)
                .bind(id)
                .execute(&mut *tx.tx)
                .await?;
                if change.role.is_some_and(|r| !r.can_manage_pods()) {
                    sqlx::query("DELETE FROM pod_managers WHERE user_id = $1").bind(id).execute(&mut *tx.tx).await?;
                }
                if let Some(reason) = revoke {
                    Self::revoke_sessions_where(&mut tx.tx, id, None, reason, now).await?;
                }
                self.insert_audit(&mut tx.tx, audit.target("user", id), now).await?;
                let user = Self::fetch_user(&mut tx.tx, id).await?;
                tx.commit().await?;
                Ok(user)
            }

            async fn change_password(
                &self,
                id: $crate::domain::UserId,
                password_hash: &str,
                keep_session: $crate::domain::SessionId,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(
                    "UPDATE users SET password_hash = $1, must_change_password = FALSE, password_changed_at = $2, \
                     updated_at = $2 WHERE id = $3",
                )
                .bind(password_hash)
                .bind(now)
                .bind(id)
                .execute(&mut *tx.tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                let ended = Self::revoke_sessions_where(
                    &mut tx.tx, id, Some(keep_session), $crate::store::RevokeReason::PasswordChange, now,
                ).await?;
                let audit = audit.target("user", id).details(serde_json::json!({ "sessions_ended": ended }));
                self.insert_audit(&mut tx.tx, audit, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn record_login_failure(
                &self,
                id: $crate::domain::UserId,
                policy: &$crate::domain::lockout::LockoutPolicy,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<$crate::domain::lockout::AfterFailure> {
                use $crate::domain::lockout::AfterFailure;
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let failures: i32 = sqlx::query_scalar(
                    "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 RETURNING failed_logins",
                )
                .bind(id)
                .fetch_one(&mut *tx.tx)
                .await?;
                let outcome = policy.after_failure(u32::try_from(failures).unwrap_or(u32::MAX), now);
                match outcome {
                    AfterFailure::Counted => {}
                    AfterFailure::DelayedUntil(until) => {
                        sqlx::query("UPDATE users SET delayed_until = $1 WHERE id = $2")
                            .bind(until)
                            .bind(id)
                            .execute(&mut *tx.tx)
                            .await?;
                    }
                    AfterFailure::Locked => {
                        sqlx::query("UPDATE users SET locked_at = COALESCE(locked_at, $1) WHERE id = $2")
                            .bind(now)
                            .bind(id)
                            .execute(&mut *tx.tx)
                            .await?;
                    }
                }
                let mut details = audit.details.clone();
                if let Some(obj) = details.as_object_mut() {
                    obj.insert("consecutive_failures".into(), failures.into());
                    obj.insert("locked".into(), (outcome == AfterFailure::Locked).into());
                }
                self.insert_audit(&mut tx.tx, audit.target("user", id).details(details), now).await?;
                tx.commit().await?;
                Ok(outcome)
            }

            async fn unlock_user(
                &self,
                id: $crate::domain::UserId,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<bool> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(
                    "UPDATE users SET failed_logins = 0, delayed_until = NULL, locked_at = NULL, updated_at = $1 WHERE id = $2",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx.tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                self.insert_audit(&mut tx.tx, audit.target("user", id), now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn managed_pods(&self, user: $crate::domain::UserId) -> $crate::store::StoreResult<Vec<$crate::domain::PodId>> {
                let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT pod_id FROM pod_managers WHERE user_id = $1")
                    .bind(user)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(ids.into_iter().map($crate::domain::PodId).collect())
            }

            async fn start_session(
                &self,
                s: &$crate::store::Session,
                refresh_hash: &str,
                max_sessions: u32,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                sqlx::query("UPDATE users SET failed_logins = 0, delayed_until = NULL WHERE id = $1")
                    .bind(s.user_id)
                    .execute(&mut *tx.tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, user_agent, ip, created_at, last_seen_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $5, $6)",
                )
                .bind(s.id)
                .bind(s.user_id)
                .bind(s.user_agent.as_deref())
                .bind(s.ip.as_deref())
                .bind(now)
                .bind(s.expires_at)
                .execute(&mut *tx.tx)
                .await?;
                sqlx::query("INSERT INTO refresh_tokens (id, session_id, token_hash, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(uuid::Uuid::now_v7())
                    .bind(s.id)
                    .bind(refresh_hash)
                    .bind(now)
                    .execute(&mut *tx.tx)
                    .await?;
                let live: Vec<uuid::Uuid> = sqlx::query_scalar(
                    "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                     ORDER BY last_seen_at DESC, created_at DESC",
                )
                .bind(s.user_id)
                .bind(now)
                .fetch_all(&mut *tx.tx)
                .await?;
                let mut evicted = Vec::new();
                for old in live.iter().skip(max_sessions as usize) {
                    sqlx::query("UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3")
                        .bind(now)
                        .bind($crate::store::RevokeReason::Evicted.as_str())
                        .bind(old)
                        .execute(&mut *tx.tx)
                        .await?;
                    evicted.push(old.to_string());
                }
                let mut details = audit.details.clone();
                if let Some(obj) = details.as_object_mut() {
                    obj.insert("session_id".into(), s.id.to_string().into());
                    if !evicted.is_empty() {
                        obj.insert("evicted_sessions".into(), evicted.into());
                    }
                }
                self.insert_audit(&mut tx.tx, audit.target("user", s.user_id).details(details), now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn find_refresh(&self, token_hash: &str) -> $crate::store::StoreResult<Option<$crate::store::RefreshRecord>> {
                let sql = format!(
                    "SELECT t.id AS token_id, t.rotated_at, {} FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
                     WHERE t.token_hash = $1",
                    $crate::store::sql::SESSION_COLUMNS
                );
                let row: Option<$crate::store::sql::RefreshRow> =
                    sqlx::query_as(&sql).bind(token_hash).fetch_optional(&self.pool).await?;
                Ok(row.map(Into::into))
            }

            async fn rotate_refresh(
                &self,
                token_id: uuid::Uuid,
                session: $crate::domain::SessionId,
                new_hash: &str,
                ip: Option<&str>,
                user_agent: Option<&str>,
            ) -> $crate::store::StoreResult<bool> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let done = sqlx::query("UPDATE refresh_tokens SET rotated_at = $1 WHERE id = $2 AND rotated_at IS NULL")
                    .bind(now)
                    .bind(token_id)
                    .execute(&mut *tx.tx)
                    .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query("INSERT INTO refresh_tokens (id, session_id, token_hash, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(uuid::Uuid::now_v7())
                    .bind(session)
                    .bind(new_hash)
                    .bind(now)
                    .execute(&mut *tx.tx)
                    .await?;
                sqlx::query(
                    "UPDATE sessions SET last_seen_at = $1, ip = COALESCE($2, ip), user_agent = COALESCE($3, user_agent) WHERE id = $4",
                )
                .bind(now)
                .bind(ip)
                .bind(user_agent)
                .bind(session)
                .execute(&mut *tx.tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn revoke_session(
                &self,
                session: $crate::domain::SessionId,
                reason: $crate::store::RevokeReason,
                jti: Option<(uuid::Uuid, chrono::DateTime<chrono::Utc>)>,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<bool> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(reason.as_str())
                .bind(session)
                .execute(&mut *tx.tx)
                .await?;
                Self::deny_jti(&mut tx.tx, jti).await?;
                let ended = done.rows_affected() == 1;
                let mut details = audit.details.clone();
                if let Some(obj) = details.as_object_mut() {
                    obj.insert("reason".into(), reason.as_str().into());
                    obj.insert("already_ended".into(), (!ended).into());
                }
                self.insert_audit(&mut tx.tx, audit.target("session", session).details(details), now).await?;
                tx.commit().await?;
                Ok(ended)
            }

            async fn revoke_user_sessions(
                &self,
                user: $crate::domain::UserId,
                except: Option<$crate::domain::SessionId>,
                reason: $crate::store::RevokeReason,
                jti: Option<(uuid::Uuid, chrono::DateTime<chrono::Utc>)>,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<u64> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let ended = Self::revoke_sessions_where(&mut tx.tx, user, except, reason, now).await?;
                Self::deny_jti(&mut tx.tx, jti).await?;
                let mut details = audit.details.clone();
                if let Some(obj) = details.as_object_mut() {
                    obj.insert("reason".into(), reason.as_str().into());
                    obj.insert("sessions_ended".into(), ended.into());
                }
                self.insert_audit(&mut tx.tx, audit.target("user", user).details(details), now).await?;
                tx.commit().await?;
                Ok(ended)
            }

            async fn list_sessions(&self, user: $crate::domain::UserId) -> $crate::store::StoreResult<Vec<$crate::store::Session>> {
                let now = self.clock.now();
                let sql = format!(
                    "SELECT {} FROM sessions s WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
                     ORDER BY s.last_seen_at DESC",
                    $crate::store::sql::SESSION_COLUMNS
                );
                let rows: Vec<$crate::store::sql::SessionRow> =
                    sqlx::query_as(&sql).bind(user).bind(now).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn get_session(&self, id: $crate::domain::SessionId) -> $crate::store::StoreResult<Option<$crate::store::Session>> {
                let sql = format!("SELECT {} FROM sessions s WHERE s.id = $1", $crate::store::sql::SESSION_COLUMNS);
                let row: Option<$crate::store::sql::SessionRow> = sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?;
                Ok(row.map(Into::into))
            }

            async fn auth_context(
                &self,
                session: $crate::domain::SessionId,
                user: $crate::domain::UserId,
                jti: uuid::Uuid,
            ) -> $crate::store::StoreResult<Option<$crate::store::AuthContext>> {
                let sql = format!(
                    "SELECT {}, s.id AS s_id, s.user_agent AS s_user_agent, s.ip AS s_ip, s.created_at AS s_created_at, \
                     s.last_seen_at AS s_last_seen_at, s.expires_at AS s_expires_at, s.revoked_at AS s_revoked_at, \
                     s.revoked_reason AS s_revoked_reason, \
                     EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = $3) AS jti_revoked \
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND u.id = $2",
                    $crate::store::sql::USER_COLUMNS
                );
                let row: Option<$crate::store::sql::AuthRow> =
                    sqlx::query_as(&sql).bind(session).bind(user).bind(jti).fetch_optional(&self.pool).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn touch_session(&self, session: $crate::domain::SessionId) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1")
                    .bind(now)
                    .bind(session)
                    .execute(&mut *tx.tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn purge_expired(&self) -> $crate::store::StoreResult<u64> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let a = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1").bind(now).execute(&mut *tx.tx).await?;
                // Refresh tokens of sessions that ended more than a day ago can no longer be
                // presented usefully; the sessions themselves stay for the device history.
                let cutoff = now - chrono::Duration::days(1);
                let b = sqlx::query(
                    "DELETE FROM refresh_tokens WHERE session_id IN \
                     (SELECT id FROM sessions WHERE (revoked_at IS NOT NULL AND revoked_at < $1) OR expires_at < $1)",
                )
                .bind(cutoff)
                .execute(&mut *tx.tx)
                .await?;
                tx.commit().await?;
                Ok(a.rows_affected() + b.rows_affected())
            }

            async fn create_pod(
                &self,
                name: &str,
                slack_channel: Option<&str>,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<$crate::store::Pod> {
                let now = self.clock.now();
                let id = $crate::domain::PodId::new();
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "INSERT INTO pods (id, name, name_key, slack_channel, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(id)
                .bind(name)
                .bind($crate::domain::text::pod_name_key(name))
                .bind(slack_channel)
                .bind(now)
                .execute(&mut *tx.tx)
                .await
                .map_err(|e| $crate::store::sql::conflict_on_unique(e, "a POD with this name already exists"))?;
                self.insert_audit(&mut tx.tx, audit.target("pod", id), now).await?;
                tx.commit().await?;
                Ok($crate::store::Pod { id, name: name.to_owned(), slack_channel: slack_channel.map(str::to_owned), created_at: now, updated_at: now })
            }

            async fn get_pod(&self, id: $crate::domain::PodId) -> $crate::store::StoreResult<Option<$crate::store::Pod>> {
                let row: Option<$crate::store::sql::PodRow> =
                    sqlx::query_as("SELECT id, name, slack_channel, created_at, updated_at FROM pods WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Into::into))
            }

            async fn find_pod_by_name(&self, name: &str) -> $crate::store::StoreResult<Option<$crate::store::Pod>> {
                let row: Option<$crate::store::sql::PodRow> =
                    sqlx::query_as("SELECT id, name, slack_channel, created_at, updated_at FROM pods WHERE name_key = $1")
                        .bind($crate::domain::text::pod_name_key(name))
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Into::into))
            }

            async fn list_pods(
                &self,
                only: Option<&[$crate::domain::PodId]>,
                limit: i64,
                offset: i64,
            ) -> $crate::store::StoreResult<$crate::store::Page<$crate::store::PodSummary>> {
                fn filter<'a>(b: &mut sqlx::QueryBuilder<'a, $db>, only: Option<&'a [$crate::domain::PodId]>) {
                    if let Some(ids) = only {
                        b.push(" WHERE");
                        <$store>::push_in(b, "p.id", ids);
                    }
                }
                let mut count = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM pods p");
                filter(&mut count, only);
                let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
                let mut b = sqlx::QueryBuilder::<$db>::new(
                    "SELECT p.id, p.name, p.slack_channel, p.created_at, p.updated_at, \
                     (SELECT COUNT(*) FROM pod_managers m WHERE m.pod_id = p.id) AS manager_count, \
                     (SELECT COUNT(*) FROM users u WHERE u.home_pod_id = p.id) AS member_count FROM pods p",
                );
                filter(&mut b, only);
                b.push(" ORDER BY p.name_key LIMIT ").push_bind(limit).push(" OFFSET ").push_bind(offset);
                let rows: Vec<$crate::store::sql::PodSummaryRow> = b.build_query_as().fetch_all(&self.pool).await?;
                Ok($crate::store::sql::page(rows, total))
            }

            async fn update_pod(
                &self,
                id: $crate::domain::PodId,
                change: &$crate::store::PodChange,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<$crate::store::Pod> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let before: $crate::store::sql::PodRow =
                    sqlx::query_as("SELECT id, name, slack_channel, created_at, updated_at FROM pods WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx.tx)
                        .await?
                        .ok_or($crate::store::StoreError::NotFound)?;
                let before: $crate::store::Pod = before.into();
                let name = change.name.clone().unwrap_or(before.name);
                let channel = change.slack_channel.clone().unwrap_or(before.slack_channel);
                sqlx::query("UPDATE pods SET name = $1, name_key = $2, slack_channel = $3, updated_at = $4 WHERE id = $5")
                    .bind(&name)
                    .bind($crate::domain::text::pod_name_key(&name))
                    .bind(channel.as_deref())
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx.tx)
                    .await
                    .map_err(|e| $crate::store::sql::conflict_on_unique(e, "a POD with this name already exists"))?;
                self.insert_audit(&mut tx.tx, audit.target("pod", id), now).await?;
                tx.commit().await?;
                Ok($crate::store::Pod { id, name, slack_channel: channel, created_at: before.created_at, updated_at: now })
            }

            async fn delete_pod(&self, id: $crate::domain::PodId, audit: $crate::domain::audit::NewAuditEvent) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE home_pod_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx.tx)
                    .await?;
                if members > 0 {
                    return Err($crate::store::StoreError::Conflict(format!(
                        "{members} user(s) have this POD as their home POD; move them first"
                    )));
                }
                // Requests keep their POD for the record; a POD with history stays.
                let requests: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE pod_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx.tx)
                    .await?;
                if requests > 0 {
                    return Err($crate::store::StoreError::Conflict(format!(
                        "{requests} request(s) belong to this POD and are kept for the record; rename the POD instead"
                    )));
                }
                sqlx::query("DELETE FROM pod_managers WHERE pod_id = $1").bind(id).execute(&mut *tx.tx).await?;
                let done = sqlx::query("DELETE FROM pods WHERE id = $1").bind(id).execute(&mut *tx.tx).await?;
                if done.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                self.insert_audit(&mut tx.tx, audit.target("pod", id), now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn set_pod_managers(
                &self,
                id: $crate::domain::PodId,
                managers: &[$crate::domain::UserId],
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let exists: Option<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM pods WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx.tx)
                    .await?;
                if exists.is_none() {
                    return Err($crate::store::StoreError::NotFound);
                }
                sqlx::query("DELETE FROM pod_managers WHERE pod_id = $1").bind(id).execute(&mut *tx.tx).await?;
                for m in managers {
                    sqlx::query("INSERT INTO pod_managers (pod_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(id)
                        .bind(m)
                        .execute(&mut *tx.tx)
                        .await?;
                }
                self.insert_audit(&mut tx.tx, audit.target("pod", id), now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn add_pod_manager(
                &self,
                id: $crate::domain::PodId,
                manager: $crate::domain::UserId,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                sqlx::query("INSERT INTO pod_managers (pod_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(id)
                    .bind(manager)
                    .execute(&mut *tx.tx)
                    .await?;
                let mut details = audit.details.clone();
                if let Some(obj) = details.as_object_mut() {
                    obj.insert("added_manager".into(), manager.to_string().into());
                }
                self.insert_audit(&mut tx.tx, audit.target("pod", id).details(details), now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn pod_people(
                &self,
                id: $crate::domain::PodId,
            ) -> $crate::store::StoreResult<(Vec<$crate::store::User>, Vec<$crate::store::User>)> {
                let cols = $crate::store::sql::USER_COLUMNS;
                let managers: Vec<$crate::store::sql::UserRow> = sqlx::query_as(&format!(
                    "SELECT {cols} FROM users u JOIN pod_managers m ON m.user_id = u.id WHERE m.pod_id = $1 ORDER BY u.email"
                ))
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                let members: Vec<$crate::store::sql::UserRow> =
                    sqlx::query_as(&format!("SELECT {cols} FROM users u WHERE u.home_pod_id = $1 ORDER BY u.email"))
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(($crate::store::sql::users(managers)?, $crate::store::sql::users(members)?))
            }

            async fn create_instance(
                &self,
                instance: &$crate::store::Instance,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                Self::write_instance(&mut tx.tx, instance, true).await?;
                self.insert_audit(&mut tx.tx, audit.target("instance", instance.id), now).await?;
                tx.commit().await
            }

            async fn update_instance(
                &self,
                instance: &$crate::store::Instance,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                Self::write_instance(&mut tx.tx, instance, false).await?;
                self.insert_audit(&mut tx.tx, audit.target("instance", instance.id), now).await?;
                tx.commit().await
            }

            async fn delete_instance(
                &self,
                id: $crate::domain::InstanceId,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                // Requests keep their instance for the record; an instance with history stays.
                let requests: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE instance_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx.tx)
                    .await?;
                if requests > 0 {
                    return Err($crate::store::StoreError::Conflict(format!(
                        "{requests} request(s) ran or wait on this instance and are kept for the record; \
                         remove its allowed PODs to retire it"
                    )));
                }
                sqlx::query("DELETE FROM instance_databases WHERE instance_id = $1").bind(id).execute(&mut *tx.tx).await?;
                sqlx::query("DELETE FROM instance_pods WHERE instance_id = $1").bind(id).execute(&mut *tx.tx).await?;
                let done = sqlx::query("DELETE FROM instances WHERE id = $1").bind(id).execute(&mut *tx.tx).await?;
                if done.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                self.insert_audit(&mut tx.tx, audit.target("instance", id), now).await?;
                tx.commit().await
            }

            async fn get_instance(
                &self,
                id: $crate::domain::InstanceId,
            ) -> $crate::store::StoreResult<Option<$crate::store::Instance>> {
                let mut conn = self.pool.acquire().await?;
                let sql = format!("SELECT {} FROM instances i WHERE i.id = $1", $crate::store::sql::INSTANCE_COLUMNS);
                let row: Option<$crate::store::sql::InstanceRow> = sqlx::query_as(&sql).bind(id).fetch_optional(&mut *conn).await?;
                match row {
                    Some(r) => Ok(Some(Self::load_instance(&mut conn, r, id.0).await?)),
                    None => Ok(None),
                }
            }

            async fn list_instances(
                &self,
                pods: Option<&[$crate::domain::PodId]>,
                limit: i64,
                offset: i64,
            ) -> $crate::store::StoreResult<$crate::store::Page<$crate::store::Instance>> {
                fn filter<'a>(b: &mut sqlx::QueryBuilder<'a, $db>, pods: Option<&'a [$crate::domain::PodId]>) {
                    if let Some(ids) = pods {
                        b.push(" WHERE i.id IN (SELECT instance_id FROM instance_pods WHERE");
                        <$store>::push_in(b, "pod_id", ids);
                        b.push(")");
                    }
                }
                let mut conn = self.pool.acquire().await?;
                let mut count = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM instances i");
                filter(&mut count, pods);
                let total: i64 = count.build_query_scalar().fetch_one(&mut *conn).await?;
                let mut b = sqlx::QueryBuilder::<$db>::new(format!("SELECT {} FROM instances i", $crate::store::sql::INSTANCE_COLUMNS));
                filter(&mut b, pods);
                b.push(" ORDER BY i.name_key LIMIT ").push_bind(limit).push(" OFFSET ").push_bind(offset);
                let rows: Vec<$crate::store::sql::InstanceRow> = b.build_query_as().fetch_all(&mut *conn).await?;
                let mut items = Vec::with_capacity(rows.len());
                for row in rows {
                    let id = row.id();
                    items.push(Self::load_instance(&mut conn, row, id).await?);
                }
                Ok($crate::store::Page { items, total })
            }

            async fn set_instance_databases(
                &self,
                id: $crate::domain::InstanceId,
                names: &[String],
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let done = sqlx::query("UPDATE instances SET databases_synced_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx.tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                let before: Vec<String> = sqlx::query_scalar("SELECT name FROM instance_databases WHERE instance_id = $1 ORDER BY name")
                    .bind(id)
                    .fetch_all(&mut *tx.tx)
                    .await?;
                sqlx::query("DELETE FROM instance_databases WHERE instance_id = $1").bind(id).execute(&mut *tx.tx).await?;
                for name in names {
                    sqlx::query("INSERT INTO instance_databases (instance_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(id)
                        .bind(name)
                        .execute(&mut *tx.tx)
                        .await?;
                }
                // The periodic sync runs often; only a change in the list is worth an audit event.
                let mut sorted = names.to_vec();
                sorted.sort();
                sorted.dedup();
                if sorted != before {
                    let details = serde_json::json!({ "databases": sorted, "previous": before });
                    self.insert_audit(&mut tx.tx, audit.target("instance", id).details(details), now).await?;
                }
                tx.commit().await
            }

            async fn instance_databases(&self, id: $crate::domain::InstanceId) -> $crate::store::StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar("SELECT name FROM instance_databases WHERE instance_id = $1 ORDER BY name")
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn reseal_secrets(
                &self,
                sealed: &[($crate::domain::InstanceId, $crate::secrets::Sealed)],
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                for (id, s) in sealed {
                    sqlx::query("UPDATE instances SET secret_ciphertext = $1, secret_key_id = $2 WHERE id = $3")
                        .bind(&s.bytes)
                        .bind(&s.key_id)
                        .bind(id)
                        .execute(&mut *tx.tx)
                        .await?;
                }
                self.insert_audit(&mut tx.tx, audit, now).await?;
                tx.commit().await
            }

            async fn create_request(
                &self,
                r: &$crate::store::RequestRecord,
                first: &$crate::store::Revision,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "INSERT INTO requests (id, author_id, last_editor_id, pod_id, instance_id, database_name, kind, mode, \
                     justification, status, revision, revision_hash, status_changed_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(r.id)
                .bind(r.author_id)
                .bind(r.last_editor_id)
                .bind(r.pod_id)
                .bind(r.instance_id)
                .bind(&r.database)
                .bind(r.kind.as_str())
                .bind(r.mode.as_str())
                .bind(&r.justification)
                .bind(r.status.as_str())
                .bind(r.revision)
                .bind(&r.revision_hash)
                .bind(r.status_changed_at)
                .bind(r.created_at)
                .bind(r.updated_at)
                .execute(&mut *tx.tx)
                .await?;
                Self::insert_revision(&mut tx.tx, r.id, first).await?;
                self.insert_audit(&mut tx.tx, audit.target("request", r.id), r.created_at).await?;
                tx.commit().await
            }

            async fn get_request(&self, id: $crate::domain::RequestId) -> $crate::store::StoreResult<Option<$crate::store::RequestRecord>> {
                let sql = format!("SELECT {} FROM requests r WHERE r.id = $1", $crate::store::sql::REQUEST_COLUMNS);
                let row: Option<$crate::store::sql::RequestRow> = sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn request_revisions(&self, id: $crate::domain::RequestId) -> $crate::store::StoreResult<Vec<$crate::store::Revision>> {
                let rows: Vec<$crate::store::sql::RevisionRow> = sqlx::query_as(
                    "SELECT number, kind, mode, instance_id, database_name, content, justification, limits, hash, editor_id, \
                     created_at, syntax_check FROM request_revisions WHERE request_id = $1 ORDER BY number",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn request_reviews(&self, id: $crate::domain::RequestId) -> $crate::store::StoreResult<Vec<$crate::store::Review>> {
                let rows: Vec<$crate::store::sql::ReviewRow> = sqlx::query_as(
                    "SELECT id, revision, revision_hash, reviewer_id, decision, comment, created_at, voided_at \
                     FROM reviews WHERE request_id = $1 ORDER BY created_at, id",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn list_requests(
                &self,
                q: &$crate::store::RequestQuery,
            ) -> $crate::store::StoreResult<$crate::store::Page<$crate::store::RequestRecord>> {
                fn filters<'a>(b: &mut sqlx::QueryBuilder<'a, $db>, q: &'a $crate::store::RequestQuery) {
                    b.push(" WHERE 1 = 1");
                    if let Some((me, pods)) = &q.visible_to {
                        b.push(" AND (r.author_id = ").push_bind(*me).push(" OR");
                        <$store>::push_in(b, "r.pod_id", pods);
                        b.push(")");
                    }
                    if let Some(s) = q.status {
                        b.push(" AND r.status = ").push_bind(s.as_str());
                    }
                    if let Some(p) = q.pod_id {
                        b.push(" AND r.pod_id = ").push_bind(p);
                    }
                    if let Some(i) = q.instance_id {
                        b.push(" AND r.instance_id = ").push_bind(i);
                    }
                    if let Some(a) = q.author_id {
                        b.push(" AND r.author_id = ").push_bind(a);
                    }
                    if let Some((reviewer, pods)) = &q.awaiting_review_by {
                        b.push(" AND r.status = 'pending' AND r.author_id <> ").push_bind(*reviewer);
                        b.push(" AND r.last_editor_id <> ").push_bind(*reviewer);
                        if let Some(pods) = pods {
                            b.push(" AND");
                            <$store>::push_in(b, "r.pod_id", pods);
                        }
                        b.push(" AND NOT EXISTS (SELECT 1 FROM reviews v WHERE v.request_id = r.id AND v.revision = r.revision \
                                 AND v.voided_at IS NULL AND v.reviewer_id = ").push_bind(*reviewer).push(")");
                    }
                    if let Some(s) = &q.search {
                        let pattern = $crate::store::sql::like_pattern(s);
                        b.push(" AND LOWER(r.justification) LIKE ").push_bind(pattern).push(" ESCAPE '\\'");
                    }
                }
                let mut count = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM requests r");
                filters(&mut count, q);
                let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
                let mut b = sqlx::QueryBuilder::<$db>::new(format!("SELECT {} FROM requests r", $crate::store::sql::REQUEST_COLUMNS));
                filters(&mut b, q);
                b.push(" ORDER BY r.created_at DESC, r.id DESC LIMIT ").push_bind(q.limit).push(" OFFSET ").push_bind(q.offset);
                let rows: Vec<$crate::store::sql::RequestRow> = b.build_query_as().fetch_all(&self.pool).await?;
                Ok($crate::store::Page { items: $crate::store::sql::requests(rows)?, total })
            }

            async fn revise_request(
                &self,
                id: $crate::domain::RequestId,
                expected_revision: i32,
                next: &$crate::store::Revision,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(
                    "UPDATE requests SET revision = $1, revision_hash = $2, last_editor_id = $3, instance_id = $4, \
                     database_name = $5, kind = $6, mode = $7, justification = $8, status = 'pending', \
                     status_changed_at = $9, updated_at = $9 \
                     WHERE id = $10 AND revision = $11 AND status IN ('pending', 'changes_requested', 'approved')",
                )
                .bind(next.number)
                .bind(&next.hash)
                .bind(next.editor_id)
                .bind(next.instance_id)
                .bind(&next.database)
                .bind(next.kind.as_str())
                .bind(next.mode.as_str())
                .bind(&next.justification)
                .bind(now)
                .bind(id)
                .bind(expected_revision)
                .execute(&mut *tx.tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err($crate::store::StoreError::Conflict("stale".into()));
                }
                let voided = sqlx::query("UPDATE reviews SET voided_at = $1 WHERE request_id = $2 AND voided_at IS NULL")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx.tx)
                    .await?
                    .rows_affected();
                Self::insert_revision(&mut tx.tx, id, next).await?;
                let mut details = audit.details.clone();
                if let Some(obj) = details.as_object_mut() {
                    obj.insert("revision".into(), next.number.into());
                    obj.insert("revision_hash".into(), next.hash.clone().into());
                    obj.insert("reviews_voided".into(), voided.into());
                }
                self.insert_audit(&mut tx.tx, audit.target("request", id).details(details), now).await?;
                tx.commit().await
            }

            async fn review_request(
                &self,
                id: $crate::domain::RequestId,
                expected_revision: i32,
                review: &$crate::store::Review,
                required: u8,
                approval_cutoff: chrono::DateTime<chrono::Utc>,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<$crate::domain::workflow::Status> {
                use $crate::domain::workflow::{after_decision, Status};
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                // Locks the row (PostgreSQL) and checks nothing moved since the caller looked.
                let touched = sqlx::query(
                    "UPDATE requests SET updated_at = $1 WHERE id = $2 AND revision = $3 AND revision_hash = $4 AND status = 'pending'",
                )
                .bind(now)
                .bind(id)
                .bind(expected_revision)
                .bind(&review.revision_hash)
                .execute(&mut *tx.tx)
                .await?;
                if touched.rows_affected() != 1 {
                    return Err($crate::store::StoreError::Conflict("stale".into()));
                }
                sqlx::query(
                    "INSERT INTO reviews (id, request_id, revision, revision_hash, reviewer_id, decision, comment, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(review.id)
                .bind(id)
                .bind(review.revision)
                .bind(&review.revision_hash)
                .bind(review.reviewer_id)
                .bind(review.decision.as_str())
                .bind(&review.comment)
                .bind(now)
                .execute(&mut *tx.tx)
                .await
                .map_err(|e| $crate::store::sql::conflict_on_unique(e, "already_reviewed"))?;
                let approvals: i64 = sqlx::query_scalar(
                    "SELECT COUNT(DISTINCT reviewer_id) FROM reviews WHERE request_id = $1 AND revision = $2 \
                     AND decision = 'approve' AND voided_at IS NULL AND created_at >= $3",
                )
                .bind(id)
                .bind(expected_revision)
                .bind(approval_cutoff)
                .fetch_one(&mut *tx.tx)
                .await?;
                let status = after_decision(review.decision, u32::try_from(approvals).unwrap_or(0), required);
                if status != Status::Pending {
                    sqlx::query("UPDATE requests SET status = $1, status_changed_at = $2 WHERE id = $3")
                        .bind(status.as_str())
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx.tx)
                        .await?;
                }
                let mut details = audit.details.clone();
                if let Some(obj) = details.as_object_mut() {
                    obj.insert("decision".into(), review.decision.as_str().into());
                    obj.insert("comment".into(), review.comment.clone().into());
                    obj.insert("revision".into(), review.revision.into());
                    obj.insert("revision_hash".into(), review.revision_hash.clone().into());
                    obj.insert("approvals".into(), approvals.into());
                    obj.insert("required".into(), required.into());
                    obj.insert("status".into(), status.as_str().into());
                }
                self.insert_audit(&mut tx.tx, audit.target("request", id).details(details), now).await?;
                tx.commit().await?;
                Ok(status)
            }

            async fn transition_request(
                &self,
                id: $crate::domain::RequestId,
                from: &[$crate::domain::workflow::Status],
                to: $crate::domain::workflow::Status,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<bool> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let mut b = sqlx::QueryBuilder::<$db>::new("UPDATE requests SET status = ");
                b.push_bind(to.as_str()).push(", status_changed_at = ").push_bind(now).push(", updated_at = ").push_bind(now);
                b.push(" WHERE id = ").push_bind(id).push(" AND status IN (");
                let mut sep = b.separated(", ");
                for s in from {
                    sep.push_bind(s.as_str());
                }
                b.push(")");
                let done = b.build().execute(&mut *tx.tx).await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                let mut details = audit.details.clone();
                if let Some(obj) = details.as_object_mut() {
                    obj.insert("status".into(), to.as_str().into());
                }
                self.insert_audit(&mut tx.tx, audit.target("request", id).details(details), now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn open_requests(&self) -> $crate::store::StoreResult<Vec<$crate::store::RequestRecord>> {
                let sql = format!(
                    "SELECT {} FROM requests r WHERE r.status IN ('pending', 'changes_requested', 'approved')",
                    $crate::store::sql::REQUEST_COLUMNS
                );
                let rows: Vec<$crate::store::sql::RequestRow> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
                $crate::store::sql::requests(rows)
            }

            async fn start_execution(
                &self,
                request: $crate::domain::RequestId,
                expected_hash: &str,
                approved_after: chrono::DateTime<chrono::Utc>,
                (per_instance, per_author): (u32, u32),
                e: &$crate::store::Execution,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let claimed = sqlx::query(
                    "UPDATE requests SET status = 'running', status_changed_at = $1, updated_at = $1 \
                     WHERE id = $2 AND status = 'approved' AND revision_hash = $3 AND status_changed_at > $4",
                )
                .bind(now)
                .bind(request)
                .bind(expected_hash)
                .bind(approved_after)
                .execute(&mut *tx.tx)
                .await?;
                if claimed.rows_affected() != 1 {
                    return Err($crate::store::StoreError::Conflict("not_runnable".into()));
                }
                // Then the caps, serialised per instance and per author: touching the rows takes
                // their locks on PostgreSQL (SQLite already has one writer). A refusal here rolls
                // the claim back with the transaction.
                let owners: Option<(uuid::Uuid, uuid::Uuid)> =
                    sqlx::query_as("SELECT instance_id, author_id FROM requests WHERE id = $1").bind(request).fetch_optional(&mut *tx.tx).await?;
                let Some((instance, author)) = owners else {
                    return Err($crate::store::StoreError::Conflict("not_runnable".into()));
                };
                sqlx::query("UPDATE instances SET updated_at = updated_at WHERE id = $1").bind(instance).execute(&mut *tx.tx).await?;
                sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1").bind(author).execute(&mut *tx.tx).await?;
                let (on_instance, by_author): (i64, i64) = sqlx::query_as(
                    "SELECT COALESCE(SUM(CASE WHEN r.instance_id = $1 THEN 1 ELSE 0 END), 0), \
                            COALESCE(SUM(CASE WHEN r.author_id = $2 THEN 1 ELSE 0 END), 0) \
                     FROM executions x JOIN requests r ON r.id = x.request_id WHERE x.status = 'running'",
                )
                .bind(instance)
                .bind(author)
                .fetch_one(&mut *tx.tx)
                .await?;
                if on_instance >= i64::from(per_instance) {
                    return Err($crate::store::StoreError::Conflict("busy_instance".into()));
                }
                if by_author >= i64::from(per_author) {
                    return Err($crate::store::StoreError::Conflict("busy_author".into()));
                }
                sqlx::query(
                    "INSERT INTO executions (id, request_id, revision, revision_hash, status, owner, lease_until, started_at, statements) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '[]')",
                )
                .bind(e.id)
                .bind(request)
                .bind(e.revision)
                .bind(&e.revision_hash)
                .bind(e.status.as_str())
                .bind(&e.owner)
                .bind(e.lease_until)
                .bind(now)
                .execute(&mut *tx.tx)
                .await
                .map_err(|err| $crate::store::sql::conflict_on_unique(err, "not_runnable"))?;
                let audit = audit.target("request", request).details(serde_json::json!({
                    "execution_id": e.id, "revision": e.revision, "revision_hash": e.revision_hash
                }));
                self.insert_audit(&mut tx.tx, audit, now).await?;
                tx.commit().await
            }

            async fn record_target_txid(&self, id: $crate::domain::ExecutionId, txid: &str) -> $crate::store::StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query("UPDATE executions SET target_txid = $1 WHERE id = $2").bind(txid).bind(id).execute(&mut *tx.tx).await?;
                tx.commit().await
            }

            async fn finish_execution(
                &self,
                id: $crate::domain::ExecutionId,
                status: $crate::domain::execution::ExecStatus,
                error: Option<&$crate::domain::execution::ExecError>,
                statements: &[$crate::domain::execution::StatementReport],
                results: &[$crate::domain::execution::ResultSet],
                script: Option<&$crate::domain::execution::ScriptReport>,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<()> {
                use $crate::store::sql::to_json;
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let request: Option<uuid::Uuid> = sqlx::query_scalar(
                    "UPDATE executions SET status = $1, finished_at = $2, error = $3, statements = $4, \
                     result = $5, logs = $6, sandbox = $7 \
                     WHERE id = $8 AND status = 'running' RETURNING request_id",
                )
                .bind(status.as_str())
                .bind(now)
                .bind(error.map(to_json).transpose()?)
                .bind(to_json(&statements)?)
                .bind(script.and_then(|s| s.result.as_ref()).map(to_json).transpose()?)
                .bind(to_json(&script.map(|s| s.logs.as_slice()).unwrap_or_default())?)
                .bind(script.map(|s| to_json(&s.sandbox)).transpose()?)
                .bind(id)
                .fetch_optional(&mut *tx.tx)
                .await?;
                let Some(request) = request else {
                    return Err($crate::store::StoreError::Conflict("execution is not running".into()));
                };
                for c in script.map(|s| s.calls.as_slice()).unwrap_or_default() {
                    sqlx::query(
                        "INSERT INTO execution_calls (execution_id, seq, op, target, at_ms, duration_ms, rows, error) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(id)
                    .bind(i64::from(c.seq))
                    .bind(&c.op)
                    .bind(&c.target)
                    .bind(i64::try_from(c.at_ms).unwrap_or(i64::MAX))
                    .bind(c.duration_ms)
                    .bind(i64::try_from(c.rows).unwrap_or(i64::MAX))
                    .bind(&c.error)
                    .execute(&mut *tx.tx)
                    .await?;
                }
                for r in results {
                    sqlx::query(
                        "INSERT INTO execution_results (execution_id, statement_index, columns, rows, row_count, truncated) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(id)
                    .bind(i32::try_from(r.statement).unwrap_or(i32::MAX))
                    .bind(to_json(&r.columns)?)
                    .bind(to_json(&r.rows)?)
                    .bind(i32::try_from(r.rows.len()).unwrap_or(i32::MAX))
                    .bind(r.truncated)
                    .execute(&mut *tx.tx)
                    .await?;
                }
                sqlx::query("UPDATE requests SET status = $1, status_changed_at = $2, updated_at = $2 WHERE id = $3 AND status = 'running'")
                    .bind(status.as_str())
                    .bind(now)
                    .bind(request)
                    .execute(&mut *tx.tx)
                    .await?;
                let audit = audit.target("request", request).details(serde_json::json!({
                    "execution_id": id, "status": status.as_str(), "error": error,
                }));
                self.insert_audit(&mut tx.tx, audit, now).await?;
                tx.commit().await
            }

            async fn get_execution(&self, id: $crate::domain::ExecutionId) -> $crate::store::StoreResult<Option<$crate::store::Execution>> {
                let sql = format!("SELECT {} FROM executions WHERE id = $1", $crate::store::sql::EXECUTION_COLUMNS);
                let row: Option<$crate::store::sql::ExecutionRow> = sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn request_executions(&self, request: $crate::domain::RequestId) -> $crate::store::StoreResult<Vec<$crate::store::Execution>> {
                let sql = format!("SELECT {} FROM executions WHERE request_id = $1 ORDER BY started_at", $crate::store::sql::EXECUTION_COLUMNS);
                let rows: Vec<$crate::store::sql::ExecutionRow> = sqlx::query_as(&sql).bind(request).fetch_all(&self.pool).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn execution_result(
                &self,
                id: $crate::domain::ExecutionId,
                statement: usize,
            ) -> $crate::store::StoreResult<Option<$crate::domain::execution::ResultSet>> {
                let row: Option<(String, String, bool)> = sqlx::query_as(
                    "SELECT columns, rows, truncated FROM execution_results WHERE execution_id = $1 AND statement_index = $2",
                )
                .bind(id)
                .bind(i32::try_from(statement).unwrap_or(i32::MAX))
                .fetch_optional(&self.pool)
                .await?;
                let Some((columns, rows, truncated)) = row else { return Ok(None) };
                let corrupt = |_| $crate::store::StoreError::Corrupt(format!("execution {id}: result {statement}"));
                Ok(Some($crate::domain::execution::ResultSet {
                    statement,
                    columns: serde_json::from_str(&columns).map_err(corrupt)?,
                    rows: serde_json::from_str(&rows).map_err(corrupt)?,
                    truncated,
                }))
            }

            async fn execution_calls(
                &self,
                id: $crate::domain::ExecutionId,
            ) -> $crate::store::StoreResult<Vec<$crate::domain::execution::CallRecord>> {
                let rows: Vec<(i64, String, String, i64, f64, i64, Option<String>)> = sqlx::query_as(
                    "SELECT CAST(seq AS BIGINT), op, target, CAST(at_ms AS BIGINT), duration_ms, CAST(rows AS BIGINT), error \
                     FROM execution_calls \
                     WHERE execution_id = $1 ORDER BY seq",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, op, target, at_ms, duration_ms, rows, error)| $crate::domain::execution::CallRecord {
                        seq: u32::try_from(seq).unwrap_or(u32::MAX),
                        op,
                        target,
                        at_ms: u64::try_from(at_ms).unwrap_or(0),
                        duration_ms,
                        rows: u64::try_from(rows).unwrap_or(0),
                        error,
                    })
                    .collect())
            }

            async fn stale_executions(&self) -> $crate::store::StoreResult<Vec<$crate::store::Execution>> {
                let sql = format!(
                    "SELECT {} FROM executions WHERE status = 'running' AND lease_until < $1 ORDER BY started_at",
                    $crate::store::sql::EXECUTION_COLUMNS
                );
                let rows: Vec<$crate::store::sql::ExecutionRow> = sqlx::query_as(&sql).bind(self.clock.now()).fetch_all(&self.pool).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn due_deliveries(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::Delivery>> {
                let sql = format!(
                    "SELECT {} FROM slack_outbox o \
                     WHERE ((o.state = 'pending' AND o.next_attempt_at <= $1) OR (o.state = 'sending' AND o.lease_until <= $1)) \
                     AND NOT EXISTS (SELECT 1 FROM slack_outbox p WHERE p.request_id = o.request_id AND p.seq < o.seq \
                                     AND p.state IN ('pending', 'sending')) \
                     ORDER BY o.seq LIMIT $2",
                    $crate::store::sql::DELIVERY_COLUMNS
                );
                let rows: Vec<$crate::store::sql::DeliveryRow> =
                    sqlx::query_as(&sql).bind(now).bind(limit).fetch_all(&self.pool).await?;
                $crate::store::sql::deliveries(rows)
            }

            async fn claim_delivery(
                &self,
                id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(
                    "UPDATE slack_outbox SET state = 'sending', lease_until = $1 WHERE id = $2 \
                     AND ((state = 'pending' AND next_attempt_at <= $3) OR (state = 'sending' AND lease_until <= $3))",
                )
                .bind(lease_until)
                .bind(id)
                .bind(now)
                .execute(&mut *tx.tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn settle_delivery(
                &self,
                id: uuid::Uuid,
                outcome: &$crate::store::DeliveryOutcome,
                audit: Option<$crate::domain::audit::NewAuditEvent>,
            ) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let history: Option<String> = sqlx::query_scalar(
                    "SELECT history FROM slack_outbox WHERE id = $1 AND state = 'sending'",
                )
                .bind(id)
                .fetch_optional(&mut *tx.tx)
                .await?;
                let Some(history) = history else {
                    return Err($crate::store::StoreError::Conflict("delivery is not being sent".into()));
                };
                let mut history: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap_or_default();
                history.extend(outcome.attempt.clone());
                let finished = (outcome.state != "pending").then_some(now);
                sqlx::query(
                    "UPDATE slack_outbox SET state = $1, attempts = $2, next_attempt_at = $3, lease_until = NULL, \
                     last_error = COALESCE($4, last_error), history = $5, channel = COALESCE($6, channel), ts = COALESCE($7, ts), \
                     finished_at = $8 WHERE id = $9",
                )
                .bind(outcome.state)
                .bind(outcome.attempts)
                .bind(outcome.next_attempt_at)
                .bind(outcome.error.as_deref())
                .bind($crate::store::sql::to_json(&history)?)
                .bind(outcome.channel.as_deref())
                .bind(outcome.ts.as_deref())
                .bind(finished)
                .bind(id)
                .execute(&mut *tx.tx)
                .await?;
                if let Some(audit) = audit {
                    self.insert_audit(&mut tx.tx, audit, now).await?;
                }
                tx.commit().await
            }

            async fn list_deliveries(
                &self,
                state: Option<&str>,
                request: Option<$crate::domain::RequestId>,
                limit: i64,
                offset: i64,
            ) -> $crate::store::StoreResult<$crate::store::Page<$crate::store::Delivery>> {
                fn filters<'a>(
                    b: &mut sqlx::QueryBuilder<'a, $db>,
                    state: Option<&'a str>,
                    request: Option<$crate::domain::RequestId>,
                ) {
                    b.push(" WHERE 1 = 1");
                    if let Some(s) = state {
                        b.push(" AND state = ").push_bind(s);
                    }
                    if let Some(r) = request {
                        b.push(" AND request_id = ").push_bind(r.0);
                    }
                }
                let mut count = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM slack_outbox");
                filters(&mut count, state, request);
                let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
                let mut b = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM slack_outbox",
                    $crate::store::sql::DELIVERY_COLUMNS
                ));
                filters(&mut b, state, request);
                b.push(" ORDER BY seq DESC LIMIT ").push_bind(limit).push(" OFFSET ").push_bind(offset);
                let rows: Vec<$crate::store::sql::DeliveryRow> = b.build_query_as().fetch_all(&self.pool).await?;
                Ok($crate::store::Page { items: $crate::store::sql::deliveries(rows)?, total })
            }

            async fn delivery_counts(&self) -> $crate::store::StoreResult<Vec<(String, i64)>> {
                Ok(sqlx::query_as("SELECT state, COUNT(*) FROM slack_outbox GROUP BY state ORDER BY state")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn get_delivery(&self, id: uuid::Uuid) -> $crate::store::StoreResult<Option<$crate::store::Delivery>> {
                let sql = format!("SELECT {} FROM slack_outbox WHERE id = $1", $crate::store::sql::DELIVERY_COLUMNS);
                let row: Option<$crate::store::sql::DeliveryRow> =
                    sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn retry_delivery(
                &self,
                id: uuid::Uuid,
                audit: $crate::domain::audit::NewAuditEvent,
            ) -> $crate::store::StoreResult<bool> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(
                    "UPDATE slack_outbox SET state = 'pending', attempts = 0, next_attempt_at = $1, finished_at = NULL \
                     WHERE id = $2 AND state = 'dead'",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx.tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                self.insert_audit(&mut tx.tx, audit, now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn later_update_pending(
                &self,
                request: $crate::domain::RequestId,
                id: uuid::Uuid,
            ) -> $crate::store::StoreResult<bool> {
                let later: Option<i64> = sqlx::query_scalar(
                    "SELECT o.seq FROM slack_outbox o WHERE o.request_id = $1 AND o.kind = 'update' AND o.state = 'pending' \
                     AND o.seq > (SELECT seq FROM slack_outbox WHERE id = $2) LIMIT 1",
                )
                .bind(request)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(later.is_some())
            }

            async fn prune_deliveries(&self, before: chrono::DateTime<chrono::Utc>) -> $crate::store::StoreResult<u64> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(
                    "DELETE FROM slack_outbox WHERE state IN ('sent', 'skipped', 'dead') AND finished_at < $1",
                )
                .bind(before)
                .execute(&mut *tx.tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn slack_thread(
                &self,
                request: $crate::domain::RequestId,
            ) -> $crate::store::StoreResult<Option<(String, String)>> {
                Ok(sqlx::query_as("SELECT channel, ts FROM slack_threads WHERE request_id = $1")
                    .bind(request)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn set_slack_thread(
                &self,
                request: $crate::domain::RequestId,
                channel: &str,
                ts: &str,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "INSERT INTO slack_threads (request_id, channel, ts, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (request_id) DO UPDATE SET channel = excluded.channel, ts = excluded.ts",
                )
                .bind(request)
                .bind(channel)
                .bind(ts)
                .bind(self.clock.now())
                .execute(&mut *tx.tx)
                .await?;
                tx.commit().await
            }

            async fn user_by_slack_id(&self, slack_user: &str) -> $crate::store::StoreResult<Option<$crate::store::User>> {
                let sql = format!("SELECT {} FROM users u WHERE u.slack_user_id = $1", $crate::store::sql::USER_COLUMNS);
                let row: Option<$crate::store::sql::UserRow> =
                    sqlx::query_as(&sql).bind(slack_user).fetch_optional(&self.pool).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn user_by_email(&self, email: &str) -> $crate::store::StoreResult<Option<$crate::store::User>> {
                let sql = format!("SELECT {} FROM users u WHERE u.email = $1", $crate::store::sql::USER_COLUMNS);
                let row: Option<$crate::store::sql::UserRow> =
                    sqlx::query_as(&sql).bind(email).fetch_optional(&self.pool).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn set_slack_user_id(
                &self,
                user: $crate::domain::UserId,
                slack_user: &str,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = self.write_tx().await?;
                // A Slack account maps to one portal user: a stale mapping moves to the new one.
                sqlx::query("UPDATE users SET slack_user_id = NULL WHERE slack_user_id = $1 AND id <> $2")
                    .bind(slack_user)
                    .bind(user)
                    .execute(&mut *tx.tx)
                    .await?;
                sqlx::query("UPDATE users SET slack_user_id = $1 WHERE id = $2")
                    .bind(slack_user)
                    .bind(user)
                    .execute(&mut *tx.tx)
                    .await?;
                tx.commit().await
            }

            async fn append_audit(&self, event: $crate::domain::audit::NewAuditEvent) -> $crate::store::StoreResult<()> {
                let now = self.clock.now();
                let mut tx = self.write_tx().await?;
                self.insert_audit(&mut tx.tx, event, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_audit(
                &self,
                q: &$crate::store::AuditQuery,
            ) -> $crate::store::StoreResult<$crate::store::Page<$crate::domain::audit::AuditEvent>> {
                fn filters<'a>(b: &mut sqlx::QueryBuilder<'a, $db>, q: &'a $crate::store::AuditQuery) {
                    b.push(" WHERE 1 = 1");
                    if let Some(a) = q.actor_id {
                        b.push(" AND actor_id = ").push_bind(a);
                    }
                    if let Some(a) = &q.action {
                        b.push(" AND action = ").push_bind(a.as_str());
                    }
                    if let Some(t) = &q.target_id {
                        b.push(" AND target_id = ").push_bind(t.as_str());
                    }
                    if let Some(s) = q.since {
                        b.push(" AND at >= ").push_bind(s);
                    }
                    if let Some(u) = q.until {
                        b.push(" AND at < ").push_bind(u);
                    }
                }
                let mut count = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM audit_events");
                filters(&mut count, q);
                let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
                let mut b = sqlx::QueryBuilder::<$db>::new(format!("SELECT {} FROM audit_events", $crate::store::sql::AUDIT_COLUMNS));
                filters(&mut b, q);
                b.push(" ORDER BY seq DESC LIMIT ").push_bind(q.limit).push(" OFFSET ").push_bind(q.offset);
                let rows: Vec<$crate::store::sql::AuditRow> = b.build_query_as().fetch_all(&self.pool).await?;
                Ok($crate::store::sql::page(rows, total))
            }

            async fn audit_after(&self, after: i64, limit: i64) -> $crate::store::StoreResult<Vec<$crate::domain::audit::AuditEvent>> {
                let sql = format!(
                    "SELECT {} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                    $crate::store::sql::AUDIT_COLUMNS
                );
                let rows: Vec<$crate::store::sql::AuditRow> =
                    sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
        }
    };
}

pub(super) use impl_store;
