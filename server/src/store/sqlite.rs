//! SQLite store: the embedded default, one replica. A WAL-mode file under the data directory.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::sql::impl_store;
use super::{Backend, StoreResult};
use crate::clock::SharedClock;
use crate::config::DatabaseConfig;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    clock: SharedClock,
    /// Record Slack deliveries for audited events (Slack is configured).
    outbox: bool,
    /// SQLite allows one writer at a time; taking this lock before `BEGIN` means a transaction
    /// that reads then writes never meets SQLITE_BUSY half-way through.
    writer: Arc<Mutex<()>>,
}

/// A write transaction holding the writer lock until it ends.
pub(super) struct WriteTx {
    pub(super) tx: Transaction<'static, Sqlite>,
    _writer: OwnedMutexGuard<()>,
}

impl WriteTx {
    pub(super) async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl SqliteStore {
    const BACKEND: Backend = Backend::Sqlite;
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
    /// Appends are already serialised by the writer lock.
    const AUDIT_LOCK_SQL: &'static str = "SELECT 1";

    pub async fn connect(
        url: &str,
        config: &DatabaseConfig,
        clock: SharedClock,
    ) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| sqlx::Error::Configuration(Box::new(e)))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            clock,
            outbox: false,
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// Records a Slack delivery for every audited event Slack hears of.
    pub fn with_outbox(mut self, on: bool) -> Self {
        self.outbox = on;
        self
    }

    async fn write_tx(&self) -> StoreResult<WriteTx> {
        let guard = self.writer.clone().lock_owned().await;
        let tx = self.pool.begin().await?;
        Ok(WriteTx { tx, _writer: guard })
    }
}

impl_store!(SqliteStore, Sqlite);
