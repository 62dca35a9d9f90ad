//! The child's side of one execution: the host functions the guest may call, the limits they
//! enforce, and the frames they exchange with the executor.

use std::fmt;
use std::io::{self, StdinLock, StdoutLock, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quorum_sandbox_protocol::{
    self as proto, ErrorKind, Failure, FromChild, JobLimits, LogLevel, Outcome, ToChild,
    guest::Finished,
};
use serde_json::value::RawValue;
use wasmtime::{
    AsContextMut, Caller, Engine, Extern, Linker, Memory, Module, ResourceLimiter, Store, Trap,
};

use crate::engine::{self, EPOCH_TICK_MS};
use crate::template::Served;

/// Every import the guest may have; `engine::tests` checks the guest asks for exactly these.
#[cfg(test)]
pub const ALLOWED_IMPORTS: &[(&str, &str)] = &[
    ("quorum", "job_len"),
    ("quorum", "job_read"),
    ("quorum", "db_call"),
    ("quorum", "reply_read"),
    ("quorum", "reply_next"),
    ("quorum", "log"),
    ("quorum", "sleep"),
    ("quorum", "finish"),
    ("wasi_snapshot_preview1", "random_get"),
    ("wasi_snapshot_preview1", "environ_get"),
    ("wasi_snapshot_preview1", "environ_sizes_get"),
    ("wasi_snapshot_preview1", "clock_time_get"),
    ("wasi_snapshot_preview1", "fd_close"),
    ("wasi_snapshot_preview1", "fd_fdstat_get"),
    ("wasi_snapshot_preview1", "fd_seek"),
    ("wasi_snapshot_preview1", "fd_write"),
    ("wasi_snapshot_preview1", "proc_exit"),
];

/// What the guest may use while it starts QuickJS and evaluates the prelude, before its job
/// (and with it the real limits) arrives. No db call or log can happen before the job.
const PRE_JOB_LIMITS: JobLimits = JobLimits {
    wall_ms: 10_000,
    memory_mb: 64,
    max_calls: 0,
    max_call_bytes: 0,
    max_log_bytes: 0,
    max_result_bytes: 64 * 1024,
};

/// Where the child is in its one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    /// Starting up: QuickJS and the prelude are initialised before the job is asked for, so a
    /// pre-started child spends its waiting time on them.
    Waiting,
    Received,
    /// The executor closed stdin instead of sending a job (a pre-started child it no longer
    /// needs): the child exits quietly.
    Abandoned,
}

/// The executor went away before sending a job.
#[derive(Debug)]
struct Abandoned;

impl fmt::Display for Abandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the executor sent no job")
    }
}
impl std::error::Error for Abandoned {}

/// The largest job frame accepted (the portal caps scripts far below this).
const MAX_JOB_FRAME: usize = 8 * 1024 * 1024;
/// Bytes of the guest's own stderr (panic messages) passed on to ours.
const MAX_STDERR: usize = 64 * 1024;
/// A child whose job has not come this long after its `Ready` is waiting in the pool (a child
/// started for a job gets it within a fraction of a millisecond) and warms its memory first.
const WARM_AFTER_MS: i32 = 2;
/// Room for the envelope around a returned value.
const RESULT_SLACK: u64 = 1024;

const WASI_ESUCCESS: i32 = 0;
const WASI_EBADF: i32 = 8;
const WASI_EFAULT: i32 = 21;
const WASI_EINVAL: i32 = 28;

/// A failure that ends the script: raised from a host function, so JavaScript cannot catch it.
#[derive(Debug)]
struct Fatal(Failure);

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.kind.as_str(), self.0.message)
    }
}
impl std::error::Error for Fatal {}

fn fatal(kind: ErrorKind, message: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(Fatal(Failure {
        kind,
        message: message.into(),
        line: None,
        column: None,
    }))
}

/// `proc_exit` from the guest's libc.
#[derive(Debug)]
struct Exit(i32);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest exited with status {}", self.0)
    }
}
impl std::error::Error for Exit {}

