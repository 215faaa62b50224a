use super::*;

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

const MODES: [SeccompMode; 3] = [SeccompMode::Kill, SeccompMode::Trap, SeccompMode::Log];
const RULE_SETS: [Option<HostKind>; 3] = [Some(HostKind::Sim), Some(HostKind::Iommufd), None];
/// The run queue probe's descriptor in the filters built here (the one
/// fd `pread64` is allowed on); the filter test uses a live one.
const PROBE_FD: RawFd = 987;

fn program(mode: SeccompMode, host: HostKind) -> BpfProgram {
    build(Thread::Serving, mode, Some(host), Some(PROBE_FD))
        .expect("build")
        .expect("a filter")
}

/// Runs `body` in a forked child that first disables core dumps (a
/// SIGSYS kill would dump one) and returns how the child ended. `body`
/// returns the exit status and may only make system calls: the parent
/// is the multi-threaded test harness, so no allocation and no lock.
fn in_child(body: impl FnOnce() -> c_int) -> WaitStatus {
    // SAFETY: the child runs only `body`, which by contract makes only
    // async-signal-safe calls, then leaves with _exit.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: setrlimit reads a live struct.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
            let code = body();
            // SAFETY: ends the child without unwinding into the harness.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => waitpid(child, None).expect("waitpid"),
    }
}

/// In a child: installs `prog` for `mode`, then `call`; exits 0 when the
/// call returned, 100 when the filter could not be installed.
fn after_filter(mode: SeccompMode, prog: &BpfProgram, call: impl FnOnce()) -> WaitStatus {
    in_child(|| {
        if install(mode, prog).is_err() {
            return 100;
        }
        call();
        0
    })
}

fn exited(st: WaitStatus, code: c_int) -> bool {
    matches!(st, WaitStatus::Exited(_, c) if c == code)
}

#[test]
fn filters_build_for_every_mode_and_backend() {
    for host in RULE_SETS {
        assert!(
            build(Thread::Serving, SeccompMode::Off, host, Some(PROBE_FD))
                .unwrap()
                .is_none()
        );
        let rets = [
            libc::SECCOMP_RET_KILL_PROCESS,
            libc::SECCOMP_RET_TRAP,
            libc::SECCOMP_RET_LOG,
        ];
        for (mode, ret) in MODES.into_iter().zip(rets) {
            let prog = build(Thread::Serving, mode, host, Some(PROBE_FD))
                .unwrap()
                .unwrap();
            assert!(
                prog.len() > 40 && prog.len() < 4096,
                "{mode:?} {host:?}: {}",
                prog.len()
            );
            // BPF_RET | BPF_K with the mode's action ends the program.
            let last = prog.last().unwrap();
            assert_eq!((last.code, last.k), (0x06, ret), "{mode:?} {host:?}");
            assert!(prog
                .iter()
                .any(|i| i.code == 0x06 && i.k == libc::SECCOMP_RET_ALLOW));
        }
    }
    // The iommufd backend adds the ioctl rules (BPF_JMP | BPF_JEQ | BPF_K
    // on the syscall number); the sim has none.
    let ioctl = |i: &seccompiler::sock_filter| i.code == 0x15 && i.k == libc::SYS_ioctl as u32;
    assert!(program(SeccompMode::Kill, HostKind::Iommufd)
        .iter()
        .any(ioctl));
    assert!(!program(SeccompMode::Kill, HostKind::Sim).iter().any(ioctl));
    let both = build(Thread::Serving, SeccompMode::Kill, None, Some(PROBE_FD))
        .unwrap()
        .unwrap();
    assert!(both.iter().any(ioctl));
}

