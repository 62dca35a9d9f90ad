//! `quorum bench-sandbox`: what running a script in the sandbox costs on this host, measured
//! beside the same database work done in-process with sqlx, against a PostgreSQL the caller
//! names. `cargo xtask bench` runs it against a throwaway cluster.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor, Row};

use crate::config::{Config, LimitsConfig};
use crate::domain::instance::Engine;
use crate::domain::workflow::Mode;
use crate::exec::SqlHandle;
use crate::sandbox::{Handle, Reply, RowSink, Sandbox, ScriptJob, ScriptRun};
use crate::targets::{IdleConnections, IdleKey};
use quorum_sandbox_protocol as proto;

const SELECT_1: &str = "return (await db.query('SELECT 1')).rows;";
const CALLS_100: &str = "for (let i = 0; i < 100; i++) await db.query('SELECT 1');\nreturn 100;";
const SUM_100K_SQL: &str = "SELECT g AS n FROM generate_series(1, 100000) g";
/// Also logs how long its loop over the rows took (`Date.now()`, whole milliseconds): work that
/// can only start once the call has returned, and that the in-process run has no part of.
const SUM_100K: &str = "const r = await db.query('SELECT g AS n FROM generate_series(1, 100000) g');\nconst t = Date.now();\nlet s = 0;\nfor (const row of r.rows) s += row.n;\nconsole.log(Date.now() - t);\nreturn s;";

/// What an execution sends on its connection before the script's first call, in one round trip.
const SETUP: &str = "SET application_name = 'quorum:bench'; SET statement_timeout = 30000; SET idle_in_transaction_session_timeout = 60000; BEGIN READ ONLY";

/// Median and 90th percentile of a sample, in milliseconds.
fn summary(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (at(0.5), at(0.9))
}

/// A read script on PostgreSQL.
fn read_job<'a>(sandbox: &'a Sandbox, limits: &'a LimitsConfig, source: &'a str) -> ScriptJob<'a> {
    ScriptJob {
        sandbox,
        engine: proto::Engine::Postgres,
        mode: Mode::Read,
        kind: proto::SourceKind::Script,
        source,
        limits,
        check_only: false,
    }
}

async fn script(
    sandbox: &Sandbox,
    conn: &mut PgConnection,
    limits: &LimitsConfig,
    source: &str,
) -> anyhow::Result<ScriptRun> {
    let job = read_job(sandbox, limits, source);
    let run = crate::sandbox::run_script(
        job,
        &mut SqlHandle::on(conn, Engine::Postgres, Mode::Read, *limits),
    )
    .await;
    if let Some(e) = &run.error {
        anyhow::bail!("the benchmark script failed: {}", e.message);
    }
    Ok(run)
}

/// Before a timed run: lets the pool replace the child taken last. In the 100-call and
/// 100 000-row rows every run, in-process ones included, follows one, so none of them gains from
/// running straight after another (warm caches, memory the allocator still holds).
async fn pause() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// CPU time used so far by this process (every thread) and, when it runs on this host, by the
/// PostgreSQL backend serving the benchmark's connection.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    portal: Duration,
    postgres: Option<Duration>,
}

impl Cpu {
    fn now(backend: Option<u32>) -> Self {
        Self {
            portal: own_cpu(),
            postgres: backend.and_then(process_cpu),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            portal: self.portal.saturating_sub(before.portal),
            postgres: self
                .postgres
                .zip(before.postgres)
                .map(|(now, then)| now.saturating_sub(then)),
        }
    }
}

/// `getrusage(who)`: this process (`RUSAGE_SELF`) or its waited-for children
/// (`RUSAGE_CHILDREN`).
fn rusage(who: libc::c_int) -> Option<libc::rusage> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    #[expect(unsafe_code, reason = "getrusage fills the struct it is given")]
    // SAFETY: `usage` is valid and writable; it is read only when the call succeeded.
    unsafe {
        (libc::getrusage(who, usage.as_mut_ptr()) == 0).then(|| usage.assume_init())
    }
}

