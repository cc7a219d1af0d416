//! # idm-ffi: the engine's C ABI
//!
//! Two C interfaces over [`idm_engine`], built as `libseagate_ilm.so.0`
//! (cdylib, soname set by `build.rs`), `libseagate_ilm.a` and an rlib:
//!
//! - [`ilm`]: the drop-in `ilm.h` API that LVM2's lvmlockd (`--enable-lvmlockd-idm`)
//!   links against (`ffi/include/ilm.h`, `../shared/IDM.md` §8). Every function
//!   returns 0 or a negative errno and never unwinds into C.
//! - [`native`]: a native asynchronous API (`ffi/include/idm_engine.h`, generated
//!   by cbindgen from `src/native.rs`): engine and lockspace handles, batches of
//!   lock / unlock / convert / LVB / count / mode operations submitted without
//!   waiting, each with a user tag, completions reaped from a pollable eventfd or
//!   delivered to a callback, and statistics.
//!
//! ## Drives
//!
//! Drives are named by strings. How a name becomes a transport is chosen once per
//! process by the environment variable `IDM_SIM` ([`drives`]):
//!
//! - `IDM_SIM=mem:N`: an in-process array of `N` simulated drives `sim0`..`sim{N-1}`
//!   (one array per engine; useful for tests and demos);
//! - `IDM_SIM=unix:PATH` or `IDM_SIM=tcp:HOST:PORT`: the drives of an `idm sim`
//!   server, looked up by name;
//! - unset: real devices (see [`drives`] for what is supported).
//!
//! The simulated sources need the cargo feature `sim` (on by default; it links
//! `idm-sim` and its serde, serde_json and rand). Built without it
//! (`--no-default-features`), the library links no simulator code, and a set
//! `IDM_SIM` makes the engine fail to start (`-EINVAL`) instead of being ignored.
//!
//! ## Logging
//!
//! `IDM_LOG` chooses where the library logs (`tracing`): a file path (appended to)
//! or `syslog` (the local `/dev/log` socket). Unset: the library does not log.
//! `IDM_LOG_LEVEL` is a `tracing` filter (`error`, `warn`, `info`, `debug`,
//! `trace`, or directives like `idm_engine=debug`); default `info`. Nothing is ever
//! written to stdout (lvmlockd may use it).

pub mod abi;
pub mod drives;
mod guard;
pub mod ilm;
mod log;
pub mod native;
mod raw;
mod session;

pub use guard::errno_of;
