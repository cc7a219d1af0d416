//! Monotonic time as the protocol sees it: nanoseconds since an arbitrary origin.
//!
//! The engine never reads a clock. The reactor passes `Nanos` taken from a
//! monotonic clock (`CLOCK_MONOTONIC` through `Instant`), the deterministic
//! simulation passes virtual time. All arithmetic saturates: a deadline "in the
//! far future" is [`Nanos::MAX`] and never wraps.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on (or a span of) the monotonic clock, in nanoseconds. Saturating.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Zero: the origin, or an empty span.
    pub const ZERO: Nanos = Nanos(0);
    /// The far future (never reached).
    pub const MAX: Nanos = Nanos(u64::MAX);

    /// `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms.saturating_mul(1_000_000))
    }

    /// `us` microseconds.
    pub const fn from_micros(us: u64) -> Nanos {
        Nanos(us.saturating_mul(1_000))
    }

    /// `s` seconds.
    pub const fn from_secs(s: u64) -> Nanos {
        Nanos(s.saturating_mul(1_000_000_000))
    }

    /// The span as whole milliseconds (rounded down).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// The span as nanoseconds.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at [`Nanos::MAX`].
    pub const fn saturating_add(self, d: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(d.0))
    }

    /// `self - d`, saturating at zero.
    pub const fn saturating_sub(self, d: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(d.0))
    }

    /// A span from a [`Duration`] (saturating at [`Nanos::MAX`]).
    pub fn from_duration(d: Duration) -> Nanos {
        Nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// This span as a [`Duration`].
    pub const fn to_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }
}

impl Add for Nanos {
    type Output = Nanos;
    /// Saturating addition.
    fn add(self, rhs: Nanos) -> Nanos {
        self.saturating_add(rhs)
    }
}

impl Sub for Nanos {
    type Output = Nanos;
    /// Saturating subtraction.
    fn sub(self, rhs: Nanos) -> Nanos {
        self.saturating_sub(rhs)
    }
}

impl From<Duration> for Nanos {
    fn from(d: Duration) -> Nanos {
        Nanos::from_duration(d)
    }
}

impl From<Nanos> for Duration {
    fn from(n: Nanos) -> Duration {
        n.to_duration()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates() {
        assert_eq!(Nanos::MAX + Nanos(1), Nanos::MAX);
        assert_eq!(Nanos(1) - Nanos(2), Nanos::ZERO);
        assert_eq!(Nanos::from_millis(u64::MAX), Nanos::MAX);
        assert_eq!(Nanos::from_secs(2), Nanos::from_millis(2000));
        assert_eq!(Nanos::from_micros(3), Nanos(3000));
    }

    #[test]
    fn durations() {
        let d = Duration::from_millis(1500);
        assert_eq!(Nanos::from(d), Nanos::from_millis(1500));
        assert_eq!(Duration::from(Nanos::from_millis(1500)), d);
        assert_eq!(Nanos::from_duration(Duration::MAX), Nanos::MAX);
        assert_eq!(Nanos::from_millis(1500).as_millis(), 1500);
    }
}
