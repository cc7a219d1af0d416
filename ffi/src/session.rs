//! The state behind each `ilm.h` handle (a "session"): one lockspace of the
//! process-wide engine, built lazily.
//!
//! **Lazy lockspace.** `ilm_connect` only allocates a handle (lvmlockd also uses
//! connect + disconnect as a cheap "is the lock manager running" probe). The
//! engine lockspace is built by the first call that needs it (`ilm_lock`,
//! `ilm_get_host_count`, `ilm_get_mode`), with the host ID, kill path / signal,
//! injected fault rate and renewal pause configured so far. While it holds no lock
//! (and no lock is being acquired) it is rebuilt whenever its configuration must
//! change: `ilm_set_host_id`, or an `ilm_lock` asking for a different lease.
//!
//! **Lease.** `idm_lock_op.timeout` is the drive membership countdown in ms (the
//! lease; 0 means the default 60000, negative is `EINVAL`). A lockspace has one
//! lease, so it is taken from the first lock of the lockspace (the lockspace is
//! built, or rebuilt while empty, with it); a later lock asking for another lease
//! while locks are held gets the lockspace's lease (logged at debug). lvmlockd
//! always passes 60000. Renewal runs every lease/6 and fencing fires when less
//! than lease/6 plus a drift margin of validity is left (`LockspaceConfig::with_lease`).
//!
//! **Waiting.** `ilm_lock` waits behind a live holder, bounded: the engine's
//! acquire retries under contention (rounds of trylocks with a random 0.5-1 ms
//! backoff between them, releasing what a lost round granted) until the lock's
//! deadline, then fails with `-EBUSY` (when the deadline falls inside a round,
//! one last round without waiting decides between `-EBUSY`, a grant, and
//! `-ETIMEDOUT` for drives that do not answer). The wait is `IDM_LOCK_WAIT_MS` (default
//! [`DEFAULT_LOCK_WAIT`], 5 s like the old lock manager; `0`: no wait, `-EBUSY` at
//! once as before). lvmlockd turns every `ilm_lock` error into a lock I/O error
//! and retries only `-EAGAIN`, so this wait is the only one a contended VG or
//! global lock gets: short-held locks (VG and global locks, held for the length
//! of one LVM command) are granted as soon as their holder releases them within
//! the wait; a long-held LV lock (an active LV, held for hours) makes the waiter
//! fail with `-EBUSY` after the wait, as it must.
//!
//! **Deadlines and the lease** (issue 12: no operation outlives the lease it is
//! for). One drive command gives up after the command timeout
//! (`IDM_COMMAND_TIMEOUT_MS`, default [`DEFAULT_COMMAND_TIMEOUT`]); a lease must
//! be at least twice that and at least [`MIN_LEASE`] (else `ilm_lock` is
//! `-EINVAL`: [`Timing::min_lease`]); the deadline of an `ilm_lock` (wait and
//! unresponsive drives alike) is capped at half the lease
//! ([`Timing::lock_options`]). Convert, LVB, count and mode are one round of
//! drive commands each, bounded by the command timeout, so by half the lease too.
//! With lvmlockd's 60 s lease: lock deadline min(wait, 30 s), commands 2 s.
//!
//! **Fencing.** The kill path (`ilm_set_killpath`) is the fencing action if set,
//! else the signal (`ilm_set_signal`, sent to this process), else none (the
//! lockspace only refuses new work once fenced, with `-ETIME`). Either may be set
//! at any time and applies at once.
//!
//! **Watchdog** (`IDM_WATCHDOG=off|auto|required`, default off;
//! `IDM_WATCHDOG_DEVICE`, `IDM_WATCHDOG_MARGIN_MS`): with `auto` or `required`
//! the engine arms sanlock's wdmd (when it runs) or `/dev/watchdog` while any
//! lock is held, so that a paused, killed or hung lvmlockd resets the host before
//! the leases of its locks can end on the drives; with `required`, `ilm_lock`
//! fails with `-ENODEV` while no watchdog can be armed. See the engine's design
//! note ("Watchdog") for the timing.
//!
//! **Host ID.** Default: the engine's per-host ID (`/etc/machine-id`), so a
//! restarted lvmlockd takes its own stale locks back at once. Two processes on
//! one host that must exclude each other set different IDs (`ilm_set_host_id`,
//! 1..=32 bytes, zero-padded), before their first lock.
//!
//! **Disconnect and process death.** `ilm_disconnect` forgets the lockspace
//! without unlocking (`Lockspace::close(false)`): the drives keep the locks until
//! their lease lapses or this host takes them back. The library lives in the
//! client process, so when it dies its locks stay on the drives until their lease
//! lapses (60 s for lvmlockd), or until a restarted client with the same host ID
//! takes them back at once; there is no daemon to release them earlier.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use idm_engine::api::{EngineError, FenceAction, LockOptions, Lockspace, LockspaceConfig};
use idm_engine::watchdog::WatchdogConfig;
use idm_engine::LockError;
use uring_sg::{HostId, LockId, Lvb, Mode};

