//! The `quorum` binary's subcommands, run as a user would run them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use reqwest::StatusCode;

use crate::harness::{StoreKind, TestApp, pg_admin_url, quorum_bin};
use crate::store_tests;

fn quorum(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(quorum_bin());
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn quorum");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `quorum bench-sandbox`, as `cargo xtask bench` runs it (fewest iterations): every row of the
/// report is there with a measured figure, the script's loop time was read, and the kept-connection
/// rows did take a kept connection.
#[test]
fn bench_sandbox_reports_every_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_string_lossy();
    let out = quorum(
        &[
            "bench-sandbox",
            "--postgres-url",
            &pg_admin_url(),
            "--iterations",
            "5",
        ],
        &[("QUORUM__DATA_DIR", &data), ("QUORUM__LOG__FILTER", "warn")],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    let p50 = |name: &str| -> f64 {
        let line = report
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name:?} in:\n{report}"));
        line[name.len()..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no figure in {line:?}"))
    };
    for name in [
        "SELECT 1 script, child started from scratch",
        "SELECT 1 script, child forked on demand ",
        "SELECT 1 script, pre-started child ",
        "SELECT 1 script, child forked on demand, new connection",
        "  opening that connection alone (in the in-process figure)",
        "SELECT 1 script, child forked on demand, kept connection",
        "SELECT 1 script, pre-started child, kept connection",
        "100 sequential db.query calls, child forked on demand",
        "100 sequential db.query calls, pre-started child",
        "sum of 100 000 rows from one db.query, child forked on demand",
        "sum of 100 000 rows from one db.query, pre-started child",
        "  the same rows through the wrapped handle, no sandbox",
    ] {
        let ms = p50(name);
        assert!(ms > 0.0, "{name}: {ms} ms in:\n{report}");
    }
    assert!(
        report.contains("the sandbox adds ")
            && report.contains("the script's loop over the rows alone"),
        "{report}"
    );
    let taken: usize = report
        .split("a kept connection was there to take in ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no kept-connection count in:\n{report}"));
    assert!(
        taken == 9,
        "a kept connection was taken in {taken} of 10 runs, not in all but the first:\n{report}"
    );
}

#[test]
fn check_config_prints_the_effective_config_redacted() {
    let secret = "k8Jd9xk2LrT0vN4mW7bZp1sY6cF3hA5eU8iO2gK9";
    let o = quorum(
        &["check-config"],
        &[
            ("QUORUM__AUTH__JWT_SECRET", secret),
            ("QUORUM__SERVER__ADDR", "127.0.0.1:9000"),
            ("QUORUM__DATA_DIR", "/tmp/q"),
            ("QUORUM__SLACK__BOT_TOKEN", "xoxb-111-222-secretpart"),
            ("QUORUM__SLACK__DEFAULT_CHANNEL", "#db"),
        ],
        None,
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("bot_token = \"[redacted]\""), "{out}");
    assert!(!out.contains("secretpart"), "{out}");
    assert!(out.contains("addr = \"127.0.0.1:9000\""), "{out}");
    assert!(out.contains("data_dir = \"/tmp/q\""), "{out}");
    assert!(out.contains("jwt_secret = \"[redacted]\""), "{out}");
    assert!(!out.contains(secret), "{out}");
}

#[test]
fn bad_configuration_is_refused_with_the_reason() {
    let cases: [(&[(&str, &str)], &str); 9] = [
        (
            &[("QUORUM__LIMITS__WALL_MS", "50")],
            "limits.wall_ms must be between 100 and 300000",
        ),
        (
            &[("QUORUM__LIMITS__MEMORY_MB", "4")],
            "limits.memory_mb must be between 16 and 1024",
        ),
        (
            &[("QUORUM__EXECUTOR__SANDBOX_DATA_MB", "1")],
            "executor.sandbox_data_mb must be between 64 and 65536",
        ),
        (&[("QUORUM__SERVER__ADRESS", "127.0.0.1:1")], "adress"),
        (
            &[("QUORUM__AUTH__JWT_SECRET", "short")],
            "at least 32 bytes",
        ),
        (
            &[(
                "QUORUM__AUTH__JWT_SECRET",
                "CHANGE-ME-to-a-long-random-value-please-000",
            )],
            "placeholder",
        ),
        (
            &[("QUORUM__SLACK__BOT_TOKEN", "xoxb-1-2-3")],
            "slack.default_channel is required",
        ),
        (
            &[("QUORUM__SLACK__SIGNING_SECRET", "0123456789abcdef")],
            "slack.signing_secret needs slack.bot_token",
        ),
        (
            &[("QUORUM__SLACK__BOT_TOKEN", "not-a-token")],
            "slack.bot_token must be a Slack bot token",
        ),
    ];
    for (env, expected) in cases {
        let o = quorum(&["check-config"], env, None);
        assert_eq!(o.status.code(), Some(2), "{env:?}");
        assert!(text(&o).contains(expected), "{env:?}: {}", text(&o));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("quorum.toml");
    std::fs::write(
        &file,
        "[server]\naddr = \"127.0.0.1:9100\"\ncolour = \"blue\"\n",
    )
    .expect("write");
    let o = quorum(
        &["--config", &file.to_string_lossy(), "check-config"],
        &[],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("colour"), "{}", text(&o));
    let o = quorum(
        &["--config", "/nonexistent/quorum.toml", "check-config"],
        &[],
        None,
    );
    assert!(text(&o).contains("does not exist"), "{}", text(&o));
}

#[test]
fn migrate_creates_the_sqlite_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let o = quorum(
        &["migrate"],
        &[("QUORUM__DATA_DIR", &data.to_string_lossy())],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("migrations applied"));
    assert!(data.join("quorum.db").exists());
    // Idempotent.
    assert!(
        quorum(
            &["migrate"],
            &[("QUORUM__DATA_DIR", &data.to_string_lossy())],
            None
        )
        .status
        .success()
    );
}

