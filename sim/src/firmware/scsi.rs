//! The SCSI face of the drive: CDB + data-out → [`Outcome`] → status + sense + data-in.

use super::exec;
use super::outcome::Outcome;
use super::table::Table;
use super::{FirmwareConfig, ScsiAnswer};
use uring_sg::codec::{
    encode_version_page, parse_cdb, CdbError, ParsedCdb, ReadGroup, Record, ScsiStatus, Sense,
    SenseBuf, SenseFormat, IDM_OPCODE, RECORD_LEN, VERSION_PAGE,
};

/// Length of the standard INQUIRY data the model returns.
const STD_INQUIRY_LEN: usize = 36;

/// Decides the outcome of one SCSI command; data-in (if any) replaces `data_in`,
/// which is left empty unless the outcome is [`Outcome::Granted`].
pub fn decide(
    table: &mut Table,
    cfg: &FirmwareConfig,
    now_ms: u64,
    cdb: &[u8],
    data_out: &[u8],
    data_in: &mut Vec<u8>,
) -> Outcome {
    decide_limited(table, cfg, now_ms, cdb, data_out, usize::MAX, true, data_in).0
}

/// [`decide`] with data-in cut to `limit` bytes; without `pad`, the zero-filled
/// tail of a table read is not materialised (see [`exec::read_table_limited`]).
/// Returns the outcome and the data-in length (bytes past `data_in.len()` are zeros).
#[allow(clippy::too_many_arguments)]
pub fn decide_limited(
    table: &mut Table,
    cfg: &FirmwareConfig,
    now_ms: u64,
    cdb: &[u8],
    data_out: &[u8],
    limit: usize,
    pad: bool,
    data_in: &mut Vec<u8>,
) -> (Outcome, usize) {
    data_in.clear();
    let mut total = None;
    let outcome = match parse_cdb(cdb) {
        Err(e) => cdb_error(cdb, e),
        Ok(ParsedCdb::MutexWrite { op }) => {
            if data_out.len() != RECORD_LEN {
                Outcome::InvalidParameter
            } else {
                match Record::decode(data_out) {
                    Ok(rec) => exec::apply(table, cfg, now_ms, op, &rec),
                    Err(_) => Outcome::InvalidParameter,
                }
            }
        }
        Ok(ParsedCdb::MutexRead { records, group }) => match group {
            ReadGroup::Mutex => {
                let (o, t) = exec::read_table_limited(table, now_ms, records, limit, pad, data_in);
                total = Some(t);
                o
            }
            ReadGroup::Count if records == 0 => Outcome::InvalidField,
            ReadGroup::Count => exec::read_count(table, data_in),
        },
        Ok(ParsedCdb::Inquiry {
            evpd,
            page,
            alloc_len,
        }) => inquiry(cfg, evpd, page, alloc_len as usize, data_in),
    };
    if !outcome.is_good() {
        data_in.clear();
        return (outcome, 0);
    }
    data_in.truncate(limit);
    (outcome, total.unwrap_or(data_in.len()))
}

/// A CDB the codec rejected. An IDM write whose op nibble is not an op (8..15) is an
/// invalid mutex op like the unused ones; any other field problem is an invalid
/// field in the CDB.
fn cdb_error(cdb: &[u8], e: CdbError) -> Outcome {
    match e {
        CdbError::InvalidOpcode(_) => Outcome::InvalidOpcode,
        CdbError::InvalidField(1)
            if cdb.first() == Some(&IDM_OPCODE) && cdb.get(1).is_some_and(|b| b & 0x0F == 0) =>
        {
            Outcome::InvalidMutexOp
        }
        CdbError::Short { .. }
        | CdbError::InvalidField(_)
        | CdbError::BadTransferLength(_)
        | CdbError::UnknownGroup(_) => Outcome::InvalidField,
    }
}

fn inquiry(
    cfg: &FirmwareConfig,
    evpd: bool,
    page: u8,
    alloc_len: usize,
    data_in: &mut Vec<u8>,
) -> Outcome {
    let mut data = if !evpd {
        standard_inquiry()
    } else {
        match page {
            0x00 => vec![0x00, 0x00, 0x00, 0x02, 0x00, VERSION_PAGE],
            VERSION_PAGE => encode_version_page(cfg.version_major, usize::MAX),
            _ => return Outcome::InvalidField,
        }
    };
    data.truncate(alloc_len);
    *data_in = data;
    Outcome::Granted
}

/// Standard INQUIRY data of a direct-access device (SPC-4 layout).
fn standard_inquiry() -> Vec<u8> {
    let mut d = vec![0u8; STD_INQUIRY_LEN];
    d[0] = 0x00; // peripheral: connected direct-access block device
    d[2] = 0x06; // SPC-4
    d[3] = 0x02; // response data format 2
    d[4] = (STD_INQUIRY_LEN - 5) as u8;
    d[8..16].copy_from_slice(b"IDMSIM  ");
    d[16..32].copy_from_slice(b"IDM FIRMWARE SIM");
    d[32..36].copy_from_slice(b"0001");
    d
}

/// The sense triple of a CHECK CONDITION outcome in `format`. Invalid mutex ops use
/// key 7 ASC 0x31 in fixed format, as IDM.md §6 describes for fixed-sense drives.
pub fn sense_of(outcome: Outcome, format: SenseFormat) -> Option<Sense> {
    match (outcome, format) {
        (Outcome::InvalidMutexOp, SenseFormat::Fixed) => {
            Some(Sense::new(Sense::KEY_DATA_PROTECT, 0x31, 0))
        }
        _ => outcome.check_sense(),
    }
}

/// The SCSI status byte of an outcome.
pub fn status_of(outcome: Outcome) -> ScsiStatus {
    match outcome {
        Outcome::Granted => ScsiStatus::GOOD,
        Outcome::Busy => ScsiStatus::BUSY,
        Outcome::HeldByOther | Outcome::Expired | Outcome::NotHeld => {
            ScsiStatus::RESERVATION_CONFLICT
        }
        Outcome::AlreadyHeld | Outcome::ConvertRefused | Outcome::WrongClass => {
            ScsiStatus::COMMAND_TERMINATED
        }
        Outcome::NotFound
        | Outcome::TableFull
        | Outcome::HostTableFull
        | Outcome::MutexHostListFull
        | Outcome::InvalidOpcode
        | Outcome::InvalidMutexOp
        | Outcome::InvalidField
        | Outcome::InvalidParameter => ScsiStatus::CHECK_CONDITION,
    }
}

/// The SCSI answer (status + sense in `format`) of an outcome.
pub fn answer(outcome: Outcome, format: SenseFormat) -> ScsiAnswer {
    ScsiAnswer {
        status: status_of(outcome),
        sense: sense_of(outcome, format).map_or_else(SenseBuf::default, |s| s.to_buf(format)),
    }
}
