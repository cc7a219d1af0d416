//! Acquire: trylock on every drive, hold the lock at a majority (IDM.md §7).
//!
//! Per drive, in one round:
//!
//! - granted → counts (membership sent at the trylock's send time);
//! - busy → send break (succeeds only if the holders expired); a granted break
//!   counts and marks the lock "obtained by break" (read LVB then answers all-ones);
//! - **a trylock that timed out is treated as busy** and gets a break too. Linux's
//!   SCSI midlayer requeues a command whose status is BUSY until the command's
//!   time runs out (`scsi_decide_disposition` → `ADD_TO_MLQUEUE`, also for SG_IO
//!   passthrough), so on a real kernel the drive's "busy, only expired holders"
//!   reaches the host as a timeout. Found with simulated drives behind the kernel's
//!   iSCSI path (`scripts/iscsi-e2e.sh`). The break is safe whatever the timeout
//!   meant: the drive grants it only if every other member expired (a dead drive
//!   times out again and does not count);
//! - already held by this host (a leftover from a crash or lost reply) → refresh
//!   it in the requested class: granted, it counts at once (a restarted holder
//!   takes its lock back before a waiting host can slip in); refused (expired, or
//!   a class that cannot convert) → unlock (with the requested class, then the
//!   other class if the drive says "wrong class"), then trylock again, once per
//!   round;
//! - table full → [`TableCleanup`] on that drive, then trylock again, once per round;
//! - held by another live host, or a break refused → contention: no count;
//! - any other error → no count.
//!
//! The outcome is `Ok` **the moment a majority granted**. The remaining drives are
//! still driven to the end: a late grant joins the held set (it extends the lease),
//! a busy drive still gets its break.
//!
//! When a majority is impossible this round, every drive that granted is unlocked,
//! and so is every drive whose answer is unknown (I/O error or timeout: a timed-out
//! trylock may have been executed). Drives with a command still in flight are
//! unlocked when their reply is a grant or unknown. Then:
//!
//! - no drive showed contention (only I/O or other errors): fail **at once** with
//!   [`LockError::NotIdm`] if a drive refused the IDM opcode, [`LockError::TableFull`]
//!   if a table stayed full, else [`LockError::Io`]. Retrying transport errors is the
//!   transport's business (multipath), not a reason to spin to the deadline;
//! - contention and `no_wait` → [`LockError::Busy`] at once;
//! - contention → back off 0.5–1 ms (seeded jitter from [`LockState::rng`], so racing
//!   hosts drift apart and a run replays) and start a new round.
//!
//! **Deadline.** If the next round would start at or after the deadline, the
//! acquire fails with [`LockError::Busy`]: contention was the cause, and that is what
//! lvmlockd and the old manager report. If the deadline passes while a round is
//! still undecided (drives have not answered), it fails with [`LockError::Timeout`].
//! Either way the drives are released as above before the operation is finished.

use uring_sg::transport::Reply;
use uring_sg::{Class, DriveError, Mode, MutexOp};

use super::table::{CleanupStep, TableCleanup};
use super::{invalid_spec, Actions, LockState, Now, Operation, Tally};
use crate::error::LockError;
use crate::time::Nanos;

/// Shortest backoff between rounds.
pub const BACKOFF_MIN: Nanos = Nanos::from_micros(500);
/// Longest backoff between rounds.
pub const BACKOFF_MAX: Nanos = Nanos::from_micros(1000);

/// What a successful acquire reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Acquired {
    /// Drives that had granted when the majority was reached.
    pub granted: u16,
    /// Some drive was obtained by break.
    pub by_break: bool,
    /// Rounds it took (1 = no retry).
    pub rounds: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// No command outstanding.
    Idle,
    Trylock,
    Break,
    /// Refreshing a leftover membership of this host ("already held": a crashed
    /// predecessor with our host ID, or a lost reply) to take it over at once.
    AdoptLeftover,
    /// Unlocking a leftover membership before trying again; `flipped`: second class.
    UnlockLeftover {
        flipped: bool,
    },
    Cleanup(TableCleanup),
    /// Giving the drive up after a failed round.
    Release,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RoundResult {
    Pending,
    Granted,
    Contention,
    Failed(DriveError),
}

#[derive(Clone, Copy, Debug)]
struct DriveCtx {
    step: Step,
    /// Send time of the outstanding trylock/break.
    sent: Nanos,
    /// The round the drive's current chain belongs to.
    round: u32,
    result: RoundResult,
    retried_leftover: bool,
    cleaned: bool,
}

