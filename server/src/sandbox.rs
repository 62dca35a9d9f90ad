//! The executor's side of script runs: starts one `quorum-sandbox` child per execution, answers
//! its `db.*` calls through a handle this process owns, enforces the limits again on this side,
//! and turns the child's outcome into an execution outcome.
//!
//! The child gets a cleared environment, only stdin/stdout/stderr, `PR_SET_PDEATHSIG`, its own
//! process group and rlimits (data, open files, core, CPU, file size); it then installs seccomp
//! and Landlock itself (see `sandbox/src/restrict.rs`) and reports what is in force.
//!
//! With `executor.sandbox_template` (the default) children are not started from scratch: one
//! template process (`quorum-sandbox template`, confined the same way) has loaded the guest and
//! started QuickJS, and forks a child per request (see `sandbox/src/template.rs`). The child
//! gets its three pipes over the template's control socket, sets the job's rlimits on itself,
//! and from `Ready` on speaks exactly as a child started on its own. A template that fails is
//! replaced; while it cannot be, children start on their own.

mod display;

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use quorum_sandbox_protocol::template::{ForkRequest, GREETING, decode_reply};
use quorum_sandbox_protocol::{self as proto, DbOp, FromChild, Job, JobLimits, ToChild};
use serde_json::{Value, json};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

use crate::config::{Config, LimitsConfig};
use crate::domain::execution::{
    CallRecord, ErrorKind, ExecError, LogLine, ResultSet, SandboxReport, ScriptReport,
};
use crate::domain::workflow::Mode;

/// How long a child may take to start and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Past the wall limit, how long the child has to report before its process group is killed.
const KILL_GRACE: Duration = Duration::from_millis(1500);
/// Bytes of the child's stderr kept for the portal's log.
const MAX_STDERR: usize = 16 * 1024;
/// After a template failed to start or to fork, how long children start on their own before
/// another template is tried.
const TEMPLATE_RETRY: Duration = Duration::from_secs(30);
/// While the sandbox cannot be prepared at start-up, how long before it is tried again.
const PREPARE_RETRY: Duration = Duration::from_secs(60);
/// How often a running portal runs `quorum-sandbox precompile` again, which marks its compiled
/// guest as used: well inside the week after which another version's precompile removes a
/// guest nothing used from a shared cache.
const MARK_USED_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// Where the sandbox binary is, once compiled the guest module it loads, and the children
/// started ahead of need.
#[derive(Debug)]
pub struct Sandbox {
    bin: PathBuf,
    cache_dir: PathBuf,
    data_mb: u64,
    /// Set once compiling succeeded; a failure is retried on the next run.
    module: OnceCell<PathBuf>,
    /// The last attempt to compile (or find) the guest failed (its caller has the reason).
    unavailable: AtomicBool,
    /// How many ready children to keep, started under `pool_limits` (the configured defaults;
    /// a job with other limits gets a child started for it).
    pool_size: usize,
    pool_limits: LimitsConfig,
    pool: std::sync::Mutex<Vec<Started>>,
    refilling: AtomicBool,
    /// Fork children from a template (`executor.sandbox_template`).
    use_template: bool,
    template: tokio::sync::Mutex<TemplateSlot>,
    me: Weak<Sandbox>,
}

/// A child that started, confined itself and said it is ready for its one job.
#[derive(Debug)]
struct Started {
    child: Proc,
    stdin: pipe::Sender,
    stdout: pipe::Receiver,
    stderr: Option<tokio::task::JoinHandle<String>>,
    protections: SandboxReport,
}

/// A child process and its pipes, before it said `Ready`.
#[derive(Debug)]
struct Launched {
    child: Proc,
    stdin: pipe::Sender,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
}

/// A sandbox child: started by this process, or forked by the template (so not ours to wait
/// for; it is watched and killed through a pidfd, which cannot name a recycled pid).
#[derive(Debug)]
enum Proc {
    Spawned(Child),
    Forked(OwnedFd),
}

impl Proc {
    /// Whether it still runs (a pre-started child may have died while it waited).
    fn running(&mut self) -> bool {
        match self {
            Proc::Spawned(child) => matches!(child.try_wait(), Ok(None)),
            Proc::Forked(pidfd) => {
                // A pidfd becomes readable when its process ends.
                let mut fds = [rustix::event::PollFd::new(
                    pidfd,
                    rustix::event::PollFlags::IN,
                )];
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(0))
            }
        }
    }

    /// SIGKILL: a spawned child's whole process group; a forked child, which can start no
    /// process of its own, alone.
    fn kill(&self) {
        match self {
            Proc::Spawned(child) => kill_group(child),
            Proc::Forked(pidfd) => {
                let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
            }
        }
    }

    /// Until it has ended.
    async fn wait(&mut self) {
        match self {
            Proc::Spawned(child) => {
                let _ = child.wait().await;
            }
            Proc::Forked(pidfd) => {
                #[expect(unsafe_code, reason = "registering a borrowed pidfd with the reactor")]
                // SAFETY: `pidfd` is owned by `self`, which this borrow keeps alive and unchanged
                // until the registration is dropped at the end of this block.
                let registered =
                    unsafe { AsyncFd::register_with_interest(pidfd.as_fd(), Interest::READABLE) };
                if let Ok(fd) = registered {
                    let _ = fd.readable().await;
                }
            }
        }
    }
}

/// The template, when there is one.
#[derive(Debug)]
enum TemplateSlot {
    None,
    Running(Box<Template>),
    /// Starting or forking failed at this time; children start on their own for a while.
    Failed(Instant),
}

/// A running template and its control socket.
#[derive(Debug)]
struct Template {
    child: Child,
    control: UnixStream,
    stderr: Option<tokio::task::JoinHandle<String>>,
}

