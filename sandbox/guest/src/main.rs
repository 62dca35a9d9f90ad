//! The Quorum script guest: QuickJS inside WebAssembly.
//!
//! The host (the `quorum-sandbox` child process) provides the `quorum` imports below and nothing
//! else of use: no files, no sockets, no environment. The guest starts QuickJS and evaluates the
//! prelude (`prelude.js`: `db`, `console`, `setTimeout`) before it asks for its job, so a
//! pre-started child waits with all of that done; it then reads the job, runs the user's script
//! as the body of an async function (so top-level `await` and `return` work), drives QuickJS's job queue until the
//! script settles, and hands the JSON-encoded outcome back to the host.

use rquickjs::context::EvalOptions;
use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, Object, Promise, Runtime, Value,
};

mod heap;
mod rows;

mod host {
    #[link(wasm_import_module = "quorum")]
    unsafe extern "C" {
        /// Length of the job's JSON. The first call blocks until the executor sends the job.
        pub fn job_len() -> u32;
        /// Copies the job's JSON to `ptr` (which has room for `job_len()` bytes).
        pub fn job_read(ptr: *mut u8);
        /// Sends one db call (JSON) to the broker; returns the length of the first piece of the
        /// reply, kept by the host: a batch of rows (a JSON array) or the reply itself (an object).
        pub fn db_call(ptr: *const u8, len: u32) -> u32;
        /// Copies the last piece of a reply to `ptr`.
        pub fn reply_read(ptr: *mut u8);
        /// Reads the next piece of the current call's reply (after a batch of rows); returns its
        /// length, kept by the host.
        pub fn reply_next() -> u32;
        /// One console line at `level` (0 log, 1 info, 2 warn, 3 error).
        pub fn log(level: u32, ptr: *const u8, len: u32);
        /// Blocks for up to `ms` milliseconds (never past the deadline); used by `setTimeout`.
        pub fn sleep(ms: u32);
        /// The outcome's JSON: `{"value": …}` or `{"error": {…}}`. Called once, last.
        pub fn finish(ptr: *const u8, len: u32);
    }
}

/// The parts of the job the guest needs (the host has checked the rest).
struct Job {
    engine: String,
    kind: String,
    source: String,
    memory_bytes: usize,
    /// Seeds `Math.random` (drawn by the host for each job).
    seed: u64,
    /// Parse only: the wrapped script is compiled into a function that is never called.
    check_only: bool,
}

const PRELUDE: &str = include_str!("prelude.js");
/// The global the prelude's set-up function waits under, removed before the script runs.
const SETUP: &str = "__quorum_setup";
/// Columns the wrapper adds in front of the script's first line.
const SCRIPT_PREFIX: &str = "(async () => {";
const EXPRESSION_PREFIX: &str = "(async () => { return __quorum_expr(await (";

fn read_raw_job() -> Vec<u8> {
    // SAFETY: the host writes exactly `job_len()` bytes into the buffer we allocated for them.
    unsafe {
        let len = host::job_len() as usize;
        let mut buf = vec![0u8; len];
        host::job_read(buf.as_mut_ptr());
        buf
    }
}

fn parse_job(ctx: &Ctx<'_>, raw: Vec<u8>) -> Result<Job, String> {
    let raw = String::from_utf8(raw).map_err(|_| "job is not UTF-8".to_owned())?;
    let job: rquickjs::Object = ctx
        .json_parse(raw)
        .map_err(|e| format!("job: {e}"))?
        .into_object()
        .ok_or("job is not an object")?;
    let get = |k: &str| -> Result<String, String> {
        job.get::<_, String>(k).map_err(|e| format!("job.{k}: {e}"))
    };
    let limits: rquickjs::Object = job.get("limits").map_err(|e| format!("job.limits: {e}"))?;
    let memory_mb: u32 = limits
        .get("memory_mb")
        .map_err(|e| format!("job.limits.memory_mb: {e}"))?;
    Ok(Job {
        engine: get("engine")?,
        kind: get("kind")?,
        source: get("source")?,
        memory_bytes: memory_mb as usize * 1024 * 1024,
        seed: match job.get::<_, Vec<u32>>("seed") {
            Ok(words) if words.len() == 2 => u64::from(words[0]) | (u64::from(words[1]) << 32),
            _ => return Err("job.seed: two 32-bit words expected".to_owned()),
        },
        check_only: job
            .get::<_, Option<bool>>("check_only")
            .ok()
            .flatten()
            .unwrap_or(false),
    })
}