/// The "arguments allowed" column of `a`'s row in the doc tables:
/// `any`, or its rules (` or ` between rules, ` and ` between the
/// conditions of one), or `name = A or B` / `name = one of A, B, C`
/// when every rule is one equality on the same argument.
fn arguments(a: &Allowed) -> String {
    let eqs: Option<Vec<&Cond>> = a
        .rules
        .iter()
        .map(|rule| match rule.as_slice() {
            [c @ Cond {
                test: Test::Eq(_), ..
            }] => Some(c),
            _ => None,
        })
        .collect();
    match eqs {
        _ if a.rules.is_empty() => "any".to_string(),
        Some(eqs) if eqs.len() > 1 && eqs.iter().all(|c| c.name == eqs[0].name) => {
            let codes: Vec<String> = eqs.iter().map(|c| c.code()).collect();
            if codes.len() == 2 {
                format!("{} = {} or {}", eqs[0].name, codes[0], codes[1])
            } else {
                format!("{} = one of {}", eqs[0].name, codes.join(", "))
            }
        }
        _ => a
            .rules
            .iter()
            .map(|rule| {
                let conds: Vec<String> = rule.iter().map(Cond::describe).collect();
                conds.join(" and ")
            })
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// Every allowed syscall's "arguments allowed" column, with
/// `; sim backend only` or `; iommufd backend only` for the rules
/// [`apply_for`] keeps for one backend.
fn expected_doc_rows() -> BTreeMap<&'static str, String> {
    let names = |host| -> BTreeSet<&str> {
        rule_table(Thread::Serving, Some(host), 1, Some(PROBE_FD))
            .iter()
            .map(Allowed::name)
            .collect()
    };
    let (sim, iommufd) = (names(HostKind::Sim), names(HostKind::Iommufd));
    rule_table(Thread::Serving, None, 1, Some(PROBE_FD))
        .iter()
        .map(|a| {
            let only = match (sim.contains(a.name()), iommufd.contains(a.name())) {
                (true, false) => "; sim backend only",
                (false, true) => "; iommufd backend only",
                _ => "",
            };
            (a.name(), format!("{}{only}", arguments(a)))
        })
        .collect()
}

/// The rows of the first markdown table after the line `heading` in
/// `text`, header and separator left out, each split into its cells (at
/// `|`, not at `\|`).
fn table_rows(text: &str, heading: &str) -> Vec<Vec<String>> {
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != heading)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(!rows.is_empty(), "no table under {heading:?}");
    rows.iter()
        .map(|row| {
            let mut cells = vec![String::new()];
            let mut escaped = false;
            for ch in row.chars() {
                match ch {
                    '|' if !escaped => cells.push(String::new()),
                    _ => cells.last_mut().unwrap().push(ch),
                }
                escaped = ch == '\\';
            }
            let inner = &cells[1..cells.len() - 1];
            inner.iter().map(|c| c.trim().to_string()).collect()
        })
        .collect()
}

/// Checks that the doc table `rows` lists every allowed syscall once,
/// with its arguments as [`expected_doc_rows`] has them, and nothing else.
fn check_doc_table(what: &str, rows: &[Vec<String>]) {
    let expected = expected_doc_rows();
    let mut listed = BTreeSet::new();
    for row in rows {
        assert_eq!(row.len(), 3, "{what}: {row:?}");
        for name in row[0].split('`').skip(1).step_by(2) {
            assert!(listed.insert(name), "{what}: {name} is listed twice");
            match expected.get(name) {
                Some(args) => assert_eq!(&row[1], args, "{what}: the arguments of {name}"),
                None => assert!(
                    !cfg!(target_arch = "x86_64") && ["epoll_wait", "unlink"].contains(&name),
                    "{what} lists {name}, which is not allowed"
                ),
            }
        }
    }
    for name in expected.keys() {
        assert!(listed.contains(name), "{what} does not list {name}");
    }
}

#[test]
fn rule_table_has_no_duplicates() {
    for host in RULE_SETS {
        let mut seen = BTreeSet::new();
        for a in rule_table(Thread::Serving, host, 1, Some(PROBE_FD)) {
            assert!(seen.insert(a.nr), "{} twice", a.name());
            assert_eq!(syscall_name(a.nr as c_long), a.name());
        }
    }
}

#[test]
fn module_doc_table_is_the_rule_table() {
    let module_doc: String = include_str!("../sandbox.rs")
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let rows = table_rows(
        &module_doc,
        "# Allowed syscalls and why (the serving thread)",
    );
    check_doc_table("the module doc table", &rows);
}

#[test]
fn readme_table_is_the_rule_table() {
    let rows = table_rows(include_str!("../../../README.md"), "### seccomp");
    check_doc_table("the README table", &rows);
}

