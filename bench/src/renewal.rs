//! Scenario 3: renewal capacity: hold many locks on 8 drives and renew them.
//!
//! Engine: one lockspace with `renew_every` = the cadence and a lease of six
//! cadences (`LockspaceConfig::with_lease`). The locks are acquired as fast as
//! the engine goes (2048 in flight). The engine gives each lock a renewal phase
//! (renewals spread over the cadence instead of one burst), so there is no
//! "sweep" to time: after one cadence the harness measures one whole cadence in
//! steady state: renewals done (at least N = keeps up), their latency, and the
//! **CPU share**: the reactor threads' CPU over the window divided by the window
//! (1.0 = one core busy all the time). The simulator server's CPU over the same
//! window is reported separately.
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
use idm_sim::Latency;
use indicatif::ProgressBar;
use serde::Serialize;
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
    /// Baseline: time to renew all N locks one after the other, s (extrapolated
    /// from its time per lock). Engine: none (it spreads renewals over the cadence).
    pub sweep_s: Option<f64>,
    /// Renewals counted in the measured cadence (baseline: in its sample).
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
    /// Why the run failed, if it did (e.g. the lockspace was fenced).
    pub error: Option<String>,
}

const DRIVES: usize = 8;
const WINDOW: usize = 2048;

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
                f.wait().map_err(|e| during(e, t0, i))?;
            }
        }
    }
    for f in futs {
        f.wait().map_err(|e| during(e, t0, locks))?;
    }
    let acquire = t0.elapsed();
    if ls.is_fenced() {
        return Err(BenchError::Other(format!(
            "fenced while acquiring ({:.2} s)",
            acquire.as_secs_f64()
        )));
    }
    // Let the first renewals start (each lock renews first within one cadence
    // of its grant), then measure one whole cadence in steady state. No polling
    // inside the window: `engine.stats()` clones every latency histogram on the
    // reactor thread, which would be counted as engine CPU.
    std::thread::sleep(cadence);
    let base = rig.engine.stats()?;
    let c0 = CpuSample::now();
    let w0 = Instant::now();
    std::thread::sleep(cadence);
    let c1 = CpuSample::now();
    let window = w0.elapsed();
    let last = rig.engine.stats()?;
    let cpu = c1.since(&c0, REACTOR) as f64;
    let sim = c1.since(&c0, SIM) as f64;
    let renewals = last.renewals() - base.renewals();
    let failures = last.renew_failures() - base.renew_failures();
    let kind = idm_engine::locks::OpKind::Renew;
    let h = &last.total.latency[kind.index()];
    let fenced = ls.is_fenced();
    ls.close(false);
    if fenced {
        return Err(BenchError::Other(
            "fenced while holding (renewals fell behind)".into(),
        ));
    }
    Ok(RenRow {
        model,
        side,
        locks,
        cadence_s: cadence.as_secs_f64(),
        acquire_s: acquire.as_secs_f64(),
        sweep_s: None,
        renewals,
        renew_failures: failures,
        fences: last.fences(),
        cpu_share: cpu / 1e9 / window.as_secs_f64(),
        sim_cpu_share: sim / 1e9 / window.as_secs_f64(),
        cpu_us_per_renewal: cpu / 1e3 / renewals.max(1) as f64,
        renew_p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
        renew_p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
        keeps_up: failures == 0 && renewals as f64 >= locks as f64 * 0.99,
        error: None,
    })
}

/// An acquisition error with when it happened.
fn during(e: idm_engine::api::EngineError, t0: Instant, i: usize) -> BenchError {
    BenchError::Other(format!(
        "{e} ({:.2} s into the acquisition, {i} locks asked for)",
        t0.elapsed().as_secs_f64()
    ))
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
                sweep_s: Some(sweep),
                renewals: n,
                renew_failures: failures,
                fences: 0,
                cpu_share: cpu_per * locks as f64 / 1e9 / c.as_secs_f64(),
                sim_cpu_share: sim_per * locks as f64 / 1e9 / c.as_secs_f64(),
                cpu_us_per_renewal: cpu_per / 1e3,
                renew_p50_us: per * 1e6,
                renew_p99_us: per * 1e6,
                keeps_up: sweep < c.as_secs_f64(),
                error: None,
            }
        })
        .collect())
}

/// The row itself, or a row that says why the run failed (a fenced lockspace
/// is a result, not a harness error).
fn or_failed(
    r: Result<RenRow, BenchError>,
    model: &'static str,
    side: Side,
    locks: usize,
    cadence: Duration,
) -> RenRow {
    r.unwrap_or_else(|e| RenRow {
        model,
        side,
        locks,
        cadence_s: cadence.as_secs_f64(),
        acquire_s: 0.0,
        sweep_s: None,
        renewals: 0,
        renew_failures: 0,
        fences: 1,
        cpu_share: 0.0,
        sim_cpu_share: 0.0,
        cpu_us_per_renewal: 0.0,
        renew_p50_us: 0.0,
        renew_p99_us: 0.0,
        keeps_up: false,
        error: Some(e.to_string()),
    })
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
                rows.push(or_failed(
                    engine_run(&rig, m.name, Side::EngineSocket, n, c),
                    m.name,
                    Side::EngineSocket,
                    n,
                    c,
                ));
                drop(rig);
                if m.latency.is_none() {
                    let rig = inproc_rig(DRIVES, fw, m.latency, 1, opts.seed)?;
                    rows.push(or_failed(
                        engine_run(&rig, m.name, Side::EngineInProc, n, c),
                        m.name,
                        Side::EngineInProc,
                        n,
                        c,
                    ));
                }
                pb.inc(1);
            }
            let rig = socket_rig(DRIVES, fw, m.latency, 1, opts.seed)?;
            rows.extend(baseline_run(&rig, m.name, n, &cads, budget)?);
        }
    }
    Ok(rows)
}
