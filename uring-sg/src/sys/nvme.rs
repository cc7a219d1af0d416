//! `struct nvme_uring_cmd` of `<linux/nvme_ioctl.h>`: the payload of an
//! `IORING_OP_URING_CMD` entry on an NVMe character device (`/dev/nvmeX` for
//! admin commands, `/dev/ngXnY` for I/O).

/// `_IOWR('N', 0x82, struct nvme_uring_cmd)`: an admin command through `uring_cmd`.
pub const NVME_URING_CMD_ADMIN: u32 = 0xC048_4E82;
/// `_IOWR('N', 0x80, struct nvme_uring_cmd)`: an I/O command through `uring_cmd`.
pub const NVME_URING_CMD_IO: u32 = 0xC048_4E80;
/// Size of `struct nvme_uring_cmd`.
pub const NVME_URING_CMD_LEN: usize = 72;

/// `struct nvme_uring_cmd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NvmeUringCmd {
    /// Opcode.
    pub opcode: u8,
    /// Flags (fused operations; 0).
    pub flags: u8,
    /// Reserved.
    pub rsvd1: u16,
    /// Namespace ID.
    pub nsid: u32,
    /// CDW2.
    pub cdw2: u32,
    /// CDW3.
    pub cdw3: u32,
    /// Metadata buffer address.
    pub metadata: u64,
    /// Data buffer address.
    pub addr: u64,
    /// Metadata length.
    pub metadata_len: u32,
    /// Data length in bytes.
    pub data_len: u32,
    /// CDW10.
    pub cdw10: u32,
    /// CDW11.
    pub cdw11: u32,
    /// CDW12.
    pub cdw12: u32,
    /// CDW13.
    pub cdw13: u32,
    /// CDW14.
    pub cdw14: u32,
    /// CDW15.
    pub cdw15: u32,
    /// Timeout in milliseconds (0: the driver's default).
    pub timeout_ms: u32,
    /// Reserved.
    pub rsvd2: u32,
}

impl NvmeUringCmd {
    /// The struct as the first 72 bytes of a `uring_cmd` payload (the rest zero).
    pub fn to_payload(&self) -> [u8; 80] {
        let mut p = [0u8; 80];
        let mut put = |off: usize, b: &[u8]| p[off..off + b.len()].copy_from_slice(b);
        put(0, &[self.opcode, self.flags]);
        put(2, &self.rsvd1.to_ne_bytes());
        put(4, &self.nsid.to_ne_bytes());
        put(8, &self.cdw2.to_ne_bytes());
        put(12, &self.cdw3.to_ne_bytes());
        put(16, &self.metadata.to_ne_bytes());
        put(24, &self.addr.to_ne_bytes());
        put(32, &self.metadata_len.to_ne_bytes());
        put(36, &self.data_len.to_ne_bytes());
        for (i, d) in [
            self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15,
        ]
        .iter()
        .enumerate()
        {
            put(40 + 4 * i, &d.to_ne_bytes());
        }
        put(64, &self.timeout_ms.to_ne_bytes());
        put(68, &self.rsvd2.to_ne_bytes());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(size_of::<NvmeUringCmd>(), NVME_URING_CMD_LEN);
        assert_eq!(offset_of!(NvmeUringCmd, opcode), 0);
        assert_eq!(offset_of!(NvmeUringCmd, flags), 1);
        assert_eq!(offset_of!(NvmeUringCmd, rsvd1), 2);
        assert_eq!(offset_of!(NvmeUringCmd, nsid), 4);
        assert_eq!(offset_of!(NvmeUringCmd, cdw2), 8);
        assert_eq!(offset_of!(NvmeUringCmd, cdw3), 12);
        assert_eq!(offset_of!(NvmeUringCmd, metadata), 16);
        assert_eq!(offset_of!(NvmeUringCmd, addr), 24);
        assert_eq!(offset_of!(NvmeUringCmd, metadata_len), 32);
        assert_eq!(offset_of!(NvmeUringCmd, data_len), 36);
        assert_eq!(offset_of!(NvmeUringCmd, cdw10), 40);
        assert_eq!(offset_of!(NvmeUringCmd, cdw15), 60);
        assert_eq!(offset_of!(NvmeUringCmd, timeout_ms), 64);
        assert_eq!(offset_of!(NvmeUringCmd, rsvd2), 68);
    }

    /// `_IOWR(type, nr, size)` = dir 3 << 30 | size << 16 | type << 8 | nr.
    #[test]
    fn ioctl_numbers() {
        let iowr = |nr: u32| (3u32 << 30) | ((NVME_URING_CMD_LEN as u32) << 16) | (0x4E << 8) | nr;
        assert_eq!(iowr(0x82), NVME_URING_CMD_ADMIN);
        assert_eq!(iowr(0x80), NVME_URING_CMD_IO);
    }

    #[test]
    fn payload_puts_fields_at_their_offsets() {
        let c = NvmeUringCmd {
            opcode: 0xC1,
            nsid: 7,
            addr: 0x1122_3344_5566_7788,
            data_len: 512,
            cdw10: 128,
            cdw12: 0x0120,
            timeout_ms: 15000,
            ..Default::default()
        };
        let p = c.to_payload();
        assert_eq!(p[0], 0xC1);
        assert_eq!(u32::from_ne_bytes(p[4..8].try_into().unwrap()), 7);
        assert_eq!(
            u64::from_ne_bytes(p[24..32].try_into().unwrap()),
            0x1122_3344_5566_7788
        );
        assert_eq!(u32::from_ne_bytes(p[36..40].try_into().unwrap()), 512);
        assert_eq!(u32::from_ne_bytes(p[40..44].try_into().unwrap()), 128);
        assert_eq!(u32::from_ne_bytes(p[48..52].try_into().unwrap()), 0x0120);
        assert_eq!(u32::from_ne_bytes(p[64..68].try_into().unwrap()), 15000);
        assert_eq!(&p[72..], &[0u8; 8]);
    }
}
