//! The adaptive polling window both ends of the socket use while waiting
//! for the other: how long to poll before sleeping (docs/design.md,
//! "Adaptive polling").
//!
//! Pure logic, after KVM's halt polling: the caller times each wait
//! (polling plus sleeping, until the awaited message arrived) and reports
//! it with [`PollWindow::record`]. The window grows when a longer poll
//! would have caught the message and sleeping had cost more than the
//! shortest poll; it drops to 0 when no poll could have caught the message,
//! or when the message came right after the poll gave up, which is what a
//! poll that kept the peer off its CPU looks like. On a busy machine the
//! window so settles at 0: each side sleeps and leaves the CPU to the other.

use std::time::Duration;

/// Where a growing window starts (KVM's `halt_poll_ns_grow_start`); also
/// the sleep below which polling has nothing to win.
pub const GROW_START: Duration = Duration::from_micros(10);

/// Factor of each growth (KVM's `halt_poll_ns_grow`).
pub const GROW: u32 = 2;

/// How one wait changed the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The message came while polling: the window stays.
    Hit,
    /// It came after the window, before the cap, after a costly sleep:
    /// the window grew.
    Grew,
    /// It came after the cap (not for a burst window), or soon after the
    /// poll gave up: the window dropped to 0.
    Shrank,
    /// Nothing changes: polling is off, the window is 0 and stays so, or
    /// a burst window saw a pause ([`PollWindow::for_bursts`]).
    Kept,
}

/// The current polling window, between 0 and a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollWindow {
    window: Duration,
    max: Duration,
    /// A wait beyond the cap keeps the window ([`PollWindow::for_bursts`]).
    pause_keeps: bool,
}

impl PollWindow {
    /// A window that starts at 0 (sleep) and never exceeds `max`; a `max`
    /// of 0 never polls.
    pub fn new(max: Duration) -> Self {
        PollWindow {
            window: Duration::ZERO,
            max,
            pause_keeps: false,
        }
    }

    /// A window for the waits inside bursts of messages, such as the
    /// commands a guest driver issues one after another, each waiting for
    /// the previous one's CMD_SYNC: it starts at the cap, and a wait
    /// beyond the cap (the pause between two bursts) teaches nothing and
    /// keeps it. The other rules are [`PollWindow::record`]'s, so a peer
    /// that needs the CPU this side spins on still drops it to 0.
    pub fn for_bursts(max: Duration) -> Self {
        PollWindow {
            window: max,
            max,
            pause_keeps: true,
        }
    }

    /// How long to poll before sleeping now.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The first window after 0, and the shortest sleep worth polling
    /// against: [`GROW_START`], or the cap when that is smaller.
    pub fn start(&self) -> Duration {
        GROW_START.min(self.max)
    }

