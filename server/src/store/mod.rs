//! Storage: one interface (`Store`), two implementations (SQLite for a single replica,
//! PostgreSQL for several), in the manner of atuin's server. The SQL is written once in
//! `sql.rs` and instantiated for each backend; what differs (connection set-up, migrations,
//! serialising audit appends) lives in `sqlite.rs` and `postgres.rs`.
//!
//! Every method that changes state takes the audit event describing the change and writes both in
//! one transaction, so there is never a change without its audit record, or the reverse.

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::config::LimitsConfig;
use crate::domain::audit::{AuditEvent, NewAuditEvent};
use crate::domain::execution::{ExecError, ExecStatus, ResultSet, StatementReport};
use crate::domain::instance::{Engine, LimitOverrides, RunMode, TlsMode};
use crate::domain::lockout::{AfterFailure, LockoutPolicy};
use crate::domain::workflow::{Decision, Kind, Mode, Status};
use crate::domain::{ExecutionId, InstanceId, PodId, RequestId, Role, SessionId, UserId};
use crate::secrets::Sealed;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or state conflict; the message names what conflicted.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why a session ended; stored on the session and in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    LogoutAll,
    PasswordChange,
    SessionRevoked,
    RefreshReuse,
    RoleChange,
    Disabled,
    /// Signing in on one device too many ends the least recently used session.
    Evicted,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::PasswordChange => "password_change",
            Self::SessionRevoked => "session_revoked",
            Self::RefreshReuse => "refresh_reuse",
            Self::RoleChange => "role_change",
            Self::Disabled => "disabled",
            Self::Evicted => "evicted",
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub home_pod_id: Option<PodId>,
    pub disabled: bool,
    pub must_change_password: bool,
    pub failed_logins: i32,
    pub delayed_until: Option<DateTime<Utc>>,
    pub locked_at: Option<DateTime<Utc>>,
    pub slack_user_id: Option<String>,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub role: Role,
    pub home_pod_id: Option<PodId>,
    pub password_hash: String,
    pub must_change_password: bool,
}

/// An admin's change to a user; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub home_pod_id: Option<Option<PodId>>,
    pub disabled: Option<bool>,
    /// A new password hash that the user must change at next sign-in.
    pub reset_password_hash: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    pub search: Option<String>,
    pub role: Option<Role>,
    pub pod_id: Option<PodId>,
    pub disabled: Option<bool>,
    pub locked: Option<bool>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub id: PodId,
    pub name: String,
    pub slack_channel: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct PodSummary {
    pub pod: Pod,
    pub manager_count: i64,
    pub member_count: i64,
}

