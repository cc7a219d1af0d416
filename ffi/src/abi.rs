//! The `ilm.h` types and constants, laid out exactly as lvmlockd was compiled
//! against them (x86-64, `../shared/IDM.md` §8). `tests/layout.rs` checks sizes
//! and offsets; `ffi/include/ilm.h` is the C side of the same definitions.

#![allow(non_camel_case_types)] // The C names are the ABI.

use std::ffi::c_char;
use std::os::raw::c_int;

/// Most drives one lock may span.
pub const ILM_DRIVE_MAX_NUM: usize = 512;
/// Mode: unlocked (only ever reported by `ilm_get_mode`).
pub const IDM_MODE_UNLOCK: u32 = 0;
/// Mode: exclusive.
pub const IDM_MODE_EXCLUSIVE: u32 = 1;
/// Mode: shareable.
pub const IDM_MODE_SHAREABLE: u32 = 2;
/// Longest kill path, with its NUL.
pub const IDM_FAILURE_PATH_LEN: usize = 128;
/// Longest kill path argument string, with its NUL.
pub const IDM_FAILURE_ARGS_LEN: usize = 128;
/// Bytes of a lock value block.
pub const IDM_VALUE_LEN: usize = 8;

/// A lock's 64-byte ID: lvmlockd puts the VG UUID in the first half and the LV
/// UUID (or zeros) in the second.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct idm_lock_id {
    /// 32 ASCII characters of the VG UUID.
    pub vg_uuid: [c_char; 32],
    /// 32 ASCII characters of the LV UUID, or zeros for a VG lock.
    pub lv_uuid: [c_char; 32],
}

/// A lock request: mode, the drives the lock spans, and the membership countdown.
#[repr(C)]
#[derive(Debug)]
pub struct idm_lock_op {
    /// `IDM_MODE_EXCLUSIVE` or `IDM_MODE_SHAREABLE`.
    pub mode: u32,
    /// How many entries of `drives` are used (1..=512).
    pub drive_num: u32,
    /// NUL-terminated drive names.
    pub drives: [*mut c_char; ILM_DRIVE_MAX_NUM],
    /// The drive membership countdown (lease), ms; not a wait.
    pub timeout: c_int,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(std::mem::size_of::<idm_lock_id>(), 64);
        assert_eq!(std::mem::size_of::<idm_lock_op>(), 4112);
        assert_eq!(std::mem::offset_of!(idm_lock_op, drives), 8);
        assert_eq!(std::mem::offset_of!(idm_lock_op, timeout), 4104);
    }
}
