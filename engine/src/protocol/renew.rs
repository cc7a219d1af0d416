//! Renew: refresh our membership on every held drive (IDM.md §7).
//!
//! - refreshed → the drive's send time moves to this refresh's send time;
//! - "not found" (the drive lost its table: power cycle) → the drive is dropped at
//!   once (our membership there is gone, whatever its old window said) and gets a
//!   fresh trylock; a grant puts it back with the trylock's send time;
//! - "expired" (reservation conflict on refresh) → the drive is dropped;
//! - I/O errors and other answers → no count; the drive stays held with its old
//!   send time, so it drops out of [`crate::lease::validity`] on its own;
//! - a drive **not** in the held set (it answered the acquire late, was dropped,
//!   or lost its table) gets a trylock: a grant puts it back, so a lock acquired
//!   on a bare majority grows to every drive it can get, and one drive of that
//!   majority dying does not lose the lease. "Already held by this host" (our
//!   membership whose grant reply was lost) is refreshed and then counts; any
//!   other refusal just does not count.
//!
//! Outcome at a majority of refreshed drives (⌊N/2⌋+1 also for even N: the old
//! manager accepted N/2, but validity needs a majority inside its window, so a
//! renewal of N/2 would not extend anything). [`LockState::last_renewal`] is set to
//! the renewal's send time. Majority impossible → [`LockError::LeaseLost`]; the
//! caller's fencing logic decides from validity what to do.
//!
//! The refresh carries the class of the lock's mode, so a drive left in another
//! class (a convert whose reply was lost) converges.

use uring_sg::transport::Reply;
use uring_sg::{DriveError, MutexOp};

use super::{invalid_spec, Actions, LockState, Now, Operation, Tally};
use crate::error::LockError;
use crate::time::Nanos;

/// What a successful renewal reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Renewed {
    /// Drives refreshed (or re-acquired) when the majority was reached.
    pub refreshed: u16,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Idle,
    Refresh {
        sent: Nanos,
    },
    Trylock {
        sent: Nanos,
    },
    /// A trylock said "already held by this host" (a membership we did not know
    /// of: a lost reply): refresh it, once.
    Adopt {
        sent: Nanos,
    },
}

/// The renew operation. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Renew {
    steps: Vec<Step>,
    tally: Option<Tally>,
    started: Nanos,
    decided: bool,
    outcome: Option<Result<Renewed, LockError>>,
}

impl Renew {
    /// A renewal of the lock.
    pub fn new() -> Renew {
        Renew::default()
    }

    fn decide(&mut self, st: &mut LockState) {
        let Some(t) = self.tally else { return };
        if self.decided {
            return;
        }
        if t.reached() {
            self.decided = true;
            st.last_renewal = Some(self.started);
            self.outcome = Some(Ok(Renewed {
                refreshed: t.yes_count(),
            }));
        } else if t.impossible() {
            self.decided = true;
            self.outcome = Some(Err(LockError::LeaseLost));
        }
    }
}

impl Operation for Renew {
    type Output = Renewed;

    fn start(&mut self, now: Now, st: &mut LockState, a: &mut Actions) {
        if let Some(e) = invalid_spec(st) {
            self.decided = true;
            self.outcome = Some(Err(e));
            return;
        }
        let Some(mode) = st.mode else {
            self.decided = true;
            self.outcome = Some(Err(LockError::NotHeld));
            return;
        };
        self.started = now.mono;
        let t = Tally::new(st.spec.n_drives);
        self.steps = vec![Step::Idle; st.spec.n_drives as usize];
        for d in 0..st.spec.n_drives {
            if st.is_held(d) {
                self.steps[d as usize] = Step::Refresh { sent: now.mono };
                a.send(d, st.request(MutexOp::Refresh, mode.class(), now));
            } else {
                self.steps[d as usize] = Step::Trylock { sent: now.mono };
                a.send(d, st.request(MutexOp::Trylock, mode.class(), now));
            }
        }
        self.tally = Some(t);
        self.decide(st);
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
        let Some(step) = self.steps.get(d).copied() else {
            return;
        };
        let Some(mode) = st.mode else {
            // Lock released under us: cannot happen while ops are serialized.
            self.steps[d] = Step::Idle;
            return;
        };
        self.steps[d] = Step::Idle;
        let mut yes = false;
        match (step, reply.result) {
            (Step::Idle, _) => return,
            (Step::Refresh { sent } | Step::Trylock { sent } | Step::Adopt { sent }, Ok(())) => {
                st.grant(drive, mode.class(), sent, false);
                yes = true;
            }
            (Step::Trylock { .. }, Err(DriveError::AlreadyHeld)) => {
                self.steps[d] = Step::Adopt { sent: now.mono };
                a.send(drive, st.request(MutexOp::Refresh, mode.class(), now));
                return;
            }
            (Step::Adopt { .. }, Err(_)) => {}
            (Step::Refresh { .. }, Err(DriveError::NotFound)) => {
                st.drop_drive(drive);
                self.steps[d] = Step::Trylock { sent: now.mono };
                a.send(drive, st.request(MutexOp::Trylock, mode.class(), now));
                return;
            }
            (Step::Refresh { .. }, Err(DriveError::Expired)) => st.drop_drive(drive),
            (Step::Refresh { .. }, Err(_)) => {}
            (Step::Trylock { .. }, Err(_)) => {}
        }
        if let Some(t) = self.tally.as_mut() {
            if yes {
                t.yes();
            } else {
                t.no();
            }
        }
        self.decide(st);
    }