#[derive(Debug, Clone)]
pub struct PodChange {
    pub name: Option<String>,
    pub slack_channel: Option<Option<String>>,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RefreshRecord {
    pub token_id: Uuid,
    pub rotated_at: Option<DateTime<Utc>>,
    pub session: Session,
}

/// Everything a request needs to trust its access token, read in one query.
#[derive(Debug, Clone)]
pub struct AuthContext {
    pub user: User,
    pub session: Session,
    pub jti_revoked: bool,
}

/// A database instance as stored; the credential stays sealed here and is opened only by the code
/// that connects.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: InstanceId,
    pub name: String,
    pub engine: Engine,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub tls_mode: TlsMode,
    pub uri: Option<String>,
    /// SQLite: a path relative to the data directory.
    pub path: Option<String>,
    pub environment: String,
    pub required_approvals: u8,
    pub run_mode: RunMode,
    pub slack_approval: bool,
    pub limits: LimitOverrides,
    pub secret: Option<Sealed>,
    pub allowed_pods: Vec<PodId>,
    pub databases_synced_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub id: RequestId,
    pub author_id: UserId,
    /// Read with the request (not stored on it); empty in a record about to be inserted.
    pub author_name: String,
    pub last_editor_id: UserId,
    pub pod_id: PodId,
    pub instance_id: InstanceId,
    pub database: String,
    pub kind: Kind,
    pub mode: Mode,
    pub justification: String,
    pub status: Status,
    pub revision: i32,
    pub revision_hash: String,
    pub status_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Revision {
    pub number: i32,
    pub kind: Kind,
    pub mode: Mode,
    pub instance_id: InstanceId,
    pub database: String,
    pub content: String,
    pub justification: String,
    pub limits: LimitsConfig,
    pub hash: String,
    pub editor_id: UserId,
    pub created_at: DateTime<Utc>,
    /// What the syntax check found when the revision was saved.
    pub check: Option<crate::check::CheckReport>,
}

#[derive(Debug, Clone)]
pub struct Review {
    pub id: Uuid,
    pub revision: i32,
    pub revision_hash: String,
    pub reviewer_id: UserId,
    pub decision: Decision,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    pub voided_at: Option<DateTime<Utc>>,
}

/// Filters for listing requests. `visible_to` restricts to what a non-admin may see.
#[derive(Debug, Clone, Default)]
pub struct RequestQuery {
    /// (the caller, the PODs whose requests they see); `None` for admins.
    pub visible_to: Option<(UserId, Vec<PodId>)>,
    pub status: Option<Status>,
    pub pod_id: Option<PodId>,
    pub instance_id: Option<InstanceId>,
    pub author_id: Option<UserId>,
    /// Pending requests this reviewer may decide and has not yet reviewed: (reviewer, PODs they
    /// review or `None` for all).
    pub awaiting_review_by: Option<(UserId, Option<Vec<PodId>>)>,
    /// Case-insensitive substring of the justification.
    pub search: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub struct Execution {
    pub id: ExecutionId,
    pub request_id: RequestId,
    pub revision: i32,
    pub revision_hash: String,
    pub status: ExecStatus,
    pub owner: String,
    pub lease_until: DateTime<Utc>,
    pub target_txid: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<ExecError>,
    pub statements: Vec<StatementReport>,
    /// Scripts: the returned value, console output and what the sandbox reported.
    pub result: Option<serde_json::Value>,
    pub logs: Vec<crate::domain::execution::LogLine>,
    pub sandbox: Option<crate::domain::execution::SandboxReport>,
}

/// One Slack delivery in the outbox.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    pub dedupe_key: String,
    pub request_id: RequestId,
    pub kind: crate::domain::slack::DeliveryKind,
    pub event: crate::domain::slack::Event,
    /// `pending`, `sending`, `sent`, `skipped` or `dead`.
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Every attempt: `{at, error, retry_at}`.
    pub history: serde_json::Value,
    pub channel: Option<String>,
    pub ts: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// How an attempt at a delivery ended, as the store records it.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    /// `pending` (try again at `next_attempt_at`), `sent`, `skipped` or `dead`.
    pub state: &'static str,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub error: Option<String>,
    pub channel: Option<String>,
    pub ts: Option<String>,
    /// Appended to the delivery's history (None: the attempt is not recorded, e.g. a skip).
    pub attempt: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor_id: Option<Uuid>,
    pub action: Option<String>,
    pub target_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    fn backend(&self) -> Backend;
    async fn ping(&self) -> StoreResult<()>;
    async fn migrate(&self) -> StoreResult<()>;

