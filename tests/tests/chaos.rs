//! The chaos test with real processes, bounded: `idm-chaos` for 75 s of
//! faults (about 90 s in all). `IDM_CHAOS_SECONDS` and `IDM_CHAOS_SEED` change
//! the length and the seed (default: from the clock; the seed is printed).
//! Needs `cc`, `pkg-config` and `uuid-dev`, like the C-client tests of idm-ffi.

use std::process::Command;

#[test]
fn chaos_with_real_processes_keeps_exclusion_and_never_fences_falsely() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idm-chaos"));
    cmd.arg("--seconds")
        .arg(std::env::var("IDM_CHAOS_SECONDS").unwrap_or_else(|_| "75".into()));
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
