//! Scenario 2: throughput with many distinct locks in flight on 8 drives.
//!
//! Engine: one caller thread issues `lock_async` for W distinct locks (EX, 8
//! drives), waits for them all, then `unlock_async` for all and waits, and
//! repeats; with one reactor and with one reactor per core. Engine CPU is the
//! reactor threads' CPU time (`/proc/self/task/*/schedstat` of threads named
//! `idm-reactor-*`) divided by the drive commands the engine sent; the caller's
//! own CPU is not included. The simulator server's CPU is reported separately.
//!
//! Baseline: four caller threads share one baseline host (its 8-worker pool),
//! each doing blocking lock+unlock of its own lock in a loop. Its CPU is every
//! `bl-*` thread (workers and callers).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use idm_engine::api::{LockOptions, LockspaceConfig};
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
pub struct ThrRow {
    /// Latency model.
    pub model: &'static str,
    /// Who ran it.
    pub side: Side,
    /// Reactor threads (engine) or caller threads (baseline).
    pub threads: usize,
    /// Operations in flight.
    pub in_flight: usize,
    /// Lock and unlock operations per second.
    pub ops_per_s: f64,
    /// Drive commands sent in the measurement.
    pub commands: u64,
    /// Host CPU per drive command, ns (engine: reactors; baseline: its threads).
    pub cpu_ns_per_cmd: f64,
    /// Simulator server CPU per drive command, ns (socket runs).
    pub sim_cpu_ns_per_cmd: f64,
}

const DRIVES: usize = 8;
const BASELINE_CALLERS: usize = 4;

fn engine_run(
    rig: &Rig,
    window: usize,
    budget: Duration,
) -> Result<(f64, u64, u64, u64), BenchError> {
    let ls = rig.engine.lockspace(LockspaceConfig::new("thr"))?;
    let opts = LockOptions::default();
    let round = |ls: &idm_engine::api::Lockspace| -> Result<(), BenchError> {
        let futs: VecDeque<_> = (0..window)
            .map(|i| ls.lock_async(lock_id("thr", i), Mode::Exclusive, &rig.drives, opts))
            .collect();
        for f in futs {
            f.wait()?;
        }
        let futs: VecDeque<_> = (0..window)
            .map(|i| ls.unlock_async(lock_id("thr", i)))
            .collect();
        for f in futs {
            f.wait()?;
        }
        Ok(())
    };
    round(&ls)?;
    let s0 = rig.engine.stats()?;
    let c0 = CpuSample::now();
    let t0 = Instant::now();
    let mut ops = 0u64;
    while t0.elapsed() < budget {
        round(&ls)?;
        ops += 2 * window as u64;
    }
    let wall = t0.elapsed();
    let c1 = CpuSample::now();
    let s1 = rig.engine.stats()?;
    ls.close(false);
    Ok((
        ops as f64 / wall.as_secs_f64(),
        s1.commands() - s0.commands(),
        c1.since(&c0, REACTOR),
        c1.since(&c0, SIM),
    ))
}

fn baseline_run(rig: &Rig, budget: Duration) -> Result<(f64, u64, u64, u64), BenchError> {
    let path = rig
        .path
        .clone()
        .ok_or_else(|| BenchError::Other("socket rig without a path".into()))?;
    let bl = Baseline::new("thr", path, host_id("baseline-thr"), 60_000);
    let ops = AtomicU64::new(0);
    let cmd0 = bl.commands();
    let c0 = CpuSample::now();
    let t0 = Instant::now();
    let errors: Vec<BenchError> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..BASELINE_CALLERS)
            .filter_map(|c| {
                let (bl, ops, drives) = (&bl, &ops, &rig.drives);
                std::thread::Builder::new()
                    .name(format!("bl-client-{c}"))
                    .spawn_scoped(s, move || -> Result<(), BenchError> {
                        let id = lock_id("bl-thr", c);
                        while t0.elapsed() < budget {
                            bl.lock(id, Mode::Exclusive, drives, Duration::from_secs(5))?;
                            bl.unlock(id, Mode::Exclusive, drives)?;
                            ops.fetch_add(2, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                    .ok()
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(BenchError::Other("baseline caller panicked".into())),
            })
            .collect()
    });
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let wall = t0.elapsed();
    let c1 = CpuSample::now();
    Ok((
        ops.load(Ordering::Relaxed) as f64 / wall.as_secs_f64(),
        bl.commands() - cmd0,
        c1.since(&c0, BASELINE),
        c1.since(&c0, SIM),
    ))
}

/// Runs the scenario.
pub fn run(opts: &Opts, models: &[Model], pb: &ProgressBar) -> Result<Vec<ThrRow>, BenchError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut reactor_counts = vec![1];
    if cores > 1 {
        reactor_counts.push(cores);
    }
    let (window, budget) = if opts.quick {
        (32, Duration::from_millis(50))
    } else {
        (1024, Duration::from_secs(2))
    };
    let mut rows = Vec::new();
    let per = |x: u64, cmds: u64| x as f64 / cmds.max(1) as f64;
    for m in models {
        pb.set_message(format!("throughput {}", m.name));
        for &r in &reactor_counts {
            let rig = socket_rig(DRIVES, firmware(0), m.latency, r, opts.seed)?;
            let (ops, cmds, cpu, sim) = engine_run(&rig, window, budget)?;
            rows.push(ThrRow {
                model: m.name,
                side: Side::EngineSocket,
                threads: r,
                in_flight: window,
                ops_per_s: ops,
                commands: cmds,
                cpu_ns_per_cmd: per(cpu, cmds),
                sim_cpu_ns_per_cmd: per(sim, cmds),
            });
            if r == 1 {
                let (ops, cmds, cpu, sim) = baseline_run(&rig, budget)?;
                rows.push(ThrRow {
                    model: m.name,
                    side: Side::Baseline,
                    threads: BASELINE_CALLERS,
                    in_flight: BASELINE_CALLERS,
                    ops_per_s: ops,
                    commands: cmds,
                    cpu_ns_per_cmd: per(cpu, cmds),
                    sim_cpu_ns_per_cmd: per(sim, cmds),
                });
            }
            drop(rig);
            let rig = inproc_rig(DRIVES, firmware(0), m.latency, r, opts.seed)?;
            let (ops, cmds, cpu, _) = engine_run(&rig, window, budget)?;
            rows.push(ThrRow {
                model: m.name,
                side: Side::EngineInProc,
                threads: r,
                in_flight: window,
                ops_per_s: ops,
                commands: cmds,
                cpu_ns_per_cmd: per(cpu, cmds),
                sim_cpu_ns_per_cmd: 0.0,
            });
            pb.inc(1);
        }
    }
    Ok(rows)
}
