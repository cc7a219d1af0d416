//! Release: unlock on every drive of the lock (IDM.md §7).
//!
//! - The unlock goes to **every** drive, not only the held ones: a trylock that
//!   timed out may have been granted, and a drive dropped from the held set may still
//!   list us. "Not held" answers count as done.
//! - When an LVB was written ([`LockState::lvb`]) every unlock carries it with the
//!   control byte "update"; otherwise the drives keep their stored value. Byte 7 of
//!   the LVB is not carried (IDM.md §5).
//! - "Wrong class" (our membership on that drive has the other class, e.g. after a
//!   convert that could not be rolled back) → the unlock is repeated once with the
//!   other class.
//! - "Not held" counts as released, **unless an LVB is to be stored**: that drive
//!   did not store it (it lost its table, or our membership there was broken), and a
//!   release that reported success with its LVB on less than a majority would let a
//!   later reader's majority miss it (the LVB would "go back"; found by the
//!   deterministic simulation). So the drive gets a trylock and, once granted, the
//!   unlock with the LVB again; it counts only if that unlock succeeds. A drive that
//!   another host holds by now refuses the trylock and does not count.
//!   **A re-trylock never rolls a newer value back.** Between our first unlocks and
//!   the re-trylock's grant another host may have acquired the lock and stored a
//!   newer LVB (the simulation found it: a release's re-trylock, still running
//!   after the release had answered at quorum, granted after another host's
//!   acquire and release, overwrote 184 with 183). So once the re-trylock is
//!   granted the drive's table is read (nobody can store on it while we hold it):
//!   if it already stores a larger value (LVB values only grow, the premise of the
//!   read's maximum), the unlock goes without the LVB and the drive counts as
//!   stored. A re-trylock granted after the release reached its majority unlocks
//!   without the LVB at once, and no re-trylock starts after that point: the value
//!   is already on a majority.
//! - The mutex is **not** destroyed: it keeps its LVB for the next holder (the old
//!   host code destroyed after every unlock and so lost the value).
//! - The lock stops being valid the moment the release starts: [`LockState`] is
//!   cleared (mode `None`, no held drive) in `start`, so no lease is trusted while
//!   the unlocks are in flight.
//!
//! - A **fenced release** ([`Release::fenced`]: the lockspace was fenced, or the
//!   lease had already lapsed when the release started) stores nothing: the LVB the
//!   caller wrote is dropped, and "not held" counts as released, so no drive is ever
//!   re-trylocked. Another host may have broken in and written a newer LVB since our
//!   lease lapsed; a late writer must not roll it back. The unlocks still go to every
//!   drive (a drive where we are no longer a member answers "not held" and changes
//!   nothing).
//!
//! Outcome at a majority of answers ("released" or "not held"); a majority
//! impossible (I/O errors) → [`LockError::Io`] (or what the errors say). Late replies
//! are still consumed before the operation is finished.

use uring_sg::transport::Reply;
use uring_sg::{Class, DriveError, Lvb, MutexOp};

use super::table::{stored_lvb, TableRead, TableStep};
use super::{invalid_spec, Actions, ErrorSummary, LockState, Now, Operation, Tally};
use crate::error::LockError;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Idle,
    Unlock {
        class: Class,
        flipped: bool,
        /// This unlock follows a re-trylock made to store the LVB.
        restored: bool,
        /// What the unlock does with the LVB.
        store: Store,
    },
    /// A trylock to put the LVB on a drive that answered "not held".
    Relock {
        class: Class,
    },
    /// The re-trylocked drive's table is read before the LVB goes on it: another
    /// host may have held the lock and stored a newer value since our unlock there.
    Check {
        class: Class,
        read: TableRead,
    },
}

/// What one unlock does with the LVB.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    /// Carries it (control byte "update").
    Lvb,
    /// Leaves the drive's value alone.
    Nothing,
    /// Leaves it alone because the drive already stores a value at least ours
    /// (read after a re-trylock): the drive counts as stored.
    Superseded,
}

/// The release operation. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Release {
    steps: Vec<Step>,
    lvb: Option<Lvb>,
    tally: Option<Tally>,
    errors: ErrorSummary,
    decided: bool,
    fenced: bool,
    outcome: Option<Result<(), LockError>>,
}

impl Release {
    /// A release of the lock.
    pub fn new() -> Release {
        Release::default()
    }

