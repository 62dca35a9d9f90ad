//! What the child does to itself once the guest is loaded and before it accepts a job: no new
//! privileges, Landlock denying every filesystem access the kernel can restrict, and a seccomp
//! filter refusing sockets, program execution, new processes and threads, file opens, tracing,
//! and signals to any process but itself. The parent has already set rlimits, the death signal,
//! a cleared environment and closed descriptors (see the server's executor).
//!
//! A template (fork server, see `template.rs`) takes the same steps in two halves: everything
//! but the bans on new processes and on signals for itself ([`apply_template`]), since forking
//! is its job, and the rest in each job child right after the fork ([`apply_forked`]).

use quorum_sandbox_protocol::Protections;

/// Every system call the filter refuses, with `EPERM` (file opens with `EACCES`).
#[cfg(target_os = "linux")]
const DENIED: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_personality,
    libc::SYS_mknodat,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_fchmodat,
    libc::SYS_fchownat,
    libc::SYS_truncate,
];

/// New processes and threads, and reaching other processes through pidfds: refused to every
/// job child, allowed to a template.
#[cfg(target_os = "linux")]
const DENIED_PROCESSES: &[i64] = &[
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_tkill,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pidfd_getfd,
];

/// Signals: a job child may signal itself (`abort` raises SIGABRT) and nothing else, so a
/// compromised one cannot kill its template, its siblings or the portal. The first argument of
/// each is the target process.
#[cfg(target_os = "linux")]
const SIGNALS_SELF_ONLY: &[i64] = &[
    libc::SYS_kill,
    libc::SYS_tgkill,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
];

#[cfg(target_os = "linux")]
const DENIED_OPEN: &[i64] = &[
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_creat,
    libc::SYS_open_by_handle_at,
];

/// A child started on its own: all of it at once.
#[cfg(target_os = "linux")]
pub fn apply() -> Protections {
    let template = apply_template();
    apply_forked(&template)
}

/// Everything but the ban on new processes: no new privileges, Landlock, and the filters on
/// opens and on everything in [`DENIED`].
#[cfg(target_os = "linux")]
pub fn apply_template() -> Protections {
    #[expect(unsafe_code, reason = "prctl with constant arguments")]
    // SAFETY: a plain system call with constant arguments and no pointers.
    let no_new_privs = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 };
    let landlock = landlock_everything();
    let seccomp = match seccomp_filter(DENIED_OPEN, libc::EACCES)
        .and_then(|()| seccomp_filter(DENIED, libc::EPERM))
    {
        Ok(()) => true,
        Err(e) => {
            eprintln!("quorum-sandbox: seccomp filter not installed: {e}");
            false
        }
    };
    Protections {
        seccomp,
        landlock,
        no_new_privs,
    }
}

/// The rest, once the process has every thread it will ever have (the epoch ticker): no new
/// processes or threads, by rlimit and by a filter stacked on the template's.
#[cfg(target_os = "linux")]
pub fn apply_forked(template: &Protections) -> Protections {
    #[expect(unsafe_code, reason = "setrlimit with a constant argument")]
    // SAFETY: a plain system call on a struct that lives across it.
    unsafe {
        let nproc = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // No new processes for this user from here on (ignored for root; seccomp covers it).
        libc::setrlimit(libc::RLIMIT_NPROC, &nproc);
    }
    let processes = match processes_filter(std::process::id()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("quorum-sandbox: seccomp filter not installed: {e}");
            false
        }
    };
    Protections {
        seccomp: template.seccomp && processes,
        landlock: template.landlock.clone(),
        no_new_privs: template.no_new_privs,
    }
}

#[cfg(not(target_os = "linux"))]
pub fn apply() -> Protections {
    apply_template()
}

#[cfg(not(target_os = "linux"))]
pub fn apply_template() -> Protections {
    Protections {
        seccomp: false,
        landlock: "unsupported".into(),
        no_new_privs: false,
    }
}

#[cfg(not(target_os = "linux"))]
pub fn apply_forked(template: &Protections) -> Protections {
    template.clone()
}

