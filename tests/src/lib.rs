//! # idm-tests: deterministic simulation of the IDM quorum protocol
//!
//! Several hosts run the real `idm-engine` operations (acquire, renew, release)
//! against simulated drives (the `idm-sim` firmware model behind the real byte
//! path) over simulated links, in virtual time, under a seeded fault schedule; a
//! checker watches the invariants continuously. One seed replays bit-identically.
//!
//! - [`world`]: virtual time, drifting clocks, the event queue.
//! - [`net`]: per (host, drive) links: latency, loss, late replies, partitions.
//! - [`drive`]: a simulated drive (firmware + clock + stalls + power cycles).
//! - [`host`]: a simulated host running the protocol on its locks.
//! - [`faults`]: fault profiles and the seeded fault draw.
//! - [`checker`]: the invariants.
//! - [`run`]: one run from a seed: [`run::run`] → [`run::RunReport`].
//!
//! The `idm-soak` binary runs many seeds; `tests/simulation.rs` runs a fixed set.
//!
//! Apart from the simulation, [`chaos`] is the chaos test with real processes
//! (the `idm-chaos` binary, `tests/chaos.rs`): C clients linking the installed
//! `libseagate_ilm` on an `idm sim` server, killed, paused and faulted.

pub mod chaos;
pub mod checker;
pub mod drive;
pub mod faults;
pub mod host;
pub mod net;
pub mod run;
pub mod world;

pub use checker::{Violation, ViolationKind};
pub use faults::FaultProfile;
pub use host::Bug;
pub use run::{run, run_with, RunOptions, RunReport};
