//! [`Engine`]: the reactor threads and the way requests reach them.

use std::any::Any;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam::channel::{bounded, Sender};
use uring_sg::LockId;

use super::{EngineConfig, EngineError, EngineStats, Lockspace, LockspaceConfig};
use crate::completion::pair;
use crate::reactor::wake::Wake;
use crate::reactor::{Reactor, ReactorConfig};
use crate::shared::msg::Msg;
use crate::shared::{LockspaceShared, ReactorStats};
use crate::watchdog::{Watchdog, WatchdogState};

/// One reactor as the callers see it: its queue and its wake-up.
pub(crate) struct ReactorHandle {
    tx: Sender<Msg>,
    wake: Arc<Wake>,
}

impl ReactorHandle {
    /// Queues `msg` (blocking while the queue is full) and wakes the reactor.
    pub(crate) fn send(&self, msg: Msg) -> Result<(), EngineError> {
        self.tx.send(msg).map_err(|_| EngineError::Stopped)?;
        self.wake.notify();
        Ok(())
    }
}

/// The running engine's shared part.
pub(crate) struct Inner {
    pub(crate) reactors: Vec<ReactorHandle>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_lockspace: AtomicU32,
    /// What the caller asked to live as long as the engine ([`Engine::start_keeping`]).
    keep: Option<Box<dyn Any + Send + Sync>>,
    /// The watchdog, unless its policy is off.
    pub(crate) watchdog: Option<Watchdog>,
}

impl Inner {
    /// The reactor that owns lock `id` (a hash of the ID; stable for the engine's life).
    pub(crate) fn reactor_for(&self, id: &LockId) -> &ReactorHandle {
        // FNV-1a over the 64 bytes: cheap and spreads lvmlockd's UUID-shaped IDs.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        &self.reactors[(h % self.reactors.len() as u64) as usize]
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for r in &self.reactors {
            let _ = r.send(Msg::Stop);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        // After the reactors' last publications: disarmed when nothing is held.
        if let Some(w) = &self.watchdog {
            w.stop();
        }
    }
}

/// The lock engine: reactor threads, each owning an io_uring and the locks hashed
/// to it. Cheap to clone (a handle); the reactors stop when the last handle and
/// the last [`Lockspace`] are gone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl Engine {
    /// Starts an engine with `cfg`.
    pub fn start(cfg: EngineConfig) -> Result<Engine, EngineError> {
        Engine::start_inner(cfg, None)
    }

    /// Starts an engine with `cfg` that keeps `keep` alive as long as it runs (the
    /// reactors stop before it is dropped) and hands it back through
    /// [`Engine::kept`]. The hook for whatever serves the drives of
    /// [`EngineConfig::opener`] from inside the process: the simulator crate
    /// (`idm-sim`) keeps its in-process drives or its server thread here.
    pub fn start_keeping(
        cfg: EngineConfig,
        keep: Box<dyn Any + Send + Sync>,
    ) -> Result<Engine, EngineError> {
        Engine::start_inner(cfg, Some(keep))
    }

    fn start_inner(
        cfg: EngineConfig,
        keep: Option<Box<dyn Any + Send + Sync>>,
    ) -> Result<Engine, EngineError> {
        if cfg.reactors == 0 || cfg.reactors > 256 {
            return Err(EngineError::InvalidArgument(format!(
                "reactors must be 1..=256, not {}",
                cfg.reactors
            )));
        }
        let watchdog = Watchdog::start(cfg.watchdog.clone(), cfg.reactors, &cfg.name)
            .map_err(|e| EngineError::Start(format!("watchdog thread: {e}")))?;
        let mut reactors = Vec::new();
        let mut threads = Vec::new();
        for index in 0..cfg.reactors {
            let (tx, rx) = bounded(cfg.queue_depth.max(1));
            let wake = Wake::new().map_err(|e| EngineError::Start(format!("eventfd: {e}")))?;
            let rcfg = ReactorConfig {
                index,
                client: format!("{}/r{index}", cfg.name),
                command_timeout: cfg.command_timeout,
                ring_entries: cfg.ring_entries,
                seed: cfg.seed,
                opener: cfg.opener.clone(),
                validity: watchdog.as_ref().map(|w| w.publisher(index)),
            };
            // The ring is made on the reactor's own thread; its success or
            // failure comes back before start returns.
            let (ready_tx, ready_rx) = bounded::<Result<(), String>>(1);
            let w = wake.clone();
            let t = std::thread::Builder::new()
                .name(format!("idm-reactor-{index}"))
                .spawn(move || match Reactor::new(rcfg, rx, w) {
                    Ok(r) => {
                        let _ = ready_tx.send(Ok(()));
                        r.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("io_uring setup: {e}")));
                    }
                })
                .map_err(|e| EngineError::Start(format!("thread: {e}")))?;
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(EngineError::Start(e)),
                Err(_) => return Err(EngineError::Start("reactor thread died".into())),
            }
            reactors.push(ReactorHandle { tx, wake });
            threads.push(t);
        }
        tracing::debug!(reactors = cfg.reactors, name = %cfg.name, "engine started");
        Ok(Engine {
            inner: Arc::new(Inner {
                reactors,
                threads: Mutex::new(threads),
                next_lockspace: AtomicU32::new(1),
                keep,
                watchdog,
            }),
        })
    }

    /// Opens a lockspace: a host ID, a lease, a renewal cadence and a fencing
    /// action shared by the locks taken through it.
    pub fn lockspace(&self, cfg: LockspaceConfig) -> Result<Lockspace, EngineError> {
        cfg.validate()?;
        let id = self.inner.next_lockspace.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(LockspaceShared::new(id, cfg));
        for r in &self.inner.reactors {
            r.send(Msg::AddLockspace(shared.clone()))?;
        }
        Ok(Lockspace::new(self.clone(), shared))
    }

    /// Statistics merged over every reactor.
    pub fn stats(&self) -> Result<EngineStats, EngineError> {
        let mut total = ReactorStats::new();
        let mut waits = Vec::new();
        for r in &self.inner.reactors {
            let (c, p) = pair(|| None);
            r.send(Msg::Stats(c))?;
            waits.push(p);
        }
        for p in waits {
            let s = p.wait().ok_or(EngineError::Stopped)?;
            total.merge(&s);
        }
        Ok(EngineStats {
            reactors: self.inner.reactors.len(),
            total,
        })
    }

    /// What [`Engine::start_keeping`] keeps alive (`None` after [`Engine::start`]).
    pub fn kept(&self) -> Option<&(dyn Any + Send + Sync)> {
        self.inner.keep.as_deref()
    }

    /// Reactor threads.
    pub fn reactors(&self) -> usize {
        self.inner.reactors.len()
    }

    /// What the engine's watchdog is doing (`None`: policy off).
    pub fn watchdog(&self) -> Option<WatchdogState> {
        self.inner.watchdog.as_ref().map(Watchdog::state)
    }
}
