//! The native asynchronous C API (`ffi/include/idm_engine.h`, generated from this
//! file by cbindgen; `tests/header.rs` fails when the checked-in header is stale
//! and rewrites it with `IDM_BLESS=1`).
//!
//! - An engine (`idm_engine_new`) owns reactor threads and a completion sink. Its
//!   drives come from `idm_engine_config.drives` (or `IDM_SIM` when NULL), as in
//!   [`crate::drives`].
//! - A lockspace (`idm_lockspace_open`) is a host ID, a lease and an optional kill
//!   path; operations are submitted to it.
//! - `idm_submit` hands a batch of operations (lock, unlock, convert, read LVB,
//!   write LVB, host count, mode) to the reactors and returns without waiting for
//!   any drive. It may block only while a reactor's request queue is full
//!   (back-pressure, 4096 requests per reactor). Each operation carries a user
//!   `tag`, and **every operation of an accepted batch produces exactly one
//!   completion** (an invalid operation completes at once with its error).
//! - Completions are either queued and reaped with `idm_engine_reap` (non-blocking)
//!   or `idm_engine_wait`, with `idm_engine_eventfd` readable while any are queued
//!   (poll/epoll it with the rest of the program's fds); or, when the engine was
//!   built with a callback, handed to the callback, on a reactor thread (or on the
//!   submitting thread for operations that fail at submission). A callback must be
//!   short and must not block; it may submit.
//! - `idm_engine_stats` gives counters and latency percentiles per operation kind.
//!
//! Results are 0 or a negative errno, as in `ilm.h`. No function unwinds into C.

#![allow(non_camel_case_types)] // The C names are the ABI.

use std::ffi::{c_char, c_void};
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd};
use std::os::raw::{c_int, c_long};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use ::idm_engine::api::{FenceAction, LockOptions, Lockspace, LockspaceConfig, OpFuture};
use ::idm_engine::locks::OpKind;
use ::idm_engine::watchdog::WatchdogConfig;
use crossbeam::queue::SegQueue;
use nix::sys::eventfd::{EfdFlags, EventFd};
use uring_sg::{HostId, LockId, Lvb, Mode};

use crate::drives::{DriveSource, Drives};
use crate::guard::{errno, guarded, guarded_count};
use crate::raw;

/// Operation kind: acquire in `mode` on `drives`.
pub const IDM_OP_LOCK: u32 = 1;
/// Operation kind: release (by ID alone).
pub const IDM_OP_UNLOCK: u32 = 2;
/// Operation kind: convert to `mode`.
pub const IDM_OP_CONVERT: u32 = 3;
/// Operation kind: read the LVB (into the completion's `lvb`).
pub const IDM_OP_READ_LVB: u32 = 4;
/// Operation kind: set the LVB the release stores (`lvb`).
pub const IDM_OP_WRITE_LVB: u32 = 5;
/// Operation kind: count other hosts holding the lock on `drives`.
pub const IDM_OP_HOST_COUNT: u32 = 6;
/// Operation kind: the lock's mode on `drives`.
pub const IDM_OP_MODE: u32 = 7;

/// Mode: unlocked (reported by `IDM_OP_MODE` only).
pub const IDM_OP_MODE_UNLOCK: u32 = 0;
/// Mode: exclusive.
pub const IDM_OP_MODE_EXCLUSIVE: u32 = 1;
/// Mode: shareable.
pub const IDM_OP_MODE_SHAREABLE: u32 = 2;

/// Flag of `IDM_OP_LOCK`: wait behind live holders until the timeout instead of
/// failing with `-EBUSY` at once.
pub const IDM_OP_FLAG_WAIT: u32 = 1;

/// Most drives one operation may name.
pub const IDM_OP_MAX_DRIVES: u32 = 512;

/// Called with each completion when the engine was built with it; `arg` is
/// `idm_engine_config.callback_arg`. The completion is valid during the call only.
pub type idm_completion_fn =
    Option<unsafe extern "C" fn(completion: *const idm_completion, arg: *mut c_void)>;

