//! `idm status`: how a lock stands on its drives, whoever holds it: its mode
//! (majority vote of the drives' classes) and how many other hosts hold it.

use std::process::ExitCode;

use idm_engine::api::{EngineError, LockspaceConfig};
use idm_engine::error::LockError;
use uring_sg::{HostId, Mode};

use crate::common::{errno_name, fail};
use crate::target::LockTarget;

/// Options of `idm status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: LockTarget,
    /// This host's ID (to tell whether this host holds it); default: this
    /// machine's stable ID.
    #[arg(long)]
    host: Option<HostId>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `idm status`.
pub fn run(args: Args) -> ExitCode {
    let mut cfg = LockspaceConfig::new("idm-status");
    if let Some(h) = args.host {
        cfg.host_id = h;
    }
    let ls = match args.target.open(cfg) {
        Ok(ls) => ls,
        Err(e) => return fail(e),
    };
    let unknown = |e: &EngineError| matches!(e, EngineError::Lock(LockError::NotFound));
    let mode = match ls.mode(args.target.lock, &args.target.drives) {
        Ok(m) => m,
        Err(e) if unknown(&e) => None,
        Err(e) => return fail(format!("{e} ({})", errno_name(e.errno()))),
    };
    let (others, mine) = match ls.host_count(args.target.lock, &args.target.drives) {
        Ok(c) => c,
        Err(e) if unknown(&e) => (0, false),
        Err(e) => return fail(format!("{e} ({})", errno_name(e.errno()))),
    };
    let mode_name = match mode {
        Some(Mode::Exclusive) => "exclusive",
        Some(Mode::Shared) => "shared",
        None => "unlocked",
    };
    if args.json {
        let v = serde_json::json!({
            "mode": mode_name,
            "other_hosts": others,
            "held_by_this_host": mine,
        });
        outln!("{v}");
    } else {
        outln!(
            "{mode_name}; held by {others} other host(s); this host {}",
            if mine { "holds it" } else { "does not hold it" }
        );
    }
    ls.close(false);
    ExitCode::SUCCESS
}
