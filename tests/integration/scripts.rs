//! Script requests: JavaScript run in a single-use sandbox child, every `db.query` brokered by
//! the portal, each limit as an obeyed / violated pair, and the child's confinement.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    Actor, PgTarget, StoreKind, TestApp, finished, pg_instance, pg_target, prices, shown_rows,
};

/// Limits small enough that the violating scripts fail fast.
const TIGHT: &str = "[limits]\nwall_ms = 2000\ndb_call_ms = 1000\nmemory_mb = 32\nmax_calls = 50\nmax_log_bytes = 4096\nmax_result_bytes = 65536";

/// Files a request on `instance` as the developer and has the payments manager approve it;
/// returns the request id.
async fn approve(
    app: &TestApp,
    instance: &str,
    database: &str,
    (kind, mode): (&str, &str),
    content: &str,
) -> String {
    let dan = app.login(Actor::Developer).await;
    let body = json!({"pod_id": app.pod_id("payments").await, "instance_id": instance, "database": database,
        "kind": kind, "mode": mode, "content": content, "justification": "Backfilling data for ticket 4711"});
    let (status, created) = app.post("/api/v1/requests", &dan.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let maya = app.login(Actor::Manager).await;
    let decision = json!({"decision": "approve", "revision_hash": created["revision_hash"]});
    let (status, r) = app
        .post(
            &format!("/api/v1/requests/{id}/reviews"),
            &maya.token,
            decision,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    id
}

/// Files and approves a request of `kind` (`script` or `query`) on an instance that runs on
/// approval, and returns its finished execution.
pub(crate) async fn run_request(
    app: &TestApp,
    instance: &str,
    database: &str,
    kind_mode: (&str, &str),
    content: &str,
) -> Value {
    let id = approve(app, instance, database, kind_mode, content).await;
    let dan = app.login(Actor::Developer).await;
    for _ in 0..400 {
        let (_, r) = app.get(&format!("/api/v1/requests/{id}"), &dan.token).await;
        if let Some(e) = r["executions"].as_array().and_then(|a| a.first()) {
            return finished(app, &dan.token, e["id"].as_str().expect("execution id")).await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("request {id} did not start");
}

/// Files, approves and runs a script.
async fn run(app: &TestApp, instance: &str, database: &str, mode: &str, script: &str) -> Value {
    run_request(app, instance, database, ("script", mode), script).await
}

async fn demo(app: &TestApp, script: &str) -> Value {
    run(app, &app.shop_id().await, "main", "read", script).await
}

pub(crate) fn kind(e: &Value) -> &str {
    e["error"]["kind"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_script_from_the_node_portal_runs_unchanged() {
    for store in [StoreKind::Sqlite, StoreKind::Postgres] {
        let app = TestApp::spawn(store).await;
        let script = "const id = 3;\nconst r = await db.query('SELECT id, email FROM customers WHERE id <= $1 ORDER BY id', [id]);\nconsole.log(r.rows.length);\nreturn r.rowCount;";
        let e = demo(&app, script).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["result"], 3);
        assert_eq!(e["logs"][0]["level"], "log");
        assert_eq!(e["logs"][0]["message"], "3");
        let calls = e["calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 1, "{e}");
        assert_eq!(calls[0]["op"], "query");
        assert_eq!(calls[0]["rows"], 3);
        assert!(
            calls[0]["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("SELECT id, email"))
        );
        assert_eq!(e["sandbox"]["seccomp"], true, "{e}");
        assert_eq!(e["sandbox"]["no_new_privs"], true, "{e}");
        // The last query's rows are the execution's displayed rows.
        let rows = shown_rows(&app, &e).await;
        assert_eq!(rows["rows"].as_array().map(Vec::len), Some(3), "{rows}");
    }
}

/// The outcome counts the CPU time the child used: a script that computes for a while reports
/// that time, within what the execution took, and far more than a script that returns at once.
#[tokio::test]
async fn the_outcome_counts_the_childs_cpu_time() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let cpu = |e: &Value| e["sandbox"]["cpu_ms"].as_f64().unwrap_or(-1.0);
    let quick = demo(&app, "return 1;").await;
    assert_eq!(quick["status"], "succeeded", "{quick}");
    // Five million iterations: a quarter of a second or more of QuickJS in wasm on these machines.
    let busy = demo(
        &app,
        "let s = 0; for (let i = 0; i < 5000000; i++) s = (s + i) % 7919; return s;",
    )
    .await;
    assert_eq!(busy["status"], "succeeded", "{busy}");
    let took = busy["duration_ms"].as_f64().unwrap_or(0.0);
    assert!(cpu(&quick) > 0.0, "{}", quick["sandbox"]);
    assert!(
        cpu(&busy) >= 50.0 && cpu(&busy) > 5.0 * cpu(&quick),
        "busy {} quick {}",
        busy["sandbox"],
        quick["sandbox"]
    );
    // The child's main thread computes; its deadline thread only ticks.
    assert!(
        cpu(&busy) <= took + 20.0,
        "{} in {took} ms",
        busy["sandbox"]
    );
}

/// The results page names each column's database type: a script's last query shows the types
/// its call gave (a column the script returns itself is JSON), and on SQLite a column that is no
/// table's (`1 AS one`, `count(*)`) takes the type of its first value rather than none.
#[tokio::test]
async fn shown_columns_carry_their_database_types() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let shop = app.shop_id().await;
    let sql = "SELECT id, email, 1 AS one, count(*) OVER () AS n FROM customers WHERE id <= 2 ORDER BY id";
    let types = |rows: &Value| -> Vec<String> {
        rows["columns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| {
                        format!(
                            "{} {}",
                            c["name"].as_str().unwrap_or(""),
                            c["type"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let expected = ["id INTEGER", "email TEXT", "one INTEGER", "n INTEGER"];
    let e = demo(&app, &format!("await db.query('{sql}'); return 'done';")).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(types(&shown_rows(&app, &e).await), expected);
    let e = run_request(&app, &shop, "main", ("query", "read"), sql).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(types(&shown_rows(&app, &e).await), expected);
    // Rows the script builds and returns are its own values.
    let e = demo(&app, "const r = await db.query('SELECT id FROM customers WHERE id = 1'); return r.rows.map((row) => ({ id: row.id }));").await;
    assert_eq!(types(&shown_rows(&app, &e).await), ["id JSON"]);
    // PostgreSQL: the call's fields.
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    let e = run(
        &app,
        &instance,
        &target.database,
        "read",
        "await db.query('SELECT id, name, price FROM items ORDER BY id'); return null;",
    )
    .await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        types(&shown_rows(&app, &e).await),
        ["id INT4", "name TEXT", "price NUMERIC"]
    );
}

/// The compiled guests in `dir` (`*.cwasm`; a half-written one is a dotted `.tmp` file).
fn compiled_guests(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".cwasm"))
                .collect()
        })
        .unwrap_or_default()
}

/// `executor.sandbox_cache_dir` names where the compiled guest is kept; empty keeps it under the
/// data directory.
#[tokio::test]
async fn the_compiled_guest_is_kept_where_the_configuration_says() {
    let own = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "[executor]\nsandbox_cache_dir = \"{}\"",
        own.path().display()
    );
    let app = TestApp::spawn_with(StoreKind::Sqlite, &toml).await;
    let e = demo(&app, "return 1;").await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(compiled_guests(own.path()).len(), 1);
    assert!(!app.data_dir.path().join("sandbox-cache").exists());

    let app = TestApp::spawn_with(StoreKind::Sqlite, "[executor]\nsandbox_cache_dir = \"\"").await;
    let e = demo(&app, "return 2;").await;
    assert_eq!(e["result"], 2, "{e}");
    let under_data = app.data_dir.path().join("sandbox-cache");
    assert_eq!(compiled_guests(&under_data).len(), 1);
}

/// A compiled guest nothing has used for a week (another wasmtime or guest: an earlier version)
/// is removed from the cache when the portal starts, as is what a compilation cut short left;
/// recent ones (a version still running beside this one), this portal's own and files that are
/// not compiled guests stay. Starting marks this portal's own as used again.
#[tokio::test]
async fn compiled_guests_nothing_uses_are_pruned() {
    let cache = tempfile::tempdir().expect("tempdir");
    let dir = cache.path();
    let toml = format!("[executor]\nsandbox_cache_dir = \"{}\"", dir.display());
    let month_ago = std::time::SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    let aged = |name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, b"old").expect("write");
        let file = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_modified(month_ago).expect("set mtime");
    };
    aged("guest-000000000000000000000000-0000000000000000.cwasm");
    aged(".guest-000000000000000000000000-0000000000000000.cwasm.4242.tmp");
    aged("notes.txt");
    std::fs::write(
        dir.join("guest-111111111111111111111111-1111111111111111.cwasm"),
        b"new",
    )
    .expect("write");

    let app = TestApp::spawn_with(StoreKind::Sqlite, &toml).await;
    let e = demo(&app, "return 1;").await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .expect("read the cache")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    left.sort();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&"notes.txt".to_owned()), "{left:?}");
    assert!(
        left.contains(&"guest-111111111111111111111111-1111111111111111.cwasm".to_owned()),
        "{left:?}"
    );
    let own: Vec<&String> = left
        .iter()
        .filter(|n| n.ends_with(".cwasm") && !n.starts_with("guest-1111"))
        .collect();
    assert_eq!(own.len(), 1, "{left:?}");
    drop(app);

    // This portal's own guest, unused for a month, is kept and marked as used by the next start.
    let own = dir.join(own[0]);
    std::fs::File::options()
        .write(true)
        .open(&own)
        .and_then(|f| f.set_modified(month_ago))
        .expect("age the own guest");
    let app = TestApp::spawn_with(StoreKind::Sqlite, &toml).await;
    let e = demo(&app, "return 2;").await;
    assert_eq!(e["result"], 2, "{e}");
    let modified = std::fs::metadata(&own)
        .and_then(|m| m.modified())
        .expect("the own guest is still there");
    assert!(
        modified > month_ago + Duration::from_secs(3600),
        "{modified:?}"
    );
}

