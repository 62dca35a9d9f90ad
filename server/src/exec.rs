//! Runs approved SQL query requests against their target, once, inside a transaction the portal
//! controls: `BEGIN READ ONLY` (PostgreSQL) or a read-only handle (SQLite) for read requests, one
//! all-or-nothing transaction for write requests. Every statement is classified before anything is
//! sent (transaction control and session changes are refused; read requests refuse writes), runs
//! under the statement timeout, and has its rows stored up to the limits.
//!
//! Scripts (JavaScript) run in the sandbox, a later piece; this module is the seam it plugs into:
//! `launch` claims the request, `run` produces an `Outcome`, `finish` stores it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::TryStreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::{Column as _, Either, Executor as _, Row, TypeInfo, ValueRef};

use crate::config::LimitsConfig;
use crate::domain::audit::NewAuditEvent;
use crate::domain::execution::{
    Column, ErrorKind, ExecError, ExecStatus, ResultSet, ScriptReport, StatementReport,
};
use crate::domain::instance::Engine;
use crate::domain::sql::{Dialect, Refusal, StatementClass, admit, classify, split_statements};
use crate::domain::workflow::{Kind, Mode};
use crate::domain::{ExecutionId, RequestId, UserId};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store::{Execution, Instance, RequestRecord, SharedStore, StoreError};
use crate::targets;

/// Seconds past the wall limit before a running execution's claim lapses.
pub const LEASE_GRACE_SECS: i64 = 5;

/// Everything one run needs, gathered before the request is claimed.
#[derive(Debug)]
pub struct Plan {
    pub execution: ExecutionId,
    pub request: RequestId,
    pub instance: Instance,
    pub secret: Option<SecretString>,
    pub database: String,
    pub kind: Kind,
    pub mode: Mode,
    pub content: String,
    pub limits: LimitsConfig,
    pub data_dir: PathBuf,
    pub sandbox: std::sync::Arc<crate::sandbox::Sandbox>,
    pub target_idle: std::sync::Arc<targets::IdleConnections>,
    pub mongo_clients: std::sync::Arc<crate::mongo::Clients>,
}

#[derive(Debug)]
pub struct Outcome {
    pub status: ExecStatus,
    pub error: Option<ExecError>,
    pub statements: Vec<StatementReport>,
    pub results: Vec<ResultSet>,
    pub script: Option<ScriptReport>,
}

fn error(kind: ErrorKind, message: impl Into<String>, statement: Option<usize>) -> ExecError {
    ExecError {
        statement,
        ..ExecError::new(kind, message)
    }
}

/// Claims an approved request and starts running it in the background. Refused when the request
/// is not (or no longer) runnable: another process claimed it, it changed, or it expired.
pub async fn launch(
    state: &AppState,
    request: &RequestRecord,
    actor: Option<UserId>,
) -> Result<ExecutionId, ApiError> {
    use axum::http::StatusCode;
    let instance = state
        .store
        .get_instance(request.instance_id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    let revision = crate::http::requests::current_revision(state, request).await?;
    let secret = match &instance.secret {
        None => None,
        Some(sealed) => Some(state.secrets.open(instance.id.0, sealed).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "credential_unavailable",
                format!("the instance's credential cannot be used: {e}"),
            )
        })?),
    };
    let now = state.clock.now();
    let limits = revision.limits;
    let execution = Execution {
        id: ExecutionId::new(),
        request_id: request.id,
        revision: request.revision,
        revision_hash: request.revision_hash.clone(),
        status: ExecStatus::Running,
        owner: state.process.to_string(),
        // A live run ends within its wall limit; past this the process is presumed gone.
        lease_until: now
            + chrono::Duration::milliseconds(i64::from(limits.wall_ms) + LEASE_GRACE_SECS * 1000),
        target_txid: None,
        started_at: now,
        finished_at: None,
        error: None,
        statements: Vec::new(),
        result: None,
        logs: Vec::new(),
        sandbox: None,
    };
    let approved_after =
        now - chrono::Duration::seconds(state.config.workflow.execution_window_secs);
    let mut event = NewAuditEvent::new("execution.started");
    if let Some(a) = actor {
        event = event.actor(a);
    }
    let busy = |what: &str| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_busy",
            format!("{what}; it starts when one finishes"),
        )
        .with_retry_after(5)
    };
    // A permit of this process's share, held for the whole run.
    let permit = state
        .executions
        .clone()
        .try_acquire_owned()
        .map_err(|_| busy("this portal is running as many executions as it may"))?;
    let caps = (
        state.config.executor.max_per_instance,
        state.config.executor.max_per_author,
    );
    state.store.start_execution(request.id, &request.revision_hash, approved_after, caps, &execution, event).await.map_err(|e| match e {
        StoreError::Conflict(m) if m == "busy_instance" => busy("this instance is running as many executions as it may"),
        StoreError::Conflict(m) if m == "busy_author" => busy("another of your requests is running"),
        StoreError::Conflict(_) => ApiError::conflict(
            "not_runnable",
            "the request is not approved for running: it already ran, changed, expired or is running now",
        ),
        other => other.into(),
    })?;
    let plan = Plan {
        execution: execution.id,
        request: request.id,
        instance,
        secret,
        database: revision.database,
        kind: request.kind,
        mode: revision.mode,
        content: revision.content,
        limits,
        data_dir: state.config.data_dir.clone(),
        sandbox: state.sandbox.clone(),
        target_idle: state.target_idle.clone(),
        mongo_clients: state.mongo_clients.clone(),
    };
    let store = state.store.clone();
    let state = state.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let id = plan.execution;
        let outcome = run(&plan, &store).await;
        let event = NewAuditEvent::new("execution.finished");
        if let Err(e) = store
            .finish_execution(
                id,
                outcome.status,
                outcome.error.as_ref(),
                &outcome.statements,
                &outcome.results,
                outcome.script.as_ref(),
                event,
            )
            .await
        {
            tracing::error!(execution = %id, error = %e, "storing the execution outcome failed");
        }
        drop(_permit);
        // A slot is free: the maintenance task starts approved requests that waited for one.
        state.slot_freed.notify_one();
    });
    Ok(execution.id)
}

