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

/// Starts `idm sim` with two drives and waits until it prints its first address.
fn start_sim(sock: &str) -> SimProc {
    start_sim_n(sock, 2)
}

/// Starts `idm sim` with `n` drives and waits until it prints its first address.
fn start_sim_n(sock: &str, n: usize) -> SimProc {
    let mut child = Command::new(IDM)
        .args(["sim", "--drives", &n.to_string(), "--listen", sock])
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
    assert!(stdout(&o).contains("(EBUSY)"), "{o:?}");

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
    assert_eq!(v["drives"][0]["drive"], "sim0", "{v}");
    let recs = v["drives"][0]["records"].as_array().unwrap();
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

/// `idm` with no `IDM_SIM` from the environment (real devices unless `--sim`).
fn idm_real(args: &[&str]) -> Output {
    Command::new(IDM)
        .env_remove("IDM_SIM")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {o:?}"))
}

/// Several drives in one `idm dump`: each drive's table, then per lock and host
/// on how many drives it is a live or an expired member and whether that is a
/// majority; `--lock` keeps one lock's records. Then the administrator's way out
/// of a stuck lock with `idm cmd`: break refused while the holder is live, break
/// of the expired holder, unlock, destroy.
#[test]
fn dump_several_drives_summary_and_freeing_a_stuck_lock() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix:{}", dir.path().join("idm.sock").display());
    let _sim = start_sim_n(&sock, 3);
    let s = sock.as_str();
    let cmd =
        |drive: &str, rest: &[&str]| idm_real(&[&["cmd", "--sim", s, drive][..], rest].concat());
    // A holds vg1 on two drives of three; Z took "stale" on all three with a
    // countdown of 0: expired at once (no waiting for a lease).
    for d in ["sim0", "sim1"] {
        let o = cmd(d, &["trylock", "--lock", "vg1", "--host", "A"]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
    }
    for d in ["sim0", "sim1", "sim2"] {
        let o = cmd(
            d,
            &[
                "trylock",
                "--lock",
                "stale",
                "--host",
                "Z",
                "--countdown",
                "0",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{o:?}");
    }
    let all = ["sim0", "sim1", "sim2"];
    let o = idm_real(&[&["dump", "--sim", s, "--json"][..], &all].concat());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v = json(&o);
    let drives = v["drives"].as_array().unwrap();
    assert_eq!(drives.len(), 3, "{v}");
    assert_eq!(drives[0]["records"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(drives[2]["records"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["summary"]["drives"], 3);
    assert_eq!(v["summary"]["majority"], 2);
    let locks = v["summary"]["locks"].as_array().unwrap();
    let find = |id: &str| locks.iter().find(|l| l["lock_id"] == id).unwrap().clone();
    let vg1 = find("vg1");
    assert_eq!(vg1["hosts"][0]["host_id"], "A", "{v}");
    assert_eq!(vg1["hosts"][0]["mode"], "EX");
    assert_eq!(vg1["hosts"][0]["live_on"], 2);
    assert_eq!(vg1["hosts"][0]["majority"], true);
    let stale = find("stale");
    assert_eq!(stale["hosts"][0]["host_id"], "Z");
    assert_eq!(stale["hosts"][0]["live_on"], 0);
    assert_eq!(stale["hosts"][0]["expired_on"], 3);
    assert_eq!(stale["hosts"][0]["majority"], false);

    // For people: a heading per drive, the summary's verdicts.
    let o = idm_real(&[&["dump", "--sim", s][..], &all].concat());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = stdout(&o);
    assert!(text.contains("== sim2"), "{text}");
    assert!(
        text.contains("summary over 3 drive(s) (a majority is 2)"),
        "{text}"
    );
    let summary = &text[text.find("== summary").unwrap()..];
    let line = |l: &str, h: &str| {
        summary
            .lines()
            .find(|x| x.starts_with(l) && x.split_whitespace().nth(1) == Some(h))
            .unwrap_or_else(|| panic!("no {l}/{h} row: {text}"))
            .to_string()
    };
    assert!(line("vg1", "A").contains("2/3") && line("vg1", "A").contains("holds it (majority)"));
    assert!(line("stale", "Z").contains("breakable"), "{text}");

    // --lock: one lock's records only.
    let o = idm_real(&[&["dump", "--sim", s, "--lock", "vg1", "--json"][..], &all].concat());
    let v = json(&o);
    for d in v["drives"].as_array().unwrap() {
        for r in d["records"].as_array().unwrap() {
            assert_eq!(r["lock_id"], "vg1", "{v}");
        }
    }
    assert_eq!(v["summary"]["locks"].as_array().unwrap().len(), 1, "{v}");

    // A live holder: break and destroy are refused (exit 1), saying why.
    let o = cmd("sim0", &["break", "--lock", "vg1", "--host", "admin"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stdout(&o).contains("break takes over only from expired holders"),
        "{o:?}"
    );
    let o = cmd("sim0", &["destroy", "--lock", "vg1"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).contains("live member"), "{o:?}");
    // Unlock must name the class the member holds: a wrong --mode is refused,
    // none looks it up in the drive's table.
    let o = cmd(
        "sim0",
        &["unlock", "--lock", "vg1", "--host", "A", "--mode", "sh"],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).contains("wrong class"), "{o:?}");
    let o = cmd("sim0", &["unlock", "--lock", "vg1", "--host", "B"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).contains("not a member"), "{o:?}");
    let o = cmd("sim0", &["unlock", "--lock", "vg1", "--host", "A"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "released"),
        "{o:?}"
    );

    // The stuck lock: break (admin takes it over), unlock, destroy; then it is gone.
    for d in all {
        let o = cmd(d, &["break", "--lock", "stale", "--host", "admin"]);
        assert_eq!(
            (o.status.code(), stdout(&o).as_str()),
            (Some(0), "granted"),
            "{d}: {o:?}"
        );
    }
    let o = idm_real(&[&["dump", "--sim", s, "--lock", "stale", "--json"][..], &all].concat());
    let v = json(&o);
    let h = &v["summary"]["locks"][0]["hosts"][0];
    assert_eq!(
        (h["host_id"].clone(), h["live_on"].clone()),
        ("admin".into(), 3.into()),
        "{v}"
    );
    for d in all {
        let o = cmd(d, &["unlock", "--lock", "stale", "--host", "admin"]);
        assert_eq!(o.status.code(), Some(0), "{d}: {o:?}");
        let o = cmd(d, &["destroy", "--lock", "stale"]);
        assert_eq!(
            (o.status.code(), stdout(&o).as_str()),
            (Some(0), "destroyed"),
            "{d}: {o:?}"
        );
    }
    let o = idm_real(&[&["dump", "--sim", s, "--lock", "stale"][..], &all].concat());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        stdout(&o).contains("lock stale: on none of the drives read"),
        "{o:?}"
    );
    let o = cmd("sim0", &["destroy", "--lock", "stale"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).contains("no such lock"), "{o:?}");

    // One drive that cannot be read: the others are still shown, exit 2, and
    // the error names the drive.
    let o = idm_real(&["dump", "--sim", s, "sim0", "nope", "sim1"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stdout(&o).contains("== sim1"), "{o:?}");
    assert!(stdout(&o).contains("1 could not be read"), "{o:?}");
    assert!(stderr(&o).contains("`nope`"), "{o:?}");
}

/// Without `--sim` the drives are real devices; what is no IDM drive is refused
/// with one line naming it and the cause, exit 2, before anything is sent.
#[test]
fn dump_and_cmd_on_what_is_no_drive() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sg0");
    std::fs::write(&file, [0u8; 512]).unwrap();
    let file = file.to_str().unwrap();
    let missing = dir.path().join("sdz");
    let missing = missing.to_str().unwrap();
    let cases: [(&str, &str); 4] = [
        (missing, "no such device"),
        (file, "not a device node (a regular file)"),
        (
            dir.path().to_str().unwrap(),
            "not a device node (a directory)",
        ),
        ("/dev/null", "not a block, sg or NVMe device"),
    ];
    for (path, want) in cases {
        for args in [
            &["dump", path][..],
            &["dump", "--json", path],
            &["cmd", path, "count"],
            &["cmd", path, "break", "--lock", "l", "--host", "h"],
            &["cmd", path, "destroy", "--lock", "l"],
        ] {
            let o = idm_real(args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
            let err = stderr(&o);
            assert!(
                err.contains(&format!("`{path}`")) && err.contains(want),
                "{args:?}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
    // A simulator drive's name without --sim: a hint.
    let o = idm_real(&["dump", "sim0"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("--sim"), "{o:?}");
    // The mutex commands need the lock (and the host, but destroy).
    for args in [
        &["cmd", "/dev/null", "break", "--host", "h"][..],
        &["cmd", "/dev/null", "unlock", "--lock", "l"],
        &["cmd", "/dev/null", "destroy"],
    ] {
        let o = idm_real(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(stderr(&o).contains("required arguments"), "{args:?}: {o:?}");
    }
}

/// Every flag of `idm dump` and `idm cmd` says what it does.
#[test]
fn dump_and_cmd_help_covers_every_flag() {
    for (sub, flags) in [
        ("dump", &["--sim", "--lock", "--json", "--timeout"][..]),
        (
            "cmd",
            &[
                "--sim",
                "--lock",
                "--host",
                "--mode",
                "--countdown",
                "--lvb",
                "--client",
                "--timeout",
                "--json",
            ],
        ),
    ] {
        let o = idm_real(&[sub, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let help = stdout(&o);
        let lines: Vec<&str> = help.lines().collect();
        for f in flags {
            let i = lines
                .iter()
                .position(|l| l.trim_start().starts_with(f))
                .unwrap_or_else(|| panic!("{sub}: no {f}: {help}"));
            // The text follows the flag on its line, or on the next one.
            let own = lines[i].trim_start();
            let text = match own.find("  ") {
                Some(j) => own[j..].trim(),
                None => lines.get(i + 1).map_or("", |l| l.trim()),
            };
            assert!(
                !text.is_empty() && !text.starts_with('-'),
                "{sub} {f} has no help: {help}"
            );
        }
        assert!(help.contains("/dev/sgN"), "{sub}: {help}");
    }
}
