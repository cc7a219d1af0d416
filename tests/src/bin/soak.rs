//! `idm-soak`: many seeded simulation runs, a progress bar and a summary.
//!
//! ```text
//! idm-soak --seeds 1000 --ops 2000 --faults heavy --start-seed 0
//! ```
//!
//! Exit code 1 when any run found a violation; the failing seeds are printed with
//! the command that replays each.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use idm_tests::{run_with, Bug, FaultProfile, RunOptions};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Faults {
    None,
    Light,
    Heavy,
    /// Only a fixed minority of drives misbehaves: any fence or slow release,
    /// LVB read or host count is a violation.
    Minority,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlantedBug {
    None,
    MinorityQuorum,
    TrustReplyTime,
}

/// Runs the deterministic IDM simulation over many seeds.
#[derive(Parser, Debug)]
#[command(name = "idm-soak", version)]
struct Args {
    /// Number of seeds (runs).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Lock operations per run.
    #[arg(long, default_value_t = 1000)]
    ops: u64,
    /// Fault profile.
    #[arg(long, value_enum, default_value_t = Faults::Light)]
    faults: Faults,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    start_seed: u64,
    /// Plant a host bug (to see the checker catch it).
    #[arg(long, value_enum, default_value_t = PlantedBug::None)]
    bug: PlantedBug,
    /// Force the number of drives per lock (else drawn from the seed).
    #[arg(long)]
    drives: Option<u16>,
    /// Print every run's report line.
    #[arg(long)]
    verbose: bool,
}

/// Prints above the bar, or plainly when the bar is hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let profile = match args.faults {
        Faults::None => FaultProfile::none(),
        Faults::Light => FaultProfile::light(),
        Faults::Heavy => FaultProfile::heavy(),
        Faults::Minority => FaultProfile::minority(),
    };
    let opts = RunOptions {
        bug: match args.bug {
            PlantedBug::None => Bug::None,
            PlantedBug::MinorityQuorum => Bug::MinorityQuorum,
            PlantedBug::TrustReplyTime => Bug::TrustReplyTime,
        },
        drives: args.drives,
    };
    let bar = ProgressBar::new(args.seeds);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} seeds {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut ops = 0u64;
    let mut events = 0u64;
    let mut violations = 0usize;
    let mut excused = [0u64; 2];
    let mut losses = [0u64; 2];
    let mut failing = Vec::new();
    for seed in args.start_seed..args.start_seed.saturating_add(args.seeds) {
        let r = run_with(seed, args.ops, profile, opts);
        ops += r.ops_done;
        events += r.events;
        violations += r.violation_count;
        for k in 0..2 {
            excused[k] += r.stats.lvb_excused[k];
            losses[k] += r.stats.lvb_losses[k];
        }
        if args.verbose {
            say(
                &bar,
                format!(
                    "seed {seed}: ops {} events {} sim {:.1}s violations {} hash {:016x} {:?}",
                    r.ops_done,
                    r.events,
                    r.sim_time.0 as f64 / 1e9,
                    r.violation_count,
                    r.trace_hash,
                    r.stats
                ),
            );
        }
        if r.violation_count > 0 {
            say(
                &bar,
                format!(
                    "seed {seed}: {} violation(s), first: {}",
                    r.violation_count,
                    r.violations
                        .first()
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                ),
            );
            failing.push((seed, r.replay.clone()));
        }
        bar.set_message(format!("ops {ops} violations {violations}"));
        bar.inc(1);
    }
    bar.finish();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeds {} ({}..{}), faults {:?}, ops {ops}, events {events}, violations {violations}, \
         wall {secs:.1} s, {:.1} seeds/s, {:.0} ops/s",
        args.seeds,
        args.start_seed,
        args.start_seed.saturating_add(args.seeds),
        args.faults,
        args.seeds as f64 / secs.max(1e-9),
        ops as f64 / secs.max(1e-9),
    );
    println!(
        "LVB lost on a drive: {} by power cycle, {} by table clean-up; reads that went \
         back because of it (the documented limit, not violations): {} after power \
         cycles, {} after clean-up",
        losses[0], losses[1], excused[0], excused[1]
    );
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds:");
        for (seed, replay) in &failing {
            println!("  {seed}: {replay}");
        }
        ExitCode::from(1)
    }
}
