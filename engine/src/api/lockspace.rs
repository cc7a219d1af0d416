//! [`Lockspace`]: a host ID, a lease and a fencing action, and the lock calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use uring_sg::{HostId, LockId, Lvb, Mode};

use super::{Engine, EngineError, FenceAction, LockOptions};
use crate::completion::{pair, Pending};
use crate::locks::OpOutput;
use crate::shared::msg::{stopped, DriveNames, Msg, OpRequest, OpResult};
use crate::shared::LockspaceShared;
use crate::watchdog::WatchdogPolicy;

/// A lock operation in flight: wait for it, `.await` it, or poll it.
pub struct OpFuture<T> {
    pending: Pending<OpResult>,
    map: fn(OpOutput) -> Result<T, EngineError>,
}

impl<T> OpFuture<T> {
    /// An operation that failed before it was sent.
    fn failed(e: EngineError) -> OpFuture<T> {
        let (c, pending) = pair(stopped);
        c.complete(Err(e));
        OpFuture {
            pending,
            map: |_| Err(EngineError::Stopped),
        }
    }

    /// Blocks until the operation finished.
    pub fn wait(self) -> Result<T, EngineError> {
        self.pending.wait().and_then(self.map)
    }
}

impl<T> Future for OpFuture<T> {
    type Output = Result<T, EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let map = self.map;
        Pin::new(&mut self.pending)
            .poll(cx)
            .map(|r| r.and_then(map))
    }
}

impl<T> Unpin for OpFuture<T> {}

/// A lockspace: locks taken through it share a host ID, a lease and a fencing
/// action. Dropping it releases its locks (see [`Lockspace::close`] for the
/// alternative).
pub struct Lockspace {
    engine: Engine,
    shared: Arc<LockspaceShared>,
    closed: bool,
}

fn done(o: OpOutput) -> Result<(), EngineError> {
    match o {
        OpOutput::Done => Ok(()),
        other => Err(EngineError::InvalidArgument(format!(
            "unexpected output {other:?}"
        ))),
    }
}

fn lvb(o: OpOutput) -> Result<Lvb, EngineError> {
    match o {
        OpOutput::Lvb(v) => Ok(v),
        other => Err(EngineError::InvalidArgument(format!(
            "unexpected output {other:?}"
        ))),
    }
}

fn count(o: OpOutput) -> Result<(u32, bool), EngineError> {
    match o {
        OpOutput::HostCount {
            others,
            held_by_self,
        } => Ok((others, held_by_self)),
        other => Err(EngineError::InvalidArgument(format!(
            "unexpected output {other:?}"
        ))),
    }
}

fn mode(o: OpOutput) -> Result<Option<Mode>, EngineError> {
    match o {
        OpOutput::Mode(m) => Ok(m),
        other => Err(EngineError::InvalidArgument(format!(
            "unexpected output {other:?}"
        ))),
    }
}

impl Lockspace {
    pub(crate) fn new(engine: Engine, shared: Arc<LockspaceShared>) -> Lockspace {
        Lockspace {
            engine,
            shared,
            closed: false,
        }
    }

    /// Sends `req` for lock `id` to its reactor.
    fn submit<T>(
        &self,
        id: LockId,
        req: OpRequest,
        map: fn(OpOutput) -> Result<T, EngineError>,
    ) -> OpFuture<T> {
        let (c, pending) = pair(stopped);
        // A send failure drops the completer, which completes with "stopped".
        let _ = self.engine.inner.reactor_for(&id).send(Msg::Op {
            ls: self.shared.id,
            lock: id,
            req,
            done: c,
        });
        OpFuture { pending, map }
    }