/// Runs the plan under its wall-clock limit.
pub async fn run(plan: &Plan, store: &SharedStore) -> Outcome {
    if plan.kind == Kind::Script {
        return run_script(plan, store).await;
    }
    let mut statements = Vec::new();
    let mut results = Vec::new();
    let wall = Duration::from_millis(u64::from(plan.limits.wall_ms));
    // Boxed with an explicit `Send` bound: rustc cannot otherwise prove the sqlx futures are
    // `Send` for every lifetime when this runs inside `tokio::spawn`.
    let run: Pin<Box<dyn Future<Output = Result<(), ExecError>> + Send + '_>> =
        match plan.instance.engine {
            Engine::Postgres => Box::pin(run_postgres(plan, store, &mut statements, &mut results)),
            Engine::Sqlite => Box::pin(run_sqlite(plan, &mut statements, &mut results)),
            // A MongoDB query is a mongosh expression, run in the sandbox.
            Engine::Mongodb => return run_script(plan, store).await,
        };
    let error = match tokio::time::timeout(wall, run).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(error(
            ErrorKind::Timeout,
            format!(
                "the execution exceeded its {} s limit; nothing was committed",
                wall.as_secs()
            ),
            None,
        )),
    };
    outcome(error, statements, results, None)
}

/// Classifies every statement before anything is sent.
fn preflight(plan: &Plan) -> Result<Vec<(String, StatementClass)>, ExecError> {
    let dialect = match plan.instance.engine {
        Engine::Sqlite => Dialect::Sqlite,
        _ => Dialect::Postgres,
    };
    let statements = split_statements(&plan.content, dialect);
    if statements.is_empty() {
        return Err(error(
            ErrorKind::DbError,
            "the query holds no statement",
            None,
        ));
    }
    let mut out = Vec::with_capacity(statements.len());
    for (i, sql) in statements.into_iter().enumerate() {
        let class = classify(&sql);
        let keyword = crate::domain::sql::leading_keyword(&sql);
        match admit(class, plan.mode) {
            Err(Refusal::ReadOnly) => {
                return Err(error(
                    ErrorKind::ReadOnlyViolation,
                    format!(
                        "statement {} ({keyword}) is not allowed in a read request; nothing was run",
                        i + 1
                    ),
                    Some(i),
                ));
            }
            Err(Refusal::Forbidden) => {
                return Err(error(
                    ErrorKind::ForbiddenStatement,
                    format!(
                        "statement {} ({keyword}) is not allowed: the portal runs the whole request in one transaction it controls; nothing was run",
                        i + 1
                    ),
                    Some(i),
                ));
            }
            Ok(()) => out.push((sql, class)),
        }
    }
    Ok(out)
}

/// A statement that ran to completion.
struct Done<'a> {
    index: usize,
    sql: &'a str,
    class: StatementClass,
    started: Instant,
    affected: u64,
}

/// Adds a finished statement's report and, if it returned rows, its result set.
fn record(
    done: Done<'_>,
    collector: Collector,
    columns: Option<Vec<Column>>,
    reports: &mut Vec<StatementReport>,
    results: &mut Vec<ResultSet>,
) {
    let mut r = report(done.index, done.sql, done.class, done.started);
    r.rows_returned = collector.rows.len() as u64;
    r.rows_affected = if columns.is_some() { 0 } else { done.affected };
    r.truncated = collector.truncated;
    reports.push(r);
    if let Some(columns) = columns {
        results.push(ResultSet {
            statement: done.index,
            columns,
            rows: collector.rows,
            truncated: collector.truncated,
        });
    }
}

fn report(index: usize, sql: &str, class: StatementClass, started: Instant) -> StatementReport {
    StatementReport {
        index,
        sql: sql.chars().take(500).collect(),
        class: class.as_str().to_owned(),
        rows_returned: 0,
        rows_affected: 0,
        duration_ms: 0.0,
        truncated: false,
    }
    .timed(started)
}

trait Timed {
    fn timed(self, started: Instant) -> Self;
}

impl Timed for StatementReport {
    fn timed(mut self, started: Instant) -> Self {
        self.duration_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
        self
    }
}

/// A database error as an execution error.
fn db_error(e: &sqlx::Error, statement: Option<usize>, mode: Mode) -> ExecError {
    let message = targets::describe(e);
    let code = match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let kind = match (code.as_deref(), e) {
        // read_only_sql_transaction; SQLite: SQLITE_READONLY (8) and its extended codes.
        (Some("25006"), _) => ErrorKind::ReadOnlyViolation,
        (Some(c), _)
            if mode == Mode::Read
                && (c == "8" || c.parse::<u32>().is_ok_and(|n| n & 0xff == 8)) =>
        {
            ErrorKind::ReadOnlyViolation
        }
        (Some("57014"), _) => ErrorKind::Timeout,
        (_, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)) => {
            ErrorKind::TargetUnavailable
        }
        _ => ErrorKind::DbError,
    };
    ExecError {
        sqlstate: code,
        statement,
        ..ExecError::new(kind, message)
    }
}

/// Collects rows up to the limits; returns (rows, truncated).
struct Collector {
    rows: Vec<Vec<Value>>,
    bytes: u64,
    truncated: bool,
    max_rows: usize,
    max_bytes: u64,
}

impl Collector {
    fn new(limits: &LimitsConfig, used_bytes: u64) -> Self {
        Self {
            rows: Vec::new(),
            bytes: used_bytes,
            truncated: false,
            max_rows: limits.max_rows as usize,
            max_bytes: limits.max_result_bytes,
        }
    }

    /// False once a limit is reached (the row is not kept).
    fn push(&mut self, row: Vec<Value>) -> bool {
        let size: u64 = row.iter().map(|v| v.to_string().len() as u64 + 1).sum();
        if self.rows.len() >= self.max_rows || self.bytes + size > self.max_bytes {
            self.truncated = true;
            return false;
        }
        self.bytes += size;
        self.rows.push(row);
        true
    }
}

