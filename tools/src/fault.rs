//! `idm fault`: inject or heal a fault on a simulated drive.
//!
//! A fault is the drive's: it applies to commands that reach the drive through
//! the native socket protocol and through the iSCSI target (`idm sim --iscsi`)
//! alike. Over iSCSI: `stop`/`cut` and dropped replies send no response (the
//! initiator's timeout and abort run), `io-error` answers CHECK CONDITION
//! (HARDWARE ERROR, ASC 0x44), a stall holds commands until it ends.

use std::process::ExitCode;

use idm_sim::{Control, FaultCmd};

use crate::common::{fail, parse_addr, DEFAULT_SIM};

/// Arguments of `idm fault`.
#[derive(clap::Args)]
pub struct Args {
    /// Simulator address (unix:PATH or tcp:HOST:PORT).
    #[arg(long, env = "IDM_SIM", default_value = DEFAULT_SIM)]
    sim: String,
    /// The drive's name.
    drive: String,
    /// The fault.
    #[command(subcommand)]
    action: Action,
}

/// A fault action.
#[derive(clap::Subcommand)]
enum Action {
    /// Stop answering (commands are neither executed nor answered).
    Stop,
    /// End `stop` and any stall.
    Resume,
    /// Answer every command with an I/O error.
    IoError,
    /// Hold commands for MS milliseconds, then execute and answer them.
    Stall {
        /// Milliseconds.
        ms: u64,
    },
    /// Lose the drive's table now.
    PowerCycle,
    /// Drop PCT percent of replies (the commands still execute).
    Drop {
        /// Percentage, 0..=100.
        pct: f64,
    },
    /// Cut the client with this name (its HELLO name; over iSCSI its
    /// InitiatorName) off the drive.
    Cut {
        /// Client name.
        client: String,
    },
    /// End every fault on the drive.
    Heal,
}

/// Runs `idm fault`.
pub fn run(a: Args) -> ExitCode {
    let fault = match a.action {
        Action::Stop => FaultCmd::Stop,
        Action::Resume => FaultCmd::Resume,
        Action::IoError => FaultCmd::IoError,
        Action::Stall { ms } => FaultCmd::Stall { ms },
        Action::PowerCycle => FaultCmd::PowerCycle,
        Action::Drop { pct } => {
            if !(0.0..=100.0).contains(&pct) {
                return fail(format!("drop percentage {pct} is not within 0..=100"));
            }
            FaultCmd::Drop { percent: pct }
        }
        Action::Cut { client } => FaultCmd::Cut { client },
        Action::Heal => FaultCmd::Heal,
    };
    let addr = match parse_addr(&a.sim) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let r = Control::connect(&addr).and_then(|mut c| c.fault(&a.drive, fault.clone()));
    match r {
        Ok(()) => {
            outln!("{}: {fault:?} applied", a.drive);
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("fault on `{}` at {addr}: {e}", a.drive)),
    }
}
