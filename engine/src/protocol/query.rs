//! Host count and mode of a lock, which this host need not hold (IDM.md §7, the
//! `ilm_get_host_count` and `ilm_get_mode` calls). Both read every drive's table
//! ([`TableScan`]) and answer once every drive answered (a maximum and a vote need
//! all the evidence there is).
//!
//! - **Host count**: per drive, the distinct other hosts whose record of this lock
//!   is held (locked / multiple locked); the answer is the maximum over drives, and
//!   whether any drive holds a live record of ours.
//! - **Mode**: per drive that knows the lock, a vote: exclusive if a live record is
//!   not shared, shared if live records are all shared, unlocked if none is live. The
//!   mode with most votes wins; ties go to the stronger mode (EX, then SH, then
//!   unlocked), the conservative reading for a caller deciding what it may do.
//!
//! Both fail with [`LockError::NotFound`] when no drive knows the lock, and with the
//! drives' error when no drive answered.
//!
//! **A dead minority does not stall them.** Once a majority of the drives answered
//! (or failed), the rest get a grace period as long as the majority took, plus 1 ms
//! ([`QUERY_GRACE_MAX`] at most); drives still silent then are left out. Every live
//! holder holds a majority, and any two majorities intersect, so each one shows on
//! some drive that answered: "another host holds it" and "this host holds it" stay
//! exact; only the maximum and the vote may see fewer records.

use uring_sg::transport::Reply;
use uring_sg::{HostId, Mode, Record};

use super::table::TableScan;
use super::{invalid_spec, Actions, ErrorSummary, LockSpec, LockState, Now, Operation};
use crate::error::LockError;
use crate::time::Nanos;

/// What a host count reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct HostCount {
    /// Other hosts holding the lock (maximum over drives).
    pub others: u32,
    /// This host holds a live record of the lock on some drive.
    pub held_by_self: bool,
}

/// Longest wait for the drives beyond the first majority.
pub const QUERY_GRACE_MAX: Nanos = Nanos::from_millis(100);

/// Common part: scan, count answers, remember the first error.
#[derive(Clone, Debug, Default)]
struct Scan {
    scan: TableScan,
    answered: u32,
    known: bool,
    errors: ErrorSummary,
    done: bool,
    started: Nanos,
    n: u16,
    settled: u16,
    /// When the drives beyond the first majority stop being waited for.
    grace_at: Option<Nanos>,
    /// The grace ran out: decide with the answers there are.
    early: bool,
}

impl Scan {
    fn start(&mut self, now: Now, st: &LockState, a: &mut Actions) {
        self.scan = TableScan::start(st.spec.n_drives, st.table_hint(), st.spec.lock_id, a);
        self.done = self.scan.idle();
        self.started = now.mono;
        self.n = st.spec.n_drives;
    }

    /// Whether the answers so far decide the query.
    fn decided(&self) -> bool {
        self.done || self.early
    }

    /// The timer to ask for after a call.
    fn timer(&self) -> Option<Nanos> {
        if self.decided() {
            None
        } else {
            self.grace_at
        }
    }

    fn on_timer(&mut self, now: Now) {
        if self.grace_at.is_some_and(|g| now.mono >= g) {
            self.early = true;
        }
    }

    /// One more drive finished (answered or failed) at `now`.
    fn settle(&mut self, now: Now) {
        self.settled += 1;
        if self.grace_at.is_none() && self.settled >= super::majority(self.n) {
            let took = now.mono - self.started;
            self.grace_at = Some(now.mono + (took + Nanos::from_millis(1)).min(QUERY_GRACE_MAX));
        }
    }

    /// The records of this lock on `drive` when its read finished successfully.
    fn on_reply(
        &mut self,
        now: Now,
        spec: &LockSpec,
        drive: u16,
        reply: &Reply,
        a: &mut Actions,
    ) -> Option<Vec<Record>> {
        let r = self.scan.on_reply(drive, reply, a)?;
        self.done = self.scan.idle();
        self.settle(now);
        match r {
            Ok(mut recs) => {
                self.answered += 1;
                recs.retain(|r| r.lock_id == spec.lock_id);
                self.known |= !recs.is_empty();
                Some(recs)
            }
            Err(e) => {
                self.errors.add(e);
                None
            }
        }
    }

