//! The types the caller side ([`crate::api`]) and the reactors share, below both:
//! configuration (how drives are opened, how lockspaces behave), the engine's
//! error, the messages a caller sends a reactor and what comes back, the part of a
//! lockspace its reactors share, statistics, and the host-wide fault knob.
//!
//! `api` starts reactors and talks to them through these types; the reactor
//! imports nothing from `api`. The public ones are re-exported by [`crate::api`].

pub(crate) mod config;
pub(crate) mod error;
pub mod host_faults;
pub(crate) mod lockspace;
pub(crate) mod msg;
pub(crate) mod stats;

pub use config::{
    default_host_id, DriveOpener, EngineConfig, FenceAction, LockOptions, LockspaceConfig,
};
pub use error::EngineError;
pub use lockspace::LockspaceShared;
pub use stats::{DriveHealth, ReactorStats};
