//! Reading and writing through the pointers C callers pass: every raw-pointer
//! helper of the library, each an `unsafe fn` whose `# Safety` section states what
//! its caller must guarantee. The `extern "C"` functions call them in `unsafe`
//! blocks whose `// SAFETY:` comments point at the contract of `ilm.h` or
//! `idm_engine.h` (pointers are NULL or valid for the documented size, strings
//! are NUL-terminated, handles come from the library and are freed once). NULL
//! is checked here wherever the headers allow or forbid it, and reported as
//! `EINVAL` where it is forbidden.

use std::ffi::{c_char, CStr};

use uring_sg::LockId;

use crate::abi::{idm_lock_id, idm_lock_op, ILM_DRIVE_MAX_NUM};
use crate::guard::errno;

/// The lock ID `id` points to (`EINVAL` for NULL).
///
/// # Safety
///
/// `id` is NULL or valid for reads of one `struct idm_lock_id` (64 bytes; any
/// bit pattern is valid, no alignment needed).
pub(crate) unsafe fn lock_id(id: *const idm_lock_id) -> Result<LockId, i32> {
    if id.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, and valid for one `struct idm_lock_id` (this function's
    // contract); read unaligned in case it is not aligned.
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

/// A NUL-terminated UTF-8 string (`EINVAL` for NULL or bad UTF-8).
///
/// # Safety
///
/// `s` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged for the call.
pub(crate) unsafe fn string(s: *const c_char) -> Result<String, i32> {
    // SAFETY: this function's contract is `opt_string`'s.
    unsafe { opt_string(s) }?.ok_or(errno::EINVAL)
}

/// A NUL-terminated UTF-8 string, or `None` for NULL (`EINVAL` for bad UTF-8).
///
/// # Safety
///
/// `s` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged for the call.
pub(crate) unsafe fn opt_string(s: *const c_char) -> Result<Option<String>, i32> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, and NUL-terminated (this function's contract).
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| errno::EINVAL)
}

/// Mode, drive names and countdown of the op `op` points to (`EINVAL` for NULL).
/// The drive count must be 1..=512 and every used entry non-NULL.
///
/// # Safety
///
/// `op` is NULL or valid for reads of one `struct idm_lock_op` (no alignment
/// needed), whose first `drive_num` entries of `drives` (when that count is in
/// range) are NULL or NUL-terminated strings, all unchanged for the call.
pub(crate) unsafe fn lock_op(op: *const idm_lock_op) -> Result<(u32, Vec<String>, i32), i32> {
    if op.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL and valid for one `struct idm_lock_op` (this function's
    // contract); the fields are read in place through the raw pointer (no copy of
    // 4 KiB, no reference to possibly unaligned memory).
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
        // SAFETY: a used entry is NULL or a NUL-terminated string (contract).
        drives.push(unsafe { string(p) }?);
    }
    Ok((mode, drives, timeout))
}

/// Writes `v` to `out` (`EINVAL` for NULL).
///
/// # Safety
///
/// `out` is NULL or valid for writes of one `T` (no alignment needed).
pub(crate) unsafe fn put<T: Copy>(out: *mut T, v: T) -> Result<(), i32> {
    if out.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL and valid for one `T` (this function's contract).
    unsafe { out.write_unaligned(v) };
    Ok(())
}

/// Writes `v` to `out`, which must not be NULL (`EINVAL` if it is), dropping
/// nothing that was there.
///
/// # Safety
///
/// `out` is NULL or valid and aligned for writes of one `T`.
pub(crate) unsafe fn write<T>(out: *mut T, v: T) -> Result<(), i32> {
    if out.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, valid and aligned for one `T` (this function's contract).
    unsafe { out.write(v) };
    Ok(())
}

/// The `len` bytes at `p` (`EINVAL` for NULL).
///
/// # Safety
///
/// `p` is NULL or valid for reads of `len` bytes that stay unchanged for `'a`.
pub(crate) unsafe fn bytes<'a>(p: *const c_char, len: usize) -> Result<&'a [u8], i32> {
    // SAFETY: this function's contract, for `u8` items.
    unsafe { slice(p.cast::<u8>(), len) }
}

/// The `n` items at `p` (`EINVAL` for NULL).
///
/// # Safety
///
/// `p` is NULL or valid and aligned for reads of `n` initialized `T`s that stay
/// unchanged for `'a`, and `n * size_of::<T>()` is at most `isize::MAX`.
pub(crate) unsafe fn slice<'a, T>(p: *const T, n: usize) -> Result<&'a [T], i32> {
    if p.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, valid for `n` items for `'a` (this function's contract).
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Copies `src` to the buffer at `p` (`EINVAL` for NULL).
///
/// # Safety
///
/// `p` is NULL or valid and aligned for writes of `src.len()` `T`s, and does
/// not overlap `src`.
pub(crate) unsafe fn copy_out<T: Copy>(p: *mut T, src: &[T]) -> Result<(), i32> {
    if p.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, writable for `src.len()` items and not overlapping `src`
    // (this function's contract).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
    Ok(())
}

/// `*p` as a reference, or `None` for NULL.
///
/// # Safety
///
/// `p` is NULL or valid and aligned for reads of one initialized `T` that is not
/// mutated nor freed for `'a`.
pub(crate) unsafe fn opt_ref<'a, T>(p: *const T) -> Option<&'a T> {
    // SAFETY: NULL or valid for `'a` (this function's contract).
    unsafe { p.as_ref() }
}

/// The handle `p` points to (`EINVAL` for NULL).
///
/// # Safety
///
/// `p` is NULL or a handle the library returned (`Box::into_raw`) and that is not
/// freed for `'a`.
pub(crate) unsafe fn handle<'a, T>(p: *const T) -> Result<&'a T, i32> {
    // SAFETY: a live handle is valid and aligned for one `T` (contract).
    unsafe { opt_ref(p) }.ok_or(errno::EINVAL)
}

/// Takes back a handle handed to C with `Box::into_raw` (`EINVAL` for NULL).
///
/// # Safety
///
/// `p` is NULL or came from `Box::<T>::into_raw` and is taken back at most once
/// (no use of it afterwards).
pub(crate) unsafe fn take_box<T>(p: *mut T) -> Result<Box<T>, i32> {
    if p.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL, from `Box::into_raw`, given back once (contract).
    Ok(unsafe { Box::from_raw(p) })
}
