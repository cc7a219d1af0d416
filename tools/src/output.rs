//! Results on stdout without a panic when nobody reads them any more.
//!
//! `println!` panics when stdout is a pipe whose reader went away (`idm dump sim0 |
//! head -2`): the Rust runtime ignores SIGPIPE, so the write fails with EPIPE. The
//! subcommands print through [`outln!`] and [`out!`] instead. The first failed
//! write is remembered and later output is dropped; the command still finishes its
//! work (a lock it holds is still released); then `main` exits through [`finish`]:
//!
//! - stdout closed (EPIPE): exit status **141** (128 + SIGPIPE, what a shell
//!   reports for a program a closed pipe ended, as `set -o pipefail` scripts
//!   expect), nothing printed; a command that failed for its own reason keeps its
//!   own status;
//! - any other write error (a full disk): one line on stderr, status 2.
//!
//! `idm sim` is the exception: a server keeps serving when its stdout closes (it
//! only prints its addresses at start).
//!
//! Messages to stderr go through [`errln!`], which never panics either.

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};

/// Exit status when stdout was closed: 128 + SIGPIPE.
pub const EXIT_PIPE: u8 = 141;

const OK: u8 = 0;
const PIPE: u8 = 1;
const ERROR: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(OK);

/// Prints a line of results to stdout; see the module docs.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write(format_args!(""), true) };
    ($($t:tt)*) => { $crate::output::write(format_args!($($t)*), true) };
}

/// Prints results to stdout without a newline; see the module docs.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::output::write(format_args!($($t)*), false) };
}

/// Prints a line to stderr, ignoring errors (stderr closed too).
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

/// Writes `args` (and a newline) to stdout unless an earlier write failed.
pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    if STATE.load(Ordering::Relaxed) != OK {
        return;
    }
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = r {
        failed(&e);
    }
}

fn failed(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        STATE.store(PIPE, Ordering::Relaxed);
    } else if STATE.swap(ERROR, Ordering::Relaxed) == OK {
        errln!("idm: cannot write the output: {e}");
    }
}

/// The exit status of a command that returned `code`, given what became of its
/// output (flushed here); see the module docs.
pub fn finish(code: ExitCode) -> ExitCode {
    if STATE.load(Ordering::Relaxed) == OK {
        if let Err(e) = std::io::stdout().lock().flush() {
            failed(&e);
        }
    }
    match STATE.load(Ordering::Relaxed) {
        OK => code,
        _ if code != ExitCode::SUCCESS => code,
        PIPE => ExitCode::from(EXIT_PIPE),
        _ => ExitCode::from(crate::common::EXIT_ERROR),
    }
}
