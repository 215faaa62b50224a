//! The adaptive polling window both ends of the socket use while waiting
//! for the other: how long to poll before sleeping (docs/design.md,
//! "Adaptive polling").
//!
//! Pure logic, as KVM's halt polling: the caller times each wait (polling
//! plus sleeping, until the awaited message arrived) and reports it with
//! [`PollWindow::record`]; the window grows when a longer poll would have
//! caught the message, and drops to zero when the wait was longer than
//! any poll may be, so a side that keeps missing sleeps at once and leaves
//! the CPU to the side it waits for.

use std::time::Duration;

/// Where a growing window starts (KVM's `halt_poll_ns_grow_start`).
pub const GROW_START: Duration = Duration::from_micros(10);

/// Factor of each growth (KVM's `halt_poll_ns_grow`).
pub const GROW: u32 = 2;

/// How one wait changed the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The message came while polling: the window stays.
    Hit,
    /// It came after the window but before the cap: the window grew.
    Grew,
    /// It came after the cap: polling gave up (the window is 0).
    Shrank,
    /// Nothing to learn: polling is off, or the window is already 0 and
    /// the wait was longer than any window.
    Kept,
}

/// The current polling window, between 0 and a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollWindow {
    window: Duration,
    max: Duration,
}

impl PollWindow {
    /// A window that starts at 0 (sleep) and never exceeds `max`; a `max`
    /// of 0 never polls.
    pub fn new(max: Duration) -> Self {
        PollWindow {
            window: Duration::ZERO,
            max,
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

    /// Reports that the awaited message arrived `waited` after the wait
    /// began (polling and sleeping together), and adapts the window:
    /// - within the window: a hit, the window stays;
    /// - beyond the cap: no window would have caught it, so polling only
    ///   burnt CPU; the window drops to 0 (KVM's default shrink);
    /// - between the two: a longer window would have caught it; it
    ///   doubles, starting at [`GROW_START`], up to the cap.
    pub fn record(&mut self, waited: Duration) -> Outcome {
        if self.max.is_zero() {
            return Outcome::Kept;
        }
        if waited <= self.window {
            Outcome::Hit
        } else if waited > self.max {
            if self.window.is_zero() {
                Outcome::Kept
            } else {
                self.window = Duration::ZERO;
                Outcome::Shrank
            }
        } else {
            let grown = self.window.saturating_mul(GROW).max(GROW_START);
            self.window = grown.min(self.max);
            Outcome::Grew
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Feeds `waits` (µs) and returns the outcome and window (µs) after each.
    fn run(max: u64, waits: &[u64]) -> Vec<(Outcome, u64)> {
        let mut w = PollWindow::new(us(max));
        waits
            .iter()
            .map(|&t| {
                let o = w.record(us(t));
                (o, w.window().as_micros() as u64)
            })
            .collect()
    }

    #[test]
    fn starts_asleep() {
        let w = PollWindow::new(us(50));
        assert_eq!(w.window(), Duration::ZERO);
        assert_eq!(w.max(), us(50));
    }

    #[test]
    fn grows_from_the_start_value_by_two_up_to_the_cap() {
        use Outcome::*;
        assert_eq!(
            run(50, &[30, 30, 30, 30, 30, 30]),
            [
                (Grew, 10),
                (Grew, 20),
                (Grew, 40),
                (Hit, 40),
                (Hit, 40),
                (Hit, 40)
            ]
        );
        // Waits just under the cap: the last doubling is clipped to it.
        assert_eq!(
            run(50, &[49, 49, 49, 49, 49]),
            [(Grew, 10), (Grew, 20), (Grew, 40), (Grew, 50), (Hit, 50)]
        );
    }

    #[test]
    fn hits_keep_the_window() {
        use Outcome::*;
        // A hit never shrinks the window, however early it came.
        assert_eq!(
            run(50, &[5, 1, 0, 10, 3]),
            [(Grew, 10), (Hit, 10), (Hit, 10), (Hit, 10), (Hit, 10)]
        );
    }

    #[test]
    fn a_wait_beyond_the_cap_drops_to_zero() {
        use Outcome::*;
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
    fn a_cap_below_the_start_value_is_the_window() {
        use Outcome::*;
        assert_eq!(
            run(4, &[3, 4, 5, 2]),
            [(Grew, 4), (Hit, 4), (Shrank, 0), (Grew, 4)]
        );
    }

    #[test]
    fn a_zero_cap_never_polls() {
        use Outcome::*;
        assert_eq!(
            run(0, &[0, 5, 100, 0]),
            [(Kept, 0), (Kept, 0), (Kept, 0), (Kept, 0)]
        );
    }

    #[test]
    fn oscillates_when_the_peer_needs_the_cpu_the_poll_takes() {
        use Outcome::*;
        // The peer answers 5 µs after this side stops polling (it shares
        // the CPU): each window misses by 5 µs until the cap, then drops.
        let mut w = PollWindow::new(us(50));
        let mut seen = Vec::new();
        for _ in 0..6 {
            let waited = w.window() + us(5);
            let o = w.record(waited);
            seen.push((o, w.window().as_micros() as u64));
        }
        assert_eq!(
            seen,
            [
                (Grew, 10),
                (Grew, 20),
                (Grew, 40),
                (Grew, 50),
                (Shrank, 0),
                (Grew, 10)
            ]
        );
    }
}