impl Template {
    /// Asks for one child under `request`'s rlimits: sends the three child ends of its pipes
    /// with the request, and gets back its pid.
    async fn fork(&mut self, request: ForkRequest) -> Result<Launched, String> {
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        let (child_stdin, stdin) = std::io::pipe().map_err(|e| io("pipe", e))?;
        let (stdout, child_stdout) = std::io::pipe().map_err(|e| io("pipe", e))?;
        let (stderr, child_stderr) = std::io::pipe().map_err(|e| io("pipe", e))?;
        let bytes = request.encode();
        let sent = {
            let fds = [
                child_stdin.as_fd(),
                child_stdout.as_fd(),
                child_stderr.as_fd(),
            ];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut ancillary = rustix::net::SendAncillaryBuffer::new(&mut space);
            if !ancillary.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
                return Err("no room for the descriptors in the request".into());
            }
            let control = &self.control;
            control
                .async_io(Interest::WRITABLE, || {
                    rustix::net::sendmsg(
                        control,
                        &[IoSlice::new(&bytes)],
                        &mut ancillary,
                        rustix::net::SendFlags::NOSIGNAL,
                    )
                    .map_err(std::io::Error::from)
                })
                .await
                .map_err(|e| io("sending a fork request to the template", e))?
        };
        // The descriptors went with the first byte; the rest of a split request follows alone.
        if let Some(rest) = bytes.get(sent..).filter(|r| !r.is_empty()) {
            self.control
                .write_all(rest)
                .await
                .map_err(|e| io("sending a fork request to the template", e))?;
        }
        drop((child_stdin, child_stdout, child_stderr));
        let mut reply = [0u8; 4];
        tokio::time::timeout(READY_TIMEOUT, self.control.read_exact(&mut reply))
            .await
            .map_err(|_| "the template did not answer in time".to_owned())?
            .map_err(|e| io("reading the template's answer", e))?;
        let pid = decode_reply(reply).map_err(|errno| {
            format!(
                "the template could not fork: {}",
                std::io::Error::from_raw_os_error(errno)
            )
        })?;
        // The child cannot have been reaped yet: it waits on its stdin, whose only writer is
        // `stdin` here.
        let pidfd = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| format!("the template answered pid {pid}"))
            .and_then(|p| {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                    .map_err(|e| format!("pidfd_open({pid}): {e}"))
            })?;
        let sender = pipe::Sender::from_owned_fd(OwnedFd::from(stdin));
        let receiver = pipe::Receiver::from_owned_fd(OwnedFd::from(stdout));
        let errors = pipe::Receiver::from_owned_fd(OwnedFd::from(stderr));
        match (sender, receiver, errors) {
            (Ok(stdin), Ok(stdout), Ok(stderr)) => Ok(Launched {
                child: Proc::Forked(pidfd),
                stdin,
                stdout,
                stderr,
            }),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                Err(io("the child's pipes", e))
            }
        }
    }

    /// Kills it and logs what it said on stderr.
    async fn stop(mut self) {
        kill_group(&self.child);
        let _ = self.child.wait().await;
        log_stderr(self.stderr.take()).await;
    }
}

impl Sandbox {
    pub fn new(config: &Config) -> Arc<Self> {
        let bin = if config.executor.sandbox_bin.is_empty() {
            default_bin()
        } else {
            PathBuf::from(&config.executor.sandbox_bin)
        };
        Arc::new_cyclic(|me| Self {
            bin,
            cache_dir: if config.executor.sandbox_cache_dir.is_empty() {
                config.data_dir.join("sandbox-cache")
            } else {
                PathBuf::from(&config.executor.sandbox_cache_dir)
            },
            data_mb: config.executor.sandbox_data_mb,
            module: OnceCell::new(),
            unavailable: AtomicBool::new(false),
            pool_size: config.executor.sandbox_pool,
            pool_limits: config.limits,
            pool: std::sync::Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
            use_template: config.executor.sandbox_template,
            template: tokio::sync::Mutex::new(TemplateSlot::None),
            me: me.clone(),
        })
    }

    /// Starts a child (forked by the template when there is one) and waits until it is
    /// confined and ready.
    async fn start(&self, module: &Path, limits: &LimitsConfig) -> Result<Started, String> {
        let launched = match self.fork(module, limits).await {
            Some(launched) => launched,
            None => spawn(self, module, limits)
                .and_then(launched)
                .map_err(|e| format!("cannot start the sandbox: {e}"))?,
        };
        let Launched {
            child,
            stdin,
            mut stdout,
            stderr,
        } = launched;
        let stderr = Some(tokio::spawn(keep_stderr(stderr)));
        widen_pipe(&stdin);
        let ready = async {
            let frame = tokio::time::timeout(READY_TIMEOUT, read_frame(&mut stdout, 64 * 1024))
                .await
                .map_err(|_| "the sandbox did not start in time".to_owned())??
                .ok_or("the sandbox exited before it was ready")?;
            match proto::decode::<FromChild>(&frame).map_err(|e| e.to_string())? {
                FromChild::Ready { v, protections } if v == proto::VERSION => Ok(SandboxReport {
                    seccomp: protections.seccomp,
                    landlock: protections.landlock,
                    no_new_privs: protections.no_new_privs,
                    ..SandboxReport::default()
                }),
                other => Err(format!(
                    "unexpected first frame from the sandbox: {other:?}"
                )),
            }
        };
        match ready.await {
            Ok(protections) => Ok(Started {
                child,
                stdin,
                stdout,
                stderr,
                protections,
            }),
            Err(e) => {
                child.kill();
                log_stderr(stderr).await;
                Err(e)
            }
        }
    }

