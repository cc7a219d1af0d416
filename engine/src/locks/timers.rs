//! The lock table's timers: one min-heap of `(when, what)` with lazy cancellation.
//!
//! Operations, renewals and fencing checks each keep a generation number; a timer
//! entry carries the generation it was set for, and a fired entry whose generation
//! is stale is ignored. So re-arming is a push, never a search.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::time::Nanos;

/// What a timer is for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum TimerKind {
    /// The running operation of a lock asked for a wake-up.
    Op,
    /// A held lock is due for renewal.
    Renew,
    /// A held lock's fencing point: check whether its validity is about to end.
    Fence,
    /// An unresponsive drive is due for its next probe (`lock` is the drive id).
    Probe,
}

/// One armed timer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Timer {
    /// When it fires.
    pub at: Nanos,
    /// What for.
    pub kind: TimerKind,
    /// The lock's slot in the table (the drive id for [`TimerKind::Probe`]).
    pub lock: usize,
    /// The generation it was armed for (stale generations are ignored).
    pub generation: u64,
}

/// A min-heap of timers.
#[derive(Default, Debug)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    /// No timers.
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Arms a timer.
    pub fn arm(&mut self, t: Timer) {
        self.heap.push(Reverse(t));
    }

    /// The earliest armed time.
    pub fn next(&self) -> Option<Nanos> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// Takes the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Nanos) -> Option<Timer> {
        if self.heap.peek().is_some_and(|Reverse(t)| t.at <= now) {
            self.heap.pop().map(|Reverse(t)| t)
        } else {
            None
        }
    }

    /// Armed timers (including stale ones not yet popped).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64, lock: usize) -> Timer {
        Timer {
            at: Nanos::from_millis(ms),
            kind: TimerKind::Op,
            lock,
            generation: 0,
        }
    }

    #[test]
    fn pops_in_time_order_only_when_due() {
        let mut ts = Timers::new();
        ts.arm(t(30, 3));
        ts.arm(t(10, 1));
        ts.arm(t(20, 2));
        assert_eq!(ts.next(), Some(Nanos::from_millis(10)));
        assert_eq!(ts.pop_due(Nanos::from_millis(5)), None);
        let due: Vec<usize> = std::iter::from_fn(|| ts.pop_due(Nanos::from_millis(20)))
            .map(|t| t.lock)
            .collect();
        assert_eq!(due, vec![1, 2]);
        assert_eq!(ts.len(), 1);
    }
}
