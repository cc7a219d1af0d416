//! Command descriptor blocks: the 16-byte IDM mutex write/read (opcode `0xF0`) and the
//! INQUIRY that reads the IDM version page (IDM.md §3).

use super::record::RECORD_LEN;
use super::types::MutexOp;

/// The vendor opcode every IDM command uses.
pub const IDM_OPCODE: u8 = 0xF0;
/// The standard INQUIRY opcode.
pub const INQUIRY_OPCODE: u8 = 0x12;
/// CDB byte 14 of a mutex write/read: the mutex table.
pub const GROUP_MUTEX: u8 = 0x01;
/// CDB byte 14 of a mutex read: the "inquiry group", one block with the record count.
pub const GROUP_INQUIRY: u8 = 0xFF;
/// CDB byte 1 of a mutex read.
pub const READ_SUBCODE: u8 = 0x01;
/// The EVPD page that carries the IDM spec version.
pub const VERSION_PAGE: u8 = 0xC3;
/// The allocation length the host asks for when reading the version page.
pub const VERSION_PAGE_LEN: u16 = 0x70;
/// Length of every IDM CDB.
pub const IDM_CDB_LEN: usize = 16;

/// The CDB of a mutex write (data-out: exactly one 512-byte record).
pub fn mutex_write_cdb(op: MutexOp) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = IDM_OPCODE;
    c[1] = (op as u8) << 4;
    c[10..14].copy_from_slice(&(RECORD_LEN as u32).to_be_bytes());
    c[14] = GROUP_MUTEX;
    c
}

/// The CDB of a mutex read of `records` 512-byte records of the table
/// (data-in: `records * 512` bytes).
pub fn mutex_read_cdb(records: u32) -> [u8; 16] {
    read_cdb(records, GROUP_MUTEX)
}

/// The CDB that reads the table's record count (data-in: one 512-byte block whose
/// first two bytes are the count, big-endian).
pub fn table_count_cdb() -> [u8; 16] {
    read_cdb(1, GROUP_INQUIRY)
}

fn read_cdb(records: u32, group: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = IDM_OPCODE;
    c[1] = READ_SUBCODE;
    c[10..14].copy_from_slice(&records.to_be_bytes());
    c[14] = group;
    c
}

/// A standard INQUIRY CDB (6 bytes).
pub fn inquiry_cdb(evpd: bool, page: u8, alloc_len: u16) -> [u8; 6] {
    let len = alloc_len.to_be_bytes();
    [INQUIRY_OPCODE, evpd as u8, page, len[0], len[1], 0]
}

/// The INQUIRY for the IDM version page: `12 01 C3 00 70 00`.
pub fn version_cdb() -> [u8; 6] {
    inquiry_cdb(true, VERSION_PAGE, VERSION_PAGE_LEN)
}

/// Which part of the drive a mutex read addresses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReadGroup {
    /// Group `0x01`: records of the mutex table.
    Mutex,
    /// Group `0xFF`: the block with the record count.
    Count,
}

/// A CDB as the drive understands it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ParsedCdb {
    /// Mutex write with this op; carries one 512-byte record.
    MutexWrite {
        /// The mutex op.
        op: MutexOp,
    },
    /// Mutex read of `records` blocks from `group`.
    MutexRead {
        /// Number of 512-byte blocks asked for.
        records: u32,
        /// Which group.
        group: ReadGroup,
    },
    /// INQUIRY.
    Inquiry {
        /// EVPD bit.
        evpd: bool,
        /// Page code.
        page: u8,
        /// Allocation length.
        alloc_len: u16,
    },
}

/// Why a CDB is not an IDM command the drive accepts. Each maps to a distinct
/// CHECK CONDITION in the firmware model.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum CdbError {
    /// No bytes at all, or fewer than the opcode's CDB length.
    #[error("CDB too short: {len} bytes")]
    Short {
        /// Bytes received.
        len: usize,
    },
    /// An opcode the drive does not implement.
    #[error("invalid opcode {0:#04x}")]
    InvalidOpcode(u8),
    /// A field of the CDB holds a value the drive rejects (byte index given).
    #[error("invalid field in CDB byte {0}")]
    InvalidField(usize),
    /// Mutex write with a transfer length other than 512.
    #[error("mutex write transfer length {0}, must be 512")]
    BadTransferLength(u32),
    /// A group other than `0x01` / `0xFF`.
    #[error("unknown mutex group {0:#04x}")]
    UnknownGroup(u8),
}

