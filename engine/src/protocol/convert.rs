//! Convert: change the mode of a held lock (IDM.md §7) with a refresh carrying the
//! new class on every held drive.
//!
//! The old manager reported a failed demotion as success and poisoned later
//! converts. Here the rule is the same in both directions:
//!
//! - **Success** when every held drive answered, none refused, and a majority
//!   converted: [`LockState::mode`] becomes the new mode; converted drives hold the
//!   new class with the refresh's send time.
//! - **Failure** otherwise (a drive refused: promotion SH → EX while other live
//!   members exist; or no majority converted): every drive that converted, and every
//!   drive whose answer is unknown, is refreshed back to the old class. The outcome
//!   [`LockError::ConvertFailed`] is delivered after the rollback answered, and then
//!   [`LockState::mode`] is still the old mode and every drive in the held set holds
//!   the old class.
//!
//! A **demotion** (EX → SH) also counts the drives whose answer is unknown and
//! keeps them held in their old class: membership of either class refuses every
//! other host's EX, which is all a SH holder needs (so one dead drive of a bare
//! majority does not fail a demotion, nor fence its holder).
//!
//! Otherwise, drives that cannot be trusted to hold the lock's class are **dropped** from the
//! held set (they stop counting for validity; release still unlocks them, retrying
//! with the other class if the drive says "wrong class"): a drive whose convert or
//! rollback answer is unknown (I/O error), one whose rollback was refused, and one
//! that answered "expired" or "not found". A convert does not trylock drives that do
//! not hold the lock (IDM.md suggests it to grow the majority; renew and the next
//! acquire already do that job, and a trylock here would mix two decisions).

use uring_sg::transport::Reply;
use uring_sg::{DriveError, Mode, MutexOp};

use super::{invalid_spec, Actions, LockState, Now, Operation};
use crate::error::LockError;
use crate::time::Nanos;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Res {
    /// Not part of the convert (not held).
    Out,
    Pending,
    Converted,
    Refused,
    Dropped,
    Unknown,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Converting,
    RollingBack,
    Done,
}

/// The convert operation. See the module docs.
#[derive(Clone, Debug)]
pub struct Convert {
    new: Mode,
    old: Mode,
    phase: Phase,
    res: Vec<Res>,
    /// Send time of the outstanding refresh per drive (`None`: nothing outstanding).
    out: Vec<Option<Nanos>>,
    outcome: Option<Result<(), LockError>>,
}

impl Convert {
    /// A conversion of the held lock to `new`.
    pub fn new(new: Mode) -> Convert {
        Convert {
            new,
            old: new,
            phase: Phase::Done,
            res: Vec::new(),
            out: Vec::new(),
            outcome: None,
        }
    }

    fn all_answered(&self) -> bool {
        self.out.iter().all(Option::is_none)
    }

    fn conversion_done(&mut self, now: Now, st: &mut LockState, a: &mut Actions) {
        let converted = self.res.iter().filter(|r| **r == Res::Converted).count();
        let unknown = self.res.iter().filter(|r| **r == Res::Unknown).count();
        let refused = self.res.contains(&Res::Refused);
        // A demotion keeps a drive whose answer is unknown: our membership there
        // is EX or SH, and either refuses every other host's EX, which is all a
        // SH holder needs. It keeps its old class and send time (release retries
        // with the other class, renewal's refresh converges it).
        let demotion = self.new == Mode::Shared && self.old == Mode::Exclusive;
        let counted = if demotion {
            converted + unknown
        } else {
            converted
        };
        if !refused && converted > 0 && counted >= st.spec.majority() as usize {
            for (d, r) in self.res.iter().enumerate() {
                if *r == Res::Unknown && !demotion {
                    st.drop_drive(d as u16);
                }
            }
            st.mode = Some(self.new);
            self.phase = Phase::Done;
            self.outcome = Some(Ok(()));
            return;
        }
        self.phase = Phase::RollingBack;
        for d in 0..self.res.len() {
            if matches!(self.res[d], Res::Converted | Res::Unknown) {
                self.out[d] = Some(now.mono);
                a.send(
                    d as u16,
                    st.request(MutexOp::Refresh, self.old.class(), now),
                );
            }
        }
        self.rollback_done_check();
    }

    fn rollback_done_check(&mut self) {
        if self.phase == Phase::RollingBack && self.all_answered() {
            self.phase = Phase::Done;
            self.outcome = Some(Err(LockError::ConvertFailed));
        }
    }
}

impl Operation for Convert {
    type Output = ();

