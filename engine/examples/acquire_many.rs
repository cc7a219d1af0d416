//! Acquires N locks (window of 1024 in flight) on in-process drives and prints the time:
//! `cargo run --release -p idm-engine --example acquire_many -- [LOCKS]`.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use idm_engine::api::{Engine, LockOptions, LockspaceConfig};
use idm_sim::engine::SimEngine;
use uring_sg::Mode;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(10_000), |a| a.parse())?;
    let fw = idm_sim::firmware::FirmwareConfig {
        capacity: n + 100,
        ..Default::default()
    };
    let engine = Engine::on_array(
        idm_sim::engine::SimArray::with_firmware(8, fw, None),
        |_| {},
    )?;
    let names = engine.simulated_drives();
    let ls = engine.lockspace(LockspaceConfig::new("many").with_lease(Duration::from_secs(60)))?;
    let opts = LockOptions {
        timeout: Duration::from_secs(60),
        no_wait: false,
    };
    let t0 = Instant::now();
    let mut futs = VecDeque::new();
    for i in 0..n {
        futs.push_back(ls.lock_async(format!("m-{i}").parse()?, Mode::Exclusive, &names, opts));
        if futs.len() >= 1024 {
            if let Some(f) = futs.pop_front() {
                f.wait()?;
            }
        }
        if i % 10000 == 9999 {
            eprintln!("{} at {:?}", i + 1, t0.elapsed());
        }
    }
    for f in futs {
        f.wait()?;
    }
    println!("{n} locks in {:?}", t0.elapsed());
    let s = engine.stats()?;
    println!("commands {} renewals {}", s.total.commands, s.renewals());
    ls.close(false);
    Ok(())
}