/// Parses a CDB the way the IDM firmware model does. Never panics.
pub fn parse_cdb(cdb: &[u8]) -> Result<ParsedCdb, CdbError> {
    let Some(&opcode) = cdb.first() else {
        return Err(CdbError::Short { len: 0 });
    };
    match opcode {
        IDM_OPCODE => {
            if cdb.len() < IDM_CDB_LEN {
                return Err(CdbError::Short { len: cdb.len() });
            }
            let len = u32::from_be_bytes([cdb[10], cdb[11], cdb[12], cdb[13]]);
            let group = cdb[14];
            if cdb[1] == READ_SUBCODE {
                let group = match group {
                    GROUP_MUTEX => ReadGroup::Mutex,
                    GROUP_INQUIRY => ReadGroup::Count,
                    g => return Err(CdbError::UnknownGroup(g)),
                };
                return Ok(ParsedCdb::MutexRead {
                    records: len,
                    group,
                });
            }
            if cdb[1] & 0x0F != 0 {
                return Err(CdbError::InvalidField(1));
            }
            let op = MutexOp::from_nibble(cdb[1] >> 4).ok_or(CdbError::InvalidField(1))?;
            if group != GROUP_MUTEX {
                return Err(CdbError::UnknownGroup(group));
            }
            if len != RECORD_LEN as u32 {
                return Err(CdbError::BadTransferLength(len));
            }
            Ok(ParsedCdb::MutexWrite { op })
        }
        INQUIRY_OPCODE => {
            if cdb.len() < 6 {
                return Err(CdbError::Short { len: cdb.len() });
            }
            if cdb[1] & !1 != 0 {
                return Err(CdbError::InvalidField(1));
            }
            let evpd = cdb[1] & 1 == 1;
            if !evpd && cdb[2] != 0 {
                return Err(CdbError::InvalidField(2));
            }
            Ok(ParsedCdb::Inquiry {
                evpd,
                page: cdb[2],
                alloc_len: u16::from_be_bytes([cdb[3], cdb[4]]),
            })
        }
        other => Err(CdbError::InvalidOpcode(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte table of IDM.md §3 (mutex write), for every op.
    #[test]
    fn mutex_write_table() {
        for op in MutexOp::ALL {
            let c = mutex_write_cdb(op);
            let mut want = [0u8; 16];
            want[0] = 0xF0;
            want[1] = (op as u8) << 4;
            want[10..14].copy_from_slice(&[0x00, 0x00, 0x02, 0x00]);
            want[14] = 0x01;
            assert_eq!(c, want, "{op:?}");
            assert_eq!(parse_cdb(&c), Ok(ParsedCdb::MutexWrite { op }));
        }
        assert_eq!(mutex_write_cdb(MutexOp::Trylock)[1], 0x20);
        assert_eq!(mutex_write_cdb(MutexOp::Destroy)[1], 0x70);
    }

    #[test]
    fn mutex_read_table() {
        let c = mutex_read_cdb(3950);
        assert_eq!(
            c,
            [0xF0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x0F, 0x6E, 0x01, 0]
        );
        assert_eq!(
            parse_cdb(&c),
            Ok(ParsedCdb::MutexRead {
                records: 3950,
                group: ReadGroup::Mutex
            })
        );
        let c = table_count_cdb();
        assert_eq!(c, [0xF0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xFF, 0]);
        assert_eq!(
            parse_cdb(&c),
            Ok(ParsedCdb::MutexRead {
                records: 1,
                group: ReadGroup::Count
            })
        );
    }

    #[test]
    fn version_inquiry() {
        assert_eq!(version_cdb(), [0x12, 0x01, 0xC3, 0x00, 0x70, 0x00]);
        assert_eq!(
            parse_cdb(&version_cdb()),
            Ok(ParsedCdb::Inquiry {
                evpd: true,
                page: 0xC3,
                alloc_len: 0x70
            })
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(parse_cdb(&[]), Err(CdbError::Short { len: 0 }));
        assert_eq!(parse_cdb(&[0xF0, 0x20]), Err(CdbError::Short { len: 2 }));
        assert_eq!(parse_cdb(&[0x28; 10]), Err(CdbError::InvalidOpcode(0x28)));
        let mut c = mutex_write_cdb(MutexOp::Trylock);
        c[13] = 0x01;
        assert_eq!(parse_cdb(&c), Err(CdbError::BadTransferLength(0x201)));
        let mut c = mutex_write_cdb(MutexOp::Trylock);
        c[14] = 0x02;
        assert_eq!(parse_cdb(&c), Err(CdbError::UnknownGroup(2)));
        let mut c = mutex_read_cdb(1);
        c[14] = 0x07;
        assert_eq!(parse_cdb(&c), Err(CdbError::UnknownGroup(7)));
        let mut c = mutex_write_cdb(MutexOp::Trylock);
        c[1] = 0x80;
        assert_eq!(parse_cdb(&c), Err(CdbError::InvalidField(1)));
        c[1] = 0x22;
        assert_eq!(parse_cdb(&c), Err(CdbError::InvalidField(1)));
        assert_eq!(
            parse_cdb(&[0x12, 0, 0xC3, 0, 0x70, 0]),
            Err(CdbError::InvalidField(2))
        );
    }
}
