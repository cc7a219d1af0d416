//! The report: every scenario's rows, the headline ratios to the same-run
//! baseline, the targets, a table on stdout and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::common::Side;
use crate::contention::ConRow;
use crate::latency::LatRow;
use crate::quorum::QuorumRow;
use crate::renewal::RenRow;
use crate::throughput::ThrRow;

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// Machine description.
    pub machine: String,
    /// `--quick` run (tiny sizes: figures mean nothing).
    pub quick: bool,
    /// Scenario 1.
    pub latency: Vec<LatRow>,
    /// Scenario 2.
    pub throughput: Vec<ThrRow>,
    /// Scenario 3.
    pub renewal: Vec<RenRow>,
    /// Scenario 4.
    pub contention: Vec<ConRow>,
    /// Scenario 5.
    pub quorum: Vec<QuorumRow>,
    /// Engine (socket) against baseline, same run.
    pub headlines: Vec<Headline>,
    /// The goals and whether this run met them.
    pub targets: Vec<Target>,
}

/// One headline ratio: how many times better the engine did than the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Headline {
    /// What is compared.
    pub what: String,
    /// Engine figure.
    pub engine: f64,
    /// Baseline figure.
    pub baseline: f64,
    /// Unit of both.
    pub unit: String,
    /// Improvement factor (> 1: the engine is better).
    pub factor: f64,
}

/// One goal.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// The goal.
    pub goal: String,
    /// What this run measured.
    pub measured: String,
    /// Met or not (`None`: not measured in this run).
    pub met: Option<bool>,
}

/// A short machine description: CPU model and core count, kernel.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {kernel}, all drives simulated")
}

fn lat<'a>(r: &'a Report, side: Side, model: &str, n: usize, mode: &str) -> Option<&'a LatRow> {
    r.latency
        .iter()
        .find(|x| x.side == side && x.model == model && x.drives == n && x.mode == mode)
}