/// Linear memory capped at the job's limit; records a refused growth so the outcome can say
/// `memory_limit` even when the guest turned the refusal into an ordinary error.
#[derive(Debug)]
struct Limiter {
    cap: usize,
    denied: bool,
    peak: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.denied = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

struct Host {
    /// Set in a template: the first `job_len` serves fork requests instead of waiting for a job,
    /// and returns only in the children.
    template: Option<crate::template::Template>,
    /// The job as the guest reads it, once it has arrived.
    job: Vec<u8>,
    /// Whether the job has arrived; until then `limits` are [`PRE_JOB_LIMITS`].
    job_state: JobState,
    /// Reported in `Ready`, sent when the guest first asks for its job.
    protections: Option<proto::Protections>,
    limits: JobLimits,
    started: Instant,
    /// The process's CPU time ([`cpu_ms`]) when the job arrived.
    cpu_at_job: f64,
    deadline: Instant,
    stdin: StdinLock<'static>,
    stdout: StdoutLock<'static>,
    /// The piece of a reply the guest reads next.
    reply: Vec<u8>,
    in_call: Option<InCall>,
    calls: u32,
    log_bytes: u64,
    logs_truncated: bool,
    stderr_bytes: usize,
    finished: Option<Vec<u8>>,
    limiter: Limiter,
}

impl Host {
    fn send(&mut self, frame: &FromChild) -> wasmtime::Result<()> {
        proto::write_frame(&mut self.stdout, frame)
            .map_err(|e| fatal(ErrorKind::Internal, format!("writing to the executor: {e}")))
    }

