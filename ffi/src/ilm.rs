//! The `ilm.h` functions: the drop-in `libseagate_ilm.so.0` for lvmlockd.
//!
//! Each function returns 0 or a negative errno, checks every pointer (NULL is
//! `-EINVAL`), and catches panics (`-EIO` and a log line). A handle is a
//! positive int naming one session ([`crate::session`] documents the semantics:
//! lazy lockspaces, leases, fencing, host IDs, disconnect). Errors:
//!
//! | errno | when |
//! | --- | --- |
//! | `EINVAL` | NULL pointer, mode not EX/SH, `drive_num` 0 or > 512, NULL drive entry, LVB length not 8, negative or too short timeout (under twice `IDM_COMMAND_TIMEOUT_MS`, 4000 ms by default, or 1000 ms), bad signal or fault percentage, bad `IDM_SIM` |
//! | `EBADF` | unknown handle |
//! | `EBUSY` | the lock is already held in this lockspace, or another host still held it when the wait (`IDM_LOCK_WAIT_MS`) ended; `ilm_set_host_id` while locks are held |
//! | `ENOENT` | unlock / convert / LVB of a lock not held; an unknown drive (or one that cannot be opened); a mutex no drive knows (count, mode) |
//! | `EIO` | drive I/O errors took the majority away; a caught panic |
//! | `ETIMEDOUT` | no majority before the deadline because drives did not answer |
//! | `ETIME` | the lockspace was fenced (its leases could not be renewed) |
//! | `EPERM` | a refused conversion (the lock keeps its old mode) |
//! | `E2BIG` | kill path or its arguments longer than 127 bytes |

#![allow(non_upper_case_globals)] // `ilm_uuid` is the C name.

use std::cell::UnsafeCell;
use std::ffi::c_char;
use std::os::raw::c_int;
use std::sync::Once;
use std::time::Duration;

use uring_sg::Lvb;

use crate::abi::{
    idm_lock_id, idm_lock_op, IDM_MODE_EXCLUSIVE, IDM_MODE_SHAREABLE, IDM_MODE_UNLOCK,
    IDM_VALUE_LEN,
};
use crate::guard::{errno, guarded};
use crate::raw;
use crate::session::{global, lease_of, mode_of, Session};

/// `uuid_t ilm_uuid`: 16 bytes identifying this host, from its host ID (the 32 hex
/// characters of `/etc/machine-id` when it has them, else a hash of the host ID).
#[repr(transparent)]
pub struct IlmUuid(UnsafeCell<[u8; 16]>);

// SAFETY: written once, by `fill_uuid` under a `Once`, at library load or the
// first connect (before any reader in this library); C readers see plain bytes.
unsafe impl Sync for IlmUuid {}

impl IlmUuid {
    /// The current bytes.
    pub fn get(&self) -> [u8; 16] {
        fill_uuid();
        // SAFETY: see the `Sync` impl: the only write happens inside `fill_uuid`'s
        // `Once`, which this reader passed just above.
        unsafe { *self.0.get() }
    }
}

/// The `extern uuid_t ilm_uuid;` of `ilm.h`.
#[no_mangle]
pub static ilm_uuid: IlmUuid = IlmUuid(UnsafeCell::new([0; 16]));

static UUID_ONCE: Once = Once::new();

/// The 16 bytes of `ilm_uuid` for this host.
pub fn host_uuid() -> [u8; 16] {
    let id = idm_engine::api::default_host_id().0;
    let mut out = [0u8; 16];
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let nibbles: Option<Vec<u8>> = id.iter().map(|c| hex(*c)).collect();
    if let Some(n) = nibbles {
        for (i, o) in out.iter_mut().enumerate() {
            *o = (n[2 * i] << 4) | n[2 * i + 1];
        }
        return out;
    }
    // FNV-1a of the host ID, two halves with different seeds.
    for (half, seed) in [
        (0usize, 0xcbf2_9ce4_8422_2325u64),
        (1, 0x8422_2325_cbf2_9ce4),
    ] {
        let mut h = seed;
        for b in id {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        out[half * 8..half * 8 + 8].copy_from_slice(&h.to_le_bytes());
    }
    out
}

/// Fills `ilm_uuid` (once).
pub(crate) fn fill_uuid() {
    UUID_ONCE.call_once(|| {
        let v = host_uuid();
        // SAFETY: the one write, inside the `Once`; no Rust reference to the
        // cell's contents exists (readers copy after passing the `Once`).
        unsafe { *ilm_uuid.0.get() = v };
    });
}

extern "C" fn fill_uuid_at_load() {
    // Nothing may unwind out of a load-time constructor.
    let _ = std::panic::catch_unwind(fill_uuid);
}

/// Fills `ilm_uuid` when the library is loaded, so C code may read it before any
/// call.
#[used]
#[link_section = ".init_array"]
static FILL_UUID_AT_LOAD: extern "C" fn() = fill_uuid_at_load;

fn session(sock: c_int) -> Result<std::sync::Arc<Session>, i32> {
    global()?.session(sock)
}

/// `int ilm_connect(int *sock)`: a new lockspace handle in `*sock`. Starts the
/// engine on first use.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `sock` is NULL or valid for writing one
/// `int`; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_connect(sock: *mut c_int) -> c_int {
    guarded("ilm_connect", || {
        if sock.is_null() {
            return Err(errno::EINVAL);
        }
        let h = global()?.connect()?;
        // SAFETY: `sock` is NULL or points to a writable `c_int` (ilm.h contract).
        unsafe { raw::put(sock, h) }
    })
}