    // Users.
    async fn count_users(&self) -> StoreResult<i64>;
    async fn count_active_admins(&self) -> StoreResult<i64>;
    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// The user and their password hash, by normalised email.
    async fn get_credentials(&self, email: &str) -> StoreResult<Option<(User, String)>>;
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Page<User>>;
    async fn create_user(&self, new: &NewUser, audit: NewAuditEvent) -> StoreResult<User>;
    /// Applies an admin change; when `revoke` is set, every session of the user ends with it.
    async fn update_user(
        &self,
        id: UserId,
        change: &UserChange,
        revoke: Option<RevokeReason>,
        audit: NewAuditEvent,
    ) -> StoreResult<User>;
    /// Sets a password the user chose, ending every other session.
    async fn change_password(
        &self,
        id: UserId,
        password_hash: &str,
        keep_session: SessionId,
        audit: NewAuditEvent,
    ) -> StoreResult<()>;
    /// Counts a failed sign-in and applies the lockout policy atomically.
    async fn record_login_failure(
        &self,
        id: UserId,
        policy: &LockoutPolicy,
        audit: NewAuditEvent,
    ) -> StoreResult<AfterFailure>;
    /// Clears the failure counter, the delay and the lock. False if the user does not exist.
    async fn unlock_user(&self, id: UserId, audit: NewAuditEvent) -> StoreResult<bool>;
    async fn managed_pods(&self, user: UserId) -> StoreResult<Vec<PodId>>;

