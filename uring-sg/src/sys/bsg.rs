//! `struct bsg_uring_cmd` of `<linux/bsg.h>` (Linux 7.1+): the 80-byte payload of
//! an `IORING_OP_URING_CMD` entry on a `/dev/bsg/*` node, and the packed SCSI
//! status the kernel returns in the big CQE's first extra word (`res2`).
//!
//! Layout taken from the merged series "bsg: add bsg_uring_cmd uapi structure"
//! (Yang Xiuwei, applied by Jens Axboe for 7.1): the kernel asserts the struct is
//! 80 bytes, needs an SQE128/CQE32 ring, ignores `cmd_op`, supports only
//! `BSG_PROTOCOL_SCSI` + `BSG_SUB_PROTOCOL_SCSI_CMD`, flat buffers and one data
//! direction. CQE `res` is 0 or a negative errno; `res2` bits 0..7 device status,
//! 8..15 driver status, 16..23 host status, 24..31 sense bytes written, 32..63
//! residual length.

/// `BSG_PROTOCOL_SCSI`.
pub const BSG_PROTOCOL_SCSI: u32 = 0;
/// `BSG_SUB_PROTOCOL_SCSI_CMD`.
pub const BSG_SUB_PROTOCOL_SCSI_CMD: u32 = 0;
/// Size of `struct bsg_uring_cmd`.
pub const BSG_URING_CMD_LEN: usize = 80;

/// `struct bsg_uring_cmd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BsgUringCmd {
    /// CDB address.
    pub request: u64,
    /// CDB length.
    pub request_len: u32,
    /// [`BSG_PROTOCOL_SCSI`].
    pub protocol: u32,
    /// [`BSG_SUB_PROTOCOL_SCSI_CMD`].
    pub subprotocol: u32,
    /// Sense buffer size.
    pub max_response_len: u32,
    /// Sense buffer address.
    pub response: u64,
    /// Data-out buffer address.
    pub dout_xferp: u64,
    /// Data-out length.
    pub dout_xfer_len: u32,
    /// 0: flat data-out buffer.
    pub dout_iovec_count: u32,
    /// Data-in buffer address.
    pub din_xferp: u64,
    /// Data-in length.
    pub din_xfer_len: u32,
    /// 0: flat data-in buffer.
    pub din_iovec_count: u32,
    /// Timeout in milliseconds (0: the default).
    pub timeout_ms: u32,
    /// Reserved, zero.
    pub reserved: [u8; 12],
}

impl BsgUringCmd {
    /// The struct as a `uring_cmd` payload.
    pub fn to_payload(&self) -> [u8; BSG_URING_CMD_LEN] {
        let mut p = [0u8; BSG_URING_CMD_LEN];
        let mut put = |off: usize, b: &[u8]| p[off..off + b.len()].copy_from_slice(b);
        put(0, &self.request.to_ne_bytes());
        put(8, &self.request_len.to_ne_bytes());
        put(12, &self.protocol.to_ne_bytes());
        put(16, &self.subprotocol.to_ne_bytes());
        put(20, &self.max_response_len.to_ne_bytes());
        put(24, &self.response.to_ne_bytes());
        put(32, &self.dout_xferp.to_ne_bytes());
        put(40, &self.dout_xfer_len.to_ne_bytes());
        put(44, &self.dout_iovec_count.to_ne_bytes());
        put(48, &self.din_xferp.to_ne_bytes());
        put(56, &self.din_xfer_len.to_ne_bytes());
        put(60, &self.din_iovec_count.to_ne_bytes());
        put(64, &self.timeout_ms.to_ne_bytes());
        put(68, &self.reserved);
        p
    }
}

/// The SCSI outcome packed into a bsg `uring_cmd` CQE's `res2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BsgRes2 {
    /// SCSI status byte.
    pub device_status: u8,
    /// Driver status (`DRIVER_SENSE` when sense is valid).
    pub driver_status: u8,
    /// Host status (`DID_*`).
    pub host_status: u8,
    /// Sense bytes written to the response buffer.
    pub sense_len: u8,
    /// Residual transfer length.
    pub resid: u32,
}

impl BsgRes2 {
    /// Unpacks `res2`.
    pub fn unpack(res2: u64) -> BsgRes2 {
        BsgRes2 {
            device_status: res2 as u8,
            driver_status: (res2 >> 8) as u8,
            host_status: (res2 >> 16) as u8,
            sense_len: (res2 >> 24) as u8,
            resid: (res2 >> 32) as u32,
        }
    }

    /// Packs into `res2` (what the kernel's `bsg_scsi_res2_build` does).
    pub fn pack(&self) -> u64 {
        ((self.resid as u64) << 32)
            | ((self.sense_len as u64) << 24)
            | ((self.host_status as u64) << 16)
            | ((self.driver_status as u64) << 8)
            | self.device_status as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(size_of::<BsgUringCmd>(), BSG_URING_CMD_LEN);
        assert_eq!(offset_of!(BsgUringCmd, request), 0);
        assert_eq!(offset_of!(BsgUringCmd, request_len), 8);
        assert_eq!(offset_of!(BsgUringCmd, protocol), 12);
        assert_eq!(offset_of!(BsgUringCmd, subprotocol), 16);
        assert_eq!(offset_of!(BsgUringCmd, max_response_len), 20);
        assert_eq!(offset_of!(BsgUringCmd, response), 24);
        assert_eq!(offset_of!(BsgUringCmd, dout_xferp), 32);
        assert_eq!(offset_of!(BsgUringCmd, dout_xfer_len), 40);
        assert_eq!(offset_of!(BsgUringCmd, dout_iovec_count), 44);
        assert_eq!(offset_of!(BsgUringCmd, din_xferp), 48);
        assert_eq!(offset_of!(BsgUringCmd, din_xfer_len), 56);
        assert_eq!(offset_of!(BsgUringCmd, din_iovec_count), 60);
        assert_eq!(offset_of!(BsgUringCmd, timeout_ms), 64);
        assert_eq!(offset_of!(BsgUringCmd, reserved), 68);
    }

    #[test]
    fn res2_round_trips_and_matches_the_kernel_packing() {
        let r = BsgRes2 {
            device_status: 0x02,
            driver_status: 0x08,
            host_status: 0,
            sense_len: 18,
            resid: 512,
        };
        assert_eq!(r.pack(), 0x0000_0200_1200_0802);
        assert_eq!(BsgRes2::unpack(r.pack()), r);
    }
}
