//! `idm demo`: the engine end to end on the embedded default, an array of
//! in-process simulated IDM drives with a latency model. No hardware, no server,
//! no configuration.
//!
//! Several hosts (each a separate engine with its own host ID, all on the same
//! drives) run a workload for `--seconds`: every host keeps a set of long-held
//! locks (so renewals run all the time), takes and releases many uncontended
//! locks of its own, and fights the other hosts for a few hot locks. While it
//! runs, a progress line shows operations and latency; at the end a summary gives
//! operations, p50/p99 per operation, conflicts resolved, renewals, fences, and
//! the result of an overlap check over the hold intervals every host recorded on
//! the hot locks: two hosts holding one exclusively at the same time would be a
//! safety bug, and the command then fails.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idm_engine::api::{Engine, EngineError, EngineStats, LockOptions, Lockspace, LockspaceConfig};
use idm_engine::error::LockError;
use idm_engine::locks::OpKind;
use idm_sim::engine::{SimArray, SimEngine};
use idm_sim::firmware::FirmwareConfig;
use idm_sim::Latency;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use uring_sg::{HostId, LockId, Mode};

/// Options of `idm demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hosts: separate engines with their own host IDs, on the same drives.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    hosts: u16,
    /// Simulated drives every lock spans.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=512))]
    drives: u16,
    /// Hot locks all hosts fight for.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    hot: u16,
    /// Uncontended locks per host (taken and released over and over).
    #[arg(long, default_value_t = 200)]
    locks: u32,
    /// Locks each host holds for the whole run (renewed all along).
    #[arg(long, default_value_t = 100)]
    held: u32,
    /// How long the workload runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Drive reply latency: none, fixed:US, uniform:LO-HI, tail:MEDIAN_US,P99_US.
    #[arg(long, default_value = "uniform:50-200", value_parser = parse_latency)]
    latency: Latency,
    /// Faults while it runs: none, or light (now and then a minority of drives
    /// stops answering for a while, or answers with I/O errors).
    #[arg(long, default_value = "none", value_parser = ["none", "light"])]
    faults: String,
    /// Lease (drive membership countdown), ms; renewals run every lease/6.
    #[arg(long, default_value_t = 3000)]
    lease_ms: u64,
    /// Worker threads per host.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Seed of the latency model, the workload and the faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_latency(s: &str) -> Result<Latency, String> {
    s.parse::<Latency>().map_err(|e| e.to_string())
}

/// Parses an ID (lock or host) from its text form.
fn id<T: std::str::FromStr>(text: &str) -> Result<T, EngineError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| EngineError::InvalidArgument(format!("ID {text:?}: {e}")))
}

/// `count` lock IDs named `prefix/0`, `prefix/1`...
fn lock_ids(prefix: &str, count: u32) -> Result<Arc<[LockId]>, EngineError> {
    (0..count).map(|i| id(&format!("{prefix}/{i}"))).collect()
}

/// One host's exclusive hold of a hot lock, as the host saw it.
#[derive(Clone, Copy, Debug)]
struct Hold {
    host: usize,
    from: Instant,
    to: Instant,
}

/// What all workers count.
#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    conflicts_resolved: AtomicU64,
    gave_up: AtomicU64,
    errors: AtomicU64,
}

/// Runs the demo.
pub fn run(args: Args) -> ExitCode {
    match demo(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            errln!("idm demo: {e}");
            ExitCode::from(crate::common::EXIT_ERROR)
        }
    }
}

