//! NVMe admin vendor commands that carry IDM records (IDM.md §4).
//!
//! The mutex op sits in bits 7..4 of CDW12 byte 0 and the group in CDW12 byte 1.
//! CDW10 carries the transfer length in dwords (**inferred**: the public host code
//! passed the data length separately; the simulator and the NVMe transport agree on
//! this encoding and nothing else depends on it).

use super::cdb::{GROUP_INQUIRY, GROUP_MUTEX};
use super::record::RECORD_LEN;
use super::types::MutexOp;

/// Admin opcode of an IDM mutex write (data to the controller).
pub const NVME_IDM_WRITE: u8 = 0xC1;
/// Admin opcode of an IDM mutex read (data from the controller).
pub const NVME_IDM_READ: u8 = 0xC2;

/// The fields of an NVMe admin command that IDM uses (the transport adds the data
/// pointer and fills `nvme_uring_cmd`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NvmeAdminCmd {
    /// Admin opcode (0xC1 / 0xC2).
    pub opcode: u8,
    /// Namespace ID (0: the controller).
    pub nsid: u32,
    /// CDW10: transfer length in dwords.
    pub cdw10: u32,
    /// CDW12: op in bits 7..4 of byte 0, group in byte 1.
    pub cdw12: u32,
    /// Bytes to transfer.
    pub data_len: u32,
}

impl NvmeAdminCmd {
    /// A mutex write carrying one record.
    pub fn mutex_write(op: MutexOp) -> NvmeAdminCmd {
        Self::build(
            NVME_IDM_WRITE,
            (op as u8) << 4,
            GROUP_MUTEX,
            RECORD_LEN as u32,
        )
    }

    /// A read of `records` table records.
    pub fn mutex_read(records: u32) -> NvmeAdminCmd {
        Self::build(
            NVME_IDM_READ,
            0,
            GROUP_MUTEX,
            records.saturating_mul(RECORD_LEN as u32),
        )
    }

    /// A read of the table's record count.
    pub fn table_count() -> NvmeAdminCmd {
        Self::build(NVME_IDM_READ, 0, GROUP_INQUIRY, RECORD_LEN as u32)
    }

    fn build(opcode: u8, op_bits: u8, group: u8, data_len: u32) -> NvmeAdminCmd {
        NvmeAdminCmd {
            opcode,
            nsid: 0,
            cdw10: data_len / 4,
            cdw12: u32::from_le_bytes([op_bits, group, 0, 0]),
            data_len,
        }
    }

    /// The mutex op this command carries (writes only).
    pub fn op(&self) -> Option<MutexOp> {
        MutexOp::from_nibble((self.cdw12 as u8) >> 4)
    }

    /// The group byte.
    pub fn group(&self) -> u8 {
        (self.cdw12 >> 8) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let w = NvmeAdminCmd::mutex_write(MutexOp::Refresh);
        assert_eq!(w.opcode, 0xC1);
        assert_eq!(w.cdw12 & 0xFF, 0x50);
        assert_eq!(w.group(), 0x01);
        assert_eq!(w.op(), Some(MutexOp::Refresh));
        assert_eq!(w.data_len, 512);
        assert_eq!(w.cdw10, 128);
        let r = NvmeAdminCmd::mutex_read(8);
        assert_eq!((r.opcode, r.data_len, r.group()), (0xC2, 4096, 0x01));
        assert_eq!(NvmeAdminCmd::table_count().group(), 0xFF);
    }
}