    /// Acquires lock `id` in `mode` on `drives` (a majority must grant).
    pub fn lock_async(
        &self,
        id: LockId,
        mode: Mode,
        drives: &[impl AsRef<str>],
        opts: LockOptions,
    ) -> OpFuture<()> {
        if let Err(e) = self.watchdog_check() {
            return OpFuture::failed(e);
        }
        let drives = match DriveNames::new(drives) {
            Ok(d) => d,
            Err(e) => return OpFuture::failed(e),
        };
        let req = OpRequest::Acquire {
            mode,
            drives,
            deadline: Instant::now() + opts.timeout,
            no_wait: opts.no_wait,
        };
        self.submit(id, req, done)
    }

    /// `Err(NoWatchdog)` when this lockspace (or the engine's policy) requires a
    /// watchdog and none can protect this lockspace's leases.
    fn watchdog_check(&self) -> Result<(), EngineError> {
        let wd = self.engine.inner.watchdog.as_ref();
        let required = self.shared.require_watchdog
            || wd.is_some_and(|w| w.policy() == WatchdogPolicy::Required);
        if !required {
            return Ok(());
        }
        match wd {
            None => Err(EngineError::NoWatchdog(
                "the engine's watchdog policy is off".into(),
            )),
            Some(w) => w
                .usable_for(&self.shared.policy)
                .map_err(EngineError::NoWatchdog),
        }
    }

    /// Until when held lock `id` is valid: the end of its lease as this host
    /// can prove it (the majority-th latest send time plus the countdown, minus
    /// the drift margin; crate docs, DESIGN NOTE). `None` when it is not held
    /// (or no validity is left). The engine fences the lockspace `fence_margin`
    /// before this time and, with a watchdog, resets the host before it: a
    /// caller that checks before acting needs `now + time to act < valid_until`.
    /// Renewals move it forward; ask again after each check.
    pub fn valid_until(&self, id: LockId) -> Result<Option<Instant>, EngineError> {
        let (c, p) = pair(|| None);
        self.engine.inner.reactor_for(&id).send(Msg::ValidUntil {
            ls: self.shared.id,
            lock: id,
            done: c,
        })?;
        Ok(p.wait())
    }

    /// Blocking [`Lockspace::lock_async`].
    pub fn lock(
        &self,
        id: LockId,
        mode: Mode,
        drives: &[impl AsRef<str>],
        opts: LockOptions,
    ) -> Result<(), EngineError> {
        self.lock_async(id, mode, drives, opts).wait()
    }

    /// Releases lock `id` (by ID alone: the lockspace remembers its drives),
    /// storing the LVB if one was written.
    pub fn unlock_async(&self, id: LockId) -> OpFuture<()> {
        self.submit(id, OpRequest::Release, done)
    }

    /// Blocking [`Lockspace::unlock_async`].
    pub fn unlock(&self, id: LockId) -> Result<(), EngineError> {
        self.unlock_async(id).wait()
    }

    /// Converts lock `id` to `mode`. On failure the lock stays held in its old mode.
    /// Convert, read LVB, host count and mode take no timeout: every drive
    /// command is bounded by [`super::EngineConfig::command_timeout`], and so are
    /// these operations.
    pub fn convert_async(&self, id: LockId, mode: Mode) -> OpFuture<()> {
        self.submit(id, OpRequest::Convert { mode }, done)
    }

    /// Blocking [`Lockspace::convert_async`].
    pub fn convert(&self, id: LockId, mode: Mode) -> Result<(), EngineError> {
        self.convert_async(id, mode).wait()
    }

    /// Reads the LVB of held lock `id`: the maximum over a majority of its drives,
    /// or all-ones ([`Lvb::INVALID`]) if a drive was taken by break (the previous
    /// holder may not have stored its value). Byte 7 always reads as 0 (IDM.md §5).
    pub fn read_lvb_async(&self, id: LockId) -> OpFuture<Lvb> {
        self.submit(id, OpRequest::ReadLvb, lvb)
    }

    /// Blocking [`Lockspace::read_lvb_async`].
    pub fn read_lvb(&self, id: LockId) -> Result<Lvb, EngineError> {
        self.read_lvb_async(id).wait()
    }

