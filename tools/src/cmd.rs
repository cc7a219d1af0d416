//! `idm cmd`: send one IDM command to one drive, a real device or a simulated
//! drive, and print the decoded answer: the tool for freeing a stuck lock by
//! hand (`idm dump` shows who holds it; `break` takes it over from expired
//! holders, `unlock` releases a host's membership, `destroy` frees the entry).
//!
//! The drive is a device path (`/dev/sgN`, `/dev/sdX`, `/dev/disk/by-id/...`,
//! `/dev/mapper/...` on one drive, `/dev/nvmeXnY`), opened as the engine opens
//! it ([`crate::drives`]), or with `--sim ADDR` (or `IDM_SIM`) a drive name on
//! that simulator.
//!
//! Exit codes: 0 when the drive did what was asked; 1 when it answered with a
//! refusal (busy, held by another live host, not found, not held by this host,
//! wrong class, expired, table full, ...: printed on stdout like any answer);
//! 2 when the command could not be run (bad arguments; no such device, not a
//! device, permission denied; a device that is not an IDM drive (it rejects the
//! IDM opcode); no simulator; timeout or I/O error: one line on stderr naming
//! the drive and the cause).

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use uring_sg::codec::{
    decode_table_count, decode_version_page, ControlByte, DriveError, HostId, LockId, Lvb, Mode,
    MutexOp, Record,
};
use uring_sg::transport::Request;

use crate::common::{describe, entries, errno_name, fail, print_table};
use crate::drives::{explain_io, Drives, Target};

/// The command to send.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Op {
    /// Try to acquire the mutex as --host.
    Trylock,
    /// Release --host's membership (stores --lvb when given); --mode must be the
    /// class it holds (default: as the drive's table shows it).
    Unlock,
    /// Renew --host's membership (or convert with another --mode).
    Refresh,
    /// Take over from expired holders: --host becomes the only member (refused
    /// while another member's lease runs).
    Break,
    /// Free the table entry of --lock (refused while it has a live member).
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

/// The ops that need `--lock`.
const LOCK_OPS: [(&str, &str); 5] = [
    ("op", "trylock"),
    ("op", "unlock"),
    ("op", "refresh"),
    ("op", "break"),
    ("op", "destroy"),
];

/// The ops that need `--host` (the firmware matches or grants a member).
const HOST_OPS: [(&str, &str); 4] = [
    ("op", "trylock"),
    ("op", "unlock"),
    ("op", "refresh"),
    ("op", "break"),
];

/// The host ID a destroy is sent with when none is given (the drive ignores it).
const DESTROY_HOST: &str = "idm-cli";

