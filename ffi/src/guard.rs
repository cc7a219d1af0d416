//! The C boundary: nothing unwinds into C, and every error becomes one negative
//! errno here (ARCHITECTURE.md principle 7).

use std::panic::{catch_unwind, AssertUnwindSafe};

use idm_engine::api::EngineError;

/// Errno values the library reports itself (the engine maps its own errors).
pub(crate) mod errno {
    /// No such file or entry.
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Bad handle.
    pub const EBADF: i32 = 9;
    /// Out of memory / resources.
    pub const ENOMEM: i32 = 12;
    /// Busy.
    pub const EBUSY: i32 = 16;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Argument list too long (a kill path too long).
    pub const E2BIG: i32 = 7;
}

/// The positive errno of `e` at the C boundary.
pub fn errno_of(e: &EngineError) -> i32 {
    e.errno()
}

/// Runs `f` for the C function `name`: its `Err(errno)` (positive) becomes
/// `-errno`, and a panic becomes `-EIO` and a log line.
pub(crate) fn guarded(name: &str, f: impl FnOnce() -> Result<(), i32>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => -e.abs(),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            tracing::error!(function = name, panic = %msg, "panic caught at the C boundary");
            -errno::EIO
        }
    }
}

/// Like [`guarded`] for functions returning a non-negative count on success.
pub(crate) fn guarded_count(name: &str, f: impl FnOnce() -> Result<usize, i32>) -> i64 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(n)) => i64::try_from(n).unwrap_or(i64::MAX),
        Ok(Err(e)) => -i64::from(e.abs()),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            tracing::error!(function = name, panic = %msg, "panic caught at the C boundary");
            -i64::from(errno::EIO)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_negative_and_panics_are_eio() {
        assert_eq!(guarded("t", || Ok(())), 0);
        assert_eq!(guarded("t", || Err(errno::EINVAL)), -22);
        assert_eq!(guarded("t", || panic!("boom")), -5);
        assert_eq!(guarded_count("t", || Ok(7)), 7);
        assert_eq!(guarded_count("t", || Err(errno::EBUSY)), -16);
        assert_eq!(guarded_count("t", || panic!("boom")), -5);
    }
}
