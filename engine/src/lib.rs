//! # idm-engine: quorum locking over IDM drives
//!
//! A lock spans N drives that each keep a table of mutexes in firmware; the lock
//! is held when ⌊N/2⌋+1 drives granted it (`../shared/IDM.md` §7). This crate is
//! the host side of that protocol: the sans-IO core (ARCHITECTURE.md principle 1),
//! the reactor threads that run it on io_uring, and the Rust API callers use.
//!
//! **Layers**, each importing only from the ones below it:
//!
//! 1. [`api`] (public): [`api::Engine`] (the reactor threads and the way requests
//!    reach them), [`api::Lockspace`] (a host ID, a lease, a fencing action, and
//!    the lock calls, blocking or as futures), [`api::DeviceOpener`] (real drives
//!    by path: sg, bsg, NVMe, multipath), configuration, [`api::EngineError`] and
//!    [`api::EngineStats`]. Drives are opened through the
//!    [`api::DriveOpener`] trait, and [`api::Engine::start_keeping`] keeps an
//!    opaque value alive with the engine: the two hooks the simulator crate
//!    (`idm-sim`, `idm_sim::engine`) builds its engines on; this crate knows
//!    nothing about the simulator.
//! 2. `reactor` (private): one thread per reactor that owns an io_uring, the drives
//!    it talks to and the [`locks::LockTable`] of the locks hashed to it; a shell
//!    that moves bytes and time between the ring and the table.
//! 3. `shared` (private; its public types re-exported by [`api`]): what `api` and
//!    the reactor exchange: configuration, [`api::EngineError`], the request and
//!    reply messages, the part of a lockspace its reactors share, statistics.
//!    [`completion`]: the one-shot completion a result travels back on.
//! 4. The sans-IO core (public, run by the reactor and by the deterministic
//!    simulation in `idm-tests` alike):
//!    - [`locks`]: the per-lock lifecycle around the protocol machines
//!      ([`locks::LockTable`]): queueing, renewal scheduling, fencing, answering
//!      callers at quorum, late replies, unresponsive drives, command timeouts;
//!      [`locks::OpKind`] names the operation kinds statistics are kept by;
//!    - [`protocol`]: one state machine per lock operation (acquire, release,
//!      renew, convert, read LVB, host count, mode, destroy) behind the
//!      [`protocol::Operation`] trait. They take `(now, drive reply)` and emit drive
//!      commands ([`uring_sg::transport::Request`]) and timers. The contract with
//!      the table that runs them is in the [`protocol`] module docs;
//!    - [`lease`]: how long a held lock may be trusted; [`fencing`]: when to renew
//!      and when to fence; [`time`]: [`Nanos`], the monotonic time all of it runs
//!      on; [`error`]: [`LockError`], the one error type of lock operations.
//! 5. [`watchdog`]: watchdog fencing; its arithmetic ([`watchdog::WatchdogPlan`])
//!    is sans-IO, its thread and device I/O are thin.
//!
//! Nothing in the protocol, the lock table or the plans does I/O, reads a clock
//! or spawns a thread: the reactor (real io_uring) and the deterministic
//! simulation (virtual time) drive the same code.
//!
//! ```no_run
//! use idm_engine::api::{DeviceOpener, Engine, EngineConfig, LockOptions, LockspaceConfig};
//! use std::sync::Arc;
//! use uring_sg::Mode;
//!
//! let engine = Engine::start(EngineConfig::new(Arc::new(DeviceOpener::new())))?;
//! let ls = engine.lockspace(LockspaceConfig::new("vg0"))?;
//! let drives = ["/dev/sdb", "/dev/sdc", "/dev/sdd"];
//! ls.lock("vg0-lv0".parse()?, Mode::Exclusive, &drives, LockOptions::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
//! **Drive state loss (an assumption the engine cannot check).** A drive that loses
//! its table (power cycle, firmware reset, replacement) forgets our membership at
//! once, while our trust window for it still runs, and nothing tells us until our
//! next command to it answers "not found" (renewal then drops the drive and
//! re-acquires it with a fresh trylock). The validity argument needs the drives of
//! the intersection to *remember*. Precisely: with `n` drives, majority `m`, `k` of
//! them inside our trust windows and `f` of those `k` having forgotten us while
//! already answering commands again, another host can gather a majority from the
//! `f` forgetful drives and the `n - k` others as soon as `f + n - k >= m`. So
//! exclusion needs `k - f >= n - m + 1` at every moment; validity only counts
//! `k >= m`, and with a bare majority of an odd `n` (`k = m`) one forgetful drive is
//! already too many. It is not enough that "fewer than a majority of drives lose
//! their table". The deployment must therefore guarantee: **a drive that loses its
//! mutex table answers no mutex command until at least the longest countdown any
//! host uses on it, plus the drift margin, has passed since the loss** (it then
//! comes back with every old membership expired anyway, as if it had remembered
//! and they had run out), **or its table survives the loss** (a durable table).
//! A drive that reboots faster than a lease (lvmlockd: 60 s) with a volatile table
//! breaks exclusion. The deterministic simulation (`idm-tests`) keeps power-cycled
//! drives down longer than a lease, and its ignored test
//! `fast_drive_restart_keeps_exclusion` shows the break when drives come back at
//! once.
//!
//! **Timed-out commands (an assumption about the transport).** A command the
//! transport reports as timed out has no effect afterwards. The SCSI midlayer
//! guarantees this for sg and bsg passthrough: it aborts a timed-out command
//! (ABORT TASK, then LUN / target / host reset) before it completes it as timed
//! out; iSCSI's task management does the same on the wire. The lock table relies
//! on it: a drive's next command on a lock goes out once the previous one answered
//! *or timed out*, so a late execution of an old unlock would undo a newer grant.
//! The deterministic simulation models the guarantee (a command whose timeout
//! fired before it reached the drive never executes); without it, it finds exactly
//! that overlap.
//!
//! **LVB durability (a documented limit).** The LVB lives only in the drives'
//! tables. A release stores it on at least a majority before it reports success
//! and a read takes the maximum over a majority, so a read sees the last released
//! value while the drives of that release's majority remember it (any two
//! majorities intersect). A drive that loses the lock's mutex after the release
//! (power cycle, or destroy by the "table full" clean-up of [`protocol::table`])
//! loses the value: once fewer than `n - m + 1` of the drives that stored it still
//! have it, some majority misses it and a read may return an older value, or 0.
//! No host can repair that in general (nobody keeps the value elsewhere). It is
//! made rarer, not impossible: the clean-up destroys a mutex whose LVB is 0 before
//! any other. lvmlockd treats any changed value as "metadata changed" and re-reads
//! its metadata, which is also the right reaction to a value that went back. See
//! [`protocol::lvb`].
//!
//! **Fencing.** The holder must stop using the resource strictly **before**
//! validity ends: [`fencing::LeasePolicy::should_fence`] is true once
//! `now + fence_margin >= validity`, and the fence (kill path, signal, callback)
//! must complete within `fence_margin`. Renewal keeps validity moving forward
//! ([`fencing::LeasePolicy::next_renewal`]); if renewals fail, fencing fires while
//! the lease is still valid, never after.
//!
//! **Watchdog** ([`watchdog`], off by default). The fence above runs on our own
//! threads; a paused or killed process, a hung host or a crashed lvmlockd runs
//! none of them. With a watchdog, the host itself is reset before validity ends.
//! The engine's watchdog thread takes the earliest validity `V` over every held
//! lock (each reactor publishes [`locks::LockTable::earliest_validity`] every
//! 250 ms, and at once when its first lock is held) and keeps the reset
//! deadline `R = V - margin` (default 2 s; `V` already has the drift margin
//! off). `/dev/watchdog` takes whole seconds and Linux pets it once more when
//! its file is closed without the magic `'V'` (a killed holder), so an arming at
//! `a` with timeout `T` fires by `a + T` while the process lives and by `a + 2T`
//! if it dies; the thread only arms `T = floor((R - a - slack) / 2)` (slack
//! 250 ms), so `a + 2T + slack <= R` at every arming ([`watchdog::WatchdogPlan`],
//! tested over a grid), and it re-arms with the shorter `T` the deadline allows
//! before the device would fire while the process is alive. If nothing pets it
//! (process stopped, hung, dead), the last arming fires by `R`; if the engine
//! lives but cannot renew, it keeps re-arming with shrinking timeouts and the
//! host resets in the last seconds before `R`, after the lease fence had its
//! `fence_margin`. Nothing held: disarmed (magic close). A wdmd backend fires
//! `fire_timeout` after its last pet and pets only while our expiry `E` (whole
//! seconds of `CLOCK_MONOTONIC`) is in the future, so the engine sends
//! `E = floor(R - fire_timeout - slack)` and needs
//! `lease - drift - renew_every - margin - slack >= fire_timeout`.
//!
//! With lvmlockd's numbers (lease 60 s, renewal every 10 s, drift 0.61 s,
//! fence margin 10 s, watchdog margin 2 s), for the last renewal whose majority
//! was sent at `s`: `V = s + 59.39`, the lease fence fires at `s + 49.39`, the
//! reset deadline is `R = s + 57.39`, and no other host can be granted before
//! `s + 60` of drive time (`>= V` of host time). Just after that renewal the
//! device is armed with `T = 28 s`. A process paused right after it resets the
//! host by about `s + 29`; one killed at any moment, by `s + 57.1`; a live
//! engine whose renewals fail, at about `s + 56` (after the fence, before `R`).
//! wdmd with its default 60 s fire timeout cannot protect a 60 s lease (it needs
//! at most 47 s) and is refused with a clear error (required) or logged (auto).
//!
//! *A quick restart with the same host ID.* The crashed process's device file
//! was closed without the magic character: the timer runs (fires by `R`) and
//! sysfs says `active`. A restarted engine never opens an active watchdog
//! (re-opening pets it, past a deadline it cannot know), so its locks are
//! refused while "required" (and unprotected under "auto", logged) until the
//! host resets by `R`. The drives would let it take its own mutexes back at
//! once, but the LVs the crashed process held may be in use while nobody
//! renews them: with a watchdog a crash of the holder costs a reset, as
//! sanlock's does when it dies with leases held (wdmd keeps testing a dead
//! client's expiry). Without a watchdog the restart re-takes its locks as
//! before and nothing resets.
//!
//! *Known window.* A grant is answered before the watchdog thread has armed for
//! it (one wake-up later: well under a millisecond here, about 0.1-0.3 s under
//! software emulation); a crash inside that window is covered by the lease
//! fence only.
//!
//! **LVB.** The lock value block is written with the unlock at release (a "write
//! LVB" only updates [`protocol::LockState::lvb`]); byte 7 does not survive the
//! drive (the wire overwrites it with the control byte) and always reads back as 0.
//! A holder's read takes the maximum over a majority of drives that vouch for the
//! value (held by this host, or with no other host's exclusive member still to
//! unlock: [`protocol::lvb`]); a release's re-trylock never stores over a larger
//! value ([`protocol::release`]). Both rest on LVB values only growing, as
//! lvmlockd's version counter does. After an acquire of a lock whose LVB was read
//! before, the table prefetches it and answers the holder's read from the value
//! seen during the hold ([`locks`], "LVB prefetch").

pub mod api;
pub mod completion;
pub mod error;
pub mod fencing;
pub mod lease;
pub mod locks;
pub mod protocol;
pub(crate) mod reactor;
pub(crate) mod shared;
pub mod time;
pub mod watchdog;

pub use error::LockError;
pub use time::Nanos;
