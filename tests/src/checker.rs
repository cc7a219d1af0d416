//! Invariants, checked continuously in true time.
//!
//! 1. **Exclusion**: each host reports the intervals, in true time, during which it
//!    believes it holds a lock and has not fenced, cut at the validity it computed
//!    (mapped from its clock to true time). Two intervals of different hosts on one
//!    lock, EX+EX or EX+SH, must not overlap.
//! 2. **Fenced before lapse**: every time a host *uses* a lock it believes held (it
//!    does so whenever it runs), the true time must be before the validity it
//!    computed **and** the lock's drives must, in truth, count the host as a live
//!    member on a majority ([`crate::drive::SimDrive::live_member`]). The second half
//!    is what a wrong validity rule breaks: the host believes, the drives disagree.
//! 3. **LVB never goes back**: holders write increasing values; a read started after
//!    a release with value `v` completed must return `>= v` or all-ones.
//! 4. **Liveness**: after faults stop, every waiting acquire reports an outcome
//!    (success or a clean error) within a bound.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use idm_engine::Nanos;
use uring_sg::Mode;

/// Which invariant broke.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ViolationKind {
    /// (1) Two conflicting holders with overlapping validity.
    Exclusion,
    /// (2) A host used a lock past the validity it computed.
    UsedPastValidity,
    /// (2) A host used a lock that a majority of its drives no longer grant it.
    UsedWithoutMajority,
    /// (3) An LVB read went back.
    LvbWentBack,
    /// (4) An acquire did not finish within the bound after faults stopped.
    Liveness,
}

/// One broken invariant.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Violation {
    /// Which invariant.
    pub kind: ViolationKind,
    /// True time it was detected.
    pub at: Nanos,
    /// Lock index.
    pub lock: usize,
    /// Host index.
    pub host: usize,
    /// What happened.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} at {} ns, lock {}, host {}: {}",
            self.kind, self.at.0, self.lock, self.host, self.detail
        )
    }
}

/// A hold interval of one host on one lock.
#[derive(Clone, Copy, Debug)]
struct Interval {
    host: usize,
    mode: Mode,
    start: Nanos,
    /// The validity (true time) the host computed last.
    valid_until: Nanos,
    /// When the host stopped believing (fence, release, crash).
    stop: Option<Nanos>,
}

impl Interval {
    fn end(&self) -> Nanos {
        self.stop.unwrap_or(Nanos::MAX).min(self.valid_until)
    }
}

/// Most violations kept per run (the count is still exact).
pub const MAX_KEPT: usize = 64;

/// The invariant checker of one run.
#[derive(Default)]
pub struct Checker {
    open: BTreeMap<(usize, usize), Interval>,
    recent: BTreeMap<usize, VecDeque<Interval>>,
    /// Per lock: (completion time, value) of completed releases that wrote an LVB.
    written: BTreeMap<usize, Vec<(Nanos, u64)>>,
    next_lvb: BTreeMap<usize, u64>,
    violations: Vec<Violation>,
    count: usize,
    /// Faults stopped at this time (liveness applies from then).
    pub faults_end: Option<Nanos>,
    /// The liveness bound.
    pub liveness_bound: Nanos,
}

impl Checker {
    /// A checker with this liveness bound.
    pub fn new(liveness_bound: Nanos) -> Checker {
        Checker {
            liveness_bound,
            ..Checker::default()
        }
    }

    fn report(&mut self, kind: ViolationKind, at: Nanos, lock: usize, host: usize, detail: String) {
        self.count += 1;
        if self.violations.len() < MAX_KEPT {
            self.violations.push(Violation {
                kind,
                at,
                lock,
                host,
                detail,
            });
        }
    }

    /// Violations found so far (at most [`MAX_KEPT`]).
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// How many violations were found.
    pub fn violation_count(&self) -> usize {
        self.count
    }

    /// Takes the violations out.
    pub fn take_violations(&mut self) -> Vec<Violation> {
        std::mem::take(&mut self.violations)
    }

