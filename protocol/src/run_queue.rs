//! Whether this machine's CPUs are overcommitted, so that neither end of
//! the socket spins on a CPU another task is waiting for (docs/design.md,
//! "Adaptive polling").
//!
//! KVM polls a halted vCPU only while no other task is runnable on its CPU
//! (`single_task_running()` in `kvm_vcpu_halt`). User space cannot see its
//! own CPU's run queue, but `/proc/loadavg`'s fourth field gives the tasks
//! runnable on the whole machine right now (`nr_running()`, the caller
//! included). When more tasks are runnable than there are online CPUs,
//! one of them waits for a CPU, and a spin keeps it waiting. With the CPUs
//! full of busy threads, the adaptive window alone kept polling, because
//! each poll still caught its peer on the other CPU and so counted as a
//! success.
//!
//! The count is instantaneous and jumps (a kworker, a timer), so the
//! verdict follows the last [`SAMPLES`] samples, taken at most every
//! [`SAMPLE_EVERY`] when a wait begins: overcommitted while at least
//! [`BUSY_SAMPLES`] of them saw more runnable tasks than CPUs.
//!
//! Without `/proc` (or when it cannot be parsed) nothing is ever
//! overcommitted and polling is decided by the window alone. vsmmud opens
//! the file before it jails itself and reads it with `pread(2)`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Samples the verdict looks at.
pub const SAMPLES: u32 = 4;
/// How many of them must see the CPUs full.
pub const BUSY_SAMPLES: u32 = 3;
/// The shortest time between two samples: a read costs about 0.5 µs, and
/// a round trip a few µs.
pub const SAMPLE_EVERY: Duration = Duration::from_micros(50);

/// The tasks runnable now, from the text of `/proc/loadavg`
/// (`"0.91 1.24 1.45 3/80 8655"`: the fourth field's numerator).
pub fn parse_running(loadavg: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(loadavg).ok()?;
    let field = text.split_ascii_whitespace().nth(3)?;
    field.split_once('/')?.0.parse().ok()
}

/// The machine's run queue as the polling loops see it.
#[derive(Debug)]
pub struct RunQueue {
    file: Option<File>,
    /// Online CPUs.
    cpus: u32,
    /// The last [`SAMPLES`] verdicts, newest in bit 0: 1 = more tasks
    /// were runnable than there are CPUs.
    history: u32,
    last: Option<Instant>,
    /// Samples taken.
    samples: u64,
}

impl RunQueue {
    /// Opens `/proc/loadavg`; without it nothing is ever overcommitted.
    pub fn open() -> Self {
        RunQueue::open_file("/proc/loadavg")
    }

    /// Reads `path` in the format of `/proc/loadavg` (a test's stand-in).
    pub fn open_file(path: impl AsRef<std::path::Path>) -> Self {
        // SAFETY: sysconf reads a configuration value; no memory is passed.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        // Without the CPU count there is nothing to compare with: no probe
        // (one CPU assumed would stop polling whenever the peer runs).
        let Some(cpus) = u32::try_from(online).ok().filter(|&n| n > 0) else {
            return RunQueue::new(1);
        };
        let mut q = RunQueue::new(cpus);
        q.file = File::open(path).ok();
        if q.file.is_some() && q.read().is_none() {
            q.file = None;
        }
        q
    }

    /// A run queue of `cpus` CPUs fed only through [`RunQueue::record`]
    /// and read through [`RunQueue::busy`] (it has no file, so
    /// [`RunQueue::overcommitted`] is always false).
    pub fn new(cpus: u32) -> Self {
        RunQueue {
            file: None,
            cpus: cpus.max(1),
            history: 0,
            last: None,
            samples: 0,
        }
    }