fn own_cpu() -> Duration {
    let Some(usage) = rusage(libc::RUSAGE_SELF) else {
        return Duration::ZERO;
    };
    let d = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    d(usage.ru_utime) + d(usage.ru_stime)
}

/// User and system time of process `pid` on this host, if it is a PostgreSQL process (a server
/// elsewhere may have an unrelated process of that number here). The kernel counts in clock
/// ticks (10 ms where USER_HZ is 100), so only a sum over many runs says much.
fn process_cpu(pid: u32) -> Option<Duration> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim() != "postgres" {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command in parentheses: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    #[expect(unsafe_code, reason = "sysconf reads a constant of the system")]
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0)?;
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// CPU summed over a number of runs.
#[derive(Debug, Default)]
struct CpuTotal {
    runs: u32,
    portal: Duration,
    /// `None` once a run could not read the backend's time.
    postgres: Option<Duration>,
    child: Duration,
}

impl CpuTotal {
    fn add(&mut self, cpu: Cpu, child: Duration) {
        self.postgres = match (self.runs, cpu.postgres) {
            (0, pg) => pg,
            (_, Some(pg)) => self.postgres.map(|sum| sum + pg),
            (_, None) => None,
        };
        self.runs += 1;
        self.portal += cpu.portal;
        self.child += child;
    }

    /// "PostgreSQL a + portal b (+ child c, for runs in a child) = d ms" per run, and d.
    fn per_run(&self) -> (String, f64) {
        let runs = f64::from(self.runs.max(1));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0 / runs;
        let mut parts = Vec::new();
        let mut sum = 0.0;
        if let Some(pg) = self.postgres {
            parts.push(format!("PostgreSQL {:.1}", ms(pg)));
            sum += ms(pg);
        }
        parts.push(format!("portal {:.1}", ms(self.portal)));
        sum += ms(self.portal);
        if self.child > Duration::ZERO {
            parts.push(format!("child {:.1}", ms(self.child)));
            sum += ms(self.child);
        }
        (format!("{} = {sum:.1} ms", parts.join(" + ")), sum)
    }
}

/// One timed run: how long it took and the CPU it used, beside what the script left.
struct Timed {
    took: Duration,
    run: ScriptRun,
    cpu: Cpu,
}

/// What every timed script run of a row shares: the children to run it in (forked on demand,
/// pre-started) and what it is measured with.
struct Runs<'a> {
    forked: &'a Sandbox,
    prestarted: &'a Sandbox,
    limits: &'a LimitsConfig,
    /// PostgreSQL's backend serving the connection, whose CPU time is read (see [`Cpu`]).
    backend: Option<u32>,
}

impl Runs<'_> {
    /// `source` in `sandbox` after a [`pause`], timed.
    async fn timed(
        &self,
        sandbox: &Sandbox,
        conn: &mut PgConnection,
        source: &str,
    ) -> anyhow::Result<Timed> {
        pause().await;
        let before = Cpu::now(self.backend);
        let t = Instant::now();
        let run = script(sandbox, conn, self.limits, source).await?;
        let took = t.elapsed();
        Ok(Timed {
            took,
            run,
            cpu: Cpu::now(self.backend).since(before),
        })
    }

    /// `source` in a child forked on demand and in a pre-started one, each timed after a pause,
    /// as [forked, pre-started]. In odd rounds the pre-started child goes first, so neither kind
    /// of child always runs straight after the other.
    async fn both(
        &self,
        round: usize,
        conn: &mut PgConnection,
        source: &str,
    ) -> anyhow::Result<[Timed; 2]> {
        if round % 2 == 1 {
            let prestarted = self.timed(self.prestarted, conn, source).await?;
            let forked = self.timed(self.forked, conn, source).await?;
            Ok([forked, prestarted])
        } else {
            let forked = self.timed(self.forked, conn, source).await?;
            let prestarted = self.timed(self.prestarted, conn, source).await?;
            Ok([forked, prestarted])
        }
    }
}

