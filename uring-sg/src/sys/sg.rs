//! `struct sg_io_hdr` of `<scsi/sg.h>` (the sg v3 interface) and the SG_IO ioctl.

use std::os::fd::RawFd;

/// `interface_id` of a v3 header: `'S'`.
pub const SG_INTERFACE_ID: i32 = b'S' as i32;
/// No data transfer.
pub const SG_DXFER_NONE: i32 = -1;
/// Data from host to device (data-out).
pub const SG_DXFER_TO_DEV: i32 = -2;
/// Data from device to host (data-in).
pub const SG_DXFER_FROM_DEV: i32 = -3;
/// Both directions (not used by IDM).
pub const SG_DXFER_TO_FROM_DEV: i32 = -4;
/// Queue the command at the tail of the device queue (default is the head).
pub const SG_FLAG_Q_AT_TAIL: u32 = 0x10;
/// `info` bit: something other than GOOD happened (check the status fields).
pub const SG_INFO_CHECK: u32 = 0x1;
/// `driver_status` value that only says "sense data is valid".
pub const DRIVER_SENSE: u16 = 0x08;
/// Size of `struct sg_io_hdr` on 64-bit Linux.
pub const SG_IO_HDR_LEN: usize = 88;
/// The most commands one open sg file takes at once (`SG_MAX_QUEUE`).
pub const SG_MAX_QUEUE: usize = 16;

/// `struct sg_io_hdr` (`<scsi/sg.h>`). Written to an sg file to submit a command,
/// read back (or filled by SG_IO) with the outcome.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SgIoHdr {
    /// Always [`SG_INTERFACE_ID`].
    pub interface_id: i32,
    /// One of the `SG_DXFER_*` values.
    pub dxfer_direction: i32,
    /// CDB length.
    pub cmd_len: u8,
    /// Size of the sense buffer at `sbp`.
    pub mx_sb_len: u8,
    /// 0: `dxferp` is a flat buffer.
    pub iovec_count: u16,
    /// Bytes to transfer.
    pub dxfer_len: u32,
    /// Data buffer.
    pub dxferp: *mut u8,
    /// CDB.
    pub cmdp: *const u8,
    /// Sense buffer.
    pub sbp: *mut u8,
    /// Timeout in milliseconds.
    pub timeout: u32,
    /// `SG_FLAG_*` bits.
    pub flags: u32,
    /// The caller's id, returned in the reply (matched by the async path).
    pub pack_id: i32,
    /// The caller's pointer-sized value, returned in the reply.
    pub usr_ptr: *mut u8,
    /// SCSI status byte (output).
    pub status: u8,
    /// `status >> 1` (output, legacy).
    pub masked_status: u8,
    /// Messaging status (output, unused).
    pub msg_status: u8,
    /// Sense bytes written (output).
    pub sb_len_wr: u8,
    /// Host adapter status, `DID_*` (output).
    pub host_status: u16,
    /// Driver status, `DRIVER_*` (output).
    pub driver_status: u16,
    /// `dxfer_len` minus bytes actually transferred (output).
    pub resid: i32,
    /// Command time in milliseconds (output).
    pub duration: u32,
    /// `SG_INFO_*` bits (output).
    pub info: u32,
}

impl Default for SgIoHdr {
    fn default() -> Self {
        SgIoHdr {
            interface_id: SG_INTERFACE_ID,
            dxfer_direction: SG_DXFER_NONE,
            cmd_len: 0,
            mx_sb_len: 0,
            iovec_count: 0,
            dxfer_len: 0,
            dxferp: std::ptr::null_mut(),
            cmdp: std::ptr::null(),
            sbp: std::ptr::null_mut(),
            timeout: 0,
            flags: 0,
            pack_id: -1,
            usr_ptr: std::ptr::null_mut(),
            status: 0,
            masked_status: 0,
            msg_status: 0,
            sb_len_wr: 0,
            host_status: 0,
            driver_status: 0,
            resid: 0,
            duration: 0,
            info: 0,
        }
    }
}

nix::ioctl_readwrite_bad!(
    /// The raw SG_IO ioctl (number 0x2285, a `struct sg_io_hdr *` argument);
    /// use [`sg_io`].
    sg_io_raw,
    0x2285,
    SgIoHdr
);

/// Runs one command synchronously with the SG_IO ioctl; the outcome is written
/// into `hdr`.
///
/// # Safety
///
/// Every pointer in `hdr` (`cmdp`, `sbp`, `dxferp`) must be valid for the lengths
/// the header gives (`cmd_len`, `mx_sb_len`, `dxfer_len`) for the duration of the
/// call, and writable where the kernel writes.
pub unsafe fn sg_io(fd: RawFd, hdr: &mut SgIoHdr) -> nix::Result<i32> {
    // SAFETY: `hdr` is a valid sg_io_hdr; the caller vouches for its pointers.
    unsafe { sg_io_raw(fd, hdr) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Offsets from `<scsi/sg.h>` on x86-64 (pahole of `struct sg_io_hdr`).
    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(size_of::<SgIoHdr>(), SG_IO_HDR_LEN);
        assert_eq!(offset_of!(SgIoHdr, interface_id), 0);
        assert_eq!(offset_of!(SgIoHdr, dxfer_direction), 4);
        assert_eq!(offset_of!(SgIoHdr, cmd_len), 8);
        assert_eq!(offset_of!(SgIoHdr, mx_sb_len), 9);
        assert_eq!(offset_of!(SgIoHdr, iovec_count), 10);
        assert_eq!(offset_of!(SgIoHdr, dxfer_len), 12);
        assert_eq!(offset_of!(SgIoHdr, dxferp), 16);
        assert_eq!(offset_of!(SgIoHdr, cmdp), 24);
        assert_eq!(offset_of!(SgIoHdr, sbp), 32);
        assert_eq!(offset_of!(SgIoHdr, timeout), 40);
        assert_eq!(offset_of!(SgIoHdr, flags), 44);
        assert_eq!(offset_of!(SgIoHdr, pack_id), 48);
        assert_eq!(offset_of!(SgIoHdr, usr_ptr), 56);
        assert_eq!(offset_of!(SgIoHdr, status), 64);
        assert_eq!(offset_of!(SgIoHdr, masked_status), 65);
        assert_eq!(offset_of!(SgIoHdr, msg_status), 66);
        assert_eq!(offset_of!(SgIoHdr, sb_len_wr), 67);
        assert_eq!(offset_of!(SgIoHdr, host_status), 68);
        assert_eq!(offset_of!(SgIoHdr, driver_status), 70);
        assert_eq!(offset_of!(SgIoHdr, resid), 72);
        assert_eq!(offset_of!(SgIoHdr, duration), 76);
        assert_eq!(offset_of!(SgIoHdr, info), 80);
    }

    #[test]
    fn default_is_a_v3_header_without_data() {
        let h = SgIoHdr::default();
        assert_eq!(h.interface_id, 0x53);
        assert_eq!(h.dxfer_direction, SG_DXFER_NONE);
    }
}