/// How to build an engine. Zero-initialise and set what you need.
#[repr(C)]
pub struct idm_engine_config {
    /// Drive source: `mem:N`, `unix:PATH` or `tcp:HOST:PORT`; NULL: the `IDM_SIM`
    /// environment variable; "" : real devices.
    pub drives: *const c_char,
    /// Reactor threads; 0: one per core, at most 4.
    pub reactors: u32,
    /// Per drive command timeout, ms; 0: 5000.
    pub command_timeout_ms: u32,
    /// Completion callback; NULL: completions are queued for `idm_engine_reap`.
    pub callback: idm_completion_fn,
    /// Passed to `callback`.
    pub callback_arg: *mut c_void,
}

/// How to open a lockspace. Zero-initialise and set what you need.
#[repr(C)]
pub struct idm_lockspace_config {
    /// Name for logs; NULL: "idm".
    pub name: *const c_char,
    /// Host ID bytes (1..=32, zero-padded); NULL: this host's default ID.
    pub host_id: *const u8,
    /// Bytes at `host_id`.
    pub host_id_len: u32,
    /// Lease (drive membership countdown), ms; 0: 60000; at least 300.
    pub lease_ms: u32,
    /// Fencing program run when leases are about to lapse; NULL: none.
    pub kill_path: *const c_char,
    /// Its white-space separated arguments; NULL: none.
    pub kill_args: *const c_char,
}

/// One operation of a batch.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct idm_op {
    /// Returned in the completion.
    pub tag: u64,
    /// `IDM_OP_*`.
    pub kind: u32,
    /// `IDM_OP_MODE_EXCLUSIVE` or `IDM_OP_MODE_SHAREABLE` (lock, convert).
    pub mode: u32,
    /// The lock's 64-byte ID.
    pub lock_id: [u8; 64],
    /// `drive_num` NUL-terminated drive names (lock, host count, mode); copied
    /// during `idm_submit`.
    pub drives: *const *const c_char,
    /// Entries of `drives` (1..=512).
    pub drive_num: u32,
    /// `IDM_OP_FLAG_*`.
    pub flags: u32,
    /// `IDM_OP_LOCK` only: give up acquiring after this long, ms; 0: 5000. The
    /// other operations are bounded by the engine's command timeout.
    pub timeout_ms: u32,
    /// Reserved, 0.
    pub reserved: u32,
    /// The value for `IDM_OP_WRITE_LVB`.
    pub lvb: [u8; 8],
}

/// The outcome of one operation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct idm_completion {
    /// The operation's tag.
    pub tag: u64,
    /// The operation's kind.
    pub kind: u32,
    /// 0 or a negative errno.
    pub result: i32,
    /// `IDM_OP_READ_LVB`: the value (all-ones: invalidated by a break).
    pub lvb: [u8; 8],
    /// `IDM_OP_HOST_COUNT`: other hosts holding the lock.
    pub count: u32,
    /// `IDM_OP_HOST_COUNT`: 1 if this host holds it.
    pub self_held: u32,
    /// `IDM_OP_MODE`: `IDM_OP_MODE_*`.
    pub mode: u32,
    /// Reserved.
    pub reserved: u32,
}

/// Latency summary of one operation kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct idm_op_stats {
    /// Operations finished.
    pub count: u64,
    /// Of which failed.
    pub errors: u64,
    /// Median latency, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Worst, ns.
    pub max_ns: u64,
}

/// Engine statistics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct idm_stats {
    /// Reactor threads.
    pub reactors: u64,
    /// Operations submitted through this API.
    pub submitted: u64,
    /// Completions delivered (queued or called back).
    pub completed: u64,
    /// Completions queued and not reaped yet.
    pub queued: u64,
    /// Drive commands sent.
    pub commands: u64,
    /// Renewals that reached a majority.
    pub renewals: u64,
    /// Renewals that did not.
    pub renew_failures: u64,
    /// Lockspaces fenced.
    pub fences: u64,
    /// Acquires.
    pub lock: idm_op_stats,
    /// Releases.
    pub unlock: idm_op_stats,
    /// Renewals (internal).
    pub renew: idm_op_stats,
    /// Conversions.
    pub convert: idm_op_stats,
    /// LVB reads.
    pub read_lvb: idm_op_stats,
    /// Host counts.
    pub host_count: idm_op_stats,
    /// Mode queries.
    pub mode: idm_op_stats,
}