fn demo(args: &Args) -> Result<bool, EngineError> {
    let n = usize::from(args.drives);
    let hosts = usize::from(args.hosts);
    // Tables big enough for every host's locks (IDM's default is 3950 records).
    let records = hosts * (args.locks + args.held) as usize + usize::from(args.hot) * hosts + 64;
    let fw = FirmwareConfig {
        capacity: records.max(3950),
        max_hosts_per_mutex: hosts.max(64),
        ..FirmwareConfig::default()
    };
    let latency = args.latency;
    let rng = Mutex::new(SmallRng::seed_from_u64(args.seed));
    let latency_fn: Option<Arc<dyn Fn() -> Duration + Send + Sync>> = if latency.is_none() {
        None
    } else {
        Some(Arc::new(move || {
            latency.sample(&mut rng.lock().unwrap_or_else(|p| p.into_inner()))
        }))
    };
    let array = SimArray::with_firmware(n, fw, latency_fn);
    let drives = array.names();
    let mut engines = Vec::new();
    let mut spaces = Vec::new();
    for h in 0..hosts {
        let engine = Engine::on_array(array.clone(), |c| {
            c.name = format!("demo-host-{h}");
            c.reactors = 1;
            c.command_timeout = Duration::from_millis(250);
        })?;
        let mut cfg = LockspaceConfig::new(&format!("demo-vg-host{h}"))
            .with_lease(Duration::from_millis(args.lease_ms));
        cfg.host_id = id::<HostId>(&format!("demo-host-{h}"))?;
        spaces.push(Arc::new(engine.lockspace(cfg)?));
        engines.push(engine);
    }
    outln!(
        "idm demo: {hosts} host(s) (one engine each), {n} in-process simulated IDM drives \
         ({}..{}, majority {}), latency {:?}, faults {}, lease {} ms, {} s",
        drives[0],
        drives[n - 1],
        n / 2 + 1,
        args.latency,
        args.faults,
        args.lease_ms,
        args.seconds
    );
    outln!(
        "workload per host: {} long-held locks (renewed), {} uncontended locks, {} hot locks shared by all hosts, {} workers",
        args.held, args.locks, args.hot, args.workers
    );

    let hot_ids = lock_ids("demo/hot", u32::from(args.hot))?;
    // Long-held locks: taken once, renewed for the whole run.
    for (h, ls) in spaces.iter().enumerate() {
        let pending: Vec<_> = lock_ids(&format!("demo/host{h}/held"), args.held)?
            .iter()
            .map(|id| ls.lock_async(*id, Mode::Exclusive, &drives, LockOptions::default()))
            .collect();
        for p in pending {
            p.wait()?;
        }
    }

    let counters = Arc::new(Counters::default());
    let holds: Arc<Mutex<HashMap<usize, Vec<Hold>>>> = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut threads = Vec::new();
    for (h, ls) in spaces.iter().enumerate() {
        for w in 0..args.workers {
            let ls = ls.clone();
            let drives = drives.clone();
            let counters = counters.clone();
            let holds = holds.clone();
            let stop = stop.clone();
            let seed = args.seed ^ ((h as u64) << 32 | u64::from(w));
            let hot = hot_ids.clone();
            let own = lock_ids(&format!("demo/host{h}/own"), args.locks.max(1))?;
            threads.push(std::thread::spawn(move || {
                worker(
                    h, &ls, &drives, &hot, &own, seed, until, &stop, &counters, &holds,
                );
            }));
        }
    }
    let faults = (args.faults == "light").then(|| {
        let array = array.clone();
        let stop = stop.clone();
        let seed = args.seed;
        std::thread::spawn(move || inject_faults(&array, seed, &stop))
    });

    let bar = ProgressBar::new(args.seconds * 10);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {elapsed:>3} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        bar.set_position((started.elapsed().as_millis() / 100) as u64);
        let s = merged_stats(&engines)?;
        let l = s.op(OpKind::Acquire);
        bar.set_message(format!(
            "ops {:>8}  lock p50 {:>7.1} µs p99 {:>8.1} µs  renewals {:>6}  conflicts resolved {:>5}",
            counters.ops.load(Ordering::Relaxed),
            l.p50_ns as f64 / 1e3,
            l.p99_ns as f64 / 1e3,
            s.renewals(),
            counters.conflicts_resolved.load(Ordering::Relaxed)
        ));
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    if let Some(f) = faults {
        let _ = f.join();
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    let stats = merged_stats(&engines)?;
    let ops = counters.ops.load(Ordering::Relaxed);
    outln!(
        "\n{ops} lock operations in {:.1} s ({:.0}/s), {} drive commands",
        elapsed.as_secs_f64(),
        ops as f64 / elapsed.as_secs_f64(),
        stats.commands()
    );
    outln!("{stats}");
    outln!(
        "conflicts resolved: {} (a hot lock was busy, then acquired by waiting); gave up: {}; errors: {}",
        counters.conflicts_resolved.load(Ordering::Relaxed),
        counters.gave_up.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed)
    );
    let overlaps = check_overlaps(&holds.lock().unwrap_or_else(|p| p.into_inner()));
    let total_holds: usize = holds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(Vec::len)
        .sum();
    outln!(
        "overlap check: {total_holds} exclusive holds of the hot locks recorded by the hosts, {overlaps} overlapping between hosts{}",
        if overlaps == 0 { " (ok)" } else { " (SAFETY BUG)" }
    );
    let fenced = spaces.iter().filter(|s| s.is_fenced()).count();
    if fenced > 0 {
        outln!("{fenced} host(s) fenced: their renewals failed");
    }
    drop(spaces);
    Ok(overlaps == 0 && fenced == 0)
}