fn check_sum(run: &ScriptRun, on: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        run.report.result == Some(serde_json::json!(5_000_050_000_i64)),
        "sandbox sum {:?} on {on}",
        run.report.result
    );
    Ok(())
}

/// One `SELECT 1` script as an execution runs it: the child starts the script while the
/// connection is opened (or a kept one taken, with `idle`) and set up (application name,
/// timeouts and `BEGIN` in one round trip). Afterwards, untimed as an execution does it in the
/// background, the read transaction is rolled back and a kept connection goes back to `idle`;
/// a new one is closed. Also says whether a kept connection was taken.
async fn as_executed(
    sandbox: &Sandbox,
    options: &PgConnectOptions,
    idle: Option<&IdleConnections>,
    limits: &LimitsConfig,
) -> anyhow::Result<(Duration, bool)> {
    let key = IdleKey::from_parts(&[b"bench"]);
    let t = Instant::now();
    let job = read_job(sandbox, limits, SELECT_1);
    let kept = idle.and_then(|i| i.take(&key));
    let reused = kept.is_some();
    let open = async {
        let mut c = match kept {
            Some(c) => c,
            None => PgConnection::connect_with(options).await?,
        };
        c.execute(sqlx::raw_sql(SETUP)).await?;
        Ok::<_, sqlx::Error>(c)
    };
    let (running, conn) = tokio::join!(crate::sandbox::start(&job), open);
    let mut conn = conn?;
    let run = crate::sandbox::finish(
        running,
        job,
        &mut SqlHandle::on(&mut conn, Engine::Postgres, Mode::Read, *limits),
    )
    .await;
    let took = t.elapsed();
    conn.execute("ROLLBACK").await?;
    if let Some(e) = &run.error {
        anyhow::bail!("the benchmark script failed: {}", e.message);
    }
    match idle {
        Some(idle) => idle.give_back(key, conn).await,
        None => conn.close().await?,
    }
    Ok((took, reused))
}

fn row(name: &str, sandbox: (f64, f64), in_process: Option<(f64, f64)>) -> String {
    match in_process {
        Some(base) => format!(
            "{name:<62} {:>9.2} {:>9.2} {:>11.2} {:>8.1}x",
            sandbox.0,
            sandbox.1,
            base.0,
            sandbox.0 / base.0.max(0.001)
        ),
        None => format!(
            "{name:<62} {:>9.2} {:>9.2} {:>11} {:>9}",
            sandbox.0, sandbox.1, "-", "-"
        ),
    }
}