    fn failure(&self) -> Option<LockError> {
        if self.answered == 0 {
            Some(self.errors.error())
        } else if !self.known {
            Some(LockError::NotFound)
        } else {
            None
        }
    }
}

fn live_other_hosts(recs: &[Record], me: &HostId) -> u32 {
    let mut hosts: Vec<HostId> = recs
        .iter()
        .filter(|r| r.state.is_held() && r.host_id != *me)
        .map(|r| r.host_id)
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    u32::try_from(hosts.len()).unwrap_or(u32::MAX)
}

/// The host-count operation. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct GetHostCount {
    scan: Scan,
    count: HostCount,
    reported: bool,
    outcome: Option<Result<HostCount, LockError>>,
}

impl GetHostCount {
    /// A host count of the lock.
    pub fn new() -> GetHostCount {
        GetHostCount::default()
    }

    fn decide(&mut self, a: &mut Actions) {
        a.timer = self.scan.timer();
        if self.scan.decided() && !self.reported {
            self.reported = true;
            self.outcome = Some(match self.scan.failure() {
                Some(e) => Err(e),
                None => Ok(self.count),
            });
        }
    }
}

impl Operation for GetHostCount {
    type Output = HostCount;

    fn start(&mut self, now: Now, st: &mut LockState, a: &mut Actions) {
        if let Some(e) = invalid_spec(st) {
            self.scan.done = true;
            self.outcome = Some(Err(e));
            return;
        }
        self.scan.start(now, st, a);
    }

    fn on_reply(
        &mut self,
        now: Now,
        st: &mut LockState,
        drive: u16,
        reply: &Reply,
        a: &mut Actions,
    ) {
        if let Some(recs) = self.scan.on_reply(now, &st.spec, drive, reply, a) {
            let me = st.spec.host_id;
            self.count.others = self.count.others.max(live_other_hosts(&recs, &me));
            self.count.held_by_self |= recs.iter().any(|r| r.host_id == me && r.state.is_held());
        }
        self.decide(a);
    }

    fn on_timer(&mut self, now: Now, _st: &mut LockState, a: &mut Actions) {
        self.scan.on_timer(now);
        self.decide(a);
    }

    fn outcome(&mut self) -> Option<Result<HostCount, LockError>> {
        self.outcome.take()
    }

    fn finished(&self) -> bool {
        self.scan.done
    }
}

/// The get-mode operation: `Ok(None)` is "unlocked". See the module docs.
#[derive(Clone, Debug, Default)]
pub struct GetMode {
    scan: Scan,
    reported: bool,
    /// Votes: exclusive, shared, unlocked.
    votes: [u32; 3],
    outcome: Option<Result<Option<Mode>, LockError>>,
}

impl GetMode {
    /// A mode query of the lock.
    pub fn new() -> GetMode {
        GetMode::default()
    }

    fn decide(&mut self, a: &mut Actions) {
        a.timer = self.scan.timer();
        if self.scan.decided() && !self.reported {
            self.reported = true;
            self.outcome = Some(match self.scan.failure() {
                Some(e) => Err(e),
                None => {
                    let [ex, sh, un] = self.votes;
                    Ok(if ex >= sh && ex >= un {
                        Some(Mode::Exclusive)
                    } else if sh >= un {
                        Some(Mode::Shared)
                    } else {
                        None
                    })
                }
            });
        }
    }
}

impl Operation for GetMode {
    type Output = Option<Mode>;

    fn start(&mut self, now: Now, st: &mut LockState, a: &mut Actions) {
        if let Some(e) = invalid_spec(st) {
            self.scan.done = true;
            self.outcome = Some(Err(e));
            return;
        }
        self.scan.start(now, st, a);
    }

    fn on_reply(
        &mut self,
        now: Now,
        st: &mut LockState,
        drive: u16,
        reply: &Reply,
        a: &mut Actions,
    ) {
        if let Some(recs) = self.scan.on_reply(now, &st.spec, drive, reply, a) {
            if !recs.is_empty() {
                let live = recs.iter().filter(|r| r.state.is_held());
                let vote = if live.clone().any(|r| !r.class.is_shared()) {
                    0
                } else if live.count() > 0 {
                    1
                } else {
                    2
                };
                self.votes[vote] += 1;
            }
        }
        self.decide(a);
    }