    /// A child forked by the template, starting the template first if there is none. `None`
    /// when templates are off or failing (the caller starts a child on its own). A template that
    /// cannot fork (it died, say) is stopped, its stderr logged, and replaced at once; if the
    /// replacement fails too, or a template does not start, none is tried for
    /// [`TEMPLATE_RETRY`].
    async fn fork(&self, module: &Path, limits: &LimitsConfig) -> Option<Launched> {
        if !self.use_template {
            return None;
        }
        let (data_bytes, cpu_secs) = child_rlimits(self, limits);
        let request = ForkRequest {
            data_bytes,
            cpu_secs,
        };
        let mut slot = self.template.lock().await;
        for _ in 0..2 {
            match &*slot {
                TemplateSlot::Running(_) => {}
                TemplateSlot::Failed(at) if at.elapsed() < TEMPLATE_RETRY => return None,
                TemplateSlot::None | TemplateSlot::Failed(_) => {
                    match self.start_template(module).await {
                        Ok(t) => *slot = TemplateSlot::Running(Box::new(t)),
                        Err(e) => {
                            tracing::warn!(error = %e, "the sandbox template did not start; children start on their own");
                            *slot = TemplateSlot::Failed(Instant::now());
                            return None;
                        }
                    }
                }
            }
            let TemplateSlot::Running(template) = &mut *slot else {
                return None;
            };
            match template.fork(request).await {
                Ok(launched) => return Some(launched),
                Err(e) => {
                    tracing::warn!(error = %e, "the sandbox template could not fork; starting another");
                    if let TemplateSlot::Running(t) =
                        std::mem::replace(&mut *slot, TemplateSlot::None)
                    {
                        t.stop().await;
                    }
                }
            }
        }
        // A fresh template could not fork either.
        *slot = TemplateSlot::Failed(Instant::now());
        None
    }

    /// Starts `quorum-sandbox template` with a socket pair as its stdin, and waits until it
    /// says it can fork.
    async fn start_template(&self, module: &Path) -> Result<Template, String> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("template")
            .arg("--module")
            .arg(module)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null());
        // The template's own data and CPU are not capped here: each child it forks sets the
        // limits of its job on itself, which it could not raise above the template's.
        confine(&mut cmd, None);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let stderr = child.stderr.take().map(|s| tokio::spawn(keep_stderr(s)));
        let control = ours
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(ours))
            .map_err(|e| format!("control socket: {e}"));
        let mut template = match control {
            Ok(control) => Template {
                child,
                control,
                stderr,
            },
            Err(e) => {
                kill_group(&child);
                return Err(e);
            }
        };
        let mut greeting = [0u8; GREETING.len()];
        let said =
            tokio::time::timeout(READY_TIMEOUT, template.control.read_exact(&mut greeting)).await;
        match said {
            Ok(Ok(_)) if greeting == GREETING => Ok(template),
            Ok(Ok(_)) => {
                template.stop().await;
                Err(format!("the template greeted with {greeting:?}"))
            }
            Ok(Err(e)) => {
                template.stop().await;
                Err(format!("the template exited before it was ready: {e}"))
            }
            Err(_) => {
                template.stop().await;
                Err("the template did not start in time".into())
            }
        }
    }

    /// A ready child for a job under `limits`: a pre-started one when one fits, else a new one.
    /// The pool is topped up when the job is over (see [`run_script`]), so starting the
    /// replacement does not compete with the job for the CPU.
    async fn take(&self, module: &Path, limits: &LimitsConfig) -> Result<Started, String> {
        let fits = self.pool_size > 0
            && (limits.memory_mb, limits.wall_ms)
                == (self.pool_limits.memory_mb, self.pool_limits.wall_ms);
        if !fits {
            return self.start(module, limits).await;
        }
        let waiting = {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            let mut found = None;
            while let Some(mut s) = pool.pop() {
                // A child that died while waiting is dropped (and reaped) here.
                if s.child.running() {
                    found = Some(s);
                    break;
                }
            }
            found
        };
        match waiting {
            Some(s) => Ok(s),
            None => self.start(module, limits).await,
        }
    }

    /// Tops the pool up to its size in a background task (one at a time).
    fn refill(&self, module: &Path) {
        if self.pool_size == 0 {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let module = module.to_path_buf();
        tokio::spawn(async move {
            loop {
                let len = me.pool.lock().unwrap_or_else(PoisonError::into_inner).len();
                if len >= me.pool_size {
                    break;
                }
                match me.start(&module, &me.pool_limits).await {
                    Ok(s) => me
                        .pool
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "pre-starting a sandbox child failed");
                        break;
                    }
                }
            }
            me.refilling.store(false, Ordering::Release);
        });
    }

    /// The precompiled guest, compiled by [`Sandbox::prepare`] at start-up or else on first use
    /// (once per wasmtime version and guest). Called before a target transaction is opened, so
    /// compiling never eats into it.
    pub async fn module(&self) -> Result<&Path, String> {
        let compiled = self.module.get_or_try_init(|| self.precompile()).await;
        self.unavailable.store(compiled.is_err(), Ordering::Release);
        compiled.map(PathBuf::as_path)
    }

    /// Runs `quorum-sandbox precompile`: the compiled guest's path, compiled now if the cache
    /// does not hold it yet. It also marks that guest as used and prunes the cache of guests
    /// nothing has used for a week.
    async fn precompile(&self) -> Result<PathBuf, String> {
        let out = Command::new(&self.bin)
            .arg("precompile")
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .env_clear()
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} precompile failed: {}",
                self.bin.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }

    /// Whether scripts can run now, as far as this process knows.
    pub fn readiness(&self) -> Readiness {
        if self.module.initialized() {
            Readiness::Ready
        } else if self.unavailable.load(Ordering::Acquire) {
            Readiness::Unavailable
        } else {
            Readiness::Preparing
        }
    }

    /// Gets the sandbox ready when the portal starts, so that the first script does not wait
    /// for it: compiles the guest (seconds, the first time for a wasmtime version and guest;
    /// found in the cache afterwards), then starts the template and the pre-started children,
    /// and from then on looks the guest up again every [`MARK_USED_EVERY`], marking it as used,
    /// until the portal drops the sandbox. A failure is logged with its reason and tried again
    /// every [`PREPARE_RETRY`] (a fixed permission needs no restart), until it succeeds or the
    /// portal drops the sandbox; the same failure again is logged at debug level only, so a
    /// portal deliberately run without `quorum-sandbox` says so once.
    pub fn prepare(me: &Arc<Sandbox>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(me);
        tokio::spawn(async move {
            let mut said = None;
            loop {
                let Some(sandbox) = me.upgrade() else {
                    return;
                };
                let t = Instant::now();
                match sandbox.module().await {
                    Ok(module) => {
                        tracing::info!(
                            module = %module.display(),
                            took_ms = t.elapsed().as_millis(),
                            "script sandbox ready"
                        );
                        sandbox.refill(module);
                        drop(sandbox);
                        // Looked up again while this portal runs, which marks its guest as used,
                        // so a newer version sharing the cache never removes it.
                        loop {
                            tokio::time::sleep(MARK_USED_EVERY).await;
                            let Some(sandbox) = me.upgrade() else {
                                return;
                            };
                            if let Err(e) = sandbox.precompile().await {
                                tracing::debug!(error = %e, "could not mark the compiled guest as used");
                            }
                        }
                    }
                    Err(e) if said.as_ref() == Some(&e) => {
                        tracing::debug!(error = %e, "the script sandbox is still not available");
                    }
                    Err(e) => {
                        tracing::error!(
                            error = %e,
                            retry_secs = PREPARE_RETRY.as_secs(),
                            "the script sandbox is not available: script executions fail until it is"
                        );
                        said = Some(e);
                    }
                }
                drop(sandbox);
                tokio::time::sleep(PREPARE_RETRY).await;
            }
        })
    }
}