    /// Samples taken so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Whether `/proc/loadavg` is being read.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// The descriptor read, if any (vsmmud's seccomp filter allows
    /// `pread` on it alone).
    pub fn fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.file.as_ref().map(File::as_raw_fd)
    }

    fn read(&self) -> Option<u32> {
        let mut buf = [0u8; 128];
        let n = self.file.as_ref()?.read_at(&mut buf, 0).ok()?;
        parse_running(buf.get(..n)?)
    }

    /// Takes a sample if the last one is older than [`SAMPLE_EVERY`], and
    /// says whether the CPUs are overcommitted. Called when a wait begins.
    pub fn overcommitted(&mut self) -> bool {
        if self.file.is_none() {
            return false;
        }
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= SAMPLE_EVERY)
        {
            self.last = Some(now);
            // A read that fails counts as free CPUs: a verdict must not
            // stay stuck at "overcommitted" (polling off for good).
            let running = self.read().unwrap_or(0);
            self.record(running);
        }
        self.busy()
    }

    /// Adds a sample: `running` tasks runnable, the caller included; the
    /// CPUs are overcommitted when that is more than their number.
    pub fn record(&mut self, running: u32) {
        self.samples += 1;
        let full = u32::from(running > self.cpus);
        self.history = (self.history << 1 | full) & ((1 << SAMPLES) - 1);
    }

    /// The verdict of the samples so far.
    pub fn busy(&self) -> bool {
        self.history.count_ones() >= BUSY_SAMPLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_running_count() {
        assert_eq!(parse_running(b"0.91 1.24 1.45 1/80 8655\n"), Some(1));
        assert_eq!(parse_running(b"12.00 9.50 4.25 17/1203 99\n"), Some(17));
        assert_eq!(parse_running(b"0.91 1.24 1.45"), None);
        assert_eq!(parse_running(b"0.91 1.24 1.45 x/80 1"), None);
        assert_eq!(parse_running(b"0.91 1.24 1.45 80 1"), None);
        assert_eq!(parse_running(b"\xff\xfe"), None);
        assert_eq!(parse_running(b""), None);
    }

    /// Feeds `running` samples to a queue of `cpus` and returns the
    /// verdict after each.
    fn verdicts(cpus: u32, running: &[u32]) -> Vec<bool> {
        let mut q = RunQueue::new(cpus);
        running
            .iter()
            .map(|&r| {
                q.record(r);
                q.busy()
            })
            .collect()
    }

    #[test]
    fn busy_when_three_of_four_samples_saw_more_tasks_than_cpus() {
        // 2 CPUs: the caller and its peer fit; a third task does not.
        assert_eq!(
            verdicts(2, &[3, 3, 3, 2, 2, 3, 3]),
            [false, false, true, true, false, false, false]
        );
        assert_eq!(
            verdicts(2, &[3, 4, 2, 5, 3]),
            [false, false, false, true, true]
        );
    }

    #[test]
    fn an_idle_machine_with_blips_stays_free() {
        // The peer runs while the caller waits (2), a kworker now and then.
        assert_eq!(verdicts(2, &[2, 3, 2, 2, 3, 2, 1, 3]), [false; 8]);
    }

    #[test]
    fn one_cpu_is_busy_whenever_anyone_else_runs() {
        assert_eq!(
            verdicts(1, &[2, 2, 2, 1, 1]),
            [false, false, true, true, false]
        );
        // A count of 0 (not even the caller) reads as nobody else.
        assert_eq!(verdicts(1, &[0, 1, 1]), [false, false, false]);
        // 0 CPUs is taken as 1.
        assert_eq!(verdicts(0, &[2, 2, 2]), [false, false, true]);
    }

    #[test]
    fn without_the_file_nothing_is_overcommitted() {
        let mut q = RunQueue::new(1);
        for _ in 0..4 {
            q.record(5);
        }
        // The samples say busy, but without the file nothing is sampled
        // and nothing is overcommitted.
        assert!(q.busy());
        assert!(!q.overcommitted());
        assert!(!q.is_open());
        assert_eq!(q.fd(), None);
    }

    #[test]
    fn a_file_that_stops_parsing_reads_as_free_cpus() {
        let dir = std::env::temp_dir().join(format!("vsmmu-runq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("loadavg");
        std::fs::write(&path, "9.0 9.0 9.0 100000/100100 1\n").unwrap();
        let mut q = RunQueue::open_file(&path);
        assert!(q.is_open());
        for _ in 0..4 {
            q.last = None;
            q.overcommitted();
        }
        assert!(q.busy());
        std::fs::write(&path, "junk\n").unwrap();
        for _ in 0..2 {
            q.last = None;
            q.overcommitted();
        }
        assert!(!q.busy());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_this_machine_when_it_has_proc() {
        let mut q = RunQueue::open();
        if std::path::Path::new("/proc/loadavg").exists() {
            assert!(q.is_open());
            // The reader itself is running.
            assert!(q.read().is_some_and(|n| n >= 1));
        }
        // One sample at most per interval: a second call within it reads
        // nothing more.
        q.overcommitted();
        let taken = u64::from(q.is_open());
        assert_eq!(q.samples(), taken);
        // (A sample "taken" an hour from now: however long this thread
        // is descheduled, the next call is within the interval.)
        q.last = Instant::now().checked_add(Duration::from_secs(3600));
        q.overcommitted();
        assert_eq!(q.samples(), taken);
        // An older sample is renewed.
        q.last = Instant::now().checked_sub(SAMPLE_EVERY);
        q.overcommitted();
        assert_eq!(q.samples(), 2 * taken);
    }
}
