//! PostgreSQL store: shared by any number of portal replicas.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::sql::impl_store;
use super::{Backend, StoreResult};
use crate::clock::SharedClock;
use crate::config::DatabaseConfig;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    clock: SharedClock,
    /// Record Slack deliveries for audited events (Slack is configured).
    outbox: bool,
}

pub(super) struct WriteTx {
    pub(super) tx: Transaction<'static, Postgres>,
}

impl WriteTx {
    pub(super) async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl PgStore {
    const BACKEND: Backend = Backend::Postgres;
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
    /// Serialises audit appends across replicas for the rest of the transaction, so each event
    /// links to the one committed before it. The key is arbitrary but fixed ("QRM-AUDT").
    const AUDIT_LOCK_SQL: &'static str = "SELECT pg_advisory_xact_lock(5855053514573104212)";

    pub async fn connect(
        url: &str,
        config: &DatabaseConfig,
        clock: SharedClock,
    ) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
            .connect(url)
            .await?;
        Ok(Self {
            pool,
            clock,
            outbox: false,
        })
    }

    /// Records a Slack delivery for every audited event Slack hears of.
    pub fn with_outbox(mut self, on: bool) -> Self {
        self.outbox = on;
        self
    }

    async fn write_tx(&self) -> StoreResult<WriteTx> {
        Ok(WriteTx {
            tx: self.pool.begin().await?,
        })
    }
}

impl_store!(PgStore, Postgres);