/// An engine (opaque).
pub struct idm_engine {
    drives: Arc<Drives>,
    sink: Arc<Sink>,
}

/// A lockspace (opaque).
pub struct idm_lockspace {
    ls: Lockspace,
    drives: Arc<Drives>,
    sink: Arc<Sink>,
}

/// The caller's callback argument.
#[derive(Clone, Copy)]
struct UserArg(*mut c_void);

// SAFETY: the pointer is only handed back to the caller's callback; the header
// documents that the callback runs on reactor threads, so the caller made it
// usable from there.
unsafe impl Send for UserArg {}
// SAFETY: as above; the pointer is never dereferenced here.
unsafe impl Sync for UserArg {}

/// Where completions go.
struct Sink {
    queue: SegQueue<idm_completion>,
    efd: EventFd,
    callback: idm_completion_fn,
    arg: UserArg,
    submitted: AtomicU64,
    completed: AtomicU64,
}

impl Sink {
    fn deliver(&self, c: idm_completion) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = self.callback {
            // SAFETY: the caller's callback, called as `idm_engine_config`
            // documents, with a completion valid for the call.
            unsafe { f(&c, self.arg.0) };
            return;
        }
        self.queue.push(c);
        if let Err(e) = self.efd.write(1) {
            tracing::error!(error = %e, "completion eventfd write failed");
        }
    }

    fn fail(&self, tag: u64, kind: u32, e: i32) {
        self.deliver(idm_completion {
            tag,
            kind,
            result: -e.abs(),
            ..Default::default()
        });
    }

    /// Takes up to `max` queued completions.
    fn reap(&self, max: usize) -> Vec<idm_completion> {
        // Clear the eventfd before draining: a completion queued after the drain
        // makes it readable again.
        let _ = self.efd.read();
        let mut out = Vec::with_capacity(max.min(self.queue.len()));
        while out.len() < max {
            match self.queue.pop() {
                Some(c) => out.push(c),
                None => break,
            }
        }
        if !self.queue.is_empty() {
            let _ = self.efd.write(1);
        }
        out
    }
}

/// A submitted operation's future, whatever it returns.
enum Fut {
    Unit(OpFuture<()>),
    Lvb(OpFuture<Lvb>),
    Count(OpFuture<(u32, bool)>),
    Mode(OpFuture<Option<Mode>>),
}

impl Fut {
    fn poll(&mut self, cx: &mut Context<'_>, base: idm_completion) -> Poll<idm_completion> {
        let mut c = base;
        let res = match self {
            Fut::Unit(f) => match Pin::new(f).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            },
            Fut::Lvb(f) => match Pin::new(f).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r.map(|v| c.lvb = v.0),
            },
            Fut::Count(f) => match Pin::new(f).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r.map(|(n, me)| {
                    c.count = n;
                    c.self_held = u32::from(me);
                }),
            },
            Fut::Mode(f) => match Pin::new(f).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r.map(|m| {
                    c.mode = match m {
                        None => IDM_OP_MODE_UNLOCK,
                        Some(Mode::Exclusive) => IDM_OP_MODE_EXCLUSIVE,
                        Some(Mode::Shared) => IDM_OP_MODE_SHAREABLE,
                    }
                }),
            },
        };
        if let Err(e) = res {
            c.result = -e.errno();
        }
        Poll::Ready(c)
    }
}

/// One operation in flight: polled when submitted and again when its reactor
/// wakes it; delivers its completion once.
struct Task {
    base: idm_completion,
    fut: Mutex<Option<Fut>>,
    sink: Arc<Sink>,
}