    /// `host` starts believing it holds `lock` in `mode` at `t`, valid until `valid`.
    pub fn hold(&mut self, host: usize, lock: usize, mode: Mode, t: Nanos, valid: Nanos) {
        if self.open.contains_key(&(lock, host)) {
            self.update_validity(host, lock, t, valid);
            return;
        }
        self.open.insert(
            (lock, host),
            Interval {
                host,
                mode,
                start: t,
                valid_until: valid,
                stop: None,
            },
        );
    }

    /// `host` recomputed its validity on `lock` at `t`.
    ///
    /// Validity may move back (a drive dropped) or forward, even past a moment at
    /// which the old value had run out: a host paused across its old validity whose
    /// renewal (sent before the pause) is processed on resume. That is sound: the
    /// refresh reached the drives before the old membership expired, else they
    /// would have answered "expired". A host that *runs* past its validity without
    /// fencing is caught by [`Checker::use_lock`].
    pub fn update_validity(&mut self, host: usize, lock: usize, _t: Nanos, valid: Nanos) {
        if let Some(iv) = self.open.get_mut(&(lock, host)) {
            iv.valid_until = valid;
        }
    }

    /// `host` stopped believing it holds `lock` at `t` (fence, release, crash).
    pub fn unhold(&mut self, host: usize, lock: usize, t: Nanos) {
        let Some(mut iv) = self.open.remove(&(lock, host)) else {
            return;
        };
        iv.stop = Some(t);
        let recent = self.recent.entry(lock).or_default();
        let mut found = Vec::new();
        for other in recent.iter() {
            if other.host != iv.host
                && !(iv.mode == Mode::Shared && other.mode == Mode::Shared)
                && iv.start < other.end()
                && other.start < iv.end()
                && iv.start < iv.end()
                && other.start < other.end()
            {
                found.push(*other);
            }
        }
        recent.push_back(iv);
        // Keep only intervals an open (or future) interval could still overlap.
        let horizon = self
            .open
            .iter()
            .filter(|((l, _), _)| *l == lock)
            .map(|(_, o)| o.start)
            .min()
            .unwrap_or(t);
        recent.retain(|o| o.end() > horizon);
        for o in found {
            self.report(
                ViolationKind::Exclusion,
                t,
                lock,
                host,
                format!(
                    "host {} held {} [{}, {}) and host {} held {} [{}, {})",
                    iv.host,
                    iv.mode,
                    iv.start.0,
                    iv.end().0,
                    o.host,
                    o.mode,
                    o.start.0,
                    o.end().0
                ),
            );
        }
    }

    /// Closes every open interval at `t` (end of run).
    pub fn close_all(&mut self, t: Nanos) {
        let keys: Vec<(usize, usize)> = self.open.keys().copied().collect();
        for (lock, host) in keys {
            self.unhold(host, lock, t);
        }
    }

    /// `host` uses `lock` at `t`; `live` drives of `n` count it as a live member.
    pub fn use_lock(&mut self, host: usize, lock: usize, t: Nanos, live: u16, n: u16) {
        let Some(iv) = self.open.get(&(lock, host)).copied() else {
            return;
        };
        if t >= iv.valid_until {
            self.report(
                ViolationKind::UsedPastValidity,
                t,
                lock,
                host,
                format!("used at {} with validity until {}", t.0, iv.valid_until.0),
            );
        }
        if live < n / 2 + 1 {
            self.report(
                ViolationKind::UsedWithoutMajority,
                t,
                lock,
                host,
                format!(
                    "used at {} while a live member on only {live} of {n} drives",
                    t.0
                ),
            );
        }
    }

    /// The next LVB value for a writer of `lock` (strictly increasing per lock).
    pub fn next_lvb(&mut self, lock: usize) -> u64 {
        let v = self.next_lvb.entry(lock).or_insert(0);
        *v += 1;
        *v
    }

    /// A release that carried LVB `v` completed (majority) at `t`.
    pub fn release_wrote(&mut self, lock: usize, t: Nanos, v: u64) {
        self.written.entry(lock).or_default().push((t, v));
    }

