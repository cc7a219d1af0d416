//! The engine's Rust API: [`Engine`], [`Lockspace`], their configuration, errors
//! and statistics.
//!
//! ```no_run
//! use std::time::Duration;
//! use idm_engine::api::{Engine, LockOptions, LockspaceConfig};
//! use idm_sim::engine::SimEngine; // the simulator's constructors (crate idm-sim)
//! use uring_sg::Mode;
//!
//! let engine = Engine::simulated(3)?;            // in-process simulator, drives sim0..sim2
//! let ls = engine.lockspace(LockspaceConfig::new("vg0"))?;
//! let drives = engine.simulated_drives();
//! let id = "vg0-lv0".parse()?;
//! ls.lock(id, Mode::Exclusive, &drives, LockOptions::default())?;
//! ls.write_lvb(id, uring_sg::Lvb::from_u64(42))?;
//! ls.unlock(id)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod devices;
mod engine;
mod error;
pub mod host_faults;
mod lockspace;
mod stats;

pub use config::{
    default_host_id, DriveOpener, EngineConfig, FenceAction, LockOptions, LockspaceConfig,
};
pub use devices::DeviceOpener;
pub use engine::Engine;
pub use error::EngineError;
pub use lockspace::{Lockspace, LockspaceShared, OpFuture};
pub use stats::{EngineStats, OpSummary};