#[test]
fn trap_message_names_the_syscall() {
    let m = trap_message(SYS_SECCOMP, libc::SYS_openat as c_int);
    let want = format!(
        "vsmmud: seccomp: forbidden syscall {} (openat)\n",
        libc::SYS_openat
    );
    assert_eq!(m.bytes(), want.as_bytes());
    assert_eq!(
        trap_message(SYS_SECCOMP, 9999).bytes(),
        b"vsmmud: seccomp: forbidden syscall 9999 (?)\n"
    );
    assert_eq!(
        trap_message(0, 1).bytes(),
        b"vsmmud: SIGSYS not raised by seccomp (si_code 0)\n"
    );
    let mut long = StackMsg::new();
    long.push(&[b'x'; 300]);
    long.push_num(i64::MIN);
    assert_eq!(long.bytes().len(), 128);
}

type Case<'a> = (&'static str, &'a BpfProgram, fn());

#[test]
fn forbidden_syscalls_kill_the_process() {
    let sim = program(SeccompMode::Kill, HostKind::Sim);
    let iommufd = program(SeccompMode::Kill, HostKind::Iommufd);
    // Each call would be harmless if it ran: the point is that it does not.
    let cases: [Case<'_>; 24] = [
        ("openat /", &sim, || {
            // SAFETY: a raw syscall on a constant path.
            unsafe {
                libc::openat(
                    libc::AT_FDCWD,
                    c"/".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            };
        }),
        ("socket", &iommufd, || {
            // SAFETY: a raw syscall on constants.
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        }),
        ("connect", &sim, || {
            // SAFETY: a raw syscall; a NULL address fails with EFAULT.
            unsafe { libc::connect(0, std::ptr::null(), 0) };
        }),
        ("execve", &sim, || {
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            // SAFETY: a NULL-terminated argv of constant strings.
            unsafe { libc::execve(argv[0], argv.as_ptr(), std::ptr::null()) };
        }),
        ("clone", &sim, || {
            // SAFETY: a fork-like clone; refused before it runs.
            unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
        }),
        ("kill", &sim, || {
            // SAFETY: signal 0 only probes.
            unsafe { libc::kill(1, 0) };
        }),
        ("tgkill SIGTERM", &sim, || {
            let pid = std::process::id() as c_int;
            // SAFETY: tid 0 is invalid: EINVAL, no signal.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, 0, libc::SIGTERM) };
        }),
        ("tgkill SIGABRT to pid 1", &sim, || {
            // SAFETY: tid 0 is invalid: EINVAL, no signal.
            unsafe { libc::syscall(libc::SYS_tgkill, 1, 0, libc::SIGABRT) };
        }),
        ("ptrace", &sim, || {
            // SAFETY: PTRACE_TRACEME takes no pointer.
            unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
        }),
        ("pread64 of a fd not the run queue's", &sim, || {
            let mut b = [0u8; 8];
            // SAFETY: reads at most 8 bytes into `b`; refused before that.
            unsafe { libc::pread(0, b.as_mut_ptr().cast(), 8, 0) };
        }),
        ("memfd_create", &sim, || {
            // SAFETY: a constant name.
            unsafe { libc::memfd_create(c"x".as_ptr(), 0) };
        }),
        ("ioctl TCGETS", &iommufd, || {
            let mut t = [0u8; 64];
            // SAFETY: TCGETS writes a termios (60 bytes) into `t`.
            unsafe { libc::ioctl(2, libc::TCGETS, t.as_mut_ptr()) };
        }),
        ("ioctl FIONBIO", &iommufd, || {
            let on: c_int = 0;
            // SAFETY: FIONBIO reads an int.
            unsafe { libc::ioctl(0, libc::FIONBIO, &on) };
        }),
        ("iommufd ioctl under sim", &sim, || {
            let mut arg = [0u32; 2];
            // SAFETY: IOMMU_DESTROY reads 8 bytes; fd 0 is no iommufd.
            unsafe { libc::ioctl(0, uapi::IOMMU_DESTROY as libc::Ioctl, arg.as_mut_ptr()) };
        }),
        ("eventfd2 under iommufd", &iommufd, || {
            // SAFETY: no pointer.
            unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        }),
        ("eventfd2 blocking", &sim, || {
            // SAFETY: no pointer.
            unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        }),
        ("mmap PROT_EXEC", &sim, || {
            let prot = libc::PROT_READ | libc::PROT_EXEC;
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            // SAFETY: a fresh anonymous mapping, never used.
            unsafe { libc::mmap(std::ptr::null_mut(), 4096, prot, flags, -1, 0) };
        }),
        ("mprotect PROT_EXEC", &sim, || {
            // SAFETY: address 0 is not mapped: ENOMEM if it ran.
            unsafe {
                libc::mprotect(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                )
            };
        }),
        ("accept4 blocking", &sim, || {
            let null = std::ptr::null_mut();
            // SAFETY: fd 0 is no listener: ENOTSOCK if it ran.
            unsafe { libc::accept4(0, null, null.cast(), libc::SOCK_CLOEXEC) };
        }),
        ("statx of a path", &sim, || {
            // SAFETY: a constant path; a NULL buffer: EFAULT if it ran.
            unsafe {
                libc::statx(
                    libc::AT_FDCWD,
                    c"/etc/passwd".as_ptr(),
                    0,
                    0,
                    std::ptr::null_mut(),
                )
            };
        }),
        ("fcntl F_DUPFD_CLOEXEC", &sim, || {
            // SAFETY: no pointer.
            unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 100) };
        }),
        ("unlinkat AT_REMOVEDIR", &sim, || {
            // SAFETY: a constant path that does not exist.
            unsafe { libc::unlinkat(libc::AT_FDCWD, c"/nonexistent".as_ptr(), libc::AT_REMOVEDIR) };
        }),
        ("prctl", &sim, || {
            // SAFETY: PR_GET_DUMPABLE takes no pointer.
            unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
        }),
        ("rt_sigaction SIGSYS", &sim, || {
            // SAFETY: ignoring SIGSYS in a child about to exit.
            unsafe { libc::signal(libc::SIGSYS, libc::SIG_IGN) };
        }),
    ];
    for (what, prog, call) in cases {
        let st = after_filter(SeccompMode::Kill, prog, call);
        assert!(
            matches!(
                st,
                WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
            ),
            "{what}: {st:?}"
        );
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(rc, 0, "pipe2");
    // SAFETY: a fresh descriptor from pipe2, owned once.
    let rd = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let wr = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    (rd, wr)
}