    // Sessions and tokens.
    /// Records a successful sign-in: resets the failure counter, creates the session with its
    /// first refresh token and ends the least recently used sessions beyond `max_sessions`.
    async fn start_session(
        &self,
        session: &Session,
        refresh_hash: &str,
        max_sessions: u32,
        audit: NewAuditEvent,
    ) -> StoreResult<()>;
    async fn find_refresh(&self, token_hash: &str) -> StoreResult<Option<RefreshRecord>>;
    /// Marks the token used and issues its successor. False if it was rotated concurrently.
    async fn rotate_refresh(
        &self,
        token_id: Uuid,
        session: SessionId,
        new_hash: &str,
        ip: Option<&str>,
        user_agent: Option<&str>,
    ) -> StoreResult<bool>;
    /// Ends one session (and denylists an access token if given). False if it was already over.
    async fn revoke_session(
        &self,
        session: SessionId,
        reason: RevokeReason,
        jti: Option<(Uuid, DateTime<Utc>)>,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
    /// Ends every live session of a user, optionally but one; returns how many ended.
    async fn revoke_user_sessions(
        &self,
        user: UserId,
        except: Option<SessionId>,
        reason: RevokeReason,
        jti: Option<(Uuid, DateTime<Utc>)>,
        audit: NewAuditEvent,
    ) -> StoreResult<u64>;
    async fn list_sessions(&self, user: UserId) -> StoreResult<Vec<Session>>;
    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>>;
    async fn auth_context(
        &self,
        session: SessionId,
        user: UserId,
        jti: Uuid,
    ) -> StoreResult<Option<AuthContext>>;
    async fn touch_session(&self, session: SessionId) -> StoreResult<()>;
    /// Deletes denylisted token ids past their expiry and refresh tokens of long-ended sessions.
    async fn purge_expired(&self) -> StoreResult<u64>;

    // PODs.
    async fn create_pod(
        &self,
        name: &str,
        slack_channel: Option<&str>,
        audit: NewAuditEvent,
    ) -> StoreResult<Pod>;
    async fn get_pod(&self, id: PodId) -> StoreResult<Option<Pod>>;
    async fn find_pod_by_name(&self, name: &str) -> StoreResult<Option<Pod>>;
    /// All PODs, or only those in `only`.
    async fn list_pods(
        &self,
        only: Option<&[PodId]>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Page<PodSummary>>;
    async fn update_pod(
        &self,
        id: PodId,
        change: &PodChange,
        audit: NewAuditEvent,
    ) -> StoreResult<Pod>;
    /// Refused with `Conflict` while users have the POD as home.
    async fn delete_pod(&self, id: PodId, audit: NewAuditEvent) -> StoreResult<()>;
    async fn set_pod_managers(
        &self,
        id: PodId,
        managers: &[UserId],
        audit: NewAuditEvent,
    ) -> StoreResult<()>;
    /// Adds one manager to a POD (no-op if already one).
    async fn add_pod_manager(
        &self,
        id: PodId,
        manager: UserId,
        audit: NewAuditEvent,
    ) -> StoreResult<()>;
    /// (managers, members) of a POD.
    async fn pod_people(&self, id: PodId) -> StoreResult<(Vec<User>, Vec<User>)>;

    // Instances.
    async fn create_instance(&self, instance: &Instance, audit: NewAuditEvent) -> StoreResult<()>;
    /// Replaces every setting, the allowed PODs and the sealed secret.
    async fn update_instance(&self, instance: &Instance, audit: NewAuditEvent) -> StoreResult<()>;
    async fn delete_instance(&self, id: InstanceId, audit: NewAuditEvent) -> StoreResult<()>;
    async fn get_instance(&self, id: InstanceId) -> StoreResult<Option<Instance>>;
    /// All instances, or those allowed for at least one of `pods`.
    async fn list_instances(
        &self,
        pods: Option<&[PodId]>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Page<Instance>>;
    /// Replaces the synced database list of an instance.
    async fn set_instance_databases(
        &self,
        id: InstanceId,
        names: &[String],
        audit: NewAuditEvent,
    ) -> StoreResult<()>;
    async fn instance_databases(&self, id: InstanceId) -> StoreResult<Vec<String>>;
    /// Re-seals every instance secret in one transaction (`quorum keys rotate`).
    async fn reseal_secrets(
        &self,
        sealed: &[(InstanceId, Sealed)],
        audit: NewAuditEvent,
    ) -> StoreResult<()>;

    // Requests.
    async fn create_request(
        &self,
        request: &RequestRecord,
        first: &Revision,
        audit: NewAuditEvent,
    ) -> StoreResult<()>;
    async fn get_request(&self, id: RequestId) -> StoreResult<Option<RequestRecord>>;
    async fn request_revisions(&self, id: RequestId) -> StoreResult<Vec<Revision>>;
    async fn request_reviews(&self, id: RequestId) -> StoreResult<Vec<Review>>;
    async fn list_requests(&self, query: &RequestQuery) -> StoreResult<Page<RequestRecord>>;
    /// Adds a revision if the request is still at `expected_revision` and editable: voids every
    /// review, returns it to `pending`. `Conflict` if it changed meanwhile.
    async fn revise_request(
        &self,
        id: RequestId,
        expected_revision: i32,
        next: &Revision,
        audit: NewAuditEvent,
    ) -> StoreResult<()>;
    /// Records a review of the current revision and applies the decision, counting distinct
    /// approvals given since `approval_cutoff` against `required`. Returns the new status.
    /// `Conflict("stale")` if the request moved on; `Conflict("already_reviewed")` on a repeat.
    async fn review_request(
        &self,
        id: RequestId,
        expected_revision: i32,
        review: &Review,
        required: u8,
        approval_cutoff: DateTime<Utc>,
        audit: NewAuditEvent,
    ) -> StoreResult<Status>;
    /// Moves a request from one of `from` to `to`; false if it was in none of them.
    async fn transition_request(
        &self,
        id: RequestId,
        from: &[Status],
        to: Status,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
    /// Requests still open (pending, changes requested, approved), for the expiry sweep.
    async fn open_requests(&self) -> StoreResult<Vec<RequestRecord>>;

    // Executions.
    /// Moves an approved request to `running` and records its execution, in one transaction, if
    /// and only if it is still approved, its current revision hash is `expected_hash` and it was
    /// approved after `approved_after`. `Conflict("not_runnable")` otherwise (it already ran,
    /// changed or expired); `Conflict("busy_instance")` / `Conflict("busy_author")` when the
    /// instance or the author already has `caps` executions running (checked under row locks, so
    /// replicas cannot overshoot together).
    async fn start_execution(
        &self,
        request: RequestId,
        expected_hash: &str,
        approved_after: DateTime<Utc>,
        caps: (u32, u32),
        execution: &Execution,
        audit: NewAuditEvent,
    ) -> StoreResult<()>;
    /// Remembers the target transaction id just before COMMIT (crash reconciliation).
    async fn record_target_txid(&self, id: ExecutionId, txid: &str) -> StoreResult<()>;
    /// Stores the outcome and results and moves the request to its final status.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one outcome, written in one transaction"
    )]
    async fn finish_execution(
        &self,
        id: ExecutionId,
        status: ExecStatus,
        error: Option<&ExecError>,
        statements: &[StatementReport],
        results: &[ResultSet],
        script: Option<&crate::domain::execution::ScriptReport>,
        audit: NewAuditEvent,
    ) -> StoreResult<()>;
    async fn get_execution(&self, id: ExecutionId) -> StoreResult<Option<Execution>>;
    async fn request_executions(&self, request: RequestId) -> StoreResult<Vec<Execution>>;
    async fn execution_result(
        &self,
        id: ExecutionId,
        statement: usize,
    ) -> StoreResult<Option<ResultSet>>;
    /// The `db.*` calls of a script run, in order.
    async fn execution_calls(
        &self,
        id: ExecutionId,
    ) -> StoreResult<Vec<crate::domain::execution::CallRecord>>;
    /// Executions still `running` whose lease ran out: their process died or hung.
    async fn stale_executions(&self) -> StoreResult<Vec<Execution>>;

    // Audit.
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<()>;

    // Slack
    /// Deliveries due at `now`, oldest first: pending ones whose time has come and sending ones
    /// whose lease ran out, each only when no earlier delivery for its request is unfinished.
    async fn due_deliveries(&self, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Delivery>>;
    /// Takes a due delivery for sending until `lease_until`; false when another replica has it.
    async fn claim_delivery(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records how the attempt ended (and, for a dead letter, its audit event).
    async fn settle_delivery(
        &self,
        id: Uuid,
        outcome: &DeliveryOutcome,
        audit: Option<NewAuditEvent>,
    ) -> StoreResult<()>;
    async fn list_deliveries(
        &self,
        state: Option<&str>,
        request: Option<RequestId>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Page<Delivery>>;
    /// Deliveries per state.
    async fn delivery_counts(&self) -> StoreResult<Vec<(String, i64)>>;
    async fn get_delivery(&self, id: Uuid) -> StoreResult<Option<Delivery>>;
    /// Puts a dead delivery back in the queue with fresh attempts; false when it is not dead.
    async fn retry_delivery(&self, id: Uuid, audit: NewAuditEvent) -> StoreResult<bool>;
    /// Whether a later update of the request's message is waiting (this one can be skipped).
    async fn later_update_pending(&self, request: RequestId, id: Uuid) -> StoreResult<bool>;
    /// Removes finished deliveries older than `before`.
    async fn prune_deliveries(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// The channel and timestamp of the request's first Slack message.
    async fn slack_thread(&self, request: RequestId) -> StoreResult<Option<(String, String)>>;
    async fn set_slack_thread(
        &self,
        request: RequestId,
        channel: &str,
        ts: &str,
    ) -> StoreResult<()>;
    async fn user_by_slack_id(&self, slack_user: &str) -> StoreResult<Option<User>>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn set_slack_user_id(&self, user: UserId, slack_user: &str) -> StoreResult<()>;
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Page<AuditEvent>>;
    /// Events with `seq > after`, in order, for chain verification.
    async fn audit_after(&self, after: i64, limit: i64) -> StoreResult<Vec<AuditEvent>>;
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the store named by the configuration and applies pending migrations.
pub async fn connect(config: &Config, clock: SharedClock) -> StoreResult<SharedStore> {
    let url = config.database_url();
    let outbox = config.slack.mode() != crate::config::SlackMode::Off;
    let store: SharedStore = if url.starts_with("sqlite:") {
        Arc::new(
            SqliteStore::connect(&url, &config.database, clock)
                .await?
                .with_outbox(outbox),
        )
    } else {
        Arc::new(
            PgStore::connect(&url, &config.database, clock)
                .await?
                .with_outbox(outbox),
        )
    };
    Ok(store)
}
