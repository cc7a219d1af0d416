//! What every scenario shares: the test rigs (engine on the socket simulator,
//! engine on in-process drives), latency models, thread CPU sampling and
//! histogram summaries.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use idm_engine::api::{Engine, EngineError};
use idm_sim::engine::{SimArray, SimEngine};
use idm_sim::firmware::FirmwareConfig;
use idm_sim::{Latency, ListenAddr, SimConfig};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;
use uring_sg::{HostId, LockId};

/// Errors of the benchmark harness.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The engine failed.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// The baseline failed.
    #[error("baseline: {0}")]
    Baseline(#[from] crate::baseline::BaselineError),
    /// File or socket trouble.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A named latency model of the simulated drives.
#[derive(Clone, Copy, Debug)]
pub struct Model {
    /// Short name for tables: `zero`, `fixed`, `tail`.
    pub name: &'static str,
    /// The model.
    pub latency: Latency,
}

/// The three models every scenario runs under: none, fixed 100 µs, and a
/// heavy tail (lognormal, median 100 µs, p99 1 ms, capped at 10 ms).
pub fn models() -> Vec<Model> {
    vec![
        Model {
            name: "zero",
            latency: Latency::None,
        },
        Model {
            name: "fixed",
            latency: Latency::Fixed { us: 100 },
        },
        Model {
            name: "tail",
            latency: Latency::Tail {
                median: 100,
                p99: 1000,
            },
        },
    ]
}

/// Which side of a comparison a figure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The engine on the socket simulator server (`SimEngine::with_sim_server`).
    EngineSocket,
    /// The engine on in-process drives (`SimEngine::on_array`).
    EngineInProc,
    /// The old stack's algorithm on the same socket simulator server.
    Baseline,
}

impl Side {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Side::EngineSocket => "engine/socket",
            Side::EngineInProc => "engine/in-proc",
            Side::Baseline => "baseline",
        }
    }
}

/// An engine and, for the socket rig, the simulator's socket path.
pub struct Rig {
    /// The engine.
    pub engine: Engine,
    /// The simulator's Unix socket (socket rig only).
    pub path: Option<PathBuf>,
    /// Drive names.
    pub drives: Vec<String>,
    // Keeps the socket directory until the rig goes.
    _dir: Option<tempfile::TempDir>,
}

/// A firmware whose table holds at least `records` records.
pub fn firmware(records: usize) -> FirmwareConfig {
    FirmwareConfig {
        capacity: records.max(FirmwareConfig::default().capacity),
        ..FirmwareConfig::default()
    }
}

/// The engine on a socket simulator server with `n` drives.
pub fn socket_rig(
    n: usize,
    fw: FirmwareConfig,
    latency: Latency,
    reactors: usize,
    seed: u64,
) -> Result<Rig, BenchError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sim.sock");
    let mut sim = SimConfig::with_drives(n);
    sim.firmware = fw;
    sim.latency = vec![latency];
    sim.seed = seed;
    let (engine, _addrs) = Engine::with_sim_server(sim, &[ListenAddr::Unix(path.clone())], |c| {
        c.reactors = reactors;
        c.seed = seed;
        c.command_timeout = Duration::from_secs(30);
    })?;
    let drives = engine.simulated_drives();
    tight_timers(SIM);
    Ok(Rig {
        engine,
        path: Some(path),
        drives,
        _dir: Some(dir),
    })
}

/// Sets the timer slack of this process's threads named `prefix*` to 1 ns
/// (`/proc/self/task/<tid>/timerslack_ns`; Linux's default is 50 µs). The
/// simulator delays replies with its ring's wait timeout, and the in-process
/// drives with io_uring timeouts on the reactor's ring: with the default slack a
/// modelled 100 µs reply could arrive up to 50 µs late, which would be charged
/// to the engine. Best effort: without permission the default stays.
pub fn tight_timers(prefix: &str) {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for e in dir.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            let _ = std::fs::write(e.path().join("timerslack_ns"), "1");
        }
    }
}

/// A latency function for in-process drives drawing from `latency`.
pub fn latency_fn(latency: Latency, seed: u64) -> Option<Arc<dyn Fn() -> Duration + Send + Sync>> {
    if latency.is_none() {
        return None;
    }
    let rng = Mutex::new(SmallRng::seed_from_u64(seed));
    Some(Arc::new(move || {
        let mut r = rng.lock().unwrap_or_else(|p| p.into_inner());
        latency.sample(&mut r)
    }))
}

