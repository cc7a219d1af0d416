//! `idm`: the command line of idm-engine.

use clap::Parser;

/// The idm-engine command line.
#[derive(Parser)]
#[command(name = "idm", version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
