//! Type-erased operations: how the lock table runs any protocol [`Operation`] and
//! hands its outcome to the caller.

use crate::error::LockError;
use crate::protocol::{Actions, LockState, Now, Operation};
use uring_sg::transport::Reply;

/// Which operation a running op is (for stats and for the reactor's bookkeeping
/// after it completes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum OpKind {
    /// Acquire (EX or SH).
    Acquire,
    /// Release.
    Release,
    /// Renewal (internal).
    Renew,
    /// Mode conversion.
    Convert,
    /// Read of the LVB.
    ReadLvb,
    /// Count of other hosts holding the lock.
    HostCount,
    /// The lock's mode as the drives see it.
    Mode,
    /// Removal of the mutex from the drives.
    Destroy,
}

impl OpKind {
    /// Every kind, in stats order.
    pub const ALL: [OpKind; 8] = [
        OpKind::Acquire,
        OpKind::Release,
        OpKind::Renew,
        OpKind::Convert,
        OpKind::ReadLvb,
        OpKind::HostCount,
        OpKind::Mode,
        OpKind::Destroy,
    ];

    /// A short name for stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Acquire => "lock",
            OpKind::Release => "unlock",
            OpKind::Renew => "renew",
            OpKind::Convert => "convert",
            OpKind::ReadLvb => "read_lvb",
            OpKind::HostCount => "host_count",
            OpKind::Mode => "mode",
            OpKind::Destroy => "destroy",
        }
    }

    /// Index into [`OpKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a successful operation gives back, whatever its kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OpOutput {
    /// Done, nothing to return.
    Done,
    /// An LVB value.
    Lvb(uring_sg::Lvb),
    /// Other hosts holding the lock, and whether this host holds it.
    HostCount {
        /// Other hosts (maximum over the drives).
        others: u32,
        /// This host holds it on a majority.
        held_by_self: bool,
    },
    /// The lock's mode on the drives (`None`: unlocked everywhere it is known).
    Mode(Option<uring_sg::Mode>),
}

/// A protocol operation with its output mapped to [`OpOutput`].
pub trait DynOp: Send {
    /// See [`Operation::start`].
    fn start(&mut self, now: Now, state: &mut LockState, actions: &mut Actions);
    /// See [`Operation::on_reply`].
    fn on_reply(
        &mut self,
        now: Now,
        state: &mut LockState,
        drive: u16,
        reply: &Reply,
        actions: &mut Actions,
    );
    /// See [`Operation::on_timer`].
    fn on_timer(&mut self, now: Now, state: &mut LockState, actions: &mut Actions);
    /// See [`Operation::outcome`].
    fn outcome(&mut self) -> Option<Result<OpOutput, LockError>>;
    /// See [`Operation::finished`].
    fn finished(&self) -> bool;
    /// Which operation this is.
    fn kind(&self) -> OpKind;
}

/// An [`Operation`] plus the mapping of its output.
pub struct Erased<O: Operation> {
    op: O,
    kind: OpKind,
    map: fn(O::Output) -> OpOutput,
}

impl<O: Operation + Send + 'static> Erased<O> {
    /// Boxes `op` of `kind`, mapping its output with `map`.
    pub fn boxed(op: O, kind: OpKind, map: fn(O::Output) -> OpOutput) -> Box<dyn DynOp> {
        Box::new(Erased { op, kind, map })
    }
}

impl<O: Operation + Send> DynOp for Erased<O> {
    fn start(&mut self, now: Now, state: &mut LockState, actions: &mut Actions) {
        self.op.start(now, state, actions)
    }
    fn on_reply(
        &mut self,
        now: Now,
        state: &mut LockState,
        drive: u16,
        reply: &Reply,
        actions: &mut Actions,
    ) {
        self.op.on_reply(now, state, drive, reply, actions)
    }
    fn on_timer(&mut self, now: Now, state: &mut LockState, actions: &mut Actions) {
        self.op.on_timer(now, state, actions)
    }
    fn outcome(&mut self) -> Option<Result<OpOutput, LockError>> {
        self.op.outcome().map(|r| r.map(self.map))
    }
    fn finished(&self) -> bool {
        self.op.finished()
    }
    fn kind(&self) -> OpKind {
        self.kind
    }
}