/// What `/readyz` says of the sandbox (`preparing`, `ready`, `unavailable`) once it is no longer
/// preparing, and the `quorum_sandbox_ready` gauge of `/metrics`.
async fn sandbox_readiness(app: &TestApp) -> (String, String) {
    let mut said = String::new();
    for _ in 0..600 {
        let r = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "the store is up whatever the sandbox does"
        );
        let body: Value = r.json().await.expect("readyz body");
        said = body["sandbox"].as_str().unwrap_or("").to_owned();
        if said != "preparing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = app.metrics().await;
    let gauge = metrics
        .lines()
        .find_map(|l| l.strip_prefix("quorum_sandbox_ready "))
        .unwrap_or("")
        .to_owned();
    (said, gauge)
}

/// The portal prepares the sandbox when it starts, so the first script waits for nothing: the
/// guest is compiled (or found) and the pre-started children are waiting before any request.
/// A guest that cannot be compiled shows in `/readyz` and `/metrics`, fails scripts with the
/// reason, and once the cause is gone the next script runs without a restart.
#[tokio::test]
async fn the_sandbox_is_ready_before_the_first_script_and_says_when_it_is_not() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    assert_eq!(sandbox_readiness(&app).await, ("ready".into(), "1".into()));
    let mut waiting = Vec::new();
    for _ in 0..500 {
        waiting = sandbox_children(std::process::id());
        if waiting.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        waiting.len(),
        2,
        "executor.sandbox_pool children waiting before any script: {waiting:?}"
    );
    assert_eq!(sandbox_templates(std::process::id()).len(), 1);

    // The cache directory cannot be made: its parent is a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").expect("write");
    let cache = blocker.join("cache");
    let toml = format!("[executor]\nsandbox_cache_dir = \"{}\"", cache.display());
    let app = TestApp::spawn_with(StoreKind::Sqlite, &toml).await;
    assert_eq!(
        sandbox_readiness(&app).await,
        ("unavailable".into(), "0".into())
    );
    let e = demo(&app, "return 1;").await;
    assert_eq!(
        (e["status"].as_str(), kind(&e)),
        (Some("failed"), "unsupported"),
        "{e}"
    );
    let message = e["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("the script sandbox is not available")
            && message.contains(&cache.display().to_string()),
        "{e}"
    );
    std::fs::remove_file(&blocker).expect("remove the blocker");
    let e = demo(&app, "return 3;").await;
    assert_eq!(
        (e["status"].as_str(), &e["result"]),
        (Some("succeeded"), &json!(3)),
        "{e}"
    );
    assert_eq!(compiled_guests(&cache).len(), 1);
    assert_eq!(sandbox_readiness(&app).await, ("ready".into(), "1".into()));
}

#[tokio::test]
async fn each_limit_holds_and_is_named() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, TIGHT).await;
    // (script, expected status, expected error kind); every violation pairs with an obeyed run.
    let cases: &[(&str, &str, &str)] = &[
        (
            "let n = 0; for (let i = 0; i < 1e5; i++) n += i; return n;",
            "succeeded",
            "",
        ),
        ("for (;;) {}", "timed_out", "timeout"),
        (
            "const a = []; for (let i = 0; i < 100; i++) a.push(new Array(1000).fill(i)); return a.length;",
            "succeeded",
            "",
        ),
        (
            "const a = []; for (;;) a.push(new Array(1e6).fill(1));",
            "failed",
            "memory_limit",
        ),
        (
            "const f = (n) => n === 0 ? 0 : 1 + f(n - 1); return f(500);",
            "succeeded",
            "",
        ),
        ("const f = () => f(); f();", "failed", "stack_overflow"),
        (
            "for (let i = 0; i < 10; i++) await db.query('SELECT 1'); return 'ok';",
            "succeeded",
            "",
        ),
        (
            "for (let i = 0; i < 1e6; i++) await db.query('SELECT 1');",
            "failed",
            "call_limit",
        ),
        (
            "try { for (let i = 0; i < 1e6; i++) await db.query('SELECT 1'); } catch (e) {} return 1;",
            "failed",
            "call_limit",
        ),
        (
            "await db.query('SELECT ?1', ['x'.repeat(1000)]); return 1;",
            "succeeded",
            "",
        ),
        ("return 'x'.repeat(1000);", "succeeded", ""),
        ("return 'x'.repeat(200000);", "failed", "output_limit"),
        (
            "await new Promise((r) => setTimeout(r, 20)); return 2;",
            "succeeded",
            "",
        ),
        (
            "await new Promise((r) => setTimeout(r, 60000));",
            "timed_out",
            "timeout",
        ),
    ];
    for (script, status, error) in cases {
        let e = demo(&app, script).await;
        assert_eq!(e["status"], *status, "{script}: {e}");
        if !error.is_empty() {
            assert_eq!(kind(&e), *error, "{script}: {e}");
        }
    }
    // A 100 MiB argument dies inside the sandbox (memory) or at the argument check, never in the
    // portal; both are reported as limits.
    let e = demo(
        &app,
        "await db.query('SELECT ?1', ['x'.repeat(100 * 1024 * 1024)]);",
    )
    .await;
    assert!(["memory_limit", "call_limit"].contains(&kind(&e)), "{e}");
}

