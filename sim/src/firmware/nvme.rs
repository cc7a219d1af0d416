//! The NVMe face of the drive: an admin vendor command (IDM.md §4) → [`Outcome`] →
//! NVMe status (status code type in bits 8..10, status code in bits 0..7; 0 is
//! success).
//!
//! Admin opcodes other than `0xC1`/`0xC2` answer the generic "invalid command
//! opcode" (SCT 0, SC 0x01), as QEMU's controller does for commands it lacks. A
//! data length that does not match the command (CDW10 × 4 ≠ length, a write that is
//! not exactly one record, a read that is not whole records) answers the generic
//! "invalid field in command" (SCT 0, SC 0x02); so does a malformed record.

use super::exec::{self, MAX_READ_RECORDS};
use super::outcome::Outcome;
use super::table::Table;
use super::FirmwareConfig;
use uring_sg::codec::{
    NvmeAdminCmd, Record, GROUP_INQUIRY, GROUP_MUTEX, NVME_IDM_READ, NVME_IDM_WRITE, RECORD_LEN,
};

/// NVMe success.
pub const NVME_SUCCESS: u16 = 0;
/// Generic status: invalid command opcode.
pub const NVME_INVALID_OPCODE: u16 = 0x0001;
/// Generic status: invalid field in command.
pub const NVME_INVALID_FIELD: u16 = 0x0002;

const fn vendor(sc: u8) -> u16 {
    0x100 | sc as u16
}

/// The NVMe status of an outcome (IDM.md §4 vendor codes, status code type 1).
pub fn status_of(outcome: Outcome) -> u16 {
    match outcome {
        Outcome::Granted => NVME_SUCCESS,
        Outcome::InvalidMutexOp => vendor(0xC5),
        Outcome::TableFull => vendor(0xC6),
        Outcome::HostTableFull => vendor(0xC7),
        Outcome::MutexHostListFull => vendor(0xC8),
        Outcome::NotFound => vendor(0xC9),
        Outcome::HeldByOther | Outcome::Expired | Outcome::NotHeld => vendor(0xCA),
        Outcome::AlreadyHeld | Outcome::ConvertRefused | Outcome::WrongClass => vendor(0xCB),
        Outcome::Busy => vendor(0xCC),
        Outcome::InvalidOpcode => NVME_INVALID_OPCODE,
        Outcome::InvalidField | Outcome::InvalidParameter => NVME_INVALID_FIELD,
    }
}

/// Decides the outcome of one NVMe admin command; data-in (if any) replaces
/// `data_in`, which is left empty unless the outcome is [`Outcome::Granted`].
pub fn decide(
    table: &mut Table,
    cfg: &FirmwareConfig,
    now_ms: u64,
    cmd: &NvmeAdminCmd,
    data_out: &[u8],
    data_in: &mut Vec<u8>,
) -> Outcome {
    data_in.clear();
    let outcome = decide_inner(table, cfg, now_ms, cmd, data_out, data_in);
    if !outcome.is_good() {
        data_in.clear();
    }
    outcome
}

fn decide_inner(
    table: &mut Table,
    cfg: &FirmwareConfig,
    now_ms: u64,
    cmd: &NvmeAdminCmd,
    data_out: &[u8],
    data_in: &mut Vec<u8>,
) -> Outcome {
    let len = cmd.data_len as usize;
    if u64::from(cmd.cdw10) * 4 != u64::from(cmd.data_len) {
        return match cmd.opcode {
            NVME_IDM_WRITE | NVME_IDM_READ => Outcome::InvalidField,
            _ => Outcome::InvalidOpcode,
        };
    }
    match cmd.opcode {
        NVME_IDM_WRITE => {
            if cmd.cdw12 & 0x0F != 0 {
                return Outcome::InvalidField;
            }
            let Some(op) = cmd.op() else {
                return Outcome::InvalidMutexOp;
            };
            if cmd.group() != GROUP_MUTEX {
                return Outcome::NotFound;
            }
            if len != RECORD_LEN || data_out.len() != RECORD_LEN {
                return Outcome::InvalidField;
            }
            match Record::decode(data_out) {
                Ok(rec) => exec::apply(table, cfg, now_ms, op, &rec),
                Err(_) => Outcome::InvalidField,
            }
        }
        NVME_IDM_READ => match cmd.group() {
            GROUP_MUTEX => {
                if len.checked_rem(RECORD_LEN) != Some(0) {
                    return Outcome::InvalidField;
                }
                let records = u32::try_from(len / RECORD_LEN).unwrap_or(u32::MAX);
                if records > MAX_READ_RECORDS {
                    return Outcome::InvalidField;
                }
                exec::read_table(table, now_ms, records, data_in)
            }
            GROUP_INQUIRY => {
                if len != RECORD_LEN {
                    return Outcome::InvalidField;
                }
                exec::read_count(table, data_in)
            }
            _ => Outcome::NotFound,
        },
        _ => Outcome::InvalidOpcode,
    }
}
