//! Read LVB: the lock value block as the drives store it (IDM.md §7).
//!
//! Every drive's table is read ([`TableScan`]); the value of a drive is the largest
//! LVB (as lvmlockd's little-endian u64) among this lock's records on it (0 if the
//! drive does not know the lock). The outcome is the **maximum over the answers
//! once a majority of drives that vouch for it answered** (every answer counts
//! toward the maximum). While the lock is held, a drive vouches if this host
//! holds the lock on it, or if its table shows no exclusive member of another
//! host in the lock (live or expired): such a drive has no unlock still to come.
//! A release stores the LVB on at least a majority before it reports success, and
//! any two majorities intersect. Counting held drives matters while the previous
//! holder's release is still running: this host can be granted a majority that
//! overlaps the previous holder's only on the drives it already left, while the
//! drives it still holds answer with the old value; a majority of *any* answers
//! could then miss the new value the previous holder is storing (the simulation
//! found this: a holder read 60 while the release of 61, asked for before its
//! hold began, was still completing). A held drive granted this host the lock
//! after the previous holder's unlock there (or by break, which makes the read
//! all-ones), and a drive's read is sent only after this lock's earlier command
//! on it was answered, so every held drive in a majority that also was in the
//! previous holder's storing majority has the new value; a drive without another
//! host's exclusive member was unlocked by the previous holder before the read
//! (or never held by it, so it is not in that majority). Counting the second kind
//! keeps the read off a slow held drive when the healthy drives are free. A read
//! of a lock not held counts any drive. Late answers are consumed and ignored.
//!
//! **Limit: the value is only as durable as the drives' tables.** The intersection
//! argument holds while the drives of the last release's majority remember the
//! value. A drive that loses the lock's mutex entry (it power-cycles, or a host's
//! "table full" clean-up destroys the unlocked mutex, see [`super::table`]) loses
//! the LVB with it. Once fewer than `n - majority + 1` of the drives that stored the
//! value still have it, a majority without it exists, and a read over that majority
//! returns an older value or 0. Nothing on the host side can restore a value no
//! drive keeps; the caller must treat a value that went back like any other change
//! (lvmlockd does: any changed value means "re-read the metadata"). The clean-up
//! destroys mutexes whose LVB is 0 first, so it forgets a value only when the table
//! holds nothing else to free. The deterministic simulation (`idm-tests`) checks
//! that reads go back only in exactly this case. See the DESIGN NOTE in the crate
//! docs.
//!
//! If any drive of this lock was obtained by break since the last acquire
//! ([`LockState::broken`]), the previous holder may not have stored its value: the
//! answer is all-ones ([`Lvb::INVALID`]) without reading, which tells lvmlockd to
//! drop its cached metadata. Byte 7 is never carried by the drives and reads as 0.

use uring_sg::transport::Reply;
use uring_sg::{Class, Lvb, MutexState, Record};

use super::table::{stored_lvb, TableScan};
use super::{invalid_spec, Actions, ErrorSummary, LockState, Now, Operation, Tally};
use crate::error::LockError;

/// `r` is an exclusive membership (live or expired) of another host in this lock:
/// that host has not unlocked this drive yet, so the drive may still lack the
/// value its release is storing.
fn other_exclusive_member(st: &LockState, r: &Record) -> bool {
    r.lock_id == st.spec.lock_id
        && r.host_id != st.spec.host_id
        && r.class != Class::SharedProtectedRead
        && matches!(r.state, MutexState::Locked | MutexState::Timeout)
}

/// The read-LVB operation. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct ReadLvb {
    scan: TableScan,
    tally: Option<Tally>,
    max: u64,
    errors: ErrorSummary,
    decided: bool,
    outcome: Option<Result<Lvb, LockError>>,
}

impl ReadLvb {
    /// A read of the lock's LVB.
    pub fn new() -> ReadLvb {
        ReadLvb::default()
    }
}

impl Operation for ReadLvb {
    type Output = Lvb;

