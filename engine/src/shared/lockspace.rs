//! [`LockspaceShared`]: the part of a lockspace that its reactors share with its
//! handle (identity, lease policy, fencing), and its [`crate::locks::LockspaceCtl`]
//! face for the lock table.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uring_sg::HostId;

use super::config::{FenceAction, LockspaceConfig};
use crate::fencing::LeasePolicy;
use crate::locks::LockspaceId;
use crate::time::Nanos;

/// The part of a lockspace its reactors share: identity, lease policy, fencing.
#[derive(Debug)]
pub struct LockspaceShared {
    /// Engine-unique id.
    pub id: LockspaceId,
    /// The caller's name for it.
    pub name: String,
    /// Host ID sent to the drives (read when a lock is created).
    pub host_id: HostId,
    /// Membership countdown sent with every grant and refresh, ms.
    pub lease_ms: u64,
    /// Renewal and fencing arithmetic.
    pub policy: LeasePolicy,
    /// Fenced: takes no new work.
    pub fenced: AtomicBool,
    /// Renewals paused (`ilm_stop_renew`): leases lapse and fencing fires first.
    pub renew_paused: AtomicBool,
    /// Share (percent) of drive commands that fail with EIO (`ilm_inject_fault`).
    pub fault_pct: AtomicU32,
    /// Locks are refused unless the engine's watchdog can protect them.
    pub require_watchdog: bool,
    fence: Mutex<FenceAction>,
}

impl LockspaceShared {
    /// The shared state of a lockspace built from `cfg`.
    pub fn new(id: LockspaceId, cfg: LockspaceConfig) -> LockspaceShared {
        let n = |d: Duration| Nanos(d.as_nanos().min(u64::MAX as u128) as u64);
        LockspaceShared {
            id,
            name: cfg.name,
            host_id: cfg.host_id,
            lease_ms: cfg.lease.as_millis().min(u128::from(u64::MAX)) as u64,
            policy: LeasePolicy {
                lease: n(cfg.lease),
                renew_every: n(cfg.renew_every),
                fence_margin: n(cfg.fence_margin),
                drift_margin: n(cfg.drift_margin),
            },
            fenced: AtomicBool::new(false),
            renew_paused: AtomicBool::new(false),
            fault_pct: AtomicU32::new(0),
            require_watchdog: cfg.require_watchdog,
            fence: Mutex::new(cfg.fence),
        }
    }

    /// Runs the fencing action. A kill path runs on its own thread so the reactor
    /// never waits for it.
    pub fn run_fence_action(&self) {
        let action = self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match action {
            FenceAction::None => {}
            FenceAction::Signal { pid, signal } => {
                let sig = nix::sys::signal::Signal::try_from(signal);
                match sig {
                    Ok(sig) => {
                        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
                        {
                            tracing::error!(pid, signal, error = %e, "fencing signal failed");
                        }
                    }
                    Err(e) => tracing::error!(signal, error = %e, "fencing signal invalid"),
                }
            }
            FenceAction::KillPath { program, args } => {
                let name = self.name.clone();
                let spawned = std::thread::Builder::new()
                    .name("idm-killpath".into())
                    .spawn(move || {
                        match std::process::Command::new(&program).args(&args).status() {
                            Ok(s) if s.success() => {}
                            Ok(s) => tracing::error!(lockspace = %name, ?program, %s, "kill path failed"),
                            Err(e) => tracing::error!(lockspace = %name, ?program, error = %e, "kill path could not run"),
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "could not start the kill path thread");
                }
            }
            FenceAction::Callback(f) => f(&self.name),
        }
    }

    /// Replaces the fencing action.
    pub fn set_fence_action(&self, action: FenceAction) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = action;
    }
}

impl crate::locks::LockspaceCtl for Arc<LockspaceShared> {
    fn name(&self) -> &str {
        &self.name
    }
    fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }
    fn mark_fenced(&self) -> bool {
        !self.fenced.swap(true, Ordering::SeqCst)
    }
    fn renew_paused(&self) -> bool {
        self.renew_paused.load(Ordering::SeqCst)
    }
    fn fault_percent(&self) -> u32 {
        self.fault_pct
            .load(Ordering::Relaxed)
            .max(super::host_faults::percent())
    }
}