    /// A release that stores no LVB and never re-trylocks (see the module docs).
    pub fn fenced() -> Release {
        Release {
            fenced: true,
            ..Release::default()
        }
    }

    fn decide(&mut self) {
        let Some(t) = self.tally else { return };
        if self.decided {
            return;
        }
        if t.reached() {
            self.decided = true;
            self.outcome = Some(Ok(()));
        } else if t.impossible() {
            self.decided = true;
            self.outcome = Some(Err(self.errors.error()));
        }
    }
}

fn other(class: Class) -> Class {
    if class.is_shared() {
        Class::Exclusive
    } else {
        Class::SharedProtectedRead
    }
}

impl Operation for Release {
    type Output = ();

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
        self.lvb = st.lvb.take().filter(|_| !self.fenced);
        self.tally = Some(Tally::new(st.spec.n_drives));
        self.steps = (0..st.spec.n_drives)
            .map(|d| Step::Unlock {
                class: st.class_on(d, mode),
                flipped: false,
                restored: false,
                store: if self.lvb.is_some() {
                    Store::Lvb
                } else {
                    Store::Nothing
                },
            })
            .collect();
        st.clear();
        for (d, step) in self.steps.iter().enumerate() {
            if let Step::Unlock { class, .. } = step {
                a.send(d as u16, st.unlock_request(*class, self.lvb, now));
            }
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
        let Some(step) = self.steps.get(drive as usize).copied() else {
            return;
        };
        self.steps[drive as usize] = Step::Idle;
        let Some(t) = self.tally.as_mut() else { return };
        let carried = |store: Store| if store == Store::Lvb { self.lvb } else { None };
        match (step, reply.result) {
            (Step::Idle, _) => return,
            (Step::Relock { class }, Ok(())) => {
                if self.decided {
                    // The value is on a majority: leave without touching it.
                    self.steps[drive as usize] = Step::Unlock {
                        class,
                        flipped: true,
                        restored: true,
                        store: Store::Nothing,
                    };
                    a.send(drive, st.unlock_request(class, None, now));
                } else {
                    let read = TableRead::of_lock(st.table_hint(), st.spec.lock_id);
                    self.steps[drive as usize] = Step::Check { class, read };
                    a.send(drive, read.request());
                }
                return;
            }
            (Step::Check { class, mut read }, _) => {
                let store = match read.on_reply(reply) {
                    TableStep::Send(req) => {
                        self.steps[drive as usize] = Step::Check { class, read };
                        a.send(drive, req);
                        return;
                    }
                    TableStep::Done(recs) => {
                        let stored = stored_lvb(&recs, &st.spec.lock_id);
                        let ours = self.lvb.map_or(0, |v| v.as_stored().to_u64());
                        if stored >= ours {
                            Store::Superseded
                        } else if self.decided {
                            Store::Nothing
                        } else {
                            Store::Lvb
                        }
                    }
                    // Unknown: store nothing rather than perhaps roll back.
                    TableStep::Failed(_) => Store::Nothing,
                };
                self.steps[drive as usize] = Step::Unlock {
                    class,
                    flipped: true,
                    restored: true,
                    store,
                };
                a.send(drive, st.unlock_request(class, carried(store), now));
                return;
            }
            (Step::Relock { .. }, Err(e)) => {
                t.no();
                self.errors.add(e);
            }
            (
                Step::Unlock {
                    restored: true,
                    store: Store::Nothing,
                    ..
                },
                Ok(()),
            ) => {
                // Left a re-trylocked drive without storing (an unknown table,
                // or after the majority): it does not count as stored.
                t.no();
                self.errors.add(DriveError::NotHeld);
            }
            (Step::Unlock { .. }, Ok(())) => t.yes(),
            (
                Step::Unlock {
                    restored, class, ..
                },
                Err(DriveError::NotHeld),
            ) => {
                if self.lvb.is_none() {
                    t.yes();
                } else if !restored && !self.decided {
                    self.steps[drive as usize] = Step::Relock { class };
                    a.send(drive, st.request(MutexOp::Trylock, class, now));
                    return;
                } else {
                    t.no();
                    self.errors.add(DriveError::NotHeld);
                }
            }
            (
                Step::Unlock {
                    class,
                    flipped: false,
                    restored,
                    store,
                },
                Err(DriveError::WrongClass),
            ) => {
                let class = other(class);
                self.steps[drive as usize] = Step::Unlock {
                    class,
                    flipped: true,
                    restored,
                    store,
                };
                a.send(drive, st.unlock_request(class, carried(store), now));
                return;
            }
            (Step::Unlock { .. }, Err(e)) => {
                t.no();
                self.errors.add(e);
            }
        }
        self.decide();
    }