    /// Reports that the awaited message arrived `waited` after the wait
    /// began (polling and sleeping together), and adapts the window:
    /// - within the window: a hit, the window stays;
    /// - beyond the cap: no window would have caught it and polling only
    ///   burnt CPU; the window drops to 0 (KVM's default shrink), except
    ///   a burst window's ([`PollWindow::for_bursts`]), which stays;
    /// - less than [`PollWindow::start`] after the window ran out: sleeping
    ///   cost less than the shortest poll, so polling has nothing to win.
    ///   KVM stops polling as soon as another task is runnable on its CPU;
    ///   user space cannot see its own CPU's run queue (the machine's:
    ///   [`crate::run_queue`]), and this is its trace: a peer that
    ///   needed the CPU this side spun on answers right after the spin
    ///   ends, and on busy CPUs a wakeup is cheap. The window drops to 0;
    /// - otherwise a longer window would have caught it and saved a costly
    ///   sleep: the window doubles, starting at [`PollWindow::start`], up to
    ///   the cap.
    pub fn record(&mut self, waited: Duration) -> Verdict {
        if self.max.is_zero() {
            return Verdict::Kept;
        }
        if waited <= self.window {
            return Verdict::Hit;
        }
        let slept = waited - self.window;
        if slept < self.start() || (waited > self.max && !self.pause_keeps) {
            if self.window.is_zero() {
                return Verdict::Kept;
            }
            self.window = Duration::ZERO;
            return Verdict::Shrank;
        }
        if waited > self.max {
            // A burst window: a pause between bursts.
            return Verdict::Kept;
        }
        let grown = self.window.saturating_mul(GROW).max(self.start());
        self.window = grown.min(self.max);
        Verdict::Grew
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Feeds `waits` (µs) and returns the verdict and window (µs) after each.
    fn run(max: u64, waits: &[u64]) -> Vec<(Verdict, u64)> {
        let mut w = PollWindow::new(us(max));
        waits
            .iter()
            .map(|&t| {
                let v = w.record(us(t));
                (v, w.window().as_micros() as u64)
            })
            .collect()
    }

    /// A peer that answers `answer` µs after the wait begins, seen by a
    /// side whose wakeup from sleep costs `wake` µs, for `n` waits.
    fn converge(max: u64, answer: u64, wake: u64, n: usize) -> Vec<(Verdict, u64)> {
        let mut w = PollWindow::new(us(max));
        (0..n)
            .map(|_| {
                let waited = if us(answer) <= w.window() {
                    us(answer)
                } else {
                    us(answer + wake)
                };
                let v = w.record(waited);
                (v, w.window().as_micros() as u64)
            })
            .collect()
    }

    #[test]
    fn starts_asleep() {
        let w = PollWindow::new(us(50));
        assert_eq!(w.window(), Duration::ZERO);
        assert_eq!(w.max(), us(50));
        assert_eq!(w.start(), us(10));
        assert_eq!(PollWindow::new(us(4)).start(), us(4));
    }

    #[test]
    fn grows_from_the_start_value_by_two_up_to_the_cap() {
        assert_eq!(
            run(50, &[30, 30, 30, 30, 30]),
            [(Grew, 10), (Grew, 20), (Grew, 40), (Hit, 40), (Hit, 40)]
        );
        // The last doubling is clipped to the cap.
        assert_eq!(
            run(50, &[45, 45, 45, 50, 50]),
            [(Grew, 10), (Grew, 20), (Grew, 40), (Grew, 50), (Hit, 50)]
        );
    }

    #[test]
    fn hits_keep_the_window() {
        // A hit never shrinks the window, however early it came.
        assert_eq!(
            run(50, &[30, 1, 0, 10, 3]),
            [(Grew, 10), (Hit, 10), (Hit, 10), (Hit, 10), (Hit, 10)]
        );
    }

    #[test]
    fn a_wait_beyond_the_cap_drops_to_zero() {
        assert_eq!(
            run(50, &[20, 20, 51, 51, 50, 3]),
            [
                (Grew, 10),
                (Grew, 20),
                (Shrank, 0),
                // Already sleeping: a long wait teaches nothing.
                (Kept, 0),
                // Exactly the cap: a window of the cap would have caught it.
                (Grew, 10),
                (Hit, 10)
            ]
        );
        // From the cap too.
        assert_eq!(
            run(40, &[39, 39, 39, 39, 1000, 1000]),
            [
                (Grew, 10),
                (Grew, 20),
                (Grew, 40),
                (Hit, 40),
                (Shrank, 0),
                (Kept, 0)
            ]
        );
    }

    #[test]
    fn a_burst_window_starts_at_the_cap_and_outlives_pauses() {
        let mut w = PollWindow::for_bursts(us(200));
        assert_eq!(w.window(), us(200));
        // Inside a burst: hits. Between bursts: nothing learnt.
        assert_eq!(w.record(us(30)), Hit);
        assert_eq!(w.record(us(900)), Kept);
        assert_eq!(w.window(), us(200));
        // A peer that needed this CPU: the message 1 µs after the poll
        // gave up. Polling stops, and comes back only as a normal window
        // grows: from the start value, on waits within the cap.
        assert_eq!(w.record(us(201)), Shrank);
        assert_eq!(w.window(), Duration::ZERO);
        assert_eq!(w.record(us(900)), Kept);
        assert_eq!(w.record(us(40)), Grew);
        assert_eq!(w.window(), us(10));
        // A zero cap never polls.
        let mut off = PollWindow::for_bursts(Duration::ZERO);
        assert_eq!((off.window(), off.record(us(5))), (Duration::ZERO, Kept));
    }

    #[test]
    fn a_message_soon_after_the_poll_gave_up_drops_to_zero() {
        // 20 µs of polling, the message 1 µs later: the peer was waiting
        // for this CPU, or sleeping is cheap. Either way: sleep.
        assert_eq!(
            run(50, &[30, 30, 21]),
            [(Grew, 10), (Grew, 20), (Shrank, 0)]
        );
        // Just the start value after the window: still worth growing.
        assert_eq!(run(50, &[30, 20]), [(Grew, 10), (Grew, 20)]);
        // From 0: a wait shorter than the start value keeps it at 0.
        assert_eq!(run(50, &[9, 3, 10]), [(Kept, 0), (Kept, 0), (Grew, 10)]);
    }

    #[test]
    fn a_cap_below_the_start_value_is_the_window() {
        assert_eq!(
            run(4, &[3, 4, 4, 5, 4]),
            [(Kept, 0), (Grew, 4), (Hit, 4), (Shrank, 0), (Grew, 4)]
        );
    }

    #[test]
    fn a_zero_cap_never_polls() {
        assert_eq!(
            run(0, &[0, 5, 30, 100]),
            [(Kept, 0), (Kept, 0), (Kept, 0), (Kept, 0)]
        );
    }

    #[test]
    fn costly_wakeups_settle_on_the_smallest_window_that_catches() {
        // An idle virtual machine: a peer that answers in 12 µs, a wakeup
        // from sleep that costs 30 µs.
        assert_eq!(
            converge(50, 12, 30, 5),
            [(Grew, 10), (Grew, 20), (Hit, 20), (Hit, 20), (Hit, 20)]
        );
        // A peer slower than the cap is never polled for.
        assert_eq!(converge(50, 60, 30, 3), [(Kept, 0), (Kept, 0), (Kept, 0)]);
    }

    #[test]
    fn a_peer_that_needs_this_cpu_settles_at_zero() {
        // A busy machine: the peer answers 3 µs after this side stops
        // spinning (it waited for the CPU), and a wakeup costs 1 µs. Once
        // polling has started (an earlier slow wait), it stops at the first
        // miss and does not come back.
        let mut w = PollWindow::new(us(50));
        assert_eq!(w.record(us(30)), Grew);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let waited = w.window() + us(3 + 1);
            let v = w.record(waited);
            seen.push((v, w.window().as_micros() as u64));
        }
        assert_eq!(seen, [(Shrank, 0), (Kept, 0), (Kept, 0), (Kept, 0)]);
    }
}
