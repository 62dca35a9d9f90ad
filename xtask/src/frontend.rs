//! The browser UI: npm packages, the API types generated from the OpenAPI document, the
//! frontend's own checks, its build, and the browser tests (Playwright driving Debian's
//! Chromium against a real portal).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use crate::{Result, apt_install, root, status, step, target_dir};

fn frontend() -> PathBuf {
    root().join("frontend")
}

fn npm(args: &[&str]) -> Command {
    let mut c = Command::new("npm");
    c.args(args).current_dir(frontend());
    c
}

/// Node.js and the npm packages of `package-lock.json` (`npm ci` when they are missing or older
/// than the lock file).
pub fn packages() -> Result<()> {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|_| {
            "the frontend needs Node.js 20 or later and npm: `sudo apt-get install nodejs npm`"
                .to_owned()
        })?;
    let version = String::from_utf8_lossy(&node.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!(
            "the frontend needs Node.js 20 or later; this is {}",
            version.trim()
        ));
    }
    let installed = frontend().join("node_modules/.package-lock.json");
    if newest(&[frontend().join("package-lock.json")]) > modified(&installed) {
        step("npm ci (frontend packages)");
        status(npm(&["ci", "--no-audit", "--no-fund"]), "npm ci")?;
    }
    Ok(())
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time under these paths (files or directories, recursively).
fn newest(paths: &[PathBuf]) -> Option<SystemTime> {
    let mut best = None;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if let Some(m) = modified(&p) {
            best = best.max(Some(m));
        }
    }
    best
}

/// Regenerates `openapi.json` (from the built `quorum`) and the TypeScript types made from it.
/// Returns whether either changed, so CI can refuse types that were not committed.
pub fn api_types(quorum: &Path) -> Result<bool> {
    let out = Command::new(quorum)
        .arg("openapi")
        .env_clear()
        .output()
        .map_err(|e| format!("cannot run quorum openapi: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "quorum openapi failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let doc = frontend().join("openapi.json");
    let types = frontend().join("src/api/schema.d.ts");
    let before = (std::fs::read(&doc).ok(), std::fs::read(&types).ok());
    std::fs::write(&doc, &out.stdout).map_err(|e| format!("writing {}: {e}", doc.display()))?;
    let mut gen_api = npm(&["run", "--silent", "gen:api"]);
    gen_api.stdout(Stdio::null());
    status(gen_api, "npm run gen:api")?;
    let after = (std::fs::read(&doc).ok(), std::fs::read(&types).ok());
    Ok(before != after)
}

/// The frontend's lint, type check and unit tests, then its production build.
pub fn check_and_build() -> Result<()> {
    step("frontend: lint, typecheck, unit tests, build");
    status(npm(&["run", "--silent", "lint"]), "npm run lint")?;
    status(npm(&["run", "--silent", "typecheck"]), "npm run typecheck")?;
    status(npm(&["run", "--silent", "test"]), "npm test")?;
    status(npm(&["run", "--silent", "build"]), "npm run build")
}

/// Builds `frontend/dist` when a source is newer than the last build.
pub fn build_if_changed() -> Result<()> {
    packages()?;
    let f = frontend();
    let sources = newest(&[
        f.join("src"),
        f.join("index.html"),
        f.join("package-lock.json"),
        f.join("vite.config.ts"),
    ]);
    if sources > modified(&f.join("dist/index.html")) {
        step("building the frontend");
        status(npm(&["run", "--silent", "build"]), "npm run build")?;
    }
    Ok(())
}

/// Debian's Chromium, installed when missing.
pub fn chromium() -> Result<PathBuf> {
    let path = PathBuf::from("/usr/bin/chromium");
    if !path.exists() {
        apt_install(&["chromium"], "the browser tests")?;
    }
    Ok(path)
}

/// Runs `frontend/e2e/*.test.mjs` with Node's test runner against the portal at `url` (and,
/// for what the pages say when scripts cannot run, the one at `no_sandbox_url`, whose sandbox is
/// missing); screenshots go to `target/browser`.
pub fn browser_tests(url: &str, no_sandbox_url: &str, chromium: &Path) -> Result<()> {
    step("browser tests (Playwright + Chromium against the real portal)");
    let artifacts = target_dir().join("browser");
    std::fs::create_dir_all(&artifacts)
        .map_err(|e| format!("creating {}: {e}", artifacts.display()))?;
    let mut node = Command::new("node");
    node.args(["--test", "--test-concurrency=1", "e2e/"])
        .current_dir(frontend())
        .env("QUORUM_URL", url)
        .env("QUORUM_NO_SANDBOX_URL", no_sandbox_url)
        .env("CHROMIUM", chromium)
        .env("ARTIFACTS", &artifacts);
    status(node, "browser tests")?;
    eprintln!("    screenshots in {}", artifacts.display());
    Ok(())
}