/// What [`Sandbox::readiness`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The guest is being compiled or looked up; a script now waits for it.
    Preparing,
    /// The guest is compiled: scripts run.
    Ready,
    /// The last attempt failed (the log says why); scripts fail until an attempt succeeds.
    Unavailable,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Preparing => "preparing",
            Readiness::Ready => "ready",
            Readiness::Unavailable => "unavailable",
        }
    }
}

/// `quorum-sandbox` beside the running binary (or beside its parent directory, for test
/// binaries under `target/*/deps`).
fn default_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let beside = dir.join("quorum-sandbox");
    if beside.is_file() {
        return beside;
    }
    dir.parent()
        .map(|p| p.join("quorum-sandbox"))
        .unwrap_or(beside)
}

fn kind_from(k: proto::ErrorKind) -> ErrorKind {
    match k {
        proto::ErrorKind::Syntax => ErrorKind::Syntax,
        proto::ErrorKind::Script => ErrorKind::Script,
        proto::ErrorKind::DbError => ErrorKind::DbError,
        proto::ErrorKind::Timeout => ErrorKind::Timeout,
        proto::ErrorKind::MemoryLimit => ErrorKind::MemoryLimit,
        proto::ErrorKind::StackOverflow => ErrorKind::StackOverflow,
        proto::ErrorKind::OutputLimit => ErrorKind::OutputLimit,
        proto::ErrorKind::CallLimit => ErrorKind::CallLimit,
        proto::ErrorKind::ReadOnlyViolation => ErrorKind::ReadOnlyViolation,
        proto::ErrorKind::ForbiddenStatement => ErrorKind::ForbiddenStatement,
        proto::ErrorKind::Internal => ErrorKind::Internal,
    }
}

/// The answer to one `db.*` call.
#[derive(Debug)]
pub enum Reply {
    /// `{rows, rowCount, fields, truncated}` for SQL; the method's value for MongoDB.
    /// `truncated`: the row or byte limit cut the rows handed to the script.
    Ok {
        value: Value,
        rows: u64,
        truncated: bool,
    },
    /// A database error the script may catch.
    Error {
        message: String,
        code: Option<String>,
    },
    /// A broken limit that ends the script.
    Fatal {
        kind: proto::ErrorKind,
        message: String,
    },
}

/// The wrapped database handle of one execution: every call goes through it. A handle that
/// reads rows one by one hands them to `rows` as it goes, so they reach the script in batches
/// while the rest are still being read, and leaves `rows` out of its reply.
pub trait Handle: Send {
    fn call(
        &mut self,
        op: DbOp,
        rows: &mut RowSink<'_>,
    ) -> impl std::future::Future<Output = Reply> + Send;
}

/// A reply to the guest, as it reads it: `{"ok": value}` or `{"error": {…}}`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Ok(Value),
    Error(Value),
}

/// Bytes of rows gathered before they are sent to the child as one `DbRows` batch.
const ROW_BATCH_BYTES: usize = 64 * 1024;

/// Where the rows of one call go as they are read: written once as JSON text, sent to the child
/// in batches, and the batches kept for the results page (the last query's rows are what an
/// execution shows; they are decoded only then).
///
/// A batch is a JSON array whose first element is the array of the column names and whose
/// other elements are the rows, each an array of its values in column order
/// (`[["id","name"],[1,"a"],[2,"b"]]`): the names go once per batch rather than once per value,
/// which makes narrow rows about a third smaller to write, send and read, and lets the guest
/// take each column's key from its position instead of reading and looking it up.
#[derive(Debug)]
pub struct RowSink<'a> {
    child: Option<&'a mut pipe::Sender>,
    id: u32,
    /// The column names as a JSON array, which opens every batch.
    header: Vec<u8>,
    /// `[`, the header and the rows not yet sent, comma-separated.
    batch: Vec<u8>,
    sent: bool,
    /// Every batch of this call, each a JSON array.
    kept: Vec<Vec<u8>>,
    /// Writing to the child failed; the conversation ends with this.
    broken: Option<String>,
}

impl<'a> RowSink<'a> {
    fn to_child(child: &'a mut pipe::Sender, id: u32) -> Self {
        Self {
            child: Some(child),
            id,
            ..Self::detached()
        }
    }

    /// A sink that sends nothing (in-process use and benchmarks): its rows go in the reply.
    pub fn detached() -> Self {
        Self {
            child: None,
            id: 0,
            header: b"[]".to_vec(),
            batch: Vec::with_capacity(ROW_BATCH_BYTES + 4096),
            sent: false,
            kept: Vec::new(),
            broken: None,
        }
    }