#[cfg(target_os = "linux")]
fn landlock_everything() -> String {
    use landlock::{
        ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    };
    // Handling every access right and adding no rule denies them all, everywhere.
    let result = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V5))
        .and_then(|r| r.create())
        .and_then(|r| r.no_new_privs(true).restrict_self());
    match result {
        Ok(status) => match status.ruleset {
            RulesetStatus::FullyEnforced => "full",
            RulesetStatus::PartiallyEnforced => "partial",
            RulesetStatus::NotEnforced => "unsupported",
        }
        .to_owned(),
        Err(e) => {
            eprintln!("quorum-sandbox: landlock: {e}");
            "unsupported".to_owned()
        }
    }
}

/// Installs one filter refusing `calls` with `errno`. Filters stack and the kernel applies the
/// most restrictive answer, so opens get `EACCES` and everything else `EPERM`.
#[cfg(target_os = "linux")]
fn seccomp_filter(calls: &[i64], errno: i32) -> anyhow::Result<()> {
    install(calls.iter().map(|&nr| (nr, Vec::new())).collect(), errno)
}

/// One filter (one compilation in the kernel, paid by every forked child) refusing with `EPERM`
/// everything in [`DENIED_PROCESSES`], and [`SIGNALS_SELF_ONLY`] unless their target is `pid`.
#[cfg(target_os = "linux")]
fn processes_filter(pid: u32) -> anyhow::Result<()> {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> = DENIED_PROCESSES
        .iter()
        .map(|&nr| (nr, Vec::new()))
        .collect();
    for &nr in SIGNALS_SELF_ONLY {
        let other =
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, u64::from(pid))?;
        rules.insert(nr, vec![SeccompRule::new(vec![other])?]);
    }
    install(rules, libc::EPERM)
}

/// Installs a filter answering `errno` to each call whose rules match (all of them when a call
/// has none) and allowing the rest. TSYNC puts it on every thread, including the epoch ticker.
#[cfg(target_os = "linux")]
fn install(
    rules: std::collections::BTreeMap<i64, Vec<seccompiler::SeccompRule>>,
    errno: i32,
) -> anyhow::Result<()> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| anyhow::anyhow!("unsupported architecture: {e:?}"))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )?;
    let program: BpfProgram = filter.try_into()?;
    seccompiler::apply_filter_all_threads(&program)?;
    Ok(())
}

/// Test-only probes (feature `sandbox-selftest`): each tries something the restrictions must
/// refuse and reports what the kernel said.
#[cfg(feature = "sandbox-selftest")]
pub fn selftest() -> Vec<(String, String)> {
    use std::io::Write;

    let mut results = Vec::new();
    let mut note = |name: &str, r: std::io::Result<()>| {
        let what = match r {
            Ok(()) => "allowed".to_owned(),
            Err(e) => format!(
                "refused: {}",
                e.raw_os_error()
                    .map_or_else(|| e.to_string(), |n| n.to_string())
            ),
        };
        results.push((name.to_owned(), what));
    };
    note(
        "open /etc/passwd",
        std::fs::File::open("/etc/passwd").map(|_| ()),
    );
    note(
        "write /tmp",
        std::fs::File::create("/tmp/quorum-sandbox-selftest").and_then(|mut f| f.write_all(b"x")),
    );
    note(
        "socket",
        std::net::TcpStream::connect("127.0.0.1:5432").map(|_| ()),
    );
    note(
        "exec",
        std::process::Command::new("/bin/true").status().map(|_| ()),
    );
    note(
        "thread",
        std::thread::Builder::new().spawn(|| ()).map(|_| ()),
    );
    #[expect(
        unsafe_code,
        reason = "signal 0 only asks whether the parent may be signalled"
    )]
    // SAFETY: plain system calls; signal 0 delivers nothing.
    let signalled = unsafe { libc::kill(libc::getppid(), 0) };
    note(
        "signal the parent",
        if signalled == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        },
    );
    results
}
