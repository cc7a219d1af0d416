//! The quorum protocol (IDM.md §7) as sans-IO state machines, one per operation.
//!
//! # The contract with the reactor
//!
//! An operation is a value implementing [`Operation`]. The reactor (or a test, or
//! the deterministic simulation) drives it:
//!
//! 1. [`Operation::start`] once, then [`Operation::on_reply`] for every reply and
//!    [`Operation::on_timer`] when the timer it asked for is due. Each call gets the
//!    current [`Now`], the lock's [`LockState`] and an [`Actions`] to fill. The caller
//!    clears the `Actions` between calls (keeping its `Vec`, so steady state does not
//!    allocate per command).
//! 2. **Every command emitted gets exactly one reply.** A transport timeout or
//!    failure arrives as a [`Reply`] with `Err(DriveError::Timeout)` / `Err(Io)`.
//!    An operation has **at most one command outstanding per drive**, so a reply is
//!    identified by `(operation, drive)` alone.
//! 3. **Send time**: a command's send time is the `now.mono` at which it was
//!    emitted. The reactor submits it in the same loop turn, so the real send is
//!    later, and trusting a grant until `emit_time + countdown` is conservative.
//! 4. **Timer**: after every call, `actions.timer` is the one wake-up the operation
//!    wants (`None`: no timer). It *replaces* any earlier timer of this operation.
//!    `on_timer` may be called early or spuriously; operations check the time.
//! 5. **Outcome**: [`Operation::outcome`] returns the result once (then `None`). It
//!    may be ready long before the operation is [`Operation::finished`]: acquire
//!    answers at quorum and keeps consuming the late replies (a late grant joins the
//!    held set, or is unlocked if the acquire failed).
//! 6. **Serialization**: operations on one lock are serialized by their outcome.
//!    The lock table ([`crate::locks::LockTable`]) starts the next operation on a
//!    lock as soon as the previous one *reported* its outcome, and then drops it:
//!    the commands it still had in flight become the lock's stragglers, whose
//!    replies the table absorbs against the lock's current state
//!    ([`crate::locks`]'s `late` rules). An operation's behaviour after its
//!    outcome (late grants joining, stale grants released) therefore matters only
//!    when it is driven alone (unit tests); [`Operation::finished`] says when it
//!    would be done.
//!
//! Drives are numbered `0..n_drives` within the lock; the reactor maps numbers to
//! devices.

pub mod acquire;
pub mod convert;
pub mod destroy;
pub mod lock_state;
pub mod lvb;
pub mod query;
pub mod quorum;
pub mod release;
pub mod renew;
pub mod table;

pub use acquire::{Acquire, Acquired};
pub use convert::Convert;
pub use destroy::Destroy;
pub use lock_state::{DriveHold, LockSpec, LockState, XorShift64};
pub use lvb::ReadLvb;
pub use query::{GetHostCount, GetMode, HostCount};
pub use quorum::{majority, Tally};
pub use release::Release;
pub use renew::{Renew, Renewed};

use uring_sg::transport::{Reply, Request};

use crate::error::LockError;
use crate::time::Nanos;

/// The time an operation is called at.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Now {
    /// Monotonic time: all protocol arithmetic (send times, deadlines, leases).
    pub mono: Nanos,
    /// Wall clock, ms since the epoch: only written into the record's time field
    /// (the drive records it as last-modified time). Never used for decisions.
    pub wall_ms: u64,
}

/// What an operation asks the reactor to do after one call.
#[derive(Clone, Debug, Default)]
pub struct Actions {
    /// Commands to send now: `(drive number, request)`.
    pub commands: Vec<(u16, Request)>,
    /// The one wake-up the operation wants; replaces the previous one. `None`: none.
    pub timer: Option<Nanos>,
}

impl Actions {
    /// Empty actions.
    pub fn new() -> Actions {
        Actions::default()
    }

    /// Empties the actions, keeping the command buffer's allocation.
    pub fn clear(&mut self) {
        self.commands.clear();
        self.timer = None;
    }

    /// Queues `req` for `drive`.
    pub fn send(&mut self, drive: u16, req: Request) {
        self.commands.push((drive, req));
    }
}

/// One lock operation as a state machine. See the module docs for the contract.
pub trait Operation {
    /// What a successful operation returns.
    type Output;

    /// Starts the operation: emits its first commands (or finishes at once).
    fn start(&mut self, now: Now, state: &mut LockState, actions: &mut Actions);

    /// Feeds the reply to the one outstanding command on `drive`.
    fn on_reply(
        &mut self,
        now: Now,
        state: &mut LockState,
        drive: u16,
        reply: &Reply,
        actions: &mut Actions,
    );

    /// The timer the operation asked for is due (or the call is spurious).
    fn on_timer(&mut self, now: Now, state: &mut LockState, actions: &mut Actions);

    /// The result, returned once when ready.
    fn outcome(&mut self) -> Option<Result<Self::Output, LockError>>;

    /// No command outstanding and no timer: the next operation on the lock may start.
    fn finished(&self) -> bool;
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers to drive operations with exact drive answers.
    use super::*;
    use uring_sg::{Class, DriveError, HostId, LockId, MutexOp, Record};

