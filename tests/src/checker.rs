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
//!    a release with value `v` completed must return `>= v` or all-ones, **unless
//!    drives lost the value** (the documented IDM limit: the LVB lives only in the
//!    drives' tables). The checker mirrors, from drive events, which drives store
//!    which value of each lock ([`Checker::drive_lvb`], [`Checker::drive_power_cycle`]).
//!    A release that completes records the set `W` of drives that then store a value
//!    `>= v`; a read may return less only if so many drives of `W` lost the lock's
//!    mutex since (power cycle, or destroy by a table clean-up) that the rest no
//!    longer meets every majority: fewer than `n - majority + 1` drives of `W` kept
//!    it. Such excused reads are counted ([`Checker::lvb_excused`]). A release that
//!    completes with its value on fewer than a majority of drives, where no drive
//!    lost the mutex while the release ran, is itself a violation
//!    ([`ViolationKind::LvbNotStored`]): that is the engine claiming a majority it
//!    does not have.
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
    /// (3) A release reported success with its LVB on fewer than a majority of
    /// drives, and no drive lost the mutex while it ran.
    LvbNotStored,
    /// (4) An acquire did not finish within the bound after faults stopped.
    Liveness,
    /// (5) A caller was told "acquired" (or "converted") with a lease that was no
    /// longer valid for the fence margin.
    SuccessOnLapsedLease,
    /// (6) A lockspace was fenced although only a minority of drives misbehaved
    /// (checked in runs whose faults touch a minority of drives only).
    FalseFence,
    /// (7) A release, LVB read or host count took longer than the majority's
    /// replies plus a bound while only a minority of drives misbehaved.
    SlowOperation,
    /// (8) Caller work started on a lock while its due renewal waited.
    RenewalStarved,
    /// (9) A release in a fenced lockspace reported success.
    FencedReleaseSucceeded,
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

/// A completed release that wrote an LVB.
#[derive(Clone, Copy, Debug)]
struct Written {
    /// When the release was asked for (its holder stopped using the lock).
    started: Nanos,
    /// Completion time.
    done: Nanos,
    /// The value (as the drives store it: byte 7 cleared).
    value: u64,
    /// Bit mask of the drives that stored a value `>= value` at completion.
    on: u64,
    /// Index of the cause of the losses that already, while the release ran,
    /// left the value on fewer than a majority (see [`LossCause::index`]).
    lost_early: Option<usize>,
}

/// An LVB read made while its host held the lock.
#[derive(Clone, Copy, Debug)]
struct HolderRead {
    host: usize,
    /// When the reader's hold began.
    hold_start: Nanos,
    /// When the read returned.
    t: Nanos,
    value: u64,
}

/// Holder reads kept per lock for the later check.
const HOLDER_READS_KEPT: usize = 32;

/// Why a drive lost a lock's mutex entry (and so its LVB).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LossCause {
    /// The drive power-cycled: its whole table is gone.
    PowerCycle,
    /// A host destroyed the entry: the engine's table clean-up on "table full".
    Destroy,
}

impl LossCause {
    /// Index in the per-cause counters: power cycle 0, destroy 1.
    pub fn index(self) -> usize {
        match self {
            LossCause::PowerCycle => 0,
            LossCause::Destroy => 1,
        }
    }
}

/// The part of an LVB a drive stores (byte 7 is not carried).
const STORED_MASK: u64 = 0x00FF_FFFF_FFFF_FFFF;

/// Most violations kept per run (the count is still exact).
pub const MAX_KEPT: usize = 64;

/// The invariant checker of one run.
#[derive(Default)]
pub struct Checker {
    open: BTreeMap<(usize, usize), Interval>,
    recent: BTreeMap<usize, VecDeque<Interval>>,
    /// Per lock: completed releases that wrote an LVB.
    written: BTreeMap<usize, Vec<Written>>,
    /// Per lock, per drive: the LVB the drive stores now (`None`: no mutex entry).
    stored: BTreeMap<usize, Vec<Option<u64>>>,
    /// Per lock, per drive: when the drive last lost the lock's mutex entry.
    lost_at: BTreeMap<usize, Vec<Option<(Nanos, LossCause)>>>,
    /// Drives per lock (every lock spans every drive).
    n_drives: usize,
    lvb_excused: [u64; 2],
    lvb_losses: [u64; 2],
    next_lvb: BTreeMap<usize, u64>,
    /// Per lock: recent LVB reads by a holder (checked again when a release
    /// that began before the reader's hold completes after the read).
    holder_reads: BTreeMap<usize, VecDeque<HolderRead>>,
    violations: Vec<Violation>,
    count: usize,
    /// Faults stopped at this time (liveness applies from then).
    pub faults_end: Option<Nanos>,
    /// The liveness bound.
    pub liveness_bound: Nanos,
    /// Only a minority of drives misbehaves in this run: a fence, or a slow
    /// release / read / count, is a violation.
    pub minority_only: bool,
}

