//! Drives on a simulator server (`idm sim`), reached over its Unix or TCP socket.
//!
//! Each reactor opens one connection per drive it uses (as it would open a device
//! node once), named `<engine>/r<reactor>` so the simulator's per-client faults
//! ("cut this host off that drive") apply to it.

use idm_engine::api::{DriveOpener, EngineError};
use uring_sg::transport::Transport;

use crate::transport::sim::SimTransport;
use crate::ListenAddr;

/// Opens drives by name on the simulator at one address.
#[derive(Clone, Debug)]
pub struct SimServerOpener {
    addr: ListenAddr,
}

impl SimServerOpener {
    /// Drives on the simulator at `addr`.
    pub fn new(addr: ListenAddr) -> SimServerOpener {
        SimServerOpener { addr }
    }

    /// Parses `unix:PATH` or `tcp:HOST:PORT` (the form of `IDM_SIM`).
    pub fn parse(addr: &str) -> Result<SimServerOpener, EngineError> {
        addr.parse::<ListenAddr>()
            .map(SimServerOpener::new)
            .map_err(|e| EngineError::InvalidArgument(format!("simulator address {addr:?}: {e}")))
    }

    /// The simulator's address.
    pub fn addr(&self) -> &ListenAddr {
        &self.addr
    }
}

impl DriveOpener for SimServerOpener {
    fn open(&self, name: &str, client: &str) -> Result<Vec<Box<dyn Transport>>, EngineError> {
        let t =
            SimTransport::connect(&self.addr, client, name).map_err(|e| EngineError::Drive {
                drive: name.to_string(),
                reason: format!("simulator {}: {e}", self.addr),
            })?;
        Ok(vec![Box::new(t)])
    }
}