impl Report {
    /// Computes the headline ratios and the targets from the rows.
    pub fn conclude(&mut self) {
        let mut h = Vec::new();
        let mut push = |what: String, engine: f64, baseline: f64, unit: &str, lower: bool| {
            let factor = if lower {
                baseline / engine.max(1e-9)
            } else {
                engine / baseline.max(1e-9)
            };
            h.push(Headline {
                what,
                engine,
                baseline,
                unit: unit.into(),
                factor,
            });
        };
        for model in ["zero", "fixed", "tail"] {
            for n in [8, 512] {
                if let (Some(e), Some(b)) = (
                    lat(self, Side::EngineSocket, model, n, "EX"),
                    lat(self, Side::Baseline, model, n, "EX"),
                ) {
                    push(
                        format!("lock+unlock p50, {n} drives, {model} latency"),
                        e.lock_unlock.p50_us,
                        b.lock_unlock.p50_us,
                        "µs",
                        true,
                    );
                    push(
                        format!("lock+unlock p99, {n} drives, {model} latency"),
                        e.lock_unlock.p99_us,
                        b.lock_unlock.p99_us,
                        "µs",
                        true,
                    );
                }
            }
            for n in [3, 8] {
                if let (Some(e), Some(b)) = (
                    lat(self, Side::EngineSocket, model, n, "lvb"),
                    lat(self, Side::Baseline, model, n, "lvb"),
                ) {
                    push(
                        format!("lock + read LVB p50, {n} drives, {model} latency"),
                        e.lock_unlock.p50_us,
                        b.lock_unlock.p50_us,
                        "µs",
                        true,
                    );
                }
            }
            if let (Some(e), Some(b)) = (
                lat(self, Side::EngineSocket, model, 8, "count"),
                lat(self, Side::Baseline, model, 8, "count"),
            ) {
                push(
                    format!("host count (table read) p50, 8 drives, {model} latency"),
                    e.lock_unlock.p50_us,
                    b.lock_unlock.p50_us,
                    "µs",
                    true,
                );
            }
            let e = self
                .throughput
                .iter()
                .find(|x| x.side == Side::EngineSocket && x.model == model && x.threads == 1);
            let b = self
                .throughput
                .iter()
                .find(|x| x.side == Side::Baseline && x.model == model);
            if let (Some(e), Some(b)) = (e, b) {
                push(
                    format!("throughput, 8 drives, one reactor, {model} latency"),
                    e.ops_per_s,
                    b.ops_per_s,
                    "ops/s",
                    false,
                );
                push(
                    format!("host CPU per drive command, {model} latency"),
                    e.cpu_ns_per_cmd,
                    b.cpu_ns_per_cmd,
                    "ns",
                    true,
                );
            }
            let e = self
                .contention
                .iter()
                .find(|x| x.side == Side::EngineSocket && x.model == model);
            let b = self
                .contention
                .iter()
                .find(|x| x.side == Side::Baseline && x.model == model);
            if let (Some(e), Some(b)) = (e, b) {
                push(
                    format!("contended hand-off p50, 4 hosts, {model} latency"),
                    e.handoff.p50_us,
                    b.handoff.p50_us,
                    "µs",
                    true,
                );
            }
        }
        for ren in self
            .renewal
            .iter()
            .filter(|x| x.side == Side::EngineSocket && x.error.is_none())
        {
            if let Some(b) = self.renewal.iter().find(|x| {
                x.side == Side::Baseline
                    && x.model == ren.model
                    && x.locks == ren.locks
                    && x.cadence_s == ren.cadence_s
            }) {
                push(
                    format!(
                        "renewal CPU share, {} locks every {} s, {} latency",
                        ren.locks, ren.cadence_s, ren.model
                    ),
                    ren.cpu_share,
                    b.cpu_share,
                    "core",
                    true,
                );
                push(
                    format!(
                        "renewal host CPU per lock, {} locks every {} s, {} latency",
                        ren.locks, ren.cadence_s, ren.model
                    ),
                    ren.cpu_us_per_renewal,
                    b.cpu_us_per_renewal,
                    "µs",
                    true,
                );
            }
        }
        for q in &self.quorum {
            push(
                format!("lock p99, {} drives, heavy-tail latency", q.drives),
                q.engine_socket.p99_us,
                q.baseline.p99_us,
                "µs",
                true,
            );
        }
        self.headlines = h;

        let mut t = Vec::new();
        let e8 = lat(self, Side::EngineSocket, "zero", 8, "EX");
        let i8 = lat(self, Side::EngineInProc, "zero", 8, "EX");
        t.push(Target {
            goal: "lock+unlock on 8 drives p99 < 100 µs (zero-latency simulator)".into(),
            measured: format!(
                "socket {}, in-process {}",
                e8.map_or("-".into(), |r| format!("{:.1} µs", r.lock_unlock.p99_us)),
                i8.map_or("-".into(), |r| format!("{:.1} µs", r.lock_unlock.p99_us)),
            ),
            met: e8.map(|r| r.lock_unlock.p99_us < 100.0),
        });
        let burst: Vec<&ThrRow> = self
            .throughput
            .iter()
            .filter(|x| x.side == Side::EngineSocket && x.model == "zero")
            .collect();
        t.push(Target {
            goal: "< 2 µs engine CPU per drive command in bursts".into(),
            measured: burst
                .iter()
                .map(|r| format!("{:.0} ns ({} reactor(s))", r.cpu_ns_per_cmd, r.threads))
                .collect::<Vec<_>>()
                .join(", "),
            met: (!burst.is_empty()).then(|| burst.iter().all(|r| r.cpu_ns_per_cmd < 2000.0)),
        });
        let big = self
            .renewal
            .iter()
            .find(|x| x.side == Side::EngineSocket && x.locks == 100_000 && x.cadence_s == 10.0);
        t.push(Target {
            goal: "100,000 locks on 8 drives renewed every 10 s within 25% of one core".into(),
            measured: big.map_or("-".into(), |r| {
                format!(
                    "{:.1}% of a core ({} renewals in one cadence, {} failures)",
                    r.cpu_share * 100.0,
                    r.renewals,
                    r.renew_failures
                )
            }),
            met: big.map(|r| r.cpu_share < 0.25 && r.renew_failures == 0 && r.error.is_none()),
        });
        t.push(Target {
            goal: "modelled latency: lock latency within 10% of the order-statistic floor".into(),
            measured: self
                .quorum
                .iter()
                .map(|q| {
                    format!(
                        "N={}: p50 +{:.0}%, p99 +{:.0}%",
                        q.drives,
                        (q.engine_socket.p50_us / q.floor.p50_us - 1.0) * 100.0,
                        (q.engine_socket.p99_us / q.floor.p99_us - 1.0) * 100.0
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            met: (!self.quorum.is_empty()).then(|| {
                self.quorum.iter().all(|q| {
                    q.engine_socket.p50_us <= q.floor.p50_us * 1.1
                        && q.engine_socket.p99_us <= q.floor.p99_us * 1.1
                })
            }),
        });
        let below: Vec<&Headline> = self.headlines.iter().filter(|h| h.factor < 10.0).collect();
        t.push(Target {
            goal: "every headline >= 10x the baseline".into(),
            measured: format!(
                "{} of {} headlines >= 10x; below: {}",
                self.headlines.len() - below.len(),
                self.headlines.len(),
                below
                    .iter()
                    .map(|h| format!("{} ({:.1}x)", h.what, h.factor))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            met: (!self.headlines.is_empty()).then_some(below.is_empty()),
        });
        self.targets = t;
    }

    /// The report as text tables.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "machine: {}", self.machine);
        if self.quick {
            let _ = writeln!(
                s,
                "QUICK RUN: tiny sizes and budgets, debug build likely: the figures mean nothing"
            );
        }
        if !self.latency.is_empty() {
            let _ = writeln!(
                s,
                "\n== 1. lock+unlock latency vs drive count (µs; mode lvb: lock + read LVB, mode count: host count) =="
            );
            let _ = writeln!(
                s,
                "{:<6} {:>4} {:<3} {:<15} {:>7} {:>10} {:>10} {:>10} {:>10}",
                "model", "N", "mode", "side", "n", "p50", "p99", "p99.9", "lock p50"
            );
            for r in &self.latency {
                let _ = writeln!(
                    s,
                    "{:<6} {:>4} {:<3} {:<15} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                    r.model,
                    r.drives,
                    r.mode,
                    r.side.name(),
                    r.lock_unlock.count,
                    r.lock_unlock.p50_us,
                    r.lock_unlock.p99_us,
                    r.lock_unlock.p999_us,
                    r.lock.p50_us
                );
                if let Some(read) = &r.read_lvb {
                    let _ = writeln!(
                        s,
                        "{:<6} {:>4} {:<3} {:<15} the LVB read after the lock: p50 {:.1}, p99 {:.1} (lock p50 {:.1}, p99 {:.1})",
                        "", "", "", "", read.p50_us, read.p99_us, r.lock.p50_us, r.lock.p99_us
                    );
                }
            }
        }
        if !self.throughput.is_empty() {
            let _ = writeln!(s, "\n== 2. throughput, 8 drives ==");
            let _ = writeln!(
                s,
                "{:<6} {:<15} {:>7} {:>9} {:>12} {:>10} {:>14} {:>13}",
                "model",
                "side",
                "threads",
                "in flight",
                "ops/s",
                "commands",
                "host ns/cmd",
                "sim ns/cmd"
            );
            for r in &self.throughput {
                let _ = writeln!(
                    s,
                    "{:<6} {:<15} {:>7} {:>9} {:>12.0} {:>10} {:>14.0} {:>13.0}",
                    r.model,
                    r.side.name(),
                    r.threads,
                    r.in_flight,
                    r.ops_per_s,
                    r.commands,
                    r.cpu_ns_per_cmd,
                    r.sim_cpu_ns_per_cmd
                );
            }
        }
        if !self.renewal.is_empty() {
            let _ = writeln!(s, "\n== 3. renewal capacity, 8 drives ==");
            let _ = writeln!(
                s,
                "{:<6} {:<15} {:>7} {:>7} {:>9} {:>9} {:>9} {:>6} {:>9} {:>9} {:>10} {:>9} {:>5}",
                "model",
                "side",
                "locks",
                "cadence",
                "acquire s",
                "sweep s",
                "renewals",
                "fail",
                "host CPU",
                "sim CPU",
                "µs/renewal",
                "p99 µs",
                "ok"
            );
            for r in &self.renewal {
                let _ = writeln!(
                    s,
                    "{:<6} {:<15} {:>7} {:>6}s {:>9.2} {:>9} {:>9} {:>6} {:>8.1}% {:>8.1}% {:>10.2} {:>9.0} {:>5}",
                    r.model,
                    r.side.name(),
                    r.locks,
                    r.cadence_s,
                    r.acquire_s,
                    r.sweep_s.map_or("-".to_string(), |v| format!("{v:.3}")),
                    r.renewals,
                    r.renew_failures,
                    r.cpu_share * 100.0,
                    r.sim_cpu_share * 100.0,
                    r.cpu_us_per_renewal,
                    r.renew_p99_us,
                    if r.keeps_up { "yes" } else { "NO" }
                );
                if let Some(e) = &r.error {
                    let _ = writeln!(s, "       ^ failed: {e}");
                }
            }
        }
        if !self.contention.is_empty() {
            let _ = writeln!(s, "\n== 4. contention: 4 hosts, one hot lock, 8 drives ==");
            let _ = writeln!(
                s,
                "{:<6} {:<15} {:>9} {:>10} {:>10} {:>9} {:>6} {:>5}  wins per host",
                "model", "side", "hand-offs", "p50 µs", "p99 µs", "wins/s", "Jain", "fail"
            );
            for r in &self.contention {
                let _ = writeln!(
                    s,
                    "{:<6} {:<15} {:>9} {:>10.1} {:>10.1} {:>9.0} {:>6.3} {:>5}  {:?}",
                    r.model,
                    r.side.name(),
                    r.handoff.count,
                    r.handoff.p50_us,
                    r.handoff.p99_us,
                    r.wins_per_s,
                    r.jain,
                    r.failures,
                    r.wins
                );
            }
        }
        if !self.quorum.is_empty() {
            let _ = writeln!(
                s,
                "\n== 5. quorum tail: lock latency, heavy-tail drives (µs) =="
            );
            let _ = writeln!(
                s,
                "{:>4} {:<36} {:>8} {:>10} {:>10} {:>10}",
                "N", "series", "n", "p50", "p99", "p99.9"
            );
            for q in &self.quorum {
                for (name, x) in [
                    ("floor: majority order statistic", &q.floor),
                    ("wait for all: max order statistic", &q.wait_all),
                    ("engine/socket", &q.engine_socket),
                    ("engine/in-proc", &q.engine_inproc),
                    ("baseline", &q.baseline),
                ] {
                    let _ = writeln!(
                        s,
                        "{:>4} {:<36} {:>8} {:>10.1} {:>10.1} {:>10.1}",
                        q.drives, name, x.count, x.p50_us, x.p99_us, x.p999_us
                    );
                }
            }
        }
        if !self.headlines.is_empty() {
            let _ = writeln!(
                s,
                "\n== headlines: engine (socket) vs baseline, same run =="
            );
            for h in &self.headlines {
                let _ = writeln!(
                    s,
                    "{:<62} engine {:>12.3} {:<5} baseline {:>12.3} {:<5} {:>7.1}x",
                    h.what, h.engine, h.unit, h.baseline, h.unit, h.factor
                );
            }
        }
        let _ = writeln!(s, "\n== targets (goals, not tests) ==");
        for t in &self.targets {
            let met = match t.met {
                Some(true) => "MET",
                Some(false) => "NOT MET",
                None => "not measured",
            };
            let _ = writeln!(s, "[{met}] {}: {}", t.goal, t.measured);
        }
        s
    }
}
