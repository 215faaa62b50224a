//! What `/proc` says about a process: memory and CPU time.

use anyhow::Context;

/// Memory of a process from `/proc/PID/status`, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// VmRSS: resident set.
    pub rss: u64,
    /// RssAnon: private anonymous pages (heap, stacks).
    pub anon: u64,
    /// RssFile: file-backed pages (the binary, libc).
    pub file: u64,
    /// RssShmem: shared memory (the guest RAM pages the server touched).
    pub shmem: u64,
    /// VmHWM: peak resident set.
    pub hwm: u64,
}

/// Parses the `kB` fields of a `/proc/PID/status` text.
pub fn parse_status(text: &str) -> Memory {
    let mut m = Memory::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kib = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match key {
            "VmRSS" => m.rss = kib,
            "RssAnon" => m.anon = kib,
            "RssFile" => m.file = kib,
            "RssShmem" => m.shmem = kib,
            "VmHWM" => m.hwm = kib,
            _ => {}
        }
    }
    m
}

/// Memory of process `pid`.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_status(&text))
}

/// CPU time process `pid` has used so far, in nanoseconds: the sum over
/// its threads of `/proc/PID/task/TID/schedstat` (time on CPU), or, where
/// schedstat is missing, utime + stime from `/proc/PID/stat` (tick
/// resolution). `None` when neither can be read.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            total = total.saturating_add(ns);
            any = true;
        }
    }
    if any {
        return Some(total);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(ticks * 1_000_000_000 / hz)
}

/// Mean cost of one `read(2)` of a 40-byte vEVENTQ record's size from
/// `/dev/zero` on this machine, in nanoseconds: what a kernel-backed read
/// costs that the sim's in-process read does not.
pub fn read_syscall_ns(n: u32) -> anyhow::Result<f64> {
    use std::io::Read;
    let mut f = std::fs::File::open("/dev/zero").context("/dev/zero")?;
    let mut buf = [0u8; 40];
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        f.read_exact(std::hint::black_box(&mut buf))?;
    }
    Ok(t0.elapsed().as_nanos() as f64 / f64::from(n.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let m = parse_status(
            "Name:\tvsmmud\nVmHWM:\t    3000 kB\nVmRSS:\t    2900 kB\nRssAnon:\t     400 kB\n\
             RssFile:\t    2300 kB\nRssShmem:\t     200 kB\nThreads:\t1\n",
        );
        assert_eq!(
            m,
            Memory {
                rss: 2900,
                anon: 400,
                file: 2300,
                shmem: 200,
                hwm: 3000
            }
        );
    }

    #[test]
    fn own_cpu_time_moves() {
        let pid = std::process::id();
        let a = cpu_ns(pid).expect("cpu time");
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ns(pid).expect("cpu time") > a);
        assert!(memory(pid).expect("status").rss > 0);
    }
}
