//! The wasmtime engine configuration and the precompiled-module cache.

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Module};

/// The guest, built for `wasm32-wasip1` by the build script.
pub const GUEST_WASM: &[u8] = include_bytes!(env!("QUORUM_GUEST_WASM"));

/// How often the epoch ticks; deadlines are counted in these.
pub const EPOCH_TICK_MS: u64 = 10;

/// Native stack for wasm frames. QuickJS's own limit (3 MiB of its linear-memory stack) normally
/// throws a catchable RangeError first; this bounds what is left.
const MAX_WASM_STACK: usize = 2 * 1024 * 1024;

/// Address space reserved for the guest's linear memory (wasmtime's default on 64-bit hosts, set
/// here because the host advises the kernel about the part of it the guest may still grow into:
/// see `host::prefer_huge_pages`). Memory limits are far below it.
pub const MEMORY_RESERVATION: u64 = 4 << 30;

/// The one engine configuration, shared by precompiling and running so the artifact matches.
pub fn engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(MAX_WASM_STACK);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    config.memory_reservation(MEMORY_RESERVATION);
    // No memfd for copy-on-write memory images: the child keeps no descriptor besides stdio.
    config.memory_init_cow(false);
    // `.eh_frame` only serves outside unwinders (debuggers, profilers); registering it for every
    // function of the guest is a measurable part of a fresh child's start. Wasmtime's own traps
    // and backtraces do not need it.
    config.native_unwind_info(false);
    Engine::new(&config).map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))
}

/// The epoch thread, once started, and whether it is to stand still.
static TICKER: OnceLock<Thread> = OnceLock::new();
static TICKER_PAUSED: AtomicBool = AtomicBool::new(false);

/// Starts the thread that advances the engine's epoch every [`EPOCH_TICK_MS`], which is what
/// makes deadlines fire while wasm runs.
pub fn start_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
    let ticker = engine.clone();
    let thread = std::thread::Builder::new()
        .name("epoch".into())
        .spawn(move || {
            loop {
                while TICKER_PAUSED.load(Ordering::Acquire) {
                    std::thread::park();
                }
                std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                ticker.increment_epoch();
            }
        })
        .context("starting the epoch thread")?;
    // Started once per process: a child's one job, or a template's children (each its own).
    let _ = TICKER.set(thread.thread().clone());
    Ok(())
}

/// Stops the epoch ticking until the guard is dropped, for a wait in which no wasm runs (a
/// pre-started child waiting for its job): a hundred wake-ups a second would otherwise be spent
/// on nothing, and counted against the child's `RLIMIT_CPU` before its job even started.
pub fn epoch_paused() -> EpochPaused {
    TICKER_PAUSED.store(true, Ordering::Release);
    EpochPaused(())
}

#[must_use = "the epoch stands still only while the guard lives"]
pub struct EpochPaused(());

impl Drop for EpochPaused {
    fn drop(&mut self) {
        TICKER_PAUSED.store(false, Ordering::Release);
        if let Some(t) = TICKER.get() {
            t.unpark();
        }
    }
}

/// The cache file name: the guest's hash, and wasmtime's compatibility hash (its version and
/// every engine setting that affects compiled code).
fn cache_key(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let guest = hex::encode(&Sha256::digest(GUEST_WASM)[..12]);
    format!("guest-{guest}-{:016x}.cwasm", h.finish())
}

/// A compiled guest nothing has used for this long is removed from the cache by the next
/// [`precompile`]: each portal version compiles its own (a new wasmtime or guest is a new file),
/// and without this every upgrade left the old one behind. A portal runs this when it starts
/// and every day while it runs (`server/src/sandbox.rs`), which marks its guest as used, so a
/// portal still running beside a newer one on the same cache never loses its guest.
pub const UNUSED_FOR: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Compiles the guest into `dir` unless an artifact for this exact engine and guest is there,
/// marks it as used, and removes the compiled guests of other versions (and files of
/// compilations cut short) that nothing has used for [`UNUSED_FOR`].
pub fn precompile(dir: &Path) -> anyhow::Result<PathBuf> {
    let engine = engine()?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(cache_key(&engine));
    if path.is_file() {
        mark_used(&path);
        prune(dir, &path);
        return Ok(path);
    }
    let bytes = engine
        .precompile_module(GUEST_WASM)
        .map_err(|e| anyhow::anyhow!("compiling the guest: {e}"))?;
    // Written aside and renamed, so a concurrent start never loads half a file.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        cache_key(&engine),
        std::process::id()
    ));
    fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    prune(dir, &path);
    Ok(path)
}

/// Sets the modification time of a compiled guest to now, which is what [`prune`] reads as its
/// last use. Best effort: a cache the process cannot write to keeps what it has.
fn mark_used(path: &Path) {
    let _ = fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
}

/// Removes from `dir` every compiled guest but `current`, and every file a compilation left when
/// it was cut short, not modified for [`UNUSED_FOR`]. Only names this module writes are
/// touched; anything else in the directory is left alone, as is anything it cannot remove.
fn prune(dir: &Path, current: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let ours = (name.starts_with("guest-") && name.ends_with(".cwasm"))
            || (name.starts_with(".guest-") && name.ends_with(".tmp"));
        if !ours || path == current {
            continue;
        }
        let unused = entry
            .metadata()
            .ok()
            .filter(fs::Metadata::is_file)
            .and_then(|m| m.modified().ok())
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age >= UNUSED_FOR);
        if unused {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Loads a precompiled guest. Only files written by [`precompile`] are ever passed here: the
/// executor names the file, the child never chooses one.
pub fn load(engine: &Engine, path: &Path) -> anyhow::Result<Module> {
    // Read into memory rather than mapped, so no descriptor stays open in the child.
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    #[expect(
        unsafe_code,
        reason = "deserializing a module we compiled ourselves, see above"
    )]
    // SAFETY: the bytes are an artifact `precompile` produced with this engine configuration;
    // wasmtime also checks the version and configuration recorded in them.
    let module = unsafe { Module::deserialize(engine, &bytes) };
    module.map_err(|e| anyhow::anyhow!("loading {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Capabilities reach the guest only through imports: this list is the whole surface, and a
    /// new import fails the test until someone looks at it (security matrix S7).
    #[test]
    fn the_guest_imports_exactly_the_allowlist() -> anyhow::Result<()> {
        let engine = engine()?;
        let module = Module::new(&engine, GUEST_WASM).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut imports: Vec<String> = module
            .imports()
            .map(|i| format!("{}::{}", i.module(), i.name()))
            .collect();
        imports.sort();
        let mut expected: Vec<String> = crate::host::ALLOWED_IMPORTS
            .iter()
            .map(|(m, n)| format!("{m}::{n}"))
            .collect();
        expected.sort();
        assert_eq!(imports, expected);
        Ok(())
    }
}