async fn run_postgres(
    plan: &Plan,
    store: &SharedStore,
    reports: &mut Vec<StatementReport>,
    results: &mut Vec<ResultSet>,
) -> Result<(), ExecError> {
    let statements = preflight(plan)?;
    let mut conn = pg_open(plan).await?;
    let mut used = 0;
    for (i, (sql, class)) in statements.iter().enumerate() {
        let started = Instant::now();
        let mut collector = Collector::new(&plan.limits, used);
        let mut columns: Option<Vec<Column>> = None;
        let mut affected = 0;
        let outcome = pg_statement(
            &mut conn,
            sql,
            *class,
            &mut collector,
            &mut columns,
            &mut affected,
        )
        .await;
        if let Err(e) = outcome {
            let _ = conn.execute("ROLLBACK").await;
            return Err(db_error(&e, Some(i), plan.mode));
        }
        used = collector.bytes;
        let done = Done {
            index: i,
            sql,
            class: *class,
            started,
            affected,
        };
        record(done, collector, columns, reports, results);
    }
    let settled = pg_settle(plan, store, &mut conn).await;
    pg_release(plan, conn, settled.is_ok());
    settled
}

/// A connection to the PostgreSQL target with the timeouts set and the transaction begun
/// (`BEGIN READ ONLY` for read requests): one kept from an earlier execution when there is one
/// ([`targets::IdleConnections`]), else a new one.
async fn pg_open(plan: &Plan) -> Result<sqlx::PgConnection, ExecError> {
    let timeout_ms = plan.limits.db_call_ms;
    let idle_ms = plan.limits.wall_ms;
    let begin = if plan.mode == Mode::Read {
        "BEGIN READ ONLY"
    } else {
        "BEGIN"
    };
    // One round trip: the simple query protocol runs the statements in order and stops at the
    // first error. The application name says which request runs (a kept connection was opened
    // for another).
    let setup = format!(
        "SET application_name = 'quorum:{}'; SET statement_timeout = {timeout_ms}; SET idle_in_transaction_session_timeout = {idle_ms}; {begin}",
        plan.request
    );
    if let Some(mut conn) = plan.target_idle.take(&idle_key(plan)) {
        // A kept connection the server closed in the meantime fails here; a new one follows.
        if conn.execute(sqlx::raw_sql(&setup)).await.is_ok() {
            return Ok(conn);
        }
    }
    let mut conn = targets::connect_postgres(
        &plan.instance,
        plan.secret.as_ref(),
        &plan.database,
        &format!("quorum:{}", plan.request),
    )
    .await
    .map_err(|e| error(ErrorKind::TargetUnavailable, e.to_string(), None))?;
    conn.execute(sqlx::raw_sql(&setup))
        .await
        .map_err(|e| db_error(&e, None, plan.mode))?;
    Ok(conn)
}

/// Which kept PostgreSQL connections `plan` may take and give back.
fn idle_key(plan: &Plan) -> targets::IdleKey {
    targets::IdleKey::new(&plan.instance, plan.secret.as_ref(), &plan.database)
}

/// After an execution on PostgreSQL, in the background: a connection whose run ended cleanly
/// (`clean`: a write committed, a read succeeded) has a read's transaction rolled back, and is
/// reset and kept for the next execution; any other is closed (which ends its transaction on
/// the server).
fn pg_release(plan: &Plan, mut conn: sqlx::PgConnection, clean: bool) {
    if !clean {
        return targets::close(conn);
    }
    let idle = plan.target_idle.clone();
    let key = idle_key(plan);
    let read = plan.mode == Mode::Read;
    tokio::spawn(async move {
        if read && conn.execute("ROLLBACK").await.is_err() {
            return;
        }
        idle.give_back(key, conn).await;
    });
}

/// Ends a successful run: commits a write, recording its transaction id first (a read is
/// rolled back when its connection is released).
async fn pg_settle(
    plan: &Plan,
    store: &SharedStore,
    conn: &mut sqlx::PgConnection,
) -> Result<(), ExecError> {
    if plan.mode == Mode::Read {
        // Nothing to undo: the read-only transaction ends when the connection is released
        // ([`pg_release`]), after the outcome rather than before it.
        return Ok(());
    }
    // Remember the transaction id before COMMIT: after a crash, txid_status() on the target says
    // whether the work committed, without writing anything there.
    let txid: String = conn
        .fetch_one("SELECT txid_current()::text")
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| db_error(&e, None, plan.mode))?;
    if let Err(e) = store.record_target_txid(plan.execution, &txid).await {
        let _ = conn.execute("ROLLBACK").await;
        return Err(error(
            ErrorKind::DbError,
            format!("cannot record the transaction before COMMIT ({e}); rolled back"),
            None,
        ));
    }
    conn.execute("COMMIT")
        .await
        .map_err(|e| db_error(&e, None, plan.mode))?;
    failpoint("after_commit");
    Ok(())
}

