//! `idm dump`: print a simulated drive's mutex table (read through the drive's
//! own table-read commands, as a host would).

use std::process::ExitCode;
use std::time::Duration;

use crate::common::{entries, fail, open, print_table, read_table, DEFAULT_SIM};

/// Arguments of `idm dump`.
#[derive(clap::Args)]
pub struct Args {
    /// Simulator address (unix:PATH or tcp:HOST:PORT).
    #[arg(long, env = "IDM_SIM", default_value = DEFAULT_SIM)]
    sim: String,
    /// The drive's name.
    drive: String,
    /// Print JSON (an array of records).
    #[arg(long)]
    json: bool,
    /// Command timeout, ms.
    #[arg(long, default_value_t = 5000)]
    timeout: u64,
}

/// Runs `idm dump`.
pub fn run(a: Args) -> ExitCode {
    let (mut d, i) = match open(&a.sim, "idm-dump", &a.drive) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let recs = match read_table(&mut d, i, Duration::from_millis(a.timeout)) {
        Ok(r) => r,
        Err(e) => return fail(format!("reading the table of `{}`: {e}", a.drive)),
    };
    if a.json {
        match serde_json::to_string_pretty(&entries(&recs)) {
            Ok(s) => outln!("{s}"),
            Err(e) => return fail(e),
        }
    } else {
        print_table(&recs);
    }
    ExitCode::SUCCESS
}