    fn on_timer(&mut self, _now: Now, _st: &mut LockState, _a: &mut Actions) {}

    fn outcome(&mut self) -> Option<Result<(), LockError>> {
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
    use uring_sg::transport::Request;
    use uring_sg::{ControlByte, Mode, MutexOp, MutexState};

    fn held(n: u16, held: &[u16]) -> LockState {
        held_in(Mode::Shared, n, held)
    }

    #[test]
    fn unlocks_every_drive_with_lvb() {
        let mut st = held(3, &[0, 1]);
        st.lvb = Some(Lvb::from_u64(0x0102_0304));
        let mut op = Release::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        assert_eq!(
            ops(&a),
            vec![
                (0, MutexOp::Unlock),
                (1, MutexOp::Unlock),
                (2, MutexOp::Unlock)
            ]
        );
        for d in 0..3 {
            let r = record_to(&a, d).unwrap();
            assert_eq!(r.lvb, Lvb::from_u64(0x0102_0304));
            assert_eq!(r.control, ControlByte::UpdateNotValid);
            assert_eq!(r.class, Class::SharedProtectedRead);
        }
        // Not valid any more from the start.
        assert_eq!(st.mode, None);
        assert_eq!(st.held_count(), 0);
        assert_eq!(st.lvb, None);
        // Drive 2 says "not held": it did not store the LVB. It gets a trylock,
        // then the unlock with the LVB again, and only then counts.
        let mut a = Actions::new();
        op.on_reply(at(1), &mut st, 2, &err(DriveError::NotHeld), &mut a);
        assert_eq!(ops(&a), vec![(2, MutexOp::Trylock)]);
        op.on_reply(at(1), &mut st, 0, &ok(), &mut a);
        assert!(op.outcome().is_none());
        // Granted: the drive's table is read first (an older value there).
        let mut a = Actions::new();
        op.on_reply(at(2), &mut st, 2, &ok(), &mut a);
        assert!(matches!(a.commands[..], [(2, Request::ReadTable { .. })]));
        let me = st.spec;
        let old = table_rec(
            me.lock_id,
            me.host_id,
            MutexState::Locked,
            Class::SharedProtectedRead,
            0x0102,
            1,
        );
        let mut a = Actions::new();
        op.on_reply(at(2), &mut st, 2, &data(table_data(&[old], 16)), &mut a);
        assert_eq!(ops(&a), vec![(2, MutexOp::Unlock)]);
        assert_eq!(record_to(&a, 2).unwrap().lvb, Lvb::from_u64(0x0102_0304));
        let mut a = Actions::new();
        op.on_reply(at(3), &mut st, 2, &ok(), &mut a);
        assert_eq!(op.outcome(), Some(Ok(())));
        assert!(!op.finished());
        op.on_reply(at(3), &mut st, 1, &err(DriveError::Timeout), &mut a);
        assert!(op.finished());
        assert!(a.commands.is_empty());
    }

    #[test]
    fn a_re_trylock_never_rolls_a_newer_value_back() {
        let mut st = held(3, &[0, 1, 2]);
        st.lvb = Some(Lvb::from_u64(183));
        let me = st.spec;
        let mut op = Release::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        let mut a = Actions::new();
        op.on_reply(at(1), &mut st, 0, &ok(), &mut a);
        op.on_reply(at(1), &mut st, 1, &err(DriveError::NotHeld), &mut a);
        op.on_reply(at(1), &mut st, 2, &err(DriveError::NotHeld), &mut a);
        // Drive 1's re-trylock is granted; its table stores 184 by now (another
        // host held and released in between): the unlock carries nothing, the
        // drive counts as stored.
        let mut a = Actions::new();
        op.on_reply(at(2), &mut st, 1, &ok(), &mut a);
        let newer = table_rec(
            me.lock_id,
            me.host_id,
            MutexState::Locked,
            Class::Exclusive,
            184,
            1,
        );
        let mut a = Actions::new();
        op.on_reply(at(2), &mut st, 1, &data(table_data(&[newer], 16)), &mut a);
        let r = record_to(&a, 1).unwrap();
        assert_eq!(r.control, ControlByte::NoUpdate);
        let mut a = Actions::new();
        op.on_reply(at(3), &mut st, 1, &ok(), &mut a);
        assert_eq!(op.outcome(), Some(Ok(())));
        // Drive 2's re-trylock is granted after the release reached its majority:
        // it leaves at once without the LVB.
        let mut a = Actions::new();
        op.on_reply(at(4), &mut st, 2, &ok(), &mut a);
        assert_eq!(ops(&a), vec![(2, MutexOp::Unlock)]);
        assert_eq!(record_to(&a, 2).unwrap().control, ControlByte::NoUpdate);
        op.on_reply(at(5), &mut st, 2, &ok(), &mut a);
        assert!(op.finished());
    }

    #[test]
    fn no_re_trylock_starts_after_the_majority() {
        let mut st = held(3, &[0, 1, 2]);
        st.lvb = Some(Lvb::from_u64(7));
        let mut op = Release::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        let mut a = Actions::new();
        op.on_reply(at(1), &mut st, 0, &ok(), &mut a);
        op.on_reply(at(1), &mut st, 1, &ok(), &mut a);
        assert_eq!(op.outcome(), Some(Ok(())));
        op.on_reply(at(2), &mut st, 2, &err(DriveError::NotHeld), &mut a);
        assert!(a.commands.is_empty());
        assert!(op.finished());
    }

    #[test]
    fn lvb_not_stored_on_a_majority_is_a_failed_release() {
        let mut st = held(3, &[0, 1, 2]);
        st.lvb = Some(Lvb::from_u64(9));
        let mut op = Release::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        let mut a = Actions::new();
        op.on_reply(at(1), &mut st, 0, &ok(), &mut a);
        // Drive 1 forgot us and another host holds it by now: the re-trylock fails.
        op.on_reply(at(1), &mut st, 1, &err(DriveError::NotHeld), &mut a);
        op.on_reply(at(2), &mut st, 1, &err(DriveError::HeldByOther), &mut a);
        op.on_reply(at(2), &mut st, 2, &err(DriveError::NotHeld), &mut a);
        op.on_reply(at(3), &mut st, 2, &err(DriveError::Busy), &mut a);
        assert!(matches!(op.outcome(), Some(Err(_))));
        assert!(op.finished());
    }

    #[test]
    fn not_held_without_an_lvb_counts_as_released() {
        let mut st = held(3, &[0, 1, 2]);
        let mut op = Release::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        let mut a = Actions::new();
        op.on_reply(at(1), &mut st, 0, &err(DriveError::NotHeld), &mut a);
        op.on_reply(at(1), &mut st, 1, &err(DriveError::NotHeld), &mut a);
        assert!(a.commands.is_empty());
        assert_eq!(op.outcome(), Some(Ok(())));
    }

    #[test]
    fn without_lvb_no_update() {
        let mut st = held(1, &[0]);
        let mut op = Release::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        assert_eq!(record_to(&a, 0).unwrap().control, ControlByte::NoUpdate);
    }

    #[test]
    fn wrong_class_retries_with_other_class() {
        let mut st = held(1, &[0]);
        let mut op = Release::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        a.clear();
        op.on_reply(at(1), &mut st, 0, &err(DriveError::WrongClass), &mut a);
        assert_eq!(record_to(&a, 0).unwrap().class, Class::Exclusive);
        assert!(!op.finished());
        op.on_reply(at(2), &mut st, 0, &ok(), &mut a);
        assert_eq!(op.outcome(), Some(Ok(())));
        assert!(op.finished());
    }

    #[test]
    fn io_majority_fails() {
        let mut st = held(3, &[0, 1, 2]);
        let mut op = Release::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        op.on_reply(at(1), &mut st, 0, &err(DriveError::Io(5)), &mut a);
        op.on_reply(at(1), &mut st, 1, &err(DriveError::Timeout), &mut a);
        assert_eq!(op.outcome(), Some(Err(LockError::Io(DriveError::Io(5)))));
    }

    #[test]
    fn not_held() {
        let mut st = LockState::new(spec(2), 1);
        let mut op = Release::new();
        let mut a = Actions::new();
        op.start(at(0), &mut st, &mut a);
        assert!(a.commands.is_empty());
        assert_eq!(op.outcome(), Some(Err(LockError::NotHeld)));
        assert!(op.finished());
    }
}
