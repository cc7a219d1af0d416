//! # uring-sg: the wire between an IDM host and its drives
//!
//! This crate owns everything that is about bytes and devices, and nothing about
//! quorum or locks across drives:
//!
//! - [`codec`]: the IDM wire format: typed identifiers, CDBs, the 512-byte mutex
//!   record, the version page, NVMe admin vendor commands, and [`DriveError`], the
//!   one error type every drive answer is decoded into (SCSI status + sense, or
//!   NVMe status).
//!
//! - [`sys`]: the kernel's passthrough structs (sg v3, bsg, NVMe admin), with
//!   their layouts checked by tests.
//! - [`transport`]: the [`transport::Transport`] trait every device path implements,
//!   shaped for a reactor that owns one io_uring, and the device transports (sg v3
//!   over io_uring, bsg `uring_cmd`, NVMe admin `uring_cmd`).
//! - [`driver`]: a small single-threaded io_uring owner that runs transports (the
//!   command line and tests use it; the engine's reactor is its big sibling).
//! - [`discovery`]: block path to sg/bsg/ng node, WWN, multipath.
//! - [`caps`]: what the running kernel offers (io_uring opcodes, bsg, NVMe).
//!
//! The drive simulator (firmware model, server, iSCSI target, the in-process and
//! socket transports) is the `idm-sim` crate, so that nothing production links
//! depends on serde, serde_json or rand.
//!
//! **Why the name.** The crate is what its name says: the io_uring + SCSI generic
//! (and bsg/NVMe passthrough) wire between a host and its drives. It kept the name
//! when the simulator moved out because it holds exactly that, and renaming it
//! would churn every `uring_sg::` import of the workspace for nothing.
//!
//! See `../shared/IDM.md` §3–§6 for the reference this follows.

pub mod caps;
pub mod codec;
pub mod discovery;
pub mod driver;
pub mod sys;
pub mod transport;

pub use codec::*;