    /// Says `Ready`, then blocks until the job arrives and takes on its limits (warming
    /// `guest_memory` first if it waits in the pool). Returns the job's wall limit in
    /// milliseconds.
    fn receive_job(&mut self, guest_memory: &mut [u8]) -> wasmtime::Result<u64> {
        let protections = self.protections.take().unwrap_or_default();
        self.send(&FromChild::Ready {
            v: proto::VERSION,
            protections,
        })?;
        // No wasm runs until the job is read, however long a pre-started child waits for it.
        let paused = crate::engine::epoch_paused();
        // Nothing has been read from stdin before `Ready`, so its buffer is empty and the pipe
        // says whether the job is on its way.
        if !stdin_readable_within(WARM_AFTER_MS) {
            warm(guest_memory);
        }
        let read = proto::read_frame(&mut self.stdin, MAX_JOB_FRAME)
            .map_err(|e| fatal(ErrorKind::Internal, format!("reading the job: {e}")));
        drop(paused);
        let read = read?;
        let Some(body) = read else {
            self.job_state = JobState::Abandoned;
            return Err(wasmtime::Error::new(Abandoned));
        };
        let job = match proto::decode::<ToChild>(&body) {
            Ok(ToChild::Job(job)) if job.v == proto::VERSION => job,
            Ok(ToChild::Job(job)) => {
                return Err(fatal(
                    ErrorKind::Internal,
                    format!("protocol version {} is not {}", job.v, proto::VERSION),
                ));
            }
            Ok(other) => {
                return Err(fatal(
                    ErrorKind::Internal,
                    format!("expected a job, got {}", other.summary()),
                ));
            }
            Err(e) => return Err(fatal(ErrorKind::Internal, format!("bad job frame: {e}"))),
        };
        // With the job, a seed for `Math.random` drawn here, so no two jobs share one (QuickJS
        // seeds its own from the clock when the context is made, which every child forked from
        // one template would share).
        let mut seed = [0u8; 8];
        fill_random(&mut seed);
        let [a, b, c, d, e, f, g, h] = seed;
        let mut guest_job = serde_json::to_value(&job)
            .map_err(|e| fatal(ErrorKind::Internal, format!("re-encoding the job: {e}")))?;
        if let Some(fields) = guest_job.as_object_mut() {
            fields.insert(
                "seed".into(),
                serde_json::json!([
                    u32::from_le_bytes([a, b, c, d]),
                    u32::from_le_bytes([e, f, g, h])
                ]),
            );
        }
        self.job = serde_json::to_vec(&guest_job)
            .map_err(|e| fatal(ErrorKind::Internal, format!("re-encoding the job: {e}")))?;
        self.job_state = JobState::Received;
        self.limits = job.limits;
        self.limiter.cap =
            usize::try_from(u64::from(job.limits.memory_mb) * 1024 * 1024).unwrap_or(usize::MAX);
        prefer_huge_pages(guest_memory, self.limiter.cap);
        self.started = Instant::now();
        self.cpu_at_job = cpu_ms();
        self.deadline = self.started + Duration::from_millis(job.limits.wall_ms);
        Ok(job.limits.wall_ms)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn timeout(&self) -> wasmtime::Error {
        fatal(
            ErrorKind::Timeout,
            format!("the script ran longer than {} ms", self.limits.wall_ms),
        )
    }

    fn reply_cap(&self) -> usize {
        usize::try_from(
            self.limits
                .max_result_bytes
                .saturating_mul(2)
                .saturating_add(1 << 20),
        )
        .unwrap_or(usize::MAX)
    }

    /// Sends one db call and returns the first piece of its answer (see [`Host::next_piece`]).
    fn db_call(&mut self, call: Box<RawValue>) -> wasmtime::Result<Vec<u8>> {
        let id = self.calls;
        self.send(&FromChild::DbCall { id, call })?;
        self.in_call = Some(InCall { id, bytes: 0 });
        self.next_piece()
    }

    /// The next piece of the answer to the call in progress: a batch of rows (a JSON array,
    /// starting with `[`), or the final reply (an object, starting with `{`), which ends the call.
    fn next_piece(&mut self) -> wasmtime::Result<Vec<u8>> {
        let Some(call) = self.in_call else {
            return Err(fatal(
                ErrorKind::Internal,
                "the guest asked for more rows outside a database call",
            ));
        };
        let cap = self.reply_cap();
        let body = proto::read_frame(&mut self.stdin, cap)
            .map_err(|e| {
                fatal(
                    ErrorKind::Internal,
                    format!("reading the executor's reply: {e}"),
                )
            })?
            .ok_or_else(|| fatal(ErrorKind::Internal, "the executor went away"))?;
        // A batch of rows (the bulk of a large result) is taken apart without a parse here.
        let piece = match proto::decode_db_rows(&body) {
            Some((id, rows)) => self.take_rows(call, id, body.len(), rows)?,
            None => self.other_piece(call, &body)?,
        };
        if Instant::now() >= self.deadline {
            return Err(self.timeout());
        }
        Ok(piece)
    }

    /// A piece that is not a batch in the encoder's own layout, read as any frame is.
    fn other_piece(&mut self, call: InCall, body: &[u8]) -> wasmtime::Result<Vec<u8>> {
        match proto::decode::<ToChild>(body) {
            Ok(ToChild::DbRows { id, rows }) => {
                self.take_rows(call, id, body.len(), rows.get().as_bytes())
            }
            Ok(ToChild::DbReply {
                id,
                reply,
                fatal: stop,
            }) if id == call.id => {
                self.in_call = None;
                match stop {
                    Some(failure) => Err(wasmtime::Error::new(Fatal(failure))),
                    None => Ok(reply.get().as_bytes().to_vec()),
                }
            }
            Ok(other) => Err(unexpected_frame(call.id, &other.summary())),
            Err(e) => Err(fatal(
                ErrorKind::Internal,
                format!("bad frame from the executor: {e}"),
            )),
        }
    }

    /// A batch of rows (for call `id`) for the call in progress, counted against the call's
    /// cap (the executor caps a call's rows; this is the same cap, checked again here).
    fn take_rows(
        &mut self,
        call: InCall,
        id: u32,
        frame_len: usize,
        rows: &[u8],
    ) -> wasmtime::Result<Vec<u8>> {
        if id != call.id {
            return Err(unexpected_frame(call.id, &format!("rows for call {id}")));
        }
        let cap = self.reply_cap();
        let bytes = call.bytes.saturating_add(frame_len);
        if bytes > cap {
            return Err(fatal(
                ErrorKind::Internal,
                format!("a database call's rows passed {cap} bytes"),
            ));
        }
        self.in_call = Some(InCall { bytes, ..call });
        Ok(rows.to_vec())
    }
}

/// The db call whose answer is being read.
#[derive(Debug, Clone, Copy)]
struct InCall {
    id: u32,
    /// Bytes of row batches received so far.
    bytes: usize,
}

/// A frame from the executor that does not belong to the call in progress, named by `what`
/// ([`ToChild::summary`]'s words), never by its contents.
fn unexpected_frame(call: u32, what: &str) -> wasmtime::Error {
    fatal(
        ErrorKind::Internal,
        format!("unexpected frame from the executor during call {call}: {what}"),
    )
}

fn memory(caller: &mut Caller<'_, Host>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(fatal(ErrorKind::Internal, "the guest exports no memory")),
    }
}

/// Copies `len` guest bytes at `ptr`; the caller has already checked `len` against its cap.
fn read_guest(caller: &mut Caller<'_, Host>, ptr: u32, len: u32) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(caller)?;
    let end = u64::from(ptr) + u64::from(len);
    if end > mem.data_size(&caller) as u64 {
        return Err(fatal(
            ErrorKind::Internal,
            "the guest passed a buffer outside its memory",
        ));
    }
    let mut buf = vec![0u8; len as usize];
    mem.read(&caller, ptr as usize, &mut buf).map_err(|_| {
        fatal(
            ErrorKind::Internal,
            "the guest passed a buffer outside its memory",
        )
    })?;
    Ok(buf)
}

fn write_guest(caller: &mut Caller<'_, Host>, ptr: u32, bytes: &[u8]) -> wasmtime::Result<()> {
    let mem = memory(caller)?;
    mem.write(caller, ptr as usize, bytes).map_err(|_| {
        fatal(
            ErrorKind::Internal,
            "the guest passed a buffer outside its memory",
        )
    })
}

fn linker(engine: &Engine) -> wasmtime::Result<Linker<Host>> {
    let mut l = Linker::new(engine);
    l.func_wrap(
        "quorum",
        "job_len",
        |mut caller: Caller<'_, Host>| -> wasmtime::Result<u32> {
            if let Some(template) = caller.data_mut().template.take() {
                let engine = caller.engine().clone();
                match crate::template::serve(&template, &engine) {
                    Ok(Served::Child(protections)) => {
                        caller.data_mut().protections = Some(protections);
                    }
                    Ok(Served::Closed) => {
                        caller.data_mut().job_state = JobState::Abandoned;
                        return Err(wasmtime::Error::new(Abandoned));
                    }
                    Err(e) => return Err(fatal(ErrorKind::Internal, format!("{e:#}"))),
                }
            }
            if caller.data().job_state == JobState::Waiting {
                let mem = memory(&mut caller)?;
                let (guest_memory, host) = mem.data_and_store_mut(&mut caller);
                let wall_ms = host.receive_job(guest_memory)?;
                // The deadline counts from the job's arrival, not from start-up.
                caller
                    .as_context_mut()
                    .set_epoch_deadline(wall_ms / EPOCH_TICK_MS + 1);
            }
            Ok(caller.data().job.len() as u32)
        },
    )?;
    l.func_wrap(
        "quorum",
        "job_read",
        |mut caller: Caller<'_, Host>, ptr: u32| {
            let job = std::mem::take(&mut caller.data_mut().job);
            write_guest(&mut caller, ptr, &job)
        },
    )?;
    l.func_wrap(
        "quorum",
        "db_call",
        |mut caller: Caller<'_, Host>, ptr: u32, len: u32| -> wasmtime::Result<u32> {
            let host = caller.data_mut();
            host.calls += 1;
            if host.calls > host.limits.max_calls {
                return Err(fatal(
                    ErrorKind::CallLimit,
                    format!(
                        "the script made more than {} database calls",
                        host.limits.max_calls
                    ),
                ));
            }
            // Checked before a single byte is copied out of the guest.
            if u64::from(len) > host.limits.max_call_bytes {
                return Err(fatal(
                    ErrorKind::CallLimit,
                    format!(
                        "a database call's arguments take {len} bytes; the limit is {} bytes",
                        host.limits.max_call_bytes
                    ),
                ));
            }
            if Instant::now() >= host.deadline {
                return Err(host.timeout());
            }
            let bytes = read_guest(&mut caller, ptr, len)?;
            let host = caller.data_mut();
            let reply = match proto::guest::call(bytes) {
                Some(call) => host.db_call(call)?,
                None => br#"{"error":{"kind":"internal","message":"the call was not valid JSON"}}"#
                    .to_vec(),
            };
            let len = reply.len() as u32;
            host.reply = reply;
            Ok(len)
        },
    )?;
    l.func_wrap(
        "quorum",
        "reply_next",
        |mut caller: Caller<'_, Host>| -> wasmtime::Result<u32> {
            let host = caller.data_mut();
            let piece = host.next_piece()?;
            let len = piece.len() as u32;
            host.reply = piece;
            Ok(len)
        },
    )?;
    l.func_wrap(
        "quorum",
        "reply_read",
        |mut caller: Caller<'_, Host>, ptr: u32| {
            let reply = std::mem::take(&mut caller.data_mut().reply);
            write_guest(&mut caller, ptr, &reply)
        },
    )?;
    l.func_wrap(
        "quorum",
        "log",
        |mut caller: Caller<'_, Host>, level: u32, ptr: u32, len: u32| -> wasmtime::Result<()> {
            let host = caller.data_mut();
            if host.logs_truncated {
                return Ok(());
            }
            let remaining = host.limits.max_log_bytes.saturating_sub(host.log_bytes);
            let take = u64::from(len)
                .min(proto::MAX_LOG_LINE as u64)
                .min(remaining) as u32;
            if u64::from(len) > remaining {
                host.logs_truncated = true;
            }
            if take == 0 {
                return Ok(());
            }
            let bytes = read_guest(&mut caller, ptr, take)?;
            let mut message = String::from_utf8_lossy(&bytes).into_owned();
            if take < len {
                message.push_str(" …[cut]");
            }
            let host = caller.data_mut();
            host.log_bytes += u64::from(take);
            let level = match level {
                1 => LogLevel::Info,
                2 => LogLevel::Warn,
                3 => LogLevel::Error,
                _ => LogLevel::Log,
            };
            let at_ms = host.elapsed_ms();
            host.send(&FromChild::Log {
                level,
                message,
                at_ms,
            })
        },
    )?;
    l.func_wrap(
        "quorum",
        "sleep",
        |caller: Caller<'_, Host>, ms: u32| -> wasmtime::Result<()> {
            let host = caller.data();
            let now = Instant::now();
            let until = now + Duration::from_millis(u64::from(ms));
            if until >= host.deadline {
                std::thread::sleep(host.deadline.saturating_duration_since(now));
                return Err(host.timeout());
            }
            std::thread::sleep(until - now);
            Ok(())
        },
    )?;
    l.func_wrap("quorum", "finish", |mut caller: Caller<'_, Host>, ptr: u32, len: u32| -> wasmtime::Result<()> {
        let cap = caller.data().limits.max_result_bytes;
        let outcome = if u64::from(len) > cap + RESULT_SLACK {
            format!(
                r#"{{"error":{{"kind":"output_limit","message":"the returned value takes {len} bytes; the limit is {cap} bytes"}}}}"#
            )
            .into_bytes()
        } else {
            read_guest(&mut caller, ptr, len)?
        };
        caller.data_mut().finished = Some(outcome);
        Ok(())
    })?;

    // The few WASI calls the guest's libc makes, answered here: no files, no environment.
    let wasi = "wasi_snapshot_preview1";
    l.func_wrap(
        wasi,
        "random_get",
        |mut caller: Caller<'_, Host>, ptr: u32, len: u32| -> wasmtime::Result<i32> {
            if len > 4096 {
                return Ok(WASI_EINVAL);
            }
            let mut buf = vec![0u8; len as usize];
            fill_random(&mut buf);
            Ok(if write_guest(&mut caller, ptr, &buf).is_ok() {
                WASI_ESUCCESS
            } else {
                WASI_EFAULT
            })
        },
    )?;
    l.func_wrap(
        wasi,
        "environ_get",
        |_: Caller<'_, Host>, _: u32, _: u32| WASI_ESUCCESS,
    )?;
    l.func_wrap(
        wasi,
        "environ_sizes_get",
        |mut caller: Caller<'_, Host>, count: u32, size: u32| -> wasmtime::Result<i32> {
            write_guest(&mut caller, count, &0u32.to_le_bytes())?;
            write_guest(&mut caller, size, &0u32.to_le_bytes())?;
            Ok(WASI_ESUCCESS)
        },
    )?;
    l.func_wrap(
        wasi,
        "clock_time_get",
        |mut caller: Caller<'_, Host>,
         id: u32,
         _precision: u64,
         out: u32|
         -> wasmtime::Result<i32> {
            let nanos = match id {
                // Monotonic: time since the job started.
                1 => caller.data().started.elapsed().as_nanos(),
                _ => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            };
            let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
            write_guest(&mut caller, out, &nanos.to_le_bytes())?;
            Ok(WASI_ESUCCESS)
        },
    )?;
    l.func_wrap(wasi, "fd_close", |_: Caller<'_, Host>, _fd: u32| WASI_EBADF)?;
    l.func_wrap(
        wasi,
        "fd_fdstat_get",
        |_: Caller<'_, Host>, _fd: u32, _out: u32| WASI_EBADF,
    )?;
    l.func_wrap(
        wasi,
        "fd_seek",
        |_: Caller<'_, Host>, _fd: u32, _off: i64, _whence: i32, _out: u32| WASI_EBADF,
    )?;
    l.func_wrap(
        wasi,
        "fd_write",
        |mut caller: Caller<'_, Host>,
         fd: u32,
         iovs: u32,
         iovs_len: u32,
         written: u32|
         -> wasmtime::Result<i32> {
            if fd != 1 && fd != 2 {
                return Ok(WASI_EBADF);
            }
            if iovs_len > 1024 {
                return Ok(WASI_EINVAL);
            }
            let table = read_guest(&mut caller, iovs, iovs_len * 8)?;
            let mut total: u32 = 0;
            for iov in table.chunks_exact(8) {
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                total = total.saturating_add(len);
                // The guest's stdout and stderr only ever carry libc or panic messages: pass a
                // little of them on to our stderr for the executor's log, drop the rest.
                let room = MAX_STDERR.saturating_sub(caller.data().stderr_bytes);
                let take = (len as usize).min(room) as u32;
                if take > 0 {
                    let bytes = read_guest(&mut caller, ptr, take)?;
                    caller.data_mut().stderr_bytes += bytes.len();
                    let _ = io::stderr().write_all(&bytes);
                }
            }
            write_guest(&mut caller, written, &total.to_le_bytes())?;
            Ok(WASI_ESUCCESS)
        },
    )?;
    l.func_wrap(
        wasi,
        "proc_exit",
        |_: Caller<'_, Host>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(Exit(code)))
        },
    )?;
    Ok(l)
}

