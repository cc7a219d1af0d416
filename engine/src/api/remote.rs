//! Drives on a simulator server (`idm sim`), reached over its Unix or TCP socket.
//!
//! Each reactor opens one connection per drive it uses (as it would open a device
//! node once), named `<engine>/r<reactor>` so the simulator's per-client faults
//! ("cut this host off that drive") apply to it.

use uring_sg::sim::{ListenAddr, SimConfig, SimHandle};
use uring_sg::transport::sim::SimTransport;
use uring_sg::transport::Transport;

use super::{DriveOpener, Engine, EngineConfig, EngineError};

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

impl Engine {
    /// An engine whose drives live on the simulator at `addr` (`unix:PATH` or
    /// `tcp:HOST:PORT`), with `tweak` applied to the default configuration.
    pub fn on_sim_server(
        addr: &str,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<Engine, EngineError> {
        let opener = std::sync::Arc::new(SimServerOpener::parse(addr)?);
        let mut cfg = EngineConfig::new(opener);
        tweak(&mut cfg);
        Engine::start(cfg)
    }

    /// An engine on a simulator server it starts itself (in this process, on its
    /// own thread, listening on `addrs`) with `sim` drives. The server stops with
    /// the engine. Benchmarks use this to compare the engine and the old stack's
    /// algorithm through the very same server.
    pub fn with_sim_server(
        sim: SimConfig,
        addrs: &[ListenAddr],
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<(Engine, Vec<ListenAddr>), EngineError> {
        let names = sim.drives.clone();
        let handle = SimHandle::start(sim, addrs)
            .map_err(|e| EngineError::Start(format!("simulator: {e}")))?;
        let bound = handle.addrs().to_vec();
        let first = bound
            .first()
            .cloned()
            .ok_or_else(|| EngineError::Start("simulator listens nowhere".into()))?;
        let mut cfg = EngineConfig::new(std::sync::Arc::new(SimServerOpener::new(first)));
        tweak(&mut cfg);
        let engine = Engine::start_with(cfg, vec![Box::new(handle)], names)?;
        Ok((engine, bound))
    }
}