impl Checker {
    /// A checker with this liveness bound, for locks spanning `n_drives` drives
    /// (at most 64).
    pub fn new(liveness_bound: Nanos, n_drives: usize) -> Checker {
        Checker {
            liveness_bound,
            n_drives: n_drives.min(64),
            ..Checker::default()
        }
    }

    /// LVB reads that returned less than the last completed release, excused
    /// because drives lost the value (see the module docs), by cause: `[power
    /// cycle, destroy by clean-up]` (a read excused by losses of both causes counts
    /// as destroy).
    pub fn lvb_excused(&self) -> [u64; 2] {
        self.lvb_excused
    }

    /// Times a drive lost a lock's mutex entry holding a non-zero LVB, by cause:
    /// `[power cycle, destroy by clean-up]`.
    pub fn lvb_losses(&self) -> [u64; 2] {
        self.lvb_losses
    }

    fn majority(&self) -> usize {
        self.n_drives / 2 + 1
    }

    /// Drive `drive` executed a command on `lock` at `t`; its table now stores
    /// `value` for the lock (`None`: it has no entry for the lock, so a command
    /// destroyed it).
    pub fn drive_lvb(&mut self, lock: usize, drive: usize, t: Nanos, value: Option<u64>) {
        self.set_stored(lock, drive, t, value, LossCause::Destroy);
    }

    fn set_stored(
        &mut self,
        lock: usize,
        drive: usize,
        t: Nanos,
        value: Option<u64>,
        cause: LossCause,
    ) {
        let n = self.n_drives;
        let stored = self.stored.entry(lock).or_insert_with(|| vec![None; n]);
        let Some(slot) = stored.get_mut(drive) else {
            return;
        };
        let had = *slot;
        *slot = value.map(|v| v & STORED_MASK);
        if had.is_none() || value.is_some() {
            return;
        }
        if had.is_some_and(|v| v != 0) {
            self.lvb_losses[cause.index()] += 1;
        }
        let lost = self.lost_at.entry(lock).or_insert_with(|| vec![None; n]);
        if let Some(l) = lost.get_mut(drive) {
            *l = Some((t, cause));
        }
    }

    /// Drive `drive` power-cycled at `t`: every mutex entry it had is lost.
    pub fn drive_power_cycle(&mut self, drive: usize, t: Nanos) {
        let locks: Vec<usize> = self.stored.keys().copied().collect();
        for lock in locks {
            self.set_stored(lock, drive, t, None, LossCause::PowerCycle);
        }
    }

    /// The cause, if `drive` lost `lock`'s entry within `[from, to]`.
    fn lost_between(&self, lock: usize, drive: usize, from: Nanos, to: Nanos) -> Option<LossCause> {
        self.lost_at
            .get(&lock)
            .and_then(|l| l.get(drive).copied().flatten())
            .filter(|(at, _)| from <= *at && *at <= to)
            .map(|(_, c)| c)
    }