/// Whether stdin has something to read (or has closed) within `ms` milliseconds; an error from
/// poll counts as yes, so the caller goes on to read and meets it there.
fn stdin_readable_within(ms: i32) -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    #[expect(
        unsafe_code,
        reason = "poll(2) on one pollfd that lives across the call"
    )]
    // SAFETY: `fd` is a valid pollfd and the count says one.
    let ready = unsafe { libc::poll(&mut fd, 1, ms) };
    ready != 0
}

/// Copies now, while the child waits in the pool, the pages of the guest's memory it shares with
/// the template it was forked from (QuickJS's heap and stack as the template left them), by
/// writing each back unchanged: a script writes to most of them, and each first write would
/// otherwise be a copy-on-write fault taken while the script runs. Pages the template never
/// touched are left alone (mincore says which are resident; a page only ever read counts, as the
/// kernel's zero page), so the child copies at most what the template holds (about 0.4 MiB) and
/// allocates no page the script might never use.
fn warm(guest_memory: &mut [u8]) {
    #[expect(unsafe_code, reason = "sysconf(3) with a constant name")]
    // SAFETY: no pointers; glibc answers from the auxiliary vector it already holds, without a
    // system call the child's filters could refuse.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
    if page == 0 {
        return;
    }
    let pages = guest_memory.len() / page;
    let mut resident = vec![0u8; pages];
    #[expect(unsafe_code, reason = "mincore(2) on the guest's own memory")]
    // SAFETY: the range is `pages` whole host pages of the guest's memory (mincore refuses a
    // start off a page boundary, and then nothing is touched), and `resident` has one byte per
    // page for the kernel to fill.
    let asked = unsafe {
        libc::mincore(
            guest_memory.as_mut_ptr().cast(),
            pages * page,
            resident.as_mut_ptr(),
        )
    };
    if asked != 0 {
        return;
    }
    for (bytes, flags) in guest_memory.chunks_mut(page).zip(&resident) {
        if flags & 1 == 1
            && let Some(first) = bytes.first_mut()
        {
            // Opaque to the optimiser, so the store happens although the value is unchanged.
            *first = std::hint::black_box(*first);
        }
    }
}

