//! Scenario 5: the quorum tail: lock latency on drives with heavy-tailed latency,
//! against the physical floor.
//!
//! Each drive's reply latency is drawn from the heavy-tail model (lognormal,
//! median 100 µs, p99 1 ms). The physical floor of a lock on N drives is the
//! (⌊N/2⌋+1)-th order statistic of N independent draws from that model (the
//! moment a majority answered); waiting for every drive costs the maximum order
//! statistic. Both are sampled here from the same model (Monte Carlo, 200,000
//! trials) and compared with measured lock latency (lock call to return; the
//! unlock is not timed, and lock IDs rotate so it never delays the next lock).

use std::time::Duration;

use hdrhistogram::Histogram;
use idm_engine::api::{LockOptions, LockspaceConfig};
use idm_sim::Latency;
use indicatif::ProgressBar;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;
use uring_sg::Mode;

use crate::baseline::Baseline;
use crate::common::{
    cdf, firmware, hist, host_id, inproc_rig, lock_id, rec, socket_rig, BenchError, Budget, Rig,
    Side, Summary,
};
use crate::Opts;

/// One CDF curve: whose, its label, and `(µs, fraction)` points.
pub type Curve = (Side, String, Vec<(f64, f64)>);

/// One drive count's figures.
#[derive(Clone, Debug, Serialize)]
pub struct QuorumRow {
    /// Drives.
    pub drives: usize,
    /// The model.
    pub model: String,
    /// The majority order statistic (floor).
    pub floor: Summary,
    /// The maximum order statistic (wait for all).
    pub wait_all: Summary,
    /// Engine on the socket simulator.
    pub engine_socket: Summary,
    /// Engine on in-process drives.
    pub engine_inproc: Summary,
    /// Baseline on the socket simulator.
    pub baseline: Summary,
    /// CDFs `(µs, fraction)` for plots: floor, wait_all, engine_socket,
    /// engine_inproc, baseline.
    #[serde(skip)]
    pub cdfs: Vec<Curve>,
}

/// The heavy-tail model of this scenario.
pub const MODEL: Latency = Latency::Tail {
    median: 100,
    p99: 1000,
};

/// Samples the majority and maximum order statistics of `n` draws.
pub fn order_stats(n: usize, trials: usize, seed: u64) -> (Histogram<u64>, Histogram<u64>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut floor, mut all) = (hist(), hist());
    let k = n / 2; // index of the (⌊N/2⌋+1)-th smallest
    let mut xs = vec![Duration::ZERO; n];
    for _ in 0..trials {
        for x in xs.iter_mut() {
            *x = MODEL.sample(&mut rng);
        }
        xs.sort_unstable();
        rec(&mut floor, xs[k]);
        rec(&mut all, xs[n - 1]);
    }
    (floor, all)
}

fn engine_run(rig: &Rig, budget: &mut Budget) -> Result<Histogram<u64>, BenchError> {
    let ls = rig.engine.lockspace(LockspaceConfig::new("quorum"))?;
    let opts = LockOptions::default();
    for i in 0..4 {
        ls.lock(lock_id("q", i), Mode::Exclusive, &rig.drives, opts)?;
        ls.unlock(lock_id("q", i))?;
    }
    let mut h = hist();
    let mut i = 0;
    while budget.next() {
        let id = lock_id("q", i % 64);
        i += 1;
        let t0 = std::time::Instant::now();
        ls.lock(id, Mode::Exclusive, &rig.drives, opts)?;
        rec(&mut h, t0.elapsed());
        ls.unlock(id)?;
    }
    ls.close(true);
    Ok(h)
}

/// Runs the scenario.
pub fn run(opts: &Opts, pb: &ProgressBar) -> Result<Vec<QuorumRow>, BenchError> {
    let (counts, budget, trials) = if opts.quick {
        (vec![3], Duration::from_millis(50), 2_000)
    } else {
        (vec![3, 8, 32], Duration::from_secs(3), 200_000)
    };
    let (min, max) = if opts.quick { (5, 100) } else { (200, 20_000) };
    let mut rows = Vec::new();
    for n in counts {
        pb.set_message(format!("quorum tail N={n}"));
        let (floor, all) = order_stats(n, trials, opts.seed ^ n as u64);
        let rig = socket_rig(n, firmware(0), MODEL, 1, opts.seed)?;
        let sock = engine_run(&rig, &mut Budget::new(budget, min, max))?;
        let path = rig
            .path
            .clone()
            .ok_or_else(|| BenchError::Other("socket rig without a path".into()))?;
        let bl = Baseline::new("q", path, host_id("baseline-q"), 60_000);
        let mut b = hist();
        let mut budget_bl = Budget::new(budget, min / 4, max);
        let mut i = 0;
        while budget_bl.next() {
            let id = lock_id("bl-q", i % 64);
            i += 1;
            let t0 = std::time::Instant::now();
            bl.lock(id, Mode::Exclusive, &rig.drives, Duration::from_secs(5))?;
            rec(&mut b, t0.elapsed());
            bl.unlock(id, Mode::Exclusive, &rig.drives)?;
        }
        drop(bl);
        drop(rig);
        let rig = inproc_rig(n, firmware(0), MODEL, 1, opts.seed)?;
        let inproc = engine_run(&rig, &mut Budget::new(budget, min, max))?;
        drop(rig);
        rows.push(QuorumRow {
            drives: n,
            model: MODEL.to_string(),
            floor: Summary::of(&floor),
            wait_all: Summary::of(&all),
            engine_socket: Summary::of(&sock),
            engine_inproc: Summary::of(&inproc),
            baseline: Summary::of(&b),
            cdfs: vec![
                (
                    Side::EngineSocket,
                    "floor (majority order statistic)".into(),
                    cdf(&floor),
                ),
                (
                    Side::EngineSocket,
                    "wait for all (max order statistic)".into(),
                    cdf(&all),
                ),
                (
                    Side::EngineSocket,
                    "engine, socket simulator".into(),
                    cdf(&sock),
                ),
                (
                    Side::EngineInProc,
                    "engine, in-process drives".into(),
                    cdf(&inproc),
                ),
                (Side::Baseline, "baseline (old stack)".into(), cdf(&b)),
            ],
        });
        pb.inc(1);
    }
    Ok(rows)
}
