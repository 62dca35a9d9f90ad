//! `cargo xtask`: the commands the README names.
//!
//! - `cargo xtask run [-- ARGS]`: build and start the portal with demo data on
//!   http://127.0.0.1:8080 (SQLite under ./data; restarting keeps the data).
//! - `cargo xtask test [-- FILTER…]`: format check, clippy with warnings denied, and every test,
//!   with a throwaway PostgreSQL cluster started for the run and removed afterwards.
//!
//! - `cargo xtask bench`: start a release build with demo data and print sign-in and
//!   authenticated-request latency percentiles.
//! - `cargo xtask fuzz [SECONDS]`: run the libFuzzer target on the sandbox's frame and host-call
//!   decoders (default 60 s; `test` runs it too).
//! - `cargo xtask deny`: the dependency checks `test` runs (licences, bans, sources, advisories).
//!
//! Only the standard library is used, so this builds in seconds on a fresh machine.

use std::env;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod advisories;
mod frontend;

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let mut args: Vec<String> = env::args().skip(1).collect();
    let command = if args.is_empty() {
        String::from("help")
    } else {
        args.remove(0)
    };
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    let result = match command.as_str() {
        "run" => run(&args),
        "test" | "ci" => test(&args),
        "bench" => bench(&args),
        "fuzz" => fuzz(&args),
        "deny" => supply_chain(),
        _ => {
            eprintln!(
                "usage: cargo xtask run [-- quorum serve args]\n       cargo xtask test [-- test filters]\n       cargo xtask bench [ITERATIONS]\n       cargo xtask fuzz [SECONDS]\n       cargo xtask deny"
            );
            return if command == "help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The checkout `cargo xtask` was run in. `cargo run` sets `CARGO_MANIFEST_DIR` for the process;
/// the compile-time value is only a fallback, because two checkouts sharing one target directory
/// share this binary too.
fn root() -> PathBuf {
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Cargo in this checkout, telling the portal's build script where this checkout's UI is (see
/// `server/build.rs`: checkouts sharing a target directory would otherwise share one).
fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    c.current_dir(root())
        .env("QUORUM_UI_DIST", root().join("frontend").join("dist"));
    c
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}

fn status(mut cmd: Command, what: &str) -> Result<()> {
    let started = Instant::now();
    let s = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if s.success() {
        eprintln!("    {what}: ok in {:.1} s", started.elapsed().as_secs_f64());
        Ok(())
    } else {
        Err(format!("{what} failed ({s})"))
    }
}

fn run(args: &[String]) -> Result<()> {
    frontend::build_if_changed()?;
    step("building quorum and its script sandbox");
    wasm_toolchain()?;
    build_binaries(&[])?;
    step("starting the portal (Ctrl-C to stop)");
    let mut serve = Command::new(target_dir().join("debug").join("quorum"));
    serve
        .current_dir(root())
        .arg("serve")
        .arg("--demo")
        .args(args);
    let s = serve
        .status()
        .map_err(|e| format!("cannot start quorum: {e}"))?;
    // Ctrl-C reaches both processes; the portal's clean exit is ours.
    if s.success() || s.code().is_none() {
        Ok(())
    } else {
        Err(format!("quorum exited with {s}"))
    }
}

fn test(args: &[String]) -> Result<()> {
    let started = Instant::now();
    step("cargo fmt --check");
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    status(fmt, "cargo fmt --check")?;
    let mut fmt_guest = cargo();
    fmt_guest.args([
        "fmt",
        "--manifest-path",
        "sandbox/guest/Cargo.toml",
        "--",
        "--check",
    ]);
    status(fmt_guest, "cargo fmt --check (sandbox guest)")?;
    let mut fmt_fuzz = cargo();
    fmt_fuzz.args([
        "fmt",
        "--manifest-path",
        "sandbox/protocol/fuzz/Cargo.toml",
        "--",
        "--check",
    ]);
    status(fmt_fuzz, "cargo fmt --check (fuzz target)")?;
    wasm_toolchain()?;

    step("cargo clippy --workspace --all-targets -- -D warnings");
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    status(clippy, "cargo clippy")?;

    step(
        "cargo deny: bans, licences, sources and advisories (the portal, the sandbox guest, the fuzz target)",
    );
    supply_chain()?;

    step(&format!(
        "fuzzing the sandbox's frame and host-call decoders for {FUZZ_SECONDS} s (security matrix S16)"
    ));
    fuzz_for(FUZZ_SECONDS)?;

    step(
        "building the binaries the tests drive and the tests (with test-only failpoints and sandbox probes)",
    );
    // Every target in one build: the tests' dev-dependencies widen the features of shared
    // dependencies (gimli, regex, …), so binaries built on their own would be built again,
    // cranelift and wasmtime included, when the tests are. Built this way the test run below
    // compiles nothing.
    let mut build = cargo();
    build.args([
        "build",
        "--workspace",
        "--all-targets",
        "--features",
        TEST_FEATURES,
    ]);
    status(build, "cargo build (binaries and tests)")?;

    step("frontend: packages and the API types generated from the OpenAPI document");
    frontend::packages()?;
    let quorum = target_dir().join("debug").join("quorum");
    if frontend::api_types(&quorum)? {
        if env::var_os("CI").is_some() {
            return Err("frontend/openapi.json and src/api/schema.d.ts were out of date; run `cargo xtask test` and commit them".into());
        }
        eprintln!(
            "    the API changed: regenerated frontend/openapi.json and src/api/schema.d.ts (commit them)"
        );
    }
    frontend::check_and_build()?;
    let chromium = frontend::chromium()?;

    step("starting a throwaway PostgreSQL cluster");
    let cluster = PgCluster::start()?;
    eprintln!(
        "    PostgreSQL on 127.0.0.1:{} in {}",
        cluster.port,
        cluster.dir.display()
    );

    step("starting a throwaway MongoDB-wire server (secantusdb)");
    let mongo = MongoServer::start(false)?;
    let standalone = MongoServer::start(true)?;
    eprintln!(
        "    secantusdb on 127.0.0.1:{} (replica set) and 127.0.0.1:{} (standalone)",
        mongo.port, standalone.port
    );

    step("running every test (each store test on SQLite and PostgreSQL)");
    let nextest = Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut tests = cargo();
    if nextest {
        tests.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        tests.args(["test", "--workspace", "--no-fail-fast"]);
    }
    // The same features as the build above, so building the tests does not replace the
    // binaries they drive with ones lacking the test hooks.
    tests
        .args(["--features", TEST_FEATURES])
        .args(args)
        .env("QUORUM_TEST_PG_URL", cluster.url())
        .env("QUORUM_TEST_MONGO_URL", mongo.url())
        .env("QUORUM_TEST_MONGO_STANDALONE_URL", standalone.url())
        .env("INSTA_UPDATE", "no");
    let mut result = status(tests, "tests");
    drop(mongo);
    drop(standalone);
    drop(cluster);
    if result.is_ok() {
        result = browser_tests(&quorum, &chromium);
    }
    eprintln!(
        "\nxtask test finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    result
}

/// Licences, banned crates and sources of every dependency (`deny.toml`), then security
/// advisories (see [`advisories`]), installing cargo-deny from crates.io when it is missing.
fn supply_chain() -> Result<()> {
    cargo_tool("deny")?;
    for manifest in advisories::MANIFESTS {
        let mut deny = cargo();
        deny.args([
            "deny",
            "--manifest-path",
            manifest,
            "check",
            "bans",
            "licenses",
            "sources",
        ])
        .current_dir(root());
        status(deny, &format!("cargo deny ({manifest})"))?;
    }
    advisories::check()
}

/// Makes sure `cargo SUBCOMMAND` works, installing the `cargo-SUBCOMMAND` crate from crates.io
/// when it does not.
fn cargo_tool(subcommand: &str) -> Result<()> {
    let have = cargo()
        .args([subcommand, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if have {
        return Ok(());
    }
    let krate = format!("cargo-{subcommand}");
    eprintln!("    installing {krate} from crates.io (once)");
    let mut install = cargo();
    // The tool's own release profile may ask for fat LTO in one codegen unit (cargo-deny does),
    // which makes installing it on a 2-core machine slow for nothing these checks notice.
    install
        .args(["install", &krate, "--locked"])
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
    status(install, &format!("cargo install {krate}"))
}

/// How long `cargo xtask test` fuzzes (the security matrix's "60 s per PR").
const FUZZ_SECONDS: u64 = 60;
/// The frame cap the fuzz target reads with (`sandbox/protocol/fuzz/fuzz_targets/decode.rs`);
/// no single allocation may reach twice it.
const FUZZ_MALLOC_LIMIT_MB: u64 = 1;
/// The longest input libFuzzer makes, in bytes.
const FUZZ_MAX_LEN: usize = 65_536;
/// Files the kept corpus may hold before a run minimizes it. libFuzzer writes a new file for each
/// input it shrinks and leaves the old one, so the directory grows by hundreds of files a run;
/// past 16 384 files the list of their names that libFuzzer itself makes (1 MiB) trips the
/// malloc limit above, and every run would fail with an out-of-memory no input caused.
const FUZZ_CORPUS_FILES: usize = 8192;

fn fuzz(args: &[String]) -> Result<()> {
    let seconds: u64 = args
        .first()
        .map(|a| {
            a.parse()
                .map_err(|_| format!("{a:?} is not a number of seconds"))
        })
        .transpose()?
        .unwrap_or(FUZZ_SECONDS);
    step(&format!("fuzzing the sandbox's decoders for {seconds} s"));
    fuzz_for(seconds)
}

/// Runs the `decode` fuzz target under AddressSanitizer with libFuzzer for `seconds`, with the
/// security matrix's memory bounds: no allocation of 2 × the frame cap or more, 512 MB of RSS.
/// cargo-fuzz is installed from crates.io when missing. The sanitizer flags it passes are
/// unstable; `RUSTC_BOOTSTRAP=1` lets the machine's stable compiler accept them (there is no
/// nightly toolchain to fetch). The corpus grows across runs in the target directory, starting
/// from the committed seeds; a failing input is kept there and named in the error.
fn fuzz_for(seconds: u64) -> Result<()> {
    cargo_tool("fuzz")?;
    let work = target_dir().join("fuzz");
    let corpus = work.join("corpus").join("decode");
    let artifacts = work.join("artifacts").join("decode");
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let seeds = root().join("sandbox/protocol/fuzz/seeds");
    // `cargo fuzz <what> decode` on the kept corpus, built into the target directory.
    let cargo_fuzz = |what: &str| {
        let mut c = cargo();
        c.current_dir(root().join("sandbox/protocol"))
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", what, "decode", "--target-dir"])
            .arg(work.join("target"))
            .arg(&corpus);
        c
    };
    let files = std::fs::read_dir(&corpus).map_or(0, Iterator::count);
    if files > FUZZ_CORPUS_FILES {
        let log_path = work.join("cmin.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let mut cmin = cargo_fuzz("cmin");
        cmin.arg("--")
            .arg("-rss_limit_mb=2048")
            .arg(format!("-max_len={FUZZ_MAX_LEN}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        status(cmin, &format!("minimizing the fuzz corpus ({files} files)"))
            .map_err(|e| format!("{e}; its log is {}", log_path.display()))?;
    }
    let mut run = cargo_fuzz("run");
    run.arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-malloc_limit_mb={FUZZ_MALLOC_LIMIT_MB}"))
        .arg("-rss_limit_mb=512")
        .arg(format!("-max_len={FUZZ_MAX_LEN}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    // libFuzzer reports every new input; its log goes to a file, and its last lines here.
    let log_path = work.join("decode.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    run.stdout(Stdio::null()).stderr(Stdio::from(log));
    let result = status(run, "cargo fuzz run decode");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    match result {
        Ok(()) => {
            if let Some(done) = lines.iter().rev().find(|l| l.starts_with("Done ")) {
                eprintln!("    {done}; corpus in {}", corpus.display());
            }
            Ok(())
        }
        Err(e) => {
            // From the first report of the crash (a panic, a sanitizer or libFuzzer error).
            let from = lines
                .iter()
                .position(|l| l.contains("panicked at") || l.contains("ERROR:"))
                .unwrap_or(lines.len().saturating_sub(40));
            for line in lines.iter().skip(from).take(30) {
                eprintln!("    | {line}");
            }
            Err(format!(
                "{e}; the whole log is {}, the failing input is in {} (replay it with `RUSTC_BOOTSTRAP=1 cargo fuzz run decode FILE` in sandbox/protocol)",
                log_path.display(),
                artifacts.display()
            ))
        }
    }
}

/// Starts the portal with demo data on a free port in a fresh data directory, and a second one
/// whose `quorum-sandbox` is missing (what the pages say when scripts cannot run), and runs the
/// browser tests against them.
fn browser_tests(quorum: &Path, chromium: &Path) -> Result<()> {
    let dir = env::temp_dir().join(format!("quorum-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let broken = dir.join("no-sandbox");
    std::fs::create_dir_all(&broken).map_err(|e| format!("creating {}: {e}", broken.display()))?;
    let start = |data: &Path, env: &[(&str, &str)]| {
        let log = data.join("portal.log");
        std::fs::File::create(&log)
            .map_err(|e| format!("creating {}: {e}", log.display()))
            .and_then(|f| demo_portal(quorum, data, Stdio::from(f), env))
            .map_err(|e| format!("{e}; see {}", log.display()))
    };
    let (portal, port) = start(&dir, &[])?;
    let (no_sandbox, no_sandbox_port) = start(
        &broken,
        &[(
            "QUORUM__EXECUTOR__SANDBOX_BIN",
            "/nonexistent/quorum-sandbox",
        )],
    )?;
    let result = frontend::browser_tests(
        &format!("http://127.0.0.1:{port}"),
        &format!("http://127.0.0.1:{no_sandbox_port}"),
        chromium,
    );
    drop((portal, no_sandbox));
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// `quorum serve --demo` on a free loopback port with its data in `data`, rate limits lifted
/// (the tests and benchmarks sign in and call the API faster than a person would: the default
/// 50 API requests a second per address is a few hundred milliseconds of the benchmark's
/// sequential requests), once `/readyz` answers 200.
fn demo_portal(
    quorum: &Path,
    data: &Path,
    stderr: Stdio,
    env: &[(&str, &str)],
) -> Result<(Portal, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let child = Command::new(quorum)
        .args(["serve", "--demo"])
        .current_dir(data)
        .env("QUORUM__SERVER__ADDR", format!("127.0.0.1:{port}"))
        .env("QUORUM__DATA_DIR", data)
        .env("QUORUM__RATE_LIMIT__AUTH_PER_MINUTE", "1000000")
        .env("QUORUM__RATE_LIMIT__AUTH_BURST", "1000000")
        .env("QUORUM__RATE_LIMIT__API_PER_SECOND", "1000000")
        .env("QUORUM__RATE_LIMIT__API_BURST", "1000000")
        .env("QUORUM__LOG__FILTER", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start quorum: {e}"))?;
    let portal = Portal(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/readyz", &[], "").map(|r| r.0) != Ok(200) {
        if Instant::now() > deadline {
            return Err("the portal did not become ready".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((portal, port))
}

/// The superuser password of the throwaway cluster (it listens on loopback only).
const PG_PASSWORD: &str = "quorum-test";

/// A PostgreSQL cluster in a temporary directory, on a free port: trust on its socket, SCRAM
/// passwords over TCP.
/// Stopped and removed when dropped.
struct PgCluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    run_as: Option<String>,
}

impl PgCluster {
    fn start() -> Result<Self> {
        let bin = postgres_bin_dir()?;
        clean_stale_clusters(&bin);
        let dir = env::temp_dir().join(format!("quorum-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        std::fs::write(dir.join("xtask.pid"), std::process::id().to_string())
            .map_err(|e| e.to_string())?;
        // PostgreSQL refuses to run as root; use its own system account then.
        let run_as = if is_root() {
            Some(String::from("postgres"))
        } else {
            None
        };
        if let Some(user) = &run_as {
            status(
                cmd_in("chown", &["-R", user, &dir.to_string_lossy()]),
                "chown cluster dir",
            )?;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let cluster = PgCluster {
            dir,
            port,
            bin,
            run_as,
        };
        let data = cluster.dir.join("data");
        // Trust on the socket, passwords over TCP: the tests connect over TCP, so a wrong
        // instance password really fails.
        let pwfile = cluster.dir.join("pwfile");
        std::fs::write(&pwfile, PG_PASSWORD).map_err(|e| e.to_string())?;
        if let Some(user) = &cluster.run_as {
            status(
                cmd_in("chown", &[user, &pwfile.to_string_lossy()]),
                "chown pwfile",
            )?;
        }
        let mut initdb = cluster.pg("initdb");
        initdb
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--username=postgres",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("-D")
            .arg(&data);
        initdb.stdout(Stdio::null());
        status(initdb, "initdb")?;
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400",
            cluster.port,
            cluster.dir.display()
        );
        let mut start = cluster.pg("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(cluster.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "start"]);
        start.stdout(Stdio::null());
        status(start, "pg_ctl start")?;
        Ok(cluster)
    }

    fn pg(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut stop = self.pg("pg_ctl");
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        stop.stdout(Stdio::null()).stderr(Stdio::null());
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&self.dir);
        eprintln!("    PostgreSQL cluster stopped and removed");
    }
}

/// A `secantusdb` server (MongoDB's wire protocol, from PyPI) on a free port, keeping its data in
/// memory; stopped when dropped. Installed with pip when missing.
struct MongoServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// Started with `--standalone`: no replica set, so no transactions.
    standalone: bool,
}

impl MongoServer {
    fn start(standalone: bool) -> Result<Self> {
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| {
                Command::new(p)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .ok_or("Python 3 is missing: the MongoDB-wire test server (secantusdb) runs on it; install python3 and pip")?;
        let has_module = || {
            Command::new(python)
                .args(["-c", "import secantus"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has_module() {
            eprintln!("    secantus not found: installing secantusdb from PyPI");
            let mut pip = cmd_in(python, &["-m", "pip", "install", "--quiet", "secantusdb"]);
            pip.stdout(Stdio::null());
            status(pip, "pip install secantusdb").map_err(|e| {
                format!(
                    "{e}; the MongoDB tests need the secantusdb package (`pip install secantusdb`)"
                )
            })?;
            if !has_module() {
                return Err("secantusdb was installed but `import secantus` still fails".into());
            }
        }
        let dir = env::temp_dir().join(format!(
            "quorum-mongo-{}{}",
            std::process::id(),
            if standalone { "-standalone" } else { "" }
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let log_path = dir.join("secantus.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let child = Command::new(python)
            .args(["-m", "secantus", "--host", "127.0.0.1", "--port", "0"])
            .args(["--storage-path", ":memory:", "--log-level", "INFO"])
            .args(standalone.then_some("--standalone"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start secantus: {e}"))?;
        let mut server = Self {
            child,
            port: 0,
            dir,
            standalone,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(port) = text
                .split("listening on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
            {
                server.port = port;
                return Ok(server);
            }
            if let Ok(Some(code)) = server.child.try_wait() {
                return Err(format!(
                    "secantus exited ({code}) before listening:\n{text}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("secantus did not start listening within 60 s".into())
    }

    /// `?replicaSet=secantus`, so drivers run transactions as on a replica set; a standalone
    /// server is reached directly.
    fn url(&self) -> String {
        if self.standalone {
            format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
        } else {
            format!("mongodb://127.0.0.1:{}/?replicaSet=secantus", self.port)
        }
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        eprintln!("    secantusdb stopped");
    }
}

/// Removes clusters left behind by an xtask that was killed before it could clean up.
fn clean_stale_clusters(bin: &Path) {
    let Ok(entries) = std::fs::read_dir(env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("quorum-pg-"));
        if !is_ours {
            continue;
        }
        let owner_alive = std::fs::read_to_string(path.join("xtask.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if owner_alive {
            continue;
        }
        let mut stop = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join("pg_ctl"));
            c
        } else {
            Command::new(bin.join("pg_ctl"))
        };
        stop.arg("-D")
            .arg(path.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&path);
    }
}

fn cmd_in(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Builds the two binaries the portal runs as: `quorum` and the `quorum-sandbox` it starts for
/// each script (`--bin` names both, or cargo would build only the first).
fn build_binaries(extra: &[&str]) -> Result<()> {
    let mut build = cargo();
    build.args([
        "build",
        "--package",
        "quorum-server",
        "--bin",
        "quorum",
        "--package",
        "quorum-sandbox",
        "--bin",
        "quorum-sandbox",
    ]);
    build.args(extra);
    status(build, "cargo build")
}

/// Test-only hooks: crash points in the portal, forbidden-syscall probes in the sandbox.
const TEST_FEATURES: &str = "quorum-server/failpoints,quorum-sandbox/sandbox-selftest";

/// Debian packages the sandbox guest (QuickJS for wasm32-wasip1) is built with.
const WASM_PACKAGES: &[&str] = &[
    "clang",
    "llvm",
    "lld",
    "wasi-libc",
    "libclang-rt-14-dev-wasm32",
];

/// Installs what building the sandbox guest needs: the `wasm32-wasip1` Rust target and a C
/// toolchain for WebAssembly.
fn wasm_toolchain() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip1"))
        .unwrap_or(false);
    if !installed {
        let mut add = cmd_in("rustup", &["target", "add", "wasm32-wasip1"]);
        add.current_dir(root());
        status(add, "rustup target add wasm32-wasip1")?;
    }
    let have = |p: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
    };
    let missing: Vec<&str> = WASM_PACKAGES.iter().copied().filter(|p| !have(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing, "the script sandbox")
}

/// Installs Debian packages (as root), or says which to install.
fn apt_install(packages: &[&str], why: &str) -> Result<()> {
    if !is_root() {
        return Err(format!(
            "{why} needs Debian's {}; install with `sudo apt-get install {}`",
            packages.join(", "),
            packages.join(" ")
        ));
    }
    eprintln!("    installing {} for {why}", packages.join(" "));
    status(cmd_in("apt-get", &["update", "-qq"]), "apt-get update")?;
    let mut args = vec!["install", "-y", "-qq"];
    args.extend(packages);
    let mut install = cmd_in("apt-get", &args);
    install.env("DEBIAN_FRONTEND", "noninteractive");
    status(install, &format!("apt-get install ({why})"))
}

/// The directory holding `initdb` and `pg_ctl`, installing Debian's `postgresql` if needed.
fn postgres_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = find_postgres() {
        return Ok(dir);
    }
    if !is_root() {
        return Err(String::from(
            "PostgreSQL server binaries (initdb, pg_ctl) are missing; install them with `sudo apt-get install postgresql`",
        ));
    }
    eprintln!("    initdb not found: installing Debian's postgresql package");
    status(cmd_in("apt-get", &["update", "-qq"]), "apt-get update")?;
    let mut install = cmd_in("apt-get", &["install", "-y", "-qq", "postgresql"]);
    install.env("DEBIAN_FRONTEND", "noninteractive");
    status(install, "apt-get install postgresql")?;
    find_postgres()
        .ok_or_else(|| String::from("postgresql was installed but initdb is still not found"))
}

fn find_postgres() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// A portal process that is killed when dropped.
struct Portal(Child);

impl Drop for Portal {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let status = out
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response: {out}"))?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[expect(clippy::print_stdout, reason = "the figures are the command's output")]
fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| {
        samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
    };
    println!(
        "{name:<28} n={:<4} p50={:>7.2} ms  p95={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        at(0.5),
        at(0.95),
        at(0.99),
        at(1.0)
    );
}

fn bench(args: &[String]) -> Result<()> {
    let iterations: usize = args
        .first()
        .map(|a| a.parse().map_err(|_| format!("{a:?} is not a number")))
        .transpose()?
        .unwrap_or(100);
    step("building quorum and its sandbox (release)");
    wasm_toolchain()?;
    build_binaries(&["--release"])?;
    let data = env::temp_dir().join(format!("quorum-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;
    step("starting the portal (SQLite, demo data)");
    let (portal, port) = demo_portal(
        &target_dir().join("release").join("quorum"),
        &data,
        Stdio::null(),
        &[],
    )?;
    let login = r#"{"email":"dan@example.com","password":"quorum-demo-password"}"#;
    let json = [("Content-Type", "application/json")];
    let token_of = |body: &str| -> Result<String> {
        body.split("\"access_token\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_owned)
            .ok_or_else(|| format!("no access token in {body}"))
    };
    http(port, "POST", "/api/v1/auth/login", &json, login)?;
    step(&format!(
        "{iterations} sequential requests each (one connection per request, loopback)"
    ));
    let mut logins = Vec::with_capacity(iterations);
    let mut failed = Vec::with_capacity(iterations);
    let mut me = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let (code, body) = http(port, "POST", "/api/v1/auth/login", &json, login)?;
        logins.push(t.elapsed());
        if code != 200 {
            return Err(format!("login answered {code}: {body}"));
        }
        // Each sign-in may end the oldest of the user's sessions; use the newest token.
        let bearer = format!("Bearer {}", token_of(&body)?);
        let t = Instant::now();
        let bad = r#"{"email":"nobody@example.com","password":"wrong-password"}"#;
        let (code, _) = http(port, "POST", "/api/v1/auth/login", &json, bad)?;
        failed.push(t.elapsed());
        if code != 401 {
            return Err(format!("failed login answered {code}"));
        }
        let t = Instant::now();
        let (code, _) = http(port, "GET", "/api/v1/me", &[("Authorization", &bearer)], "")?;
        me.push(t.elapsed());
        if code != 200 {
            return Err(format!("/me answered {code}"));
        }
    }
    percentiles("POST /auth/login (ok)", logins);
    percentiles("POST /auth/login (unknown)", failed);
    percentiles("GET /me (authenticated)", me);
    drop(portal);
    let _ = std::fs::remove_dir_all(&data);

    step("starting a throwaway PostgreSQL cluster for the sandbox rows");
    let cluster = PgCluster::start()?;
    step(&format!(
        "script sandbox vs in-process sqlx ({iterations} runs each; `quorum bench-sandbox`)"
    ));
    let sandbox_data = env::temp_dir().join(format!("quorum-bench-sb-{}", std::process::id()));
    let mut sandbox = Command::new(target_dir().join("release").join("quorum"));
    sandbox
        .args(["bench-sandbox", "--postgres-url", &cluster.url()])
        .args(["--iterations", &iterations.to_string()])
        .env("QUORUM__DATA_DIR", &sandbox_data)
        .env("QUORUM__LOG__FILTER", "warn");
    let result = status(sandbox, "quorum bench-sandbox");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&sandbox_data);
    result
}