/// `int ilm_disconnect(int sock)`: forgets the lockspace without unlocking.
#[no_mangle]
pub extern "C" fn ilm_disconnect(sock: c_int) -> c_int {
    guarded("ilm_disconnect", || global()?.disconnect(sock))
}

/// `int ilm_version(int sock, char *drive, uint8_t *major, uint8_t *minor)`: the
/// IDM version of `drive`.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `drive` is NULL or a NUL-terminated
/// string; `major` is NULL or valid for writing one `uint8_t`; `minor` is NULL or valid
/// for writing one `uint8_t`; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_version(
    sock: c_int,
    drive: *mut c_char,
    major: *mut u8,
    minor: *mut u8,
) -> c_int {
    guarded("ilm_version", || {
        let g = global()?;
        g.session(sock)?;
        // SAFETY: `drive` is NULL or a NUL-terminated string (ilm.h contract).
        let name = unsafe { raw::string(drive) }?;
        if major.is_null() || minor.is_null() {
            return Err(errno::EINVAL);
        }
        let (ma, mi) = g.drives.version(&name, Duration::from_secs(5))?;
        // SAFETY: `major` is NULL or points to a writable `u8` (ilm.h contract).
        unsafe { raw::put(major, ma) }?;
        // SAFETY: `minor` is NULL or points to a writable `u8` (ilm.h contract).
        unsafe { raw::put(minor, mi) }
    })
}

/// `int ilm_lock(int sock, struct idm_lock_id *id, struct idm_lock_op *op)`.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `id` is NULL or valid for reading one
/// `struct idm_lock_id`; `op` is NULL or valid for reading one `struct idm_lock_op`
/// whose first `drive_num` entries are NULL or NUL-terminated strings; all stay valid
/// and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_lock(
    sock: c_int,
    id: *mut idm_lock_id,
    op: *mut idm_lock_op,
) -> c_int {
    guarded("ilm_lock", || {
        let g = global()?;
        let s = g.session(sock)?;
        // SAFETY: `id` is NULL or a `struct idm_lock_id` (ilm.h contract).
        let id = unsafe { raw::lock_id(id) }?;
        // SAFETY: `op` is NULL or a `struct idm_lock_op` whose used drive entries are NUL-
        // terminated strings (ilm.h contract).
        let (mode, drives, timeout) = unsafe { raw::lock_op(op) }?;
        let mode = mode_of(mode)?;
        let lease = lease_of(timeout, g.timing.min_lease())?;
        s.lock(g, id, mode, &drives, lease)
    })
}

/// `int ilm_unlock(int sock, struct idm_lock_id *id)`.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `id` is NULL or valid for reading one
/// `struct idm_lock_id`; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_unlock(sock: c_int, id: *mut idm_lock_id) -> c_int {
    guarded("ilm_unlock", || {
        let s = session(sock)?;
        // SAFETY: `id` is NULL or a `struct idm_lock_id` (ilm.h contract).
        let id = unsafe { raw::lock_id(id) }?;
        s.unlock(id)
    })
}

/// `int ilm_convert(int sock, struct idm_lock_id *id, uint32_t mode)`.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `id` is NULL or valid for reading one
/// `struct idm_lock_id`; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_convert(sock: c_int, id: *mut idm_lock_id, mode: u32) -> c_int {
    guarded("ilm_convert", || {
        let s = session(sock)?;
        // SAFETY: `id` is NULL or a `struct idm_lock_id` (ilm.h contract).
        let id = unsafe { raw::lock_id(id) }?;
        s.convert(id, mode_of(mode)?)
    })
}

