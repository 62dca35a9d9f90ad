//! Quorum portal server: HTTP API, authentication, RBAC with PODs, audit log and the store.
//!
//! `run` starts the server on a listener the caller provides, so the integration tests start the
//! real thing on port 0; `main.rs` only parses arguments and calls into here.

pub mod auth;
pub mod bench;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod domain;
pub mod exec;
pub mod http;
pub mod mongo;
pub mod notify;
pub mod sandbox;
pub mod secrets;
pub mod store;
pub mod targets;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use tokio::net::TcpListener;

use crate::auth::{PasswordHasher, TokenKeys};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::http::AppState;
use crate::store::SharedStore;

/// Connects to the configured store and applies pending migrations.
pub async fn open_store(config: &Config, clock: SharedClock) -> anyhow::Result<SharedStore> {
    let store = store::connect(config, clock)
        .await
        .context("connecting to the store")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// A key kept in `<data_dir>/<file>` (base64), generated with `len` random bytes on first use.
/// Used when the configuration names no key: fine for one replica; replicas share explicit keys.
fn persisted_key(data_dir: &Path, file: &str, len: usize) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join(file);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let key = base64::engine::general_purpose::STANDARD
            .decode(existing.trim())
            .with_context(|| format!("{} is not valid base64", path.display()))?;
        anyhow::ensure!(
            key.len() >= len,
            "{} holds a key shorter than {len} bytes",
            path.display()
        );
        return Ok(key);
    }
    let mut key = vec![0u8; len];
    rand::rngs::OsRng.fill_bytes(&mut key);
    write_private(
        &path,
        &base64::engine::general_purpose::STANDARD.encode(&key),
    )?;
    tracing::info!(path = %path.display(), "generated a key");
    Ok(key)
}

/// The JWT signing key: configured, or persisted in the data directory.
fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if !config.auth.jwt_secret.is_empty() {
        return Ok(config.auth.jwt_secret.expose().as_bytes().to_vec());
    }
    persisted_key(&config.data_dir, "jwt.key", 48)
}

/// Where the generated master key lives when the configuration names none.
pub const MASTER_KEY_FILE: &str = "master.key";

/// The master key sealing instance credentials: configured, or persisted in the data directory.
pub fn secret_box(config: &Config) -> anyhow::Result<secrets::SecretBox> {
    let sealed = if config.secrets.master_key.is_empty() {
        secrets::SecretBox::from_bytes(&persisted_key(&config.data_dir, MASTER_KEY_FILE, 32)?)
    } else {
        secrets::SecretBox::from_base64(config.secrets.master_key.expose())
    };
    sealed.map_err(|e| anyhow::anyhow!("master key: {e}"))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// Builds the shared application state over an open store.
pub fn build_state(
    config: Config,
    store: SharedStore,
    clock: SharedClock,
) -> anyhow::Result<AppState> {
    let secret = jwt_secret(&config)?;
    let a = &config.auth;
    let tokens = TokenKeys::new(
        &secret,
        &a.jwt_issuer,
        &a.jwt_audience,
        a.access_ttl_secs,
        a.leeway_secs,
    );
    Ok(AppState {
        secrets: Arc::new(secret_box(&config)?),
        process: uuid::Uuid::new_v4().to_string().into(),
        executions: Arc::new(tokio::sync::Semaphore::new(
            match config.executor.max_concurrent {
                0 => std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2),
                n => n,
            },
        )),
        slot_freed: Arc::default(),
        sandbox: sandbox::Sandbox::new(&config),
        target_idle: targets::IdleConnections::new(
            config.executor.target_idle,
            Duration::from_secs(config.executor.target_idle_secs),
        ),
        mongo_clients: mongo::Clients::new(
            config.executor.target_idle > 0,
            Duration::from_secs(config.executor.target_idle_secs),
        ),
        slack: notify::SlackClient::new(&config.slack),
        hasher: PasswordHasher::new(a.hash_concurrency)?,
        tokens: Arc::new(tokens),
        config: Arc::new(config),
        store,
        clock,
        metrics: Arc::default(),
    })
}

/// Runs the portal until `shutdown` resolves, then lets in-flight requests finish within the
/// configured grace period.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_clock(config, listener, shutdown, Arc::new(SystemClock)).await
}

/// `run` with the clock supplied (tests move time with `clock::OffsetClock`).
pub async fn run_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: SharedClock,
) -> anyhow::Result<()> {
    let store = open_store(&config, clock.clone()).await?;
    if config.demo {
        demo::seed(
            &store,
            &PasswordHasher::new(config.auth.hash_concurrency)?,
            &config.data_dir,
            &clock,
        )
        .await?;
    }
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let state = build_state(config, store.clone(), clock)?;
    match exec::reconcile(&state).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            settled = n,
            "settled executions left running by a stopped process"
        ),
        Err(e) => tracing::warn!(error = %e, "settling executions left running failed"),
    }
    let preparing = sandbox::Sandbox::prepare(&state.sandbox);
    let (app, limiters) = http::router(state.clone());
    let (stop_slack, slack_stop) = tokio::sync::watch::channel(false);
    let slack = notify::spawn(&state, slack_stop);
    let maintenance = tokio::spawn(maintain(state, limiters));

    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        notify.notify_one();
    });
    let result = tokio::select! {
        r = server => r.context("HTTP server failed"),
        () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining connections");
            Ok(())
        }
    };
    maintenance.abort();
    preparing.abort();
    // The Slack worker finishes the delivery in flight (its calls time out within 15 s), so what
    // Slack accepted is recorded as sent and not sent again after a restart.
    let _ = stop_slack.send(true);
    if let Some(worker) = slack
        && tokio::time::timeout(Duration::from_secs(20), worker)
            .await
            .is_err()
    {
        tracing::warn!("the Slack worker did not stop in time");
    }
    result
}

/// Background upkeep, once a minute: prune rate-limit buckets and expire requests whose time ran
/// out; every 10 minutes purge expired token records; every 30 minutes (and at start) refresh
/// every instance's database list.
async fn maintain(state: AppState, limiters: http::Limiters) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.slot_freed.notified() => {
                // An execution ended: only start what waited for its slot.
                if let Err(e) = http::requests::expire_due(&state).await {
                    tracing::warn!(error = %e, "starting waiting requests failed");
                }
                continue;
            }
        }
        limiters.prune();
        state.mongo_clients.drop_idle();
        if n.is_multiple_of(10) {
            match state.store.purge_expired().await {
                Ok(removed) if removed > 0 => {
                    tracing::info!(removed, "purged expired token records")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging expired token records failed"),
            }
        }
        if n.is_multiple_of(30) {
            sync_all_instances(&state).await;
        }
        if let Err(e) = exec::reconcile(&state).await {
            tracing::warn!(error = %e, "settling stale executions failed");
        }
        match http::requests::expire_due(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired requests"),
            Err(e) => tracing::warn!(error = %e, "expiring requests failed"),
        }
        n += 1;
    }
}

async fn sync_all_instances(state: &AppState) {
    let instances = match state.store.list_instances(None, 1000, 0).await {
        Ok(page) => page.items,
        Err(e) => {
            return tracing::warn!(error = %e, "listing instances for the database sync failed");
        }
    };
    for i in &instances {
        if let Err(e) = http::instances::sync(state, i, None).await {
            tracing::warn!(instance = %i.name, code = e.code, error = %e.message, "database sync failed");
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
