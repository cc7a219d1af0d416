//! The semantics of the mutex ops and reads on the [`Table`] (IDM.md §5–§6, inferred;
//! the decisions are listed in the [module docs of `firmware`](super)).

use super::outcome::Outcome;
use super::table::{Member, Table};
use super::FirmwareConfig;
use uring_sg::codec::{encode_table_count, Class, MutexOp, Record, RECORD_LEN};

/// Most records one table read may ask for (8 MiB of data-in). A larger transfer
/// length is an invalid CDB field, so arbitrary CDBs cannot make the model allocate
/// without bound.
pub const MAX_READ_RECORDS: u32 = 16384;

/// Whether two classes may be held by two members at once.
fn compatible(a: Class, b: Class) -> bool {
    a.is_shared() && b.is_shared()
}

fn member_of(rec: &Record, now_ms: u64) -> Member {
    Member {
        class: rec.class,
        countdown_ms: rec.countdown_ms,
        since_ms: now_ms,
        metadata: rec.metadata,
    }
}

/// Applies one mutex op carried by `rec` at drive time `now_ms`.
pub fn apply(
    table: &mut Table,
    cfg: &FirmwareConfig,
    now_ms: u64,
    op: MutexOp,
    rec: &Record,
) -> Outcome {
    match op {
        MutexOp::Trylock => trylock(table, cfg, now_ms, rec),
        MutexOp::Refresh => refresh(table, now_ms, rec),
        MutexOp::Unlock => unlock(table, now_ms, rec),
        MutexOp::Break => break_(table, now_ms, rec),
        MutexOp::Destroy => destroy(table, now_ms, rec),
        MutexOp::Normal | MutexOp::Init | MutexOp::Lock => Outcome::InvalidMutexOp,
    }
}

fn trylock(table: &mut Table, cfg: &FirmwareConfig, now_ms: u64, rec: &Record) -> Outcome {
    let host = rec.host_id;
    let Some(entry) = table.get(&rec.lock_id) else {
        if table.record_count() >= cfg.capacity {
            return Outcome::TableFull;
        }
        if cfg.max_hosts_per_mutex == 0 {
            return Outcome::MutexHostListFull;
        }
        table.create(rec.lock_id, host, member_of(rec, now_ms), now_ms);
        return Outcome::Granted;
    };
    let own = entry.members.get(&host);
    if own.is_some_and(|m| m.is_live(now_ms)) {
        return Outcome::AlreadyHeld;
    }
    // Our own expired membership (if any) is replaced, not counted as a conflict.
    let mut conflict_live = false;
    let mut conflict_expired = false;
    for (h, m) in &entry.members {
        if *h == host || compatible(m.class, rec.class) {
            continue;
        }
        if m.is_live(now_ms) {
            conflict_live = true;
        } else {
            conflict_expired = true;
        }
    }
    if conflict_live {
        return Outcome::HeldByOther;
    }
    if conflict_expired {
        return Outcome::Busy;
    }
    let adds_record = own.is_none() && !entry.members.is_empty();
    if own.is_none() && entry.members.len() >= cfg.max_hosts_per_mutex {
        return Outcome::MutexHostListFull;
    }
    if adds_record && table.record_count() >= cfg.capacity {
        return Outcome::TableFull;
    }
    table.modify(&rec.lock_id, |e| {
        e.members.insert(host, member_of(rec, now_ms));
        e.touch(now_ms, host, rec.class);
    });
    Outcome::Granted
}

fn refresh(table: &mut Table, now_ms: u64, rec: &Record) -> Outcome {
    let host = rec.host_id;
    let Some(entry) = table.get(&rec.lock_id) else {
        return Outcome::NotFound;
    };
    let Some(own) = entry.members.get(&host) else {
        return Outcome::Expired;
    };
    if own.is_expired(now_ms) {
        return Outcome::Expired;
    }
    let promotion = own.class.is_shared() && !rec.class.is_shared();
    if promotion && entry.members.len() > 1 {
        return Outcome::ConvertRefused;
    }
    table.modify(&rec.lock_id, |e| {
        e.members.insert(host, member_of(rec, now_ms));
        e.touch(now_ms, host, rec.class);
    });
    Outcome::Granted
}