#[tokio::test]
async fn the_console_is_captured_in_order_and_capped() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, TIGHT).await;
    let e = demo(&app, "console.log('a', 1, {b: 2}); console.warn('w'); console.error(new Error('boom')); return null;").await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let logs: Vec<(String, String)> = e["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|l| {
            (
                l["level"].as_str().unwrap_or("").to_owned(),
                l["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        logs,
        [
            ("log".to_owned(), "a 1 {\"b\":2}".to_owned()),
            ("warn".to_owned(), "w".to_owned()),
            ("error".to_owned(), "Error: boom".to_owned())
        ]
    );
    assert_eq!(e["sandbox"]["logs_truncated"], false);

    let e = demo(
        &app,
        "for (let i = 0; i < 100000; i++) console.log('x'.repeat(100)); return 'done';",
    )
    .await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"], "done");
    assert_eq!(e["sandbox"]["logs_truncated"], true, "{}", e["sandbox"]);
    let kept: usize = e["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|l| l["message"].as_str().map_or(0, str::len))
        .sum();
    assert!(kept <= 4096, "kept {kept} bytes of log");
}

#[tokio::test]
async fn capabilities_outside_db_and_console_do_not_exist() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, TIGHT).await;
    for (script, message) in [
        ("require('fs')", "ReferenceError: require is not defined"),
        ("process.env", "ReferenceError: process is not defined"),
        (
            "await fetch('http://example.com')",
            "ReferenceError: fetch is not defined",
        ),
        (
            "WebAssembly.instantiate(new Uint8Array(8))",
            "ReferenceError: WebAssembly is not defined",
        ),
        (
            "Deno.readFile('/etc/passwd')",
            "ReferenceError: Deno is not defined",
        ),
    ] {
        let e = demo(&app, script).await;
        assert_eq!(e["status"], "failed", "{script}: {e}");
        assert_eq!(kind(&e), "script", "{script}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message)),
            "{script}: {e}"
        );
    }
    let e = demo(&app, "await import('fs')").await;
    assert_eq!(kind(&e), "script", "{e}");
    // Syntax errors name the line and column.
    let e = demo(&app, "const a = 1;\nconst b = ;\nreturn a;").await;
    assert_eq!(kind(&e), "syntax", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 2")),
        "{e}"
    );
}

#[tokio::test]
async fn postgres_reads_write_nothing_and_failed_writes_roll_back() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, TIGHT).await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    let before = prices(&target).await;

    // Every write path from a read request is refused before or at the database.
    for attempt in [
        "await db.query('UPDATE items SET price = 0')",
        "await db.query('SET TRANSACTION READ WRITE'); await db.query('UPDATE items SET price = 0')",
        "await db.query('COMMIT'); await db.query('DROP TABLE items')",
        "await db.query('DO $$ BEGIN UPDATE items SET price = 0; END $$')",
        "await db.query('SELECT 1; UPDATE items SET price = 0')",
        "try { await db.query('DELETE FROM items') } catch (e) {} return 'caught';",
    ] {
        let e = run(&app, &instance, &target.database, "read", attempt).await;
        assert_eq!(e["status"], "failed", "{attempt}: {e}");
        assert_eq!(prices(&target).await, before, "{attempt}");
    }

    // A write script that fails half way leaves the target as it was.
    let e = run(&app, &instance, &target.database, "write",
        "await db.query('UPDATE items SET price = price + 1');\nthrow new Error('changed my mind');").await;
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(kind(&e), "script");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 2")),
        "{e}"
    );
    assert_eq!(prices(&target).await, before);

    // One that returns commits, with bound parameters.
    let e = run(&app, &instance, &target.database, "write",
        "const r = await db.query('UPDATE items SET price = price + $1 WHERE id = $2', [10, 1]);\nreturn r.rowCount;").await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"], 1);
    assert_ne!(prices(&target).await, before);
}

