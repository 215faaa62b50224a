//! The seccomp sandbox of `vsmmud`.
//!
//! [`crate::run`] applies the filter once setup is over (the socket is
//! bound or inherited, the signalfd and the host backend are open) and
//! before the first client is served. From then on the process only serves:
//! it never opens a path, creates a socket, executes a program or starts a
//! thread, and a client (or a guest behind it) that takes control of it
//! finds the kernel closed to everything else.
//!
//! The rules follow cloud-hypervisor's seccomp filters: one
//! rule table per thread role ([`Thread`]; vsmmud has one thread, the
//! serving thread), built with `seccompiler`, with argument conditions where
//! they narrow what a call can do.
//!
//! `--seccomp` picks what a forbidden syscall does ([`SeccompMode`]):
//! `kill` (default) kills the process (`SECCOMP_RET_KILL_PROCESS`, seen as
//! SIGSYS); `trap` raises SIGSYS, whose handler prints
//! `vsmmud: seccomp: forbidden syscall N (name)` on stderr and exits with
//! status 31; `log` lets the call through and the kernel logs it
//! (`SECCOMP_RET_LOG`, for finding a missing rule); `off` applies nothing.
//!
//! # Allowed syscalls and why (the serving thread)
//!
//! Any syscall not in this table is refused. Argument conditions compare the
//! low 32 bits of the argument (`path = NULL`: all 64). [`apply_for`] leaves
//! out the rows of the other backend ("sim backend only", "iommufd backend
//! only"). A test checks this table, and the README's,
//! against the rules: the syscalls and their argument conditions.
//!
//! | syscall | arguments allowed | why |
//! |---|---|---|
//! | `epoll_wait`, `epoll_pwait` | any | mio `Poll::poll`, the event loop's only wait (aarch64 has only `epoll_pwait`) |
//! | `epoll_ctl` | any | register and deregister the client connection and the vEVENTQ fd as they come and go; ask for the connection's writable edges while replies wait |
//! | `accept4` | flags = `SOCK_CLOEXEC \| SOCK_NONBLOCK` | accept a client on the listening socket (mio) |
//! | `recvmsg` | any | read vfio-user messages and the fds they carry (SCM_RIGHTS: memfds, eventfds, VFIO cdevs); no argument condition, so the kernel caches the allow and the hot path skips the filter |
//! | `sendmsg` | any | send replies (the server passes `MSG_DONTWAIT \| MSG_NOSIGNAL`); no argument condition, likewise |
//! | `read` | any | the signalfd (SIGTERM/SIGINT), the vEVENTQ fd, the sim's vEVENTQ eventfd |
//! | `pread64` | fd = `the run queue's` | `/proc/loadavg`, opened before the jail: the tasks runnable now, so that the event loop does not poll while the CPUs are overcommitted; no other fd (a VFIO device fd's offsets are its config space and BARs) |
//! | `write` | any | signal the client's irq eventfds and the sim's vEVENTQ eventfd; log lines to stderr (env_logger); the SIGSYS report |
//! | `close` | any | drop received fds, a departed client, unmapped memfds, a freed vEVENTQ |
//! | `fcntl` | cmd = `F_GETFD` or `F_GETFL` | std checks that an fd is open before closing it (debug builds) |
//! | `statx` | flags with `AT_EMPTY_PATH` or path = `NULL` | DMA_MAP: `File::metadata` of the received memfd (type, size); std's one-time statx probe |
//! | `fstat` | any | the same where libc or the kernel has no statx |
//! | `newfstatat` | flags with `AT_EMPTY_PATH` | likewise |
//! | `mmap` | prot without `PROT_EXEC` | DMA_MAP: map the memfd `MAP_SHARED` (vm-memory); anonymous memory for the allocator |
//! | `mprotect` | prot without `PROT_EXEC` | the allocator (glibc heap growth) |
//! | `munmap` | any | DMA_UNMAP and a departed client's mappings; the allocator |
//! | `mremap`, `madvise`, `brk` | any | the allocator (realloc of large buffers, returning memory, the heap) |
//! | `eventfd2` | flags = `EFD_CLOEXEC \| EFD_NONBLOCK`; sim backend only | the sim allocates its vEVENTQ, an eventfd, when the guest sets EVENTQEN |
//! | `ioctl` | request = one of `IOMMU_DESTROY`, `IOMMU_IOAS_ALLOC`, `IOMMU_IOAS_MAP`, `IOMMU_IOAS_UNMAP`, `IOMMU_HWPT_ALLOC`, `IOMMU_GET_HW_INFO`, `IOMMU_HWPT_INVALIDATE`, `IOMMU_VIOMMU_ALLOC`, `IOMMU_VDEVICE_ALLOC`, `IOMMU_VEVENTQ_ALLOC`, `VFIO_DEVICE_BIND_IOMMUFD`, `VFIO_DEVICE_ATTACH_IOMMUFD_PT`, `VFIO_DEVICE_DETACH_IOMMUFD_PT`; iommufd backend only | the iommufd backend: guest RAM into the IOAS at DMA_MAP, device bind/attach, nested HWPTs from vSTEs, vIOMMU/vDEVICE/vEVENTQ allocation, invalidations, teardown |
//! | `capget` | any; iommufd backend only | DMA_MAP: does this process still have CAP_IPC_LOCK (the jail drops it), or does the kernel count pinned guest RAM against RLIMIT_MEMLOCK |
//! | `prlimit64` | pid = `0` and new limit = `NULL`; iommufd backend only | DMA_MAP: RLIMIT_MEMLOCK (read only), checked before the kernel pins guest RAM |
//! | `clock_gettime` | any | log timestamps (the vDSO normally answers without a syscall) |
//! | `getrandom` | any | std `HashMap` seeds, should the first one be built while serving |
//! | `futex` | op = one of `FUTEX_WAIT \| FUTEX_PRIVATE_FLAG`, `FUTEX_WAKE \| FUTEX_PRIVATE_FLAG`, `FUTEX_WAIT_BITSET \| FUTEX_PRIVATE_FLAG` | std and libc locks (stderr, `Once`); they enter the kernel only when contended |
//! | `rt_sigreturn` | any | return from a signal handler |
//! | `rt_sigprocmask` | any | `abort()` (a panic in a `Drop`, an allocation failure) unblocks SIGABRT |
//! | `rt_sigaction` | signal = one of `SIGABRT`, `SIGSEGV`, `SIGBUS` | `abort()` and std's stack-overflow handler reset the action so a crash shows its real signal |
//! | `sigaltstack` | any | std frees the main thread's signal stack at exit |
//! | `getpid`, `gettid` | any | `abort()` names its own thread |
//! | `tgkill` | tgid = `getpid()` and signal = `SIGABRT` | `abort()` raises SIGABRT on itself; no other signal, no other process |
//! | `restart_syscall` | any | the kernel resumes a call interrupted by SIGSTOP/SIGCONT |
//! | `unlinkat` | flags = `0` | remove the listening socket's path at exit (SIGTERM/SIGINT) |
//! | `unlink` (x86_64) | any | the same, by std on x86_64 |
//! | `exit`, `exit_group` | any | exit |
//!
//! Refused, among everything else: `open`/`openat`/`openat2`/`creat` (no
//! path is opened after setup: guest RAM, eventfds and VFIO devices arrive
//! as fds), `socket`, `socketpair`, `connect`, `bind`, `listen`, `execve`,
//! `execveat`, `fork`/`vfork`/`clone`/`clone3` (no thread or child),
//! `ptrace`, `process_vm_readv`/`writev`, `kill`/`tkill` and `tgkill` other
//! than SIGABRT to itself, `memfd_create`, `prctl`, `seccomp`, `mount`,
//! `ioctl` other than the iommufd requests (also `TCGETS`: env_logger probes
//! the terminal once, at startup, before the filter; `FIONBIO`/`FIOCLEX`:
//! accept4 and recvmsg flags make them unneeded), executable mappings, and
//! `eventfd2` with the iommufd backend.