    pub fn spec(n: u16) -> LockSpec {
        LockSpec {
            lock_id: "lock-a".parse().unwrap_or_default(),
            host_id: "host-1".parse().unwrap_or_default(),
            n_drives: n,
            countdown_ms: 1000,
        }
    }

    /// A lock of `n` drives held in `mode` on the drives `held` (granted at 0).
    pub fn held_in(mode: uring_sg::Mode, n: u16, held: &[u16]) -> LockState {
        let mut st = LockState::new(spec(n), 1);
        st.mode = Some(mode);
        for d in held {
            st.grant(*d, mode.class(), Nanos::ZERO, false);
        }
        st
    }

    pub fn at(ms: u64) -> Now {
        Now {
            mono: Nanos::from_millis(ms),
            wall_ms: 1_700_000_000_000 + ms,
        }
    }

    pub fn ok() -> Reply {
        Reply {
            result: Ok(()),
            data: Vec::new(),
        }
    }

    pub fn err(e: DriveError) -> Reply {
        Reply::err(e)
    }

    pub fn data(d: Vec<u8>) -> Reply {
        Reply {
            result: Ok(()),
            data: d,
        }
    }

    /// The ops of the emitted mutex writes, per drive, in order.
    pub fn ops(a: &Actions) -> Vec<(u16, MutexOp)> {
        a.commands
            .iter()
            .filter_map(|(d, r)| match r {
                Request::Mutex { op, .. } => Some((*d, *op)),
                _ => None,
            })
            .collect()
    }

    /// The record of the one mutex write to `drive`.
    pub fn record_to(a: &Actions, drive: u16) -> Option<Record> {
        a.commands.iter().find_map(|(d, r)| match r {
            Request::Mutex { record, .. } if *d == drive => Some(*record),
            _ => None,
        })
    }

    /// A table record of `lock` by `host`.
    pub fn table_rec(
        lock: LockId,
        host: HostId,
        state: uring_sg::MutexState,
        class: Class,
        lvb: u64,
        time_ms: u64,
    ) -> Record {
        let mut r = Record::new(lock, host, class);
        r.state = state;
        r.lvb = uring_sg::Lvb::from_u64(lvb);
        r.time_ms = time_ms;
        r
    }

    /// Table-read data holding `recs`, padded with zero records to `len` records.
    pub fn table_data(recs: &[Record], len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len.max(recs.len()) * uring_sg::RECORD_LEN];
        for (i, r) in recs.iter().enumerate() {
            out[i * uring_sg::RECORD_LEN..(i + 1) * uring_sg::RECORD_LEN]
                .copy_from_slice(&r.encode());
        }
        out
    }
}

/// The most drives one lock may span (`ILM_DRIVE_MAX_NUM`).
pub const MAX_DRIVES: u16 = 512;

/// Why a lock's state cannot be operated on: no drives, too many, or a drive
/// vector that does not match the spec.
pub(crate) fn invalid_spec(st: &LockState) -> Option<LockError> {
    let n = st.spec.n_drives;
    if n == 0 || n > MAX_DRIVES {
        Some(LockError::InvalidArgument("a lock spans 1..=512 drives"))
    } else if st.drives.len() != n as usize {
        Some(LockError::InvalidArgument(
            "drive state does not match the lock spec",
        ))
    } else {
        None
    }
}

/// Collects the drive errors of an operation that failed without contention and
/// turns them into the one [`LockError`] to report.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ErrorSummary {
    first: Option<uring_sg::DriveError>,
    not_idm: bool,
    busy: bool,
}

impl ErrorSummary {
    /// Records one drive's error.
    pub(crate) fn add(&mut self, e: uring_sg::DriveError) {
        use uring_sg::DriveError::*;
        match e {
            InvalidOpcode => self.not_idm = true,
            Busy | HeldByOther => self.busy = true,
            _ => {}
        }
        self.first = self.first.or(Some(e));
    }

    /// The error to report: not an IDM drive, busy (live holders), else I/O.
    pub(crate) fn error(&self) -> LockError {
        if self.not_idm {
            LockError::NotIdm
        } else if self.busy {
            LockError::Busy
        } else {
            LockError::Io(self.first.unwrap_or(uring_sg::DriveError::Malformed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use uring_sg::Mode;

    /// Every operation refuses a lock with no drives at once, and is finished.
    #[test]
    fn invalid_spec_everywhere() {
        fn check<O: Operation>(mut op: O, held: bool) {
            let mut st = LockState::new(spec(0), 1);
            if held {
                st.mode = Some(Mode::Exclusive);
            }
            let mut a = Actions::new();
            op.start(at(0), &mut st, &mut a);
            assert!(a.commands.is_empty());
            assert!(matches!(
                op.outcome(),
                Some(Err(LockError::InvalidArgument(_)))
            ));
            assert!(op.finished());
        }
        check(Acquire::new(Mode::Exclusive, Nanos::MAX, false), false);
        check(Release::new(), true);
        check(Renew::new(), true);
        check(Convert::new(Mode::Shared), true);
        check(ReadLvb::new(), false);
        check(GetHostCount::new(), false);
        check(GetMode::new(), false);
        check(Destroy::new(), false);
    }
}
