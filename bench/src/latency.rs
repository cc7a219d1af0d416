//! Scenario 1: latency of an uncontended lock+unlock against the number of drives.
//!
//! One caller thread locks and unlocks, EX or SH, on N drives, one operation at a
//! time. Lock IDs rotate over 64 names so that an unlock's late replies (the
//! engine answers at quorum and finishes the operation in the background) never
//! delay the next lock of the same ID. Measured on the caller's clock, from the
//! lock call to the unlock's return. Engine on the socket simulator, engine on
//! in-process drives, and the baseline on the same socket simulator.

use std::time::Duration;

use hdrhistogram::Histogram;
use idm_engine::api::{LockOptions, LockspaceConfig};
use indicatif::ProgressBar;
use serde::Serialize;
use uring_sg::Mode;

use crate::baseline::Baseline;
use crate::common::{
    firmware, hist, host_id, inproc_rig, lock_id, rec, socket_rig, BenchError, Budget, Model, Rig,
    Side, Summary,
};
use crate::Opts;

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct LatRow {
    /// Latency model.
    pub model: &'static str,
    /// Drives per lock.
    pub drives: usize,
    /// EX or SH.
    pub mode: String,
    /// Who ran it.
    pub side: Side,
    /// Lock+unlock round trip.
    pub lock_unlock: Summary,
    /// The lock alone.
    pub lock: Summary,
    /// Mode `lvb` only: the LVB read right after the lock, alone (the row's
    /// `lock_unlock` is then lock + read LVB, lvmlockd's pattern for a VG lock).
    pub read_lvb: Option<Summary>,
}

const IDS: usize = 64;

fn engine_run(
    rig: &Rig,
    mode: Mode,
    budget: &mut Budget,
) -> Result<(Histogram<u64>, Histogram<u64>), BenchError> {
    let ls = rig.engine.lockspace(LockspaceConfig::new("lat"))?;
    let opts = LockOptions::default();
    // Warm-up: the first lock of a reactor opens its drives.
    for i in 0..4 {
        ls.lock(lock_id("lat", i), mode, &rig.drives, opts)?;
        ls.unlock(lock_id("lat", i))?;
    }
    let (mut both, mut lock) = (hist(), hist());
    let mut i = 0;
    while budget.next() {
        let id = lock_id("lat", i % IDS);
        i += 1;
        let t0 = std::time::Instant::now();
        ls.lock(id, mode, &rig.drives, opts)?;
        let t1 = std::time::Instant::now();
        ls.unlock(id)?;
        rec(&mut lock, t1 - t0);
        rec(&mut both, t0.elapsed());
    }
    ls.close(true);
    Ok((both, lock))
}

fn baseline_run(
    bl: &Baseline,
    drives: &[String],
    mode: Mode,
    budget: &mut Budget,
) -> Result<(Histogram<u64>, Histogram<u64>), BenchError> {
    let (mut both, mut lock) = (hist(), hist());
    let mut i = 0;
    while budget.next() {
        let id = lock_id("bl-lat", i % IDS);
        i += 1;
        let t0 = std::time::Instant::now();
        bl.lock(id, mode, drives, Duration::from_secs(5))?;
        let t1 = std::time::Instant::now();
        bl.unlock(id, mode, drives)?;
        rec(&mut lock, t1 - t0);
        rec(&mut both, t0.elapsed());
    }
    Ok((both, lock))
}

/// Lock EX, read the LVB, unlock, as lvmlockd does for a VG lock: histograms of
/// lock + read, the lock alone, the read alone. Every lock ID's LVB is read once
/// before measuring (the engine then prefetches it after each acquire).
fn engine_lvb_run(rig: &Rig, budget: &mut Budget) -> Result<[Histogram<u64>; 3], BenchError> {
    let ls = rig.engine.lockspace(LockspaceConfig::new("lvb"))?;
    let opts = LockOptions::default();
    for i in 0..IDS {
        let id = lock_id("lvb", i);
        ls.lock(id, Mode::Exclusive, &rig.drives, opts)?;
        ls.read_lvb(id)?;
        ls.unlock(id)?;
    }
    let (mut both, mut lock, mut read) = (hist(), hist(), hist());
    let mut i = 0;
    while budget.next() {
        let id = lock_id("lvb", i % IDS);
        i += 1;
        let t0 = std::time::Instant::now();
        ls.lock(id, Mode::Exclusive, &rig.drives, opts)?;
        let t1 = std::time::Instant::now();
        ls.read_lvb(id)?;
        let t2 = std::time::Instant::now();
        ls.unlock(id)?;
        rec(&mut lock, t1 - t0);
        rec(&mut read, t2 - t1);
        rec(&mut both, t2 - t0);
    }
    ls.close(true);
    Ok([both, lock, read])
}

/// [`engine_lvb_run`] with the old stack's algorithm.
fn baseline_lvb_run(
    bl: &Baseline,
    drives: &[String],
    budget: &mut Budget,
) -> Result<[Histogram<u64>; 3], BenchError> {
    let (mut both, mut lock, mut read) = (hist(), hist(), hist());
    let mut i = 0;
    while budget.next() {
        let id = lock_id("bl-lvb", i % IDS);
        i += 1;
        let t0 = std::time::Instant::now();
        bl.lock(id, Mode::Exclusive, drives, Duration::from_secs(5))?;
        let t1 = std::time::Instant::now();
        bl.read_lvb(id, drives)?;
        let t2 = std::time::Instant::now();
        bl.unlock(id, Mode::Exclusive, drives)?;
        rec(&mut lock, t1 - t0);
        rec(&mut read, t2 - t1);
        rec(&mut both, t2 - t0);
    }
    Ok([both, lock, read])
}

