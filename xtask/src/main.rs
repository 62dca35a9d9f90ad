//! `cargo xtask`: the commands the README names.
//!
//! - `cargo xtask run [-- ARGS]`: build and start the portal with demo data on
//!   http://127.0.0.1:8080 (SQLite under ./data; restarting keeps the data).
//! - `cargo xtask test [-- FILTER…]`: format check, clippy with warnings denied, and every test,
//!   with a throwaway PostgreSQL cluster started for the run and removed afterwards.
//!
//! Only the standard library is used, so this builds in seconds on a fresh machine.

use std::env;
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

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
        _ => {
            eprintln!(
                "usage: cargo xtask run [-- quorum serve args]\n       cargo xtask test [-- test filters]"
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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    c.current_dir(root());
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
    step("building quorum");
    let mut build = cargo();
    build.args(["build", "--package", "quorum-server", "--bin", "quorum"]);
    status(build, "cargo build")?;
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

    step("building the quorum binary the tests drive");
    let mut build = cargo();
    build.args(["build", "--package", "quorum-server", "--bin", "quorum"]);
    status(build, "cargo build")?;

    step("starting a throwaway PostgreSQL cluster");
    let cluster = PgCluster::start()?;
    eprintln!(
        "    PostgreSQL on 127.0.0.1:{} in {}",
        cluster.port,
        cluster.dir.display()
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
    tests
        .args(args)
        .env("QUORUM_TEST_PG_URL", cluster.url())
        .env("INSTA_UPDATE", "no");
    let result = status(tests, "tests");
    drop(cluster);
    eprintln!(
        "\nxtask test finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    result
}

/// A PostgreSQL cluster in a temporary directory, on a free port, with trust authentication.
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
        let mut initdb = cluster.pg("initdb");
        initdb
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
            ])
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
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
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
