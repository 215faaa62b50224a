//! The contended pass: busy threads that oversubscribe the CPUs while every
//! figure is measured a second time, as other users' builds do on a shared
//! host. They run in a child process (this binary in its hidden `spin`
//! mode), so that the bench process's own CPU figures leave them out, at
//! the same priority as everything else, and in a session of their own:
//! with autogroup scheduling (the default of many distributions) the
//! scheduler groups tasks by session, and another user's build is another
//! session, not threads beside ours in the same group.

use std::io::Read;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Instant;

use anyhow::Context;

use crate::proc;

/// Spins `threads` threads until standard input closes (the bench dropped
/// the [`Contention`], or died).
pub fn serve_spin(threads: usize) -> anyhow::Result<()> {
    // Fails only when already a session leader, which is as good.
    let _ = nix::unistd::setsid();
    for i in 0..threads {
        std::thread::Builder::new()
            .name(format!("spin{i}"))
            .spawn(spin)
            .context("spawning a spinning thread")?;
    }
    let mut b = [0u8; 64];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut b) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(()),
        }
    }
}

/// Integer work without pause instructions: a PAUSE loop on a virtual
/// machine can make the host deschedule the vCPU, which a compiler never
/// does.
fn spin() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    loop {
        for _ in 0..1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
}

/// Running busy threads; dropping this stops them.
#[derive(Debug)]
pub struct Contention {
    child: Child,
    stdin: Option<ChildStdin>,
    threads: usize,
    t0: Instant,
    cpu0: Option<u64>,
}

impl Contention {
    /// Starts `threads` spinning threads in a child process.
    pub fn start(threads: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("current_exe")?;
        let mut child = Command::new(exe)
            .arg("spin")
            .arg("--threads")
            .arg(threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("spawning the busy threads")?;
        let stdin = child.stdin.take();
        let cpu0 = proc::cpu_ns(child.id());
        Ok(Contention {
            child,
            stdin,
            threads,
            t0: Instant::now(),
            cpu0,
        })
    }

    /// Busy threads running.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// CPUs' worth of time the busy threads got since they started (e.g.
    /// 1.2 of 2): how much they took from the measured processes.
    pub fn cpus_used(&self) -> f64 {
        let wall = self.t0.elapsed().as_nanos() as f64;
        match (self.cpu0, proc::cpu_ns(self.child.id())) {
            (Some(a), Some(b)) if wall > 0.0 => b.saturating_sub(a) as f64 / wall,
            _ => f64::NAN,
        }
    }
}

impl Drop for Contention {
    fn drop(&mut self) {
        // Closing its input would stop it too (that is for a bench that
        // dies); killing it stops it now.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