const IDLE: DriveCtx = DriveCtx {
    step: Step::Idle,
    sent: Nanos::ZERO,
    round: 0,
    result: RoundResult::Pending,
    retried_leftover: false,
    cleaned: false,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    NotStarted,
    Trying,
    Backoff(Nanos),
    Succeeded,
    Failed,
}

/// The acquire operation. See the module docs.
#[derive(Clone, Debug)]
pub struct Acquire {
    mode: Mode,
    deadline: Nanos,
    no_wait: bool,
    phase: Phase,
    round: u32,
    drives: Vec<DriveCtx>,
    outcome: Option<Result<Acquired, LockError>>,
}

impl Acquire {
    /// An acquire in `mode` that gives up at `deadline` (monotonic); with `no_wait`
    /// it fails with [`LockError::Busy`] instead of retrying under contention.
    pub fn new(mode: Mode, deadline: Nanos, no_wait: bool) -> Acquire {
        Acquire {
            mode,
            deadline,
            no_wait,
            phase: Phase::NotStarted,
            round: 0,
            drives: Vec::new(),
            outcome: None,
        }
    }

    fn class(&self) -> Class {
        self.mode.class()
    }

    fn timer(&self) -> Option<Nanos> {
        match self.phase {
            Phase::Trying if self.deadline != Nanos::MAX => Some(self.deadline),
            Phase::Backoff(t) => Some(t),
            _ => None,
        }
    }

    /// The drive's chain belongs to the live round (or to the successful one).
    fn current(&self, d: usize) -> bool {
        self.drives[d].round == self.round && matches!(self.phase, Phase::Trying | Phase::Succeeded)
    }

    fn send_trylock(&mut self, now: Now, st: &LockState, d: usize, a: &mut Actions) {
        let ctx = &mut self.drives[d];
        ctx.step = Step::Trylock;
        ctx.sent = now.mono;
        ctx.round = self.round;
        ctx.result = RoundResult::Pending;
        ctx.retried_leftover = false;
        ctx.cleaned = false;
        a.send(d as u16, st.request(MutexOp::Trylock, self.class(), now));
    }

    fn send_release(&mut self, now: Now, st: &LockState, d: usize, a: &mut Actions) {
        self.drives[d].step = Step::Release;
        a.send(d as u16, st.unlock_request(self.class(), None, now));
    }

    /// A trylock or break on `d` was granted.
    fn granted(&mut self, now: Now, st: &mut LockState, d: usize, by_break: bool, a: &mut Actions) {
        self.drives[d].step = Step::Idle;
        if self.current(d) {
            st.grant(d as u16, self.class(), self.drives[d].sent, by_break);
            self.drives[d].result = RoundResult::Granted;
            self.progress(now, st, a);
        } else {
            // Stale grant: this round was given up. Release it.
            self.send_release(now, st, d, a);
        }
    }

    /// The drive's chain for this round ended without a grant.
    fn settle(&mut self, now: Now, st: &mut LockState, d: usize, r: RoundResult, a: &mut Actions) {
        self.drives[d].step = Step::Idle;
        if self.current(d) {
            self.drives[d].result = r;
            self.progress(now, st, a);
        } else if matches!(r, RoundResult::Failed(e) if e.is_io()) {
            // Unknown answer in a round given up: it may have been granted.
            self.send_release(now, st, d, a);
        } else {
            self.drive_idle(now, st, d, a);
        }
    }

    /// A drive with no command outstanding joins the live round if it missed it.
    fn drive_idle(&mut self, now: Now, st: &LockState, d: usize, a: &mut Actions) {
        if self.phase == Phase::Trying && self.drives[d].round < self.round {
            self.send_trylock(now, st, d, a);
        }
    }

    fn tally(&self) -> Tally {
        let mut t = Tally::new(self.drives.len() as u16);
        for ctx in &self.drives {
            match ctx.result {
                RoundResult::Granted => t.yes(),
                RoundResult::Contention | RoundResult::Failed(_) => t.no(),
                RoundResult::Pending => {}
            }
        }
        t
    }

    fn progress(&mut self, now: Now, st: &mut LockState, a: &mut Actions) {
        if self.phase != Phase::Trying {
            return;
        }
        let t = self.tally();
        if t.reached() {
            self.phase = Phase::Succeeded;
            st.mode = Some(self.mode);
            self.outcome = Some(Ok(Acquired {
                granted: t.yes_count(),
                by_break: st.broken,
                rounds: self.round,
            }));
        } else if t.impossible() {
            self.round_failed(now, st, None, a);
        }
    }

