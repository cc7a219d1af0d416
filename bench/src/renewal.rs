//! Scenario 3: renewal capacity: hold many locks on 8 drives and renew them.
//!
//! Engine: one lockspace with `renew_every` = the cadence and a lease of six
//! cadences (`LockspaceConfig::with_lease`). The locks are acquired as fast as
//! the engine goes (2048 in flight), so their renewals come due in the same
//! pattern one cadence later. Then the harness polls `engine.stats()` every 5 ms:
//! the **sweep** runs from the first renewal counted to the last of the N; the
//! **CPU share** is the reactor threads' CPU over one whole cadence starting with
//! the sweep, divided by the cadence (1.0 = one core busy all the time). The
//! simulator server's CPU over the same window is reported separately.
//!
//! Baseline: the old stack renews one lock at a time (refresh on all 8 drives,
//! wait for all, next lock). It holds a sample of the locks (at most 300) and
//! renews them in a loop for a time budget; its sweep for N locks is N times the
//! measured time per lock (extrapolated: acquiring 100,000 locks the old way
//! would take longer than the whole benchmark), and its CPU share is its CPU per
//! renewal times N per cadence.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use idm_engine::api::{LockOptions, LockspaceConfig};
use indicatif::ProgressBar;
use serde::Serialize;
use uring_sg::sim::Latency;
use uring_sg::Mode;

use crate::baseline::Baseline;
use crate::common::{
    firmware, host_id, inproc_rig, lock_id, socket_rig, BenchError, CpuSample, Model, Rig, Side,
    BASELINE, REACTOR, SIM,
};
use crate::Opts;

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct RenRow {
    /// Latency model.
    pub model: &'static str,
    /// Who ran it.
    pub side: Side,
    /// Locks held.
    pub locks: usize,
    /// Renewal cadence, s.
    pub cadence_s: f64,
    /// Time to acquire them all, s (engine).
    pub acquire_s: f64,
    /// Time from the first to the last renewal of one sweep, s (baseline:
    /// extrapolated from its time per lock).
    pub sweep_s: f64,
    /// Renewals counted in the sweep.
    pub renewals: u64,
    /// Renewals that failed.
    pub renew_failures: u64,
    /// Lockspaces fenced.
    pub fences: u64,
    /// Host CPU over one cadence / the cadence (1.0 = one core).
    pub cpu_share: f64,
    /// Simulator CPU over the same window / the cadence (socket runs).
    pub sim_cpu_share: f64,
    /// Host CPU per renewal, µs.
    pub cpu_us_per_renewal: f64,
    /// Renewal latency p50 / p99, µs (engine histogram).
    pub renew_p50_us: f64,
    /// Renewal latency p99, µs.
    pub renew_p99_us: f64,
    /// Whether the sweep fits in the cadence.
    pub keeps_up: bool,
}

const DRIVES: usize = 8;
const WINDOW: usize = 2048;
const POLL: Duration = Duration::from_millis(5);

fn engine_run(
    rig: &Rig,
    model: &'static str,
    side: Side,
    locks: usize,
    cadence: Duration,
) -> Result<RenRow, BenchError> {
    let ls = rig
        .engine
        .lockspace(LockspaceConfig::new("renew").with_lease(cadence * 6))?;
    let opts = LockOptions {
        timeout: Duration::from_secs(60),
        no_wait: false,
    };
    let t0 = Instant::now();
    let mut futs = VecDeque::with_capacity(WINDOW);
    for i in 0..locks {
        futs.push_back(ls.lock_async(lock_id("ren", i), Mode::Exclusive, &rig.drives, opts));
        if futs.len() >= WINDOW {
            if let Some(f) = futs.pop_front() {
                f.wait()?;
            }
        }
    }
    for f in futs {
        f.wait()?;
    }
    let acquire = t0.elapsed();
    let base = rig.engine.stats()?;
    let kind = idm_engine::reactor::op::OpKind::Renew;
    // Wait for the sweep to start.
    let give_up = Instant::now() + cadence * 3 + acquire * 2;
    let (c0, t_first) = loop {
        let c = CpuSample::now();
        let s = rig.engine.stats()?;
        if s.renewals() + s.renew_failures() > base.renewals() + base.renew_failures() {
            break (c, Instant::now());
        }
        if Instant::now() > give_up {
            return Err(BenchError::Other("no renewal within three cadences".into()));
        }
        std::thread::sleep(POLL);
    };
    let target = base.renewals() + base.renew_failures() + locks as u64;
    let mut t_done = None;
    let end = t_first + cadence;
    let last = loop {
        let s = rig.engine.stats()?;
        let now = Instant::now();
        if t_done.is_none() && s.renewals() + s.renew_failures() >= target {
            t_done = Some(now);
        }
        if now >= end && t_done.is_some() {
            break s;
        }
        if now > give_up + cadence * 3 {
            break s;
        }
        std::thread::sleep(POLL);
    };
    let c1 = CpuSample::now();
    let window = c1_window(t_first);
    let sweep = t_done.map_or(window, |t| t - t_first);
    let cpu = c1.since(&c0, REACTOR) as f64;
    let sim = c1.since(&c0, SIM) as f64;
    let renewals = last.renewals() - base.renewals();
    let h = &last.total.latency[kind.index()];
    ls.close(false);
    Ok(RenRow {
        model,
        side,
        locks,
        cadence_s: cadence.as_secs_f64(),
        acquire_s: acquire.as_secs_f64(),
        sweep_s: sweep.as_secs_f64(),
        renewals,
        renew_failures: last.renew_failures() - base.renew_failures(),
        fences: last.fences(),
        cpu_share: cpu / 1e9 / window.as_secs_f64(),
        sim_cpu_share: sim / 1e9 / window.as_secs_f64(),
        cpu_us_per_renewal: cpu / 1e3 / renewals.max(1) as f64,
        renew_p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
        renew_p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
        keeps_up: t_done.is_some() && sweep < cadence,
    })
}