store_tests! {
    async fn user_create_reads_the_password_from_stdin_and_creates_the_pod(kind) {
        let app = TestApp::spawn(kind).await;
        let data = app.data_dir.path().to_string_lossy().into_owned();
        let url = app.database_url();
        let env = [("QUORUM__DATA_DIR", data.as_str()), ("QUORUM__DATABASE__URL", url.as_str())];
        let args = ["user", "create", "--email", "ops@example.com", "--name", "Olga Ops", "--role", "manager", "--pod", "platform"];
        let o = quorum(&args, &env, Some("too short\n"));
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o).contains("at least 12 characters"), "{}", text(&o));

        let o = quorum(&args, &env, Some("olga's operator passphrase\n"));
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("created manager ops@example.com"), "{}", text(&o));

        let o = quorum(&args, &env, Some("olga's operator passphrase\n"));
        assert_eq!(o.status.code(), Some(2), "duplicate email");
        assert!(text(&o).contains("already exists"), "{}", text(&o));

        let s = app.login_as("ops@example.com", "olga's operator passphrase").await;
        assert_eq!(s.body["user"]["must_change_password"], false, "CLI users are trusted operators");
        let (status, me) = app.get("/api/v1/me", &s.token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["home_pod"]["name"], "platform");
        assert_eq!(me["managed_pods"][0]["name"], "platform");
    }
}

/// `quorum serve` on a free loopback port with only `env` (and that address) in its
/// environment; its port and process.
fn serve(env: &[(&str, &std::ffi::OsStr)], stderr: Stdio) -> (u16, std::process::Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(quorum_bin())
        .arg("serve")
        .env_clear()
        .env("QUORUM__SERVER__ADDR", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn");
    (port, child)
}

/// SIGTERM: a graceful exit, whose status is returned.
fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    child.wait().expect("wait")
}

#[tokio::test]
async fn serve_honours_addr_and_data_dir_from_the_environment() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = crate::harness::shared_sandbox_cache();
    let (port, child) = serve(
        &[
            ("QUORUM__DATA_DIR", dir.path().as_os_str()),
            // The guest it prepares at start is found compiled, not compiled again.
            ("QUORUM__EXECUTOR__SANDBOX_CACHE_DIR", cache.as_os_str()),
        ],
        Stdio::null(),
    );
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = app
            .client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            ready = r.status() == StatusCode::OK;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = terminate(child);
    assert!(ready, "server did not answer on the configured address");
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(dir.path().join("quorum.db").exists());
    assert!(
        dir.path().join("jwt.key").exists(),
        "a signing key is generated when none is configured"
    );
}

/// A portal whose `quorum-sandbox` is missing still starts and serves everything else; its log
/// and `/readyz` say that scripts cannot run, and why.
#[tokio::test]
async fn serve_without_the_sandbox_says_that_scripts_cannot_run() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::fs::File::create(dir.path().join("stderr")).expect("log file");
    let data = dir.path().join("data");
    let (port, child) = serve(
        &[
            ("QUORUM__DATA_DIR", data.as_os_str()),
            (
                "QUORUM__EXECUTOR__SANDBOX_BIN",
                std::ffi::OsStr::new("/nonexistent/quorum-sandbox"),
            ),
        ],
        Stdio::from(log),
    );
    let mut said = serde_json::Value::Null;
    for _ in 0..200 {
        if let Ok(r) = app
            .client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            assert_eq!(r.status(), StatusCode::OK);
            said = r.json().await.expect("readyz body");
            if said["sandbox"] != "preparing" {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = terminate(child);
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert_eq!(said["sandbox"], "unavailable", "{said}");
    let log = std::fs::read_to_string(dir.path().join("stderr")).expect("log");
    assert!(
        !log.contains('\u{1b}'),
        "terminal colours in a log file: {log}"
    );
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the script sandbox is not available"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("/nonexistent/quorum-sandbox"), "{log}");
}
