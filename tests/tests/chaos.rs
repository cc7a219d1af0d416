//! The chaos test with real processes (`idm-chaos`, see `idm_tests::chaos`),
//! bounded: 60 s of chaos, about 2 minutes in all. `IDM_CHAOS_SECONDS` and
//! `IDM_CHAOS_SEED` change the length and the seed (default 1, so CI draws the
//! same schedule every time; the processes' timing still differs; the seed is
//! printed, and the logs are kept when a run fails). Needs `cc`,
//! `pkg-config` and `uuid-dev`, like the C-client tests of idm-ffi.

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn chaos(args: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idm-chaos"));
    cmd.arg("--seconds")
        .arg(std::env::var("IDM_CHAOS_SECONDS").unwrap_or_else(|_| "60".into()))
        .args(args);
    cmd.arg("--seed")
        .arg(std::env::var("IDM_CHAOS_SEED").unwrap_or_else(|_| "1".into()));
    let out = cmd.output().expect("run idm-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "idm-chaos failed ({})", out.status);
    assert!(stdout.contains("violations 0"), "{stdout}");
}

/// Kills (the restarted process, same host ID, must take its lock back before
/// anybody else enters), pauses past the lease, and every drive fault kind
/// (stalls shorter and longer than the command timeout, I/O errors, dropped
/// replies, stopped drives, power cycles) on at most 2 of 5 drives at a time.
#[test]
fn chaos_with_real_processes_keeps_exclusion_and_never_fences_falsely() {
    chaos(&["--faults", "all", "--strict-take-back"]);
}
