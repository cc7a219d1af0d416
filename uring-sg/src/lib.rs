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
//! - [`firmware`]: one simulated IDM drive as a pure state machine.
//! - [`transport`]: the [`transport::Transport`] trait every device path implements,
//!   shaped for a reactor that owns one io_uring.
//! - [`sim`]: the drive simulator server (framed protocol over Unix/TCP, latency,
//!   faults) and its control client.
//! - [`driver`]: a small single-threaded io_uring owner that runs transports (the
//!   command line and tests use it; the engine's reactor is its big sibling).
//!
//! See `../shared/IDM.md` §3–§6 for the reference this follows.

pub mod caps;
pub mod codec;
pub mod discovery;
pub mod driver;
pub mod firmware;
pub mod sim;
pub mod sys;
pub mod transport;

pub use codec::*;
