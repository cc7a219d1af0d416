//! `idm`: the command line of idm-engine.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod doctor;

/// The idm-engine command line.
#[derive(Parser)]
#[command(name = "idm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands; each lives in its own module with `Args` and `run`.
#[derive(Subcommand)]
enum Command {
    /// Check what this machine offers: kernel, io_uring, transports, drives.
    Doctor(doctor::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Doctor(args) => doctor::run(args),
    }
}