/// The measured window since `start` (at least one poll).
fn c1_window(start: Instant) -> Duration {
    start.elapsed().max(POLL)
}

fn baseline_run(
    rig: &Rig,
    model: &'static str,
    locks: usize,
    cadences: &[Duration],
    budget: Duration,
) -> Result<Vec<RenRow>, BenchError> {
    let path = rig
        .path
        .clone()
        .ok_or_else(|| BenchError::Other("socket rig without a path".into()))?;
    let bl = Baseline::new("ren", path, host_id("baseline-ren"), 600_000);
    let sample = locks.min(300);
    for i in 0..sample {
        bl.lock(
            lock_id("bl-ren", i),
            Mode::Exclusive,
            &rig.drives,
            Duration::from_secs(5),
        )?;
    }
    let c0 = CpuSample::now();
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut failures = 0u64;
    while t0.elapsed() < budget || n == 0 {
        let id = lock_id("bl-ren", n as usize % sample);
        if bl.renew(id, Mode::Exclusive, &rig.drives).is_err() {
            failures += 1;
        }
        n += 1;
    }
    let wall = t0.elapsed();
    let c1 = CpuSample::now();
    let per = wall.as_secs_f64() / n as f64;
    let cpu_per = c1.since(&c0, BASELINE) as f64 / n as f64;
    let sim_per = c1.since(&c0, SIM) as f64 / n as f64;
    for i in 0..sample {
        bl.unlock(lock_id("bl-ren", i), Mode::Exclusive, &rig.drives)?;
    }
    Ok(cadences
        .iter()
        .map(|c| {
            let sweep = per * locks as f64;
            RenRow {
                model,
                side: Side::Baseline,
                locks,
                cadence_s: c.as_secs_f64(),
                acquire_s: 0.0,
                sweep_s: sweep,
                renewals: n,
                renew_failures: failures,
                fences: 0,
                cpu_share: cpu_per * locks as f64 / 1e9 / c.as_secs_f64(),
                sim_cpu_share: sim_per * locks as f64 / 1e9 / c.as_secs_f64(),
                cpu_us_per_renewal: cpu_per / 1e3,
                renew_p50_us: per * 1e6,
                renew_p99_us: per * 1e6,
                keeps_up: sweep < c.as_secs_f64(),
            }
        })
        .collect())
}

/// Runs the scenario: every size at every cadence with zero latency (engine on
/// the socket simulator, in-process, and the baseline), and every size at the
/// shortest cadence with fixed latency (socket engine and baseline).
pub fn run(opts: &Opts, models: &[Model], pb: &ProgressBar) -> Result<Vec<RenRow>, BenchError> {
    let (sizes, cadences, budget) = if opts.quick {
        (
            vec![100],
            vec![Duration::from_millis(300)],
            Duration::from_millis(50),
        )
    } else {
        (
            vec![1_000, 10_000, 100_000],
            vec![Duration::from_secs(1), Duration::from_secs(10)],
            Duration::from_secs(2),
        )
    };
    let mut rows = Vec::new();
    for m in models {
        if !matches!(m.latency, Latency::None | Latency::Fixed { .. }) {
            continue;
        }
        let cads: Vec<Duration> = if m.latency.is_none() {
            cadences.clone()
        } else {
            cadences[..1].to_vec()
        };
        for &n in &sizes {
            let fw = firmware(n + 1024);
            for &c in &cads {
                pb.set_message(format!("renewal {} {n} locks every {c:?}", m.name));
                let rig = socket_rig(DRIVES, fw, m.latency, 1, opts.seed)?;
                rows.push(engine_run(&rig, m.name, Side::EngineSocket, n, c)?);
                drop(rig);
                if m.latency.is_none() {
                    let rig = inproc_rig(DRIVES, fw, m.latency, 1, opts.seed)?;
                    rows.push(engine_run(&rig, m.name, Side::EngineInProc, n, c)?);
                }
                pb.inc(1);
            }
            let rig = socket_rig(DRIVES, fw, m.latency, 1, opts.seed)?;
            rows.extend(baseline_run(&rig, m.name, n, &cads, budget)?);
        }
    }
    Ok(rows)
}