    /// Reports a violation found by the harness itself (invariants 5 to 9).
    pub fn violation(
        &mut self,
        kind: ViolationKind,
        at: Nanos,
        lock: usize,
        host: usize,
        detail: String,
    ) {
        self.report(kind, at, lock, host, detail);
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

    /// A release of `host` that started at `started` and carried LVB `v` completed
    /// (majority) at `t`.
    pub fn release_wrote(&mut self, host: usize, lock: usize, started: Nanos, t: Nanos, v: u64) {
        let value = v & STORED_MASK;
        let mut on = 0u64;
        let mut count = 0;
        let mut lost = 0;
        let mut lost_early = None;
        for d in 0..self.n_drives {
            let has = self
                .stored
                .get(&lock)
                .and_then(|s| s.get(d).copied().flatten())
                .is_some_and(|x| x >= value);
            if has {
                on |= 1 << d;
                count += 1;
            } else if let Some(c) = self.lost_between(lock, d, started, t) {
                lost += 1;
                lost_early = lost_early.max(Some(c.index()));
            }
        }
        if count < self.majority() && count + lost >= self.majority() {
            // Stored on a majority, then lost on some drive before the release's
            // answer came back: the documented limit, accounted at the read.
        } else if count < self.majority() {
            self.report(
                ViolationKind::LvbNotStored,
                t,
                lock,
                host,
                format!(
                    "release of {value} completed with the value on {count} of {} drives",
                    self.n_drives
                ),
            );
        }
        let lost_early = lost_early.filter(|_| count < self.majority());
        // A holder that read before this release completed must still have seen
        // it if the release began before that holder's hold did.
        let missed: Vec<HolderRead> = self
            .holder_reads
            .get(&lock)
            .map(|q| {
                q.iter()
                    .filter(|r| started < r.hold_start && r.value < value && lost_early.is_none())
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for r in missed {
            // Drives that lost the lock's entry since the release was asked for
            // (power cycle, clean-up) can leave a majority without the value: the
            // documented limit, as for reads after the completion.
            let mut kept = 0;
            let mut cause = None;
            for d in 0..self.n_drives {
                match self.lost_between(lock, d, started, r.t) {
                    None => kept += 1,
                    Some(c) => cause = cause.max(Some(c.index())),
                }
            }
            if let (true, Some(c)) = (kept < self.n_drives - self.majority() + 1, cause) {
                self.lvb_excused[c] += 1;
                continue;
            }
            self.report(
                ViolationKind::LvbWentBack,
                r.t,
                lock,
                r.host,
                format!(
                    "holder (since {}) read {} at {}; a release of {value} asked for at {} \
                     before that hold began completed at {}",
                    r.hold_start.0, r.value, r.t.0, started.0, t.0
                ),
            );
        }
        self.written.entry(lock).or_default().push(Written {
            started,
            done: t,
            value,
            on,
            lost_early,
        });
    }

    /// An LVB read of `lock` started at `started` returned `v` at `t`.
    ///
    /// The value must be at least that of every release that completed before the
    /// read started and, when the reader holds the lock, of every release asked
    /// for before the reader's hold began (its holder had stopped using the lock:
    /// whatever it stored is the value this holder must see, even if that
    /// release's answer comes back after the read), unless drives lost it.
    pub fn lvb_read(&mut self, host: usize, lock: usize, started: Nanos, t: Nanos, v: u64) {
        if v == u64::MAX {
            return;
        }
        let hold_start = self.open.get(&(lock, host)).map(|iv| iv.start);
        if let Some(hold_start) = hold_start {
            let q = self.holder_reads.entry(lock).or_default();
            if q.len() == HOLDER_READS_KEPT {
                q.pop_front();
            }
            q.push_back(HolderRead {
                host,
                hold_start,
                t,
                value: v,
            });
        }
        let Some(floor) = self.written.get(&lock).and_then(|w| {
            w.iter()
                .filter(|x| x.done < started || hold_start.is_some_and(|h| x.started < h))
                .max_by_key(|x| x.value)
                .copied()
        }) else {
            return;
        };
        if v >= floor.value {
            return;
        }
        // How many drives that stored the value at the release still have it.
        let mut kept = 0;
        let mut cause = floor.lost_early;
        for d in (0..self.n_drives).filter(|&d| floor.on & (1 << d) != 0) {
            match self.lost_between(lock, d, floor.done.min(t), t) {
                None => kept += 1,
                Some(c) => cause = cause.max(Some(c.index())),
            }
        }
        if let (true, Some(c)) = (kept < self.n_drives - self.majority() + 1, cause) {
            self.lvb_excused[c] += 1;
            return;
        }
        self.report(
            ViolationKind::LvbWentBack,
            t,
            lock,
            host,
            format!(
                "read {v} after a release of {} completed (still on {kept} of {} drives)",
                floor.value, self.n_drives
            ),
        );
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
        let mut c = Checker::new(ms(1000), 3);
        c.hold(0, 0, Mode::Exclusive, ms(0), ms(100));
        c.hold(1, 0, Mode::Shared, ms(50), ms(200));
        c.unhold(0, 0, ms(60));
        c.unhold(1, 0, ms(70));
        assert_eq!(c.violation_count(), 1);
        assert_eq!(c.violations()[0].kind, ViolationKind::Exclusion);
    }

    #[test]
    fn shared_holders_and_lapsed_validity_do_not_conflict() {
        let mut c = Checker::new(ms(1000), 3);
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
        let mut c = Checker::new(ms(1000), 3);
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
        let mut c = Checker::new(ms(1000), 3);
        for d in 0..3 {
            c.drive_lvb(0, d, ms(9), Some(5));
        }
        c.release_wrote(0, 0, ms(8), ms(10), 5);
        c.lvb_read(1, 0, ms(5), ms(6), 0); // started before the release completed
        c.lvb_read(1, 0, ms(11), ms(12), u64::MAX);
        c.lvb_read(1, 0, ms(11), ms(12), 5);
        assert_eq!(c.violation_count(), 0);
        c.lvb_read(1, 0, ms(11), ms(12), 4);
        assert_eq!(c.violations()[0].kind, ViolationKind::LvbWentBack);
    }

    #[test]
    fn a_holder_sees_a_release_that_began_before_its_hold_even_if_it_completes_later() {
        let mut c = Checker::new(ms(1000), 3);
        // Host 0 releases (asked at 8); host 1 is granted at 9 on drives host 0
        // already left, reads 4 at 10; host 0's release of 5 completes at 11.
        c.hold(1, 0, Mode::Exclusive, ms(9), ms(900));
        c.lvb_read(1, 0, ms(9), ms(10), 5);
        for d in 0..3 {
            c.drive_lvb(0, d, ms(9), Some(6));
        }
        c.release_wrote(0, 0, ms(8), ms(11), 6);
        assert_eq!(c.violations()[0].kind, ViolationKind::LvbWentBack);
        // A read after the completion is checked at once.
        c.lvb_read(1, 0, ms(12), ms(13), 5);
        assert_eq!(c.violation_count(), 2);
        c.lvb_read(1, 0, ms(12), ms(13), 6);
        assert_eq!(c.violation_count(), 2);
        // A read by a host whose hold began before the release was asked for
        // (an SH holder beside another) is not bound by it.
        let mut c = Checker::new(ms(1000), 3);
        c.hold(1, 0, Mode::Shared, ms(7), ms(900));
        c.lvb_read(1, 0, ms(9), ms(10), 5);
        for d in 0..3 {
            c.drive_lvb(0, d, ms(9), Some(6));
        }
        c.release_wrote(0, 0, ms(8), ms(11), 6);
        assert_eq!(c.violation_count(), 0);
    }

    #[test]
    fn lvb_lost_on_drives_excuses_a_read_only_when_majorities_miss_it() {
        let mut c = Checker::new(ms(1000), 3);
        // Stored on drives 0 and 1 (a bare majority), drive 2 has the old 4.
        c.drive_lvb(0, 0, ms(9), Some(5));
        c.drive_lvb(0, 1, ms(9), Some(5));
        c.drive_lvb(0, 2, ms(1), Some(4));
        c.release_wrote(0, 0, ms(8), ms(10), 5);
        assert_eq!(c.violation_count(), 0);
        // Drive 2 losing its (stale) entry excuses nothing.
        c.drive_power_cycle(2, ms(11));
        c.lvb_read(1, 0, ms(12), ms(13), 4);
        assert_eq!(c.violation_count(), 1);
        // Drive 1 destroys the mutex (table clean-up): {0} no longer meets every
        // majority, a read of 0 or 4 is the documented limit.
        c.drive_lvb(0, 1, ms(14), None);
        c.lvb_read(1, 0, ms(15), ms(16), 0);
        assert_eq!(c.violation_count(), 1);
        assert_eq!(c.lvb_excused(), [0, 1]);
        assert_eq!(c.lvb_losses(), [1, 1]);
    }

    #[test]
    fn release_claiming_a_majority_it_does_not_have_is_caught() {
        let mut c = Checker::new(ms(1000), 3);
        c.drive_lvb(0, 0, ms(9), Some(5));
        c.drive_lvb(0, 1, ms(9), Some(2));
        c.release_wrote(0, 0, ms(8), ms(10), 5);
        assert_eq!(c.violations()[0].kind, ViolationKind::LvbNotStored);
        // Stored on two, one lost it before the answer: the limit, not a bug.
        let mut c = Checker::new(ms(1000), 3);
        c.drive_lvb(0, 0, ms(9), Some(5));
        c.drive_lvb(0, 1, ms(9), Some(5));
        c.drive_power_cycle(1, ms(9));
        c.release_wrote(0, 0, ms(8), ms(10), 5);
        assert_eq!(c.violation_count(), 0);
    }
}