impl Task {
    fn poll_once(self: &Arc<Self>) {
        let mut slot = self.fut.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = slot.as_mut() else { return };
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        if let Poll::Ready(c) = f.poll(&mut cx, self.base) {
            *slot = None;
            drop(slot);
            self.sink.deliver(c);
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.poll_once();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.poll_once();
    }
}

fn mode_of(m: u32) -> Result<Mode, i32> {
    match m {
        IDM_OP_MODE_EXCLUSIVE => Ok(Mode::Exclusive),
        IDM_OP_MODE_SHAREABLE => Ok(Mode::Shared),
        _ => Err(errno::EINVAL),
    }
}

/// The drive names of `op`.
///
/// # Safety
///
/// `op.drives` is NULL or valid for `op.drive_num` pointers, each NULL or a
/// NUL-terminated string, all unchanged for the call (`idm_submit`'s contract).
unsafe fn op_drives(op: &idm_op) -> Result<Vec<String>, i32> {
    if op.drive_num == 0 || op.drive_num > IDM_OP_MAX_DRIVES || op.drives.is_null() {
        return Err(errno::EINVAL);
    }
    // SAFETY: non-NULL and valid for `drive_num` pointers (this function's contract).
    let ptrs = unsafe { raw::slice(op.drives, op.drive_num as usize) }?;
    ptrs.iter()
        // SAFETY: each entry is NULL or NUL-terminated (this function's contract).
        .map(|p| unsafe { raw::string(*p) })
        .collect()
}

impl idm_lockspace {
    /// Starts one operation; `Err` completes it at once.
    ///
    /// # Safety
    ///
    /// As [`op_drives`]: `op.drives` is NULL or `op.drive_num` valid pointers to
    /// NULL or NUL-terminated strings.
    unsafe fn start(&self, op: &idm_op) -> Result<Fut, i32> {
        let id = LockId(op.lock_id);
        let timeout = Duration::from_millis(if op.timeout_ms == 0 {
            5000
        } else {
            u64::from(op.timeout_ms)
        });
        let checked = |op: &idm_op| -> Result<Vec<String>, i32> {
            // SAFETY: `op` is the one this function got, with its contract.
            let d = unsafe { op_drives(op) }?;
            for name in &d {
                self.drives.precheck(name)?;
            }
            Ok(d)
        };
        Ok(match op.kind {
            IDM_OP_LOCK => {
                let mode = mode_of(op.mode)?;
                let d = checked(op)?;
                let opts = LockOptions {
                    timeout,
                    no_wait: op.flags & IDM_OP_FLAG_WAIT == 0,
                };
                Fut::Unit(self.ls.lock_async(id, mode, &d, opts))
            }
            IDM_OP_UNLOCK => Fut::Unit(self.ls.unlock_async(id)),
            IDM_OP_CONVERT => Fut::Unit(self.ls.convert_async(id, mode_of(op.mode)?)),
            IDM_OP_READ_LVB => Fut::Lvb(self.ls.read_lvb_async(id)),
            IDM_OP_WRITE_LVB => Fut::Unit(self.ls.write_lvb_async(id, Lvb(op.lvb))),
            IDM_OP_HOST_COUNT => Fut::Count(self.ls.host_count_async(id, &checked(op)?)),
            IDM_OP_MODE => Fut::Mode(self.ls.mode_async(id, &checked(op)?)),
            _ => return Err(errno::EINVAL),
        })
    }

