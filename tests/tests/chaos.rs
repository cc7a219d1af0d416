//! The chaos test with real processes (`idm-chaos`, see `idm_tests::chaos`),
//! bounded: 75 s of chaos, about 1.5 minutes in all. `IDM_CHAOS_SECONDS` and
//! `IDM_CHAOS_SEED` change the length and the seed (default: from the clock;
//! the seed is printed, and the logs are kept when a run fails). Needs `cc`,
//! `pkg-config` and `uuid-dev`, like the C-client tests of idm-ffi.

use std::process::Command;

fn chaos(args: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idm-chaos"));
    cmd.arg("--seconds")
        .arg(std::env::var("IDM_CHAOS_SECONDS").unwrap_or_else(|_| "75".into()))
        .args(args);
    if let Ok(seed) = std::env::var("IDM_CHAOS_SEED") {
        cmd.arg("--seed").arg(seed);
    }
    let out = cmd.output().expect("run idm-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "idm-chaos failed ({})", out.status);
    assert!(stdout.contains("violations 0"), "{stdout}");
}

/// Kills, pauses past the lease, and the drive faults after which every
/// command is still answered (stalls shorter and longer than the command
/// timeout, I/O errors) on at most 2 of 5 drives at a time.
#[test]
fn chaos_with_real_processes_keeps_exclusion_and_never_fences_falsely() {
    chaos(&["--faults", "answered"]);
}

/// The same with every fault kind: stopped drives, dropped replies and power
/// cycles too (replies that never come).
#[test]
#[ignore = "engine bug: after replies were lost (stop, drop, power cycle on a minority) an ilm_unlock can hang for ever; reduced in tests/chaos_findings.rs, release_with_one_stopped_drive_of_five_returns"]
fn chaos_with_every_drive_fault() {
    chaos(&["--faults", "all"]);
}

/// A killed holder's restarted process (same host ID) must be the next to
/// enter: it takes its stale lock back ("already held by this host").
#[test]
#[ignore = "engine bug: the acquire answers 'already held by this host' with an unlock and a new trylock, so a waiting host can enter in between (about 1 kill inside a section in 4)"]
fn chaos_a_killed_holder_takes_its_lock_back_first() {
    chaos(&["--faults", "answered", "--strict-take-back"]);
}