use std::collections::BTreeMap;
use std::ffi::{c_int, c_long, c_uint, c_void};
use std::os::fd::RawFd;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use seccompiler::SeccompCmpOp::{Eq, MaskedEq};
use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vsmmu_protocol::iommufd as uapi;

use crate::args::{HostKind, SeccompMode};

/// Exit status of the process after a trapped syscall (`--seccomp trap`).
pub(crate) const TRAP_EXIT_CODE: c_int = 31;

/// The threads of `vsmmud`, by what they do; each has its rule table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Thread {
    /// The main thread after setup: the event loop, the device model and
    /// the host backend. vsmmud has no other thread.
    Serving,
}

/// Why the sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SandboxError {
    /// Only x86_64 and aarch64 have a rule table.
    #[error(
        "seccomp: no filter for the {0} architecture (x86_64 and aarch64 only); use --seccomp off"
    )]
    Arch(&'static str),
    /// seccompiler refused the rules.
    #[error("seccomp: building the {thread:?} thread filter: {err}")]
    Build {
        /// The thread role.
        thread: Thread,
        /// The error.
        err: BackendError,
    },
    /// The SIGSYS handler of `--seccomp trap`.
    #[error("seccomp: installing the SIGSYS handler: {0}")]
    Sigaction(nix::Error),
    /// The kernel refused the filter.
    #[error("seccomp: loading the filter: {0}")]
    Load(seccompiler::Error),
}