/// The engine on `n` in-process drives.
pub fn inproc_rig(
    n: usize,
    fw: FirmwareConfig,
    latency: Latency,
    reactors: usize,
    seed: u64,
) -> Result<Rig, BenchError> {
    let array = SimArray::with_firmware(n, fw, latency_fn(latency, seed));
    let drives = array.names();
    let engine = Engine::on_array(array, |c| {
        c.reactors = reactors;
        c.seed = seed;
        c.command_timeout = Duration::from_secs(30);
    })?;
    tight_timers(REACTOR);
    Ok(Rig {
        engine,
        path: None,
        drives,
        _dir: None,
    })
}

/// A lock ID from a label and a number.
pub fn lock_id(label: &str, i: usize) -> LockId {
    let s = format!("{label}-{i}");
    LockId::from_slice(&s.as_bytes()[..s.len().min(LockId::LEN)]).unwrap_or_default()
}

/// A host ID from a label.
pub fn host_id(label: &str) -> HostId {
    HostId::from_slice(&label.as_bytes()[..label.len().min(HostId::LEN)]).unwrap_or_default()
}

/// A fresh latency histogram (1 ns .. 1 h, 3 digits).
// An invariant, not an error path: new_with_bounds fails only for low < 1,
// high < 2 * low or more than 5 digits.
#[allow(clippy::expect_used)]
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("constant histogram bounds are valid")
}

/// Records a duration in ns.
pub fn rec(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

/// p50 / p99 / p99.9 / max of a histogram, in µs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Worst, µs.
    pub max_us: f64,
}

impl Summary {
    /// The summary of `h`.
    pub fn of(h: &Histogram<u64>) -> Summary {
        let us = |v: u64| v as f64 / 1e3;
        Summary {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// CDF points `(µs, fraction)` of a histogram, for plots.
pub fn cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let total = h.len().max(1) as f64;
    let mut out = Vec::new();
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        seen += v.count_at_value();
        out.push((v.value_iterated_to() as f64 / 1e3, seen as f64 / total));
    }
    out
}

/// CPU time (ns) of every thread of this process, by thread id, with its name:
/// `/proc/self/task/<tid>/comm` and the first field of `.../schedstat` (ns on
/// CPU; falls back to utime+stime from `.../stat` in clock ticks).
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    threads: HashMap<u32, (String, u64)>,
}

fn thread_cpu_ns(tid: &str) -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")) {
        if let Some(v) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return Some(v);
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the parenthesised name: state is field 3; utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000)
}

impl CpuSample {
    /// Samples every thread now.
    pub fn now() -> CpuSample {
        let mut threads = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let Ok(tid) = name.parse::<u32>() else {
                    continue;
                };
                let comm = std::fs::read_to_string(e.path().join("comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                if let Some(ns) = thread_cpu_ns(&name) {
                    threads.insert(tid, (comm, ns));
                }
            }
        }
        CpuSample { threads }
    }

    /// CPU ns spent since `before` by threads whose name starts with `prefix`
    /// (threads born in between count from zero; threads that died are lost).
    pub fn since(&self, before: &CpuSample, prefix: &str) -> u64 {
        self.threads
            .iter()
            .filter(|(_, (n, _))| n.starts_with(prefix))
            .map(|(tid, (_, ns))| {
                let b = before.threads.get(tid).map_or(0, |(_, b)| *b);
                ns.saturating_sub(b)
            })
            .sum()
    }
}

/// Thread-name prefix of the engine's reactors.
pub const REACTOR: &str = "idm-reactor";
/// Thread-name prefix of the simulator server.
pub const SIM: &str = "idm-sim";
/// Thread-name prefix of the baseline's threads.
pub const BASELINE: &str = "bl-";

/// A loop that runs at least `min` and at most `max` iterations, and stops
/// between them once `budget` has passed.
pub struct Budget {
    start: Instant,
    budget: Duration,
    min: usize,
    max: usize,
    done: usize,
}

impl Budget {
    /// A budget.
    pub fn new(budget: Duration, min: usize, max: usize) -> Budget {
        Budget {
            start: Instant::now(),
            budget,
            min,
            max,
            done: 0,
        }
    }

    /// Whether to run another iteration (counts it).
    pub fn next(&mut self) -> bool {
        let go =
            self.done < self.min || (self.done < self.max && self.start.elapsed() < self.budget);
        if go {
            self.done += 1;
        }
        go
    }
}
