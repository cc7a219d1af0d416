//! What a caller asks of one lock, in the table's terms (drives resolved to ids,
//! deadlines on the table's monotonic scale), and the protocol operation that runs it.

use uring_sg::{Lvb, Mode};

use super::op::{DynOp, Erased, OpKind, OpOutput};
use super::DriveId;
use crate::protocol::{Acquire, Convert, GetHostCount, GetMode, ReadLvb, Release, Renew};
use crate::time::Nanos;

/// One caller request on one lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockRequest {
    /// Acquire in `mode` on `drives`.
    Acquire {
        /// EX or SH.
        mode: Mode,
        /// The drives the lock spans (ids of the table's drives, no duplicates).
        drives: Vec<DriveId>,
        /// Give up at this time (monotonic).
        deadline: Nanos,
        /// Return "busy" at once on live contention.
        no_wait: bool,
    },
    /// Release, storing the LVB if one was written (never when fenced).
    Release,
    /// Convert a held lock to `mode`.
    Convert {
        /// The new mode.
        mode: Mode,
    },
    /// Read the LVB from a majority of the drives.
    ReadLvb,
    /// Set the LVB the release stores (no drive command).
    WriteLvb(Lvb),
    /// Count the other hosts holding the lock on `drives` (held by us or not).
    HostCount {
        /// The drives to ask.
        drives: Vec<DriveId>,
    },
    /// The lock's mode on `drives` (held by us or not).
    Mode {
        /// The drives to ask.
        drives: Vec<DriveId>,
    },
}

impl LockRequest {
    /// The operation kind this request runs (`None`: no drive operation).
    pub fn kind(&self) -> Option<OpKind> {
        Some(match self {
            LockRequest::Acquire { .. } => OpKind::Acquire,
            LockRequest::Release => OpKind::Release,
            LockRequest::Convert { .. } => OpKind::Convert,
            LockRequest::ReadLvb => OpKind::ReadLvb,
            LockRequest::HostCount { .. } => OpKind::HostCount,
            LockRequest::Mode { .. } => OpKind::Mode,
            LockRequest::WriteLvb(_) => return None,
        })
    }
}

/// What the table runs on a lock: a caller's request or its own renewal, or a
/// release made on the caller's behalf (a grant that came too late to use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    Caller(LockRequest),
    Renew,
    /// A release after which the lockspace must not store anything: no LVB, no
    /// re-trylock (the lease lapsed or the lockspace was fenced).
    FencedRelease,
    /// A read of the LVB nobody asked for yet, right after an acquire of a lock
    /// whose LVB its holders read (see "LVB prefetch" in the module docs of
    /// `locks`).
    PrefetchLvb,
}

impl Work {
    /// The operation kind this work runs (`None`: none).
    pub(crate) fn kind(&self) -> Option<OpKind> {
        match self {
            Work::Caller(r) => r.kind(),
            Work::Renew => Some(OpKind::Renew),
            Work::FencedRelease => Some(OpKind::Release),
            Work::PrefetchLvb => Some(OpKind::ReadLvb),
        }
    }
}

/// Builds the state machine for `work` (`None` for work that needs no drive
/// operation: write LVB is handled by the table itself).
pub(crate) fn build(work: &Work) -> Option<Box<dyn DynOp>> {
    Some(match work {
        Work::Caller(LockRequest::Acquire {
            mode,
            deadline,
            no_wait,
            ..
        }) => Erased::boxed(
            Acquire::new(*mode, *deadline, *no_wait),
            OpKind::Acquire,
            |_| OpOutput::Done,
        ),
        Work::Caller(LockRequest::Release) => {
            Erased::boxed(Release::new(), OpKind::Release, |()| OpOutput::Done)
        }
        Work::FencedRelease => {
            Erased::boxed(Release::fenced(), OpKind::Release, |()| OpOutput::Done)
        }
        Work::Renew => Erased::boxed(Renew::new(), OpKind::Renew, |_| OpOutput::Done),
        Work::Caller(LockRequest::Convert { mode }) => {
            Erased::boxed(Convert::new(*mode), OpKind::Convert, |()| OpOutput::Done)
        }
        Work::Caller(LockRequest::ReadLvb) | Work::PrefetchLvb => {
            Erased::boxed(ReadLvb::new(), OpKind::ReadLvb, OpOutput::Lvb)
        }
        Work::Caller(LockRequest::HostCount { .. }) => {
            Erased::boxed(GetHostCount::new(), OpKind::HostCount, |c| {
                OpOutput::HostCount {
                    others: c.others,
                    held_by_self: c.held_by_self,
                }
            })
        }
        Work::Caller(LockRequest::Mode { .. }) => {
            Erased::boxed(GetMode::new(), OpKind::Mode, OpOutput::Mode)
        }
        Work::Caller(LockRequest::WriteLvb(_)) => return None,
    })
}
