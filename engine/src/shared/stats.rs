//! What a reactor counts: per-operation latency histograms and counters.

use hdrhistogram::Histogram;

use uring_sg::DriveError;

use crate::locks::OpKind;

/// One reactor's statistics, merged by the engine into [`crate::api::EngineStats`].
#[derive(Clone, Debug)]
pub struct ReactorStats {
    /// Latency (ns, from request to outcome) per operation kind, indexed by
    /// [`OpKind::index`].
    pub latency: Vec<Histogram<u64>>,
    /// Failed operations per kind.
    pub errors: Vec<u64>,
    /// Drive commands sent.
    pub commands: u64,
    /// Drive commands answered (including timeouts and errors).
    pub replies: u64,
    /// Renewals that reached a majority.
    pub renewals: u64,
    /// Renewals that did not.
    pub renew_failures: u64,
    /// Lockspaces fenced by this reactor.
    pub fences: u64,
    /// Replies that came after their operation's caller was answered (absorbed
    /// by the lock table).
    pub late_replies: u64,
    /// Loop turns (one `io_uring_enter` each).
    pub turns: u64,
    /// Drives this reactor opened: name and health.
    pub drives: Vec<(String, DriveHealth)>,
}

impl ReactorStats {
    /// Empty statistics.
    pub fn new() -> ReactorStats {
        // 1 ns .. 1 h at 2 significant digits (1% precision): constant, valid
        // bounds, and about 44 KB per histogram, cheap to clone for stats().
        // An invariant, not an error path: new_with_bounds fails only for
        // low < 1, high < 2 * low or more than 5 digits.
        #[allow(clippy::expect_used)]
        let h = || {
            Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 2)
                .expect("constant histogram bounds are valid")
        };
        ReactorStats {
            latency: OpKind::ALL.iter().map(|_| h()).collect(),
            errors: vec![0; OpKind::ALL.len()],
            commands: 0,
            replies: 0,
            renewals: 0,
            renew_failures: 0,
            fences: 0,
            late_replies: 0,
            turns: 0,
            drives: Vec::new(),
        }
    }

    /// Records one finished operation.
    pub fn record(&mut self, kind: OpKind, nanos: u64, ok: bool) {
        if let Some(h) = self.latency.get_mut(kind.index()) {
            h.saturating_record(nanos.max(1));
        }
        if !ok {
            self.errors[kind.index()] += 1;
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &ReactorStats) {
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            let _ = a.add(b);
        }
        for (a, b) in self.errors.iter_mut().zip(&other.errors) {
            *a += b;
        }
        self.commands += other.commands;
        self.replies += other.replies;
        self.renewals += other.renewals;
        self.renew_failures += other.renew_failures;
        self.fences += other.fences;
        self.late_replies += other.late_replies;
        self.turns += other.turns;
        self.drives.extend(other.drives.iter().cloned());
    }
}

impl Default for ReactorStats {
    fn default() -> Self {
        ReactorStats::new()
    }
}

/// Health of one drive as this reactor saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriveHealth {
    /// Commands sent to it.
    pub commands: u64,
    /// Errors in a row at the transport level (I/O, timeout), reset by any answer.
    pub consecutive_errors: u32,
    /// The last answer's error, if the last answer was one.
    pub last_error: Option<DriveError>,
    /// Path switches after I/O errors.
    pub failovers: u64,
    /// Marked unresponsive now (a command timed out, no answer since): it gets
    /// only probes until it answers ([`crate::locks::health`]).
    pub unresponsive: bool,
    /// Times it became unresponsive.
    pub unresponsive_episodes: u64,
}