/// Applies the serving-thread filter for `mode` and the `host` backend to
/// every thread of the process (TSYNC). `off` only logs a warning.
pub(crate) fn apply_for(
    mode: SeccompMode,
    host: HostKind,
    run_queue_fd: Option<RawFd>,
) -> Result<(), SandboxError> {
    let host = Some(host);
    let Some(program) = build(Thread::Serving, mode, host, run_queue_fd)? else {
        log::warn!("running without seccomp");
        return Ok(());
    };
    install(mode, &program)?;
    log::info!(
        "seccomp: {} filter applied ({} BPF instructions, rules for {})",
        match mode {
            SeccompMode::Kill => "kill",
            SeccompMode::Trap => "trap",
            SeccompMode::Log => "log",
            SeccompMode::Off => "no",
        },
        program.len(),
        match host {
            Some(HostKind::Sim) => "the sim backend",
            Some(HostKind::Iommufd) => "the iommufd backend",
            None => "both backends",
        }
    );
    Ok(())
}

/// Compiles the filter of `thread` for `mode` with the rules of the `host`
/// backend (`None`: of both); `None` for `off`. Nothing is applied.
pub(crate) fn build(
    thread: Thread,
    mode: SeccompMode,
    host: Option<HostKind>,
    run_queue_fd: Option<RawFd>,
) -> Result<Option<BpfProgram>, SandboxError> {
    let forbidden = match mode {
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Trap => SeccompAction::Trap,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Off => return Ok(None),
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => TargetArch::x86_64,
        "aarch64" => TargetArch::aarch64,
        other => return Err(SandboxError::Arch(other)),
    };
    let build_err = |err| SandboxError::Build { thread, err };
    let table = rule_table(thread, host, std::process::id(), run_queue_fd);
    log::debug!(
        "seccomp: the {thread:?} thread may call {}",
        table
            .iter()
            .map(Allowed::name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rules = table
        .iter()
        .map(|a| Ok((a.nr, a.seccomp_rules()?)))
        .collect::<Result<BTreeMap<i64, Vec<SeccompRule>>, _>>()
        .map_err(build_err)?;
    let filter =
        SeccompFilter::new(rules, forbidden, SeccompAction::Allow, arch).map_err(build_err)?;
    BpfProgram::try_from(filter).map(Some).map_err(build_err)
}

/// Installs `program` (built for `mode`) on every thread, with the SIGSYS
/// handler first in trap mode. Makes only system calls, no allocation: a
/// forked child may call it.
fn install(mode: SeccompMode, program: &BpfProgram) -> Result<(), SandboxError> {
    if mode == SeccompMode::Trap {
        install_sigsys_handler()?;
    }
    seccompiler::apply_filter_all_threads(program).map_err(SandboxError::Load)
}

// ---------------------------------------------------------------------------
// The rule tables
// ---------------------------------------------------------------------------

/// One allowed syscall: unconditionally when `rules` is empty, else when
/// any rule holds (a rule holds when all its conditions do).
struct Allowed {
    nr: i64,
    /// `SYS_<name>`.
    sys: &'static str,
    rules: Vec<Vec<Cond>>,
}

impl Allowed {
    fn name(&self) -> &'static str {
        self.sys.strip_prefix("SYS_").unwrap_or(self.sys)
    }

    /// The rules as seccompiler builds them.
    fn seccomp_rules(&self) -> Result<Vec<SeccompRule>, BackendError> {
        self.rules
            .iter()
            .map(|conds| {
                let conds = conds
                    .iter()
                    .map(Cond::condition)
                    .collect::<Result<_, _>>()?;
                SeccompRule::new(conds)
            })
            .collect()
    }
}

/// One argument condition, as the filter checks it and as the docs show it
/// (the tables in this module's documentation and in the README are
/// checked against `Cond::describe`).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "`name` and `text` are for the docs' test")
)]
struct Cond {
    /// Which argument.
    index: u8,
    /// The argument's name in the docs.
    name: &'static str,
    /// All 64 bits of the argument, not only the low 32.
    qword: bool,
    test: Test,
    /// The value as the source spells it.
    text: &'static str,
}

