//! `idm unlock`: release this host's hold of a lock, from another process than
//! the one that took it (scripts: `idm lock --keep ...; work; idm unlock ...`).
//!
//! A new process cannot know what an earlier one held, so it acquires the lock
//! with the same host ID first: the drives answer "already held by this host"
//! where the earlier process's membership is still there, and the engine takes
//! it back at once (unlock, then trylock); then it releases. If another host
//! holds the lock, nothing is released and the answer is "busy" (exit 1).

use std::process::ExitCode;
use std::time::Duration;

use idm_engine::api::{EngineError, LockOptions, LockspaceConfig};
use idm_engine::error::LockError;
use uring_sg::{HostId, Mode};

use crate::common::{errno_name, fail, EXIT_ERROR};
use crate::target::{parse_mode, LockTarget};

/// Options of `idm unlock`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: LockTarget,
    /// This host's ID, as the lock was taken with.
    #[arg(long)]
    host: HostId,
    /// The mode the lock was taken in.
    #[arg(long, default_value = "ex", value_parser = parse_mode)]
    mode: Mode,
}

/// Runs `idm unlock`.
pub fn run(args: Args) -> ExitCode {
    let mut cfg = LockspaceConfig::new("idm-unlock");
    cfg.host_id = args.host;
    let ls = match args.target.open(cfg) {
        Ok(ls) => ls,
        Err(e) => return fail(e),
    };
    let opts = LockOptions {
        timeout: Duration::from_secs(5),
        no_wait: true,
    };
    match ls.lock(args.target.lock, args.mode, &args.target.drives, opts) {
        Ok(()) => {}
        Err(e @ EngineError::Lock(LockError::Busy)) => {
            outln!(
                "not released: another host holds it: {e} ({})",
                errno_name(e.errno())
            );
            ls.close(false);
            return ExitCode::from(1);
        }
        Err(e) => {
            ls.close(false);
            return fail(format!("{e} ({})", errno_name(e.errno())));
        }
    }
    match ls.unlock(args.target.lock) {
        Ok(()) => {
            outln!("released");
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("idm: unlock failed: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