use crate::drives::{DriveSource, Drives};
use crate::guard::errno;

/// Deadline of an `ilm_lock` that does not wait behind holders
/// (`IDM_LOCK_WAIT_MS=0`): how long unresponsive drives are given (capped at half
/// the lease).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// The lease when `timeout` is 0 (lvmlockd's value).
pub const DEFAULT_LEASE: Duration = Duration::from_millis(60_000);
/// Shortest lease accepted whatever the command timeout: shorter leases cannot
/// renew and fence in time. [`Timing::min_lease`] is the effective floor.
pub const MIN_LEASE: Duration = Duration::from_millis(1000);
/// How long `ilm_lock` waits behind a live holder when `IDM_LOCK_WAIT_MS` is unset.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_millis(5000);
/// One drive command's timeout when `IDM_COMMAND_TIMEOUT_MS` is unset.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(2000);
/// Largest accepted `IDM_LOCK_WAIT_MS` / `IDM_COMMAND_TIMEOUT_MS` (10 minutes).
pub const MAX_SETTING: Duration = Duration::from_secs(600);

/// The library's time limits, read once when the engine starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long `ilm_lock` waits behind a live holder (`IDM_LOCK_WAIT_MS`); zero:
    /// not at all.
    pub lock_wait: Duration,
    /// One drive command's timeout (`IDM_COMMAND_TIMEOUT_MS`, at least 10 ms).
    pub command_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lock_wait: DEFAULT_LOCK_WAIT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

/// A millisecond setting: `None` when unset, empty or not a number up to
/// [`MAX_SETTING`] (logged).
fn millis(var: &str, text: Option<&str>) -> Option<Duration> {
    let text = text.map(str::trim).filter(|t| !t.is_empty())?;
    match text.parse::<u64>() {
        Ok(ms) if Duration::from_millis(ms) <= MAX_SETTING => Some(Duration::from_millis(ms)),
        _ => {
            tracing::warn!(
                var,
                value = text,
                "not a millisecond count up to 600000: default used"
            );
            None
        }
    }
}

impl Timing {
    /// From the texts of `IDM_LOCK_WAIT_MS` and `IDM_COMMAND_TIMEOUT_MS`; unset or
    /// bad values take the defaults.
    pub fn parse(lock_wait: Option<&str>, command_timeout: Option<&str>) -> Timing {
        let d = Timing::default();
        Timing {
            lock_wait: millis("IDM_LOCK_WAIT_MS", lock_wait).unwrap_or(d.lock_wait),
            command_timeout: millis("IDM_COMMAND_TIMEOUT_MS", command_timeout)
                .unwrap_or(d.command_timeout)
                .max(Duration::from_millis(10)),
        }
    }

    /// From the environment.
    pub fn from_env() -> Timing {
        let get = |v: &str| std::env::var(v).ok();
        Timing::parse(
            get("IDM_LOCK_WAIT_MS").as_deref(),
            get("IDM_COMMAND_TIMEOUT_MS").as_deref(),
        )
    }

    /// The shortest lease accepted: [`MIN_LEASE`], and twice the command timeout
    /// (so a command sent at an operation's deadline, half the lease, still ends
    /// within the lease).
    pub fn min_lease(&self) -> Duration {
        MIN_LEASE.max(self.command_timeout * 2)
    }

    /// The options of an `ilm_lock` on a lockspace with `lease`: wait behind
    /// holders for `lock_wait` (or not at all), the deadline capped at lease / 2.
    pub fn lock_options(&self, lease: Duration) -> LockOptions {
        let cap = lease / 2;
        if self.lock_wait.is_zero() {
            LockOptions {
                timeout: OP_TIMEOUT.min(cap),
                no_wait: true,
            }
        } else {
            LockOptions {
                timeout: self.lock_wait.min(cap),
                no_wait: false,
            }
        }
    }
}

