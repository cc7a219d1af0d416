//! `idm-chaos`: the chaos test with real processes (see `idm_tests::chaos`).
//!
//! ```text
//! idm-chaos --seconds 75                 # what `cargo test -p idm-tests --test chaos` runs
//! idm-chaos --seconds 1800 --seed 7      # a soak
//! ```
//!
//! Exit code 1 when the checker found a violation (the logs are kept and their
//! directory printed), 2 when the run could not be set up.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use idm_tests::chaos::{run, Config, FaultKind};

/// Client processes linking libseagate_ilm contend for one lock on an `idm sim`
/// server while clients are killed and paused and a minority of drives fails.
#[derive(Parser, Debug)]
#[command(name = "idm-chaos", version)]
struct Args {
    /// Seconds of fault injection (a few more to drain and stop).
    #[arg(long, default_value_t = 75)]
    seconds: u64,
    /// Seed of the schedule (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Client processes.
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Simulated drives (faults hit a minority of them at a time).
    #[arg(long, default_value_t = 5)]
    drives: usize,
    /// The lease, ms.
    #[arg(long, default_value_t = 2000)]
    lease_ms: u64,
    /// IDM_COMMAND_TIMEOUT_MS of the clients.
    #[arg(long, default_value_t = 400)]
    command_timeout_ms: u64,
    /// Mean time between injected events, ms.
    #[arg(long, default_value_t = 700)]
    mean_interval_ms: u64,
    /// The `idm` binary (default: built with cargo, found through cargo metadata).
    #[arg(long)]
    idm: Option<PathBuf>,
    /// Directory of libseagate_ilm.so and .a (default: as --idm).
    #[arg(long)]
    lib_dir: Option<PathBuf>,
    /// Keep the logs even when the run passes.
    #[arg(long)]
    keep: bool,
    /// Print every injected event.
    #[arg(long)]
    verbose: bool,
    /// Drive faults to draw from: `all`, `answered` (stall-short, stall-long,
    /// io-error: every command still answered), or a comma-separated list of
    /// stall-short, stall-long, io-error, drop, stop, power-cycle.
    #[arg(long, default_value = "all")]
    faults: String,
    /// A killed holder's restarted process must be the next to enter the lock
    /// (fails on today's engine: its acquire unlocks the leftover first).
    #[arg(long)]
    strict_take_back: bool,
    /// IDM_LOG_LEVEL of the clients' engine logs (kept with --keep or on failure).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 % 1_000_000)
    });
    let mut cfg = Config::new(a.seconds, seed);
    cfg.clients = a.clients;
    cfg.drives = a.drives;
    cfg.lease_ms = a.lease_ms;
    cfg.command_timeout_ms = a.command_timeout_ms;
    cfg.lock_wait_ms = a.lease_ms / 2;
    cfg.mean_interval_ms = a.mean_interval_ms;
    cfg.idm = a.idm;
    cfg.lib_dir = a.lib_dir;
    cfg.keep = a.keep;
    cfg.verbose = a.verbose;
    cfg.log_level = a.log_level;
    cfg.strict_take_back = a.strict_take_back;
    cfg.faults = match a.faults.as_str() {
        "all" => FaultKind::ALL.to_vec(),
        "answered" => FaultKind::ANSWERED.to_vec(),
        list => {
            let mut v = Vec::new();
            for name in list.split(',').filter(|n| !n.is_empty()) {
                match FaultKind::from_name(name) {
                    Some(k) => v.push(k),
                    None => {
                        eprintln!("idm-chaos: unknown fault kind `{name}`");
                        return ExitCode::from(2);
                    }
                }
            }
            v
        }
    };
    println!(
        "idm-chaos: seed {seed}; replay the schedule with --seed {seed} (process timing differs)"
    );
    match run(&cfg) {
        Ok(r) => {
            print!("{}", r.summary(&cfg));
            if r.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("idm-chaos: {e}");
            ExitCode::from(2)
        }
    }
}
