//! The embedded default: an array of in-process simulated IDM drives
//! ([`crate::transport::mem`]), so the engine runs with no hardware, no server
//! and no configuration.

use std::sync::Arc;
use std::time::Duration;

use idm_engine::api::{DriveOpener, EngineError};
use uring_sg::transport::Transport;

use crate::firmware::FirmwareConfig;
use crate::transport::mem::{MemDrive, MemTransport};

/// A set of in-process drives, named `sim0`, `sim1`...
pub struct SimArray {
    drives: Vec<Arc<MemDrive>>,
    latency: Option<Arc<dyn Fn() -> Duration + Send + Sync>>,
}

impl SimArray {
    /// `n` drives with the default firmware.
    pub fn new(n: usize) -> Arc<SimArray> {
        SimArray::with_firmware(n, FirmwareConfig::default(), None)
    }

    /// `n` drives with firmware `cfg`, answering after `latency()` if given.
    pub fn with_firmware(
        n: usize,
        cfg: FirmwareConfig,
        latency: Option<Arc<dyn Fn() -> Duration + Send + Sync>>,
    ) -> Arc<SimArray> {
        Arc::new(SimArray {
            drives: (0..n)
                .map(|i| MemDrive::new(&format!("sim{i}"), cfg))
                .collect(),
            latency,
        })
    }

    /// The drive called `name`.
    pub fn drive(&self, name: &str) -> Option<&Arc<MemDrive>> {
        self.drives.iter().find(|d| d.name() == name)
    }

    /// Every drive, in order.
    pub fn drives(&self) -> &[Arc<MemDrive>] {
        &self.drives
    }

    /// The drives' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.drives.iter().map(|d| d.name().to_string()).collect()
    }
}

impl DriveOpener for SimArray {
    fn open(&self, name: &str, _client: &str) -> Result<Vec<Box<dyn Transport>>, EngineError> {
        let drive = self.drive(name).ok_or_else(|| EngineError::Drive {
            drive: name.to_string(),
            reason: format!(
                "no such simulated drive (this array has {})",
                self.names().join(", ")
            ),
        })?;
        let mut t = MemTransport::new(drive.clone());
        if let Some(l) = &self.latency {
            let l = l.clone();
            t = t.with_latency(Box::new(move || l()));
        }
        Ok(vec![Box::new(t)])
    }
}