/// Runs every measurement `iterations` times (the 100 000-row one a fifth as often) and returns
/// the report's lines.
pub async fn sandbox(
    config: &Config,
    postgres_url: &str,
    iterations: usize,
) -> anyhow::Result<Vec<String>> {
    let iterations = iterations.max(5);
    let options: PgConnectOptions = postgres_url.parse()?;
    let mut conn = PgConnection::connect_with(&options).await?;
    let backend = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .ok()
        .and_then(|pid| u32::try_from(pid).ok());
    // Children started from scratch on demand, forked from the template on demand, and a pool
    // of pre-started (forked) ones.
    let mut scratch_config = config.clone();
    scratch_config.executor.sandbox_pool = 0;
    scratch_config.executor.sandbox_template = false;
    let scratch = Sandbox::new(&scratch_config);
    let mut fresh_config = config.clone();
    fresh_config.executor.sandbox_pool = 0;
    fresh_config.executor.sandbox_template = true;
    let sandbox = Sandbox::new(&fresh_config);
    let mut pooled_config = config.clone();
    pooled_config.executor.sandbox_pool = 2;
    pooled_config.executor.sandbox_template = true;
    let pooled = Sandbox::new(&pooled_config);
    sandbox
        .module()
        .await
        .map_err(|e| anyhow::anyhow!("the sandbox is not available: {e}"))?;
    let limits = LimitsConfig {
        wall_ms: 60_000,
        max_rows: 100_000,
        max_result_bytes: 64 * 1024 * 1024,
        ..config.limits
    };
    // Warm up the connection, the page cache and the module file, and start the template.
    script(&sandbox, &mut conn, &limits, SELECT_1).await?;
    script(&scratch, &mut conn, &limits, SELECT_1).await?;
    let mut lines = vec![format!(
        "{:<62} {:>9} {:>9} {:>11} {:>9}",
        "per execution (ms)", "p50", "p90", "in-process", "ratio"
    )];

    let limits = LimitsConfig {
        wall_ms: config.limits.wall_ms,
        memory_mb: config.limits.memory_mb,
        ..limits
    };
    // Fill the pool (it serves jobs under the configured wall and memory limits).
    script(&pooled, &mut conn, &limits, SELECT_1).await?;
    let runs = Runs {
        forked: &sandbox,
        prestarted: &pooled,
        limits: &limits,
        backend,
    };
    let mut base = Vec::new();
    let mut from_scratch = Vec::new();
    let mut fresh = Vec::new();
    let mut prestarted = Vec::new();
    let mut fresh_connected = Vec::new();
    let mut prestarted_connected = Vec::new();
    let mut kept_connection = Vec::new();
    let mut kept_prestarted = Vec::new();
    let idle = IdleConnections::new(2, Duration::from_secs(60));
    let mut kept_taken = 0;
    let mut connect_only = Vec::new();
    let mut connected_base = Vec::new();
    let mut peak_wasm = 0;
    for round in 0..iterations {
        let t = Instant::now();
        sqlx::query("SELECT 1").fetch_all(&mut conn).await?;
        base.push(t.elapsed());

        let t = Instant::now();
        script(&scratch, &mut conn, &limits, SELECT_1).await?;
        from_scratch.push(t.elapsed());

        let t = Instant::now();
        let run = script(&sandbox, &mut conn, &limits, SELECT_1).await?;
        fresh.push(t.elapsed());
        peak_wasm = peak_wasm.max(run.report.sandbox.peak_memory_bytes);

        pause().await;
        let t = Instant::now();
        script(&pooled, &mut conn, &limits, SELECT_1).await?;
        prestarted.push(t.elapsed());

        // As an execution does it, on a new connection and on a kept one; in odd rounds the
        // pre-started child goes first.
        let mut new_connection = [
            (&mut fresh_connected, &sandbox),
            (&mut prestarted_connected, &pooled),
        ];
        let mut kept = [
            (&mut kept_connection, &sandbox),
            (&mut kept_prestarted, &pooled),
        ];
        if round % 2 == 1 {
            new_connection.reverse();
            kept.reverse();
        }
        for (samples, sandbox) in new_connection {
            pause().await;
            samples.push(as_executed(sandbox, &options, None, &limits).await?.0);
        }
        for (samples, sandbox) in kept {
            pause().await;
            let (took, reused) = as_executed(sandbox, &options, Some(&idle), &limits).await?;
            samples.push(took);
            kept_taken += usize::from(reused);
        }
        // The new-connection row in-process: the same database work with no script (opening
        // the connection, setting it up, the query; the rollback and closing are not timed),
        // and how much of it is opening the connection alone: a new backend and the password
        // exchange, which no sandbox can overlap with anything but the child's start.
        let t = Instant::now();
        let mut alone = PgConnection::connect_with(&options).await?;
        connect_only.push(t.elapsed());
        alone.execute(sqlx::raw_sql(SETUP)).await?;
        sqlx::query("SELECT 1").fetch_all(&mut alone).await?;
        connected_base.push(t.elapsed());
        alone.execute("ROLLBACK").await?;
        alone.close().await?;
    }
    let base = summary(base);
    let fresh_connected = summary(fresh_connected);
    let connected_base = summary(connected_base);
    lines.push(row(
        "SELECT 1 script, child started from scratch",
        summary(from_scratch),
        Some(base),
    ));
    lines.push(row(
        "SELECT 1 script, child forked on demand",
        summary(fresh),
        Some(base),
    ));
    lines.push(row(
        "SELECT 1 script, pre-started child",
        summary(prestarted),
        Some(base),
    ));
    lines.push(row(
        "SELECT 1 script, child forked on demand, new connection",
        fresh_connected,
        Some(connected_base),
    ));
    lines.push(row(
        "  opening that connection alone (in the in-process figure)",
        summary(connect_only),
        None,
    ));
    lines.push(format!(
        "  (the sandbox adds {:.2} ms to the same work done in-process on a new connection)",
        fresh_connected.0 - connected_base.0
    ));
    lines.push(row(
        "SELECT 1 script, pre-started child, new connection",
        summary(prestarted_connected),
        Some(connected_base),
    ));
    lines.push(row(
        "SELECT 1 script, child forked on demand, kept connection",
        summary(kept_connection),
        Some(base),
    ));
    lines.push(row(
        "SELECT 1 script, pre-started child, kept connection",
        summary(kept_prestarted),
        Some(base),
    ));
    lines.push(format!(
        "  (a kept connection was there to take in {kept_taken} of those {} runs)",
        2 * iterations
    ));

    let mut base = Vec::new();
    let mut calls = Vec::new();
    let mut calls_prestarted = Vec::new();
    let mut apart = Vec::new();
    let mut in_handle = Vec::new();
    for i in 0..iterations {
        pause().await;
        let t = Instant::now();
        for _ in 0..100 {
            sqlx::query("SELECT 1").fetch_all(&mut conn).await?;
        }
        base.push(t.elapsed());
        let [forked, prestarted] = runs.both(i, &mut conn, CALLS_100).await?;
        calls.push(forked.took);
        calls_prestarted.push(prestarted.took);
        let records = &forked.run.report.calls;
        if let (Some(first), Some(last)) = (records.first(), records.last())
            && records.len() > 1
        {
            let n = records.len() as f64;
            apart.push((last.at_ms - first.at_ms) as f64 / (n - 1.0));
            in_handle.push(records.iter().map(|c| c.duration_ms).sum::<f64>() / n);
        }
    }
    let base = summary(base);
    lines.push(row(
        "100 sequential db.query calls, child forked on demand",
        summary(calls),
        Some(base),
    ));
    lines.push(row(
        "100 sequential db.query calls, pre-started child",
        summary(calls_prestarted),
        Some(base),
    ));
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    lines.push(format!(
        "  one call every {:.3} ms, {:.3} ms of it in the wrapped handle (the rest: the guest, the pipes, the executor's loop)",
        median(apart),
        median(in_handle)
    ));

    let mut base = Vec::new();
    let mut through_handle = Vec::new();
    let mut sums = Vec::new();
    let mut sums_prestarted = Vec::new();
    let mut sum_call = Vec::new();
    let mut sum_after = Vec::new();
    let mut sum_loop = Vec::new();
    // CPU summed over the runs: in-process, and the forked child's runs (portal, child).
    let mut base_cpu = CpuTotal::default();
    let mut forked_cpu = CpuTotal::default();
    let rounds = (iterations / 5).max(3);
    for i in 0..rounds {
        pause().await;
        let before = Cpu::now(backend);
        let t = Instant::now();
        let rows = sqlx::query(SUM_100K_SQL).fetch_all(&mut conn).await?;
        let sum: i64 = rows
            .iter()
            .map(|r| r.try_get::<i32, _>(0).map(i64::from))
            .sum::<Result<i64, _>>()?;
        base.push(t.elapsed());
        drop(rows);
        base_cpu.add(Cpu::now(backend).since(before), Duration::ZERO);
        anyhow::ensure!(sum == 5_000_050_000, "in-process sum {sum}");
        // The wrapped handle's own work (rows to JSON, limits), in-process, without the sandbox:
        // a detached sink also decodes its batches back into JSON values at the end, as in-process
        // use needs, so this is more than the portal's side of a sandboxed call.
        pause().await;
        let t = Instant::now();
        let op = proto::DbOp::Query {
            sql: SUM_100K_SQL.into(),
            params: Vec::new(),
        };
        let mut sink = RowSink::detached();
        let reply = SqlHandle::on(&mut conn, Engine::Postgres, Mode::Read, limits)
            .call(op, &mut sink)
            .await;
        let sum: i64 = match &reply {
            Reply::Ok { value, .. } => value["rows"]
                .as_array()
                .map_or(0, |rows| rows.iter().filter_map(|r| r["n"].as_i64()).sum()),
            other => anyhow::bail!("the handle answered {other:?}"),
        };
        through_handle.push(t.elapsed());
        anyhow::ensure!(sum == 5_000_050_000, "handle sum {sum}");
        let [forked, prestarted] = runs.both(i, &mut conn, SUM_100K).await?;
        let (total, run, run_prestarted) = (forked.took, &forked.run, &prestarted.run);
        check_sum(run, "a forked child")?;
        check_sum(run_prestarted, "a pre-started child")?;
        sums.push(total);
        sums_prestarted.push(prestarted.took);
        forked_cpu.add(
            forked.cpu,
            Duration::from_secs_f64(run.report.sandbox.cpu_ms.max(0.0) / 1000.0),
        );
        if let Some(call) = run.report.calls.first() {
            let until_reply = call.at_ms as f64 + call.duration_ms;
            sum_call.push(call.duration_ms);
            sum_after.push(total.as_secs_f64() * 1000.0 - until_reply);
        }
        let loop_ms = run
            .report
            .logs
            .first()
            .and_then(|l| l.message.parse::<f64>().ok());
        sum_loop.push(loop_ms.ok_or_else(|| {
            anyhow::anyhow!(
                "the benchmark script logged no loop time: {:?}",
                run.report.logs
            )
        })?);
        peak_wasm = peak_wasm
            .max(run.report.sandbox.peak_memory_bytes)
            .max(run_prestarted.report.sandbox.peak_memory_bytes);
    }
    let base = summary(base);
    lines.push(row(
        "sum of 100 000 rows from one db.query, child forked on demand",
        summary(sums),
        Some(base),
    ));
    lines.push(format!(
        "  of which the portal's side of the db.query call {:.2} ms (rows read, encoded and sent; the pipe holds up to 1 MiB the guest has not decoded yet), after it {:.2} ms (the guest decoding what the pipe held, the loop, the outcome)",
        median(sum_call),
        median(sum_after)
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (base_use, _) = base_cpu.per_run();
    let (forked_use, forked_sum) = forked_cpu.per_run();
    lines.push(format!(
        "  CPU per run (mean of {rounds}; PostgreSQL's backend where it runs on this host): in-process {base_use}; forked child {forked_use}, which alone takes {:.1} ms on {cores} cores",
        forked_sum / cores as f64
    ));
    let loop_ms = median(sum_loop);
    lines.push(format!(
        "  the script's loop over the rows alone (Date.now() in the script) {loop_ms:.0} ms: with nothing else added, in-process + that loop would be {:.2}x",
        (base.0 + loop_ms) / base.0.max(0.001)
    ));
    lines.push(row(
        "sum of 100 000 rows from one db.query, pre-started child",
        summary(sums_prestarted),
        Some(base),
    ));
    lines.push(row(
        "  the same rows through the wrapped handle, no sandbox",
        summary(through_handle),
        Some(base),
    ));

    let max_rss_kib = rusage(libc::RUSAGE_CHILDREN).map_or(0, |u| u.ru_maxrss);
    lines.push(format!(
        "child peak memory: {:.1} MiB of wasm linear memory; {:.1} MiB ru_maxrss of the largest child \
         (an upper bound: Linux counts the pages this process had resident when it forked the child)",
        peak_wasm as f64 / (1024.0 * 1024.0),
        max_rss_kib as f64 / 1024.0,
    ));
    conn.close().await?;
    Ok(lines)
}
