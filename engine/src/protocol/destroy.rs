//! Destroy: free the mutex's table entry on every drive of the lock.
//!
//! A drive destroys the entry only when no live member is left (otherwise it
//! answers busy). The engine never destroys on release (the entry keeps the LVB);
//! this is for explicit clean-up (a removed LV, `idm` tooling). Refused while this
//! host holds the lock.
//!
//! Outcome when every drive answered: `Ok` when a majority destroyed it or did not
//! know it; else [`LockError::Busy`] if a drive still has live members, else the I/O
//! error.

use uring_sg::transport::Reply;
use uring_sg::{Class, DriveError, MutexOp};

use super::{invalid_spec, Actions, ErrorSummary, LockState, Now, Operation, Tally};
use crate::error::LockError;

/// The destroy operation. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Destroy {
    outstanding: Vec<bool>,
    tally: Option<Tally>,
    errors: ErrorSummary,
    outcome: Option<Result<(), LockError>>,
}

impl Destroy {
    /// A destroy of the lock's mutex on its drives.
    pub fn new() -> Destroy {
        Destroy::default()
    }
}

impl Operation for Destroy {
    type Output = ();

    fn start(&mut self, now: Now, st: &mut LockState, a: &mut Actions) {
        if let Some(e) = invalid_spec(st) {
            self.outcome = Some(Err(e));
            return;
        }
        if st.mode.is_some() {
            self.outcome = Some(Err(LockError::InvalidArgument("lock is held")));
            return;
        }
        let n = st.spec.n_drives;
        self.tally = Some(Tally::new(n));
        self.outstanding = vec![true; n as usize];
        for d in 0..n {
            a.send(d, st.request(MutexOp::Destroy, Class::Exclusive, now));
        }
    }

    fn on_reply(
        &mut self,
        _now: Now,
        _st: &mut LockState,
        drive: u16,
        reply: &Reply,
        _a: &mut Actions,
    ) {
        match self.outstanding.get_mut(drive as usize) {
            Some(o) if *o => *o = false,
            _ => return,
        }
        let Some(t) = self.tally.as_mut() else { return };
        match reply.result {
            Ok(()) | Err(DriveError::NotFound) => t.yes(),
            Err(e) => {
                t.no();
                self.errors.add(e);
            }
        }
        if t.pending() == 0 {
            self.outcome = Some(if t.reached() {
                Ok(())
            } else {
                Err(self.errors.error())
            });
        }
    }

    fn on_timer(&mut self, _now: Now, _st: &mut LockState, _a: &mut Actions) {}

    fn outcome(&mut self) -> Option<Result<(), LockError>> {
        self.outcome.take()
    }

    fn finished(&self) -> bool {
        self.outstanding.iter().all(|o| !o)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn destroys_on_all_drives() {
        let mut st = LockState::new(spec(3), 1);
        let mut op = Destroy::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        assert_eq!(
            ops(&a),
            vec![
                (0, MutexOp::Destroy),
                (1, MutexOp::Destroy),
                (2, MutexOp::Destroy)
            ]
        );
        op.on_reply(at(1), &mut st, 0, &ok(), &mut a);
        op.on_reply(at(1), &mut st, 1, &err(DriveError::NotFound), &mut a);
        assert!(op.outcome().is_none(), "waits for every drive");
        op.on_reply(at(1), &mut st, 2, &err(DriveError::Timeout), &mut a);
        assert_eq!(op.outcome(), Some(Ok(())));
        assert!(op.finished());
    }

    #[test]
    fn live_members_are_busy() {
        let mut st = LockState::new(spec(1), 1);
        let mut op = Destroy::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        op.on_reply(at(1), &mut st, 0, &err(DriveError::Busy), &mut a);
        assert_eq!(op.outcome(), Some(Err(LockError::Busy)));
        st.mode = Some(uring_sg::Mode::Shared);
        let mut op = Destroy::new();
        op.start(at(2), &mut st, &mut a);
        assert!(matches!(
            op.outcome(),
            Some(Err(LockError::InvalidArgument(_)))
        ));
    }
}
