//! Connections to target databases (the instances requests run against), made with credentials
//! opened from their sealed form only for the duration of the connection attempt.
//!
//! This module answers "can we reach it, what version, which databases"; running approved work
//! is the executor's job and builds on the same connectors.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::domain::instance::{Engine, TlsMode};
use crate::store::Instance;

/// Connecting gives up after this long (a black-holed host must not hang a request).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot reach the instance: {0}")]
    Unavailable(String),
    #[error("the instance is misconfigured: {0}")]
    Misconfigured(String),
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub server_version: String,
    pub latency: Duration,
}

fn tls(mode: TlsMode) -> PgSslMode {
    match mode {
        TlsMode::Disable => PgSslMode::Disable,
        TlsMode::Prefer => PgSslMode::Prefer,
        TlsMode::Require => PgSslMode::Require,
        TlsMode::VerifyCa => PgSslMode::VerifyCa,
        TlsMode::VerifyFull => PgSslMode::VerifyFull,
    }
}

/// Connects to a PostgreSQL instance's `database` as its configured user.
pub async fn connect_postgres(
    instance: &Instance,
    secret: Option<&SecretString>,
    database: &str,
    application_name: &str,
) -> Result<PgConnection, TargetError> {
    let host = instance
        .host
        .as_deref()
        .ok_or_else(|| TargetError::Misconfigured("no host".into()))?;
    let user = instance
        .username
        .as_deref()
        .ok_or_else(|| TargetError::Misconfigured("no user".into()))?;
    let mut options = PgConnectOptions::new()
        .host(host)
        .port(instance.port.unwrap_or(5432))
        .username(user)
        .database(database)
        .application_name(application_name)
        .ssl_mode(tls(instance.tls_mode));
    if let Some(password) = secret {
        options = options.password(password.expose_secret());
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(TargetError::Unavailable(describe(&e))),
        Err(_) => Err(TargetError::Unavailable(format!(
            "no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Which kept connections (or MongoDB clients) an execution may take: the same instance,
/// database and credentials (a changed URI, host, user, TLS mode or secret never reaches an old
/// connection).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdleKey([u8; 32]);

impl IdleKey {
    pub fn new(instance: &Instance, secret: Option<&SecretString>, database: &str) -> Self {
        Self::from_parts(&[
            instance.id.0.as_bytes(),
            instance.uri.as_deref().unwrap_or("").as_bytes(),
            instance.host.as_deref().unwrap_or("").as_bytes(),
            &instance.port.unwrap_or(5432).to_le_bytes(),
            instance.username.as_deref().unwrap_or("").as_bytes(),
            format!("{:?}", instance.tls_mode).as_bytes(),
            database.as_bytes(),
            secret.map_or("", |s| s.expose_secret()).as_bytes(),
        ])
    }

    /// A key over `parts` (each length-prefixed, so no two lists of parts collide).
    pub fn from_parts(parts: &[&[u8]]) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in parts {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Self(h.finalize().into())
    }
}

/// PostgreSQL connections kept open between executions (`executor.target_idle` per instance
/// and database, for `executor.target_idle_secs`), so an execution does not pay for a new
/// backend and its authentication. Each is used by one execution at a time and comes back
/// only after a clean end (its transaction committed or rolled back, no call cut off by a
/// timeout), reset so that nothing of that execution's session reaches the next: sqlx's
/// statement cache is closed, then `DISCARD ALL` drops session settings, temporary tables,
/// prepared statements, cursors, `LISTEN`s and session advisory locks. Any failure drops it.
/// While any are kept, a background task closes those idle for too long.
#[derive(Debug)]
pub struct IdleConnections {
    per_key: usize,
    max_idle: Duration,
    idle: std::sync::Mutex<Kept>,
    me: std::sync::Weak<IdleConnections>,
}

#[derive(Debug, Default)]
struct Kept {
    by_key: std::collections::HashMap<IdleKey, Vec<(PgConnection, Instant)>>,
    /// The task closing stale connections is running.
    sweeping: bool,
}

impl Kept {
    /// Closes every connection idle for `max_idle` or longer.
    fn close_stale(&mut self, max_idle: Duration) {
        for kept in self.by_key.values_mut() {
            let (fresh, stale): (Vec<_>, Vec<_>) = std::mem::take(kept)
                .into_iter()
                .partition(|(_, since)| since.elapsed() < max_idle);
            *kept = fresh;
            stale.into_iter().for_each(|(c, _)| close(c));
        }
        self.by_key.retain(|_, kept| !kept.is_empty());
    }
}

impl IdleConnections {
    pub fn new(per_key: usize, max_idle: Duration) -> std::sync::Arc<Self> {
        std::sync::Arc::new_cyclic(|me| Self {
            per_key,
            max_idle,
            idle: std::sync::Mutex::default(),
            me: me.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently returned connection for `key` that has not been idle too long.
    pub fn take(&self, key: &IdleKey) -> Option<PgConnection> {
        let mut idle = self.lock();
        let kept = idle.by_key.get_mut(key)?;
        let found = loop {
            match kept.pop() {
                Some((conn, since)) if since.elapsed() < self.max_idle => break Some(conn),
                Some((conn, _)) => close(conn),
                None => break None,
            }
        };
        if kept.is_empty() {
            idle.by_key.remove(key);
        }
        found
    }

    /// Resets `conn` and keeps it for `key`, unless the reset fails or enough are kept.
    /// `conn` must be outside any transaction.
    pub async fn give_back(&self, key: IdleKey, mut conn: PgConnection) {
        if self.per_key == 0 {
            return close(conn);
        }
        let reset = async {
            conn.clear_cached_statements().await?;
            sqlx::Executor::execute(&mut conn, "DISCARD ALL").await
        };
        if !matches!(
            tokio::time::timeout(CONNECT_TIMEOUT, reset).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let mut idle = self.lock();
        let kept = idle.by_key.entry(key).or_default();
        if kept.len() >= self.per_key {
            return close(conn);
        }
        kept.push((conn, Instant::now()));
        if !idle.sweeping {
            idle.sweeping = true;
            let me = self.me.clone();
            let every = self.max_idle / 4;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(me) = me.upgrade() else { return };
                    let mut idle = me.lock();
                    idle.close_stale(me.max_idle);
                    if idle.by_key.is_empty() {
                        idle.sweeping = false;
                        return;
                    }
                }
            });
        }
    }
}

/// Ends a connection politely (a `Terminate` message) without waiting for it.
pub fn close(conn: PgConnection) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
    });
}

/// The file of a SQLite instance: always inside the data directory.
pub fn sqlite_file(instance: &Instance, data_dir: &Path) -> Result<PathBuf, TargetError> {
    let rel = instance
        .path
        .as_deref()
        .ok_or_else(|| TargetError::Misconfigured("no path".into()))?;
    if !crate::domain::instance::valid_sqlite_path(rel) {
        return Err(TargetError::Misconfigured(
            "the path must stay inside the data directory".into(),
        ));
    }
    Ok(data_dir.join(rel))
}

/// Opens a SQLite instance; `read_only` opens the file read-only at the driver level.
pub async fn connect_sqlite(
    instance: &Instance,
    data_dir: &Path,
    read_only: bool,
) -> Result<SqliteConnection, TargetError> {
    let file = sqlite_file(instance, data_dir)?;
    if !file.is_file() {
        return Err(TargetError::Unavailable(format!(
            "{} does not exist",
            file.display()
        )));
    }
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| TargetError::Misconfigured(e.to_string()))?
        .filename(&file)
        .read_only(read_only)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(5));
    SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| TargetError::Unavailable(describe(&e)))
}