/// Test-only crash points (feature `failpoints`): `QUORUM_FAILPOINT=<name>` aborts the process
/// there, as a power cut would. Compiled out of normal builds.
#[cfg(feature = "failpoints")]
fn failpoint(name: &str) {
    if std::env::var("QUORUM_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "failpoint hit: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_: &str) {}

/// Settles executions whose process died: without a recorded transaction id nothing was
/// committed (`interrupted`); with one, the target's `txid_status` says whether it committed
/// (`succeeded`) or not (`interrupted`), without writing anything there. Nothing is re-run.
pub async fn reconcile(state: &AppState) -> Result<usize, StoreError> {
    let mut settled = 0;
    for e in state.store.stale_executions().await? {
        let verdict = match &e.target_txid {
            None => Some((
                ExecStatus::Interrupted,
                "the portal stopped before the work could commit; nothing was committed",
            )),
            Some(txid) => match txid_status(state, &e, txid).await.as_deref() {
                Some("committed") => Some((ExecStatus::Succeeded, "")),
                Some("aborted") => Some((
                    ExecStatus::Interrupted,
                    "the portal stopped during COMMIT; the target rolled the work back",
                )),
                // Still open on the target, or the target is unreachable: ask again later.
                Some("in progress") | None => None,
                Some(_) => Some((
                    ExecStatus::Interrupted,
                    "the outcome is unknown: the target no longer knows the transaction",
                )),
            },
        };
        let Some((status, message)) = verdict else {
            continue;
        };
        let error =
            (status != ExecStatus::Succeeded).then(|| error(ErrorKind::Interrupted, message, None));
        let event = NewAuditEvent::new("execution.reconciled");
        match state
            .store
            .finish_execution(
                e.id,
                status,
                error.as_ref(),
                &e.statements,
                &[],
                None,
                event,
            )
            .await
        {
            Ok(()) => settled += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(settled)
}

/// `txid_status` on the execution's target; `None` when the target cannot be asked right now.
async fn txid_status(state: &AppState, e: &Execution, txid: &str) -> Option<String> {
    let request = state.store.get_request(e.request_id).await.ok()??;
    let instance = state.store.get_instance(request.instance_id).await.ok()??;
    let secret = match &instance.secret {
        Some(sealed) => Some(state.secrets.open(instance.id.0, sealed).ok()?),
        None => None,
    };
    let mut conn = targets::connect_postgres(
        &instance,
        secret.as_ref(),
        &request.database,
        "quorum:reconcile",
    )
    .await
    .ok()?;
    let status: Option<String> = sqlx::query_scalar("SELECT txid_status($1::bigint)")
        .bind(txid.parse::<i64>().ok()?)
        .fetch_one(&mut conn)
        .await
        .ok()?;
    Some(status.unwrap_or_default())
}

async fn run_sqlite(
    plan: &Plan,
    reports: &mut Vec<StatementReport>,
    results: &mut Vec<ResultSet>,
) -> Result<(), ExecError> {
    let statements = preflight(plan)?;
    let mut conn = sqlite_open(plan).await?;
    let mut used = 0;
    for (i, (sql, class)) in statements.iter().enumerate() {
        let started = Instant::now();
        let mut collector = Collector::new(&plan.limits, used);
        let mut columns: Option<Vec<Column>> = None;
        let mut affected = 0;
        let outcome =
            sqlite_statement(&mut conn, sql, &mut collector, &mut columns, &mut affected).await;
        if let Err(e) = outcome {
            let _ = conn.execute("ROLLBACK").await;
            return Err(db_error(&e, Some(i), plan.mode));
        }
        used = collector.bytes;
        let done = Done {
            index: i,
            sql,
            class: *class,
            started,
            affected,
        };
        record(done, collector, columns, reports, results);
    }
    sqlite_settle(plan, &mut conn).await
}

/// Opens the SQLite target (a read-only handle for read requests) with the transaction begun.
async fn sqlite_open(plan: &Plan) -> Result<sqlx::SqliteConnection, ExecError> {
    let mut conn = targets::connect_sqlite(&plan.instance, &plan.data_dir, plan.mode == Mode::Read)
        .await
        .map_err(|e| error(ErrorKind::TargetUnavailable, e.to_string(), None))?;
    let begin = if plan.mode == Mode::Read {
        "BEGIN"
    } else {
        "BEGIN IMMEDIATE"
    };
    conn.execute(begin)
        .await
        .map_err(|e| db_error(&e, None, plan.mode))?;
    Ok(conn)
}

async fn sqlite_settle(plan: &Plan, conn: &mut sqlx::SqliteConnection) -> Result<(), ExecError> {
    let end = if plan.mode == Mode::Read {
        "ROLLBACK"
    } else {
        "COMMIT"
    };
    conn.execute(end)
        .await
        .map_err(|e| db_error(&e, None, plan.mode))?;
    Ok(())
}

/// The columns of a result, from its first row. SQLite gives a column that is not a table's
/// (`SELECT 1 AS one`, `count(*)`) no declared type; the first row's value then says what it holds.
fn columns_of<R: Row>(row: &R) -> Vec<Column>
where
    usize: sqlx::ColumnIndex<R>,
{
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let declared = c.type_info();
            let type_name = if declared.is_null() {
                row.try_get_raw(i).map_or_else(
                    |_| declared.name().to_owned(),
                    |v| v.type_info().name().to_owned(),
                )
            } else {
                declared.name().to_owned()
            };
            Column {
                name: c.name().to_owned(),
                type_name,
            }
        })
        .collect()
}

/// Runs one statement over the extended protocol: the server refuses a string holding more than
/// one statement, so nothing can ride along past the splitter. Reads stream their rows into the
/// collector; writes report the rows they affected.
async fn pg_statement(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    class: StatementClass,
    collector: &mut Collector,
    columns: &mut Option<Vec<Column>>,
    affected: &mut u64,
) -> Result<(), sqlx::Error> {
    if class == StatementClass::Write {
        *affected = conn
            .execute(sqlx::query(sql).persistent(false))
            .await?
            .rows_affected();
        return Ok(());
    }
    let mut stream = conn.fetch(sqlx::query(sql).persistent(false));
    while let Some(row) = stream.try_next().await? {
        if columns.is_none() {
            *columns = Some(columns_of(&row));
        }
        if !collector.truncated {
            let values = (0..row.len()).map(|c| pg_value(&row, c)).collect();
            collector.push(values);
        }
    }
    Ok(())
}

async fn sqlite_statement(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    collector: &mut Collector,
    columns: &mut Option<Vec<Column>>,
    affected: &mut u64,
) -> Result<(), sqlx::Error> {
    let mut stream = sqlx::raw_sql(sql).fetch_many(&mut *conn);
    while let Some(item) = stream.try_next().await? {
        match item {
            Either::Left(done) => *affected += done.rows_affected(),
            Either::Right(row) => {
                if columns.is_none() {
                    *columns = Some(columns_of(&row));
                }
                if !collector.truncated {
                    let values = (0..row.len()).map(|c| sqlite_value(&row, c)).collect();
                    collector.push(values);
                }
            }
        }
    }
    Ok(())
}

/// One statement's plan.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StatementPlan {
    pub index: usize,
    pub sql: String,
    pub plan: String,
}