    fn start(&mut self, now: Now, st: &mut LockState, a: &mut Actions) {
        if let Some(e) = invalid_spec(st) {
            self.outcome = Some(Err(e));
            return;
        }
        let Some(old) = st.mode else {
            self.outcome = Some(Err(LockError::NotHeld));
            return;
        };
        self.old = old;
        if old == self.new {
            self.outcome = Some(Ok(()));
            return;
        }
        let n = st.spec.n_drives as usize;
        self.res = vec![Res::Out; n];
        self.out = vec![None; n];
        self.phase = Phase::Converting;
        for d in 0..n {
            if st.is_held(d as u16) {
                self.res[d] = Res::Pending;
                self.out[d] = Some(now.mono);
                a.send(
                    d as u16,
                    st.request(MutexOp::Refresh, self.new.class(), now),
                );
            }
        }
        if self.all_answered() {
            self.conversion_done(now, st, a);
        }
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
        let Some(Some(sent)) = self.out.get(d).copied() else {
            return;
        };
        self.out[d] = None;
        match self.phase {
            Phase::Converting => {
                self.res[d] = match reply.result {
                    Ok(()) => {
                        st.grant(drive, self.new.class(), sent, false);
                        Res::Converted
                    }
                    Err(DriveError::Expired | DriveError::NotFound) => {
                        st.drop_drive(drive);
                        Res::Dropped
                    }
                    Err(e) if e.is_io() => Res::Unknown,
                    Err(_) => Res::Refused,
                };
                if self.all_answered() {
                    self.conversion_done(now, st, a);
                }
            }
            Phase::RollingBack => {
                match reply.result {
                    Ok(()) => st.grant(drive, self.old.class(), sent, false),
                    Err(_) => st.drop_drive(drive),
                }
                self.rollback_done_check();
            }
            Phase::Done => {}
        }
    }

    fn on_timer(&mut self, _now: Now, _st: &mut LockState, _a: &mut Actions) {}

    fn outcome(&mut self) -> Option<Result<(), LockError>> {
        self.outcome.take()
    }

    fn finished(&self) -> bool {
        self.phase == Phase::Done && self.all_answered()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use uring_sg::{Class, MutexOp::*};

    fn held(n: u16, held: &[u16], mode: Mode) -> LockState {
        held_in(mode, n, held)
    }

    #[test]
    fn promotion_succeeds_on_all_held() {
        let mut st = held(3, &[0, 1, 2], Mode::Shared);
        let mut op = Convert::new(Mode::Exclusive);
        let mut a = Actions::new();
        op.start(at(10), &mut st, &mut a);
        assert_eq!(ops(&a), vec![(0, Refresh), (1, Refresh), (2, Refresh)]);
        assert_eq!(record_to(&a, 0).unwrap().class, Class::Exclusive);
        a.clear();
        for d in 0..3 {
            op.on_reply(at(11), &mut st, d, &ok(), &mut a);
        }
        assert_eq!(op.outcome(), Some(Ok(())));
        assert!(op.finished());
        assert_eq!(st.mode, Some(Mode::Exclusive));
        assert!(st.drives.iter().all(|d| d.class == Class::Exclusive));
        assert_eq!(st.drives[0].sent, Nanos::from_millis(10));
    }

    #[test]
    fn refused_promotion_rolls_back() {
        let mut st = held(3, &[0, 1, 2], Mode::Shared);
        let mut op = Convert::new(Mode::Exclusive);
        let mut a = Actions::new();
        op.start(at(10), &mut st, &mut a);
        a.clear();
        op.on_reply(at(11), &mut st, 0, &ok(), &mut a);
        op.on_reply(at(11), &mut st, 1, &err(DriveError::ConvertRefused), &mut a);
        assert!(a.commands.is_empty());
        op.on_reply(at(12), &mut st, 2, &err(DriveError::Timeout), &mut a);
        // Roll back the converted drive and the unknown one to SH.
        assert_eq!(ops(&a), vec![(0, Refresh), (2, Refresh)]);
        assert!(a
            .commands
            .iter()
            .all(|(d, _)| record_to(&a, *d).unwrap().class == Class::SharedProtectedRead));
        assert!(op.outcome().is_none(), "outcome after the rollback");
        a.clear();
        op.on_reply(at(13), &mut st, 0, &ok(), &mut a);
        op.on_reply(at(13), &mut st, 2, &err(DriveError::Io(5)), &mut a);
        assert_eq!(op.outcome(), Some(Err(LockError::ConvertFailed)));
        assert!(op.finished());
        assert_eq!(st.mode, Some(Mode::Shared));
        assert!(st.is_held(0) && st.is_held(1) && !st.is_held(2));
        assert!(st
            .drives
            .iter()
            .filter(|d| d.held)
            .all(|d| d.class == Class::SharedProtectedRead));
        assert_eq!(st.drives[0].sent, Nanos::from_millis(12));
    }

    #[test]
    fn demotion_and_same_mode_and_not_held() {
        let mut st = held(1, &[0], Mode::Exclusive);
        let mut op = Convert::new(Mode::Shared);
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        op.on_reply(at(1), &mut st, 0, &ok(), &mut a);
        assert_eq!(op.outcome(), Some(Ok(())));
        assert_eq!(st.mode, Some(Mode::Shared));

        let mut op = Convert::new(Mode::Shared);
        let mut a = Actions::new();
        op.start(at(2), &mut st, &mut a);
        assert!(a.commands.is_empty());
        assert_eq!(op.outcome(), Some(Ok(())));
        assert!(op.finished());

        let mut st = LockState::new(spec(1), 1);
        let mut op = Convert::new(Mode::Shared);
        op.start(at(2), &mut st, &mut a);
        assert_eq!(op.outcome(), Some(Err(LockError::NotHeld)));
    }
}