    /// Starts every operation of `ops`; each completes exactly once.
    ///
    /// # Safety
    ///
    /// Every op of `ops` meets [`idm_lockspace::start`]'s contract.
    unsafe fn submit(&self, ops: &[idm_op]) {
        self.sink
            .submitted
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        for op in ops {
            // SAFETY: every op meets `start`'s contract (this function's).
            match unsafe { self.start(op) } {
                Ok(fut) => {
                    let task = Arc::new(Task {
                        base: idm_completion {
                            tag: op.tag,
                            kind: op.kind,
                            ..Default::default()
                        },
                        fut: Mutex::new(Some(fut)),
                        sink: self.sink.clone(),
                    });
                    task.poll_once();
                }
                Err(e) => self.sink.fail(op.tag, op.kind, e),
            }
        }
    }
}

/// The engine `cfg` describes.
///
/// # Safety
///
/// `cfg.drives` is NULL or a NUL-terminated string (`idm_engine_new`'s contract).
unsafe fn engine_new(cfg: &idm_engine_config) -> Result<Box<idm_engine>, i32> {
    crate::log::init();
    // SAFETY: NULL or NUL-terminated (this function's contract).
    let source = match unsafe { raw::opt_string(cfg.drives) }? {
        Some(s) => DriveSource::parse(&s),
        None => DriveSource::from_env(),
    }
    .map_err(|e| {
        tracing::error!(error = %e, "bad drive source");
        errno::EINVAL
    })?;
    let watchdog = WatchdogConfig::from_env().map_err(|e| {
        tracing::error!(error = %e, "bad watchdog setting");
        errno::EINVAL
    })?;
    let drives = Drives::start(source, |c| {
        c.watchdog = watchdog;
        if cfg.reactors > 0 {
            c.reactors = cfg.reactors as usize;
        }
        if cfg.command_timeout_ms > 0 {
            c.command_timeout = Duration::from_millis(u64::from(cfg.command_timeout_ms));
        }
    })
    .map_err(|e| {
        tracing::error!(error = %e, "engine start failed");
        e.errno()
    })?;
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| e as i32)?;
    Ok(Box::new(idm_engine {
        drives: Arc::new(drives),
        sink: Arc::new(Sink {
            queue: SegQueue::new(),
            efd,
            callback: cfg.callback,
            arg: UserArg(cfg.callback_arg),
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        }),
    }))
}

/// Starts an engine as `cfg` says (NULL: all defaults) and stores it in `*out`.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `cfg` is NULL or valid for reading one
/// `idm_engine_config` whose `drives` is NULL or NUL-terminated; `out` is NULL or valid
/// for writing one pointer; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn idm_engine_new(
    cfg: *const idm_engine_config,
    out: *mut *mut idm_engine,
) -> c_int {
    guarded("idm_engine_new", || {
        if out.is_null() {
            return Err(errno::EINVAL);
        }
        let default = idm_engine_config {
            drives: std::ptr::null(),
            reactors: 0,
            command_timeout_ms: 0,
            callback: None,
            callback_arg: std::ptr::null_mut(),
        };
        // SAFETY: `cfg` is NULL or a valid `idm_engine_config` (header contract).
        let cfg = unsafe { raw::opt_ref(cfg) }.unwrap_or(&default);
        // SAFETY: its `drives` is NULL or NUL-terminated (header contract).
        let e = unsafe { engine_new(cfg) }?;
        // SAFETY: `out` is valid for one pointer (header contract).
        unsafe { raw::write(out, Box::into_raw(e)) }
    })
}

/// Releases the caller's engine handle. Open lockspaces keep the reactors running
/// until they are closed; operations in flight still complete.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `e` is NULL or a handle from
/// `idm_engine_new`, freed only once and not used afterwards; all stay valid and
/// unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn idm_engine_free(e: *mut idm_engine) {
    let _ = guarded("idm_engine_free", || {
        if !e.is_null() {
            // SAFETY: from `idm_engine_new`, freed once (header contract).
            drop(unsafe { raw::take_box(e) }?);
        }
        Ok(())
    });
}

/// The eventfd that is readable while completions are queued (non-blocking,
/// close-on-exec, owned by the engine: do not read or close it). `-EINVAL` if
/// the engine delivers to a callback.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `e` is NULL or a handle from
/// `idm_engine_new` not yet freed; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn idm_engine_eventfd(e: *const idm_engine) -> c_int {
    let mut fd = -1;
    let r = guarded("idm_engine_eventfd", || {
        // SAFETY: NULL or a live engine handle (header contract).
        let e = unsafe { raw::handle(e) }?;
        if e.sink.callback.is_some() {
            return Err(errno::EINVAL);
        }
        fd = e.sink.efd.as_fd().as_raw_fd();
        Ok(())
    });
    if r < 0 {
        r
    } else {
        fd
    }
}

/// Moves up to `max` queued completions to `out`.
///
/// # Safety
///
/// `out` is NULL or valid and aligned for writes of `max` completions.
unsafe fn reap_into(e: &idm_engine, out: *mut idm_completion, max: usize) -> Result<usize, i32> {
    if out.is_null() || max == 0 {
        return Err(errno::EINVAL);
    }
    let got = e.sink.reap(max);
    // SAFETY: `out` is valid for `max` completions (this function's contract),
    // `got.len() <= max`, and `got` is our own memory.
    unsafe { raw::copy_out(out, &got) }?;
    Ok(got.len())
}