    /// Names the columns of the rows to come, in the order `push` writes their values; set
    /// before the first row.
    pub fn set_columns<'n>(&mut self, names: impl IntoIterator<Item = &'n str>) {
        let names: Vec<&str> = names.into_iter().collect();
        if let Ok(header) = serde_json::to_vec(&names) {
            self.header = header;
        }
    }

    /// Adds one row, its values written comma-separated by `write` (in the order of
    /// [`RowSink::set_columns`]), if it takes at most `room` bytes; returns its size, or `None`
    /// (and adds nothing) when it does not fit or cannot be written.
    pub async fn push(
        &mut self,
        room: u64,
        write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> Option<u64> {
        let mark = self.batch.len();
        if mark == 0 {
            self.batch.push(b'[');
            self.batch.extend_from_slice(&self.header);
        }
        self.batch.push(b',');
        let start = self.batch.len();
        self.batch.push(b'[');
        let size = match write(&mut self.batch) {
            Ok(()) => {
                self.batch.push(b']');
                (self.batch.len() - start) as u64
            }
            Err(_) => u64::MAX,
        };
        if size > room {
            self.batch.truncate(mark);
            return None;
        }
        if self.batch.len() >= ROW_BATCH_BYTES {
            self.flush().await;
        }
        Some(size)
    }

    /// Closes the batch being filled and keeps it; sends it when there is a child.
    async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.batch.push(b']');
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(ROW_BATCH_BYTES + 4096));
        if let Some(child) = self.child.as_deref_mut() {
            let sent = match proto::encode_db_rows(self.id, &batch) {
                Ok(frame) => write_all(child, &frame).await,
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => self.sent = true,
                Err(e) => {
                    self.broken.get_or_insert(e);
                }
            }
        }
        self.kept.push(batch);
    }

    /// Sends what is left and says what the reply's `rows` must hold: nothing when the rows went
    /// out in batches, else the rows themselves as objects (a detached sink, or rows few enough
    /// to go in the reply's one frame).
    pub async fn finish(&mut self) -> Value {
        if self.sent {
            self.flush().await;
            return Value::Array(Vec::new());
        }
        if !self.batch.is_empty() {
            self.batch.push(b']');
            self.kept.push(std::mem::take(&mut self.batch));
        }
        Value::Array(decode_batches(&self.kept))
    }

    /// This call's rows, as the batches of JSON they were sent in.
    fn take_kept(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.kept)
    }
}

/// The rows of a call's batches, as objects: each value under its column's name, a later
/// column of the same name replacing an earlier one in its place (as in a JSON object).
fn decode_batches(batches: &[Vec<u8>]) -> Vec<Value> {
    let mut rows = Vec::new();
    for b in batches {
        let Ok(Value::Array(part)) = serde_json::from_slice(b) else {
            continue;
        };
        let mut part = part.into_iter();
        let Some(Value::Array(names)) = part.next() else {
            continue;
        };
        let names: Vec<String> = names
            .into_iter()
            .map(|n| match n {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect();
        rows.extend(part.map(|row| match row {
            Value::Array(values) => Value::Object(names.iter().cloned().zip(values).collect()),
            other => other,
        }));
    }
    rows
}

/// One script execution's result, before the transaction is settled.
#[derive(Debug)]
pub struct ScriptRun {
    pub report: ScriptReport,
    pub error: Option<ExecError>,
    /// Rows to show: the returned rows, else those of the last `db.query`.
    pub display: Option<ResultSet>,
    /// A call failed (even if the script caught it): writes must not commit.
    pub any_call_failed: bool,
}

impl ScriptRun {
    /// The script returned without error and none of its calls failed (even one it caught):
    /// its transaction may commit.
    pub fn committable(&self) -> bool {
        self.error.is_none() && !self.any_call_failed
    }
}

pub fn job_limits(l: &LimitsConfig) -> JobLimits {
    JobLimits {
        wall_ms: u64::from(l.wall_ms),
        memory_mb: l.memory_mb,
        max_calls: l.max_calls,
        // One call's arguments may be as large as a stored result.
        max_call_bytes: l.max_result_bytes,
        max_log_bytes: l.max_log_bytes,
        max_result_bytes: l.max_result_bytes,
    }
}

/// `RLIMIT_DATA` (bytes) and `RLIMIT_CPU` (seconds) of a child for a job under `limits`.
fn child_rlimits(sandbox: &Sandbox, limits: &LimitsConfig) -> (u64, u64) {
    let data = (u64::from(limits.memory_mb) + sandbox.data_mb) * 1024 * 1024;
    let cpu = u64::from(limits.wall_ms).div_ceil(1000) + 2;
    (data, cpu)
}

/// A child started on its own, for a job under `limits`.
fn spawn(sandbox: &Sandbox, module: &Path, limits: &LimitsConfig) -> std::io::Result<Child> {
    let mut cmd = Command::new(&sandbox.bin);
    cmd.arg("run")
        .arg("--module")
        .arg(module)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    confine(&mut cmd, Some(child_rlimits(sandbox, limits)));
    cmd.spawn()
}

/// Its pipes, as the conversation uses them.
fn launched(mut child: Child) -> std::io::Result<Launched> {
    let missing = || std::io::Error::other("the sandbox's pipes are missing");
    let stdin = child.stdin.take().ok_or_else(missing)?.into_owned_fd()?;
    let stdout = child.stdout.take().ok_or_else(missing)?.into_owned_fd()?;
    let stderr = child.stderr.take().ok_or_else(missing)?.into_owned_fd()?;
    Ok(Launched {
        stdin: pipe::Sender::from_owned_fd(stdin)?,
        stdout: pipe::Receiver::from_owned_fd(stdout)?,
        stderr: pipe::Receiver::from_owned_fd(stderr)?,
        child: Proc::Spawned(child),
    })
}

/// What every sandbox process gets from its parent: a cleared environment, a piped stderr, its
/// own process group, the death signal, and rlimits (open files, core, file size; data and CPU
/// when `data_cpu` gives them), with nothing but stdin, stdout and stderr crossing exec.
fn confine(cmd: &mut Command, data_cpu: Option<(u64, u64)>) {
    cmd.env_clear()
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let parent = std::process::id();
    #[expect(
        unsafe_code,
        reason = "pre_exec runs async-signal-safe system calls in the child"
    )]
    // SAFETY: between fork and exec the closure only makes async-signal-safe system calls
    // (prctl, getppid, setrlimit, close_range, _exit), allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the death signal was armed.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            let limit = |resource, value: u64| {
                let r = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            if let Some((data, cpu)) = data_cpu {
                limit(libc::RLIMIT_DATA, data)?;
                limit(libc::RLIMIT_CPU, cpu)?;
            }
            limit(libc::RLIMIT_NOFILE, 16)?;
            limit(libc::RLIMIT_CORE, 0)?;
            limit(libc::RLIMIT_FSIZE, 0)?;
            // Nothing but stdin, stdout and stderr crosses exec.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
}