fn finish(json: &str) {
    // SAFETY: the host copies `len` bytes from our memory before returning.
    unsafe { host::finish(json.as_ptr(), json.len() as u32) }
}

/// The outcome JSON for a failure raised here rather than by the script.
fn failure_json(kind: &str, message: &str) -> String {
    let mut escaped = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if (c as u32) < 0x20 => escaped.push_str(&format!("\\u{:04x}", c as u32)),
            c => escaped.push(c),
        }
    }
    format!(r#"{{"error":{{"kind":"{kind}","message":"{escaped}"}}}}"#)
}

fn finish_internal(message: &str) {
    finish(&failure_json("internal", message));
}

/// The piece of a reply the host holds, `len` bytes long.
fn read_piece(len: u32) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    // SAFETY: the host writes exactly `len` bytes into the buffer we allocated for them.
    unsafe { host::reply_read(buf.as_mut_ptr()) };
    buf
}

/// An exception QuickJS could not even make an error object for (it throws `null` when memory
/// ran out completely), thrown again as an error that says what happened, now that the rows
/// decoded so far are released; any other error as it is.
fn name_exhaustion(ctx: &Ctx<'_>, e: rquickjs::Error) -> rquickjs::Error {
    if !matches!(e, rquickjs::Error::Exception) {
        return e;
    }
    let thrown = ctx.catch();
    if thrown.is_object() {
        return ctx.throw(thrown);
    }
    rquickjs::Exception::throw_internal(
        ctx,
        "out of memory while the rows of this database call arrived (limits.memory_mb)",
    )
}

fn install_natives<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<()> {
    let g = ctx.globals();
    g.set(
        "__quorum_call",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, request: String, out: Object<'js>| -> rquickjs::Result<String> {
                rows::release_latest();
                // SAFETY: the host reads `len` bytes from our memory before returning.
                let mut len = unsafe { host::db_call(request.as_ptr(), request.len() as u32) };
                let mut keys = rows::Keys::new(&ctx);
                let mut rows = rows::Rows::new(&ctx);
                // Decoding that failed (the script ran out of memory, say): the exception is
                // pending and the rest of the call is read and dropped, so the script that catches
                // it can go on with its next call.
                let mut failed = None;
                loop {
                    let piece = read_piece(len);
                    // Batches of rows (JSON arrays) come first, then the reply (an object).
                    if piece.first() != Some(&b'[') {
                        if let Some(e) = failed {
                            return Err(e);
                        }
                        if let Some(rows) = rows.into_array(&ctx)? {
                            rows::keep_latest(&ctx, &rows);
                            // Defined, not assigned: a setter a script put on
                            // `Object.prototype` never sees the rows.
                            out.prop("rows", rows)?;
                        }
                        return Ok(String::from_utf8(piece)
                            .unwrap_or_else(|_| failure_json("internal", "reply is not UTF-8")));
                    }
                    // The host passes on only batches that are UTF-8 and bracketed like an
                    // array; `append` hands anything in one that is not JSON to `JSON.parse`,
                    // which throws a `SyntaxError`.
                    if failed.is_none()
                        && let Err(e) = rows::append(&ctx, &mut rows, &piece, &mut keys)
                    {
                        // What was decoded is released at once, not when the call is over.
                        rows = rows::Rows::new(&ctx);
                        keys = rows::Keys::new(&ctx);
                        failed = Some(name_exhaustion(&ctx, e));
                    }
                    // SAFETY: a plain call; the host keeps the piece for `reply_read`.
                    len = unsafe { host::reply_next() };
                }
            },
        )?,
    )?;
    g.set(
        "__quorum_log",
        Function::new(ctx.clone(), |level: u32, line: String| {
            // SAFETY: the host copies `len` bytes from our memory before returning.
            unsafe { host::log(level, line.as_ptr(), line.len() as u32) }
        })?,
    )?;
    g.set(
        "__quorum_sleep",
        Function::new(ctx.clone(), |ms: f64| {
            let ms = if ms.is_finite() {
                ms.clamp(0.0, u32::MAX as f64) as u32
            } else {
                0
            };
            // SAFETY: a plain call with an integer argument.
            unsafe { host::sleep(ms) }
        })?,
    )?;
    Ok(())
}