/// Moves up to `max` queued completions to `out` without blocking; returns how
/// many (0 if none).
///
/// # Safety
///
/// The pointers, as the C caller passes them: `e` is NULL or a handle from
/// `idm_engine_new` not yet freed; `out` is NULL or valid for writing `max`
/// completions; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn idm_engine_reap(
    e: *const idm_engine,
    out: *mut idm_completion,
    max: usize,
) -> c_long {
    guarded_count("idm_engine_reap", || {
        // SAFETY: NULL or a live engine handle (header contract).
        let e = unsafe { raw::handle(e) }?;
        // SAFETY: `out` is NULL or valid for `max` completions (header contract).
        unsafe { reap_into(e, out, max) }
    }) as c_long
}

/// Like `idm_engine_reap`, but waits up to `timeout_ms` (negative: forever) for
/// at least one completion; returns 0 on timeout.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `e` is NULL or a handle from
/// `idm_engine_new` not yet freed; `out` is NULL or valid for writing `max`
/// completions; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn idm_engine_wait(
    e: *const idm_engine,
    out: *mut idm_completion,
    max: usize,
    timeout_ms: c_int,
) -> c_long {
    guarded_count("idm_engine_wait", || {
        // SAFETY: NULL or a live engine handle (header contract).
        let e = unsafe { raw::handle(e) }?;
        if e.sink.callback.is_some() {
            return Err(errno::EINVAL);
        }
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        // The eventfd can be readable with nothing queued (a completion counted
        // by a reap that was already draining): wake-ups are hints, so loop until
        // something is reaped or the time is up.
        let deadline = (timeout_ms >= 0)
            .then(|| std::time::Instant::now() + Duration::from_millis(timeout_ms as u64));
        loop {
            // SAFETY: `out` is NULL or valid for `max` completions (header contract).
            let got = unsafe { reap_into(e, out, max) }?;
            if got > 0 {
                return Ok(got);
            }
            let t = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Ok(0);
                    }
                    PollTimeout::try_from(left.as_millis().max(1)).map_err(|_| errno::EINVAL)?
                }
            };
            let mut fds = [PollFd::new(e.sink.efd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, t) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e as i32),
            }
        }
    }) as c_long
}

/// Fills `*out` with the engine's statistics.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `e` is NULL or a handle from
/// `idm_engine_new` not yet freed; `out` is NULL or valid for writing one `idm_stats`;
/// all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn idm_engine_stats(e: *const idm_engine, out: *mut idm_stats) -> c_int {
    guarded("idm_engine_stats", || {
        // SAFETY: NULL or a live engine handle (header contract).
        let e = unsafe { raw::handle(e) }?;
        if out.is_null() {
            return Err(errno::EINVAL);
        }
        let s = e.drives.engine.stats().map_err(|x| x.errno())?;
        let op = |k: OpKind| {
            let o = s.op(k);
            idm_op_stats {
                count: o.count,
                errors: o.errors,
                p50_ns: o.p50_ns,
                p99_ns: o.p99_ns,
                p999_ns: o.p999_ns,
                max_ns: o.max_ns,
            }
        };
        let v = idm_stats {
            reactors: s.reactors as u64,
            submitted: e.sink.submitted.load(Ordering::Relaxed),
            completed: e.sink.completed.load(Ordering::Relaxed),
            queued: e.sink.queue.len() as u64,
            commands: s.commands(),
            renewals: s.renewals(),
            renew_failures: s.renew_failures(),
            fences: s.fences(),
            lock: op(OpKind::Acquire),
            unlock: op(OpKind::Release),
            renew: op(OpKind::Renew),
            convert: op(OpKind::Convert),
            read_lvb: op(OpKind::ReadLvb),
            host_count: op(OpKind::HostCount),
            mode: op(OpKind::Mode),
        };
        // SAFETY: `out` was checked non-NULL; it is valid for one `idm_stats`
        // (header contract).
        unsafe { raw::write(out, v) }
    })
}