    /// An LVB read of `lock` started at `started` returned `v` at `t`.
    pub fn lvb_read(&mut self, host: usize, lock: usize, started: Nanos, t: Nanos, v: u64) {
        if v == u64::MAX {
            return;
        }
        let floor = self
            .written
            .get(&lock)
            .map(|w| {
                w.iter()
                    .filter(|(done, _)| *done < started)
                    .map(|(_, v)| *v)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        // Byte 7 is not carried by the drive: compare what it can store.
        let stored = floor & 0x00FF_FFFF_FFFF_FFFF;
        if v < stored {
            self.report(
                ViolationKind::LvbWentBack,
                t,
                lock,
                host,
                format!("read {v} after a release of {stored} completed"),
            );
        }
    }

    /// An acquire that started at `started` reported its outcome at `t`.
    pub fn acquire_done(&mut self, host: usize, lock: usize, started: Nanos, t: Nanos) {
        if let Some(fe) = self.faults_end {
            let from = started.max(fe);
            if t > from + self.liveness_bound {
                self.report(
                    ViolationKind::Liveness,
                    t,
                    lock,
                    host,
                    format!(
                        "acquire waiting since {} (faults ended {}) finished only at {}",
                        started.0, fe.0, t.0
                    ),
                );
            }
        }
    }

    /// At the end of the run: an acquire started at `started` never finished.
    pub fn acquire_stuck(&mut self, host: usize, lock: usize, started: Nanos, t: Nanos) {
        let from = self.faults_end.map_or(started, |fe| started.max(fe));
        if t > from + self.liveness_bound {
            self.report(
                ViolationKind::Liveness,
                t,
                lock,
                host,
                format!("acquire started at {} never finished", started.0),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Nanos {
        Nanos::from_millis(x)
    }

    #[test]
    fn overlap_of_conflicting_holders_is_found() {
        let mut c = Checker::new(ms(1000));
        c.hold(0, 0, Mode::Exclusive, ms(0), ms(100));
        c.hold(1, 0, Mode::Shared, ms(50), ms(200));
        c.unhold(0, 0, ms(60));
        c.unhold(1, 0, ms(70));
        assert_eq!(c.violation_count(), 1);
        assert_eq!(c.violations()[0].kind, ViolationKind::Exclusion);
    }

    #[test]
    fn shared_holders_and_lapsed_validity_do_not_conflict() {
        let mut c = Checker::new(ms(1000));
        c.hold(0, 0, Mode::Shared, ms(0), ms(100));
        c.hold(1, 0, Mode::Shared, ms(10), ms(100));
        c.unhold(0, 0, ms(50));
        c.unhold(1, 0, ms(50));
        // Host 2 believes past its validity (paused): cut at validity 120.
        c.hold(2, 0, Mode::Exclusive, ms(60), ms(120));
        c.hold(3, 0, Mode::Exclusive, ms(130), ms(300));
        c.unhold(2, 0, ms(500));
        c.unhold(3, 0, ms(200));
        assert_eq!(c.violation_count(), 0, "{:?}", c.violations());
    }

    #[test]
    fn use_checks_validity_and_majority() {
        let mut c = Checker::new(ms(1000));
        c.hold(0, 0, Mode::Exclusive, ms(0), ms(100));
        c.use_lock(0, 0, ms(50), 2, 3);
        assert_eq!(c.violation_count(), 0);
        c.use_lock(0, 0, ms(50), 1, 3);
        c.use_lock(0, 0, ms(100), 3, 3);
        let kinds: Vec<_> = c.violations().iter().map(|v| v.kind).collect();
        assert_eq!(
            kinds,
            vec![
                ViolationKind::UsedWithoutMajority,
                ViolationKind::UsedPastValidity
            ]
        );
    }

    #[test]
    fn lvb_must_not_go_back() {
        let mut c = Checker::new(ms(1000));
        c.release_wrote(0, ms(10), 5);
        c.lvb_read(1, 0, ms(5), ms(6), 0); // started before the release completed
        c.lvb_read(1, 0, ms(11), ms(12), u64::MAX);
        c.lvb_read(1, 0, ms(11), ms(12), 5);
        assert_eq!(c.violation_count(), 0);
        c.lvb_read(1, 0, ms(11), ms(12), 4);
        assert_eq!(c.violations()[0].kind, ViolationKind::LvbWentBack);
    }
}
