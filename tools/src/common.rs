//! Helpers the subcommands share: the simulator address, errno names, table
//! printing. Opening drives for single commands is [`crate::drives`].

use std::process::ExitCode;

use idm_sim::server::table_entry;
use idm_sim::{ListenAddr, TableEntry};
use uring_sg::codec::{DriveError, Record};

/// Default simulator address when neither `--sim`/`--listen` nor `IDM_SIM` is given.
pub const DEFAULT_SIM: &str = "unix:/tmp/idm-sim.sock";

/// Exit code of a usage, connection or protocol failure.
pub const EXIT_ERROR: u8 = 2;

/// Prints a one-line error and returns the failure exit code.
pub fn fail(msg: impl std::fmt::Display) -> ExitCode {
    errln!("idm: {msg}");
    ExitCode::from(EXIT_ERROR)
}

/// Parses a simulator address.
pub fn parse_addr(s: &str) -> Result<ListenAddr, String> {
    s.parse::<ListenAddr>().map_err(|e| e.to_string())
}

/// The symbolic name of a (positive) errno.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        16 => "EBUSY",
        19 => "ENODEV",
        22 => "EINVAL",
        62 => "ETIME",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        _ => "E?",
    }
}

/// "busy (EBUSY)": a drive error with the errno it maps to.
pub fn describe(e: DriveError) -> String {
    format!("{e} ({})", errno_name(e.errno()))
}

/// The table as JSON entries.
pub fn entries(recs: &[Record]) -> Vec<TableEntry> {
    recs.iter().map(table_entry).collect()
}

/// Prints a table for people.
pub fn print_table(recs: &[Record]) {
    outln!(
        "{:<40} {:<24} {:<16} {:<5} {:>10} {:>20}",
        "LOCK ID",
        "HOST ID",
        "STATE",
        "CLASS",
        "COUNTDOWN",
        "LVB"
    );
    for r in recs {
        let class = match r.class as u8 {
            0 => "EX",
            1 => "PW",
            _ => "SH",
        };
        outln!(
            "{:<40} {:<24} {:<16} {:<5} {:>10} {:>20}",
            r.lock_id.to_string(),
            r.host_id.to_string(),
            r.state.to_string(),
            class,
            r.countdown_ms,
            r.lvb.to_u64()
        );
    }
    outln!("{} record(s)", recs.len());
}