    /// Gives up this round: release granted and unknown drives, then decide.
    /// `forced`: the error to fail with regardless (deadline passed mid-round).
    fn round_failed(
        &mut self,
        now: Now,
        st: &mut LockState,
        forced: Option<LockError>,
        a: &mut Actions,
    ) {
        let contention = self
            .drives
            .iter()
            .any(|c| c.result == RoundResult::Contention);
        let err = if let Some(e) = forced {
            Some(e)
        } else if !contention {
            Some(self.hard_error())
        } else if self.no_wait {
            Some(LockError::Busy)
        } else {
            None
        };
        let backoff_end = now.mono + Nanos(st.rng.range(BACKOFF_MIN.0, BACKOFF_MAX.0));
        let err = err.or((backoff_end >= self.deadline).then_some(LockError::Busy));
        self.phase = match err {
            Some(e) => {
                self.outcome = Some(Err(e));
                Phase::Failed
            }
            None => Phase::Backoff(backoff_end),
        };
        for d in 0..self.drives.len() {
            let ctx = self.drives[d];
            if ctx.step != Step::Idle {
                continue; // released, if need be, when its reply arrives
            }
            let unknown = matches!(ctx.result, RoundResult::Failed(e) if e.is_io());
            if ctx.result == RoundResult::Granted || unknown {
                st.drop_drive(d as u16);
                self.send_release(now, st, d, a);
            }
        }
        if st.held_count() == 0 {
            st.broken = false;
        }
    }

    /// The error of a round that failed without contention.
    fn hard_error(&self) -> LockError {
        let errs = self.drives.iter().filter_map(|c| match c.result {
            RoundResult::Failed(e) => Some(e),
            _ => None,
        });
        let mut first = None;
        let mut full = false;
        for e in errs {
            match e {
                DriveError::InvalidOpcode => return LockError::NotIdm,
                DriveError::TableFull
                | DriveError::HostTableFull
                | DriveError::MutexHostListFull => full = true,
                _ => {}
            }
            first = first.or(Some(e));
        }
        match (full, first) {
            (true, _) => LockError::TableFull,
            (false, Some(e)) => LockError::Io(e),
            (false, None) => LockError::Io(DriveError::Malformed),
        }
    }

    fn on_trylock_error(
        &mut self,
        now: Now,
        st: &mut LockState,
        d: usize,
        e: DriveError,
        a: &mut Actions,
    ) {
        let live_round = self.current(d);
        let ctx = &mut self.drives[d];
        match e {
            DriveError::Busy if ctx.step == Step::Trylock => {
                ctx.step = Step::Break;
                ctx.sent = now.mono;
                a.send(d as u16, st.request(MutexOp::Break, self.class(), now));
            }
            DriveError::Timeout if ctx.step == Step::Trylock && live_round => {
                ctx.step = Step::Break;
                ctx.sent = now.mono;
                a.send(d as u16, st.request(MutexOp::Break, self.class(), now));
            }
            DriveError::AlreadyHeld if !ctx.retried_leftover => {
                ctx.retried_leftover = true;
                ctx.step = Step::AdoptLeftover;
                ctx.sent = now.mono;
                a.send(d as u16, st.request(MutexOp::Refresh, self.class(), now));
            }
            DriveError::TableFull if !ctx.cleaned => {
                ctx.cleaned = true;
                let c = TableCleanup::new();
                ctx.step = Step::Cleanup(c);
                a.send(d as u16, c.first_request());
            }
            DriveError::Busy | DriveError::HeldByOther => {
                self.settle(now, st, d, RoundResult::Contention, a)
            }
            e => self.settle(now, st, d, RoundResult::Failed(e), a),
        }
    }

    /// After the leftover unlock or table clean-up: trylock again in this round.
    fn retry_trylock(&mut self, now: Now, st: &mut LockState, d: usize, a: &mut Actions) {
        if self.current(d) {
            let ctx = &mut self.drives[d];
            ctx.step = Step::Trylock;
            ctx.sent = now.mono;
            a.send(d as u16, st.request(MutexOp::Trylock, self.class(), now));
        } else {
            self.drives[d].step = Step::Idle;
            self.drive_idle(now, st, d, a);
        }
    }
}

impl Operation for Acquire {
    type Output = Acquired;