/// Plans each statement without running it: `EXPLAIN` (never `ANALYZE`) inside a read-only
/// transaction under the statement timeout on PostgreSQL, `EXPLAIN QUERY PLAN` on a read-only
/// handle on SQLite.
pub async fn explain(
    instance: &Instance,
    secret: Option<&SecretString>,
    database: &str,
    content: &str,
    limits: &LimitsConfig,
    data_dir: &std::path::Path,
) -> Result<Vec<StatementPlan>, ExecError> {
    let dialect = if instance.engine == Engine::Sqlite {
        Dialect::Sqlite
    } else {
        Dialect::Postgres
    };
    let statements = split_statements(content, dialect);
    if statements.is_empty() {
        return Err(error(
            ErrorKind::DbError,
            "there is no statement to explain",
            None,
        ));
    }
    for (i, sql) in statements.iter().enumerate() {
        let keyword = crate::domain::sql::leading_keyword(sql);
        if classify(sql) == StatementClass::Forbidden
            || keyword == "EXPLAIN"
            || keyword == "ANALYZE"
        {
            return Err(error(
                ErrorKind::ForbiddenStatement,
                format!("statement {} ({keyword}) cannot be explained", i + 1),
                Some(i),
            ));
        }
    }
    let mut plans = Vec::with_capacity(statements.len());
    match instance.engine {
        Engine::Postgres => {
            let mut conn = targets::connect_postgres(instance, secret, database, "quorum:explain")
                .await
                .map_err(|e| error(ErrorKind::TargetUnavailable, e.to_string(), None))?;
            let setup = format!("SET statement_timeout = {}", limits.db_call_ms);
            conn.execute(sqlx::raw_sql(&setup))
                .await
                .map_err(|e| db_error(&e, None, Mode::Read))?;
            conn.execute("BEGIN READ ONLY")
                .await
                .map_err(|e| db_error(&e, None, Mode::Read))?;
            for (i, sql) in statements.iter().enumerate() {
                let rows = conn
                    .fetch_all(sqlx::query(&format!("EXPLAIN {sql}")).persistent(false))
                    .await;
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = conn.execute("ROLLBACK").await;
                        return Err(db_error(&e, Some(i), Mode::Read));
                    }
                };
                let lines: Vec<String> = rows
                    .iter()
                    .filter_map(|r| r.try_get::<String, _>(0).ok())
                    .collect();
                plans.push(StatementPlan {
                    index: i,
                    sql: sql.chars().take(500).collect(),
                    plan: lines.join("\n"),
                });
            }
            let _ = conn.execute("ROLLBACK").await;
        }
        Engine::Sqlite => {
            let mut conn = targets::connect_sqlite(instance, data_dir, true)
                .await
                .map_err(|e| error(ErrorKind::TargetUnavailable, e.to_string(), None))?;
            for (i, sql) in statements.iter().enumerate() {
                let rows = conn
                    .fetch_all(sqlx::raw_sql(&format!("EXPLAIN QUERY PLAN {sql}")))
                    .await
                    .map_err(|e| db_error(&e, Some(i), Mode::Read))?;
                let lines: Vec<String> = rows
                    .iter()
                    .filter_map(|r| r.try_get::<String, _>("detail").ok())
                    .collect();
                plans.push(StatementPlan {
                    index: i,
                    sql: sql.chars().take(500).collect(),
                    plan: lines.join("\n"),
                });
            }
        }
        Engine::Mongodb => {
            return Err(error(
                ErrorKind::Unsupported,
                "MongoDB has no SQL plan to explain",
                None,
            ));
        }
    }
    Ok(plans)
}

/// Integers beyond ±2^53 do not survive a JavaScript number; those travel as strings.
fn exact_integer(v: i64) -> Value {
    const SAFE: i64 = (1 << 53) - 1;
    if (-SAFE..=SAFE).contains(&v) {
        Value::from(v)
    } else {
        Value::String(v.to_string())
    }
}

/// Writes one PostgreSQL value as JSON text, exactly as [`pg_value`] would make it. The common
/// scalar types (the bulk of the rows a script reads) go straight from the driver's bytes to the
/// text, with no `Value` and no per-cell type-name allocation; the rest go through [`pg_value`].
fn pg_write(row: &sqlx::postgres::PgRow, i: usize, out: &mut Vec<u8>) -> serde_json::Result<()> {
    use sqlx::{Decode, Postgres};
    let Ok(raw) = row.try_get_raw(i) else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    if raw.is_null() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    // sqlx names PostgreSQL's built-in types in capitals.
    let written = match raw.type_info().name() {
        "BOOL" => {
            <bool as Decode<Postgres>>::decode(raw).map(|v| serde_json::to_writer(&mut *out, &v))
        }
        "INT2" => {
            <i16 as Decode<Postgres>>::decode(raw).map(|v| serde_json::to_writer(&mut *out, &v))
        }
        "INT4" => {
            <i32 as Decode<Postgres>>::decode(raw).map(|v| serde_json::to_writer(&mut *out, &v))
        }
        "INT8" => <i64 as Decode<Postgres>>::decode(raw)
            .map(|v| serde_json::to_writer(&mut *out, &exact_integer(v))),
        "FLOAT8" => <f64 as Decode<Postgres>>::decode(raw).map(|f| {
            if f.is_finite() {
                serde_json::to_writer(&mut *out, &f)
            } else {
                serde_json::to_writer(&mut *out, &f.to_string())
            }
        }),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => {
            <&str as Decode<Postgres>>::decode(raw).map(|v| serde_json::to_writer(&mut *out, v))
        }
        _ => return serde_json::to_writer(out, &pg_value(row, i)),
    };
    match written {
        Ok(result) => result,
        // What pg_value makes of a value it cannot decode.
        Err(_) => serde_json::to_writer(out, &pg_value(row, i)),
    }
}

fn sqlite_write(
    row: &sqlx::sqlite::SqliteRow,
    i: usize,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    serde_json::to_writer(out, &sqlite_value(row, i))
}

