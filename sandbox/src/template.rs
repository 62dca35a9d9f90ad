//! The template (`quorum-sandbox template`): a fork server that pays a child's start-up once.
//!
//! A child started on its own spends about 10 ms before it can take a job: exec and dynamic
//! loading, the wasmtime engine, deserializing the 3.6 MB module, instantiating it and starting
//! QuickJS with the prelude. The template does all of that once, confines itself
//! ([`restrict::apply_template`]), and then waits inside the guest's first `job_len` call. Each
//! [`ForkRequest`] on its control socket (its stdin) brings three descriptors; the template forks,
//! and the new process takes them as its stdin, stdout and stderr, finishes its confinement
//! ([`restrict::apply_forked`]: no new processes), and carries on as a child that has just
//! started: it says `Ready` and waits for its one job. Every job still runs in a process of its
//! own that nothing ran in before; what is shared is the template's initial memory, copy on
//! write.
//!
//! The template holds no credentials, opens nothing after start-up and lets the kernel reap its
//! children (`SIGCHLD` ignored); the executor watches and kills each one through a pidfd.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use quorum_sandbox_protocol::Protections;
use quorum_sandbox_protocol::template::{ForkRequest, GREETING, encode_reply};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
use wasmtime::Engine;

use crate::restrict;

/// What a template knows about itself, for the children it forks.
#[derive(Debug, Clone)]
pub struct Template {
    /// The template's pid, which each child checks its parent against after arming its death
    /// signal.
    pid: u32,
    protections: Protections,
    /// `sandbox-selftest` builds: children run the probes once confined.
    selftest: bool,
}

/// How [`serve`] returned.
#[derive(Debug)]
pub enum Served {
    /// This process is a new job child, confined, with the job's descriptors as its stdio.
    Child(Protections),
    /// The executor closed the control socket: the template is no longer wanted.
    Closed,
}

/// The template's side of start-up: confines itself (all but the ban on new processes), lets
/// the kernel reap its children and names itself in `ps`.
pub fn start() -> Template {
    let protections = restrict::apply_template();
    #[expect(unsafe_code, reason = "signal and prctl with constant arguments")]
    // SAFETY: plain system calls; the name is a NUL-terminated static string.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        libc::prctl(libc::PR_SET_NAME, c"quorum-template".as_ptr(), 0, 0, 0);
    }
    Template {
        pid: std::process::id(),
        protections,
        selftest: cfg!(feature = "sandbox-selftest")
            && std::env::var_os("QUORUM_SANDBOX_SELFTEST").is_some(),
    }
}

/// Says the template is ready, then forks a child per request until the control socket closes.
/// Returns in the template only when it closes; returns in each child, confined.
pub fn serve(template: &Template, engine: &Engine) -> anyhow::Result<Served> {
    let stdin = io::stdin();
    let control = stdin.as_fd();
    write_all(control, &GREETING)?;
    loop {
        let Some((request, fds)) = receive(control)? else {
            return Ok(Served::Closed);
        };
        let Ok(fds) = <[OwnedFd; 3]>::try_from(fds) else {
            write_all(control, &encode_reply(Err(libc::EINVAL)))?;
            continue;
        };
        #[expect(unsafe_code, reason = "fork(2) in a single-threaded process")]
        // SAFETY: the template never starts a thread (its epoch ticker is started by each child
        // after the fork), so no lock can be held by a thread that the child would not have.
        let pid = unsafe { libc::fork() };
        match pid {
            0 => match become_child(template, request, fds, engine) {
                Ok(protections) => return Ok(Served::Child(protections)),
                Err(e) => {
                    eprintln!("quorum-sandbox: a forked child could not start: {e:#}");
                    #[expect(unsafe_code, reason = "_exit(2) in a forked child")]
                    // SAFETY: ends this process at once, without running the template's exit
                    // handlers a second time.
                    unsafe {
                        libc::_exit(1)
                    }
                }
            },
            n if n < 0 => {
                let errno = io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO);
                drop(fds);
                write_all(control, &encode_reply(Err(errno)))?;
            }
            n => {
                // The child has its copies; the template keeps none.
                drop(fds);
                write_all(control, &encode_reply(Ok(n.unsigned_abs())))?;
            }
        }
    }
}

/// One request: its bytes, and the descriptors that came with them. `None` at end of stream.
fn receive(control: BorrowedFd<'_>) -> anyhow::Result<Option<(ForkRequest, Vec<OwnedFd>)>> {
    let mut bytes = [0u8; ForkRequest::LEN];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match recvmsg(
            control,
            &mut [IoSliceMut::new(&mut bytes)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => break r,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(anyhow::anyhow!("reading the control socket: {e}")),
        }
    };
    let mut fds = Vec::new();
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.bytes == 0 {
        return Ok(None);
    }
    // A stream socket may split the request; the descriptors came with its first byte.
    let mut filled = received.bytes;
    while filled < bytes.len() {
        match rustix::io::read(control, &mut bytes[filled..]) {
            Ok(0) => return Ok(None),
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(anyhow::anyhow!("reading the control socket: {e}")),
        }
    }
    Ok(Some((ForkRequest::decode(bytes), fds)))
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> anyhow::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(anyhow::anyhow!("writing to the control socket: {e}")),
        }
    }
    Ok(())
}

/// In the new child: arm the death signal, take the job's descriptors as stdio, set the job's
/// rlimits, start the epoch ticker, and finish confining.
fn become_child(
    template: &Template,
    request: ForkRequest,
    fds: [OwnedFd; 3],
    engine: &Engine,
) -> anyhow::Result<Protections> {
    #[expect(
        unsafe_code,
        reason = "prctl, getppid, dup2, close_range, signal and setrlimit on this process"
    )]
    // SAFETY: plain system calls on descriptors this process owns and structs that outlive them.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            anyhow::bail!("PR_SET_PDEATHSIG: {}", io::Error::last_os_error());
        }
        // The template may have died before the death signal was armed.
        if libc::getppid().unsigned_abs() != template.pid {
            anyhow::bail!("the template is gone");
        }
        for (fd, target) in fds.iter().zip(0..) {
            if libc::dup2(fd.as_raw_fd(), target) != target {
                anyhow::bail!("dup2: {}", io::Error::last_os_error());
            }
        }
        drop(fds);
        // Nothing but stdin, stdout and stderr stays open.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::prctl(libc::PR_SET_NAME, c"quorum-sandbox".as_ptr(), 0, 0, 0);
        for (resource, value) in [
            (libc::RLIMIT_DATA, request.data_bytes),
            (libc::RLIMIT_CPU, request.cpu_secs),
        ] {
            let r = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if libc::setrlimit(resource, &r) != 0 {
                anyhow::bail!("setrlimit: {}", io::Error::last_os_error());
            }
        }
    }
    crate::engine::start_epoch_ticker(engine)?;
    let protections = restrict::apply_forked(&template.protections);
    if template.selftest {
        #[cfg(feature = "sandbox-selftest")]
        for (probe, result) in restrict::selftest() {
            eprintln!("selftest {probe}: {result}");
        }
    }
    Ok(protections)
}
