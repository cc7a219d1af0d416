//! The engine's error type: everything an API call can fail with, with its errno.

use crate::error::LockError;
use uring_sg::codec::answer::libc_errno;

/// `ENODEV`: no watchdog device to arm.
const ENODEV: i32 = 19;

/// Why an engine call failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum EngineError {
    /// The protocol's answer (busy, not held, I/O, deadline...).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The lock is already held (or being acquired) in this lockspace.
    #[error("lock already held in this lockspace")]
    AlreadyHeld,
    /// The lock is not held in this lockspace (unlock, convert, LVB of an unknown lock).
    #[error("lock not held in this lockspace")]
    NotHeld,
    /// The lockspace was fenced (its leases could not be renewed); it takes no new work.
    #[error("lockspace {0:?} is fenced: its leases could not be renewed")]
    Fenced(String),
    /// A drive could not be opened.
    #[error("drive {drive}: {reason}")]
    Drive {
        /// The drive as the caller named it.
        drive: String,
        /// What went wrong.
        reason: String,
    },
    /// The caller's request is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The engine is stopping or stopped.
    #[error("engine stopped")]
    Stopped,
    /// The engine could not start (ring, threads, simulator).
    #[error("engine start failed: {0}")]
    Start(String),
    /// The lockspace requires a watchdog and none can be armed.
    #[error("watchdog required but not available: {0}")]
    NoWatchdog(String),
}

impl EngineError {
    /// The positive errno this error is reported with at the C boundary.
    pub fn errno(&self) -> i32 {
        match self {
            EngineError::Lock(e) => e.errno(),
            EngineError::AlreadyHeld => libc_errno::EBUSY,
            EngineError::NotHeld => libc_errno::ENOENT,
            EngineError::Fenced(_) => libc_errno::ETIME,
            EngineError::Drive { .. } => libc_errno::ENOENT,
            EngineError::InvalidArgument(_) => libc_errno::EINVAL,
            EngineError::Stopped => libc_errno::EIO,
            EngineError::Start(_) => libc_errno::EIO,
            EngineError::NoWatchdog(_) => ENODEV,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos() {
        assert_eq!(EngineError::Lock(LockError::Busy).errno(), 16);
        assert_eq!(EngineError::AlreadyHeld.errno(), 16);
        assert_eq!(EngineError::NotHeld.errno(), 2);
        assert_eq!(EngineError::Fenced("vg".into()).errno(), 62);
        assert_eq!(EngineError::InvalidArgument("x".into()).errno(), 22);
        assert_eq!(EngineError::Stopped.errno(), 5);
        assert_eq!(EngineError::NoWatchdog("none".into()).errno(), 19);
    }
}