/// Asks the kernel to back the guest's memory past its current end, up to `cap`, with
/// transparent huge pages (`MADV_HUGEPAGE`; machines set to `madvise` give them only where
/// asked). The guest grows its memory in aligned 2 MiB steps (`sandbox/guest/src/heap.rs`), so
/// each step is one page fault that zeroes 2 MiB instead of 512 faults of 4 KiB: 13 MiB of
/// rows cost about 1 ms of the kernel's time instead of about 7 ms on these machines. The
/// memory the child started with (shared with its template, copy on write) keeps small pages.
/// Best effort: where the kernel has no huge pages the advice changes nothing.
fn prefer_huge_pages(guest_memory: &mut [u8], cap: usize) {
    const HUGE: usize = 2 * 1024 * 1024;
    let base = guest_memory.as_mut_ptr() as usize;
    let reserved = usize::try_from(engine::MEMORY_RESERVATION).unwrap_or(usize::MAX);
    let start = base
        .saturating_add(guest_memory.len())
        .next_multiple_of(HUGE);
    let end = base.saturating_add(cap.min(reserved)) & !(HUGE - 1);
    if end <= start {
        return;
    }
    #[expect(unsafe_code, reason = "madvise(2) on the guest's own reserved memory")]
    // SAFETY: the range lies inside the address space wasmtime reserved for this memory (`cap`
    // is clamped to the reservation), and `MADV_HUGEPAGE` changes no mapping, protection or
    // contents: it only lets the kernel use huge pages there.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}

fn fill_random(buf: &mut [u8]) {
    #[expect(unsafe_code, reason = "getrandom(2) into a buffer we own")]
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if usize::try_from(n).ok() != Some(buf.len()) {
        // Never reached on Linux for requests this small; fall back to the clock.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
}

fn failure(kind: ErrorKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
        line: None,
        column: None,
    }
}

/// Runs the guest to completion and says how it ended, with whether a job ever arrived.
fn execute(engine: &Engine, module: &Module, host: Host) -> (Outcome, JobState) {
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limiter);
    // Start-up gets its own budget; `job_len` sets the job's deadline when the job arrives.
    store.set_epoch_deadline(PRE_JOB_LIMITS.wall_ms / EPOCH_TICK_MS + 1);
    store.epoch_deadline_trap();
    let ran = linker(engine)
        .and_then(|l| l.instantiate(&mut store, module))
        .and_then(|i| i.get_typed_func::<(), ()>(&mut store, "_start"))
        .and_then(|start| start.call(&mut store, ()));
    let host = store.data_mut();
    let finished = host.finished.take();
    let job_state = host.job_state;
    let logs_truncated = host.logs_truncated;
    let wall_ms = host.limits.wall_ms;
    let memory_denied = host.limiter.denied;
    let peak_memory_bytes = host.limiter.peak as u64;
    let cpu_at_job = host.cpu_at_job;
    // The guest's memory and code are not unmapped here: that is part of this process's exit,
    // which comes after the outcome is out, rather than a millisecond or more before it (for a
    // script that held 100 000 rows). `execute` runs once per process (a child's one job, or a
    // template until it is no longer wanted), and the process ends after it. The host's stdio
    // locks stay held too; they are reentrant, so `report` still writes from this thread.
    std::mem::forget(store);
    let (value, error) = match (&ran, finished) {
        (Ok(()), Some(json)) | (Err(_), Some(json)) if exited_cleanly(&ran) => {
            match proto::guest::finished(&json) {
                Ok(Finished {
                    value,
                    error: Some(mut f),
                }) => {
                    if memory_denied && f.kind != ErrorKind::Syntax {
                        f.kind = ErrorKind::MemoryLimit;
                    }
                    (value, Some(f))
                }
                Ok(Finished { value, error: None }) => (value, None),
                Err(e) => (
                    None,
                    Some(failure(
                        ErrorKind::Internal,
                        format!("the guest's outcome was malformed: {e}"),
                    )),
                ),
            }
        }
        (Err(e), _) => (None, Some(classify(e, memory_denied, wall_ms))),
        (Ok(()), _) => (
            None,
            Some(failure(
                ErrorKind::Internal,
                "the guest ended without an outcome",
            )),
        ),
    };
    let outcome = Outcome {
        value,
        error,
        logs_truncated,
        peak_memory_bytes,
        // Not what the child spent before its job (starting, warming its memory in the pool).
        cpu_ms: ((cpu_ms() - cpu_at_job).max(0.0) * 100.0).round() / 100.0,
    };
    (outcome, job_state)
}