/// One worker of host `h`: hot locks (contended) and its own uncontended locks.
#[allow(clippy::too_many_arguments)]
fn worker(
    h: usize,
    ls: &Lockspace,
    drives: &[String],
    hot: &[LockId],
    own: &[LockId],
    seed: u64,
    until: Instant,
    stop: &AtomicBool,
    counters: &Counters,
    holds: &Mutex<HashMap<usize, Vec<Hold>>>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let no_wait = LockOptions {
        timeout: Duration::from_secs(2),
        no_wait: true,
    };
    let wait = LockOptions {
        timeout: Duration::from_secs(2),
        no_wait: false,
    };
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        if rng.gen_bool(0.3) {
            let k = rng.gen_range(0..hot.len());
            let id = hot[k];
            let got = match ls.lock(id, Mode::Exclusive, drives, no_wait) {
                Ok(()) => Ok(false),
                Err(EngineError::Lock(LockError::Busy)) => {
                    ls.lock(id, Mode::Exclusive, drives, wait).map(|()| true)
                }
                // Another worker of this host holds it: not a conflict between hosts.
                Err(EngineError::AlreadyHeld) => continue,
                Err(e) => Err(e),
            };
            match got {
                Ok(contended) => {
                    let from = Instant::now();
                    std::thread::sleep(Duration::from_micros(rng.gen_range(0..500)));
                    let to = Instant::now();
                    if ls.unlock(id).is_err() {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    holds
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(k)
                        .or_default()
                        .push(Hold { host: h, from, to });
                    if contended {
                        counters.conflicts_resolved.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.ops.fetch_add(2, Ordering::Relaxed);
                }
                Err(EngineError::Lock(LockError::Busy | LockError::Timeout)) => {
                    counters.gave_up.fetch_add(1, Ordering::Relaxed);
                }
                Err(EngineError::AlreadyHeld) => {}
                Err(_) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            let id = own[rng.gen_range(0..own.len())];
            let mode = if rng.gen_bool(0.5) {
                Mode::Exclusive
            } else {
                Mode::Shared
            };
            match ls.lock(id, mode, drives, no_wait) {
                Ok(()) => {
                    if ls.unlock(id).is_err() {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.ops.fetch_add(2, Ordering::Relaxed);
                }
                Err(EngineError::AlreadyHeld) => {}
                Err(_) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Now and then makes a minority of drives stop answering, or answer with I/O
/// errors, for a while. Never a power cycle: a drive that forgets its table and
/// comes back within a lease is outside what the protocol can survive (see the
/// design note in `engine/src/lib.rs`).
fn inject_faults(array: &SimArray, seed: u64, stop: &AtomicBool) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xFA17);
    let drives = array.drives();
    let minority = (drives.len() - 1) / 2;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1000)));
        if minority == 0 {
            continue;
        }
        let k = rng.gen_range(1..=minority);
        let mut picked: Vec<usize> = (0..drives.len()).collect();
        for i in 0..k {
            let j = rng.gen_range(i..picked.len());
            picked.swap(i, j);
        }
        let io = rng.gen_bool(0.5);
        for &d in &picked[..k] {
            if io {
                drives[d].set_io_error(true);
            } else {
                drives[d].set_down(true);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..400)));
        for &d in &picked[..k] {
            drives[d].set_io_error(false);
            drives[d].set_down(false);
        }
    }
}

/// Exclusive holds of one hot lock by different hosts that overlap in time.
fn check_overlaps(holds: &HashMap<usize, Vec<Hold>>) -> usize {
    let mut bad = 0;
    for list in holds.values() {
        let mut list = list.clone();
        list.sort_by_key(|h| h.from);
        // Holds by one host may overlap (several workers of one lockspace never
        // hold the same lock at once, but be lenient); between hosts they must not.
        let mut latest: Option<Hold> = None;
        for h in list {
            if let Some(l) = latest {
                if h.from < l.to && h.host != l.host {
                    bad += 1;
                }
                if h.to > l.to {
                    latest = Some(h);
                }
            } else {
                latest = Some(h);
            }
        }
    }
    bad
}

/// Statistics of every engine, merged.
fn merged_stats(engines: &[Engine]) -> Result<EngineStats, EngineError> {
    let mut all: Option<EngineStats> = None;
    for e in engines {
        let s = e.stats()?;
        match &mut all {
            None => all = Some(s),
            Some(a) => {
                a.total.merge(&s.total);
                a.reactors += s.reactors;
            }
        }
    }
    all.ok_or(EngineError::InvalidArgument("no engine".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_holds_of_different_hosts_are_found() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut m = HashMap::new();
        m.insert(
            0,
            vec![
                Hold {
                    host: 0,
                    from: at(0),
                    to: at(10),
                },
                Hold {
                    host: 1,
                    from: at(10),
                    to: at(20),
                },
                Hold {
                    host: 2,
                    from: at(25),
                    to: at(30),
                },
            ],
        );
        assert_eq!(check_overlaps(&m), 0);
        m.get_mut(&0).unwrap().push(Hold {
            host: 1,
            from: at(5),
            to: at(8),
        });
        assert_eq!(check_overlaps(&m), 1);
    }
}
