//! Reading and writing through the pointers C callers pass. Every `unsafe` of the
//! `ilm.h` functions is here; each relies on the caller's contract stated in
//! `ilm.h` (pointers are NULL or valid for the documented size, strings are
//! NUL-terminated). NULL is always checked and reported as `EINVAL`.

use std::ffi::{c_char, CStr};

use uring_sg::LockId;

use crate::abi::{idm_lock_id, idm_lock_op, ILM_DRIVE_MAX_NUM};
use crate::guard::errno;

/// The lock ID `id` points to.
pub(crate) fn lock_id(id: *const idm_lock_id) -> Result<LockId, i32> {
    if id.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, and the caller passes a valid `struct idm_lock_id` (64
    // bytes, any bit pattern is valid); read unaligned in case it is not aligned.
    let raw = unsafe { std::ptr::read_unaligned(id) };
    let mut b = [0u8; 64];
    for (d, s) in b
        .iter_mut()
        .zip(raw.vg_uuid.iter().chain(raw.lv_uuid.iter()))
    {
        *d = *s as u8;
    }
    Ok(LockId(b))
}

/// A NUL-terminated UTF-8 string.
pub(crate) fn string(s: *const c_char) -> Result<String, i32> {
    if s.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, and the caller passes a NUL-terminated string.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str().map(|s| s.to_string()).map_err(|_| errno::EINVAL)
}

/// Mode, drive names and countdown of the op `op` points to. The drive count must
/// be 1..=512 and every used entry non-NULL.
pub(crate) fn lock_op(op: *const idm_lock_op) -> Result<(u32, Vec<String>, i32), i32> {
    if op.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, and the caller passes a valid `struct idm_lock_op`; the
    // fields are read in place through the raw pointer (no copy of 4 KiB, no
    // reference to possibly unaligned memory).
    let (mode, n, timeout) = unsafe {
        (
            std::ptr::addr_of!((*op).mode).read_unaligned(),
            std::ptr::addr_of!((*op).drive_num).read_unaligned(),
            std::ptr::addr_of!((*op).timeout).read_unaligned(),
        )
    };
    let n = n as usize;
    if n == 0 || n > ILM_DRIVE_MAX_NUM {
        return Err(errno::EINVAL);
    }
    let mut drives = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: `i < 512`, inside the `drives` array of the valid op.
        let p = unsafe { std::ptr::addr_of!((*op).drives[i]).read_unaligned() };
        drives.push(string(p)?);
    }
    Ok((mode, drives, timeout))
}

/// Writes `v` to `out`.
pub(crate) fn put<T: Copy>(out: *mut T, v: T) -> Result<(), i32> {
    if out.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, and the caller passes a pointer valid for one `T`.
    unsafe { out.write_unaligned(v) };
    Ok(())
}

/// The `len` bytes at `p`.
pub(crate) fn bytes<'a>(p: *const c_char, len: usize) -> Result<&'a [u8], i32> {
    if p.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, and the caller passes a buffer of at least `len` bytes
    // that stays valid and unchanged for the call.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// Copies `src` to the buffer at `p` (at least `src.len()` bytes).
pub(crate) fn copy_out(p: *mut c_char, src: &[u8]) -> Result<(), i32> {
    if p.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, and the caller passes a writable buffer of at least
    // `src.len()` bytes that does not overlap `src` (our own memory).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p.cast::<u8>(), src.len()) };
    Ok(())
}