/// The script wrapped so that it is the body of an async function, called at once unless the
/// job only checks the syntax.
fn wrap(job: &Job) -> (String, usize) {
    let call = if job.check_only { "" } else { "()" };
    if job.kind == "expression" {
        (
            format!("{EXPRESSION_PREFIX}{}\n)); }}){call}", job.source),
            EXPRESSION_PREFIX.len(),
        )
    } else {
        (
            format!("{SCRIPT_PREFIX}{}\n}}){call}", job.source),
            SCRIPT_PREFIX.len(),
        )
    }
}

/// Turns a thrown value into the outcome's `error` JSON, through the prelude's `describe`.
fn describe_error<'js>(ctx: &Ctx<'js>, err: CaughtError<'js>, prefix_len: usize) -> String {
    let value: Value<'js> = match err {
        CaughtError::Exception(e) => e.into_value(),
        CaughtError::Value(v) => v,
        CaughtError::Error(e) => {
            let kind = if matches!(e, rquickjs::Error::Allocation) {
                "memory_limit"
            } else {
                "internal"
            };
            return failure_json(kind, &e.to_string());
        }
    };
    let describe: rquickjs::Result<Function> = ctx.globals().get("__quorum_describe");
    match describe.and_then(|f| f.call::<_, String>((value, prefix_len as u32))) {
        Ok(json) => json,
        Err(_) => failure_json("memory_limit", "the script ran out of memory while failing"),
    }
}

/// Installs the natives and evaluates the prelude, keeping the function it returns (which takes
/// the engine) as a hidden global until the job arrives. Done before the job is asked for, so a
/// pre-started child has it ready.
fn prepare(ctx: &Ctx<'_>) -> Result<(), String> {
    install_natives(ctx).map_err(|e| format!("natives: {e}"))?;
    let prelude: Function = ctx
        .eval_with_options(PRELUDE, options("prelude.js"))
        .catch(ctx)
        .map_err(|e| format!("prelude: {e}"))?;
    ctx.globals()
        .set(SETUP, prelude)
        .map_err(|e| format!("prelude: {e}"))
}

/// `Math.random` from the job's seed rather than QuickJS's own, which it takes from the clock
/// when the context is made, before the job: every child forked from one template would share
/// it. The same xorshift64* generator QuickJS uses, 53 random bits per number.
fn seed_random(ctx: &Ctx<'_>, seed: u64) -> rquickjs::Result<()> {
    let state = std::cell::Cell::new(seed.max(1));
    let random = Function::new(ctx.clone(), move || -> f64 {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })?
    .with_name("random")?;
    let math: rquickjs::Object = ctx.globals().get("Math")?;
    math.set("random", random)
}

