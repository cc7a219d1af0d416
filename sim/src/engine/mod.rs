//! The engine on simulated drives.
//!
//! `idm-engine` knows nothing about the simulator: it opens drives through an
//! [`idm_engine::api::DriveOpener`] and keeps one opaque value alive for as long as
//! it runs ([`Engine::start_keeping`]). This module builds the simulator's engines on
//! those two hooks:
//!
//! - [`SimArray`]: in-process drives (`sim0`, `sim1`...), the embedded default of the
//!   `idm` command line, the tests and the benchmarks;
//! - [`SimServerOpener`]: drives of an `idm sim` server, reached over its socket;
//! - [`SimEngine`]: the constructors, as an extension trait of [`Engine`] (import it
//!   and write `Engine::simulated(3)`), and [`SimEngine::simulated_drives`].
//!
//! ```no_run
//! use idm_engine::api::{Engine, LockOptions, LockspaceConfig};
//! use idm_sim::engine::SimEngine;
//! use uring_sg::Mode;
//!
//! let engine = Engine::simulated(3)?;
//! let ls = engine.lockspace(LockspaceConfig::new("vg0"))?;
//! let drives = engine.simulated_drives();
//! ls.lock("vg0-lv0".parse()?, Mode::Exclusive, &drives, LockOptions::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod array;
mod remote;

use std::sync::Arc;

use idm_engine::api::{Engine, EngineConfig, EngineError};

pub use array::SimArray;
pub use remote::SimServerOpener;

use crate::{ListenAddr, SimConfig, SimHandle};

/// What a simulated engine keeps alive ([`Engine::start_keeping`]): the drives'
/// names, and the in-process array or the server thread behind them.
struct Kept {
    names: Vec<String>,
    _array: Option<Arc<SimArray>>,
    _server: Option<SimHandle>,
}

/// The simulator's constructors of [`Engine`], and the names of its drives.
pub trait SimEngine: Sized {
    /// An engine on `n` in-process simulated drives (`sim0`..), with the default
    /// configuration otherwise. [`SimEngine::simulated_drives`] lists the names.
    fn simulated(n: usize) -> Result<Self, EngineError>;

    /// An engine on `array`, with `tweak` applied to the default configuration.
    fn on_array(
        array: Arc<SimArray>,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<Self, EngineError>;

    /// An engine whose drives live on the simulator at `addr` (`unix:PATH` or
    /// `tcp:HOST:PORT`), with `tweak` applied to the default configuration.
    fn on_sim_server(
        addr: &str,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<Self, EngineError>;

    /// An engine on a simulator server it starts itself (in this process, on its
    /// own thread, listening on `addrs`) with `sim` drives, and the addresses the
    /// server bound. The server stops with the engine. Benchmarks use this to
    /// compare the engine and the old stack's algorithm through the very same
    /// server.
    fn with_sim_server(
        sim: SimConfig,
        addrs: &[ListenAddr],
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<(Self, Vec<ListenAddr>), EngineError>;

    /// Names of the drives of the embedded simulator ([`SimEngine::simulated`],
    /// [`SimEngine::on_array`], [`SimEngine::with_sim_server`]); empty otherwise.
    fn simulated_drives(&self) -> Vec<String>;
}

impl SimEngine for Engine {
    fn simulated(n: usize) -> Result<Engine, EngineError> {
        Engine::on_array(SimArray::new(n), |_| {})
    }

    fn on_array(
        array: Arc<SimArray>,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<Engine, EngineError> {
        let mut cfg = EngineConfig::new(array.clone());
        tweak(&mut cfg);
        let kept = Kept {
            names: array.names(),
            _array: Some(array),
            _server: None,
        };
        Engine::start_keeping(cfg, Box::new(kept))
    }

    fn on_sim_server(
        addr: &str,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<Engine, EngineError> {
        let opener = Arc::new(SimServerOpener::parse(addr)?);
        let mut cfg = EngineConfig::new(opener);
        tweak(&mut cfg);
        Engine::start(cfg)
    }

    fn with_sim_server(
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
        let mut cfg = EngineConfig::new(Arc::new(SimServerOpener::new(first)));
        tweak(&mut cfg);
        let kept = Kept {
            names,
            _array: None,
            _server: Some(handle),
        };
        let engine = Engine::start_keeping(cfg, Box::new(kept))?;
        Ok((engine, bound))
    }

    fn simulated_drives(&self) -> Vec<String> {
        self.kept()
            .and_then(|k| k.downcast_ref::<Kept>())
            .map(|k| k.names.clone())
            .unwrap_or_default()
    }
}
