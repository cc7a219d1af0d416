//! What `idm lock`, `idm unlock` and `idm status` share: the lock they work on,
//! where its drives are, and the engine they open for it.

use std::sync::Arc;
use std::time::Duration;

use idm_engine::api::{DeviceOpener, Engine, EngineConfig, Lockspace, LockspaceConfig};
use idm_engine::watchdog::{WatchdogConfig, WatchdogPolicy};
use idm_sim::engine::SimEngine;
use uring_sg::{LockId, Mode};

/// The lock and its drives.
#[derive(clap::Args, Debug)]
pub struct LockTarget {
    /// Drives the lock spans: simulator drive names with `--sim`, else device
    /// paths (`/dev/sdX`, `/dev/mapper/...`, `/dev/disk/by-id/...`, `/dev/nvmeXnY`).
    #[arg(required = true)]
    pub drives: Vec<String>,
    /// Use drives on the simulator at this address (`unix:PATH`, `tcp:HOST:PORT`);
    /// without it, real devices.
    #[arg(long, env = "IDM_SIM")]
    pub sim: Option<String>,
    /// The lock's ID (text up to 64 bytes, or `hex:...`).
    #[arg(long)]
    pub lock: LockId,
    /// Time one drive command may take, ms. On Linux a drive's BUSY answer comes
    /// back as a timeout (the SCSI layer requeues BUSY), so this bounds how long
    /// taking over from an expired holder takes on real drives.
    #[arg(long, default_value_t = 5_000)]
    pub command_timeout_ms: u64,
    /// Watchdog fencing: off, auto (use wdmd or the device when present) or
    /// required (refuse the lock without one).
    #[arg(long, env = "IDM_WATCHDOG", default_value = "off")]
    pub watchdog: WatchdogPolicy,
    /// The watchdog device (default /dev/watchdog, after wdmd), or `wdmd:SOCKET`.
    #[arg(long, env = "IDM_WATCHDOG_DEVICE")]
    pub watchdog_device: Option<String>,
    /// Reset the host at least this long before the lock's validity ends, ms.
    #[arg(long, env = "IDM_WATCHDOG_MARGIN_MS")]
    pub watchdog_margin_ms: Option<u64>,
}

impl LockTarget {
    /// An engine (one reactor) on the simulator or on real devices, and a
    /// lockspace in it built from `cfg`. The lockspace keeps the engine running.
    pub fn open(&self, cfg: LockspaceConfig) -> Result<Lockspace, String> {
        let timeout = Duration::from_millis(self.command_timeout_ms.max(1));
        let margin = self.watchdog_margin_ms.map(|m| m.to_string());
        let mut wd =
            WatchdogConfig::parse(None, self.watchdog_device.as_deref(), margin.as_deref())?;
        wd.policy = self.watchdog;
        let engine = match &self.sim {
            Some(addr) => Engine::on_sim_server(addr, |c| {
                c.reactors = 1;
                c.command_timeout = timeout;
                c.watchdog = wd;
            }),
            None => {
                let mut c = EngineConfig::new(Arc::new(DeviceOpener::new()));
                c.reactors = 1;
                c.command_timeout = timeout;
                c.watchdog = wd;
                Engine::start(c)
            }
        }
        .map_err(|e| format!("cannot start the engine: {e}"))?;
        engine.lockspace(cfg).map_err(|e| e.to_string())
    }
}

/// Parses `ex`/`sh`.
pub fn parse_mode(s: &str) -> Result<Mode, String> {
    match s.to_ascii_lowercase().as_str() {
        "ex" | "exclusive" => Ok(Mode::Exclusive),
        "sh" | "shared" => Ok(Mode::Shared),
        _ => Err(format!("mode must be ex or sh, not {s:?}")),
    }
}
