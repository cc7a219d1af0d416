//! `idm-bench`: benchmarks that prove the speed (or show where it is missing).
//!
//! Run: `cargo run --release -p idm-bench -- [scenario...] [--quick] [--json FILE]
//! [--svg DIR]`. Scenarios: `latency`, `throughput`, `renewal`, `contention`,
//! `quorum` (default: all). Every scenario runs against the socket simulator
//! server (`idm_sim::engine::SimEngine::with_sim_server`) and the in-process drives
//! (`SimEngine::on_array`), with zero latency and with modelled latency, and runs the
//! old stack's algorithm ([`baseline`]) through the same socket server in the same
//! run, so each headline figure is a ratio measured side by side. All drives are
//! simulated; nothing here is a hardware result.
//!
//! `--quick` runs tiny sizes (seconds, debug build) to keep the benchmarks
//! compiling and working; its figures mean nothing and nothing is asserted
//! about them.

mod baseline;
mod common;
mod contention;
mod latency;
mod plots;
mod quorum;
mod renewal;
mod report;
mod throughput;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use common::{models, BenchError, Model};
use report::Report;

/// Benchmarks of the IDM engine against the simulator and the old stack's algorithm.
#[derive(Parser, Debug)]
#[command(name = "idm-bench")]
pub struct Opts {
    /// Scenarios to run: latency, throughput, renewal, contention, quorum (default: all).
    pub scenarios: Vec<String>,
    /// Tiny sizes and budgets: a smoke run (figures mean nothing).
    #[arg(long)]
    pub quick: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write SVG plots into this directory.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Seed of the latency models.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

const ALL: [&str; 5] = ["latency", "throughput", "renewal", "contention", "quorum"];

fn bar(len: u64, quick: bool) -> ProgressBar {
    if quick {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

fn run(opts: &Opts) -> Result<Report, BenchError> {
    let wanted: Vec<&str> = if opts.scenarios.is_empty() {
        ALL.to_vec()
    } else {
        for s in &opts.scenarios {
            if !ALL.contains(&s.as_str()) {
                return Err(BenchError::Other(format!(
                    "unknown scenario {s:?}; known: {}",
                    ALL.join(", ")
                )));
            }
        }
        opts.scenarios.iter().map(String::as_str).collect()
    };
    let all_models = models();
    let ms: Vec<Model> = if opts.quick {
        all_models[..2].to_vec()
    } else {
        all_models
    };
    let mut r = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: report::machine(),
        quick: opts.quick,
        ..Report::default()
    };
    for s in wanted {
        let t = std::time::Instant::now();
        match s {
            "latency" => {
                let pb = bar(
                    (ms.len() * latency::drive_counts(opts.quick).len()) as u64,
                    opts.quick,
                );
                r.latency = latency::run(opts, &ms, &pb)?;
                pb.finish_and_clear();
            }
            "throughput" => {
                let pb = bar(ms.len() as u64 * 2, opts.quick);
                r.throughput = throughput::run(opts, &ms, &pb)?;
                pb.finish_and_clear();
            }
            "renewal" => {
                let pb = bar(if opts.quick { 2 } else { 9 }, opts.quick);
                r.renewal = renewal::run(opts, &ms, &pb)?;
                pb.finish_and_clear();
            }
            "contention" => {
                let pb = bar(ms.len() as u64, opts.quick);
                r.contention = contention::run(opts, &ms, &pb)?;
                pb.finish_and_clear();
            }
            "quorum" => {
                let pb = bar(if opts.quick { 1 } else { 3 }, opts.quick);
                r.quorum = quorum::run(opts, &pb)?;
                pb.finish_and_clear();
            }
            _ => {}
        }
        eprintln!("{s}: {:.1} s", t.elapsed().as_secs_f64());
    }
    r.conclude();
    Ok(r)
}

fn main() {
    let opts = Opts::parse();
    let report = match run(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("idm-bench: {e}");
            std::process::exit(1);
        }
    };
    print!("{}", report.table());
    if let Some(path) = &opts.json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| BenchError::Other(e.to_string()))
            .and_then(|j| std::fs::write(path, j).map_err(BenchError::from));
        if let Err(e) = written {
            eprintln!("idm-bench: writing {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    if let Some(dir) = &opts.svg {
        match plots::write(&report, dir) {
            Ok(files) => {
                for f in files {
                    eprintln!("wrote {f}");
                }
            }
            Err(e) => {
                eprintln!("idm-bench: plots: {e}");
                std::process::exit(1);
            }
        }
    }
}