/// The lockspace `cfg` describes, on `e`.
///
/// # Safety
///
/// The pointers of `cfg` are NULL or valid: `name`, `kill_path`, `kill_args`
/// NUL-terminated strings, `host_id` `host_id_len` bytes (`idm_lockspace_open`'s
/// contract).
unsafe fn lockspace_new(
    e: &idm_engine,
    cfg: Option<&idm_lockspace_config>,
) -> Result<Box<idm_lockspace>, i32> {
    let mut c = LockspaceConfig::new("idm");
    if let Some(cfg) = cfg {
        // SAFETY: NULL or NUL-terminated (this function's contract).
        if let Some(name) = unsafe { raw::opt_string(cfg.name) }? {
            c.name = name;
        }
        if cfg.lease_ms != 0 {
            if cfg.lease_ms < 300 {
                return Err(errno::EINVAL);
            }
            c = c.with_lease(Duration::from_millis(u64::from(cfg.lease_ms)));
        }
        if !cfg.host_id.is_null() {
            let n = cfg.host_id_len as usize;
            if n == 0 || n > HostId::LEN {
                return Err(errno::EINVAL);
            }
            // SAFETY: valid for `host_id_len` bytes (this function's contract).
            let b = unsafe { raw::slice(cfg.host_id, n) }?;
            let mut id = [0u8; HostId::LEN];
            id[..n].copy_from_slice(b);
            c.host_id = HostId(id);
        }
        // SAFETY: NULL or NUL-terminated (this function's contract).
        if let Some(program) = unsafe { raw::opt_string(cfg.kill_path) }? {
            // SAFETY: NULL or NUL-terminated (this function's contract).
            let args = unsafe { raw::opt_string(cfg.kill_args) }?.unwrap_or_default();
            c.fence = FenceAction::KillPath {
                program: program.into(),
                args: args.split_whitespace().map(str::to_string).collect(),
            };
        }
    }
    let ls = e.drives.engine.lockspace(c).map_err(|x| x.errno())?;
    Ok(Box::new(idm_lockspace {
        ls,
        drives: e.drives.clone(),
        sink: e.sink.clone(),
    }))
}

/// Opens a lockspace on engine `e` (`cfg` NULL: defaults) into `*out`.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `e` is NULL or a handle from
/// `idm_engine_new` not yet freed; `cfg` is NULL or valid for reading one
/// `idm_lockspace_config` whose pointers are NULL or valid as its fields say; `out` is
/// NULL or valid for writing one pointer; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn idm_lockspace_open(
    e: *const idm_engine,
    cfg: *const idm_lockspace_config,
    out: *mut *mut idm_lockspace,
) -> c_int {
    guarded("idm_lockspace_open", || {
        // SAFETY: NULL or a live engine handle (header contract).
        let e = unsafe { raw::handle(e) }?;
        if out.is_null() {
            return Err(errno::EINVAL);
        }
        // SAFETY: NULL or a valid `idm_lockspace_config` (header contract).
        let cfg = unsafe { raw::opt_ref(cfg) };
        // SAFETY: its pointers are NULL or valid as documented (header contract).
        let l = unsafe { lockspace_new(e, cfg) }?;
        // SAFETY: `out` was checked non-NULL; valid for one pointer (header contract).
        unsafe { raw::write(out, Box::into_raw(l)) }
    })
}

/// Closes a lockspace: with `release` non-zero its locks are released on the
/// drives, else they are left to lapse. Blocks until the reactors are done with
/// it; operations still in flight complete with an error.
///
/// # Safety
///
/// The pointers, as the C caller passes them: `l` is NULL or a handle from
/// `idm_lockspace_open`, closed only once and not used afterwards; all stay valid and
/// unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn idm_lockspace_close(l: *mut idm_lockspace, release: c_int) -> c_int {
    guarded("idm_lockspace_close", || {
        // SAFETY: NULL or from `idm_lockspace_open`, closed once (header contract).
        let l = unsafe { raw::take_box(l) }?;
        l.ls.close(release != 0);
        Ok(())
    })
}