/// How a [`Cond`] compares its argument.
#[derive(Debug, Clone, Copy)]
enum Test {
    /// Equals the value.
    Eq(u64),
    /// Has none of the value's bits.
    Clear(u64),
    /// Has every bit of the value.
    Set(u64),
}

impl Cond {
    fn condition(&self) -> Result<SeccompCondition, BackendError> {
        let len = if self.qword {
            SeccompCmpArgLen::Qword
        } else {
            SeccompCmpArgLen::Dword
        };
        let (op, value) = match self.test {
            Test::Eq(v) => (Eq, v),
            Test::Clear(mask) => (MaskedEq(mask), 0),
            Test::Set(mask) => (MaskedEq(mask), mask),
        };
        SeccompCondition::new(self.index, len, op, value)
    }

    /// `name = value`, `name without value`, `name with value`, the value
    /// as code (without its `libc::` or `uapi::` path).
    #[cfg(test)]
    fn describe(&self) -> String {
        let how = match self.test {
            Test::Eq(_) => "=",
            Test::Clear(_) => "without",
            Test::Set(_) => "with",
        };
        format!("{} {how} {}", self.name, self.code())
    }

    /// The value as code, `|` escaped for a markdown table.
    #[cfg(test)]
    fn code(&self) -> String {
        let text = self.text.replace("libc::", "").replace("uapi::", "");
        format!("`{}`", text.replace('|', "\\|"))
    }
}

/// `allow!(SYS_x)`: always; `allow!(SYS_x, rule, ...)`: when a rule holds.
macro_rules! allow {
    ($sys:ident $(, $rule:expr)* $(,)?) => {
        Allowed {
            nr: i64::from(libc::$sys),
            sys: stringify!($sys),
            rules: vec![$($rule),*],
        }
    };
}

/// A rule that holds when all its conditions do (cloud-hypervisor's `and!`).
macro_rules! and {
    ($($cond:expr),+ $(,)?) => {
        vec![$($cond),+]
    };
}

/// `eq!("name" index, value)`: argument `index` (its low 32 bits) equals
/// `value`; the docs show `value` as written here, or as `text` with
/// `eq!("name" index, value => "text")`.
macro_rules! eq {
    ($name:literal $index:literal, $value:expr) => {
        eq!($name $index, $value => stringify!($value))
    };
    ($name:literal $index:literal, $value:expr => $text:expr) => {
        Cond {
            index: $index,
            name: $name,
            qword: false,
            test: Test::Eq(i64::from($value) as u64 & 0xffff_ffff),
            text: $text,
        }
    };
}

/// `clear!("name" index, mask)`: argument `index` has none of the bits of
/// `mask`.
macro_rules! clear {
    ($name:literal $index:literal, $mask:expr) => {
        Cond {
            index: $index,
            name: $name,
            qword: false,
            test: Test::Clear($mask as u64),
            text: stringify!($mask),
        }
    };
}

