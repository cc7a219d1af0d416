//! # idm-engine: quorum locking over IDM drives
//!
//! A lock spans N drives that each keep a table of mutexes in firmware; the lock
//! is held when ⌊N/2⌋+1 drives granted it (`../shared/IDM.md` §7). This crate is
//! the host side of that protocol, built sans-IO (ARCHITECTURE.md principle 1):
//!
//! - [`protocol`]: one state machine per lock operation (acquire, release, renew,
//!   convert, read LVB, host count, mode, destroy) behind the [`protocol::Operation`]
//!   trait. They take `(now, drive reply)` and emit drive commands
//!   ([`uring_sg::transport::Request`]) and timers. The contract with the reactor
//!   that runs them is in the [`protocol`] module docs.
//! - [`lease`]: how long a held lock may be trusted.
//! - [`fencing`]: when to renew and when to fence.
//! - [`time`]: [`Nanos`], the monotonic time all of it runs on.
//! - [`error`]: [`LockError`], the one error type of lock operations.
//!
//! Nothing here does I/O, reads a clock or spawns a thread: the reactor (real
//! io_uring) and the deterministic simulation (virtual time) drive the same code.
//!
//! ## DESIGN NOTE: why a held lock is safe to use, and until when
//!
//! **What a drive promises.** A drive starts (or restarts) a member's countdown when
//! it *receives* a trylock, break or refresh, and treats the member as expired once
//! `countdown` ms of its own clock passed without another refresh. Only then will it
//! let another host break in. The host cannot know when the drive received the
//! command, only that it was after the host *sent* it. So a grant or refresh whose
//! command was sent at host time `s` is trusted until `s + countdown`, never until
//! `reply_time + countdown` (that would over-trust by the command's latency, which
//! on a stalled path is unbounded). The engine records the send time of every
//! command (the `now` at which an operation emitted it, which precedes the real
//! submission, so it is conservative) and stores it per drive in
//! [`protocol::LockState`].
//!
//! **Validity.** Another host needs a majority of drives to acquire. While a
//! majority of our drives are inside their trust windows, no other host can hold a
//! majority (any two majorities intersect, and on the common drive we are a live
//! member). So the lock is valid until the moment fewer than a majority of the
//! drives are inside their windows: the majority-th latest `send + countdown` among
//! held drives ([`lease::validity`]), minus a drift margin.
//!
//! **Clocks.** No agreement between host and drive wall clocks is assumed; the wall
//! clock only fills the record's time field. What is assumed is **bounded rate
//! drift** between the host's monotonic clock and each drive's countdown clock: over
//! one countdown `C`, the drive may measure at most `C - margin` while the host
//! measures `C`. The margin is the caller's `drift_margin` (e.g. 1% of `C` plus a
//! fixed slack). A drive whose clock runs faster than that bound breaks the
//! argument; nothing else does.
//!
//! **Drive state loss.** A drive that power-cycles forgets our membership at once,
//! while our window for it still runs. The argument above therefore also assumes
//! that fewer than a majority of a lock's drives lose their table within one
//! countdown; renewal drops a drive the moment it answers "not found" and
//! re-acquires it with a fresh trylock.
//!
//! **Fencing.** The holder must stop using the resource strictly **before**
//! validity ends: [`fencing::LeasePolicy::should_fence`] is true once
//! `now + fence_margin >= validity`, and the fence (kill path, signal, callback)
//! must complete within `fence_margin`. Renewal keeps validity moving forward
//! ([`fencing::LeasePolicy::next_renewal`]); if renewals fail, fencing fires while
//! the lease is still valid, never after.
//!
//! **LVB.** The lock value block is written with the unlock at release (a "write
//! LVB" only updates [`protocol::LockState::lvb`]); byte 7 does not survive the
//! drive (the wire overwrites it with the control byte) and always reads back as 0.

pub mod error;
pub mod fencing;
pub mod lease;
pub mod protocol;
pub mod time;

pub use error::LockError;
pub use time::Nanos;