/// Makes `percent` (0..=100) of the lockspace's drive commands fail with EIO (tests).
///
/// # Safety
///
/// The pointers, as the C caller passes them: `l` is NULL or a handle from
/// `idm_lockspace_open` not yet closed; all stay valid and unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn idm_lockspace_inject_fault(
    l: *const idm_lockspace,
    percent: u32,
) -> c_int {
    guarded("idm_lockspace_inject_fault", || {
        // SAFETY: NULL or a live lockspace handle (header contract).
        unsafe { raw::handle(l) }?
            .ls
            .inject_fault(percent)
            .map_err(|e| e.errno())
    })
}

/// Until when held lock `lock_id` (64 bytes) of lockspace `l` is valid, as
/// `CLOCK_MONOTONIC` nanoseconds in `*mono_ns` (compare with
/// `clock_gettime(CLOCK_MONOTONIC)`): the end of its lease as this host can prove
/// it, drift margin taken off. The engine fences the lockspace a fence margin
/// (lease / 6) before it and, with a watchdog (`IDM_WATCHDOG`), resets the host
/// before it; a caller that checks before acting needs `now + time to act` below
/// it. Renewals move it forward. 0, or `-ENOENT` when the lock is not held (or no
/// validity is left), `-EINVAL` for NULL pointers. Blocks for one round trip to
/// the lock's reactor (no drive command).
///
/// # Safety
///
/// The pointers, as the C caller passes them: `l` is NULL or a handle from
/// `idm_lockspace_open` not yet closed; `lock_id` is NULL or valid for reading 64
/// bytes; `mono_ns` is NULL or valid for writing one `uint64_t`; all stay valid and
/// unchanged for the call.
#[no_mangle]
pub unsafe extern "C" fn idm_lockspace_valid_until(
    l: *const idm_lockspace,
    lock_id: *const u8,
    mono_ns: *mut u64,
) -> c_int {
    guarded("idm_lockspace_valid_until", || {
        // SAFETY: NULL or a live lockspace handle (header contract).
        let l = unsafe { raw::handle(l) }?;
        if lock_id.is_null() || mono_ns.is_null() {
            return Err(errno::EINVAL);
        }
        let mut id = [0u8; 64];
        // SAFETY: `lock_id` is valid for 64 bytes (header contract).
        id.copy_from_slice(unsafe { raw::slice(lock_id, 64) }?);
        let until =
            l.ls.valid_until(LockId(id))
                .map_err(|e| e.errno())?
                .ok_or(errno::ENOENT)?;
        let now = std::time::Instant::now();
        let mono_now =
            nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_err(|e| e as i32)?;
        let now_ns = (mono_now.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(mono_now.tv_nsec() as u64);
        let left = until.saturating_duration_since(now).as_nanos() as u64;
        // SAFETY: checked non-NULL; valid for one `u64` (header contract).
        unsafe { raw::write(mono_ns, now_ns.saturating_add(left)) }
    })
}

/// Submits `n` operations without waiting for drives. Returns `n` (each
/// operation then completes exactly once, invalid ones at once with their error)
/// or a negative errno if the batch itself is invalid (NULL pointers).
///
/// # Safety
///
/// The pointers, as the C caller passes them: `l` is NULL or a handle from
/// `idm_lockspace_open` not yet closed; `ops` is NULL or valid for reading `n`
/// operations whose `drives` are as `idm_op` says; all stay valid and unchanged for the
/// call.
#[no_mangle]
pub unsafe extern "C" fn idm_submit(
    l: *const idm_lockspace,
    ops: *const idm_op,
    n: usize,
) -> c_long {
    guarded_count("idm_submit", || {
        // SAFETY: NULL or a live lockspace handle (header contract).
        let l = unsafe { raw::handle(l) }?;
        if n == 0 {
            return Ok(0);
        }
        if ops.is_null() {
            return Err(errno::EINVAL);
        }
        // SAFETY: `ops` is valid for `n` operations (header contract).
        let ops = unsafe { raw::slice(ops, n) }?;
        // SAFETY: each op's drive names are as documented (header contract).
        unsafe { l.submit(ops) };
        Ok(n)
    }) as c_long
}
