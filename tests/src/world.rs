//! Virtual time: local clocks with bounded rate drift, and the event queue.
//!
//! All of the simulation runs on **true time** ([`Nanos`] since the start of the
//! run). Hosts and drives never see true time: each reads its own [`Clock`], which
//! runs at `1 + ppm/10^6` the rate of true time from some origin. The event queue
//! orders events by `(true time, sequence number)`: the sequence number makes ties
//! (many events at one instant) resolve in the order they were scheduled, so one
//! seed always replays the same trace.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use idm_engine::Nanos;

const MILLION: i128 = 1_000_000;

/// A local clock: `base + (t - origin) * (1 + ppm / 10^6)` for true time `t >= origin`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Clock {
    /// True time at which the clock read `base`.
    pub origin: Nanos,
    /// The clock's reading at `origin`.
    pub base: Nanos,
    /// Rate error in parts per million (positive: runs fast).
    pub ppm: i64,
}

impl Clock {
    /// A clock reading `base` at true time `origin`, drifting by `ppm`.
    pub fn new(origin: Nanos, base: Nanos, ppm: i64) -> Clock {
        Clock {
            origin,
            base,
            ppm: ppm.clamp(-500_000, 500_000),
        }
    }

    /// The clock's reading at true time `t` (readings before `origin` are `base`).
    pub fn local(&self, t: Nanos) -> Nanos {
        let dt = i128::from(t.0.saturating_sub(self.origin.0));
        let l = dt + dt * i128::from(self.ppm) / MILLION;
        Nanos(
            self.base
                .0
                .saturating_add(u64::try_from(l).unwrap_or(u64::MAX)),
        )
    }

    /// The first true time at which the clock reads at least `l` ([`Nanos::MAX`]
    /// stays the far future).
    pub fn true_at(&self, l: Nanos) -> Nanos {
        if l == Nanos::MAX {
            return Nanos::MAX;
        }
        if l <= self.base {
            return self.origin;
        }
        let dl = i128::from(l.0 - self.base.0);
        let mut dt = dl * MILLION / (MILLION + i128::from(self.ppm));
        let at = |dt: i128| Nanos(self.origin.0.saturating_add(u64::try_from(dt).unwrap_or(0)));
        while self.local(at(dt)) < l {
            dt += 1;
        }
        while dt > 0 && self.local(at(dt - 1)) >= l {
            dt -= 1;
        }
        at(dt)
    }

    /// The clock's reading in whole milliseconds (what a drive's firmware sees).
    pub fn local_ms(&self, t: Nanos) -> u64 {
        self.local(t).as_millis()
    }
}

struct Entry<E> {
    at: Nanos,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<E> Ord for Entry<E> {
    /// Reversed: the heap pops the earliest `(at, seq)` first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A queue of events in true time; ties pop in scheduling order.
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
    now: Nanos,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            now: Nanos::ZERO,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The time of the last event popped.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Schedules `ev` at `at` (an event in the past is scheduled now).
    pub fn push(&mut self, at: Nanos, ev: E) {
        let at = at.max(self.now);
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// The earliest event, advancing the clock to its time.
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        let e = self.heap.pop()?;
        self.now = e.at;
        Some((e.at, e.ev))
    }

    /// Events scheduled and not yet popped.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// No event scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_inverse_is_exact() {
        for ppm in [-3000i64, 0, 1, 2500] {
            let c = Clock::new(Nanos(1234), Nanos(99_000), ppm);
            for l in [99_000u64, 99_001, 1_000_000, 7_777_777_777] {
                let t = c.true_at(Nanos(l));
                assert!(c.local(t) >= Nanos(l));
                assert!(t == c.origin || c.local(Nanos(t.0 - 1)) < Nanos(l));
            }
        }
    }

    #[test]
    fn queue_orders_by_time_then_sequence() {
        let mut q = EventQueue::new();
        q.push(Nanos(5), 'b');
        q.push(Nanos(1), 'a');
        q.push(Nanos(5), 'c');
        let order: Vec<char> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!['a', 'b', 'c']);
    }
}
