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

mod devices;
mod engine;
mod lockspace;
mod stats;

pub use crate::locks::OpKind;
pub use crate::shared::host_faults;
pub use crate::shared::{
    default_host_id, DriveHealth, DriveOpener, EngineConfig, EngineError, FenceAction, LockOptions,
    LockspaceConfig, ReactorStats,
};
pub use devices::DeviceOpener;
pub use engine::Engine;
pub use lockspace::{Lockspace, OpFuture};
pub use stats::{EngineStats, OpSummary};
