//! The engine's statistics as callers see them.

use crate::locks::OpKind;
use crate::shared::{DriveHealth, ReactorStats};

/// Latency summary of one operation kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpSummary {
    /// Operations finished (with or without error).
    pub count: u64,
    /// Of which failed.
    pub errors: u64,
    /// Median latency, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Worst, ns.
    pub max_ns: u64,
}

/// Everything the engine counted, merged over its reactors.
#[derive(Clone, Debug)]
pub struct EngineStats {
    /// Reactor threads.
    pub reactors: usize,
    /// The merged counters and histograms (raw, for benchmarks).
    pub total: ReactorStats,
}

impl EngineStats {
    /// The summary of one operation kind.
    pub fn op(&self, kind: OpKind) -> OpSummary {
        let h = &self.total.latency[kind.index()];
        OpSummary {
            count: h.len(),
            errors: self.total.errors[kind.index()],
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }

    /// Drive commands sent.
    pub fn commands(&self) -> u64 {
        self.total.commands
    }

    /// Renewals that reached a majority.
    pub fn renewals(&self) -> u64 {
        self.total.renewals
    }

    /// Renewals that did not.
    pub fn renew_failures(&self) -> u64 {
        self.total.renew_failures
    }

    /// Lockspaces fenced.
    pub fn fences(&self) -> u64 {
        self.total.fences
    }

    /// Every drive as each reactor saw it: name and health.
    pub fn drives(&self) -> &[(String, DriveHealth)] {
        &self.total.drives
    }
}

impl std::fmt::Display for EngineStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<11} {:>9} {:>7} {:>10} {:>10} {:>10}",
            "operation", "count", "errors", "p50 µs", "p99 µs", "p99.9 µs"
        )?;
        for kind in OpKind::ALL {
            let s = self.op(kind);
            if s.count == 0 {
                continue;
            }
            writeln!(
                f,
                "{:<11} {:>9} {:>7} {:>10.1} {:>10.1} {:>10.1}",
                kind.name(),
                s.count,
                s.errors,
                s.p50_ns as f64 / 1e3,
                s.p99_ns as f64 / 1e3,
                s.p999_ns as f64 / 1e3
            )?;
        }
        write!(
            f,
            "commands {}  renewals {} (failed {})  fences {}  reactors {}",
            self.total.commands,
            self.total.renewals,
            self.total.renew_failures,
            self.total.fences,
            self.reactors
        )
    }
}
