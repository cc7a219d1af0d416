//! C programs (`tests/c/*.c`) compiled with the system C compiler against
//! `include/ilm.h`, `include/idm_engine.h` and the `libseagate_ilm.so` cargo
//! built for this test run, then run with `IDM_SIM` set. Needs `cc` and the
//! `uuid/uuid.h` header (Debian/Ubuntu: `apt-get install -y uuid-dev`).
//! They need the library's simulator support (feature `sim`, the default).

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "sim")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where cargo put `libseagate_ilm.so`: the test binary lives in
/// `<target>/<profile>/deps`, next to the library `cargo test` built; a
/// `cargo build` also copies it up to `<target>/<profile>`.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    let up = deps.parent().unwrap().to_path_buf();
    [deps, up]
        .into_iter()
        .find(|d| d.join("libseagate_ilm.so").exists())
        .unwrap_or_else(|| panic!("libseagate_ilm.so not found next to {}", exe.display()))
}

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The library installed by `scripts/install-ffi.sh` into a temporary prefix
/// (once per test binary), as a user would get it.
fn prefix() -> &'static Path {
    static PREFIX: OnceLock<tempfile::TempDir> = OnceLock::new();
    PREFIX
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let script = manifest().join("../scripts/install-ffi.sh");
            let out = Command::new("sh")
                .arg(&script)
                .arg(dir.path())
                .env("IDM_LIB_DIR", lib_dir())
                .output()
                .expect("run install-ffi.sh");
            assert!(
                out.status.success(),
                "install-ffi.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            dir
        })
        .path()
}

/// `pkg-config --cflags --libs libseagate_ilm` against the installed prefix.
fn pkg_config_flags() -> Vec<String> {
    let pc = prefix().join("lib/pkgconfig");
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libseagate_ilm"])
        .env("PKG_CONFIG_PATH", &pc)
        .output()
        .expect("run pkg-config");
    assert!(
        out.status.success(),
        "pkg-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Compiles `tests/c/<name>.c` into `dir` with the installed headers and library.
fn compile(name: &str, dir: &Path) -> PathBuf {
    let flags = pkg_config_flags();
    let libdir = prefix().join("lib");
    assert!(libdir.join("libseagate_ilm.so.0").exists());
    let out = dir.join(name);
    let src = manifest().join("tests/c").join(format!("{name}.c"));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
            "-g",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .args(&flags)
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-lpthread")
        .status()
        .expect("run cc");
    assert!(
        status.success(),
        "compiling {name}.c failed (needs cc, pkg-config and uuid/uuid.h: apt-get install -y uuid-dev)"
    );
    out
}

/// Runs a compiled client with `env`, asserting it succeeds; returns its stdout.
fn run(exe: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let log = dir.join("idm.log");
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .current_dir(dir)
        .env("IDM_LOG", &log)
        .env("IDM_LOG_LEVEL", "debug")
        // Calls that expect -EBUSY behind a holder get it after a short wait.
        .env("IDM_LOCK_WAIT_MS", "200")
        // Host-wide fault injection stays within this test's directory.
        .env("IDM_FAULT_FILE", dir.join("inject-fault"))
        .env_remove("IDM_SIM");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run client");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "{} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\nlog tail:\n{tail}",
            exe.display(),
            out.status
        );
    }
    assert!(stdout.contains("ok: "), "no success line: {stdout}");
    stdout
}

#[test]
fn ilm_every_function_and_error_path() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("ilm_basic", dir.path());
    run(&exe, dir.path(), &[], &[("IDM_SIM", "mem:3")]);
}

/// A simulator server on a Unix socket in `dir`, with drives sim0..sim2.
fn sim_server(dir: &Path) -> (idm_sim::SimHandle, String) {
    let addr: idm_sim::ListenAddr = format!("unix:{}", dir.join("sim.sock").display())
        .parse()
        .unwrap();
    let h = idm_sim::SimHandle::start(idm_sim::SimConfig::with_drives(3), &[addr]).unwrap();
    let a = h.addrs()[0].to_string();
    (h, a)
}

#[test]
fn ilm_every_function_and_error_path_on_the_socket_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("ilm_basic", dir.path());
    let (_sim, addr) = sim_server(dir.path());
    run(&exe, dir.path(), &[], &[("IDM_SIM", &addr)]);
}

#[test]
fn two_processes_contend_for_one_lock_on_the_socket_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("ilm_contend", dir.path());
    let (_sim, addr) = sim_server(dir.path());
    run(&exe, dir.path(), &["fork"], &[("IDM_SIM", &addr)]);
}

