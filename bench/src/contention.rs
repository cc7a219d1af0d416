//! Scenario 4: contention: several hosts on one hot lock.
//!
//! H hosts (engine: lockspaces with different host IDs in one engine; baseline:
//! one baseline host each, with its own worker pool) each run a thread that
//! locks the hot lock EX on 8 drives, holds it for a moment, unlocks, and starts
//! over, for a fixed time. The **hand-off latency** runs from the moment a holder
//! calls unlock to the moment another host's lock returns; a host that takes the
//! lock back itself is not a hand-off. **Fairness**: wins per host, min/max and
//! Jain's index ((Σx)² / (n·Σx²), 1.0 = perfectly even); a host with no win
//! starved.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use idm_engine::api::{LockOptions, LockspaceConfig};
use indicatif::ProgressBar;
use serde::Serialize;
use uring_sg::Mode;

use crate::baseline::Baseline;
use crate::common::{
    firmware, hist, host_id, lock_id, rec, socket_rig, BenchError, Model, Side, Summary,
};
use crate::Opts;

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct ConRow {
    /// Latency model.
    pub model: &'static str,
    /// Who ran it.
    pub side: Side,
    /// Hosts.
    pub hosts: usize,
    /// Hand-off latency.
    pub handoff: Summary,
    /// Acquisitions per second, all hosts.
    pub wins_per_s: f64,
    /// Wins per host.
    pub wins: Vec<u64>,
    /// Jain's fairness index of the wins.
    pub jain: f64,
    /// Lock calls that failed (timeout).
    pub failures: u64,
}

const DRIVES: usize = 8;
const HOSTS: usize = 4;
const HOLD: Duration = Duration::from_micros(50);

/// Shared record of the last release.
struct Board {
    last: Option<(Instant, usize)>,
    handoff: Histogram<u64>,
    wins: Vec<u64>,
    failures: u64,
}

impl Board {
    fn new() -> Mutex<Board> {
        Mutex::new(Board {
            last: None,
            handoff: hist(),
            wins: vec![0; HOSTS],
            failures: 0,
        })
    }
}

fn won(board: &Mutex<Board>, me: usize) {
    let now = Instant::now();
    let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((t, h)) = b.last {
        if h != me {
            rec(&mut b.handoff, now.saturating_duration_since(t));
        }
    }
    b.wins[me] += 1;
}

fn releasing(board: &Mutex<Board>, me: usize) {
    board.lock().unwrap_or_else(|p| p.into_inner()).last = Some((Instant::now(), me));
}

fn failed(board: &Mutex<Board>) {
    board.lock().unwrap_or_else(|p| p.into_inner()).failures += 1;
}

fn hold() {
    let t = Instant::now();
    while t.elapsed() < HOLD {
        std::hint::spin_loop();
    }
}

fn row(model: &'static str, side: Side, board: Mutex<Board>, wall: Duration) -> ConRow {
    let b = board.into_inner().unwrap_or_else(|p| p.into_inner());
    let total: u64 = b.wins.iter().sum();
    let sq: f64 = b.wins.iter().map(|&w| (w as f64) * (w as f64)).sum();
    ConRow {
        model,
        side,
        hosts: HOSTS,
        handoff: Summary::of(&b.handoff),
        wins_per_s: total as f64 / wall.as_secs_f64(),
        jain: if sq > 0.0 {
            (total as f64).powi(2) / (HOSTS as f64 * sq)
        } else {
            0.0
        },
        wins: b.wins,
        failures: b.failures,
    }
}

/// Runs the scenario.
pub fn run(opts: &Opts, models: &[Model], pb: &ProgressBar) -> Result<Vec<ConRow>, BenchError> {
    let budget = if opts.quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(3)
    };
    let hot = lock_id("hot", 0);
    let opts_lock = LockOptions {
        timeout: Duration::from_secs(5),
        no_wait: false,
    };
    let mut rows = Vec::new();
    for m in models {
        pb.set_message(format!("contention {}", m.name));
        let rig = socket_rig(DRIVES, firmware(0), m.latency, 1, opts.seed)?;
        // Engine.
        let spaces = (0..HOSTS)
            .map(|h| {
                let mut c = LockspaceConfig::new(&format!("host{h}"));
                c.host_id = host_id(&format!("engine-host-{h}"));
                rig.engine.lockspace(c)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let board = Board::new();
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (me, ls) in spaces.iter().enumerate() {
                let (board, drives) = (&board, &rig.drives);
                s.spawn(move || {
                    while t0.elapsed() < budget {
                        match ls.lock(hot, Mode::Exclusive, drives, opts_lock) {
                            Ok(()) => {
                                won(board, me);
                                hold();
                                releasing(board, me);
                                let _ = ls.unlock(hot);
                            }
                            Err(_) => failed(board),
                        }
                    }
                });
            }
        });
        rows.push(row(m.name, Side::EngineSocket, board, t0.elapsed()));
        for ls in spaces {
            ls.close(true);
        }
        // Baseline, on the same server.
        let path = rig
            .path
            .clone()
            .ok_or_else(|| BenchError::Other("socket rig without a path".into()))?;
        let hosts: Vec<Baseline> = (0..HOSTS)
            .map(|h| {
                Baseline::new(
                    &format!("c{h}"),
                    path.clone(),
                    host_id(&format!("baseline-host-{h}")),
                    60_000,
                )
            })
            .collect();
        let bl_hot = lock_id("bl-hot", 0);
        let board = Board::new();
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (me, bl) in hosts.iter().enumerate() {
                let (board, drives) = (&board, &rig.drives);
                s.spawn(move || {
                    while t0.elapsed() < budget {
                        match bl.lock(bl_hot, Mode::Exclusive, drives, Duration::from_secs(5)) {
                            Ok(()) => {
                                won(board, me);
                                hold();
                                releasing(board, me);
                                let _ = bl.unlock(bl_hot, Mode::Exclusive, drives);
                            }
                            Err(_) => failed(board),
                        }
                    }
                });
            }
        });
        rows.push(row(m.name, Side::Baseline, board, t0.elapsed()));
        pb.inc(1);
    }
    Ok(rows)
}