    /// Sets the LVB that the release of held lock `id` stores on its drives.
    /// Byte 7 is not carried by the drive (IDM.md §5): it reads back as 0.
    pub fn write_lvb(&self, id: LockId, value: Lvb) -> Result<(), EngineError> {
        self.write_lvb_async(id, value).wait()
    }

    /// [`Lockspace::write_lvb`] without waiting (no drive command; the reactor
    /// records the value).
    pub fn write_lvb_async(&self, id: LockId, value: Lvb) -> OpFuture<()> {
        self.submit(id, OpRequest::WriteLvb(value), done)
    }

    /// Other hosts holding lock `id` on `drives` (maximum over drives), and whether
    /// this host holds it; works for locks this lockspace does not hold.
    pub fn host_count_async(
        &self,
        id: LockId,
        drives: &[impl AsRef<str>],
    ) -> OpFuture<(u32, bool)> {
        let drives = match DriveNames::new(drives) {
            Ok(d) => d,
            Err(e) => return OpFuture::failed(e),
        };
        self.submit(id, OpRequest::HostCount { drives }, count)
    }

    /// Blocking [`Lockspace::host_count_async`].
    pub fn host_count(
        &self,
        id: LockId,
        drives: &[impl AsRef<str>],
    ) -> Result<(u32, bool), EngineError> {
        self.host_count_async(id, drives).wait()
    }

    /// The mode lock `id` is held in on `drives` (majority vote; `None`: unlocked).
    pub fn mode_async(&self, id: LockId, drives: &[impl AsRef<str>]) -> OpFuture<Option<Mode>> {
        let drives = match DriveNames::new(drives) {
            Ok(d) => d,
            Err(e) => return OpFuture::failed(e),
        };
        self.submit(id, OpRequest::Mode { drives }, mode)
    }

    /// Blocking [`Lockspace::mode_async`].
    pub fn mode(
        &self,
        id: LockId,
        drives: &[impl AsRef<str>],
    ) -> Result<Option<Mode>, EngineError> {
        self.mode_async(id, drives).wait()
    }

    /// Pauses renewals: the leases lapse, and the fencing action fires before they do.
    pub fn stop_renew(&self) {
        self.shared.renew_paused.store(true, Ordering::SeqCst);
    }

    /// Resumes renewals.
    pub fn start_renew(&self) {
        self.shared.renew_paused.store(false, Ordering::SeqCst);
    }

    /// Makes `percent` of this lockspace's drive commands fail with EIO (tests).
    pub fn inject_fault(&self, percent: u32) -> Result<(), EngineError> {
        if percent > 100 {
            return Err(EngineError::InvalidArgument(format!(
                "fault percentage {percent} is over 100"
            )));
        }
        self.shared.fault_pct.store(percent, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the fencing action.
    pub fn set_fence_action(&self, action: FenceAction) {
        self.shared.set_fence_action(action);
    }

    /// Whether this lockspace was fenced (it then refuses new locks).
    pub fn is_fenced(&self) -> bool {
        self.shared.fenced.load(Ordering::SeqCst)
    }

    /// The engine this lockspace belongs to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The lockspace's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The host ID this lockspace uses on the drives.
    pub fn host_id(&self) -> HostId {
        self.shared.host_id
    }

    /// Closes the lockspace: with `release`, its locks are released on the drives
    /// (what dropping does); without, they are forgotten and left to expire on the
    /// drives (what `ilm_disconnect` does). Blocks until the reactors are done.
    pub fn close(mut self, release: bool) {
        self.closed = true;
        self.shutdown(release);
    }

    fn shutdown(&self, release: bool) {
        let mut waits = Vec::new();
        for r in &self.engine.inner.reactors {
            let (c, p) = pair(|| ());
            if r.send(Msg::DropLockspace {
                ls: self.shared.id,
                release,
                done: c,
            })
            .is_ok()
            {
                waits.push(p);
            }
        }
        for p in waits {
            p.wait();
        }
    }
}

impl Drop for Lockspace {
    fn drop(&mut self) {
        if !self.closed {
            self.shutdown(true);
        }
    }
}