    fn start(&mut self, _now: Now, st: &mut LockState, a: &mut Actions) {
        if let Some(e) = invalid_spec(st) {
            self.decided = true;
            self.outcome = Some(Err(e));
            return;
        }
        if st.broken {
            self.decided = true;
            self.outcome = Some(Ok(Lvb::INVALID));
            return;
        }
        self.tally = Some(Tally::new(st.spec.n_drives));
        self.scan = TableScan::start(st.spec.n_drives, st.table_hint(), st.spec.lock_id, a);
    }

    fn on_reply(
        &mut self,
        _now: Now,
        st: &mut LockState,
        drive: u16,
        reply: &Reply,
        a: &mut Actions,
    ) {
        let Some(done) = self.scan.on_reply(drive, reply, a) else {
            return;
        };
        let Some(t) = self.tally.as_mut() else { return };
        if self.decided {
            return;
        }
        match done {
            Ok(recs) => {
                // While the lock is held, a drive vouches for the value if this
                // host holds it (granted after the previous holder's unlock
                // there) or no other host's exclusive member is still to unlock
                // there (see the module docs).
                let vouches = st.mode.is_none()
                    || st.drives[usize::from(drive)].held
                    || !recs.iter().any(|r| other_exclusive_member(st, r));
                if vouches {
                    t.yes();
                } else {
                    t.no();
                }
                self.max = self.max.max(stored_lvb(&recs, &st.spec.lock_id));
            }
            Err(e) => {
                t.no();
                self.errors.add(e);
            }
        }
        if t.reached() {
            self.decided = true;
            self.outcome = Some(Ok(Lvb::from_u64(self.max)));
        } else if t.impossible() {
            self.decided = true;
            self.outcome = Some(Err(self.errors.error()));
        }
    }

    fn on_timer(&mut self, _now: Now, _st: &mut LockState, _a: &mut Actions) {}

    fn outcome(&mut self) -> Option<Result<Lvb, LockError>> {
        self.outcome.take()
    }

    fn finished(&self) -> bool {
        self.decided && self.scan.idle()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use uring_sg::transport::Request;
    use uring_sg::{Class, DriveError, HostId, MutexState};

    #[test]
    fn max_over_a_majority() {
        let mut st = LockState::new(spec(3), 1);
        let me = st.spec;
        let other: HostId = "host-2".parse().unwrap();
        let mut op = ReadLvb::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        assert!(a
            .commands
            .iter()
            .all(|(_, r)| matches!(r, Request::ReadTable { .. })));
        assert_eq!(a.commands.len(), 3);
        let d0 = [
            table_rec(
                me.lock_id,
                me.host_id,
                MutexState::Unlocked,
                Class::Exclusive,
                7,
                0,
            ),
            table_rec(
                "x".parse().unwrap(),
                other,
                MutexState::Locked,
                Class::Exclusive,
                99,
                0,
            ),
        ];
        let d1 = [table_rec(
            me.lock_id,
            other,
            MutexState::Locked,
            Class::Exclusive,
            9,
            0,
        )];
        a.clear();
        op.on_reply(at(1), &mut st, 0, &data(table_data(&d0, 4)), &mut a);
        assert!(op.outcome().is_none());
        op.on_reply(at(1), &mut st, 1, &data(table_data(&d1, 4)), &mut a);
        assert_eq!(op.outcome(), Some(Ok(Lvb::from_u64(9))));
        assert!(!op.finished());
        op.on_reply(at(2), &mut st, 2, &err(DriveError::Timeout), &mut a);
        assert!(op.finished());
        assert!(a.commands.is_empty());
    }

    #[test]
    fn all_ones_after_break() {
        let mut st = LockState::new(spec(3), 1);
        st.grant(0, Class::Exclusive, crate::time::Nanos::ZERO, true);
        let mut op = ReadLvb::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        assert!(a.commands.is_empty());
        assert_eq!(op.outcome(), Some(Ok(Lvb::INVALID)));
        assert!(op.finished());
    }

    #[test]
    fn io_majority_fails() {
        let mut st = LockState::new(spec(2), 1);
        let mut op = ReadLvb::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        op.on_reply(at(1), &mut st, 1, &err(DriveError::Io(5)), &mut a);
        assert_eq!(op.outcome(), Some(Err(LockError::Io(DriveError::Io(5)))));
        op.on_reply(at(1), &mut st, 0, &data(Vec::new()), &mut a);
        assert!(op.finished());
    }
}