#[test]
fn trap_names_the_syscall_and_exits_31() {
    let prog = program(SeccompMode::Trap, HostKind::Sim);
    let (rd, wr) = pipe();
    let wfd = wr.as_raw_fd();
    let st = in_child(|| {
        // SAFETY: this child's stderr becomes the pipe.
        if unsafe { libc::dup2(wfd, libc::STDERR_FILENO) } < 0 {
            return 100;
        }
        if install(SeccompMode::Trap, &prog).is_err() {
            return 101;
        }
        // SAFETY: a raw openat of a constant path; trapped.
        unsafe {
            libc::openat(
                libc::AT_FDCWD,
                c"/".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        0
    });
    drop(wr);
    assert!(exited(st, TRAP_EXIT_CODE), "{st:?}");
    let mut out = [0u8; 256];
    let n = nix::unistd::read(&rd, &mut out).expect("read the child's stderr");
    let text = String::from_utf8_lossy(&out[..n]);
    assert_eq!(
        text,
        format!(
            "vsmmud: seccomp: forbidden syscall {} (openat)\n",
            libc::SYS_openat
        )
    );
}

#[test]
fn log_mode_lets_forbidden_calls_through() {
    let prog = program(SeccompMode::Log, HostKind::Sim);
    let st = after_filter(SeccompMode::Log, &prog, || {
        // SAFETY: a raw socket(2), logged and allowed.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            // SAFETY: ends the child.
            unsafe { libc::_exit(1) };
        }
    });
    assert!(exited(st, 0), "{st:?}");
}

/// What the serving thread does, by raw syscalls on descriptors the
/// parent made.
struct Serving {
    host: Option<HostKind>,
    /// The pid the filter was built for (the parent's).
    pid: c_int,
    memfd: RawFd,
    epoll: RawFd,
    listener: RawFd,
    pair: [RawFd; 2],
}

impl Serving {
    /// Returns 0, or the number of the step that failed.
    #[allow(
        clippy::multiple_unsafe_ops_per_block,
        reason = "one script of raw syscalls on this child's own descriptors and stack buffers"
    )]
    fn run(&self) -> c_int {
        macro_rules! check {
            ($step:expr, $ok:expr) => {
                if !$ok {
                    return $step;
                }
            };
        }
        let eventfd = self.host != Some(HostKind::Iommufd);
        let ioctls = self.host != Some(HostKind::Sim);
        let one = 1u64.to_ne_bytes();
        let mut eight = [0u8; 8];
        // SAFETY: every call below is a raw syscall on descriptors this
        // child inherited or created, and on live buffers of the sizes
        // given; the cmsg buffers are 8-aligned and large enough for
        // one fd.
        unsafe {
            // The sim's vEVENTQ eventfd.
            let mut passed = self.memfd;
            if eventfd {
                let efd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
                check!(1, efd >= 0);
                check!(2, libc::write(efd, one.as_ptr().cast(), 8) == 8);
                check!(3, libc::read(efd, eight.as_mut_ptr().cast(), 8) == 8);
                passed = efd;
            }
            // An fd over the socket, as a client sends memfds and eventfds.
            let mut cmsg = [0u64; 8];
            let mut iov = libc::iovec {
                iov_base: one.as_ptr() as *mut c_void,
                iov_len: 8,
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            libc::CMSG_DATA(c).cast::<c_int>().write_unaligned(passed);
            check!(
                4,
                libc::sendmsg(self.pair[0], &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) == 8
            );
            let mut riov = libc::iovec {
                iov_base: eight.as_mut_ptr().cast(),
                iov_len: 8,
            };
            let mut rcmsg = [0u64; 8];
            let mut rmsg: libc::msghdr = std::mem::zeroed();
            rmsg.msg_iov = &mut riov;
            rmsg.msg_iovlen = 1;
            rmsg.msg_control = rcmsg.as_mut_ptr().cast();
            rmsg.msg_controllen = std::mem::size_of_val(&rcmsg);
            let flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
            check!(5, libc::recvmsg(self.pair[1], &mut rmsg, flags) == 8);
            let rc = libc::CMSG_FIRSTHDR(&rmsg);
            check!(6, !rc.is_null() && (*rc).cmsg_type == libc::SCM_RIGHTS);
            let got = libc::CMSG_DATA(rc).cast::<c_int>().read_unaligned();
            // Nothing more: EAGAIN, not a kill.
            check!(7, libc::recvmsg(self.pair[1], &mut rmsg, flags) == -1);
            // Guest RAM: metadata and a shared mapping of the memfd.
            let mut stx: libc::statx = std::mem::zeroed();
            let e = libc::statx(
                self.memfd,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_ALL,
                &mut stx,
            );
            check!(8, e == 0 && stx.stx_size == 4096);
            let mut st: libc::stat = std::mem::zeroed();
            check!(9, libc::fstat(self.memfd, &mut st) == 0);
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            let ram = libc::mmap(
                std::ptr::null_mut(),
                4096,
                rw,
                libc::MAP_SHARED,
                self.memfd,
                0,
            );
            check!(10, ram != libc::MAP_FAILED);
            ram.cast::<u64>().write_volatile(0x1234);
            check!(11, libc::munmap(ram, 4096) == 0);
            // The allocator.
            let anon_flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            let anon = libc::mmap(std::ptr::null_mut(), 1 << 20, rw, anon_flags, -1, 0);
            check!(12, anon != libc::MAP_FAILED);
            let anon = libc::mremap(anon, 1 << 20, 2 << 20, libc::MREMAP_MAYMOVE);
            check!(13, anon != libc::MAP_FAILED);
            check!(14, libc::madvise(anon, 1 << 20, libc::MADV_DONTNEED) == 0);
            check!(15, libc::mprotect(anon, 4096, libc::PROT_READ) == 0);
            check!(16, libc::munmap(anon, 2 << 20) == 0);
            check!(17, libc::syscall(libc::SYS_brk, 0) > 0);
            // The event loop.
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 7,
            };
            check!(
                18,
                libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, self.pair[1], &mut ev) == 0
            );
            check!(19, libc::epoll_wait(self.epoll, &mut ev, 1, 0) >= 0);
            check!(
                20,
                libc::epoll_pwait(self.epoll, &mut ev, 1, 0, std::ptr::null()) >= 0
            );
            check!(
                21,
                libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_DEL, self.pair[1], &mut ev) == 0
            );
            let nb = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
            let client = libc::accept4(
                self.listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                nb,
            );
            check!(22, client >= 0);
            check!(23, libc::fcntl(got, libc::F_GETFD) == libc::FD_CLOEXEC);
            check!(24, libc::fcntl(client, libc::F_GETFL) >= 0);
            // An irq: write the received eventfd.
            if eventfd {
                check!(25, libc::write(got, one.as_ptr().cast(), 8) == 8);
            }
            check!(26, libc::close(got) == 0 && libc::close(client) == 0);
            // std and libc.
            let mut ts: libc::timespec = std::mem::zeroed();
            let ts_ptr = std::ptr::from_mut(&mut ts);
            check!(
                27,
                libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_REALTIME, ts_ptr) == 0
            );
            check!(28, libc::getrandom(eight.as_mut_ptr().cast(), 8, 0) == 8);
            let word = 0u32;
            let wake = libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG;
            check!(
                29,
                libc::syscall(libc::SYS_futex, std::ptr::from_ref(&word), wake, 1, 0, 0, 0) == 0
            );
            check!(30, libc::getpid() > 0 && libc::gettid() > 0);
            let mut old: libc::sigset_t = std::mem::zeroed();
            check!(
                31,
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old) == 0
            );
            let mut oldact: libc::sigaction = std::mem::zeroed();
            check!(
                32,
                libc::sigaction(libc::SIGABRT, std::ptr::null(), &mut oldact) == 0
            );
            // abort()'s tgkill; tid 0 makes it EINVAL without a signal.
            check!(
                33,
                libc::syscall(libc::SYS_tgkill, self.pid, 0, libc::SIGABRT) == -1
            );
            let mut ss: libc::stack_t = std::mem::zeroed();
            check!(34, libc::sigaltstack(std::ptr::null(), &mut ss) == 0);
            // The socket path at exit (here one that does not exist).
            check!(
                35,
                libc::unlinkat(libc::AT_FDCWD, c"/nonexistent/s.sock".as_ptr(), 0) == -1
            );
            // The run queue probe's pread of /proc/loadavg (here the memfd
            // stands in for it).
            check!(
                37,
                libc::pread(self.memfd, eight.as_mut_ptr().cast(), 8, 0) == 8
            );
            // The iommufd requests reach the kernel (ENOTTY on a memfd).
            if ioctls {
                let mut arg = [0u32; 2];
                for (req, _) in IOMMUFD_IOCTLS {
                    check!(
                        36,
                        libc::ioctl(self.memfd, req as libc::Ioctl, arg.as_mut_ptr()) == -1
                    );
                }
            }
        }
        0
    }
}

#[test]
fn the_filter_allows_what_serving_needs() {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let memfd = vsmmu_testutil::memfd(4096);
    let epoll = nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::EPOLL_CLOEXEC)
        .expect("epoll");
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let (a, b) =
        socketpair(AddressFamily::Unix, SockType::Stream, None, flags).expect("socketpair");
    for host in RULE_SETS {
        let name = format!("vsmmu-seccomp-test-{}-{host:?}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
        let listener = UnixListener::bind_addr(&addr).expect("listen");
        let _client = UnixStream::connect_addr(&addr).expect("connect");
        let serving = Serving {
            host,
            pid: std::process::id() as c_int,
            memfd: memfd.as_raw_fd(),
            epoll: epoll.0.as_raw_fd(),
            listener: listener.as_raw_fd(),
            pair: [a.as_raw_fd(), b.as_raw_fd()],
        };
        let prog = build(
            Thread::Serving,
            SeccompMode::Kill,
            host,
            Some(serving.memfd),
        )
        .unwrap()
        .unwrap();
        let st = in_child(|| {
            if install(SeccompMode::Kill, &prog).is_err() {
                return 100;
            }
            serving.run()
        });
        assert!(exited(st, 0), "{host:?}: {st:?}");
    }
}
