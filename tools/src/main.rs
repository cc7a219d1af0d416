//! `idm`: the command line of idm-engine.
//!
//! One module per subcommand, each with its `Args` and a `run(args) -> ExitCode`.
//! Logs go to stderr (`RUST_LOG` filters them, default `info`); results go to
//! stdout, through [`output`]: a closed pipe ends the command quietly with
//! status 141.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[macro_use]
mod output;

mod cmd;
mod common;
mod demo;
mod doctor;
mod drives;
mod dump;
mod fault;
mod lock;
mod sim;
mod status;
mod target;
mod unlock;

/// The idm-engine command line.
#[derive(Parser)]
#[command(name = "idm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
enum Command {
    /// Run the engine on in-process simulated drives and show what it does.
    Demo(demo::Args),
    /// Check what this machine offers: kernel, io_uring, transports, drives.
    Doctor(doctor::Args),
    /// Take one lock through the engine, hold it, release it.
    Lock(lock::Args),
    /// Release this host's hold of a lock (taken with `idm lock --keep`).
    Unlock(unlock::Args),
    /// How a lock stands on its drives: mode, other holders, this host.
    Status(status::Args),
    /// Run an IDM drive simulator until SIGINT/SIGTERM.
    Sim(sim::Args),
    /// Inject or heal a fault on a simulated drive.
    Fault(fault::Args),
    /// Send one IDM command to a drive (a device, or a simulated drive with
    /// --sim) and print the decoded answer: break, unlock, destroy a stuck lock.
    Cmd(cmd::Args),
    /// Print drives' mutex tables (devices, or simulated drives with --sim) and
    /// which hosts hold which lock across them.
    Dump(dump::Args),
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    let code = match Cli::parse().command {
        Command::Demo(a) => demo::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Lock(a) => lock::run(a),
        Command::Unlock(a) => unlock::run(a),
        Command::Status(a) => status::run(a),
        // A server keeps serving when its stdout closes, and its status says how
        // it stopped, not what became of the addresses it printed at start.
        Command::Sim(a) => return sim::run(a),
        Command::Fault(a) => fault::run(a),
        Command::Cmd(a) => cmd::run(a),
        Command::Dump(a) => dump::run(a),
    };
    output::finish(code)
}