/// One PostgreSQL value as JSON: NULL → null, integers and floats as numbers, NUMERIC as a string
/// (exact), bytea as base64, instants as ISO 8601.
fn pg_value(row: &sqlx::postgres::PgRow, i: usize) -> Value {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
    let Ok(raw) = row.try_get_raw(i) else {
        return Value::Null;
    };
    if raw.is_null() {
        return Value::Null;
    }
    let ty = raw.type_info().name().to_ascii_uppercase();
    let v: Result<Value, sqlx::Error> = match ty.as_str() {
        "BOOL" => row.try_get::<bool, _>(i).map(Value::from),
        "INT2" => row.try_get::<i16, _>(i).map(Value::from),
        "INT4" => row.try_get::<i32, _>(i).map(Value::from),
        "INT8" => row.try_get::<i64, _>(i).map(exact_integer),
        "OID" => row
            .try_get::<sqlx::postgres::types::Oid, _>(i)
            .map(|o| Value::from(o.0)),
        "FLOAT4" => row.try_get::<f32, _>(i).map(|f| json!(f)),
        "FLOAT8" => row.try_get::<f64, _>(i).map(|f| {
            if f.is_finite() {
                json!(f)
            } else {
                Value::String(f.to_string())
            }
        }),
        // Exact, without the trailing zeros of PostgreSQL's internal base-10000 scale.
        "NUMERIC" => row
            .try_get::<sqlx::types::BigDecimal, _>(i)
            .map(|d| Value::String(d.normalized().to_string())),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" | "UNKNOWN" => {
            row.try_get::<String, _>(i).map(Value::from)
        }
        "UUID" => row
            .try_get::<uuid::Uuid, _>(i)
            .map(|u| Value::String(u.to_string())),
        "JSON" | "JSONB" => row.try_get::<Value, _>(i),
        "TIMESTAMPTZ" => row
            .try_get::<DateTime<Utc>, _>(i)
            .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))),
        "TIMESTAMP" => row
            .try_get::<NaiveDateTime, _>(i)
            .map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())),
        "DATE" => row
            .try_get::<NaiveDate, _>(i)
            .map(|d| Value::String(d.to_string())),
        "TIME" => row
            .try_get::<NaiveTime, _>(i)
            .map(|t| Value::String(t.to_string())),
        "BYTEA" => row
            .try_get::<Vec<u8>, _>(i)
            .map(|b| Value::String(base64::engine::general_purpose::STANDARD.encode(b))),
        "TEXT[]" | "VARCHAR[]" => row.try_get::<Vec<String>, _>(i).map(Value::from),
        "INT4[]" => row.try_get::<Vec<i32>, _>(i).map(Value::from),
        "INT8[]" => row.try_get::<Vec<i64>, _>(i).map(Value::from),
        _ => Err(sqlx::Error::Decode(
            format!("no JSON mapping for {ty}").into(),
        )),
    };
    v.unwrap_or_else(|_| Value::String(format!("<{ty} value>")))
}

/// One SQLite value as JSON, by its storage class.
fn sqlite_value(row: &sqlx::sqlite::SqliteRow, i: usize) -> Value {
    let Ok(raw) = row.try_get_raw(i) else {
        return Value::Null;
    };
    if raw.is_null() {
        return Value::Null;
    }
    let class = raw.type_info().name().to_ascii_uppercase();
    let v: Result<Value, sqlx::Error> = match class.as_str() {
        "INTEGER" | "INT" | "BIGINT" | "BOOLEAN" => row.try_get::<i64, _>(i).map(exact_integer),
        "REAL" | "FLOAT" | "DOUBLE" | "NUMERIC" => row.try_get::<f64, _>(i).map(|f| json!(f)),
        "BLOB" => row
            .try_get::<Vec<u8>, _>(i)
            .map(|b| Value::String(base64::engine::general_purpose::STANDARD.encode(b))),
        _ => row.try_get::<String, _>(i).map(Value::from),
    };
    v.unwrap_or_else(|_| Value::String(format!("<{class} value>")))
}

/// Runs a script on a SQL target: the child gets its job while `$open` connects and begins the
/// transaction; `$settle` ends a run that may commit, and any other run is rolled back; then
/// `$release` gets the connection and whether the run and its settling were clean. (A
/// macro: sqlx's executor bounds, written generically, do not survive the `Send` check of the
/// spawned execution.)
macro_rules! run_sql {
    ($plan:expr, $job:expr, $open:expr, |$conn:ident| $settle:expr, $release:expr) => {
        match tokio::join!(crate::sandbox::start(&$job), $open) {
            (running, Err(e)) => {
                running.abandon(&$plan.sandbox);
                Err(e)
            }
            (running, Ok(mut $conn)) => {
                let run =
                    crate::sandbox::finish(running, $job, &mut SqlHandle::new(&mut $conn, $plan))
                        .await;
                let settled = if run.committable() {
                    $settle
                } else {
                    let _ = $conn.execute("ROLLBACK").await;
                    Ok(())
                };
                let clean = run.committable() && settled.is_ok();
                $release($conn, clean);
                Ok((run, settled))
            }
        }
    };
}