/// CPU time this process has used so far (user and system, every thread), in milliseconds; 0 if
/// the kernel does not say.
fn cpu_ms() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    #[expect(unsafe_code, reason = "getrusage fills the struct it is given")]
    // SAFETY: `usage` is valid and writable; it is read only when the call succeeded.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return 0.0;
        }
        usage.assume_init()
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// `finish` was called and then the guest returned or exited with status 0.
fn exited_cleanly(ran: &wasmtime::Result<()>) -> bool {
    match ran {
        Ok(()) => true,
        Err(e) => matches!(e.downcast_ref::<Exit>(), Some(Exit(0))),
    }
}

fn classify(e: &wasmtime::Error, memory_denied: bool, wall_ms: u64) -> Failure {
    if let Some(Fatal(f)) = e.downcast_ref::<Fatal>() {
        return f.clone();
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => failure(
            ErrorKind::Timeout,
            format!("the script ran longer than {wall_ms} ms"),
        ),
        Some(Trap::StackOverflow) => failure(
            ErrorKind::StackOverflow,
            "the script's call stack overflowed",
        ),
        _ if memory_denied => failure(ErrorKind::MemoryLimit, "the script ran out of memory"),
        Some(trap) => failure(ErrorKind::Internal, format!("the guest stopped: {trap}")),
        None => match e.downcast_ref::<Exit>() {
            Some(Exit(code)) => failure(
                ErrorKind::Internal,
                format!("the guest exited with status {code}"),
            ),
            None => failure(ErrorKind::Internal, format!("the guest failed: {e}")),
        },
    }
}