/// The process-wide engine and the handle table.
pub(crate) struct Global {
    pub(crate) drives: Drives,
    pub(crate) timing: Timing,
    sessions: Mutex<HashMap<i32, Arc<Session>>>,
    next: AtomicI32,
}

static GLOBAL: OnceLock<Result<Global, i32>> = OnceLock::new();

/// The engine, started on first use from the environment (`IDM_SIM`,
/// `IDM_REACTORS`). A failure to start is remembered: every later call gets the
/// same errno.
pub(crate) fn global() -> Result<&'static Global, i32> {
    GLOBAL
        .get_or_init(|| {
            crate::log::init();
            idm_engine::api::host_faults::enable();
            crate::ilm::fill_uuid();
            let source = DriveSource::from_env().map_err(|e| {
                tracing::error!(error = %e, "bad drive source");
                errno::EINVAL
            })?;
            let reactors = std::env::var("IDM_REACTORS")
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|n| (1..=64).contains(n));
            let timing = Timing::from_env();
            let watchdog = WatchdogConfig::from_env().map_err(|e| {
                tracing::error!(error = %e, "bad watchdog setting");
                errno::EINVAL
            })?;
            let watchdog_policy = watchdog.policy;
            let drives = Drives::start(source.clone(), |c| {
                c.watchdog = watchdog;
                c.name = format!("ilm-{}", std::process::id());
                c.command_timeout = timing.command_timeout;
                if let Some(n) = reactors {
                    c.reactors = n;
                }
            })
            .map_err(|e| {
                tracing::error!(error = %e, "engine start failed");
                e.errno()
            })?;
            tracing::info!(
                ?source,
                reactors = drives.engine.reactors(),
                lock_wait_ms = timing.lock_wait.as_millis() as u64,
                command_timeout_ms = timing.command_timeout.as_millis() as u64,
                watchdog = ?watchdog_policy,
                "ilm engine started"
            );
            Ok(Global {
                drives,
                timing,
                sessions: Mutex::new(HashMap::new()),
                next: AtomicI32::new(1),
            })
        })
        .as_ref()
        .map_err(|e| *e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Session state stays consistent across a panic (every update is one step).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Global {
    /// A new session; returns its handle (positive, unique among live handles).
    pub(crate) fn connect(&self) -> Result<i32, i32> {
        let mut table = lock(&self.sessions);
        if table.len() >= 1 << 20 {
            return Err(errno::ENOMEM);
        }
        loop {
            let h = self.next.load(Ordering::Relaxed);
            let n = if h == i32::MAX { 1 } else { h + 1 };
            self.next.store(n, Ordering::Relaxed);
            if h > 0 && !table.contains_key(&h) {
                table.insert(h, Arc::new(Session::new(h)));
                return Ok(h);
            }
        }
    }

    /// Ends session `h` without unlocking.
    pub(crate) fn disconnect(&self, h: i32) -> Result<(), i32> {
        let s = lock(&self.sessions).remove(&h).ok_or(errno::EBADF)?;
        tracing::debug!(handle = h, "disconnect");
        // Dropped outside the table lock; the lockspace closes (without
        // releasing) when its last user is done.
        drop(s);
        Ok(())
    }

    /// Session `h`.
    pub(crate) fn session(&self, h: i32) -> Result<Arc<Session>, i32> {
        lock(&self.sessions).get(&h).cloned().ok_or(errno::EBADF)
    }
}

/// An engine lockspace that is forgotten, not released, when dropped.
pub(crate) struct Space {
    ls: Option<Lockspace>,
    lease: Duration,
}

impl Space {
    fn ls(&self) -> Result<&Lockspace, i32> {
        self.ls.as_ref().ok_or(errno::EIO)
    }
}

impl Drop for Space {
    fn drop(&mut self) {
        if let Some(ls) = self.ls.take() {
            ls.close(false);
        }
    }
}

/// What a session remembers between calls.
struct State {
    host_id: HostId,
    killpath: Option<(PathBuf, Vec<String>)>,
    signal: Option<i32>,
    fault_pct: u32,
    renew_stopped: bool,
    space: Option<Arc<Space>>,
    /// Locks this session holds (successful `ilm_lock`s not unlocked).
    held: HashSet<LockId>,
    /// `ilm_lock` calls in progress.
    acquiring: usize,
}

impl State {
    fn fence(&self) -> FenceAction {
        if let Some((program, args)) = &self.killpath {
            FenceAction::KillPath {
                program: program.clone(),
                args: args.clone(),
            }
        } else if let Some(signal) = self.signal {
            FenceAction::Signal {
                pid: std::process::id() as i32,
                signal,
            }
        } else {
            FenceAction::None
        }
    }

    fn busy(&self) -> bool {
        !self.held.is_empty() || self.acquiring > 0
    }
}

/// One `ilm_connect` handle.
pub(crate) struct Session {
    handle: i32,
    state: Mutex<State>,
}

fn engine_err(op: &str, e: EngineError) -> i32 {
    tracing::debug!(op, error = %e, "operation failed");
    e.errno()
}

/// `IDM_MODE_*` to a mode.
pub(crate) fn mode_of(m: u32) -> Result<Mode, i32> {
    match m {
        crate::abi::IDM_MODE_EXCLUSIVE => Ok(Mode::Exclusive),
        crate::abi::IDM_MODE_SHAREABLE => Ok(Mode::Shared),
        _ => Err(errno::EINVAL),
    }
}

/// A lease from `idm_lock_op.timeout`, refused under `min`.
pub(crate) fn lease_of(timeout_ms: i32, min: Duration) -> Result<Duration, i32> {
    match timeout_ms {
        0 => Ok(DEFAULT_LEASE),
        t if t < 0 => Err(errno::EINVAL),
        t => {
            let d = Duration::from_millis(t as u64);
            if d < min {
                Err(errno::EINVAL)
            } else {
                Ok(d)
            }
        }
    }
}

impl Session {
    fn new(handle: i32) -> Session {
        Session {
            handle,
            state: Mutex::new(State {
                host_id: idm_engine::api::default_host_id(),
                killpath: None,
                signal: None,
                fault_pct: 0,
                renew_stopped: false,
                space: None,
                held: HashSet::new(),
                acquiring: 0,
            }),
        }
    }

    /// The lockspace, built (or rebuilt while empty) with `lease` if given.
    /// With `acquire`, counts a lock in progress in the same step.
    fn space(&self, g: &Global, lease: Option<Duration>, acquire: bool) -> Result<Arc<Space>, i32> {
        let mut st = lock(&self.state);
        let mut old = None;
        let reuse = match &st.space {
            Some(s) => st.busy() || lease.is_none_or(|l| l == s.lease),
            None => false,
        };
        if !reuse {
            let lease = lease
                .or_else(|| st.space.as_ref().map(|s| s.lease))
                .unwrap_or(DEFAULT_LEASE);
            let mut cfg = LockspaceConfig::new(&format!("ilm-{}", self.handle)).with_lease(lease);
            cfg.host_id = st.host_id;
            cfg.fence = st.fence();
            let ls = g
                .drives
                .engine
                .lockspace(cfg)
                .map_err(|e| engine_err("lockspace", e))?;
            ls.inject_fault(st.fault_pct)
                .map_err(|e| engine_err("inject_fault", e))?;
            if st.renew_stopped {
                ls.stop_renew();
            }
            tracing::debug!(
                handle = self.handle,
                lease_ms = lease.as_millis() as u64,
                "lockspace built"
            );
            old = st.space.replace(Arc::new(Space {
                ls: Some(ls),
                lease,
            }));
        } else if let (Some(l), Some(s)) = (lease, &st.space) {
            if l != s.lease {
                tracing::debug!(
                    handle = self.handle,
                    asked_ms = l.as_millis() as u64,
                    lease_ms = s.lease.as_millis() as u64,
                    "locks are held: the lockspace keeps its lease"
                );
            }
        }
        if acquire {
            st.acquiring += 1;
        }
        let space = st.space.clone().ok_or(errno::EIO);
        drop(st);
        drop(old);
        space
    }

    /// The lockspace if it was built.
    fn existing(&self) -> Option<Arc<Space>> {
        lock(&self.state).space.clone()
    }

    /// `ilm_lock`.
    pub(crate) fn lock(
        &self,
        g: &Global,
        id: LockId,
        mode: Mode,
        drives: &[String],
        lease: Duration,
    ) -> Result<(), i32> {
        if lock(&self.state).held.contains(&id) {
            return Err(errno::EBUSY);
        }
        let drives = &g.drives.dedupe(drives);
        for d in drives {
            g.drives.precheck(d)?;
        }
        let space = self.space(g, Some(lease), true)?;
        // The lockspace's lease (it may differ from the asked one while locks
        // are held).
        let opts = g.timing.lock_options(space.lease);
        let started = Instant::now();
        let r = space.ls().and_then(|ls| {
            match ls.lock(id, mode, drives, opts) {
                // The wait ended inside a round (drives had not all answered):
                // one more round without waiting tells a live holder (-EBUSY)
                // from drives that do not answer (-ETIMEDOUT), within what is
                // left of half the lease and one command timeout.
                Err(EngineError::Lock(LockError::Timeout)) if !opts.no_wait => {
                    let left = (space.lease / 2).saturating_sub(started.elapsed());
                    let last = LockOptions {
                        timeout: left.min(g.timing.command_timeout),
                        no_wait: true,
                    };
                    if last.timeout.is_zero() {
                        Err(EngineError::Lock(LockError::Timeout))
                    } else {
                        ls.lock(id, mode, drives, last)
                    }
                }
                other => other,
            }
            .map_err(|e| engine_err("lock", e))
        });
        let mut st = lock(&self.state);
        st.acquiring = st.acquiring.saturating_sub(1);
        if r.is_ok() {
            st.held.insert(id);
        }
        r
    }

    /// `ilm_unlock`.
    pub(crate) fn unlock(&self, id: LockId) -> Result<(), i32> {
        let space = self.existing().ok_or(errno::ENOENT)?;
        let r = space.ls()?.unlock(id);
        if matches!(r, Ok(()) | Err(EngineError::NotHeld)) {
            lock(&self.state).held.remove(&id);
        }
        r.map_err(|e| engine_err("unlock", e))
    }

    /// `ilm_convert`.
    pub(crate) fn convert(&self, id: LockId, mode: Mode) -> Result<(), i32> {
        let space = self.existing().ok_or(errno::ENOENT)?;
        let r = space.ls()?.convert(id, mode);
        r.map_err(|e| engine_err("convert", e))
    }

    /// `ilm_write_lvb`.
    pub(crate) fn write_lvb(&self, id: LockId, v: Lvb) -> Result<(), i32> {
        let space = self.existing().ok_or(errno::ENOENT)?;
        let r = space.ls()?.write_lvb(id, v);
        r.map_err(|e| engine_err("write_lvb", e))
    }

    /// `ilm_read_lvb`.
    pub(crate) fn read_lvb(&self, id: LockId) -> Result<Lvb, i32> {
        let space = self.existing().ok_or(errno::ENOENT)?;
        let r = space.ls()?.read_lvb(id);
        r.map_err(|e| engine_err("read_lvb", e))
    }

    /// `ilm_get_host_count`: (other hosts, held by this host).
    pub(crate) fn host_count(
        &self,
        g: &Global,
        id: LockId,
        drives: &[String],
    ) -> Result<(u32, bool), i32> {
        let drives = &g.drives.dedupe(drives);
        for d in drives {
            g.drives.precheck(d)?;
        }
        let space = self.space(g, None, false)?;
        let r = space.ls()?.host_count(id, drives);
        r.map_err(|e| engine_err("host_count", e))
    }

    /// `ilm_get_mode`.
    pub(crate) fn mode(
        &self,
        g: &Global,
        id: LockId,
        drives: &[String],
    ) -> Result<Option<Mode>, i32> {
        let drives = &g.drives.dedupe(drives);
        for d in drives {
            g.drives.precheck(d)?;
        }
        let space = self.space(g, None, false)?;
        let r = space.ls()?.mode(id, drives);
        r.map_err(|e| engine_err("mode", e))
    }

    fn refence(&self, st: &State) {
        if let Some(s) = &st.space {
            if let Ok(ls) = s.ls() {
                ls.set_fence_action(st.fence());
            }
        }
    }

    /// `ilm_set_signal`.
    pub(crate) fn set_signal(&self, signo: i32) -> Result<(), i32> {
        if !(1..=64).contains(&signo) {
            return Err(errno::EINVAL);
        }
        let mut st = lock(&self.state);
        st.signal = Some(signo);
        self.refence(&st);
        Ok(())
    }

    /// `ilm_set_killpath`: `args` split on white space.
    pub(crate) fn set_killpath(&self, path: String, args: String) -> Result<(), i32> {
        if path.is_empty() {
            return Err(errno::EINVAL);
        }
        if path.len() >= crate::abi::IDM_FAILURE_PATH_LEN
            || args.len() >= crate::abi::IDM_FAILURE_ARGS_LEN
        {
            return Err(errno::E2BIG);
        }
        let args = args.split_whitespace().map(str::to_string).collect();
        let mut st = lock(&self.state);
        st.killpath = Some((PathBuf::from(path), args));
        self.refence(&st);
        Ok(())
    }

    /// `ilm_set_host_id`: 1..=32 bytes, zero-padded. `EBUSY` while locks are held.
    pub(crate) fn set_host_id(&self, id: &[u8]) -> Result<(), i32> {
        if id.is_empty() || id.len() > HostId::LEN {
            return Err(errno::EINVAL);
        }
        let mut b = [0u8; HostId::LEN];
        b[..id.len()].copy_from_slice(id);
        let mut st = lock(&self.state);
        if st.host_id.0 == b {
            return Ok(());
        }
        if st.busy() {
            return Err(errno::EBUSY);
        }
        st.host_id = HostId(b);
        let old = st.space.take();
        drop(st);
        drop(old);
        Ok(())
    }

    /// `ilm_stop_renew` / `ilm_start_renew`.
    pub(crate) fn set_renew(&self, on: bool) {
        let mut st = lock(&self.state);
        st.renew_stopped = !on;
        if let Some(Ok(ls)) = st.space.as_ref().map(|s| s.ls()) {
            if on {
                ls.start_renew();
            } else {
                ls.stop_renew();
            }
        }
    }

    /// `ilm_inject_fault`.
    pub(crate) fn inject_fault(&self, pct: i32) -> Result<(), i32> {
        let pct = u32::try_from(pct).map_err(|_| errno::EINVAL)?;
        if pct > 100 {
            return Err(errno::EINVAL);
        }
        // Host-wide, as the old daemon's knob was: every process linking this
        // library (lvmlockd among them) follows it within 100 ms.
        if let Err(e) = idm_engine::api::host_faults::set_percent(pct) {
            tracing::warn!(error = %e, path = %idm_engine::api::host_faults::path().display(), "host-wide fault injection file not written: only this handle is affected");
        }
        let mut st = lock(&self.state);
        st.fault_pct = pct;
        if let Some(s) = &st.space {
            s.ls()?
                .inject_fault(pct)
                .map_err(|e| engine_err("inject_fault", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_and_modes() {
        let min = Timing::default().min_lease();
        assert_eq!(min, Duration::from_secs(4));
        assert_eq!(lease_of(0, min), Ok(DEFAULT_LEASE));
        assert_eq!(lease_of(60000, min), Ok(Duration::from_secs(60)));
        assert_eq!(lease_of(4000, min), Ok(Duration::from_secs(4)));
        assert_eq!(lease_of(3999, min), Err(errno::EINVAL));
        assert_eq!(lease_of(-1, min), Err(errno::EINVAL));
        assert_eq!(lease_of(10, min), Err(errno::EINVAL));
        assert_eq!(mode_of(1), Ok(Mode::Exclusive));
        assert_eq!(mode_of(2), Ok(Mode::Shared));
        assert_eq!(mode_of(0), Err(errno::EINVAL));
        assert_eq!(mode_of(3), Err(errno::EINVAL));
    }

    #[test]
    fn timing_from_settings_and_deadlines_within_the_lease() {
        assert_eq!(Timing::parse(None, None), Timing::default());
        let t = Timing::parse(Some(" 250 "), Some("100"));
        assert_eq!(t.lock_wait, Duration::from_millis(250));
        assert_eq!(t.command_timeout, Duration::from_millis(100));
        // The absolute floor applies when commands are quick.
        assert_eq!(t.min_lease(), MIN_LEASE);
        // Bad values fall back to the defaults; tiny command timeouts are raised.
        let bad = Timing::parse(Some("soon"), Some("9999999"));
        assert_eq!(bad, Timing::default());
        assert_eq!(
            Timing::parse(None, Some("1")).command_timeout,
            Duration::from_millis(10)
        );
        // lvmlockd's lease: the wait as set; a short lease caps it at lease / 2.
        let d = Timing::default();
        let o = d.lock_options(DEFAULT_LEASE);
        assert_eq!((o.timeout, o.no_wait), (DEFAULT_LOCK_WAIT, false));
        let o = d.lock_options(Duration::from_secs(4));
        assert_eq!((o.timeout, o.no_wait), (Duration::from_secs(2), false));
        // No wait: busy at once, unresponsive drives still bounded by lease / 2.
        let nw = Timing::parse(Some("0"), None);
        let o = nw.lock_options(DEFAULT_LEASE);
        assert_eq!((o.timeout, o.no_wait), (OP_TIMEOUT, true));
        let o = nw.lock_options(Duration::from_secs(4));
        assert_eq!((o.timeout, o.no_wait), (Duration::from_secs(2), true));
    }
}