fn lvb_row(
    model: &'static str,
    drives: usize,
    side: Side,
    both: Histogram<u64>,
    lock: Histogram<u64>,
    read: Histogram<u64>,
) -> LatRow {
    LatRow {
        model,
        drives,
        mode: "lvb".into(),
        side,
        lock_unlock: Summary::of(&both),
        lock: Summary::of(&lock),
        read_lvb: Some(Summary::of(&read)),
    }
}

/// Host-count queries (a table read on every drive) of a lock the baseline
/// holds: engine, then baseline (two round trips per drive).
fn count_run(
    rig: &Rig,
    bl: &Baseline,
    budget: Duration,
    min: usize,
    max: usize,
) -> Result<(Histogram<u64>, Histogram<u64>), BenchError> {
    let id = lock_id("counted", 0);
    bl.lock(id, Mode::Shared, &rig.drives, Duration::from_secs(5))?;
    let ls = rig.engine.lockspace(LockspaceConfig::new("count"))?;
    let (mut e, mut b) = (hist(), hist());
    ls.host_count(id, &rig.drives)?;
    let mut bud = Budget::new(budget, min, max);
    while bud.next() {
        let t0 = std::time::Instant::now();
        ls.host_count(id, &rig.drives)?;
        rec(&mut e, t0.elapsed());
    }
    ls.close(true);
    let mut bud = Budget::new(budget, min / 2, max);
    while bud.next() {
        let t0 = std::time::Instant::now();
        bl.host_count(id, &rig.drives)?;
        rec(&mut b, t0.elapsed());
    }
    bl.unlock(id, Mode::Shared, &rig.drives)?;
    Ok((e, b))
}

/// The drive counts measured.
pub fn drive_counts(quick: bool) -> Vec<usize> {
    if quick {
        vec![1, 3, 8]
    } else {
        vec![1, 3, 8, 32, 128, 512]
    }
}

/// Runs the scenario.
pub fn run(opts: &Opts, models: &[Model], pb: &ProgressBar) -> Result<Vec<LatRow>, BenchError> {
    let mut rows = Vec::new();
    let (eng_budget, bl_budget) = if opts.quick {
        (Duration::from_millis(30), Duration::from_millis(30))
    } else {
        (Duration::from_millis(600), Duration::from_millis(800))
    };
    let (min, max) = if opts.quick { (3, 50) } else { (20, 5000) };
    for m in models {
        for &n in &drive_counts(opts.quick) {
            pb.set_message(format!("latency {} N={n}", m.name));
            let rig = socket_rig(n, firmware(0), m.latency, 1, opts.seed)?;
            let path = rig
                .path
                .clone()
                .ok_or_else(|| BenchError::Other("socket rig without a path".into()))?;
            let bl = Baseline::new("lat", path, host_id("baseline-lat"), 60_000);
            for mode in [Mode::Exclusive, Mode::Shared] {
                let mut row = |side, (both, lock): (Histogram<u64>, Histogram<u64>)| {
                    rows.push(LatRow {
                        model: m.name,
                        drives: n,
                        mode: mode.to_string(),
                        side,
                        lock_unlock: Summary::of(&both),
                        lock: Summary::of(&lock),
                        read_lvb: None,
                    })
                };
                let r = engine_run(&rig, mode, &mut Budget::new(eng_budget, min, max))?;
                row(Side::EngineSocket, r);
                let r = baseline_run(
                    &bl,
                    &rig.drives,
                    mode,
                    &mut Budget::new(bl_budget, min / 2, max),
                )?;
                row(Side::Baseline, r);
            }
            if n == 3 || n == 8 {
                let [both, lock, read] =
                    engine_lvb_run(&rig, &mut Budget::new(eng_budget, min, max))?;
                rows.push(lvb_row(m.name, n, Side::EngineSocket, both, lock, read));
                let [both, lock, read] =
                    baseline_lvb_run(&bl, &rig.drives, &mut Budget::new(bl_budget, min / 2, max))?;
                rows.push(lvb_row(m.name, n, Side::Baseline, both, lock, read));
            }
            if n == 8 {
                // The table read: host count of a lock held by another host.
                let (e, b) = count_run(&rig, &bl, eng_budget, min, max)?;
                for (side, h) in [(Side::EngineSocket, e), (Side::Baseline, b)] {
                    rows.push(LatRow {
                        model: m.name,
                        drives: n,
                        mode: "count".into(),
                        side,
                        lock_unlock: Summary::of(&h),
                        lock: Summary::of(&h),
                        read_lvb: None,
                    });
                }
            }
            drop(bl);
            drop(rig);
            let rig = inproc_rig(n, firmware(0), m.latency, 1, opts.seed)?;
            for mode in [Mode::Exclusive, Mode::Shared] {
                let (both, lock) = engine_run(&rig, mode, &mut Budget::new(eng_budget, min, max))?;
                rows.push(LatRow {
                    model: m.name,
                    drives: n,
                    mode: mode.to_string(),
                    side: Side::EngineInProc,
                    lock_unlock: Summary::of(&both),
                    lock: Summary::of(&lock),
                    read_lvb: None,
                });
            }
            if n == 3 || n == 8 {
                let [both, lock, read] =
                    engine_lvb_run(&rig, &mut Budget::new(eng_budget, min, max))?;
                rows.push(lvb_row(m.name, n, Side::EngineInProc, both, lock, read));
            }
            pb.inc(1);
        }
    }
    Ok(rows)
}