/// The child: load, restrict, start the guest (which initialises QuickJS and then asks for its
/// job, at which point `Ready` is said), run the one job, report, exit.
pub fn run_child(module_path: &Path) -> anyhow::Result<()> {
    let engine = engine::engine()?;
    let module = engine::load(&engine, module_path)?;
    engine::start_epoch_ticker(&engine)?;
    let protections = crate::restrict::apply();

    #[cfg(feature = "sandbox-selftest")]
    if std::env::var_os("QUORUM_SANDBOX_SELFTEST").is_some() {
        for (probe, result) in crate::restrict::selftest() {
            eprintln!("selftest {probe}: {result}");
        }
    }
    let (outcome, state) = run_guest(&engine, &module, Some(protections), None);
    report(outcome, state)
}

/// The template: load, restrict (all but new processes), start the guest, and fork a child per
/// request from inside its first `job_len` (see `template.rs`). Each child returns here as a
/// child that has just started, runs its one job and reports.
pub fn run_template(module_path: &Path) -> anyhow::Result<()> {
    let engine = engine::engine()?;
    let module = engine::load(&engine, module_path)?;
    let template = crate::template::start();
    let pid = std::process::id();
    let (outcome, state) = run_guest(&engine, &module, None, Some(template));
    if std::process::id() != pid {
        return report(outcome, state);
    }
    // Still the template: it returns only when the executor closed the control socket, or when
    // the guest failed before it could serve (said on stderr, which the executor logs).
    match (state, outcome.error) {
        (JobState::Abandoned, _) => Ok(()),
        (_, Some(f)) => anyhow::bail!("the template's guest failed: {}", f.message),
        (_, None) => anyhow::bail!("the template's guest ended without serving"),
    }
}