    fn on_timer(&mut self, _now: Now, _st: &mut LockState, _a: &mut Actions) {}

    fn outcome(&mut self) -> Option<Result<Renewed, LockError>> {
        self.outcome.take()
    }

    fn finished(&self) -> bool {
        self.decided && self.steps.iter().all(|s| *s == Step::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use uring_sg::{Mode, MutexOp::*};

    fn held(n: u16, held: &[u16]) -> LockState {
        held_in(Mode::Exclusive, n, held)
    }

    #[test]
    fn refreshes_held_drives_and_moves_send_times() {
        let mut st = held(3, &[0, 1]);
        let mut op = Renew::new();
        let mut a = Actions::new();
        op.start(at(100), &mut st, &mut a);
        // Drive 2 is not held: it gets a trylock (the held set grows).
        assert_eq!(ops(&a), vec![(0, Refresh), (1, Refresh), (2, Trylock)]);
        assert_eq!(record_to(&a, 0).unwrap().countdown_ms, 1000);
        a.clear();
        op.on_reply(at(150), &mut st, 0, &ok(), &mut a);
        assert!(op.outcome().is_none());
        op.on_reply(at(160), &mut st, 1, &ok(), &mut a);
        assert_eq!(op.outcome(), Some(Ok(Renewed { refreshed: 2 })));
        assert!(!op.finished(), "the trylock is still out");
        op.on_reply(at(170), &mut st, 2, &ok(), &mut a);
        assert!(op.finished());
        assert!(st.is_held(2), "a granted trylock joins the held set");
        assert_eq!(st.drives[2].sent, Nanos::from_millis(100));
        assert_eq!(st.drives[0].sent, Nanos::from_millis(100));
        assert_eq!(st.drives[1].sent, Nanos::from_millis(100));
        assert_eq!(st.last_renewal, Some(Nanos::from_millis(100)));
    }

    #[test]
    fn not_found_trylocks_and_expired_drops() {
        let mut st = held(3, &[0, 1, 2]);
        let mut op = Renew::new();
        let mut a = Actions::new();
        op.start(at(100), &mut st, &mut a);
        a.clear();
        op.on_reply(at(110), &mut st, 0, &err(DriveError::NotFound), &mut a);
        assert_eq!(ops(&a), vec![(0, Trylock)]);
        assert!(!st.is_held(0), "lost state: dropped until re-acquired");
        a.clear();
        op.on_reply(at(111), &mut st, 1, &err(DriveError::Expired), &mut a);
        assert!(!st.is_held(1));
        assert!(a.commands.is_empty());
        op.on_reply(at(112), &mut st, 2, &ok(), &mut a);
        assert!(op.outcome().is_none());
        op.on_reply(at(120), &mut st, 0, &ok(), &mut a);
        assert_eq!(op.outcome(), Some(Ok(Renewed { refreshed: 2 })));
        assert!(st.is_held(0));
        assert_eq!(st.drives[0].sent, Nanos::from_millis(110));
        assert!(op.finished());
    }

    #[test]
    fn no_majority_is_lease_lost() {
        let mut st = held(4, &[0, 1, 2]);
        let mut op = Renew::new();
        let mut a = Actions::new();
        op.start(at(100), &mut st, &mut a);
        op.on_reply(at(101), &mut st, 0, &ok(), &mut a);
        op.on_reply(at(101), &mut st, 1, &ok(), &mut a);
        // Two of four refreshed: not a majority (3), even N needs N/2+1.
        op.on_reply(at(101), &mut st, 2, &err(DriveError::Timeout), &mut a);
        assert_eq!(op.outcome(), None, "drive 3's trylock may still grant");
        op.on_reply(at(101), &mut st, 3, &err(DriveError::HeldByOther), &mut a);
        assert_eq!(op.outcome(), Some(Err(LockError::LeaseLost)));
        assert!(st.is_held(2), "I/O error keeps the old window");
        assert_eq!(st.last_renewal, None);
    }
}
