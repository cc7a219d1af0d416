//! The built `idm` binary against a real `idm sim` process.

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const IDM: &str = env!("CARGO_BIN_EXE_idm");

struct SimProc {
    child: Child,
}

impl Drop for SimProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `idm sim` and waits until it prints its first address.
fn start_sim(sock: &str) -> SimProc {
    let mut child = Command::new(IDM)
        .args(["sim", "--drives", "2", "--listen", sock])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("listening on {sock}"));
    SimProc { child }
}

fn idm(args: &[&str]) -> Output {
    Command::new(IDM).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn sim_cmd_dump_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idm.sock");
    let sock = format!("unix:{}", path.display());
    let mut sim = start_sim(&sock);

    let lock = ["--lock", "vg1"];
    let o = idm(&[
        &["cmd", "--sim", &sock, "sim0", "trylock", "--host", "A"][..],
        &lock,
    ]
    .concat());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout(&o), "granted");

    let o = idm(&[
        &["cmd", "--sim", &sock, "sim0", "trylock", "--host", "B"][..],
        &lock,
    ]
    .concat());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).ends_with("(EBUSY)"), "{o:?}");

    // The same through IDM_SIM and --json.
    let o = Command::new(IDM)
        .env("IDM_SIM", &sock)
        .args([
            "cmd", "sim0", "trylock", "--host", "B", "--lock", "vg1", "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errno_name"], "EBUSY");

    let o = idm(&["dump", "--sim", &sock, "sim0", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 1, "{v}");
    assert_eq!(recs[0]["lock_id"], "vg1");
    assert_eq!(recs[0]["host_id"], "A");
    assert_eq!(recs[0]["state"], "locked");
    assert_eq!(recs[0]["class"], 0);

    let o = idm(&["dump", "--sim", &sock, "sim1"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout(&o).ends_with("0 record(s)"), "{o:?}");

    // A stopped drive: the command times out, a one-line error, exit 2.
    let o = idm(&["fault", "--sim", &sock, "sim0", "stop"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = idm(&["cmd", "--sim", &sock, "sim0", "count", "--timeout", "100"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("timed out") && err.lines().count() == 1,
        "{err}"
    );

    // Unknown drive and unreachable simulator: clear errors, exit 2.
    let o = idm(&["cmd", "--sim", &sock, "nope", "count"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no drive named `nope`"));
    let missing = format!("unix:{}", dir.path().join("missing.sock").display());
    assert_eq!(
        idm(&["dump", "--sim", &missing, "sim0"]).status.code(),
        Some(2)
    );

    // SIGTERM: clean exit, socket removed.
    kill(Pid::from_raw(sim.child.id() as i32), Signal::SIGTERM).unwrap();
    let st = sim.child.wait().unwrap();
    assert!(st.success(), "{st:?}");
    assert!(!path.exists());
}

#[test]
fn engine_commands_lock_keep_status_unlock() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix:{}", dir.path().join("idm.sock").display());
    let _sim = start_sim(&sock);
    let drives = ["sim0", "sim1"];
    let status = |host: &str| {
        let o = idm(&[
            &[
                "status", "--sim", &sock, "--lock", "lv9", "--host", host, "--json",
            ][..],
            &drives,
        ]
        .concat());
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    // Nothing yet.
    let v = status("A");
    assert_eq!(v["mode"], "unlocked");
    // Host A takes it and leaves it held.
    let o = idm(&[
        &["lock"][..],
        &["--sim", &sock, "--host", "A", "--lock", "lv9", "--keep"],
        &drives,
    ]
    .concat());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v = status("B");
    assert_eq!(v["mode"], "exclusive");
    assert_eq!(v["other_hosts"], 1);
    assert_eq!(v["held_by_this_host"], false);
    assert_eq!(status("A")["held_by_this_host"], true);
    // Host B is refused, and cannot unlock A's lock.
    let o = idm(&[
        &["lock"][..],
        &["--sim", &sock, "--host", "B", "--lock", "lv9", "--no-wait"],
        &drives,
    ]
    .concat());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let o = idm(&[
        &["unlock"][..],
        &["--sim", &sock, "--host", "B", "--lock", "lv9"],
        &drives,
    ]
    .concat());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    // Host A, from another process, releases it; then B gets it.
    let o = idm(&[
        &["unlock"][..],
        &["--sim", &sock, "--host", "A", "--lock", "lv9"],
        &drives,
    ]
    .concat());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout(&o), "released");
    let o = idm(&[
        &["lock"][..],
        &["--sim", &sock, "--host", "B", "--lock", "lv9", "--no-wait"],
        &drives,
    ]
    .concat());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
}

/// Runs `idm` with stdout a pipe whose reader is already gone, so the first write
/// fails with EPIPE whatever the timing.
fn idm_closed_stdout(args: &[&str]) -> Output {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    Command::new(IDM)
        .args(args)
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// `idm dump ... | head -2` panicked on the closed pipe with a backtrace. Every
/// subcommand that prints now ends quietly with status 141 (128 + SIGPIPE, see
/// `tools/src/output.rs`), and still does its work: the lock taken below is
/// released, so another host gets it at once.
#[test]
fn output_to_a_closed_pipe_ends_quietly_with_status_141() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix:{}", dir.path().join("idm.sock").display());
    let _sim = start_sim(&sock);
    let s = sock.as_str();
    let runs: [&[&str]; 11] = [
        &[
            "cmd", "--sim", s, "sim0", "trylock", "--host", "A", "--lock", "p1",
        ],
        &["cmd", "--sim", s, "sim0", "count", "--json"],
        &["dump", "--sim", s, "sim0"],
        &["dump", "--sim", s, "sim0", "--json"],
        &["fault", "--sim", s, "sim1", "heal"],
        &[
            "lock", "--sim", s, "--host", "A", "--lock", "p2", "sim0", "sim1",
        ],
        &[
            "lock", "--sim", s, "--host", "A", "--lock", "p3", "--keep", "sim0", "sim1",
        ],
        &[
            "status", "--sim", s, "--host", "A", "--lock", "p3", "sim0", "sim1",
        ],
        &[
            "unlock", "--sim", s, "--host", "A", "--lock", "p3", "sim0", "sim1",
        ],
        &["doctor"],
        &["demo", "--seconds", "1"],
    ];
    for args in runs {
        let o = idm_closed_stdout(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(141), "{args:?}: {o:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("idm:"), "quiet: {args:?}: {err}");
    }
    // p2 was released and p3 unlocked although nobody read a word: B gets both.
    for lock in ["p2", "p3"] {
        let o = idm(&[
            "lock",
            "--sim",
            s,
            "--host",
            "B",
            "--lock",
            lock,
            "--no-wait",
            "sim0",
            "sim1",
        ]);
        assert_eq!(o.status.code(), Some(0), "{lock}: {o:?}");
    }
    // A command that fails for its own reason keeps its own status.
    let o = idm_closed_stdout(&[
        "cmd", "--sim", s, "sim0", "trylock", "--host", "C", "--lock", "p1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    // Help to a closed pipe: clap's own quiet exit.
    let o = idm_closed_stdout(&["sim", "--help"]);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "{o:?}"
    );
}

/// Absurd leases are refused with a clear error, before anything is sent.
#[test]
fn lock_refuses_absurd_leases() {
    for (lease, want) in [
        ("0", "1000..=3600000"),
        ("50", "1000..=3600000"),
        ("99999999999", "1000..=3600000"),
        ("3000", "twice --command-timeout-ms"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_idm"))
            .args([
                "lock",
                "--sim",
                "unix:/nonexistent",
                "--host",
                "h",
                "--lock",
                "l",
                "--lease-ms",
                lease,
                "sim0",
            ])
            .output()
            .unwrap();
        assert!(!o.status.success(), "lease {lease} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "lease {lease}: {err}");
    }
}