fn check_lvb_len(len: c_int) -> Result<usize, i32> {
    if len == IDM_VALUE_LEN as c_int {
        Ok(IDM_VALUE_LEN)
    } else {
        Err(errno::EINVAL)
    }
}

/// `int ilm_write_lvb(int sock, struct idm_lock_id *id, char *lvb, int lvb_len)`:
/// the value stored with the unlock (`lvb_len` must be 8; byte 7 reads back 0).
///
/// # Safety
///
/// The pointers, as the C caller passes them: `id` is NULL or valid for reading one
/// `struct idm_lock_id`; `lvb` is NULL or valid for `lvb_len` bytes; all stay valid and
/// unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_write_lvb(
    sock: c_int,
    id: *mut idm_lock_id,
    lvb: *mut c_char,
    lvb_len: c_int,
) -> c_int {
    guarded("ilm_write_lvb", || {
        let s = session(sock)?;
        // SAFETY: `id` is NULL or a `struct idm_lock_id` (ilm.h contract).
        let id = unsafe { raw::lock_id(id) }?;
        let n = check_lvb_len(lvb_len)?;
        let mut v = [0u8; IDM_VALUE_LEN];
        // SAFETY: `lvb` is NULL or holds `lvb_len` bytes (ilm.h contract).
        let src = unsafe { raw::bytes(lvb, n) }?;
        v.copy_from_slice(src);
        s.write_lvb(id, Lvb(v))
    })
}

/// `int ilm_read_lvb(int sock, struct idm_lock_id *id, char *lvb, int lvb_len)`.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `id` is NULL or valid for reading one
/// `struct idm_lock_id`; `lvb` is NULL or valid for `lvb_len` bytes; all stay valid and
/// unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_read_lvb(
    sock: c_int,
    id: *mut idm_lock_id,
    lvb: *mut c_char,
    lvb_len: c_int,
) -> c_int {
    guarded("ilm_read_lvb", || {
        let s = session(sock)?;
        // SAFETY: `id` is NULL or a `struct idm_lock_id` (ilm.h contract).
        let id = unsafe { raw::lock_id(id) }?;
        let n = check_lvb_len(lvb_len)?;
        if lvb.is_null() {
            return Err(errno::EINVAL);
        }
        let v = s.read_lvb(id)?;
        // SAFETY: `lvb` is NULL or a writable buffer of `lvb_len` bytes, apart from our memory
        // (ilm.h contract).
        unsafe { raw::copy_out(lvb.cast::<u8>(), &v.0[..n]) }
    })
}

/// `int ilm_set_signal(int sock, int signo)`: the fencing signal (sent to this
/// process), used when no kill path is set.
#[no_mangle]
pub extern "C" fn ilm_set_signal(sock: c_int, signo: c_int) -> c_int {
    guarded("ilm_set_signal", || session(sock)?.set_signal(signo))
}

/// `int ilm_set_killpath(int sock, char *killpath, char *killargs)`: the fencing
/// program and its white-space separated arguments (`killargs` may be NULL).
///
/// # Safety
///
/// The pointers, as the C caller passes them: `killpath` is NULL or a NUL-terminated
/// string; `killargs` is NULL or a NUL-terminated string; all stay valid and unchanged
/// for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_set_killpath(
    sock: c_int,
    killpath: *mut c_char,
    killargs: *mut c_char,
) -> c_int {
    guarded("ilm_set_killpath", || {
        let s = session(sock)?;
        // SAFETY: `killpath` is NULL or a NUL-terminated string (ilm.h contract).
        let path = unsafe { raw::string(killpath) }?;
        let args = if killargs.is_null() {
            String::new()
        } else {
            // SAFETY: `killargs` is NULL or a NUL-terminated string (ilm.h contract).
            unsafe { raw::string(killargs) }?
        };
        s.set_killpath(path, args)
    })
}