/// Arguments of `idm cmd`.
#[derive(clap::Args)]
pub struct Args {
    /// Send to a drive on the simulator at this address (`unix:PATH` or
    /// `tcp:HOST:PORT`); without it (and without `IDM_SIM`), DRIVE is a real device.
    #[arg(long, env = "IDM_SIM", value_name = "ADDR")]
    sim: Option<String>,
    /// The drive: a device path (`/dev/sgN`, `/dev/sdX`, `/dev/disk/by-id/...`,
    /// `/dev/mapper/...` on one drive, `/dev/nvmeXnY`), or a drive name with `--sim`.
    drive: String,
    /// The command.
    #[arg(value_enum)]
    op: Op,
    /// Lock ID as `idm dump` prints it: text up to 64 bytes, or `hex:` followed
    /// by hex digits. Required by trylock, unlock, refresh, break and destroy.
    #[arg(long, value_name = "ID", required_if_eq_any = LOCK_OPS)]
    lock: Option<LockId>,
    /// Host ID the command acts as: text up to 32 bytes, or `hex:...`. For unlock
    /// and refresh the member's own ID (the HOST ID column of `idm dump`); for
    /// break the host that takes the lock over. Required by trylock, unlock,
    /// refresh and break (destroy does not need it).
    #[arg(long, value_name = "ID", required_if_eq_any = HOST_OPS)]
    host: Option<HostId>,
    /// Lock mode (class). The firmware checks it: unlock must name the class the
    /// host holds. Default: ex; for unlock, the class the drive's table shows for
    /// --host.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Membership countdown (lease) of a trylock, refresh or break, ms.
    #[arg(long, default_value_t = 60_000, value_name = "MS")]
    countdown: u64,
    /// Lock value block to store (little-endian u64; with unlock).
    #[arg(long, value_name = "U64")]
    lvb: Option<u64>,
    /// Client name given to the simulator (what `idm fault cut` matches).
    #[arg(long, default_value = "idm-cli", value_name = "NAME")]
    client: String,
    /// Time the command may take, ms.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
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

/// Prints `text` (or `{"drive", "ok", "answer"}`) and succeeds.
fn answer(a: &Args, text: &str) -> ExitCode {
    if a.json {
        outln!("{}", json!({"drive": a.drive, "ok": true, "answer": text}));
    } else {
        outln!("{text}");
    }
    ExitCode::SUCCESS
}

/// Runs `idm cmd`.
pub fn run(a: Args) -> ExitCode {
    let timeout = Duration::from_millis(a.timeout.max(1));
    let mut drives = match Drives::new(a.sim.as_deref()) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let t = match drives.open(&a.drive, &a.client) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let real = drives.real();
    let mutex_op = match a.op {
        Op::Trylock => MutexOp::Trylock,
        Op::Unlock => MutexOp::Unlock,
        Op::Refresh => MutexOp::Refresh,
        Op::Break => MutexOp::Break,
        Op::Destroy => MutexOp::Destroy,
        Op::ReadTable => {
            return match drives.read_table(&t, timeout) {
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
            let r = match drives.call(&t, &req, timeout) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if let Err(e) = r.result {
                return refusal(&a, None, e, real);
            }
            let text = if matches!(a.op, Op::Count) {
                decode_table_count(&r.data).map(|n| n.to_string())
            } else {
                decode_version_page(&r.data).map(|(ma, mi)| format!("{ma}.{mi}"))
            };
            return match text {
                Ok(t) => answer(&a, &t),
                Err(e) => fail(format!("`{}`: the answer does not decode: {e}", a.drive)),
            };
        }
    };
    // clap requires them for these ops; a guard all the same.
    let host = match (a.host, mutex_op) {
        (Some(h), _) => Some(h),
        (None, MutexOp::Destroy) => DESTROY_HOST.parse().ok(),
        (None, _) => None,
    };
    let (Some(lock), Some(host)) = (a.lock, host) else {
        return fail(format!("{} needs --lock and --host", mutex_op.name()));
    };
    let mode = match a.mode {
        Some(ModeArg::Ex) => Mode::Exclusive,
        Some(ModeArg::Sh) => Mode::Shared,
        None if mutex_op == MutexOp::Unlock => {
            match held_mode(&mut drives, &t, lock, host, timeout) {
                Ok(m) => m,
                Err(e) => return fail(e),
            }
        }
        None => Mode::Exclusive,
    };
    let mut record = Record::new(lock, host, mode.class());
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
    let r = match drives.call(&t, &req, timeout) {
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
        Err(e) => refusal(&a, Some(mutex_op), e, real),
    }
}

/// The class `host` holds `lock` in on the drive (exclusive when the table has
/// no live or expired record of it: the unlock then answers for itself).
fn held_mode(
    drives: &mut Drives,
    t: &Target,
    lock: LockId,
    host: HostId,
    timeout: Duration,
) -> Result<Mode, String> {
    let recs = drives.read_table(t, timeout)?;
    let shared = recs
        .iter()
        .find(|r| r.lock_id == lock && r.host_id == host)
        .is_some_and(|r| r.class.is_shared());
    Ok(if shared {
        Mode::Shared
    } else {
        Mode::Exclusive
    })
}

/// What a refusal means for `op`, in the administrator's terms.
fn meaning(op: Option<MutexOp>, e: DriveError) -> &'static str {
    use DriveError as E;
    match (op, e) {
        (Some(MutexOp::Break), E::Busy | E::HeldByOther) => {
            "another member's lease has not run out: break takes over only from expired holders"
        }
        (Some(MutexOp::Destroy), E::Busy) => {
            "the lock still has a live member: destroy frees only an entry nobody holds (break or unlock it first)"
        }
        (Some(MutexOp::Trylock), E::Busy | E::HeldByOther) => "another host holds it",
        (_, E::NotFound) => "the drive has no such lock",
        (Some(MutexOp::Unlock), E::NotHeld) => {
            "--host is not a member of this lock (see the HOST ID column of idm dump)"
        }
        (Some(MutexOp::Unlock), E::WrongClass) => {
            "--host holds it in the other mode (see the CLASS column of idm dump)"
        }
        (Some(MutexOp::Refresh), E::Expired) => "--host's lease ran out; break or trylock again",
        _ => "",
    }
}

/// Reports a drive's refusal (exit 1), or why the command could not be run
/// (exit 2: not an IDM drive, transport failure, timeout).
fn refusal(a: &Args, op: Option<MutexOp>, e: DriveError, real: bool) -> ExitCode {
    if e.is_io() {
        return fail(format!("`{}`: {}", a.drive, explain_io(e, real)));
    }
    if matches!(e, DriveError::InvalidOpcode) {
        return fail(format!(
            "`{}`: not an IDM drive: it rejects the IDM command as an invalid opcode ({})",
            a.drive,
            errno_name(e.errno())
        ));
    }
    let why = meaning(op, e);
    if a.json {
        outln!(
            "{}",
            json!({"drive": a.drive, "ok": false, "answer": e.to_string(), "meaning": why, "errno": e.errno(), "errno_name": errno_name(e.errno())})
        );
    } else if why.is_empty() {
        outln!("{}", describe(e));
    } else {
        outln!("{}: {why}", describe(e));
    }
    ExitCode::from(1)
}