/// Every PostgreSQL type a script commonly reads crosses as the same JSON whichever way the
/// portal writes it: the scalar fast path (integers, floats, booleans, text) and the general
/// mapping (NUMERIC, UUID, JSONB, arrays), including the edge cases (integers past 2^53 and
/// non-finite floats as strings, NULL, quotes, escapes and non-ASCII text). And the script gets
/// the same values whichever way the guest reads them: `JSON.parse` for a small result, its own
/// decoder for batches (own `__proto__` keys, -0, long integers), `JSON.parse` again for a batch
/// nested too deep for that decoder.
#[tokio::test]
async fn postgres_values_reach_the_script_as_json() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    // The same columns twice: one row (in the reply, read with JSON.parse) and 1 500 rows (over
    // 64 KiB, so they come in batches, read by the guest's own decoder). Row 1 400 nests deeper
    // than that decoder follows, so its batch goes to JSON.parse after a partial start.
    let script = r#"const cols = String.raw`1::int2 AS a, 2::int4 AS b, 3::int8 AS c,
  9007199254740993::int8 AS big, -9007199254740991::int8 AS edge, 1.5::float8 AS f,
  'NaN'::float8 AS nan, true AS t, 'say "hi" ✓'::text AS s, 'v'::varchar(4) AS v,
  'p'::char(2) AS p, 'x'::name AS nm, 12.50::numeric AS n, NULL::int4 AS z,
  '00000000-0000-0000-0000-000000000001'::uuid AS u, '{"k": [1]}'::jsonb AS j,
  ARRAY[1, 2]::int4[] AS arr, 2.5::float4 AS r, E'q"b\\ \n\t\x01 𝄞 \u00e9' AS esc,
  '{"__proto__": {"x": 1}, "a": [1.5e300, 1e-7, 1234567890123456789, -3]}'::jsonb AS pj,
  '-0'::float8 AS mz, 1e300::float8 AS huge, -123456789012345::int8 AS long15`;
const one = await db.query(`SELECT ${cols}`);
// Rows are defined on the result, never assigned: neither a setter on Array.prototype at the
// deep row's index (the batch JSON.parse reads) nor one for `rows` on Object.prototype runs.
let setterRan = false;
Object.defineProperty(Array.prototype, '1399', { set() { setterRan = true; }, configurable: true });
Object.defineProperty(Object.prototype, 'rows', { set() { setterRan = true; }, configurable: true });
const many = await db.query(`SELECT g, ${cols}, CASE WHEN g = 1400 THEN (repeat('[', 80) || repeat(']', 80))::jsonb ELSE '[]'::jsonb END AS deep FROM generate_series(1, 1500) g`);
delete Array.prototype['1399'];
delete Object.prototype.rows;
const first = JSON.stringify(one.rows[0]);
const differing = many.rows.filter((row, i) => row.g !== i + 1 || JSON.stringify({ ...row, g: undefined, deep: undefined }) !== first).length;
const deep = many.rows.map((row) => JSON.stringify(row.deep)).filter((d) => d !== '[]');
const pj = many.rows[7].pj;
return { row: one.rows[0], count: many.rows.length, differing, deep, setterRan,
  protoOwn: Object.hasOwn(pj, '__proto__') && Object.getPrototypeOf(pj) === Object.prototype,
  negativeZero: Object.is(one.rows[0].mz, -0) && Object.is(many.rows[7].mz, -0) };"#;
    let e = run(&app, &instance, &target.database, "read", script).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let result = &e["result"];
    assert_eq!(
        result["row"],
        json!({"a": 1, "b": 2, "c": 3, "big": "9007199254740993", "edge": -9007199254740991_i64,
            "f": 1.5, "nan": "NaN", "t": true, "s": "say \"hi\" ✓", "v": "v", "p": "p ",
            "nm": "x", "n": "12.5", "z": null, "u": "00000000-0000-0000-0000-000000000001",
            "j": {"k": [1]}, "arr": [1, 2], "r": 2.5, "esc": "q\"b\\ \n\t\u{1} 𝄞 é",
            // 1234567890123456789 as a double, printed as JavaScript prints it.
            "pj": {"__proto__": {"x": 1}, "a": [1.5e300, 1e-7, 1234567890123456800_u64, -3]},
            "mz": 0, "huge": 1e300, "long15": -123456789012345_i64}),
        "{result}"
    );
    assert_eq!(result["count"], 1500, "{result}");
    assert_eq!(result["differing"], 0, "{result}");
    assert_eq!(
        result["deep"],
        json!([format!("{}{}", "[".repeat(80), "]".repeat(80))]),
        "{result}"
    );
    assert_eq!(result["setterRan"], false, "{result}");
    assert_eq!(result["protoOwn"], true, "{result}");
    assert_eq!(result["negativeZero"], true, "{result}");
}

/// Rows that came in batches are made after the first one's shape; each is still an ordinary
/// object of its own, as `JSON.parse` would make it: its own keys in column order, plain data
/// properties, and what a script does to one row (adding, deleting, redefining, freezing) never
/// shows in another. Duplicate column names keep the last value in the first one's place, as
/// `JSON.parse` does, also when batches of such rows follow batches of ordinary ones; a column
/// named `__proto__` is an own property; rows with more keys than the decoder caches come whole
/// and in column order.
#[tokio::test]
async fn rows_from_batches_are_independent_ordinary_objects() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    let script = r#"const r = await db.query("SELECT g AS n, 'r' || g AS s, g % 2 = 0 AS even FROM generate_series(1, 6000) g");
const rows = r.rows;
rows[0].extra = 1;
delete rows[1].s;
Object.defineProperty(rows[2], 'n', { value: 'fixed', writable: false, enumerable: false });
Object.freeze(rows[3]);
rows[4].__proto__ = { inherited: true };
const keys = (row) => Object.keys(row).join(',');
const d = Object.getOwnPropertyDescriptor(rows[5000], 's');
let others = 0;
for (let i = 5; i < rows.length; i++) {
  const row = rows[i];
  if (keys(row) === 'n,s,even' && row.n === i + 1 && row.s === 'r' + (i + 1) && row.even === ((i + 1) % 2 === 0)
      && Object.getPrototypeOf(row) === Object.prototype && Object.isExtensible(row) && !('inherited' in row)) others++;
}
rows[6].s = 'changed';
// Row 3 000 nests deeper than the decoder follows: its batch is read by JSON.parse instead.
const dup = await db.query(`SELECT g AS a, -g AS a, g AS b, g AS "__proto__",
  CASE WHEN g = 3000 THEN (repeat('[', 80) || repeat(']', 80))::jsonb ELSE '[]'::jsonb END AS deep FROM generate_series(1, 6000) g`);
let dupOk = 0;
for (let i = 0; i < dup.rows.length; i++) {
  const row = dup.rows[i];
  if (keys(row) === 'a,b,__proto__,deep' && row.a === -(i + 1) && Object.getPrototypeOf(row) === Object.prototype
      && Object.getOwnPropertyDescriptor(row, '__proto__').value === i + 1) dupOk++;
}
// 300 columns: more distinct keys than the decoder keeps as atoms for a call.
const names = Array.from({ length: 300 }, (_, c) => 'c' + c);
const wide = await db.query('SELECT ' + names.map((n, c) => `g + ${c} AS ${n}`).join(', ') + ' FROM generate_series(1, 60) g');
let wideOk = 0;
for (let i = 0; i < wide.rows.length; i++) if (keys(wide.rows[i]) === names.join(',') && names.every((n, c) => wide.rows[i][n] === i + 1 + c)) wideOk++;
return { first: keys(rows[0]), second: keys(rows[1]), third: keys(rows[2]) + ':' + rows[2].n,
  frozen: Object.isFrozen(rows[3]) && !Object.isFrozen(rows[7]), inherited: rows[4].inherited === true,
  descriptor: d, others, seventh: rows[7].s, sixth: rows[6].s, dupOk, wideOk };"#;
    let e = run(&app, &instance, &target.database, "read", script).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"],
        json!({"first": "n,s,even,extra", "second": "n,even", "third": "s,even:fixed",
            "frozen": true, "inherited": true,
            "descriptor": {"value": "r5001", "writable": true, "enumerable": true, "configurable": true},
            "others": 5995, "seventh": "r8", "sixth": "changed", "dupOk": 6000, "wideOk": 60}),
        "{e}"
    );
}

/// `for…of` over an array (which the vendored QuickJS walks without property lookups while the
/// elements are stored densely) sees what the language says: elements pushed during the loop,
/// a length cut short, trailing holes as `undefined` with inherited elements showing through,
/// a typed array, and an array iterator advanced by hand before the loop.
#[tokio::test]
async fn for_of_over_arrays_follows_the_language() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let script = r#"const walk = (iterable) => { const seen = []; for (const x of iterable) seen.push(x === undefined ? 'u' : x); return seen.join(','); };
const grows = [1, 2, 3];
const grown = []; for (const x of grows) { grown.push(x); if (x === 1) grows.push(4); }
const shrinks = [1, 2, 3, 4, 5];
const shrunk = []; for (const x of shrinks) { shrunk.push(x); if (x === 2) shrinks.length = 3; }
const holes = [1, 2]; holes.length = 5;
Array.prototype[3] = 'proto';
const inherited = walk(holes);
delete Array.prototype[3];
const it = [10, 20, 30][Symbol.iterator](); it.next();
const rest = walk({ [Symbol.iterator]: () => it });
const pairs = []; for (const [i, x] of ['a', 'b'].entries()) pairs.push(i + x);
return { grown: grown.join(','), shrunk: shrunk.join(','), inherited, typed: walk(new Int16Array([7, -7])),
  rest, pairs: pairs.join(','), empty: walk([]), sparse: walk(new Array(2)) };"#;
    let e = demo(&app, script).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"],
        json!({"grown": "1,2,3,4", "shrunk": "1,2,3", "inherited": "1,2,u,proto,u", "typed": "7,-7",
            "rest": "20,30", "pairs": "0a,1b", "empty": "", "sparse": "u,u"}),
        "{e}"
    );
}

/// Rows larger than one batch reach the script in order and whole; the row limit cuts a
/// streamed result as it cuts a small one; a query that fails after some batches were sent is a
/// catchable error that leaves nothing half-delivered, and the next call still works.
#[tokio::test]
async fn rows_stream_to_the_script_in_batches() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, "[limits]\nmax_rows = 50000").await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    // PostgreSQL aborts the transaction at the first error, so the failing query comes last.
    let script = "\
const r = await db.query('SELECT g AS n, md5(g::text) AS h FROM generate_series(1, 20000) g ORDER BY g');
let inOrder = r.rows.length === 20000 && r.rowCount === 20000;
for (let i = 0; i < r.rows.length; i++) if (r.rows[i].n !== i + 1 || r.rows[i].h.length !== 32) inOrder = false;
const cut = await db.query('SELECT g FROM generate_series(1, 60000) g');
let caught = '';
try { await db.query('SELECT 100 / (40000 - g) AS x FROM generate_series(1, 60000) g'); } catch (e) { caught = e.message; }
return { inOrder, caught, cut: cut.rows.length, cutFlag: cut.truncated, lastOfCut: cut.rows[49999].g, fields: r.fields.map((f) => f.name) };";
    let e = run(&app, &instance, &target.database, "read", script).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let result = &e["result"];
    assert_eq!(result["inOrder"], true, "{result}");
    assert!(
        result["caught"]
            .as_str()
            .is_some_and(|m| m.contains("division by zero")),
        "{result}"
    );
    assert_eq!(result["cut"], 50000, "{result}");
    assert_eq!(result["cutFlag"], true, "{result}");
    assert_eq!(result["lastOfCut"], 50000, "{result}");
    assert_eq!(result["fields"], json!(["n", "h"]), "{result}");
    // The results page shows the last query that returned rows: the one the row limit cut.
    let shown = shown_rows(&app, &e).await;
    assert_eq!(shown["total"], 50000, "{}", shown["columns"]);
    assert_eq!(shown["truncated"], true, "{}", shown["columns"]);
    let calls = e["calls"].as_array().expect("calls");
    let rows: Vec<&Value> = calls.iter().map(|c| &c["rows"]).collect();
    assert_eq!(rows, [&json!(20000), &json!(50000), &json!(0)], "{e}");
    assert!(
        calls[2]["error"]
            .as_str()
            .is_some_and(|m| m.contains("division by zero")),
        "{e}"
    );
    assert!(
        e["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .any(|l| l["level"] == "warn"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("first 50000 rows"))),
        "{e}"
    );

    // SQLite keeps going after a failed statement: the call after the broken stream answers.
    let script = "\
let caught = '';
try {
  await db.query(\"WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < 60000) SELECT g, json(CASE WHEN g < 40000 THEN '1' ELSE '{bad' END) AS x FROM c\");
} catch (e) { caught = e.message; }
const after = await db.query('SELECT 7 AS seven');
return { caught, seven: after.rows[0].seven };";
    let e = demo(&app, script).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert!(
        e["result"]["caught"]
            .as_str()
            .is_some_and(|m| m.contains("malformed JSON")),
        "{e}"
    );
    assert_eq!(e["result"]["seven"], 7, "{e}");
}

/// The guest grows its memory in whole 2 MiB steps (so the kernel can back it with huge pages),
/// but never past the limit: under a limit that is not a whole number of steps a script still
/// gets all of it, and filling it is the usual catchable error, not a failure.
#[tokio::test]
async fn memory_grows_in_whole_steps_up_to_an_odd_limit() {
    const MIB: u64 = 1024 * 1024;
    let app = TestApp::spawn_with(StoreKind::Sqlite, "[limits]\nmemory_mb = 17").await;
    let peak = |e: &Value| e["sandbox"]["peak_memory_bytes"].as_u64().unwrap_or(0);
    let e = demo(
        &app,
        "const a = []; for (let i = 0; i < 3000; i++) a.push('x'.repeat(1000) + i); return a.length;",
    )
    .await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert!(
        peak(&e) > 4 * MIB && peak(&e) % (2 * MIB) == 0,
        "{}",
        e["sandbox"]
    );
    let e = demo(
        &app,
        "const a = []; let caught = ''; try { for (;;) a.push('x'.repeat(1000) + a.length); } catch (e) { caught = String(e); } const n = a.length; a.length = 0; return { n, caught };",
    )
    .await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert!(
        e["result"]["caught"]
            .as_str()
            .is_some_and(|m| m.contains("out of memory")),
        "{e}"
    );
    // Past the last whole step below the limit, in wasm pages.
    assert!(
        peak(&e) > 16 * MIB && peak(&e) <= 17 * MIB,
        "{}",
        e["sandbox"]
    );
}

/// A portal whose scripts may take a million rows (64 MiB) from one call, within `memory_mb`,
/// and a PostgreSQL target registered on it.
async fn large_results(memory_mb: u32) -> (TestApp, PgTarget, String) {
    let config = format!(
        "[limits]\nmemory_mb = {memory_mb}\nmax_rows = 1000000\nmax_result_bytes = 67108864"
    );
    let app = TestApp::spawn_with(StoreKind::Sqlite, &config).await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    (app, target, instance)
}

/// A script that runs out of memory while a large result arrives gets a catchable error: what
/// was decoded is released, the rest of the call is read and dropped, and its next call works.
#[tokio::test]
async fn running_out_of_memory_while_rows_arrive_is_catchable() {
    let (app, target, instance) = large_results(16).await;
    let script = "\
let caught = '';
try {
  await db.query(\"SELECT g AS n, repeat('x', 100) AS pad FROM generate_series(1, 400000) g\");
} catch (e) { caught = String(e); }
const after = await db.query('SELECT 2 AS two');
return { caught, two: after.rows[0].two };";
    let e = run(&app, &instance, &target.database, "read", script).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let result = &e["result"];
    assert!(
        result["caught"]
            .as_str()
            .is_some_and(|m| m.contains("out of memory")),
        "{result}"
    );
    assert_eq!(result["two"], 2, "{result}");
}

/// The child holds the rows of a script's latest call so that the end of the script need not
/// free them one by one; a script that drops them and then needs the memory still gets it. The
/// rows here take a third of the limit, and with them held the strings that follow would not
/// fit. (QuickJS itself keeps an awaited value until the script's next `await`, hence `await 0`:
/// without it the rows stay referenced through the loop whatever the child does.)
#[tokio::test]
async fn a_script_that_drops_a_large_result_can_reuse_its_memory() {
    let (app, target, instance) = large_results(48).await;
    let script = "\
let r = await db.query('SELECT g AS n FROM generate_series(1, 180000) g');
const count = r.rows.length;
r = null;
await 0;
const kept = [];
for (let i = 0; i < 30000; i++) kept.push('y'.repeat(1000) + i);
return { count, kept: kept.length };";
    let e = run(&app, &instance, &target.database, "read", script).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"]["count"], 180_000, "{e}");
    assert_eq!(e["result"]["kept"], 30_000, "{e}");
}

#[tokio::test]
async fn a_database_call_that_hangs_is_cancelled_on_the_server() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, TIGHT).await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    let started = std::time::Instant::now();
    let e = run(
        &app,
        &instance,
        &target.database,
        "read",
        "await db.query('SELECT pg_sleep(600)')",
    )
    .await;
    assert_eq!(e["status"], "timed_out", "{e}");
    assert_eq!(kind(&e), "timeout");
    assert!(started.elapsed() < Duration::from_secs(20));
    let mut c = target.inspect().await;
    let mut left = 1;
    for _ in 0..40 {
        left = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut c)
        .await
        .expect("pg_stat_activity");
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the sleeping backend is still there");
}

#[tokio::test]
async fn a_script_whose_target_cannot_be_reached_is_stopped_and_says_so() {
    // No pre-started children: every sandbox child of this process is a job's.
    let config = format!("{TIGHT}\n[executor]\nsandbox_pool = 0");
    let app = TestApp::spawn_with(StoreKind::Sqlite, &config).await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    let admin = app.login(Actor::Admin).await;
    let (status, _) = app
        .patch(
            &format!("/api/v1/instances/{instance}"),
            &admin.token,
            json!({"secret": "not-the-password"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The child gets the script while the connection is attempted, and would spin until its
    // deadline.
    let e = run(
        &app,
        &instance,
        &target.database,
        "read",
        "console.log('started'); while (true) {}",
    )
    .await;
    assert_eq!(
        (e["status"].as_str(), kind(&e)),
        (Some("failed"), "target_unavailable"),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("password authentication failed")),
        "{e}"
    );
    assert_eq!(
        e["logs"],
        json!([]),
        "nothing of a run that never had its database is kept"
    );
    // Stopped, not left to spin until the 2 s deadline.
    let mut left = sandbox_children(std::process::id());
    for _ in 0..20 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = sandbox_children(std::process::id());
    }
    assert!(left.is_empty(), "sandbox children still running: {left:?}");
}

#[tokio::test]
async fn a_kept_connection_carries_nothing_from_one_execution_to_the_next() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    // A write script leaves session state behind: a setting, a temporary table, a session
    // advisory lock, and a statement sqlx prepared.
    let first = run(
        &app,
        &instance,
        &target.database,
        "write",
        "await db.query(\"SELECT set_config('quorum.left', 'behind', false)\");
         await db.query('CREATE TEMP TABLE left_behind (x int)');
         await db.query('SELECT pg_advisory_lock(4711)');
         return (await db.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;",
    )
    .await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let pid = first["result"].as_i64().expect("pid");
    let probe = "const me = (await db.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
        const r = await db.query(\"SELECT current_setting('quorum.left', true) AS setting, to_regclass('pg_temp.left_behind')::text AS temp, (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks, current_setting('application_name') AS app\");
        return {pid: me, ...r.rows[0]};";
    // The connection is reset and kept in the background once the execution has ended; the
    // next execution takes it (else the checks below would prove nothing).
    let mut second = Value::Null;
    for _ in 0..5 {
        second = run(&app, &instance, &target.database, "read", probe).await;
        assert_eq!(second["status"], "succeeded", "{second}");
        if second["result"]["pid"].as_i64() == Some(pid) {
            break;
        }
    }
    let seen = &second["result"];
    assert_eq!(
        seen["pid"].as_i64(),
        Some(pid),
        "the kept connection was not reused: {second}"
    );
    assert!(seen["setting"].is_null() || seen["setting"] == "", "{seen}");
    assert_eq!(
        (&seen["temp"], &seen["locks"]),
        (&Value::Null, &json!(0)),
        "{seen}"
    );
    assert_eq!(
        seen["app"],
        format!("quorum:{}", second["request_id"].as_str().expect("request"))
    );
    // A kept connection the server ended meanwhile is replaced, not an error.
    let mut c = target.inspect().await;
    sqlx::query("SELECT pg_terminate_backend($1, 5000)")
        .bind(i32::try_from(pid).expect("pid"))
        .execute(&mut c)
        .await
        .expect("terminate");
    let third = run(&app, &instance, &target.database, "read", probe).await;
    assert_eq!(third["status"], "succeeded", "{third}");
    assert_ne!(third["result"]["pid"].as_i64(), Some(pid));
}

#[tokio::test]
async fn kept_connections_are_closed_once_idle_too_long() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, "[executor]\ntarget_idle_secs = 1").await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    let e = run(
        &app,
        &instance,
        &target.database,
        "read",
        "return (await db.query('SELECT 1 AS one')).rows;",
    )
    .await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let name = format!("quorum:{}", e["request_id"].as_str().expect("request"));
    let mut c = target.inspect().await;
    let mut open = Vec::new();
    for _ in 0..60 {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&name)
                .fetch_one(&mut c)
                .await
                .expect("pg_stat_activity");
        open.push(n);
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Kept after the execution, then closed (the sweep runs every quarter of the idle time).
    assert_eq!(open.first(), Some(&1), "{open:?}");
    assert_eq!(open.last(), Some(&0), "{open:?}");
}

/// The parent pid and the `comm` of a process, from `/proc`.
fn parent_and_name(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ppid = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|p| p.parse::<u32>().ok())?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some((ppid, comm.trim().to_owned()))
}

/// The sandbox templates of process `parent` (each forks the job children).
fn sandbox_templates(parent: u32) -> Vec<u32> {
    sandbox_processes()
        .into_iter()
        .filter(|&pid| parent_and_name(pid) == Some((parent, "quorum-template".to_owned())))
        .collect()
}

/// Every process running the `quorum-sandbox` binary.
fn sandbox_processes() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("quorum-sandbox\0") && !cmdline.contains("\0precompile\0")
        })
        .collect()
}

/// The sandbox job children of process `parent`, started by it or forked by its template:
/// (pid, environ, open fds).
fn sandbox_children(parent: u32) -> Vec<(u32, Vec<u8>, Vec<String>)> {
    let templates = sandbox_templates(parent);
    let mut out = Vec::new();
    for pid in sandbox_processes() {
        let Some((ppid, comm)) = parent_and_name(pid) else {
            continue;
        };
        if comm != "quorum-sandbox" || !(ppid == parent || templates.contains(&ppid)) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let target = std::fs::read_link(e.path()).unwrap_or_default();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.parse::<u32>().is_ok_and(|n| n > 2) {
                    format!("{name} -> {}", target.display())
                } else {
                    name
                }
            })
            .collect();
        fds.sort();
        out.push((pid, environ, fds));
    }
    out
}

/// How many times the epoch thread of sandbox child `pid` has been switched out, from `/proc`.
fn epoch_thread_switches(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "epoch")
        })
        .and_then(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
}

/// A pre-started child waiting for its job costs nothing: its deadline thread stands still
/// (else it would wake a hundred times a second, counted against the child's `RLIMIT_CPU`
/// before its script has even started) and ticks again once the job is in, so the child's own
/// deadline still stops a script that never yields.
#[tokio::test]
async fn a_waiting_child_stands_still_until_its_job() {
    let app = TestApp::spawn_with(
        StoreKind::Sqlite,
        "[limits]\nwall_ms = 2000\ndb_call_ms = 1000\n[executor]\nsandbox_pool = 2",
    )
    .await;
    let mut waiting = Vec::new();
    for _ in 0..1500 {
        waiting = sandbox_children(std::process::id())
            .into_iter()
            .filter_map(|(pid, _, _)| Some((pid, epoch_thread_switches(pid)?)))
            .collect::<Vec<_>>();
        if waiting.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(waiting.len(), 2, "the pool's two children: {waiting:?}");
    // Past their start-up, into the wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<(u32, u64)> = waiting
        .iter()
        .filter_map(|&(pid, _)| Some((pid, epoch_thread_switches(pid)?)))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (pid, then) in before {
        let now = epoch_thread_switches(pid).expect("the child is still waiting");
        assert!(
            now - then <= 2,
            "child {pid}'s epoch thread ran {} times in a second of waiting",
            now - then
        );
    }
    let e = demo(&app, "for (;;) {}").await;
    assert_eq!(
        (e["status"].as_str(), kind(&e)),
        (Some("timed_out"), "timeout"),
        "{e}"
    );
    // The executor's own stop, 1.5 s later, would say "and was stopped".
    assert_eq!(
        e["error"]["message"], "the script ran longer than 2000 ms",
        "{e}"
    );
}

#[tokio::test]
async fn the_child_has_no_environment_and_no_extra_descriptors() {
    // No pre-started children: the sandbox child found is the job's.
    let app = TestApp::spawn_with(StoreKind::Sqlite, "[executor]\nsandbox_pool = 0").await;
    let script = "await new Promise((r) => setTimeout(r, 3000)); return 1;";
    approve(
        &app,
        &app.shop_id().await,
        "main",
        ("script", "read"),
        script,
    )
    .await;
    // Wait until the child has been forked and has restricted itself (its seccomp filter is in
    // place).
    let mut seen = Vec::new();
    let mut restricted = false;
    for _ in 0..1500 {
        seen = sandbox_children(std::process::id());
        restricted = seen.first().is_some_and(|(pid, _, _)| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.contains("Seccomp:\t2") && s.contains("NoNewPrivs:\t1"))
        });
        if restricted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (pid, environ, fds) = seen.first().cloned().expect("a running sandbox child");
    assert!(
        restricted,
        "child {pid} never showed a seccomp filter and no_new_privs"
    );
    assert!(
        environ.is_empty(),
        "child {pid} environment: {:?}",
        String::from_utf8_lossy(&environ)
    );
    assert_eq!(fds, ["0", "1", "2"], "child {pid} descriptors");
}

/// The sandbox binary and its compiled guest module (in the cache the test apps share).
fn sandbox_and_module() -> (std::path::PathBuf, String) {
    let bin = crate::harness::quorum_bin().with_file_name("quorum-sandbox");
    let out = std::process::Command::new(&bin)
        .args(["precompile", "--cache-dir"])
        .arg(crate::harness::shared_sandbox_cache())
        .output()
        .expect("precompile");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let module = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (bin, module)
}

/// The six probes a `sandbox-selftest` child reports on stderr; each must be refused.
fn assert_probes_refused(stderr: &str) {
    let probes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("selftest "))
        .collect();
    assert_eq!(probes.len(), 6, "{stderr}");
    for line in probes {
        assert!(line.contains(": refused: "), "{line}");
    }
}

/// The probes of the `sandbox-selftest` build try forbidden system calls after the child has
/// restricted itself; every one must be refused.
#[test]
fn forbidden_system_calls_are_refused_inside_the_child() {
    let (bin, module) = sandbox_and_module();
    let out = std::process::Command::new(&bin)
        .args(["run", "--module", &module])
        .env_clear()
        .env("QUORUM_SANDBOX_SELFTEST", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert_probes_refused(&String::from_utf8_lossy(&out.stderr));
}

/// The same probes in a child forked by a template, driven over the template's real control
/// socket: the template itself may fork, its children may not, and they hold nothing but the
/// three descriptors they were sent.
#[test]
fn forbidden_system_calls_are_refused_inside_a_forked_child() {
    use std::io::{IoSlice, Read};
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, OwnedFd};

    use quorum_sandbox_protocol::template::{ForkRequest, GREETING, decode_reply};

    let (bin, module) = sandbox_and_module();
    let (mut control, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut template = std::process::Command::new(&bin)
        .args(["template", "--module", &module])
        .env_clear()
        .env("QUORUM_SANDBOX_SELFTEST", "1")
        .stdin(std::process::Stdio::from(OwnedFd::from(theirs)))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("template");
    let mut greeting = [0u8; 8];
    control.read_exact(&mut greeting).expect("greeting");
    assert_eq!(greeting, GREETING);

    let (child_in, our_in) = std::io::pipe().expect("pipe");
    let (mut our_out, child_out) = std::io::pipe().expect("pipe");
    let (mut our_err, child_err) = std::io::pipe().expect("pipe");
    let request = ForkRequest {
        data_bytes: 1 << 30,
        cpu_secs: 10,
    }
    .encode();
    let fds = [child_in.as_fd(), child_out.as_fd(), child_err.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut ancillary = rustix::net::SendAncillaryBuffer::new(&mut space);
    assert!(ancillary.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
    let sent = rustix::net::sendmsg(
        &control,
        &[IoSlice::new(&request)],
        &mut ancillary,
        rustix::net::SendFlags::empty(),
    )
    .expect("sendmsg");
    assert_eq!(sent, request.len());
    drop((child_in, child_out, child_err));
    let mut reply = [0u8; 4];
    control.read_exact(&mut reply).expect("reply");
    let pid = decode_reply(reply).expect("a forked child");

    // The child says Ready once confined; its descriptors are exactly the three it was sent.
    let mut prefix = [0u8; 4];
    our_out.read_exact(&mut prefix).expect("ready");
    let mut ready = vec![0u8; u32::from_be_bytes(prefix) as usize];
    our_out.read_exact(&mut ready).expect("ready");
    let ready: Value = serde_json::from_slice(&ready).expect("ready json");
    assert_eq!(
        ready["ready"]["protections"]["seccomp"],
        json!(true),
        "{ready}"
    );
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the child's fds")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"]);
    assert_eq!(
        parent_and_name(pid),
        Some((template.id(), "quorum-sandbox".to_owned()))
    );
    // The child took the request's rlimits (the template's own are higher), and no processes.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let limit = |name: &str| -> Vec<String> {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .take(2)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        limit("Max data size"),
        ["1073741824", "1073741824"],
        "{limits}"
    );
    assert_eq!(limit("Max cpu time"), ["10", "10"], "{limits}");
    assert_eq!(limit("Max processes"), ["0", "0"], "{limits}");

    // No job: the child exits quietly once its stdin closes, after the probes.
    drop(our_in);
    let mut stderr = String::new();
    our_err.read_to_string(&mut stderr).expect("stderr");
    assert_probes_refused(&stderr);

    // Closing the control socket ends the template, cleanly.
    drop(control);
    let status = template.wait().expect("template exit");
    assert!(status.success(), "template ended with {status}");
}

/// Has `replica` (another portal process) run approved request `id` now, as its author signed in
/// with `token`; returns the execution it started.
async fn run_on(app: &TestApp, replica: &crate::replicas::Replica, id: &str, token: &str) -> Value {
    let r = app
        .client
        .post(format!("{}/api/v1/requests/{id}/run", replica.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("run");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.json().await.expect("execution")
}

/// Security matrix S12: a portal killed mid-execution takes its sandbox child with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_portal_kills_the_child() {
    let app = TestApp::spawn(StoreKind::Postgres).await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "manual").await;
    let script = "await new Promise((r) => setTimeout(r, 60000));";
    let id = approve(
        &app,
        &instance,
        &target.database,
        ("script", "read"),
        script,
    )
    .await;
    // No pre-started children: the sandbox child found is the job's.
    let mut replica =
        crate::replicas::start_replica_with(&app, &[("QUORUM__EXECUTOR__SANDBOX_POOL", "0")]).await;
    let dan = app.login(Actor::Developer).await;
    run_on(&app, &replica, &id, &dan.token).await;
    let portal = replica.child.id();
    let mut child = None;
    for _ in 0..1500 {
        child = sandbox_children(portal).first().map(|c| c.0);
        if child.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let child = child.expect("the portal started a sandbox child");
    replica.child.kill().expect("SIGKILL the portal");
    replica.child.wait().expect("reap the portal");
    let alive = || {
        std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
    };
    let killed = std::time::Instant::now();
    while alive() && killed.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !alive(),
        "sandbox child {child} outlived its portal by a second"
    );
}

/// Children forked from one template share its start-up, not its state: each gets its own
/// `Math.random` seed. A template that dies (here: SIGKILL) is replaced, and the next script
/// runs as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forked_children_do_not_share_a_seed_and_a_dead_template_is_replaced() {
    let app = TestApp::spawn(StoreKind::Postgres).await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "manual").await;
    let replica = crate::replicas::start_replica(&app).await;
    let portal = replica.child.id();
    let script = "return [Math.random(), Math.random()];";
    let run_once = async || {
        let id = approve(
            &app,
            &instance,
            &target.database,
            ("script", "read"),
            script,
        )
        .await;
        // Each sign-in may end the oldest session, so the token is fresh for each run.
        let dan = app.login(Actor::Developer).await;
        let started = run_on(&app, &replica, &id, &dan.token).await;
        let e = finished(&app, &dan.token, started["id"].as_str().expect("id")).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["sandbox"]["seccomp"], true, "{e}");
        e["result"].clone()
    };
    let first = run_once().await;
    let second = run_once().await;
    assert_ne!(
        first, second,
        "two forked children drew the same random numbers"
    );

    let templates = sandbox_templates(portal);
    assert_eq!(templates.len(), 1, "the portal runs one template");
    let old = templates[0];
    let pid = i32::try_from(old)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        .expect("SIGKILL the template");
    for _ in 0..100 {
        if !sandbox_templates(portal).contains(&old) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let third = run_once().await;
    assert!(third.as_array().is_some_and(|a| a.len() == 2), "{third}");
    let now = sandbox_templates(portal);
    assert!(
        now.len() == 1 && now[0] != old,
        "the dead template {old} was not replaced: {now:?}"
    );
}

#[tokio::test]
async fn check_reports_syntax_errors_with_their_position_and_stores_them_per_revision() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let dan = app.login(Actor::Developer).await;
    let check = |body: Value| {
        let app = &app;
        let token = dan.token.clone();
        async move { app.post("/api/v1/requests/check", &token, body).await }
    };
    let cases = [
        // (kind, engine, content, ok, line of the first error)
        (
            "script",
            "postgres",
            "const r = await db.query('SELECT 1');\nreturn r.rows;",
            true,
            None,
        ),
        (
            "script",
            "postgres",
            "const a = 1;\nconst b = ;\nreturn a;",
            false,
            Some(2),
        ),
        (
            "script",
            "mongodb",
            "return await db.orders.find({}).toArray();",
            true,
            None,
        ),
        (
            "query",
            "mongodb",
            "db.orders.find({ status: 'open' }).limit(5)",
            true,
            None,
        ),
        (
            "query",
            "mongodb",
            "db.orders.find({ status: })",
            false,
            Some(1),
        ),
        (
            "query",
            "postgres",
            "SELECT id FROM orders WHERE id = $1",
            true,
            None,
        ),
        (
            "query",
            "postgres",
            "SELECT 1;\nSELEC id FROM orders",
            false,
            Some(2),
        ),
        ("query", "sqlite", "SELECT [id] FROM `orders`", true, None),
    ];
    for (kind, engine, content, ok, line) in cases {
        let (status, r) = check(json!({"kind": kind, "engine": engine, "content": content})).await;
        assert_eq!(status, StatusCode::OK, "{content}: {r}");
        assert_eq!(r["ok"], ok, "{content}: {r}");
        assert_eq!(r["errors"][0]["line"].as_u64(), line, "{content}: {r}");
        if !ok {
            assert!(
                r["errors"][0]["column"].as_u64().is_some(),
                "{content}: {r}"
            );
        }
    }
    // SQL statements are classified for each mode.
    let (_, r) = check(json!({"kind": "query", "engine": "postgres", "content": "SELECT 1; DELETE FROM t; COMMIT"})).await;
    let modes: Vec<(bool, bool)> = r["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .map(|s| (s["read_ok"] == true, s["write_ok"] == true))
        .collect();
    assert_eq!(modes, [(true, true), (false, true), (false, false)], "{r}");
    // A script may not escape its wrapper to run at check time.
    let (_, r) = check(
        json!({"kind": "script", "engine": "sqlite", "content": "}); for (;;) {} (async () => {"}),
    )
    .await;
    assert_eq!(r["ok"], false, "{r}");
    // Bad bodies are refused clearly.
    for (body, code) in [
        (
            json!({"kind": "script", "engine": "oracle", "content": "x"}),
            "invalid_body",
        ),
        (
            json!({"kind": "script", "engine": "sqlite", "content": "  "}),
            "validation_failed",
        ),
        (
            json!({"kind": "script", "engine": "sqlite"}),
            "missing_field",
        ),
    ] {
        let (status, r) = check(body.clone()).await;
        assert_eq!(
            (status, r["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{body}: {r}"
        );
    }
    // Each revision keeps what the check found when it was saved.
    let body = json!({"pod_id": app.pod_id("payments").await, "instance_id": app.shop_id().await, "database": "main",
        "kind": "script", "mode": "read", "content": "return 1 +;", "justification": "Checking the syntax check"});
    let (status, created) = app.post("/api/v1/requests", &dan.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let check = &created["revisions"][0]["check"];
    assert_eq!(
        (check["ok"].as_bool(), check["errors"][0]["line"].as_u64()),
        (Some(false), Some(1)),
        "{created}"
    );
}