/// Keeps the first [`MAX_STDERR`] bytes a process writes to stderr, until it closes it.
async fn keep_stderr<R: AsyncRead + Unpin>(mut stderr: R) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_STDERR.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Lets up to 1 MiB of replies wait in the pipe to the child (64 KiB by default), so the portal
/// keeps reading rows while the guest decodes the batches before them. Best effort: a host with
/// a lower `fs.pipe-max-size` keeps the default.
fn widen_pipe(stdin: &pipe::Sender) {
    use std::os::fd::AsRawFd;
    #[expect(
        unsafe_code,
        reason = "fcntl(F_SETPIPE_SZ) on a pipe this process owns"
    )]
    // SAFETY: a plain system call on a valid descriptor; it changes only the pipe's capacity.
    unsafe {
        libc::fcntl(stdin.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// Reads one frame with the cap checked before the body is allocated.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    cap: usize,
) -> Result<Option<Vec<u8>>, String> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = proto::check_len(prefix, cap).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok(Some(body))
}

async fn send(stdin: &mut pipe::Sender, frame: &ToChild) -> Result<(), String> {
    let bytes = proto::encode(frame).map_err(|e| e.to_string())?;
    write_all(stdin, &bytes).await
}

async fn write_all(stdin: &mut pipe::Sender, bytes: &[u8]) -> Result<(), String> {
    stdin.write_all(bytes).await.map_err(|e| e.to_string())?;
    stdin.flush().await.map_err(|e| e.to_string())
}

/// Logs what a failed child wrote to stderr (it has been killed, so the reader ends).
async fn log_stderr(stderr: Option<tokio::task::JoinHandle<String>>) {
    let Some(handle) = stderr else {
        return;
    };
    let text = handle.await.unwrap_or_default();
    if !text.is_empty() {
        tracing::warn!(stderr = %text, "sandbox child stderr");
    }
}

fn kill_group(child: &Child) {
    if let Some(pid) = child.id() {
        #[expect(unsafe_code, reason = "kill(2) on the child's own process group")]
        // SAFETY: a plain system call; the group is the child's, created by `process_group(0)`.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

/// Everything a run needs besides the handle.
#[derive(Debug, Clone, Copy)]
pub struct ScriptJob<'a> {
    pub sandbox: &'a Sandbox,
    pub engine: proto::Engine,
    pub mode: Mode,
    pub kind: proto::SourceKind,
    pub source: &'a str,
    pub limits: &'a LimitsConfig,
    /// Parse only; nothing runs.
    pub check_only: bool,
}

/// A child running one job, or why there is none. Started with [`start`] while the target's
/// connection is opened: the child has its job at once, so QuickJS starts, parses the script
/// and runs it up to its first `db.*` call (which waits in the pipe) while the connection is
/// set up, and the two start-ups overlap.
#[derive(Debug)]
pub struct Running {
    child: Result<Live, ExecError>,
}

#[derive(Debug)]
struct Live {
    module: PathBuf,
    started: Started,
    /// When the job was sent: the script's clock and its deadline count from here, as the
    /// child's do.
    sent_at: Instant,
}

impl Running {
    /// Stops a job that will get no database (its target could not be reached): the child is
    /// killed and reaped in the background, and the pool topped up.
    pub fn abandon(self, sandbox: &Sandbox) {
        if let Ok(live) = self.child {
            sandbox.refill(&live.module);
            let mut child = live.started.child;
            child.kill();
            tokio::spawn(async move { child.wait().await });
        }
    }
}

/// Starts `job` in a child: a pre-started one, or one forked (or started) now.
pub async fn start(job: &ScriptJob<'_>) -> Running {
    let module = match job.sandbox.module().await {
        Ok(m) => m.to_path_buf(),
        Err(e) => {
            return Running {
                child: Err(ExecError::new(
                    ErrorKind::Unsupported,
                    format!("the script sandbox is not available: {e}"),
                )),
            };
        }
    };
    let mut started = match job.sandbox.take(&module, job.limits).await {
        Ok(s) => s,
        Err(e) => {
            return Running {
                child: Err(ExecError::new(ErrorKind::Internal, e)),
            };
        }
    };
    let frame = ToChild::Job(Job {
        v: proto::VERSION,
        engine: job.engine,
        mode: match job.mode {
            Mode::Read => proto::Mode::Read,
            Mode::Write => proto::Mode::Write,
        },
        kind: job.kind,
        source: job.source.to_owned(),
        limits: job_limits(job.limits),
        check_only: job.check_only,
    });
    let sent_at = Instant::now();
    // A large job fills the pipe until the child reads it: bounded by the run's deadline.
    let sent = tokio::time::timeout_at(
        deadline(sent_at, job.limits).into(),
        send(&mut started.stdin, &frame),
    )
    .await
    .unwrap_or_else(|_| Err("the sandbox did not read its job in time".into()));
    if let Err(e) = sent {
        // The child died or hung before its job: stopped, with what it said on stderr logged.
        job.sandbox.refill(&module);
        let mut child = started.child;
        child.kill();
        log_stderr(started.stderr).await;
        child.wait().await;
        return Running {
            child: Err(ExecError::new(ErrorKind::Internal, e)),
        };
    }
    Running {
        child: Ok(Live {
            module,
            started,
            sent_at,
        }),
    }
}

/// When a run whose job was sent at `sent_at` is stopped: its wall limit, then a grace period for
/// the child's own deadline to answer first.
fn deadline(sent_at: Instant, limits: &LimitsConfig) -> Instant {
    sent_at + Duration::from_millis(u64::from(limits.wall_ms)) + KILL_GRACE
}

/// Runs one script in a fresh child, answering its calls through `handle`.
pub async fn run_script<H: Handle>(job: ScriptJob<'_>, handle: &mut H) -> ScriptRun {
    let running = start(&job).await;
    finish(running, job, handle).await
}

/// Answers the calls of a job [`start`]ed in a child through `handle`, until its outcome (or
/// its deadline, counted from when the child got the job).
pub async fn finish<H: Handle>(running: Running, job: ScriptJob<'_>, handle: &mut H) -> ScriptRun {
    let mut run = ScriptRun {
        report: ScriptReport::default(),
        error: None,
        display: None,
        any_call_failed: false,
    };
    let mut live = match running.child {
        Ok(c) => c,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    run.report.sandbox = live.started.protections.clone();
    let result = tokio::time::timeout_at(
        deadline(live.sent_at, job.limits).into(),
        converse(&job, &mut live.started, live.sent_at, handle, &mut run),
    )
    .await;
    let Live {
        module, started, ..
    } = live;
    let mut child = started.child;
    job.sandbox.refill(&module);
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            child.kill();
            log_stderr(started.stderr).await;
            run.error = Some(ExecError::new(ErrorKind::Internal, e));
            child.wait().await;
            return run;
        }
        Err(_) => {
            child.kill();
            run.error = Some(ExecError::new(
                ErrorKind::Timeout,
                format!(
                    "the script ran longer than {} ms and was stopped",
                    job.limits.wall_ms
                ),
            ));
        }
    }
    // The outcome is in hand: the child's exit (unmapping its memory) is not waited for.
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        child.kill();
        child.wait().await;
    });
    run
}

