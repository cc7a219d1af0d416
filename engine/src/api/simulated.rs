//! The embedded default: an array of in-process simulated IDM drives
//! ([`uring_sg::transport::mem`]), so the engine runs with no hardware, no server
//! and no configuration.

use std::sync::Arc;
use std::time::Duration;

use uring_sg::firmware::FirmwareConfig;
use uring_sg::transport::mem::{MemDrive, MemTransport};
use uring_sg::transport::Transport;

use super::{DriveOpener, Engine, EngineConfig, EngineError};

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

impl Engine {
    /// An engine on `n` in-process simulated drives (`sim0`..), with the default
    /// configuration otherwise: the embedded default of the `idm` command line,
    /// the tests and the benchmarks. [`Engine::simulated_drives`] lists the names.
    pub fn simulated(n: usize) -> Result<Engine, EngineError> {
        let array = SimArray::new(n);
        Engine::on_array(array, |_| {})
    }

    /// An engine on `array`, with `tweak` applied to the default configuration.
    pub fn on_array(
        array: Arc<SimArray>,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<Engine, EngineError> {
        let mut cfg = EngineConfig::new(array.clone());
        tweak(&mut cfg);
        let names = array.names();
        Engine::start_with(cfg, vec![Box::new(array)], names)
    }
}
