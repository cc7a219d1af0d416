//! Per-drive reply latency: how long after receiving a command the simulated
//! drive's reply is sent.
//!
//! Text form (command line): `none`, `fixed:US`, `uniform:LO-HI` (µs, inclusive),
//! `tail:MEDIAN_US,P99_US`. The heavy-tail model is a lognormal with that median
//! and 99th percentile (σ = ln(p99/median) / 2.3263), capped at 10 × p99 so one
//! sample cannot stall a test for minutes. Samples come from the caller's seeded
//! `SmallRng`, so a seed replays the same latencies for the same command order.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The 99th percentile of the standard normal distribution.
const Z99: f64 = 2.326_347_874;
/// Tail samples are capped at this multiple of p99.
const TAIL_CAP: f64 = 10.0;

/// A latency model for one drive. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Latency {
    /// Answer at once.
    #[default]
    None,
    /// Always this many µs.
    Fixed {
        /// µs.
        us: u64,
    },
    /// Uniform in `lo..=hi` µs.
    Uniform {
        /// Lowest, µs.
        lo: u64,
        /// Highest, µs.
        hi: u64,
    },
    /// Lognormal with this median and p99 (µs), capped at 10 × p99.
    Tail {
        /// Median, µs.
        median: u64,
        /// 99th percentile, µs.
        p99: u64,
    },
}

/// Why a latency text did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad latency `{0}`: expected none, fixed:US, uniform:LO-HI or tail:MEDIAN_US,P99_US")]
pub struct ParseLatencyError(pub String);

impl Latency {
    /// Draws one latency.
    pub fn sample(&self, rng: &mut SmallRng) -> Duration {
        let us = match *self {
            Latency::None => 0,
            Latency::Fixed { us } => us,
            Latency::Uniform { lo, hi } => {
                if hi <= lo {
                    lo
                } else {
                    rng.gen_range(lo..=hi)
                }
            }
            Latency::Tail { median, p99 } => {
                if median == 0 {
                    0
                } else {
                    let sigma = ((p99.max(median) as f64) / median as f64).ln() / Z99;
                    // Box–Muller: one standard normal from two uniforms in (0, 1].
                    let u1: f64 = 1.0 - rng.gen::<f64>();
                    let u2: f64 = rng.gen::<f64>();
                    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    let v = (median as f64) * (sigma * z).exp();
                    v.min(TAIL_CAP * p99.max(median) as f64) as u64
                }
            }
        };
        Duration::from_micros(us)
    }

    /// Whether every sample is zero.
    pub fn is_none(&self) -> bool {
        matches!(
            self,
            Latency::None | Latency::Fixed { us: 0 } | Latency::Uniform { lo: 0, hi: 0 }
        )
    }
}

impl FromStr for Latency {
    type Err = ParseLatencyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseLatencyError(s.to_string());
        let num = |t: &str| t.trim().parse::<u64>().map_err(|_| bad());
        if s == "none" {
            return Ok(Latency::None);
        }
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "fixed" => Ok(Latency::Fixed { us: num(rest)? }),
            "uniform" => {
                let (lo, hi) = rest.split_once('-').ok_or_else(bad)?;
                let (lo, hi) = (num(lo)?, num(hi)?);
                if lo > hi {
                    return Err(bad());
                }
                Ok(Latency::Uniform { lo, hi })
            }
            "tail" => {
                let (m, p) = rest.split_once(',').ok_or_else(bad)?;
                let (median, p99) = (num(m)?, num(p)?);
                if p99 < median {
                    return Err(bad());
                }
                Ok(Latency::Tail { median, p99 })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::None => f.write_str("none"),
            Latency::Fixed { us } => write!(f, "fixed:{us}"),
            Latency::Uniform { lo, hi } => write!(f, "uniform:{lo}-{hi}"),
            Latency::Tail { median, p99 } => write!(f, "tail:{median},{p99}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parse_and_print() {
        for s in ["none", "fixed:100", "uniform:10-200", "tail:100,2000"] {
            let l: Latency = s.parse().unwrap();
            assert_eq!(l.to_string(), s);
        }
        for s in [
            "",
            "fixed",
            "fixed:x",
            "uniform:5-1",
            "tail:100",
            "tail:10,5",
            "slow:1",
        ] {
            assert!(s.parse::<Latency>().is_err(), "{s}");
        }
    }

    #[test]
    fn samples_stay_in_range_and_replay() {
        let mut a = SmallRng::seed_from_u64(7);
        let mut b = SmallRng::seed_from_u64(7);
        let u = Latency::Uniform { lo: 10, hi: 20 };
        let t = Latency::Tail {
            median: 100,
            p99: 1000,
        };
        for _ in 0..1000 {
            let x = u.sample(&mut a);
            assert_eq!(x, u.sample(&mut b));
            assert!((10..=20).contains(&x.as_micros()));
            let y = t.sample(&mut a);
            assert_eq!(y, t.sample(&mut b));
            assert!(y.as_micros() <= 10_000);
        }
        assert_eq!(
            Latency::Fixed { us: 5 }.sample(&mut a),
            Duration::from_micros(5)
        );
    }
}