    fn on_timer(&mut self, now: Now, _st: &mut LockState, a: &mut Actions) {
        self.scan.on_timer(now);
        self.decide(a);
    }

    fn outcome(&mut self) -> Option<Result<Option<Mode>, LockError>> {
        self.outcome.take()
    }

    fn finished(&self) -> bool {
        self.scan.done
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use uring_sg::{Class, DriveError, MutexState::*};

    fn host(s: &str) -> HostId {
        s.parse().unwrap()
    }

    fn run<O: Operation>(op: &mut O, st: &mut LockState, answers: Vec<Reply>) {
        let mut a = Actions::new();
        op.start(at(0), st, &mut a);
        assert_eq!(a.commands.len(), answers.len());
        for (d, r) in answers.into_iter().enumerate() {
            a.clear();
            op.on_reply(at(1), st, d as u16, &r, &mut a);
            assert!(a.commands.is_empty());
        }
        assert!(op.finished());
    }

    #[test]
    fn host_count_max_over_drives() {
        let mut st = LockState::new(spec(3), 1);
        let s = st.spec;
        let d0 = [
            table_rec(
                s.lock_id,
                host("a"),
                MultipleLocked,
                Class::SharedProtectedRead,
                0,
                0,
            ),
            table_rec(
                s.lock_id,
                host("b"),
                MultipleLocked,
                Class::SharedProtectedRead,
                0,
                0,
            ),
            table_rec(
                s.lock_id,
                s.host_id,
                MultipleLocked,
                Class::SharedProtectedRead,
                0,
                0,
            ),
            table_rec(
                s.lock_id,
                host("c"),
                Timeout,
                Class::SharedProtectedRead,
                0,
                0,
            ),
        ];
        let d1 = [table_rec(
            s.lock_id,
            host("a"),
            Locked,
            Class::SharedProtectedRead,
            0,
            0,
        )];
        let mut op = GetHostCount::new();
        run(
            &mut op,
            &mut st,
            vec![
                data(table_data(&d0, 8)),
                data(table_data(&d1, 8)),
                err(DriveError::Timeout),
            ],
        );
        assert_eq!(
            op.outcome(),
            Some(Ok(HostCount {
                others: 2,
                held_by_self: true
            }))
        );
    }

    #[test]
    fn not_found_and_io() {
        let mut st = LockState::new(spec(2), 1);
        let mut op = GetHostCount::new();
        run(&mut op, &mut st, vec![data(Vec::new()), data(Vec::new())]);
        assert_eq!(op.outcome(), Some(Err(LockError::NotFound)));
        let mut op = GetMode::new();
        run(
            &mut op,
            &mut st,
            vec![err(DriveError::Io(5)), err(DriveError::Io(5))],
        );
        assert_eq!(op.outcome(), Some(Err(LockError::Io(DriveError::Io(5)))));
    }

    #[test]
    fn mode_is_majority_vote() {
        let mut st = LockState::new(spec(3), 1);
        let s = st.spec;
        let sh = [table_rec(
            s.lock_id,
            host("a"),
            Locked,
            Class::SharedProtectedRead,
            0,
            0,
        )];
        let ex = [table_rec(
            s.lock_id,
            host("b"),
            Locked,
            Class::Exclusive,
            0,
            0,
        )];
        let un = [table_rec(
            s.lock_id,
            host("b"),
            Unlocked,
            Class::Exclusive,
            0,
            0,
        )];
        let mut op = GetMode::new();
        let answers = vec![
            data(table_data(&sh, 2)),
            data(table_data(&sh, 2)),
            data(table_data(&ex, 2)),
        ];
        run(&mut op, &mut st, answers);
        assert_eq!(op.outcome(), Some(Ok(Some(Mode::Shared))));
        let mut op = GetMode::new();
        let answers = vec![
            data(table_data(&un, 2)),
            data(table_data(&un, 2)),
            data(Vec::new()),
        ];
        run(&mut op, &mut st, answers);
        assert_eq!(op.outcome(), Some(Ok(None)));
        let mut op = GetMode::new();
        let answers = vec![
            data(table_data(&un, 2)),
            data(table_data(&ex, 2)),
            data(Vec::new()),
        ];
        run(&mut op, &mut st, answers);
        assert_eq!(
            op.outcome(),
            Some(Ok(Some(Mode::Exclusive))),
            "tie: stronger mode"
        );
    }
}
