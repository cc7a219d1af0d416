//! Command deadlines for a transport: the earliest one in O(1), the due ones in
//! O(log n) each, without scanning everything in flight every loop turn.
//!
//! Entries are `(deadline, key, generation)`; a command that completes is not
//! removed (that would need a search) but recognised as stale when it comes due:
//! the transport checks that `key` still holds the same `generation`. To keep
//! memory bounded when many commands complete long before their deadlines, the
//! heap is rebuilt from the live entries when stale ones outnumber them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A min-heap of command deadlines with lazy deletion. See the module docs.
#[derive(Debug, Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u64, u64)>>,
}

impl Deadlines {
    /// No deadlines.
    pub fn new() -> Deadlines {
        Deadlines::default()
    }

    /// Records that command `key` (in its `generation`) times out at `at`.
    /// `live` counts the commands in flight now: when the heap holds many more
    /// entries than that, stale ones are dropped using `is_live`.
    pub fn push(
        &mut self,
        at: Instant,
        key: u64,
        generation: u64,
        live: usize,
        is_live: impl Fn(u64, u64) -> bool,
    ) {
        if self.heap.len() > 1024 && self.heap.len() > 2 * live {
            let old = std::mem::take(&mut self.heap).into_vec();
            self.heap = old
                .into_iter()
                .filter(|Reverse((_, k, g))| is_live(*k, *g))
                .collect();
        }
        self.heap.push(Reverse((at, key, generation)));
    }

    /// The earliest deadline recorded (possibly of a command already finished:
    /// then the wake-up it causes is merely early).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes one entry due at `now`: `(key, generation)`; the caller checks it is
    /// still live.
    pub fn pop_due(&mut self, now: Instant) -> Option<(u64, u64)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                self.heap.pop().map(|Reverse((_, k, g))| (k, g))
            }
            _ => None,
        }
    }

    /// Entries held (live and stale).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_stale_entries_are_compacted() {
        let t0 = Instant::now();
        let mut d = Deadlines::new();
        d.push(t0 + Duration::from_millis(30), 3, 0, 3, |_, _| true);
        d.push(t0 + Duration::from_millis(10), 1, 0, 3, |_, _| true);
        d.push(t0 + Duration::from_millis(20), 2, 0, 3, |_, _| true);
        assert_eq!(d.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(d.pop_due(t0), None);
        assert_eq!(d.pop_due(t0 + Duration::from_millis(25)), Some((1, 0)));
        assert_eq!(d.pop_due(t0 + Duration::from_millis(25)), Some((2, 0)));
        assert_eq!(d.pop_due(t0 + Duration::from_millis(25)), None);
        // 5000 commands that all finished: the heap does not keep them all.
        for k in 0..5000 {
            d.push(t0, k, 1, 1, |k, _| k == 4999);
        }
        assert!(d.len() < 2100, "{}", d.len());
    }
}