/// Runs a script (or a MongoDB query, a mongosh-style expression) in the sandbox: the target's
/// transaction is opened here, every `db.*` call goes through the target's wrapped handle
/// ([`SqlHandle`], [`crate::mongo::MongoHandle`]), and the transaction commits only if the script
/// returned without error and none of its calls failed (even one the script caught).
async fn run_script(plan: &Plan, store: &SharedStore) -> Outcome {
    use quorum_sandbox_protocol as proto;
    let engine = match plan.instance.engine {
        Engine::Postgres => proto::Engine::Postgres,
        Engine::Sqlite => proto::Engine::Sqlite,
        Engine::Mongodb => proto::Engine::Mongodb,
    };
    // Compile the guest (first run only) before the target's transaction and its idle timeout
    // start.
    if let Err(e) = plan.sandbox.module().await {
        let e = error(
            ErrorKind::Unsupported,
            format!("the script sandbox is not available: {e}"),
            None,
        );
        return outcome(Some(e), Vec::new(), Vec::new(), None);
    }
    let job = crate::sandbox::ScriptJob {
        sandbox: &plan.sandbox,
        engine,
        mode: plan.mode,
        kind: if plan.kind == Kind::Script {
            proto::SourceKind::Script
        } else {
            proto::SourceKind::Expression
        },
        source: &plan.content,
        limits: &plan.limits,
        check_only: false,
    };
    // The child gets its job while the target's connection is opened, so the script starts
    // (up to its first call, which waits) in the meantime. If the target cannot be reached
    // the child is stopped and the pool topped up.
    let ran = match plan.instance.engine {
        Engine::Postgres => run_sql!(
            plan,
            job,
            pg_open(plan),
            |conn| pg_settle(plan, store, &mut conn).await,
            |conn, clean| pg_release(plan, conn, clean)
        ),
        Engine::Sqlite => run_sql!(
            plan,
            job,
            sqlite_open(plan),
            |conn| sqlite_settle(plan, &mut conn).await,
            |conn, _clean| drop::<sqlx::SqliteConnection>(conn)
        ),
        Engine::Mongodb => match tokio::join!(
            crate::sandbox::start(&job),
            crate::mongo::MongoHandle::open(
                &plan.mongo_clients,
                &plan.instance,
                plan.secret.as_ref(),
                &plan.database,
                plan.mode,
                plan.limits,
            )
        ) {
            (running, Err(e)) => {
                running.abandon(&plan.sandbox);
                Err(error(ErrorKind::TargetUnavailable, e.to_string(), None))
            }
            (running, Ok(mut handle)) => {
                let atomic = handle.atomic();
                let mut run = crate::sandbox::finish(running, job, &mut handle).await;
                let settled = handle
                    .settle(run.committable())
                    .await
                    .map_err(|m| error(ErrorKind::DbError, m, None));
                if plan.mode == Mode::Write && !atomic {
                    run.report.logs.insert(
                        0,
                        crate::domain::execution::LogLine {
                            level: "warn".to_owned(),
                            message: "this MongoDB server runs no transactions (it is not a replica set or a sharded cluster): each write was applied on its own, and writes made before a failure were kept".to_owned(),
                            at_ms: 0,
                        },
                    );
                }
                Ok((run, settled))
            }
        },
    };
    let (run, settled) = match ran {
        Ok(r) => r,
        Err(e) => return outcome(Some(e), Vec::new(), Vec::new(), None),
    };
    let caught =
        (plan.mode == Mode::Write && run.error.is_none() && run.any_call_failed).then(|| {
            error(
                ErrorKind::DbError,
                "a database call failed (the script caught the error), so nothing was committed",
                None,
            )
        });
    let error = run.error.or(caught).or(settled.err());
    outcome(
        error,
        Vec::new(),
        run.display.into_iter().collect(),
        Some(run.report),
    )
}

/// An outcome whose status follows from its error.
fn outcome(
    error: Option<ExecError>,
    statements: Vec<StatementReport>,
    results: Vec<ResultSet>,
    script: Option<ScriptReport>,
) -> Outcome {
    Outcome {
        status: error
            .as_ref()
            .map_or(ExecStatus::Succeeded, |e| e.kind.status()),
        error,
        statements,
        results,
        script,
    }
}

/// The wrapped handle scripts reach SQL targets through: one statement per call, classified
/// before it is sent (read requests refuse writes, nobody may control the transaction),
/// parameters bound and never interpolated, rows and bytes capped, each call timed out.
pub(crate) struct SqlHandle<'a, C> {
    conn: &'a mut C,
    mode: Mode,
    dialect: Dialect,
    limits: LimitsConfig,
    /// Statements already admitted in this execution: a loop running the same statement is
    /// parsed and classified once (admission depends only on the text, the mode and the dialect,
    /// which do not change).
    admitted: std::collections::HashSet<String>,
}

/// Admitted statements remembered per execution, and the longest one remembered.
const ADMITTED_CACHE: usize = 256;
const ADMITTED_CACHE_SQL: usize = 4096;

impl<'a, C> SqlHandle<'a, C> {
    fn new(conn: &'a mut C, plan: &Plan) -> Self {
        Self::on(conn, plan.instance.engine, plan.mode, plan.limits)
    }

    pub(crate) fn on(conn: &'a mut C, engine: Engine, mode: Mode, limits: LimitsConfig) -> Self {
        let dialect = match engine {
            Engine::Sqlite => Dialect::Sqlite,
            _ => Dialect::Postgres,
        };
        Self {
            conn,
            mode,
            dialect,
            limits,
            admitted: std::collections::HashSet::new(),
        }
    }

    /// The statement, or the reason it may not run.
    fn admit(
        &mut self,
        op: quorum_sandbox_protocol::DbOp,
    ) -> Result<(String, Vec<Value>), crate::sandbox::Reply> {
        use crate::sandbox::Reply;
        use quorum_sandbox_protocol::DbOp;
        let DbOp::Query { sql, params } = op else {
            return Err(Reply::Error {
                message: "this is a SQL instance: use db.query(sql, params)".into(),
                code: None,
            });
        };
        if self.admitted.contains(&sql) {
            return Ok((sql, params));
        }
        self.check(&sql)?;
        if self.admitted.len() < ADMITTED_CACHE && sql.len() <= ADMITTED_CACHE_SQL {
            self.admitted.insert(sql.clone());
        }
        Ok((sql, params))
    }

    /// Refuses anything but one statement this request's mode allows.
    fn check(&self, sql: &str) -> Result<(), crate::sandbox::Reply> {
        use crate::sandbox::Reply;
        use quorum_sandbox_protocol::ErrorKind as K;
        let statements = split_statements(sql, self.dialect);
        if statements.len() != 1 {
            return Err(Reply::Error {
                message: format!(
                    "db.query runs exactly one statement; this holds {}",
                    statements.len()
                ),
                code: None,
            });
        }
        let keyword = crate::domain::sql::leading_keyword(sql);
        match admit(classify(sql), self.mode) {
            Err(Refusal::ReadOnly) => Err(Reply::Fatal {
                kind: K::ReadOnlyViolation,
                message: format!("{keyword} is not allowed in a read request"),
            }),
            Err(Refusal::Forbidden) => Err(Reply::Fatal {
                kind: K::ForbiddenStatement,
                message: format!(
                    "{keyword} is not allowed: the portal runs the whole script in one transaction it controls"
                ),
            }),
            Ok(()) => Ok(()),
        }
    }