/// `int ilm_get_host_count(int sock, struct idm_lock_id *id, struct idm_lock_op
/// *op, int *count, int *self)`: other hosts holding the lock on `op`'s drives,
/// and whether this lockspace's host holds it (`op`'s mode and timeout are not used).
///
/// # Safety
///
/// The pointers, as the C caller passes them: `id` is NULL or valid for reading one
/// `struct idm_lock_id`; `op` is NULL or valid for reading one `struct idm_lock_op`
/// whose first `drive_num` entries are NULL or NUL-terminated strings; `count` is NULL
/// or valid for writing one `int`; `self_` is NULL or valid for writing one `int`; all
/// stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_get_host_count(
    sock: c_int,
    id: *mut idm_lock_id,
    op: *mut idm_lock_op,
    count: *mut c_int,
    self_: *mut c_int,
) -> c_int {
    guarded("ilm_get_host_count", || {
        let g = global()?;
        let s = g.session(sock)?;
        // SAFETY: `id` is NULL or a `struct idm_lock_id` (ilm.h contract).
        let id = unsafe { raw::lock_id(id) }?;
        // SAFETY: `op` is NULL or a `struct idm_lock_op` whose used drive entries are NUL-
        // terminated strings (ilm.h contract).
        let (_, drives, _) = unsafe { raw::lock_op(op) }?;
        if count.is_null() || self_.is_null() {
            return Err(errno::EINVAL);
        }
        let (others, me) = s.host_count(g, id, &drives)?;
        // SAFETY: `count` is NULL or points to a writable `c_int` (ilm.h contract).
        unsafe { raw::put(count, c_int::try_from(others).unwrap_or(c_int::MAX)) }?;
        // SAFETY: `self_` is NULL or points to a writable `c_int` (ilm.h contract).
        unsafe { raw::put(self_, c_int::from(me)) }
    })
}

/// `int ilm_get_mode(int sock, struct idm_lock_id *id, struct idm_lock_op *op,
/// int *mode)`: the lock's mode on `op`'s drives (`IDM_MODE_UNLOCK` if unlocked).
///
/// # Safety
///
/// The pointers, as the C caller passes them: `id` is NULL or valid for reading one
/// `struct idm_lock_id`; `op` is NULL or valid for reading one `struct idm_lock_op`
/// whose first `drive_num` entries are NULL or NUL-terminated strings; `mode` is NULL
/// or valid for writing one `int`; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_get_mode(
    sock: c_int,
    id: *mut idm_lock_id,
    op: *mut idm_lock_op,
    mode: *mut c_int,
) -> c_int {
    guarded("ilm_get_mode", || {
        let g = global()?;
        let s = g.session(sock)?;
        // SAFETY: `id` is NULL or a `struct idm_lock_id` (ilm.h contract).
        let id = unsafe { raw::lock_id(id) }?;
        // SAFETY: `op` is NULL or a `struct idm_lock_op` whose used drive entries are NUL-
        // terminated strings (ilm.h contract).
        let (_, drives, _) = unsafe { raw::lock_op(op) }?;
        if mode.is_null() {
            return Err(errno::EINVAL);
        }
        let m = match s.mode(g, id, &drives)? {
            None => IDM_MODE_UNLOCK,
            Some(uring_sg::Mode::Exclusive) => IDM_MODE_EXCLUSIVE,
            Some(uring_sg::Mode::Shared) => IDM_MODE_SHAREABLE,
        };
        // SAFETY: `mode` is NULL or points to a writable `c_int` (ilm.h contract).
        unsafe { raw::put(mode, m as c_int) }
    })
}

/// `int ilm_set_host_id(int sock, char *id, int id_len)`: this lockspace's host ID
/// on the drives (1..=32 bytes, zero-padded); `-EBUSY` while it holds locks.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `id` is NULL or valid for reading
/// `id_len` bytes; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn ilm_set_host_id(sock: c_int, id: *mut c_char, id_len: c_int) -> c_int {
    guarded("ilm_set_host_id", || {
        let s = session(sock)?;
        let n = usize::try_from(id_len).map_err(|_| errno::EINVAL)?;
        if n == 0 || n > 32 {
            return Err(errno::EINVAL);
        }
        // SAFETY: `id` is NULL or holds `id_len` bytes (ilm.h contract).
        let id = unsafe { raw::bytes(id, n) }?;
        s.set_host_id(id)
    })
}

/// `int ilm_stop_renew(int sock)`: the lockspace behaves as if its renewals
/// failed: leases lapse, and fencing fires before they do.
#[no_mangle]
pub extern "C" fn ilm_stop_renew(sock: c_int) -> c_int {
    guarded("ilm_stop_renew", || {
        session(sock)?.set_renew(false);
        Ok(())
    })
}

/// `int ilm_start_renew(int sock)`: resumes renewals.
#[no_mangle]
pub extern "C" fn ilm_start_renew(sock: c_int) -> c_int {
    guarded("ilm_start_renew", || {
        session(sock)?.set_renew(true);
        Ok(())
    })
}

/// `int ilm_inject_fault(int sock, int percentage)`: that share (0..=100) of this
/// lockspace's drive commands fail with EIO.
#[no_mangle]
pub extern "C" fn ilm_inject_fault(sock: c_int, percentage: c_int) -> c_int {
    guarded("ilm_inject_fault", || {
        session(sock)?.inject_fault(percentage)
    })
}