/// `set!("name" index, mask)`: argument `index` has every bit of `mask`.
macro_rules! set {
    ($name:literal $index:literal, $mask:expr) => {
        Cond {
            index: $index,
            name: $name,
            qword: false,
            test: Test::Set($mask as u64),
            text: stringify!($mask),
        }
    };
}

/// `[(request, "NAME"), ...]` from `uapi::NAME`s.
macro_rules! requests {
    ($($req:ident),* $(,)?) => {
        [$((uapi::$req, stringify!($req))),*]
    };
}

/// The ioctl requests of the iommufd backend (`host/iommufd/`).
const IOMMUFD_IOCTLS: [(u64, &str); 13] = requests![
    IOMMU_DESTROY,
    IOMMU_IOAS_ALLOC,
    IOMMU_IOAS_MAP,
    IOMMU_IOAS_UNMAP,
    IOMMU_HWPT_ALLOC,
    IOMMU_GET_HW_INFO,
    IOMMU_HWPT_INVALIDATE,
    IOMMU_VIOMMU_ALLOC,
    IOMMU_VDEVICE_ALLOC,
    IOMMU_VEVENTQ_ALLOC,
    VFIO_DEVICE_BIND_IOMMUFD,
    VFIO_DEVICE_ATTACH_IOMMUFD_PT,
    VFIO_DEVICE_DETACH_IOMMUFD_PT,
];

fn rule_table(
    thread: Thread,
    host: Option<HostKind>,
    pid: u32,
    run_queue_fd: Option<RawFd>,
) -> Vec<Allowed> {
    match thread {
        Thread::Serving => serving_thread_rules(host, pid, run_queue_fd),
    }
}