fn unlock(table: &mut Table, now_ms: u64, rec: &Record) -> Outcome {
    let host = rec.host_id;
    let Some(entry) = table.get(&rec.lock_id) else {
        return Outcome::NotFound;
    };
    let Some(own) = entry.members.get(&host) else {
        return Outcome::NotHeld;
    };
    if own.class != rec.class {
        return Outcome::WrongClass;
    }
    table.modify(&rec.lock_id, |e| {
        e.members.remove(&host);
        if rec.control.updates() {
            e.lvb = rec.lvb.as_stored();
        }
        e.touch(now_ms, host, rec.class);
    });
    Outcome::Granted
}

fn break_(table: &mut Table, now_ms: u64, rec: &Record) -> Outcome {
    let host = rec.host_id;
    let Some(entry) = table.get(&rec.lock_id) else {
        return Outcome::NotFound;
    };
    let blocked = entry
        .members
        .iter()
        .any(|(h, m)| *h != host && !m.is_breakable(now_ms));
    if blocked {
        return Outcome::Busy;
    }
    // Every other member goes; the breaker is the only member afterwards, so the
    // record count never grows and the host list holds one member.
    table.modify(&rec.lock_id, |e| {
        e.members.clear();
        e.members.insert(host, member_of(rec, now_ms));
        e.touch(now_ms, host, rec.class);
    });
    Outcome::Granted
}

fn destroy(table: &mut Table, now_ms: u64, rec: &Record) -> Outcome {
    let Some(entry) = table.get(&rec.lock_id) else {
        return Outcome::NotFound;
    };
    if entry.live_count(now_ms) > 0 {
        return Outcome::Busy;
    }
    table.remove(&rec.lock_id);
    Outcome::Granted
}

/// Fills `data_in` with a table read of `records` records at `now_ms`: the first
/// `min(records, table)` records, zero-filled to `records * 512` bytes.
pub fn read_table(table: &Table, now_ms: u64, records: u32, data_in: &mut Vec<u8>) -> Outcome {
    read_table_limited(table, now_ms, records, usize::MAX, true, data_in).0
}

/// A table read of `records` records whose data-in is cut to `limit` bytes (what
/// the initiator's buffer takes). Only the table's own records are encoded; with
/// `pad` the zero-filled rest up to the transfer length is appended, without it
/// it is left out and only counted. Returns the outcome and the data-in length
/// (`data_in.len()` with `pad`, else at least it: the bytes past `data_in` are
/// zeros). Nothing is allocated beyond the records the table holds, unless `pad`
/// asks for the zeros.
pub fn read_table_limited(
    table: &Table,
    now_ms: u64,
    records: u32,
    limit: usize,
    pad: bool,
    data_in: &mut Vec<u8>,
) -> (Outcome, usize) {
    if records > MAX_READ_RECORDS {
        return (Outcome::InvalidField, 0);
    }
    let total = (records as usize * RECORD_LEN).min(limit);
    data_in.clear();
    let mut buf = [0u8; RECORD_LEN];
    for rec in table.records(now_ms) {
        let room = total - data_in.len();
        if room == 0 {
            break;
        }
        rec.encode_into(&mut buf);
        data_in.extend_from_slice(&buf[..room.min(RECORD_LEN)]);
    }
    if pad {
        data_in.resize(total, 0);
    }
    (Outcome::Granted, total)
}

/// Fills `data_in` with the count block: one 512-byte block whose first two bytes are
/// the record count, big-endian (saturated at `u16::MAX`).
pub fn read_count(table: &Table, data_in: &mut Vec<u8>) -> Outcome {
    let mut block = [0u8; RECORD_LEN];
    let count = u16::try_from(table.record_count()).unwrap_or(u16::MAX);
    encode_table_count(count, &mut block);
    data_in.clear();
    data_in.extend_from_slice(&block);
    Outcome::Granted
}
