//! What callers send a reactor, and what comes back.

use std::sync::Arc;
use std::time::Instant;

use uring_sg::{LockId, Lvb, Mode};

use super::{EngineError, LockspaceShared, ReactorStats};
use crate::completion::Completer;

/// The drives of one request, as the caller named them, in a single allocation
/// (the names joined by NUL: no device path or drive name contains one), so a lock
/// on 512 drives costs one allocation, not 512.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveNames(Arc<str>);

impl DriveNames {
    /// The names, in order; refused if one is empty or contains a NUL byte.
    pub fn new(names: &[impl AsRef<str>]) -> Result<DriveNames, EngineError> {
        let mut joined = String::with_capacity(names.iter().map(|n| n.as_ref().len() + 1).sum());
        for (i, n) in names.iter().enumerate() {
            let n = n.as_ref();
            if n.is_empty() || n.contains('\0') {
                return Err(EngineError::InvalidArgument(format!(
                    "drive name {n:?} is empty or contains a NUL byte"
                )));
            }
            if i > 0 {
                joined.push('\0');
            }
            joined.push_str(n);
        }
        Ok(DriveNames(Arc::from(joined)))
    }

    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split('\0').filter(|n| !n.is_empty())
    }

    /// How many drives.
    pub fn len(&self) -> usize {
        self.iter().count()
    }
}

pub use crate::locks::{LockspaceId, OpResult};

/// What a caller asks of one lock.
#[derive(Clone, Debug)]
pub enum OpRequest {
    /// Acquire in `mode` on `drives`.
    Acquire {
        /// EX or SH.
        mode: Mode,
        /// The drives the lock spans, as the caller names them.
        drives: DriveNames,
        /// Give up at this time.
        deadline: Instant,
        /// Return "busy" at once on live contention.
        no_wait: bool,
    },
    /// Release (storing the LVB if one was written).
    Release,
    /// Convert to `mode`. Convert, read LVB, host count and mode have no deadline
    /// of their own: each drive command is bounded by the engine's command
    /// timeout, and so is the operation (its rounds are few and bounded).
    Convert {
        /// The new mode.
        mode: Mode,
    },
    /// Read the LVB from a majority of the drives.
    ReadLvb,
    /// Set the LVB stored at release (no drive command).
    WriteLvb(Lvb),
    /// Count other hosts holding the lock on `drives` (held or not by us).
    HostCount {
        /// The drives to ask.
        drives: DriveNames,
    },
    /// The lock's mode on `drives` (held or not by us).
    Mode {
        /// The drives to ask.
        drives: DriveNames,
    },
}

/// A message to a reactor.
pub enum Msg {
    /// One lock operation.
    Op {
        /// The lockspace it belongs to.
        ls: LockspaceId,
        /// The lock.
        lock: LockId,
        /// What to do.
        req: OpRequest,
        /// Where the result goes.
        done: Completer<OpResult>,
    },
    /// A lockspace now exists (its shared state for renewal and fencing).
    AddLockspace(Arc<LockspaceShared>),
    /// A lockspace is going away: release (or just forget) its locks here.
    DropLockspace {
        /// Which.
        ls: LockspaceId,
        /// Release its locks on the drives (`false`: forget them, leaving the
        /// drives to expire them, as `ilm_disconnect` does).
        release: bool,
        /// Completed once every lock of the lockspace here is gone.
        done: Completer<()>,
    },
    /// Until when held lock `lock` of `ls` is valid (`None`: not held here, or
    /// no validity left).
    ValidUntil {
        /// The lockspace.
        ls: LockspaceId,
        /// The lock.
        lock: LockId,
        /// Where the answer goes.
        done: Completer<Option<Instant>>,
    },
    /// Ask for this reactor's statistics.
    Stats(Completer<Option<ReactorStats>>),
    /// Finish: release nothing, stop the thread once in-flight commands are reaped.
    Stop,
}

/// The value a caller gets when its operation is dropped unfinished.
pub fn stopped() -> OpResult {
    Err(EngineError::Stopped)
}
