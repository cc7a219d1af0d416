//! Uncontended lock+unlock latency on in-process simulated drives, one caller:
//! `cargo run --release -p idm-engine --example lock_latency -- [DRIVES] [ITERATIONS]`.
//! A quick check; the full scenarios are in `idm-bench`.

use std::time::{Duration, Instant};

use idm_engine::api::{Engine, LockOptions, LockspaceConfig};
use idm_sim::engine::SimEngine;
use uring_sg::Mode;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let drives: usize = args.next().map_or(Ok(8), |a| a.parse())?;
    let iterations: usize = args.next().map_or(Ok(5000), |a| a.parse())?;
    let engine = Engine::simulated(drives)?;
    let names = engine.simulated_drives();
    let mut cfg = LockspaceConfig::new("latency");
    cfg.host_id = "latency-host".parse()?;
    let ls = engine.lockspace(cfg)?;
    let ids: Vec<_> = (0..64)
        .map(|i| format!("lat-{i}").parse())
        .collect::<Result<_, _>>()?;
    let mut lat = Vec::with_capacity(iterations);
    for i in 0..iterations + 500 {
        let id = ids[i % ids.len()];
        let t = Instant::now();
        ls.lock(id, Mode::Exclusive, &names, LockOptions::default())?;
        ls.unlock(id)?;
        if i >= 500 {
            lat.push(t.elapsed());
        }
    }
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{drives} drive(s), {iterations} lock+unlock: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        us(q(0.5)),
        us(q(0.99)),
        us(q(0.999))
    );
    Ok(())
}