/// The serving thread: see the table in the module documentation, which a
/// test keeps in step with this list (as it does the README's).
fn serving_thread_rules(
    host: Option<HostKind>,
    pid: u32,
    run_queue_fd: Option<RawFd>,
) -> Vec<Allowed> {
    let mut table = vec![
        // --- the event loop (event_loop.rs, mio) ---
        // mio's Poll::poll; aarch64 libc implements epoll_wait with it.
        allow!(SYS_epoll_pwait),
        // (De)register the client connection and the vEVENTQ fd.
        allow!(SYS_epoll_ctl),
        // A new client on the listener, as mio accepts: non-blocking, CLOEXEC.
        allow!(
            SYS_accept4,
            and![eq!("flags" 3, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)]
        ),
        // --- the vfio-user connection (conn.rs) ---
        // Messages and their SCM_RIGHTS fds; replies. No argument
        // conditions on purpose: the kernel caches argument-free ALLOWs
        // (seccomp's action bitmap) and skips the filter for them, which
        // saves about 1 us per MMIO round trip; the flags would only
        // restrict what we do with our own sockets.
        allow!(SYS_recvmsg),
        allow!(SYS_sendmsg),
        // The signalfd, the vEVENTQ fd, the sim's vEVENTQ eventfd.
        allow!(SYS_read),
        // Irq eventfds (irq.rs), the sim's eventfd, log lines on stderr.
        allow!(SYS_write),
        // Received fds, a departed client, unmapped memfds, a freed vEVENTQ.
        allow!(SYS_close),
        // std's "is this fd open" check before close (debug builds).
        allow!(
            SYS_fcntl,
            and![eq!("cmd" 1, libc::F_GETFD)],
            and![eq!("cmd" 1, libc::F_GETFL)]
        ),
        // --- guest RAM (memory.rs, vm-memory) ---
        // File::metadata of a DMA_MAP'd memfd; the NULL-path form is std's
        // one-time probe for statx support.
        allow!(
            SYS_statx,
            and![set!("flags" 2, libc::AT_EMPTY_PATH)],
            and![Cond {
                index: 1,
                name: "path",
                qword: true,
                test: Test::Eq(0),
                text: "NULL",
            }]
        ),
        // The same without statx.
        allow!(SYS_fstat),
        allow!(SYS_newfstatat, and![set!("flags" 3, libc::AT_EMPTY_PATH)]),
        // MAP_SHARED of the memfd, anonymous memory; never executable.
        allow!(SYS_mmap, and![clear!("prot" 2, libc::PROT_EXEC)]),
        // DMA_UNMAP, client gone, the allocator.
        allow!(SYS_munmap),
        // --- the allocator ---
        allow!(SYS_brk),
        allow!(SYS_mremap),
        allow!(SYS_madvise),
        // glibc heap growth; never executable.
        allow!(SYS_mprotect, and![clear!("prot" 2, libc::PROT_EXEC)]),
        // --- std and libc ---
        // Log timestamps when the vDSO cannot answer.
        allow!(SYS_clock_gettime),
        // HashMap seeds, should the first map be built while serving.
        allow!(SYS_getrandom),
        // Locks, only when contended (one thread: never in practice).
        allow!(
            SYS_futex,
            and![eq!("op" 1, libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG)],
            and![eq!("op" 1, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG)],
            and![eq!("op" 1, libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG)]
        ),
        // --- signals, crashes and exit ---
        // Return from a signal handler.
        allow!(SYS_rt_sigreturn),
        // abort() unblocks SIGABRT.
        allow!(SYS_rt_sigprocmask),
        // abort() and std's stack-overflow handler reset these to default.
        allow!(
            SYS_rt_sigaction,
            and![eq!("signal" 0, libc::SIGABRT)],
            and![eq!("signal" 0, libc::SIGSEGV)],
            and![eq!("signal" 0, libc::SIGBUS)]
        ),
        // std frees the main thread's signal stack at exit.
        allow!(SYS_sigaltstack),
        // abort() names its thread, then signals it (SIGABRT, this process).
        allow!(SYS_getpid),
        allow!(SYS_gettid),
        allow!(
            SYS_tgkill,
            and![
                eq!("tgid" 0, pid as i32 => "getpid()"),
                eq!("signal" 2, libc::SIGABRT)
            ]
        ),
        // The kernel resumes a call interrupted by SIGSTOP/SIGCONT.
        allow!(SYS_restart_syscall),
        // The listening socket's path goes at exit (event_loop.rs Drop);
        // never a directory.
        allow!(SYS_unlinkat, and![eq!("flags" 2, 0)]),
        allow!(SYS_exit),
        allow!(SYS_exit_group),
    ];
    // /proc/loadavg, opened before the jail (the run queue probe of the
    // adaptive polling), and no other fd: a pread of a VFIO device fd
    // reads its config space and BARs.
    if let Some(fd) = run_queue_fd {
        table.push(allow!(
            SYS_pread64,
            and![eq!("fd" 0, fd => "the run queue's")]
        ));
    }
    #[cfg(target_arch = "x86_64")]
    table.extend([
        // mio's Poll::poll on x86_64.
        allow!(SYS_epoll_wait),
        // std's remove_file of the socket path on x86_64.
        allow!(SYS_unlink),
    ]);
    if host != Some(HostKind::Iommufd) {
        table.push(
            // The sim's vEVENTQ, allocated when the guest sets EVENTQEN.
            allow!(
                SYS_eventfd2,
                and![eq!("flags" 1, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)]
            ),
        );
    }
    if host != Some(HostKind::Sim) {
        // DMA_MAP checks RLIMIT_MEMLOCK and CAP_IPC_LOCK before the kernel
        // pins guest RAM: read only, this process only.
        table.push(allow!(SYS_capget));
        table.push(allow!(
            SYS_prlimit64,
            and![eq!("pid" 0, 0), eq!("new limit" 2, 0 => "NULL")]
        ));
        // Everything the iommufd backend asks of the kernel; no other
        // request on any fd.
        let rules = IOMMUFD_IOCTLS
            .iter()
            .map(|&(req, text)| {
                and![Cond {
                    index: 1,
                    name: "request",
                    qword: false,
                    test: Test::Eq(req),
                    text,
                }]
            })
            .collect();
        table.push(Allowed {
            rules,
            ..allow!(SYS_ioctl)
        });
    }
    table
}

// ---------------------------------------------------------------------------
// --seccomp trap: the SIGSYS handler
// ---------------------------------------------------------------------------

