//! The simulator's client side: two [`uring_sg::transport::Transport`]s, shaped like
//! the device transports of `uring-sg` so the engine's reactor runs them unchanged.
//!
//! - [`mem`]: drives in this process ([`mem::MemDrive`], one
//!   [`crate::firmware::Firmware`] each), answered through an io_uring NOP.
//! - [`sim`]: the socket to an `idm sim` server ([`sim::SimTransport`]).

pub mod mem;
pub mod sim;
