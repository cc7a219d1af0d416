//! `idm cmd`: send one IDM command to a simulated drive and print the answer.
//!
//! Exit codes: 0 when the drive did what was asked, 1 when it answered with a
//! refusal (busy, not found, ...: printed on stdout like any answer), 2 when the
//! command could not be run (bad arguments, no simulator, timeout, I/O error on
//! stderr).

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use uring_sg::codec::{
    decode_table_count, decode_version_page, ControlByte, HostId, LockId, Lvb, Mode, MutexOp,
    Record,
};
use uring_sg::transport::Request;

use crate::common::{
    describe, entries, errno_name, fail, open, print_table, read_table, DEFAULT_SIM,
};

/// The command to send.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Op {
    /// Try to acquire the mutex.
    Trylock,
    /// Release it (stores --lvb when given).
    Unlock,
    /// Renew membership (or convert with another --mode).
    Refresh,
    /// Take over from expired holders.
    Break,
    /// Free the table entry.
    Destroy,
    /// Read the whole table.
    ReadTable,
    /// Read the record count.
    Count,
    /// Read the IDM version.
    Version,
}

/// A lock mode on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    /// Exclusive.
    Ex,
    /// Shared.
    Sh,
}

/// Arguments of `idm cmd`.
#[derive(clap::Args)]
pub struct Args {
    /// Simulator address (unix:PATH or tcp:HOST:PORT).
    #[arg(long, env = "IDM_SIM", default_value = DEFAULT_SIM)]
    sim: String,
    /// The drive's name.
    drive: String,
    /// The command.
    #[arg(value_enum)]
    op: Op,
    /// Lock ID: text, or hex: followed by hex digits.
    #[arg(long, default_value = "idm-cli-lock")]
    lock: LockId,
    /// Host ID: text, or hex: followed by hex digits.
    #[arg(long, default_value = "idm-cli")]
    host: HostId,
    /// Lock mode.
    #[arg(long, value_enum, default_value = "ex")]
    mode: ModeArg,
    /// Membership countdown (lease), ms.
    #[arg(long, default_value_t = 60_000)]
    countdown: u64,
    /// Lock value block to store (little-endian u64; with unlock).
    #[arg(long)]
    lvb: Option<u64>,
    /// Client name given to the simulator (what `idm fault cut` matches).
    #[arg(long, default_value = "idm-cli")]
    client: String,
    /// Command timeout, ms.
    #[arg(long, default_value_t = 5000)]
    timeout: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn word(op: MutexOp) -> &'static str {
    match op {
        MutexOp::Trylock | MutexOp::Lock | MutexOp::Break => "granted",
        MutexOp::Unlock => "released",
        MutexOp::Refresh => "renewed",
        MutexOp::Destroy => "destroyed",
        MutexOp::Normal | MutexOp::Init => "done",
    }
}

/// Runs `idm cmd`.
pub fn run(a: Args) -> ExitCode {
    let timeout = Duration::from_millis(a.timeout);
    let (mut d, i) = match open(&a.sim, &a.client, &a.drive) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let mutex_op = match a.op {
        Op::Trylock => MutexOp::Trylock,
        Op::Unlock => MutexOp::Unlock,
        Op::Refresh => MutexOp::Refresh,
        Op::Break => MutexOp::Break,
        Op::Destroy => MutexOp::Destroy,
        Op::ReadTable => {
            return match read_table(&mut d, i, timeout) {
                Ok(recs) if a.json => match serde_json::to_string_pretty(&entries(&recs)) {
                    Ok(s) => {
                        outln!("{s}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                },
                Ok(recs) => {
                    print_table(&recs);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        Op::Count | Op::Version => {
            let req = if matches!(a.op, Op::Count) {
                Request::ReadCount
            } else {
                Request::Version
            };
            let r = match d.call(i, &req, timeout) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if let Err(e) = r.result {
                return refusal(&a, e);
            }
            let text = if matches!(a.op, Op::Count) {
                decode_table_count(&r.data).map(|n| n.to_string())
            } else {
                decode_version_page(&r.data).map(|(ma, mi)| format!("{ma}.{mi}"))
            };
            return match text {
                Ok(t) if a.json => {
                    outln!("{}", json!({"drive": a.drive, "ok": true, "answer": t}));
                    ExitCode::SUCCESS
                }
                Ok(t) => {
                    outln!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("answer does not decode: {e}")),
            };
        }
    };
    let mode = match a.mode {
        ModeArg::Ex => Mode::Exclusive,
        ModeArg::Sh => Mode::Shared,
    };
    let mut record = Record::new(a.lock, a.host, mode.class());
    record.countdown_ms = a.countdown;
    record.time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as u64);
    if let Some(v) = a.lvb {
        record.lvb = Lvb::from_u64(v);
        record.control = ControlByte::UpdateValid;
    } else if mutex_op == MutexOp::Unlock {
        // What the old host code sent with unlock (IDM.md §5).
        record.control = ControlByte::UpdateNotValid;
    }
    let req = Request::Mutex {
        op: mutex_op,
        record,
    };
    let r = match d.call(i, &req, timeout) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match r.result {
        Ok(()) => {
            if a.json {
                outln!(
                    "{}",
                    json!({"drive": a.drive, "op": mutex_op.name(), "ok": true, "answer": word(mutex_op), "errno": 0})
                );
            } else {
                outln!("{}", word(mutex_op));
            }
            ExitCode::SUCCESS
        }
        Err(e) => refusal(&a, e),
    }
}

/// Reports a drive's refusal (exit 1), or a transport failure (exit 2).
fn refusal(a: &Args, e: uring_sg::codec::DriveError) -> ExitCode {
    if e.is_io() {
        return fail(format!("drive `{}`: {}", a.drive, describe(e)));
    }
    if a.json {
        outln!(
            "{}",
            json!({"drive": a.drive, "ok": false, "answer": e.to_string(), "errno": e.errno(), "errno_name": errno_name(e.errno())})
        );
    } else {
        outln!("{}", describe(e));
    }
    ExitCode::from(1)
}