/// Connects, asks for the server version, and reports the round trip.
pub async fn probe(
    instance: &Instance,
    secret: Option<&SecretString>,
    data_dir: &Path,
) -> Result<Probe, TargetError> {
    let started = Instant::now();
    let server_version: String = match instance.engine {
        Engine::Postgres => {
            let mut conn = connect_postgres(instance, secret, "postgres", "quorum:probe").await?;
            let v: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| TargetError::Unavailable(describe(&e)))?;
            let _ = conn.close().await;
            format!("PostgreSQL {v}")
        }
        Engine::Sqlite => {
            let mut conn = connect_sqlite(instance, data_dir, true).await?;
            let v: String = sqlx::query_scalar("SELECT sqlite_version()")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| TargetError::Unavailable(describe(&e)))?;
            let _ = conn.close().await;
            format!("SQLite {v}")
        }
        Engine::Mongodb => crate::mongo::probe(instance, secret).await?,
    };
    Ok(Probe {
        server_version,
        latency: started.elapsed(),
    })
}

/// The databases a request may name on this instance.
pub async fn list_databases(
    instance: &Instance,
    secret: Option<&SecretString>,
    data_dir: &Path,
) -> Result<Vec<String>, TargetError> {
    match instance.engine {
        Engine::Postgres => {
            let mut conn = connect_postgres(instance, secret, "postgres", "quorum:sync").await?;
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate \
                 AND has_database_privilege(datname, 'CONNECT') ORDER BY datname",
            )
            .fetch_all(&mut conn)
            .await
            .map_err(|e| TargetError::Unavailable(describe(&e)))?;
            let _ = conn.close().await;
            Ok(names)
        }
        Engine::Sqlite => {
            connect_sqlite(instance, data_dir, true)
                .await?
                .close()
                .await
                .map_err(|e| TargetError::Unavailable(describe(&e)))?;
            Ok(vec![String::from("main")])
        }
        Engine::Mongodb => crate::mongo::list_databases(instance, secret).await,
    }
}

/// A driver error as one line for people: the server's message and SQLSTATE when there is one.
pub fn describe(e: &sqlx::Error) -> String {
    let text = match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_owned(),
        },
        sqlx::Error::Io(io) => format!("network error: {io}"),
        sqlx::Error::Tls(t) => format!("TLS error: {t}"),
        other => other.to_string(),
    };
    text.chars().filter(|c| !c.is_control()).take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::IdleKey;

    #[test]
    fn idle_keys_differ_whenever_a_part_does() {
        let key = |parts: &[&[u8]]| IdleKey::from_parts(parts);
        assert_eq!(key(&[b"db", b"secret"]), key(&[b"db", b"secret"]));
        assert_ne!(key(&[b"db", b"secret"]), key(&[b"db", b"secreT"]));
        // Parts are length-prefixed: moving a byte from one part to the next is another key.
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_ne!(key(&[b"ab", b""]), key(&[b"ab"]));
    }
}