    fn timeout(&self) -> Duration {
        // The server-side statement_timeout normally answers first, with its own error.
        Duration::from_millis(u64::from(self.limits.db_call_ms) + 500)
    }

    /// A database error as the script sees it; limits and lost connections end the script.
    fn db_failure(&self, e: &sqlx::Error) -> crate::sandbox::Reply {
        use crate::sandbox::Reply;
        use quorum_sandbox_protocol::ErrorKind as K;
        let err = db_error(e, None, self.mode);
        match err.kind {
            ErrorKind::Timeout => Reply::Fatal {
                kind: K::Timeout,
                message: format!(
                    "a database call ran longer than {} ms and was cancelled",
                    self.limits.db_call_ms
                ),
            },
            ErrorKind::ReadOnlyViolation => Reply::Fatal {
                kind: K::ReadOnlyViolation,
                message: err.message,
            },
            ErrorKind::TargetUnavailable => Reply::Fatal {
                kind: K::DbError,
                message: err.message,
            },
            _ => Reply::Error {
                message: err.message,
                code: err.sqlstate,
            },
        }
    }
}

/// Binds JSON parameters: null, booleans, integers, floats and strings as themselves; anything
/// else as its JSON text.
macro_rules! bind_params {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                Value::Null => q.bind(None::<String>),
                Value::Bool(b) => q.bind(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => q.bind(i),
                    None => q.bind(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => q.bind(s.as_str()),
                other => q.bind(other.to_string()),
            };
        }
        q
    }};
}

/// Streams a statement's rows to the script (through `$sink`, in batches) within the limits, and
/// answers `{rows, rowCount, fields, truncated}`. Statements are prepared once per execution:
/// each execution has a connection of its own while it runs (one kept for a later execution
/// has its prepared statements closed first), so a script that runs the same statement in a
/// loop pays for parsing it once.
macro_rules! sql_call {
    ($self:ident, $op:ident, $sink:ident, $query:expr, $write:path) => {{
        use crate::sandbox::Reply;
        let (sql, params) = match $self.admit($op) {
            Ok(v) => v,
            Err(reply) => return reply,
        };
        let max_rows = $self.limits.max_rows as usize;
        let max_bytes = $self.limits.max_result_bytes;
        let timeout = $self.timeout();
        let db_call_ms = $self.limits.db_call_ms;
        let query = bind_params!($query(&sql), &params);
        let sink = &mut *$sink;
        let work = async {
            let mut fields: Option<Value> = None;
            let mut affected = 0u64;
            let mut count = 0usize;
            let mut bytes = 0u64;
            let mut truncated = false;
            let mut stream = $self.conn.fetch_many(query);
            while let Some(item) = stream.try_next().await? {
                match item {
                    Either::Left(done) => affected += done.rows_affected(),
                    Either::Right(row) => {
                        if fields.is_none() {
                            let cols = columns_of(&row);
                            sink.set_columns(cols.iter().map(|c| c.name.as_str()));
                            fields = Some(json!(cols
                                .iter()
                                .map(|c| json!({"name": c.name, "type": c.type_name}))
                                .collect::<Vec<_>>()));
                        }
                        if truncated {
                            continue;
                        }
                        if count >= max_rows {
                            truncated = true;
                            continue;
                        }
                        // Written straight to JSON text: no map per row, no key per value.
                        let write = |out: &mut Vec<u8>| -> serde_json::Result<()> {
                            for i in 0..row.len() {
                                if i > 0 {
                                    out.push(b',');
                                }
                                $write(&row, i, &mut *out)?;
                            }
                            Ok(())
                        };
                        match sink.push(max_bytes - bytes, write).await {
                            Some(size) => {
                                bytes += size;
                                count += 1;
                            }
                            None => truncated = true,
                        }
                    }
                }
            }
            Ok::<_, sqlx::Error>((count, fields, affected, truncated))
        };
        match tokio::time::timeout(timeout, work).await {
            Err(_) => Reply::Fatal {
                kind: quorum_sandbox_protocol::ErrorKind::Timeout,
                message: format!("a database call ran longer than {db_call_ms} ms and was cancelled"),
            },
            Ok(Err(e)) => $self.db_failure(&e),
            Ok(Ok((returned, fields, affected, truncated))) => {
                let count = if fields.is_some() { returned as u64 } else { affected };
                Reply::Ok {
                    rows: count,
                    truncated,
                    value: json!({
                        "rows": sink.finish().await,
                        "rowCount": count,
                        "fields": fields.unwrap_or_else(|| json!([])),
                        "truncated": truncated,
                    }),
                }
            }
        }
    }};
}

impl crate::sandbox::Handle for SqlHandle<'_, sqlx::PgConnection> {
    async fn call(
        &mut self,
        op: quorum_sandbox_protocol::DbOp,
        rows: &mut crate::sandbox::RowSink<'_>,
    ) -> crate::sandbox::Reply {
        sql_call!(self, op, rows, sqlx::query, pg_write)
    }
}

impl crate::sandbox::Handle for SqlHandle<'_, sqlx::SqliteConnection> {
    async fn call(
        &mut self,
        op: quorum_sandbox_protocol::DbOp,
        rows: &mut crate::sandbox::RowSink<'_>,
    ) -> crate::sandbox::Reply {
        sql_call!(self, op, rows, sqlx::query, sqlite_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_integers_stay_exact() {
        assert_eq!(exact_integer(42), json!(42));
        assert_eq!(
            exact_integer(9_007_199_254_740_991),
            json!(9_007_199_254_740_991_i64)
        );
        assert_eq!(
            exact_integer(9_007_199_254_740_993),
            json!("9007199254740993")
        );
        assert_eq!(exact_integer(i64::MIN), json!("-9223372036854775808"));
    }
}