/// The head of the kernel's `siginfo_t` for SIGSYS (its `_sigsys` member
/// in the kernel's UAPI headers), the same on x86_64 and aarch64:
/// three ints, the union 8-aligned at offset 16, then `_call_addr`,
/// `_syscall`, `_arch`. libc offers no accessor for these fields.
#[repr(C)]
struct SigsysInfo {
    _si_signo: c_int,
    _si_errno: c_int,
    si_code: c_int,
    _pad: c_int,
    _call_addr: *mut c_void,
    syscall: c_int,
    _arch: c_uint,
}

const _: () = assert!(std::mem::size_of::<SigsysInfo>() <= std::mem::size_of::<libc::siginfo_t>());
const _: () = assert!(std::mem::offset_of!(SigsysInfo, syscall) == 24);

/// `si_code` of a SIGSYS raised by seccomp.
const SYS_SECCOMP: c_int = 1;

/// `(number, "SYS_name")` pairs.
macro_rules! names {
    ($($sys:ident),* $(,)?) => {
        &[$((libc::$sys as c_long, stringify!($sys))),*]
    };
}

/// Names for the SIGSYS report: the syscalls a compromised server would
/// reach for, and the allowed ones (refused for their arguments).
#[rustfmt::skip]
static NAMES: &[(c_long, &str)] = names![
    SYS_read, SYS_write, SYS_close, SYS_fstat, SYS_newfstatat, SYS_statx, SYS_mmap, SYS_mprotect,
    SYS_munmap, SYS_mremap, SYS_madvise, SYS_brk, SYS_rt_sigaction, SYS_rt_sigprocmask,
    SYS_rt_sigreturn, SYS_ioctl, SYS_pread64, SYS_pwrite64, SYS_readv, SYS_writev, SYS_sched_yield,
    SYS_msync, SYS_mincore, SYS_dup, SYS_dup3, SYS_nanosleep, SYS_clock_nanosleep, SYS_getpid,
    SYS_gettid, SYS_getppid, SYS_socket, SYS_socketpair, SYS_connect, SYS_accept, SYS_accept4,
    SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_sendmmsg, SYS_recvmmsg, SYS_shutdown,
    SYS_bind, SYS_listen, SYS_getsockname, SYS_getpeername, SYS_setsockopt, SYS_getsockopt,
    SYS_clone, SYS_clone3, SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group, SYS_wait4,
    SYS_waitid, SYS_kill, SYS_tkill, SYS_tgkill, SYS_uname, SYS_fcntl, SYS_flock, SYS_fsync,
    SYS_ftruncate, SYS_getdents64, SYS_getcwd, SYS_chdir, SYS_fchdir, SYS_renameat, SYS_renameat2,
    SYS_mkdirat, SYS_linkat, SYS_symlinkat, SYS_unlinkat, SYS_readlinkat, SYS_fchmod, SYS_fchmodat,
    SYS_fchown, SYS_fchownat, SYS_openat, SYS_openat2, SYS_open_by_handle_at, SYS_name_to_handle_at,
    SYS_umask, SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_pidfd_open,
    SYS_pidfd_getfd, SYS_prctl, SYS_seccomp, SYS_bpf, SYS_perf_event_open, SYS_mount, SYS_umount2,
    SYS_pivot_root, SYS_chroot, SYS_unshare, SYS_setns, SYS_setuid, SYS_setgid, SYS_setresuid,
    SYS_setresgid, SYS_capget, SYS_capset, SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_kexec_load,
    SYS_reboot, SYS_keyctl, SYS_add_key, SYS_memfd_create, SYS_userfaultfd, SYS_io_uring_setup,
    SYS_io_uring_enter, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_eventfd2,
    SYS_signalfd4, SYS_timerfd_create, SYS_inotify_init1, SYS_pipe2, SYS_futex, SYS_set_robust_list,
    SYS_sigaltstack, SYS_clock_gettime, SYS_getrandom, SYS_restart_syscall, SYS_prlimit64,
    SYS_sched_getaffinity, SYS_sched_setaffinity, SYS_mlock, SYS_mlockall, SYS_rseq,
];