async fn converse<H: Handle>(
    job: &ScriptJob<'_>,
    started: &mut Started,
    sent_at: Instant,
    handle: &mut H,
    run: &mut ScriptRun,
) -> Result<(), String> {
    let Started { stdin, stdout, .. } = started;
    let limits = job.limits;
    // A frame from the child is at most one call's arguments, a log line, or the outcome.
    let cap = usize::try_from(limits.max_result_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        + (1 << 20);
    let mut log_bytes: u64 = 0;
    // The last call's rows: SQL keeps the batches it sent, read for the results page only.
    let mut last: Option<display::Shown> = None;
    loop {
        let body = read_frame(stdout, cap)
            .await?
            .ok_or("the sandbox process ended without an outcome (it crashed or was killed)")?;
        match proto::decode::<FromChild>(&body).map_err(|e| e.to_string())? {
            FromChild::Log {
                level,
                message,
                at_ms,
            } => {
                let size = message.len() as u64;
                if log_bytes + size > limits.max_log_bytes {
                    run.report.sandbox.logs_truncated = true;
                    continue;
                }
                log_bytes += size;
                run.report.logs.push(LogLine {
                    level: level.as_str().to_owned(),
                    message,
                    at_ms,
                });
            }
            FromChild::DbCall { id, call } => {
                let seq = u32::try_from(run.report.calls.len()).unwrap_or(u32::MAX) + 1;
                let at_ms = u64::try_from(sent_at.elapsed().as_millis()).unwrap_or(u64::MAX);
                let t0 = Instant::now();
                let mut sink = RowSink::to_child(stdin, id);
                let (reply, record) = if seq > limits.max_calls {
                    let message = format!(
                        "the script made more than {} database calls",
                        limits.max_calls
                    );
                    (
                        Reply::Fatal {
                            kind: proto::ErrorKind::CallLimit,
                            message,
                        },
                        ("limit".to_owned(), String::new()),
                    )
                } else {
                    match serde_json::from_str::<DbOp>(call.get()) {
                        Ok(op) => {
                            let described = describe(&op);
                            (handle.call(op, &mut sink).await, described)
                        }
                        Err(e) => (
                            Reply::Error {
                                message: format!("malformed database call: {e}"),
                                code: None,
                            },
                            ("invalid".to_owned(), String::new()),
                        ),
                    }
                };
                if let Some(e) = sink.broken.take() {
                    return Err(format!("sending rows to the sandbox: {e}"));
                }
                let kept = sink.take_kept();
                let duration_ms = (t0.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
                let mut note = None;
                // Rows this call left to show, replacing the last call's once it is answered.
                let mut new_last = None;
                let (reply_json, fatal, rows, error) = match reply {
                    Reply::Ok {
                        value,
                        rows,
                        truncated,
                    } => {
                        let types = display::LastCall::types_of(&value);
                        let shown = if value.get("rows").is_some() {
                            Some(display::Last::Batches(kept))
                        } else if job.engine == proto::Engine::Mongodb
                            && let Some(docs) = value.as_array()
                        {
                            Some(display::Last::Documents(docs.clone()))
                        } else {
                            None
                        };
                        new_last = shown.map(|rows| display::LastCall {
                            rows,
                            truncated,
                            types,
                        });
                        if truncated {
                            note = Some(format!(
                                "call {seq} ({} {}): only the first {rows} rows were handed to the script (limits.max_rows is {}, limits.max_result_bytes is {})",
                                record.0,
                                record.1,
                                job.limits.max_rows,
                                job.limits.max_result_bytes
                            ));
                        }
                        (Answer::Ok(value), None, rows, None)
                    }
                    Reply::Error { message, code } => {
                        run.any_call_failed = true;
                        let e = json!({"kind": "db_error", "message": message, "code": code});
                        (Answer::Error(e), None, 0, Some(message))
                    }
                    Reply::Fatal { kind, message } => {
                        run.any_call_failed = true;
                        let f = proto::Failure {
                            kind,
                            message: message.clone(),
                            line: None,
                            column: None,
                        };
                        (Answer::Ok(Value::Null), Some(f), 0, Some(message))
                    }
                };
                if let Some(message) = note {
                    run.report.logs.push(LogLine {
                        level: "warn".to_owned(),
                        message,
                        at_ms,
                    });
                }
                run.report.calls.push(CallRecord {
                    seq,
                    op: record.0,
                    target: record.1,
                    at_ms,
                    duration_ms,
                    rows,
                    error,
                });
                // Serialized once, straight into the raw value (no second parse).
                let reply =
                    serde_json::value::to_raw_value(&reply_json).map_err(|e| e.to_string())?;
                send(stdin, &ToChild::DbReply { id, reply, fatal }).await?;
                if let Some(l) = new_last {
                    last = Some(display::Shown::new(
                        l,
                        last.as_ref(),
                        limits.max_rows as usize,
                    ));
                }
            }
            FromChild::Outcome(outcome) => {
                run.report.sandbox.logs_truncated |= outcome.logs_truncated;
                run.report.sandbox.peak_memory_bytes = outcome.peak_memory_bytes;
                run.report.sandbox.cpu_ms = outcome.cpu_ms;
                let value: Option<Value> = outcome
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_str(v.get()).ok());
                run.display = display::rows(value.as_ref(), last, limits.max_rows as usize).await;
                if job.engine == proto::Engine::Mongodb
                    && let Some(d) = run.display.as_mut()
                {
                    // Extended JSON wrappers ({"$oid": …}) shown as plain values.
                    for row in &mut d.rows {
                        for cell in row.iter_mut() {
                            *cell = crate::mongo::relax(std::mem::take(cell));
                        }
                    }
                }
                run.report.result = value;
                if let Some(f) = outcome.error {
                    let where_ = match (f.line, f.column) {
                        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
                        (Some(l), None) => format!(" (line {l})"),
                        _ => String::new(),
                    };
                    run.error = Some(ExecError {
                        line: f.line,
                        column: f.column,
                        ..ExecError::new(kind_from(f.kind), format!("{}{where_}", f.message))
                    });
                }
                return Ok(());
            }
            FromChild::Ready { .. } => return Err("the sandbox said ready twice".into()),
        }
    }
}

/// The handle of a syntax check: no call may reach a database.
struct NoDatabase;

impl Handle for NoDatabase {
    async fn call(&mut self, _op: DbOp, _rows: &mut RowSink<'_>) -> Reply {
        Reply::Fatal {
            kind: proto::ErrorKind::Internal,
            message: "a syntax check runs no database calls".into(),
        }
    }
}

/// Parses a script or mongosh expression in a fresh child without running it; the syntax
/// error, if there is one.
pub async fn check_syntax(
    sandbox: &Sandbox,
    engine: proto::Engine,
    kind: proto::SourceKind,
    source: &str,
    limits: &LimitsConfig,
) -> Result<Option<ExecError>, String> {
    let limits = LimitsConfig {
        wall_ms: limits.wall_ms.min(5000),
        ..*limits
    };
    let job = ScriptJob {
        sandbox,
        engine,
        mode: Mode::Read,
        kind,
        source,
        limits: &limits,
        check_only: true,
    };
    let run = run_script(job, &mut NoDatabase).await;
    match run.error {
        None => Ok(None),
        Some(e) if e.kind == ErrorKind::Syntax => Ok(Some(e)),
        Some(e) if matches!(e.kind, ErrorKind::Internal | ErrorKind::Unsupported) => Err(e.message),
        // Code outside the function the script is wrapped in ran at parse time and failed:
        // the source is not one function body.
        Some(e) => Ok(Some(ExecError {
            message: format!(
                "the script does not parse as one function body: {}",
                e.message
            ),
            ..e
        })),
    }
}

/// `(op, target)` for the call record.
fn describe(op: &DbOp) -> (String, String) {
    match op {
        DbOp::Query { sql, .. } => ("query".to_owned(), sql.chars().take(500).collect()),
        DbOp::Mongo {
            collection, method, ..
        } => (method.clone(), collection.chars().take(200).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detached sink writes the batches the child would get and answers their rows as the
    /// objects a script sees: each value under its column's name, a repeated name keeping the
    /// later value in the earlier one's place; a row over the room left is not added.
    #[tokio::test]
    async fn a_sink_writes_names_once_and_answers_objects() {
        let mut sink = RowSink::detached();
        sink.set_columns(["a", "b", "a"]);
        let row = |v: &'static str| {
            move |out: &mut Vec<u8>| -> serde_json::Result<()> {
                out.extend_from_slice(v.as_bytes());
                Ok(())
            }
        };
        assert_eq!(sink.push(100, row(r#"1,"x",3"#)).await, Some(9));
        assert_eq!(sink.push(5, row(r#"4,"too long",6"#)).await, None);
        assert_eq!(sink.push(100, row("7,null,9")).await, Some(10));
        let rows = sink.finish().await;
        assert_eq!(
            serde_json::to_string(&rows).ok().as_deref(),
            Some(r#"[{"a":3,"b":"x"},{"a":9,"b":null}]"#)
        );
        assert_eq!(
            sink.take_kept(),
            [br#"[["a","b","a"],[1,"x",3],[7,null,9]]"#.to_vec()]
        );

        // A first row that does not fit leaves no batch behind.
        let mut sink = RowSink::detached();
        sink.set_columns(["n"]);
        assert_eq!(sink.push(1, row("12345")).await, None);
        assert_eq!(sink.finish().await, json!([]));
        assert!(sink.take_kept().is_empty());
    }
}
