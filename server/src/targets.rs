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
