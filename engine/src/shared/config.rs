//! Configuration of the engine and its lockspaces, with the defaults a host gets
//! when it says nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use uring_sg::transport::Transport;
use uring_sg::HostId;

use super::error::EngineError;
use crate::watchdog::WatchdogConfig;

/// Opens the paths of one drive, as named by a caller, for one reactor.
///
/// Each reactor opens every drive it uses once and keeps it. `client` names the
/// reactor (the simulator uses it to log and to cut one client off a drive).
/// Several transports for one drive are several paths to it (multipath): the
/// reactor fails over to the next on an I/O error.
pub trait DriveOpener: Send + Sync {
    /// Opens every path of drive `name`.
    fn open(&self, name: &str, client: &str) -> Result<Vec<Box<dyn Transport>>, EngineError>;

    /// Whether the reactors' rings must take 128-byte entries (`uring_cmd`
    /// transports: NVMe, bsg).
    fn needs_sqe128(&self) -> bool {
        false
    }
}

/// How the engine is built. Start from `EngineConfig::default()`.
#[derive(Clone)]
pub struct EngineConfig {
    /// Reactor threads; default one per core, at most 4.
    pub reactors: usize,
    /// Requests queued per reactor before callers block (bounded channel).
    pub queue_depth: usize,
    /// How long one drive command may take before it counts as an I/O error.
    pub command_timeout: Duration,
    /// io_uring SQ entries per reactor.
    pub ring_entries: u32,
    /// How drives are opened.
    pub opener: Arc<dyn DriveOpener>,
    /// A name for logs and for the simulator's client names.
    pub name: String,
    /// Seed for backoff jitter (replayable runs); default from the clock.
    pub seed: u64,
    /// Watchdog fencing ([`crate::watchdog`]); default off. One watchdog (one
    /// device) per engine, covering every lock of every lockspace.
    pub watchdog: WatchdogConfig,
}

impl EngineConfig {
    /// The default configuration, opening drives with `opener`.
    pub fn new(opener: Arc<dyn DriveOpener>) -> EngineConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        EngineConfig {
            reactors: cores.clamp(1, 4),
            queue_depth: 4096,
            command_timeout: Duration::from_secs(5),
            ring_entries: 1024,
            opener,
            name: format!("idm-{}", std::process::id()),
            seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            watchdog: WatchdogConfig::default(),
        }
    }
}

/// What a lockspace does when its leases are about to lapse (fencing).
#[derive(Clone)]
pub enum FenceAction {
    /// Only log and refuse new work (for tests and for callers who poll).
    None,
    /// Send `signal` to process `pid` (lvmlockd's `ilm_set_signal`).
    Signal {
        /// The process to signal.
        pid: i32,
        /// The signal number.
        signal: i32,
    },
    /// Run `program` with `args` (lvmlockd's kill path, e.g. `lvmlockctl --kill vg`).
    KillPath {
        /// The program.
        program: PathBuf,
        /// Its arguments.
        args: Vec<String>,
    },
    /// Call a Rust function (on the reactor thread: keep it short).
    Callback(Arc<dyn Fn(&str) + Send + Sync>),
}

impl std::fmt::Debug for FenceAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FenceAction::None => write!(f, "None"),
            FenceAction::Signal { pid, signal } => write!(f, "Signal({pid}, {signal})"),
            FenceAction::KillPath { program, args } => write!(f, "KillPath({program:?} {args:?})"),
            FenceAction::Callback(_) => write!(f, "Callback"),
        }
    }
}

/// How a lockspace is built. Start from [`LockspaceConfig::new`].
#[derive(Clone, Debug)]
pub struct LockspaceConfig {
    /// The lockspace's name (lvmlockd: the VG name).
    pub name: String,
    /// This host's ID on the drives; default: stable per host ([`default_host_id`]).
    pub host_id: HostId,
    /// Membership countdown sent to the drives: how long a lock survives without
    /// renewal. Default 60 s (lvmlockd's value).
    pub lease: Duration,
    /// How often each lock is renewed; default lease / 6.
    pub renew_every: Duration,
    /// Fence this long before validity ends; default lease / 6 (so a lock that
    /// stops renewing is fenced after about 4/6 of the lease).
    pub fence_margin: Duration,
    /// Allowance for clock rate drift between host and drives; default 1% of the
    /// lease plus 10 ms (see the protocol's design note).
    pub drift_margin: Duration,
    /// What fencing does.
    pub fence: FenceAction,
    /// Refuse locks ([`EngineError::NoWatchdog`]) unless the engine's watchdog
    /// can protect them (its policy is not off and a backend can be armed for
    /// this lease); default false. An engine whose policy is
    /// [`crate::watchdog::WatchdogPolicy::Required`] requires it of every
    /// lockspace.
    pub require_watchdog: bool,
}

impl LockspaceConfig {
    /// The defaults for a lockspace called `name`.
    pub fn new(name: &str) -> LockspaceConfig {
        let lease = Duration::from_secs(60);
        LockspaceConfig {
            name: name.to_string(),
            host_id: default_host_id(),
            lease,
            renew_every: lease / 6,
            fence_margin: lease / 6,
            drift_margin: lease / 100 + Duration::from_millis(10),
            fence: FenceAction::None,
            require_watchdog: false,
        }
    }

    /// Sets the lease and scales the renewal cadence and margins with it.
    pub fn with_lease(mut self, lease: Duration) -> LockspaceConfig {
        self.lease = lease;
        self.renew_every = lease / 6;
        self.fence_margin = lease / 6;
        self.drift_margin = lease / 100 + Duration::from_millis(10);
        self
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: &str| Err(EngineError::InvalidArgument(m.to_string()));
        if self.lease.is_zero() {
            return bad("lease must be positive");
        }
        if self.renew_every.is_zero() || self.renew_every >= self.lease {
            return bad("renewal cadence must be positive and shorter than the lease");
        }
        if self.fence_margin + self.drift_margin >= self.lease {
            return bad("fence margin plus drift margin must be shorter than the lease");
        }
        if self.renew_every + self.fence_margin + self.drift_margin >= self.lease {
            return bad("a lease must survive one missed renewal before fencing (renew_every + margins < lease)");
        }
        Ok(())
    }
}

/// The host ID a lockspace gets by default: stable for this host, so a restarted
/// process takes back its own stale mutexes at once. The 32 hex characters of
/// `/etc/machine-id` when readable (exactly 32 bytes), else the host name,
/// zero-padded. Two processes on one host that must not share locks set their own.
pub fn default_host_id() -> HostId {
    let mut id = [0u8; 32];
    let src = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "idm-host".to_string());
    let b = src.as_bytes();
    let n = b.len().min(32);
    id[..n].copy_from_slice(&b[..n]);
    HostId(id)
}

/// Options of one lock call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOptions {
    /// Give up after this long (the old manager used 5 s).
    pub timeout: Duration,
    /// Return "busy" at once on live contention instead of retrying until the
    /// timeout.
    pub no_wait: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            timeout: Duration::from_secs(5),
            no_wait: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_settings_are_refused() {
        assert!(LockspaceConfig::new("vg").validate().is_ok());
        let short = LockspaceConfig::new("vg").with_lease(Duration::from_millis(600));
        assert!(short.validate().is_ok());
        let mut bad = LockspaceConfig::new("vg");
        bad.renew_every = bad.lease;
        assert!(bad.validate().is_err());
        let mut bad = LockspaceConfig::new("vg");
        bad.fence_margin = bad.lease;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn default_host_id_is_stable() {
        assert_eq!(default_host_id(), default_host_id());
        assert_ne!(default_host_id(), HostId([0; 32]));
    }
}