#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
static ARCH_NAMES: &[(c_long, &str)] = names![
    SYS_open, SYS_creat, SYS_stat, SYS_lstat, SYS_access, SYS_pipe, SYS_dup2, SYS_fork, SYS_vfork,
    SYS_unlink, SYS_rename, SYS_mkdir, SYS_rmdir, SYS_link, SYS_symlink, SYS_readlink, SYS_chmod,
    SYS_chown, SYS_poll, SYS_select, SYS_epoll_wait, SYS_epoll_create, SYS_eventfd, SYS_signalfd,
    SYS_inotify_init, SYS_getdents, SYS_arch_prctl, SYS_iopl, SYS_ioperm, SYS_modify_ldt,
];

#[cfg(not(target_arch = "x86_64"))]
static ARCH_NAMES: &[(c_long, &str)] = &[];

/// The name of syscall `nr`, or `"?"`. Async-signal-safe.
fn syscall_name(nr: c_long) -> &'static str {
    NAMES
        .iter()
        .chain(ARCH_NAMES)
        .find(|(n, _)| *n == nr)
        .map_or("?", |(_, s)| s.strip_prefix("SYS_").unwrap_or(s))
}

/// A message assembled on the stack (the handler may not allocate).
struct StackMsg {
    buf: [u8; 128],
    len: usize,
}

impl StackMsg {
    const fn new() -> Self {
        StackMsg {
            buf: [0; 128],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn push_num(&mut self, n: i64) {
        if n < 0 {
            self.push(b"-");
        }
        let mut v = n.unsigned_abs();
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The report of a trapped syscall, `vsmmud: seccomp: forbidden syscall N (name)\n`.
fn trap_message(code: c_int, nr: c_int) -> StackMsg {
    let mut m = StackMsg::new();
    if code == SYS_SECCOMP {
        m.push(b"vsmmud: seccomp: forbidden syscall ");
        m.push_num(i64::from(nr));
        m.push(b" (");
        m.push(syscall_name(c_long::from(nr)).as_bytes());
        m.push(b")\n");
    } else {
        m.push(b"vsmmud: SIGSYS not raised by seccomp (si_code ");
        m.push_num(i64::from(code));
        m.push(b")\n");
    }
    m
}

/// SIGSYS handler of `--seccomp trap`: names the syscall on stderr and exits
/// with [`TRAP_EXIT_CODE`]. Async-signal-safe: no allocation, no lock, only
/// `write(2)` and `_exit(2)`, both allowed by every filter.
extern "C" fn sigsys_handler(_signo: c_int, info: *mut libc::siginfo_t, _ucontext: *mut c_void) {
    let (code, nr) = if info.is_null() {
        (0, -1)
    } else {
        // SAFETY: the kernel passes an SA_SIGINFO handler a valid, aligned
        // `siginfo_t`, of which `SigsysInfo` describes a prefix (size checked
        // at compile time); for SIGSYS its fields are those of `_sigsys`.
        let si = unsafe { &*info.cast::<SigsysInfo>() };
        (si.si_code, si.syscall)
    };
    let msg = trap_message(code, nr);
    let bytes = msg.bytes();
    // SAFETY: write(2) from a live stack buffer of `bytes.len()` bytes; fd 2
    // may be closed, then the call fails harmlessly.
    let _ = unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
    // SAFETY: _exit(2) ends the process without running any user code.
    unsafe { libc::_exit(TRAP_EXIT_CODE) }
}

/// Installs [`sigsys_handler`] and makes sure SIGSYS is not blocked (a
/// blocked SIGSYS from seccomp would kill the process without the report).
fn install_sigsys_handler() -> Result<(), SandboxError> {
    let action = SigAction::new(
        SigHandler::SigAction(sigsys_handler),
        SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    // SAFETY: the handler is async-signal-safe (write and _exit only) and
    // replaces no handler this program relies on.
    unsafe { sigaction(Signal::SIGSYS, &action) }.map_err(SandboxError::Sigaction)?;
    let mut sys = SigSet::empty();
    sys.add(Signal::SIGSYS);
    sys.thread_unblock().map_err(SandboxError::Sigaction)
}

#[cfg(test)]
mod tests;