fn run_guest(
    engine: &Engine,
    module: &Module,
    protections: Option<proto::Protections>,
    template: Option<crate::template::Template>,
) -> (Outcome, JobState) {
    let started = Instant::now();
    let host = Host {
        template,
        job: Vec::new(),
        job_state: JobState::Waiting,
        protections,
        limits: PRE_JOB_LIMITS,
        started,
        cpu_at_job: 0.0,
        deadline: started + Duration::from_millis(PRE_JOB_LIMITS.wall_ms),
        stdin: io::stdin().lock(),
        stdout: io::stdout().lock(),
        reply: Vec::new(),
        in_call: None,
        calls: 0,
        log_bytes: 0,
        logs_truncated: false,
        stderr_bytes: 0,
        finished: None,
        limiter: Limiter {
            cap: PRE_JOB_LIMITS.memory_mb as usize * 1024 * 1024,
            denied: false,
            peak: 0,
        },
    };
    execute(engine, module, host)
}

/// Writes the outcome, unless the executor never sent a job (then the child exits quietly).
fn report(outcome: Outcome, state: JobState) -> anyhow::Result<()> {
    if state == JobState::Abandoned {
        return Ok(());
    }
    // A guest that failed before asking for its job reports that instead of `Ready`; the
    // executor shows it as a start-up failure.
    let mut stdout = io::stdout().lock();
    proto::write_frame(&mut stdout, &FromChild::Outcome(outcome))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_errors_survive_wasmtime_wrapping() {
        let e = fatal(ErrorKind::CallLimit, "too many");
        assert_eq!(classify(&e, false, 1000).kind, ErrorKind::CallLimit);
        let t = wasmtime::Error::new(Trap::Interrupt);
        assert_eq!(classify(&t, false, 1000).kind, ErrorKind::Timeout);
        let x = wasmtime::Error::new(Exit(3));
        assert_eq!(classify(&x, false, 1000).kind, ErrorKind::Internal);
    }

    /// Which pages of `region` are resident.
    fn resident(region: &mut [u8], page: usize) -> Vec<usize> {
        let mut flags = vec![0u8; region.len() / page];
        #[expect(unsafe_code, reason = "mincore(2) on a mapping the test owns")]
        // SAFETY: `region` is whole pages from a page-aligned mapping; one byte per page.
        let asked =
            unsafe { libc::mincore(region.as_mut_ptr().cast(), region.len(), flags.as_mut_ptr()) };
        assert_eq!(asked, 0, "{}", io::Error::last_os_error());
        flags
            .iter()
            .enumerate()
            .filter(|(_, f)| *f & 1 == 1)
            .map(|(i, _)| i)
            .collect()
    }

    /// Warming writes back only the pages already there, unchanged: no value moves and no page
    /// the memory never used is brought in.
    #[test]
    fn warming_keeps_values_and_brings_in_no_page() {
        #[expect(unsafe_code, reason = "sysconf(3) with a constant name")]
        // SAFETY: no pointers.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = 16 * page;
        #[expect(unsafe_code, reason = "an anonymous mapping the test owns and unmaps")]
        // SAFETY: a fresh private anonymous mapping of `len` bytes (advice only on it), used only
        // through the slice below and unmapped at the end of the test; MAP_FAILED is checked.
        let region = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            // Page by page whatever the host's transparent huge page setting.
            libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
            std::slice::from_raw_parts_mut(p.cast::<u8>(), len)
        };
        for (i, at) in [(0, 0), (3, 17), (5, page - 1), (9, 1)] {
            region[i * page + at] = 0xA5 ^ i as u8;
        }
        // Measured before anything reads the other pages (a read maps the kernel's zero page,
        // which mincore counts as resident).
        let touched = resident(region, page);
        assert_eq!(touched, vec![0, 3, 5, 9]);
        let kept = |r: &[u8]| -> Vec<u8> {
            touched
                .iter()
                .flat_map(|i| r[i * page..(i + 1) * page].to_vec())
                .collect()
        };
        let values = kept(region);
        warm(region);
        assert_eq!(resident(region, page), touched);
        assert!(kept(region) == values);
        #[expect(unsafe_code, reason = "unmapping the test's own mapping")]
        // SAFETY: the mapping made above, not used after this.
        unsafe {
            libc::munmap(region.as_mut_ptr().cast(), len);
        }
    }
}