#[test]
fn two_threads_contend_for_one_lock_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("ilm_contend", dir.path());
    run(&exe, dir.path(), &["thread"], &[("IDM_SIM", "mem:3")]);
}

/// `ilm_fence.c` uses 1.2 s leases: the shortest lease is twice the command
/// timeout (ffi/README.md), so its commands get 500 ms.
const FENCE_COMMANDS: (&str, &str) = ("IDM_COMMAND_TIMEOUT_MS", "500");

#[test]
fn a_lockspace_that_stops_renewing_is_fenced_through_its_kill_path_and_signal() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("ilm_fence", dir.path());
    run(
        &exe,
        dir.path(),
        &[],
        &[("IDM_SIM", "mem:3"), FENCE_COMMANDS],
    );
}

#[test]
fn fencing_on_the_socket_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("ilm_fence", dir.path());
    let (_sim, addr) = sim_server(dir.path());
    run(&exe, dir.path(), &[], &[("IDM_SIM", &addr), FENCE_COMMANDS]);
}

/// `ilm_inject_fault` in one process fails the drive I/O of others (host-wide,
/// through the file named by `IDM_FAULT_FILE`), and 0 ends it.
#[test]
fn fault_injection_reaches_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("ilm_fault", dir.path());
    let (_sim, addr) = sim_server(dir.path());
    let env = [("IDM_SIM", addr.as_str())];
    run(&exe, dir.path(), &["lock", "0"], &env);
    run(&exe, dir.path(), &["set", "100"], &env);
    run(&exe, dir.path(), &["lock", "-5"], &env);
    run(&exe, dir.path(), &["set", "0"], &env);
    run(&exe, dir.path(), &["lock", "0"], &env);
}

#[test]
fn native_api_reaped_only_through_idm_engine_wait() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("native_wait", dir.path());
    run(&exe, dir.path(), &[], &[("IDM_SIM", "mem:3")]);
}

#[test]
fn native_api_thousands_of_ops_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("native_batch", dir.path());
    run(&exe, dir.path(), &[], &[("IDM_SIM", "mem:3")]);
}

#[test]
fn native_api_on_the_socket_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("native_batch", dir.path());
    let (_sim, addr) = sim_server(dir.path());
    run(&exe, dir.path(), &[], &[("IDM_SIM", &addr)]);
}

/// Commands the simulator server has received so far.
fn sim_commands(sim: &idm_sim::SimHandle) -> u64 {
    match sim.control(idm_sim::ControlRequest::Stats).unwrap() {
        idm_sim::ControlResponse::Stats(s) => s.commands,
        other => panic!("{other:?}"),
    }
}

/// Issue 13, item 1: `ilm_lock` behind a live holder waits (the engine retries
/// under contention) and is granted when the holder unlocks within the wait;
/// when the holder keeps the lock, it fails with `-EBUSY` once the wait is over.
/// Two processes on one simulator server. The holder lets go only after the
/// waiter's trylocks were seen at the drives (the server's command count), so
/// the grant proves the wait, with no timing in the test.
#[test]
fn ilm_lock_waits_behind_a_holder_then_is_granted_or_busy() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("ilm_wait", dir.path());
    let (sim, addr) = sim_server(dir.path());
    let mut holder = Command::new(&exe)
        .arg("hold")
        .current_dir(dir.path())
        .env("IDM_SIM", &addr)
        .env("IDM_LOG", dir.path().join("holder.log"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "held");

    // A short wait while the holder keeps the lock: -EBUSY (16) after it.
    let busy = format!("-{}", 16);
    run(
        &exe,
        dir.path(),
        &["wait", &busy],
        &[("IDM_SIM", &addr), ("IDM_LOCK_WAIT_MS", "300")],
    );

    // A long wait: the waiter keeps trying; once three rounds of its trylocks
    // (3 drives each) reached the drives, the holder unlocks; the waiter gets X.
    let base = sim_commands(&sim);
    let exe2 = exe.clone();
    let dir2 = dir.path().to_path_buf();
    let addr2 = addr.clone();
    let waiter = std::thread::spawn(move || {
        run(
            &exe2,
            &dir2,
            &["wait", "0"],
            &[("IDM_SIM", &addr2), ("IDM_LOCK_WAIT_MS", "600000")],
        )
    });
    while sim_commands(&sim) < base + 9 {
        assert!(!waiter.is_finished(), "the waiter ended while X was held");
        // Polling the server's counter (a condition), not a timed wait.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let waited = waiter.join().unwrap();
    assert!(waited.contains("ok: "), "{waited}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(rest.contains("released"), "{rest}");
    assert!(holder.wait().unwrap().success());
}