    fn start(&mut self, now: Now, st: &mut LockState, a: &mut Actions) {
        let n = st.spec.n_drives;
        if let Some(e) = invalid_spec(st) {
            self.phase = Phase::Failed;
            self.outcome = Some(Err(e));
            return;
        }
        if st.mode.is_some() || st.held_count() > 0 {
            self.phase = Phase::Failed;
            self.outcome = Some(Err(LockError::InvalidArgument("lock already held")));
            return;
        }
        st.broken = false;
        st.lvb = None;
        st.last_renewal = None;
        self.drives = vec![IDLE; n as usize];
        self.round = 1;
        self.phase = Phase::Trying;
        for d in 0..n as usize {
            self.send_trylock(now, st, d, a);
        }
        a.timer = self.timer();
    }

    fn on_reply(
        &mut self,
        now: Now,
        st: &mut LockState,
        drive: u16,
        reply: &Reply,
        a: &mut Actions,
    ) {
        let d = drive as usize;
        let Some(ctx) = self.drives.get(d).copied() else {
            a.timer = self.timer();
            return;
        };
        match (ctx.step, reply.result) {
            (Step::Idle, _) => {} // no command outstanding: contract violation, ignore
            (Step::Trylock, Ok(())) => self.granted(now, st, d, false, a),
            (Step::Break, Ok(())) => self.granted(now, st, d, true, a),
            (Step::Trylock | Step::Break, Err(e)) => self.on_trylock_error(now, st, d, e, a),
            (Step::AdoptLeftover, Ok(())) => self.granted(now, st, d, false, a),
            (Step::AdoptLeftover, Err(_)) => {
                // Expired, or of the other class and not convertible: give it up
                // and trylock afresh.
                self.drives[d].step = Step::UnlockLeftover { flipped: false };
                a.send(drive, st.unlock_request(self.class(), None, now));
            }
            (Step::UnlockLeftover { flipped }, r) => match r {
                Ok(()) | Err(DriveError::NotHeld) => self.retry_trylock(now, st, d, a),
                Err(DriveError::WrongClass) if !flipped => {
                    let other = match self.class() {
                        Class::SharedProtectedRead => Class::Exclusive,
                        _ => Class::SharedProtectedRead,
                    };
                    self.drives[d].step = Step::UnlockLeftover { flipped: true };
                    a.send(drive, st.unlock_request(other, None, now));
                }
                Err(e) => self.settle(now, st, d, RoundResult::Failed(e), a),
            },
            (Step::Cleanup(mut c), _) => match c.on_reply(now, st, reply) {
                CleanupStep::Send(req) => {
                    self.drives[d].step = Step::Cleanup(c);
                    a.send(drive, req);
                }
                CleanupStep::Done => self.retry_trylock(now, st, d, a),
                CleanupStep::Failed(_) => {
                    self.settle(now, st, d, RoundResult::Failed(DriveError::TableFull), a)
                }
            },
            (Step::Release, _) => {
                self.drives[d].step = Step::Idle;
                self.drive_idle(now, st, d, a);
            }
        }
        a.timer = self.timer();
    }

    fn on_timer(&mut self, now: Now, st: &mut LockState, a: &mut Actions) {
        match self.phase {
            Phase::Trying if now.mono >= self.deadline => {
                self.round_failed(now, st, Some(LockError::Timeout), a);
            }
            Phase::Backoff(t) if now.mono >= t => {
                if now.mono >= self.deadline {
                    self.phase = Phase::Failed;
                    self.outcome = Some(Err(LockError::Busy));
                } else {
                    self.round += 1;
                    self.phase = Phase::Trying;
                    for d in 0..self.drives.len() {
                        self.drives[d].result = RoundResult::Pending;
                        if self.drives[d].step == Step::Idle {
                            self.send_trylock(now, st, d, a);
                        }
                    }
                }
            }
            _ => {}
        }
        a.timer = self.timer();
    }

    fn outcome(&mut self) -> Option<Result<Acquired, LockError>> {
        self.outcome.take()
    }