fn run(ctx: &Ctx<'_>, job: &Job) -> Result<String, String> {
    let globals = ctx.globals();
    seed_random(ctx, job.seed).map_err(|e| format!("Math.random: {e}"))?;
    let setup: Function = globals.get(SETUP).map_err(|e| format!("prelude: {e}"))?;
    globals.remove(SETUP).map_err(|e| format!("prelude: {e}"))?;
    setup
        .call::<_, ()>((job.engine.as_str(),))
        .catch(ctx)
        .map_err(|e| format!("prelude: {e}"))?;

    let (code, prefix_len) = wrap(job);
    if job.check_only {
        return Ok(
            match ctx
                .eval_with_options::<Value, _>(code, options("script.js"))
                .catch(ctx)
            {
                Ok(_) => String::from(r#"{"value":null}"#),
                Err(e) => describe_error(ctx, e, prefix_len),
            },
        );
    }
    let promise: Promise = match ctx.eval_with_options(code, options("script.js")).catch(ctx) {
        Ok(p) => p,
        Err(e) => return Ok(describe_error(ctx, e, prefix_len)),
    };
    let tick: Function = ctx
        .globals()
        .get("__quorum_tick")
        .map_err(|e| format!("tick: {e}"))?;
    loop {
        while ctx.execute_pending_job() {}
        match promise.state() {
            rquickjs::promise::PromiseState::Pending => {
                let more: bool = tick
                    .call(())
                    .catch(ctx)
                    .map_err(|e| format!("timers: {e}"))?;
                if !more {
                    return Ok(failure_json(
                        "script",
                        "the script awaited a promise that can never settle",
                    ));
                }
            }
            rquickjs::promise::PromiseState::Resolved => {
                let value: Value = promise
                    .result()
                    .ok_or("settled promise without a result")?
                    .map_err(|e| e.to_string())?;
                let encode: Function = ctx
                    .globals()
                    .get("__quorum_encode")
                    .map_err(|e| e.to_string())?;
                return match encode.call::<_, String>((value,)).catch(ctx) {
                    Ok(json) => Ok(json),
                    Err(e) => Ok(describe_error(ctx, e, prefix_len)),
                };
            }
            rquickjs::promise::PromiseState::Rejected => {
                let reason = match promise.result::<Value>() {
                    Some(Err(rquickjs::Error::Exception)) => {
                        CaughtError::from_error(ctx, rquickjs::Error::Exception)
                    }
                    Some(Ok(v)) => CaughtError::Value(v),
                    Some(Err(e)) => CaughtError::Error(e),
                    None => return Err("rejected promise without a reason".to_owned()),
                };
                return Ok(describe_error(ctx, reason, prefix_len));
            }
        }
    }
}

fn options(filename: &str) -> EvalOptions {
    let mut opts = EvalOptions::default();
    opts.global = true;
    opts.strict = false;
    opts.promise = false;
    opts.filename = Some(filename.to_owned());
    opts
}

fn main() {
    let Ok(rt) = Runtime::new() else {
        return finish_internal("QuickJS runtime could not start");
    };
    // Deep recursion ends in a catchable RangeError well before the wasm stack is exhausted.
    rt.set_max_stack_size(3 * 1024 * 1024);
    let Ok(context) = Context::full(&rt) else {
        return finish_internal("QuickJS context could not start");
    };
    if let Err(message) = context.with(|ctx| prepare(&ctx)) {
        return finish_internal(&message);
    }
    // Blocks until the executor hands over the job.
    let job = match context.with(|ctx| parse_job(&ctx, read_raw_job())) {
        Ok(job) => job,
        Err(message) => return finish_internal(&message),
    };
    // QuickJS stops a little below the wasm memory cap, so running out of memory is usually a
    // catchable JavaScript error the outcome can name, rather than a trap.
    rt.set_memory_limit(job.memory_bytes.saturating_sub(job.memory_bytes / 8));
    // The first cycle collection waits for a quarter of the limit rather than QuickJS's 256 KiB,
    // so 100 000 rows arriving are not walked by a dozen collections on the way (about a tenth of
    // their JSON.parse time); reference counting still frees acyclic garbage at once.
    rt.set_gc_threshold(job.memory_bytes / 4);
    heap::set_limit(job.memory_bytes);
    rt.set_interrupt_handler(Some(Box::new(|| {
        rows::release_latest_if_large();
        false
    })));
    let outcome = context.with(|ctx| run(&ctx, &job));
    match outcome {
        Ok(json) => finish(&json),
        Err(message) => finish_internal(&message),
    }
    // The host sends the outcome once the guest has ended, so the guest ends here: returning
    // would first drop the context and the runtime, freeing every object, atom and shape one by
    // one (0.1-0.2 ms of every execution, more after large results) for a process about to exit.
    std::process::exit(0);
}
