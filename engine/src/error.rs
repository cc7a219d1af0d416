//! The engine's one error type for lock operations, with the errno each maps to.
//!
//! Errors are values all the way up; the C boundary maps them to a negative errno
//! with [`LockError::errno`] exactly once.

use uring_sg::codec::answer::libc_errno;
use uring_sg::DriveError;

/// Why a lock operation failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LockError {
    /// Another live host holds the lock in a conflicting mode (contention).
    #[error("lock is held by another host")]
    Busy,
    /// The operation needs the lock held by this host, and it is not.
    #[error("lock is not held")]
    NotHeld,
    /// No drive of the lock knows the mutex.
    #[error("lock not found on any drive")]
    NotFound,
    /// Drives failed at the transport level (or with errors that say nothing about
    /// the mutex) so that no majority answered. Carries one representative error.
    #[error("I/O error on the lock's drives: {0}")]
    Io(DriveError),
    /// The operation's deadline passed before a majority could be reached.
    #[error("deadline passed")]
    Timeout,
    /// A mode conversion was refused; the lock is left in its old mode.
    #[error("mode conversion refused")]
    ConvertFailed,
    /// A drive's mutex table is full and no unlocked mutex could be freed.
    #[error("drive mutex table full")]
    TableFull,
    /// The request itself is invalid (e.g. an acquire of a lock already held).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The devices are not IDM drives (they refuse the IDM opcode).
    #[error("not an IDM drive")]
    NotIdm,
    /// Renewal could not reach a majority: the lease is being lost.
    #[error("lease renewal failed on a majority of drives")]
    LeaseLost,
}

impl LockError {
    /// The (positive) errno this error is reported with at the C boundary.
    pub fn errno(self) -> i32 {
        match self {
            LockError::Busy => libc_errno::EBUSY,
            LockError::NotHeld | LockError::NotFound => libc_errno::ENOENT,
            LockError::Io(_) => libc_errno::EIO,
            LockError::Timeout => libc_errno::ETIMEDOUT,
            LockError::ConvertFailed => libc_errno::EPERM,
            LockError::TableFull => libc_errno::ENOMEM,
            LockError::InvalidArgument(_) | LockError::NotIdm => libc_errno::EINVAL,
            LockError::LeaseLost => libc_errno::ETIME,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos() {
        assert_eq!(LockError::Busy.errno(), 16);
        assert_eq!(LockError::NotHeld.errno(), 2);
        assert_eq!(LockError::NotFound.errno(), 2);
        assert_eq!(LockError::Io(DriveError::Timeout).errno(), 5);
        assert_eq!(LockError::Timeout.errno(), 110);
        assert_eq!(LockError::ConvertFailed.errno(), 1);
        assert_eq!(LockError::TableFull.errno(), 12);
        assert_eq!(LockError::InvalidArgument("x").errno(), 22);
        assert_eq!(LockError::NotIdm.errno(), 22);
        assert_eq!(LockError::LeaseLost.errno(), 62);
    }
}