    fn finished(&self) -> bool {
        matches!(self.phase, Phase::Succeeded | Phase::Failed)
            && self.drives.iter().all(|c| c.step == Step::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use uring_sg::MutexOp::*;

    fn setup(n: u16, no_wait: bool) -> (Acquire, LockState, Actions) {
        let mut st = LockState::new(spec(n), 42);
        let mut op = Acquire::new(Mode::Exclusive, Nanos::from_millis(100), no_wait);
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        (op, st, a)
    }

    fn reply(op: &mut Acquire, st: &mut LockState, ms: u64, d: u16, r: Reply) -> Actions {
        let mut a = Actions::new();
        op.on_reply(at(ms), st, d, &r, &mut a);
        a
    }

    #[test]
    fn majority_at_1_2_3_4_5_8_drives() {
        for n in [1u16, 2, 3, 4, 5, 8] {
            let (mut op, mut st, a) = setup(n, false);
            let want: Vec<_> = (0..n).map(|d| (d, Trylock)).collect();
            assert_eq!(ops(&a), want);
            assert_eq!(a.timer, Some(Nanos::from_millis(100)));
            let m = n / 2 + 1;
            for d in 0..m {
                assert!(op.outcome().is_none(), "n={n} d={d}");
                let a = reply(&mut op, &mut st, 1, d, ok());
                assert!(a.commands.is_empty());
            }
            let out = op.outcome().unwrap().unwrap();
            assert_eq!(out.granted, m);
            assert_eq!(out.rounds, 1);
            assert_eq!(st.mode, Some(Mode::Exclusive));
            assert_eq!(st.held_count(), m);
            assert!(op.outcome().is_none(), "taken once");
            assert_eq!(op.finished(), m == n, "n={n}");
        }
    }

    #[test]
    fn late_grant_joins_held_set() {
        let (mut op, mut st, _) = setup(3, false);
        reply(&mut op, &mut st, 1, 0, ok());
        let a = reply(&mut op, &mut st, 2, 2, ok());
        assert_eq!(a.timer, None);
        assert!(op.outcome().unwrap().is_ok());
        assert!(!op.finished());
        let a = reply(&mut op, &mut st, 9, 1, ok());
        assert!(a.commands.is_empty());
        assert!(op.finished());
        assert_eq!(st.held_count(), 3);
        // The late grant's send time is the trylock's emit time, not the reply time.
        assert_eq!(st.drives[1].sent, Nanos::ZERO);
    }

    #[test]
    fn busy_goes_to_break_and_marks_broken() {
        let (mut op, mut st, _) = setup(3, false);
        let a = reply(&mut op, &mut st, 1, 0, err(DriveError::Busy));
        assert_eq!(ops(&a), vec![(0, Break)]);
        reply(&mut op, &mut st, 2, 1, ok());
        let a = reply(&mut op, &mut st, 3, 0, ok());
        assert!(a.commands.is_empty());
        let out = op.outcome().unwrap().unwrap();
        assert!(out.by_break);
        assert!(st.broken && st.drives[0].by_break);
        // The break's send time (1 ms) is what the lease trusts.
        assert_eq!(st.drives[0].sent, Nanos::from_millis(1));
    }

    #[test]
    fn a_timed_out_trylock_gets_a_break_as_busy_does() {
        // The kernel turns a drive's BUSY into a timeout (it requeues BUSY).
        let (mut op, mut st, _) = setup(3, false);
        let a = reply(&mut op, &mut st, 1, 0, err(DriveError::Timeout));
        assert_eq!(ops(&a), vec![(0, Break)]);
        let a = reply(&mut op, &mut st, 2, 1, err(DriveError::Timeout));
        assert_eq!(ops(&a), vec![(1, Break)]);
        reply(&mut op, &mut st, 3, 0, ok());
        reply(&mut op, &mut st, 3, 1, ok());
        let out = op.outcome().unwrap().unwrap();
        assert!(out.by_break);
        // A break that times out as well does not count.
        let (mut op, mut st, _) = setup(1, false);
        reply(&mut op, &mut st, 1, 0, err(DriveError::Timeout));
        let a = reply(&mut op, &mut st, 2, 0, err(DriveError::Timeout));
        assert!(!ops(&a).contains(&(0, Break)));
        assert!(matches!(op.outcome(), Some(Err(_))));
    }

    #[test]
    fn already_held_is_adopted_by_refresh() {
        let (mut op, mut st, _) = setup(1, false);
        let a = reply(&mut op, &mut st, 1, 0, err(DriveError::AlreadyHeld));
        assert_eq!(ops(&a), vec![(0, Refresh)]);
        reply(&mut op, &mut st, 2, 0, ok());
        assert!(op.outcome().unwrap().is_ok());
        assert!(op.finished());
        assert_eq!(
            st.drives[0].sent,
            Nanos::from_millis(1),
            "the refresh's send time"
        );
    }

    #[test]
    fn already_held_that_cannot_be_adopted_unlocks_then_trylocks() {
        let (mut op, mut st, _) = setup(1, false);
        let a = reply(&mut op, &mut st, 1, 0, err(DriveError::AlreadyHeld));
        assert_eq!(ops(&a), vec![(0, Refresh)]);
        let a = reply(&mut op, &mut st, 1, 0, err(DriveError::Expired));
        assert_eq!(ops(&a), vec![(0, Unlock)]);
        let a = reply(&mut op, &mut st, 2, 0, err(DriveError::WrongClass));
        assert_eq!(ops(&a), vec![(0, Unlock)]);
        assert_eq!(record_to(&a, 0).unwrap().class, Class::SharedProtectedRead);
        let a = reply(&mut op, &mut st, 3, 0, ok());
        assert_eq!(ops(&a), vec![(0, Trylock)]);
        reply(&mut op, &mut st, 4, 0, ok());
        assert!(op.outcome().unwrap().is_ok());
        assert!(op.finished());
        assert_eq!(st.drives[0].sent, Nanos::from_millis(3));
    }

    #[test]
    fn split_vote_releases_backs_off_and_retries() {
        let (mut op, mut st, _) = setup(3, false);
        reply(&mut op, &mut st, 1, 0, ok());
        reply(&mut op, &mut st, 1, 1, err(DriveError::HeldByOther));
        let a = reply(&mut op, &mut st, 2, 2, err(DriveError::HeldByOther));
        // Majority impossible: the granted drive is unlocked, and a backoff timer set.
        assert_eq!(ops(&a), vec![(0, Unlock)]);
        let t = a.timer.unwrap();
        assert!(
            t >= Nanos::from_millis(2) + BACKOFF_MIN && t <= Nanos::from_millis(2) + BACKOFF_MAX
        );
        assert_eq!(st.held_count(), 0);
        assert!(op.outcome().is_none());
        // Early or spurious timer: nothing.
        let mut a = Actions::new();
        op.on_timer(at(2), &mut st, &mut a);
        assert!(a.commands.is_empty());
        assert_eq!(a.timer, Some(t));
        // Timer due while drive 0's unlock is still out: drives 1 and 2 retry now.
        let mut a = Actions::new();
        op.on_timer(
            Now {
                mono: t,
                wall_ms: 0,
            },
            &mut st,
            &mut a,
        );
        assert_eq!(ops(&a), vec![(1, Trylock), (2, Trylock)]);
        // The unlock answers: drive 0 joins the new round.
        let a = reply(&mut op, &mut st, 4, 0, ok());
        assert_eq!(ops(&a), vec![(0, Trylock)]);
        reply(&mut op, &mut st, 5, 0, ok());
        reply(&mut op, &mut st, 5, 1, ok());
        let out = op.outcome().unwrap().unwrap();
        assert_eq!(out.rounds, 2);
        reply(&mut op, &mut st, 6, 2, err(DriveError::HeldByOther));
        assert!(op.finished());
        assert_eq!(st.held_count(), 2);
    }

    #[test]
    fn jitter_replays_for_a_seed() {
        let timers: Vec<_> = (0..2)
            .map(|_| {
                let (mut op, mut st, _) = setup(1, false);
                reply(&mut op, &mut st, 1, 0, err(DriveError::HeldByOther)).timer
            })
            .collect();
        assert_eq!(timers[0], timers[1]);
    }

    #[test]
    fn no_wait_contention_is_busy_at_once() {
        let (mut op, mut st, _) = setup(3, true);
        reply(&mut op, &mut st, 1, 0, ok());
        let a = reply(&mut op, &mut st, 1, 1, err(DriveError::HeldByOther));
        assert!(a.commands.is_empty());
        let a = reply(&mut op, &mut st, 1, 2, err(DriveError::HeldByOther));
        assert_eq!(ops(&a), vec![(0, Unlock)]);
        assert_eq!(a.timer, None);
        assert_eq!(op.outcome(), Some(Err(LockError::Busy)));
        assert!(!op.finished());
        reply(&mut op, &mut st, 2, 0, ok());
        assert!(op.finished());
        assert_eq!(st.mode, None);
    }

    #[test]
    fn break_refused_counts_as_contention() {
        let (mut op, mut st, _) = setup(1, true);
        reply(&mut op, &mut st, 1, 0, err(DriveError::Busy));
        reply(&mut op, &mut st, 2, 0, err(DriveError::HeldByOther));
        assert_eq!(op.outcome(), Some(Err(LockError::Busy)));
        assert!(op.finished());
    }

    #[test]
    fn deadline_mid_round_is_timeout_and_releases_late_grant() {
        let (mut op, mut st, _) = setup(3, false);
        reply(&mut op, &mut st, 1, 0, ok());
        let mut a = Actions::new();
        op.on_timer(at(100), &mut st, &mut a);
        assert_eq!(ops(&a), vec![(0, Unlock)]);
        assert_eq!(op.outcome(), Some(Err(LockError::Timeout)));
        // Late grant after the failure is unlocked, a late timeout too (unknown).
        let a = reply(&mut op, &mut st, 101, 1, ok());
        assert_eq!(ops(&a), vec![(1, Unlock)]);
        let a = reply(&mut op, &mut st, 101, 2, err(DriveError::Timeout));
        assert_eq!(ops(&a), vec![(2, Unlock)]);
        for d in 0..3 {
            reply(&mut op, &mut st, 102, d, ok());
        }
        assert!(op.finished());
        assert_eq!(st.held_count(), 0);
        assert_eq!(st.mode, None);
    }

    #[test]
    fn contention_until_deadline_is_busy() {
        let (mut op, mut st, _) = setup(1, false);
        let mut now = 1;
        loop {
            let a = reply(&mut op, &mut st, now, 0, err(DriveError::HeldByOther));
            if let Some(out) = op.outcome() {
                assert_eq!(out, Err(LockError::Busy));
                break;
            }
            let t = a.timer.unwrap();
            let mut a = Actions::new();
            op.on_timer(
                Now {
                    mono: t,
                    wall_ms: 0,
                },
                &mut st,
                &mut a,
            );
            if let Some(out) = op.outcome() {
                assert_eq!(out, Err(LockError::Busy));
                break;
            }
            assert_eq!(ops(&a), vec![(0, Trylock)]);
            now = t.as_millis() + 1;
            assert!(now < 200, "must stop at the deadline");
        }
        assert!(op.finished());
    }

    #[test]
    fn io_only_failure_is_io_and_releases_unknown() {
        let (mut op, mut st, _) = setup(3, false);
        reply(&mut op, &mut st, 1, 0, ok());
        // A timed-out trylock gets a break (a hidden BUSY); it times out too.
        let a = reply(&mut op, &mut st, 1, 1, err(DriveError::Timeout));
        assert_eq!(ops(&a), vec![(1, Break)]);
        reply(&mut op, &mut st, 1, 2, err(DriveError::Io(5)));
        let a = reply(&mut op, &mut st, 1, 1, err(DriveError::Timeout));
        let mut got = ops(&a);
        got.sort_by_key(|(d, _)| *d);
        assert_eq!(got, vec![(0, Unlock), (1, Unlock), (2, Unlock)]);
        assert_eq!(op.outcome(), Some(Err(LockError::Io(DriveError::Timeout))));
        assert_eq!(a.timer, None);
    }

    #[test]
    fn not_idm_drives() {
        let (mut op, mut st, _) = setup(2, false);
        reply(&mut op, &mut st, 1, 0, err(DriveError::InvalidOpcode));
        assert_eq!(op.outcome(), Some(Err(LockError::NotIdm)));
        reply(&mut op, &mut st, 1, 1, err(DriveError::InvalidOpcode));
        assert!(op.finished());
    }

    #[test]
    fn table_full_cleans_up_then_retries() {
        use uring_sg::{HostId, LockId, MutexState};
        let (mut op, mut st, _) = setup(1, false);
        let a = reply(&mut op, &mut st, 1, 0, err(DriveError::TableFull));
        assert!(matches!(a.commands[..], [(0, Request::ReadTable { .. })]));
        let victim: LockId = "stale".parse().unwrap();
        let recs = [table_rec(
            victim,
            HostId::default(),
            MutexState::Unlocked,
            Class::Exclusive,
            0,
            1,
        )];
        let a = reply(&mut op, &mut st, 2, 0, data(table_data(&recs, 2)));
        assert_eq!(ops(&a), vec![(0, Destroy)]);
        assert_eq!(record_to(&a, 0).unwrap().lock_id, victim);
        let a = reply(&mut op, &mut st, 3, 0, ok());
        assert_eq!(ops(&a), vec![(0, Trylock)]);
        // Still full after one clean-up: give up with TableFull.
        reply(&mut op, &mut st, 4, 0, err(DriveError::TableFull));
        assert_eq!(op.outcome(), Some(Err(LockError::TableFull)));
        assert!(op.finished());
    }

    #[test]
    fn trylock_record_fields() {
        let (_, _, a) = setup(2, false);
        let r = record_to(&a, 1).unwrap();
        assert_eq!(r.class, Class::Exclusive);
        assert_eq!(r.countdown_ms, 1000);
        assert_eq!(r.time_ms, at(0).wall_ms);
        assert_eq!(r.lock_id, spec(2).lock_id);
        assert_eq!(r.host_id, spec(2).host_id);
    }

    #[test]
    fn acquire_of_held_lock_is_invalid() {
        let mut st = LockState::new(spec(1), 1);
        st.mode = Some(Mode::Shared);
        let mut op = Acquire::new(Mode::Shared, Nanos::MAX, false);
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        assert!(a.commands.is_empty());
        assert!(matches!(
            op.outcome(),
            Some(Err(LockError::InvalidArgument(_)))
        ));
        assert!(op.finished());
    }

    /// Seeded random drive answers (delivered in random order, timers fired when
    /// nothing is in flight): the operation never has two commands out on one drive,
    /// always finishes, delivers one outcome, and leaves the lock held by a majority
    /// on success and not held at all on failure.
    #[test]
    fn random_answers_keep_invariants() {
        use crate::protocol::XorShift64;
        let answers = [
            Ok(()),
            Ok(()),
            Ok(()),
            Ok(()),
            Ok(()),
            Ok(()),
            Err(DriveError::Busy),
            Err(DriveError::HeldByOther),
            Err(DriveError::AlreadyHeld),
            Err(DriveError::NotHeld),
            Err(DriveError::WrongClass),
            Err(DriveError::TableFull),
            Err(DriveError::Timeout),
            Err(DriveError::Io(5)),
        ];
        let (mut wins, mut losses, mut retried) = (0, 0, 0);
        for seed in 1..400u64 {
            let mut rng = XorShift64::new(seed);
            let n = rng.range(1, 8) as u16;
            let mut st = LockState::new(spec(n), seed);
            let mut op = Acquire::new(Mode::Shared, Nanos::from_millis(20), rng.range(0, 1) == 1);
            let mut a = Actions::new();
            op.start(at(0), &mut st, &mut a);
            let mut inflight: Vec<(u16, Request)> = a.commands.clone();
            let mut timer = a.timer;
            let mut now = Nanos::ZERO;
            let mut outcomes = Vec::new();
            for _ in 0..10_000 {
                if let Some(o) = op.outcome() {
                    outcomes.push(o);
                }
                if inflight.is_empty() {
                    match timer {
                        Some(t) => now = now.max(t),
                        None => break,
                    }
                    a.clear();
                    op.on_timer(
                        Now {
                            mono: now,
                            wall_ms: 0,
                        },
                        &mut st,
                        &mut a,
                    );
                } else {
                    now = now + Nanos::from_micros(rng.range(0, 300));
                    let i = rng.range(0, inflight.len() as u64 - 1) as usize;
                    let (d, req) = inflight.swap_remove(i);
                    let reply = match req {
                        Request::ReadTable { .. } => data(Vec::new()),
                        _ => match answers[rng.range(0, answers.len() as u64 - 1) as usize] {
                            Ok(()) => ok(),
                            Err(e) => err(e),
                        },
                    };
                    a.clear();
                    op.on_reply(
                        Now {
                            mono: now,
                            wall_ms: 0,
                        },
                        &mut st,
                        d,
                        &reply,
                        &mut a,
                    );
                }
                for (d, _) in &a.commands {
                    assert!(
                        inflight.iter().all(|(o, _)| o != d),
                        "seed {seed}: two commands out on drive {d}"
                    );
                }
                inflight.extend(a.commands.iter().cloned());
                timer = a.timer;
            }
            if let Some(o) = op.outcome() {
                outcomes.push(o);
            }
            assert!(op.finished(), "seed {seed}: not finished");
            assert_eq!(outcomes.len(), 1, "seed {seed}: {outcomes:?}");
            match outcomes[0] {
                Ok(out) => {
                    wins += 1;
                    retried += usize::from(out.rounds > 1);
                    assert_eq!(st.mode, Some(Mode::Shared));
                    assert!(st.held_count() >= st.spec.majority(), "seed {seed}");
                }
                Err(_) => {
                    losses += 1;
                    assert_eq!(st.mode, None, "seed {seed}");
                    assert_eq!(st.held_count(), 0, "seed {seed}");
                }
            }
        }
        assert!(
            wins > 0 && losses > 0 && retried > 0,
            "{wins} {losses} {retried}"
        );
    }

    use uring_sg::transport::Request;
}
