//! C programs (`tests/c/*.c`) compiled with the system C compiler against
//! `include/ilm.h`, `include/idm_engine.h` and the `libseagate_ilm.so` cargo
//! built for this test run, then run with `IDM_SIM` set. Needs `cc` and the
//! `uuid/uuid.h` header (Debian/Ubuntu: `apt-get install -y uuid-dev`).

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
fn sim_server(dir: &Path) -> (uring_sg::sim::SimHandle, String) {
    let addr: uring_sg::sim::ListenAddr = format!("unix:{}", dir.join("sim.sock").display())
        .parse()
        .unwrap();
    let h =
        uring_sg::sim::SimHandle::start(uring_sg::sim::SimConfig::with_drives(3), &[addr]).unwrap();
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

#[test]
fn a_lockspace_that_stops_renewing_is_fenced_through_its_kill_path_and_signal() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("ilm_fence", dir.path());
    run(&exe, dir.path(), &[], &[("IDM_SIM", "mem:3")]);
}

#[test]
fn fencing_on_the_socket_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("ilm_fence", dir.path());
    let (_sim, addr) = sim_server(dir.path());
    run(&exe, dir.path(), &[], &[("IDM_SIM", &addr)]);
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
