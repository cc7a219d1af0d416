//! The chaos test with real processes (`idm-chaos`): an `idm sim` server on a
//! Unix socket in a temporary directory, several client processes linking the
//! installed `libseagate_ilm` (`ffi/tests/c/chaos_client.c`) that contend for one
//! exclusive lock over its drives, and a seeded schedule of kill -9 of clients
//! (restarted with the same host ID), SIGSTOP past the lease then SIGCONT, and
//! drive faults on a minority of the drives (stall, I/O errors, dropped replies,
//! stop, power cycle). At the end [`check`] judges every process's log.
//!
//! Nothing here waits on a timer for synchronisation: processes and the server
//! are polled with deadlines; the schedule's own timing (when to inject the
//! next fault) is the only sleeping. Every child gets `PR_SET_PDEATHSIG`
//! (SIGKILL) and is killed when [`Children`] drops, so no exit path leaves one
//! behind.

pub mod check;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use idm_sim::{Control, ControlRequest, FaultCmd, ListenAddr};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub use check::{check, End, Incarnation, Pause, Rules, Verdict};

/// Exit status of a client whose fencing signal arrived.
const FENCED_STATUS: i32 = 3;

/// A chaos run's parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// Seconds of fault injection (the run adds a few seconds to drain).
    pub seconds: u64,
    /// Seed of the schedule (and of the simulator's dropped replies).
    pub seed: u64,
    /// Client processes (host IDs), 4-6 in the normal run.
    pub clients: usize,
    /// Simulated drives; faults hit at most `(drives - 1) / 2` at a time.
    pub drives: usize,
    /// The lease (`idm_lock_op.timeout`), ms.
    pub lease_ms: u64,
    /// `IDM_COMMAND_TIMEOUT_MS` of the clients.
    pub command_timeout_ms: u64,
    /// `IDM_LOCK_WAIT_MS` of the clients (the library caps it at half the lease).
    pub lock_wait_ms: u64,
    /// Longest hold inside a critical section, microseconds.
    pub hold_max_us: u64,
    /// Longest gap between unlock and the next lock, microseconds.
    pub gap_max_us: u64,
    /// Mean time between two injected events, ms.
    pub mean_interval_ms: u64,
    /// The repository (for `ffi/tests/c/chaos_client.c` and
    /// `scripts/install-ffi.sh`; cargo runs there).
    pub workspace: PathBuf,
    /// The `idm` binary; `None`: built with cargo and found through `cargo metadata`.
    pub idm: Option<PathBuf>,
    /// The directory holding `libseagate_ilm.so` and `.a`; `None`: as `idm`.
    pub lib_dir: Option<PathBuf>,
    /// Keep the temporary directory (logs) even when the run passes.
    pub keep: bool,
    /// Print each injected event.
    pub verbose: bool,
    /// The drive faults drawn from.
    pub faults: Vec<FaultKind>,
    /// A killed holder's restarted process must be the next to enter (see
    /// [`Rules::strict_take_back`]).
    pub strict_take_back: bool,
    /// `IDM_LOG_LEVEL` of the clients (their engine logs, `engine<slot>.log`).
    pub log_level: String,
}

impl Config {
    /// The defaults of the normal test run, for `seconds` of chaos.
    pub fn new(seconds: u64, seed: u64) -> Config {
        Config {
            seconds,
            seed,
            clients: 5,
            drives: 5,
            lease_ms: 2000,
            command_timeout_ms: 400,
            lock_wait_ms: 1000,
            hold_max_us: 30_000,
            gap_max_us: 5_000,
            mean_interval_ms: 700,
            workspace: Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
            idm: None,
            lib_dir: None,
            keep: false,
            verbose: false,
            log_level: "info".into(),
            strict_take_back: false,
            faults: FaultKind::ALL.to_vec(),
        }
    }
}

/// The kinds of drive fault injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Commands held for less than the command timeout.
    StallShort,
    /// Commands held past the command timeout, executed when the stall ends.
    StallLong,
    /// Every command answered with an I/O error.
    IoError,
    /// A share of replies dropped (the commands execute).
    Drop,
    /// Commands neither executed nor answered.
    Stop,
    /// Stopped, table lost, kept stopped two leases plus a second (the
    /// engine's assumption: a drive that lost its table stays away a countdown).
    PowerCycle,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::StallShort,
        FaultKind::StallLong,
        FaultKind::IoError,
        FaultKind::Drop,
        FaultKind::Stop,
        FaultKind::PowerCycle,
    ];

    /// The kinds after which every command is still answered (late or with an
    /// error): no reply is lost. Today's engine passes the run with these; a
    /// lost reply (stop, drop, power cycle) can leave a release hanging
    /// (`tests/chaos_findings.rs`).
    pub const ANSWERED: [FaultKind; 3] = [
        FaultKind::StallShort,
        FaultKind::StallLong,
        FaultKind::IoError,
    ];

    /// The kind called `name` ([`FaultKind::name`]).
    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Its name in the report (and on the command line).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::StallShort => "stall-short",
            FaultKind::StallLong => "stall-long",
            FaultKind::IoError => "io-error",
            FaultKind::Drop => "drop",
            FaultKind::Stop => "stop",
            FaultKind::PowerCycle => "power-cycle",
        }
    }
}

/// What a run did and what the checker found.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The checker's verdict.
    pub verdict: Verdict,
    /// Drive faults injected, by kind.
    pub faults: BTreeMap<FaultKind, usize>,
    /// Clients killed with SIGKILL (each restarted).
    pub kills: usize,
    /// Clients paused past the lease.
    pub pauses: usize,
    /// Clients restarted after their fence.
    pub fence_restarts: usize,
    /// Client exits the orchestrator did not cause (each a violation too).
    pub unexpected_exits: usize,
    /// Client processes started in all.
    pub processes: usize,
    /// Wall time of the run, s.
    pub wall_s: f64,
    /// The temporary directory, when kept.
    pub kept_dir: Option<PathBuf>,
}

impl Report {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.verdict.violations.is_empty()
    }

    /// The human summary, several lines.
    pub fn summary(&self, cfg: &Config) -> String {
        let v = &self.verdict;
        let faults: Vec<String> = FaultKind::ALL
            .iter()
            .map(|k| format!("{} {}", k.name(), self.faults.get(k).copied().unwrap_or(0)))
            .collect();
        let by_slot: Vec<String> = v.sections_by_slot.values().map(|n| n.to_string()).collect();
        let mut s = format!(
            "idm-chaos: seed {} ({} s of chaos, {} clients, {} drives, lease {} ms, command timeout {} ms, faults {})\n",
            self.seed,
            cfg.seconds,
            cfg.clients,
            cfg.drives,
            cfg.lease_ms,
            cfg.command_timeout_ms,
            cfg.faults.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
        );
        s += &format!(
            "  critical sections {} (per client {}), {} processes\n",
            v.sections.len(),
            by_slot.join(" "),
            self.processes
        );
        s += &format!("  drive faults: {}\n", faults.join(", "));
        s += &format!(
            "  kills {} (inside a critical section {}: taken back by the restarted process {}, entered first by another host {})\n",
            self.kills, v.kills_in_section, v.taken_back, v.taken_first_by_other.len()
        );
        s += &format!(
            "  pauses past the lease {} (inside a critical section {}); fences {} (restarted {}, false 0 allowed)\n",
            self.pauses, v.pauses_in_section, v.fences, self.fence_restarts
        );
        s += &format!(
            "  excused overlaps: stale holders (paused past the lease, then fenced) {} paused in the section + {} paused inside ilm_lock, overlapping {} sections of others ({} still running when the stale holder resumed); counter resyncs {}\n",
            v.excused_in_section, v.excused_in_lock, v.excused_overlapped, v.excused_after_resume, v.counter_resyncs
        );
        s += &format!(
            "  LVB: all-ones reads {}, went back after a power cycle (excused) {}\n",
            v.lvb_all_ones, v.lvb_back_after_power_cycle
        );
        s += &format!("  errors: {}\n", v.errors_line());
        s += &format!(
            "  violations {}, wall time {:.1} s\n",
            v.violations.len(),
            self.wall_s
        );
        for x in v.violations.iter().take(20) {
            s += &format!("  VIOLATION {x}\n");
        }
        if v.violations.len() > 20 {
            s += &format!("  ... {} more\n", v.violations.len() - 20);
        }
        if let Some(d) = &self.kept_dir {
            s += &format!("  logs kept in {}\n", d.display());
        }
        s
    }
}

/// `CLOCK_MONOTONIC` in ns (the clients log the same clock).
#[allow(clippy::expect_used)] // CLOCK_MONOTONIC always exists on Linux: an invariant.
pub fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Every child process of the run: killed (SIGKILL) and reaped on drop.
#[derive(Default)]
struct Children {
    sim: Option<Child>,
    clients: Vec<Option<Child>>,
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in self
            .clients
            .iter_mut()
            .chain(std::iter::once(&mut self.sim))
        {
            if let Some(mut c) = c.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A command whose process is killed when this process dies.
fn tied(program: &Path) -> Command {
    let mut c = Command::new(program);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    c
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// The `idm` binary and the library directory: given, or built with cargo
/// (same profile as this binary) and found in the target directory `cargo
/// metadata` reports.
fn binaries(cfg: &Config) -> Result<(PathBuf, PathBuf), String> {
    if let (Some(i), Some(l)) = (&cfg.idm, &cfg.lib_dir) {
        return Ok((i.clone(), l.clone()));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let release = !cfg!(debug_assertions);
    // Two builds: `--bin` would also keep the library of `-p idm-ffi` from
    // being built.
    for (pkg, target) in [("idm-tools", "--bin=idm"), ("idm-ffi", "--lib")] {
        let mut build = Command::new(&cargo);
        build
            .current_dir(&cfg.workspace)
            .args(["build", "-p", pkg, target]);
        if release {
            build.arg("--release");
        }
        build.stdout(Stdio::null());
        run_ok(&mut build, &format!("cargo build -p {pkg} {target}"))?;
    }
    let meta = run_ok(
        Command::new(&cargo).current_dir(&cfg.workspace).args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
        ]),
        "cargo metadata",
    )?;
    let meta: serde_json::Value =
        serde_json::from_slice(&meta).map_err(|e| format!("cargo metadata: {e}"))?;
    let target = meta["target_directory"]
        .as_str()
        .ok_or("cargo metadata: no target_directory")?;
    let dir = Path::new(target).join(if release { "release" } else { "debug" });
    Ok((
        cfg.idm.clone().unwrap_or_else(|| dir.join("idm")),
        cfg.lib_dir.clone().unwrap_or(dir),
    ))
}

/// Installs the library into `prefix` with `scripts/install-ffi.sh` and
/// compiles the client against it with the flags `pkg-config` gives.
fn compile_client(cfg: &Config, lib_dir: &Path, prefix: &Path) -> Result<PathBuf, String> {
    run_ok(
        Command::new("sh")
            .arg(cfg.workspace.join("scripts/install-ffi.sh"))
            .arg(prefix)
            .env("IDM_LIB_DIR", lib_dir),
        "scripts/install-ffi.sh",
    )?;
    let flags = run_ok(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "libseagate_ilm"])
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
        "pkg-config --cflags --libs libseagate_ilm",
    )?;
    let flags = String::from_utf8_lossy(&flags).to_string();
    let exe = prefix.join("chaos_client");
    run_ok(
        Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args([
                "-std=gnu11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-O1",
                "-g",
                "-o",
            ])
            .arg(&exe)
            .arg(cfg.workspace.join("ffi/tests/c/chaos_client.c"))
            .args(flags.split_whitespace())
            .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display())),
        "cc chaos_client.c (needs cc, pkg-config and uuid-dev)",
    )?;
    Ok(exe)
}

/// A client slot's state during the run.
struct Slot {
    /// Index into the incarnation list of its current process.
    current: usize,
    /// Paused since (ns), if it is.
    paused: Option<u64>,
    /// No event may pick it before this time (just resumed or started).
    calm_until: u64,
    /// Bytes of its log already read, and whether it is inside a section.
    read: usize,
    inside: bool,
    /// The last log line seen, and when (orchestrator's clock).
    last: (String, u64),
}

/// A drive's fault in progress.
struct DriveFault {
    kind: FaultKind,
    /// When it ends (heal / resume).
    until: u64,
}

struct Run<'a> {
    cfg: &'a Config,
    dir: PathBuf,
    client: PathBuf,
    addr: String,
    drive_names: Vec<String>,
    kids: Children,
    control: Control,
    slots: Vec<Slot>,
    incs: Vec<Incarnation>,
    resume_at: Vec<(u64, usize)>,
    drive_faults: Vec<Option<DriveFault>>,
    power_cycles: Vec<u64>,
    report_faults: BTreeMap<FaultKind, usize>,
    kills: usize,
    pauses: usize,
    fence_restarts: usize,
    unexpected: Vec<String>,
    rng: SmallRng,
    /// `events.log` in the run's directory: every injected event.
    events: fs::File,
}

impl Run<'_> {
    /// Records an event in `events.log` (and prints it when verbose).
    fn note(&mut self, what: std::fmt::Arguments<'_>) {
        use std::io::Write;
        let line = format!("{} {what}\n", now_ns());
        let _ = self.events.write_all(line.as_bytes());
        if self.cfg.verbose {
            print!("{line}");
        }
    }

    fn log_path(&self, slot: usize, number: u32) -> PathBuf {
        self.dir.join(format!("client{slot}.{number}.log"))
    }

    fn spawn(&mut self, slot: usize, number: u32) -> Result<(), String> {
        let cfg = self.cfg;
        let log = self.log_path(slot, number);
        let seed = self.rng.gen::<u32>();
        let child = tied(&self.client)
            .arg(slot.to_string())
            .arg(&log)
            .arg(self.dir.join("counter"))
            .arg(self.dir.join("stop"))
            .arg(cfg.lease_ms.to_string())
            .arg(cfg.hold_max_us.to_string())
            .arg(cfg.gap_max_us.to_string())
            .arg(seed.to_string())
            .args(&self.drive_names)
            .env("IDM_SIM", &self.addr)
            .env("IDM_COMMAND_TIMEOUT_MS", cfg.command_timeout_ms.to_string())
            .env("IDM_LOCK_WAIT_MS", cfg.lock_wait_ms.to_string())
            .env("IDM_REACTORS", "1")
            .env("IDM_LOG", self.dir.join(format!("engine{slot}.log")))
            .env("IDM_LOG_LEVEL", &cfg.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                fs::File::create(self.dir.join(format!("client{slot}.{number}.stderr")))
                    .map_err(|e| e.to_string())?,
            )
            .spawn()
            .map_err(|e| format!("cannot start the client: {e}"))?;
        self.kids.clients[slot] = Some(child);
        self.incs.push(Incarnation {
            slot,
            number,
            log: String::new(),
            pauses: Vec::new(),
            end: End::Running,
        });
        let now = now_ns();
        self.slots[slot] = Slot {
            current: self.incs.len() - 1,
            paused: None,
            calm_until: now + 3 * cfg.lease_ms * 1_000_000 / 2,
            read: 0,
            inside: false,
            last: ("start".into(), now),
        };
        Ok(())
    }

    fn pid(&self, slot: usize) -> Result<Pid, String> {
        let c = self.kids.clients[slot]
            .as_ref()
            .ok_or_else(|| format!("slot {slot} has no running client"))?;
        Ok(Pid::from_raw(c.id() as i32))
    }

    /// Reads new log lines of every client: who is inside a section now.
    fn tail_logs(&mut self) {
        for slot in 0..self.slots.len() {
            let path = self.log_path(slot, self.incs[self.slots[slot].current].number);
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let now = now_ns();
            let s = &mut self.slots[slot];
            let new = &text[s.read.min(text.len())..];
            let whole = new.rfind('\n').map_or(0, |i| i + 1);
            for line in new[..whole].lines() {
                let kind = line.split_whitespace().next().unwrap_or("");
                match kind {
                    "enter" => s.inside = true,
                    "exit" | "fenced" => s.inside = false,
                    _ => {}
                }
                s.last = (kind.to_string(), now);
            }
            s.read += whole;
        }
    }

    /// Reaps clients that exited; restarts them (same slot, same host ID).
    fn reap(&mut self, stopping: bool) -> Result<(), String> {
        for slot in 0..self.slots.len() {
            let Some(c) = self.kids.clients[slot].as_mut() else {
                continue;
            };
            let Some(status) = c.try_wait().map_err(|e| e.to_string())? else {
                continue;
            };
            let t = now_ns();
            self.kids.clients[slot] = None;
            let cur = self.slots[slot].current;
            let number = self.incs[cur].number;
            self.incs[cur].end = match (status.code(), status.signal()) {
                (Some(code), _) => End::Exited(code, t),
                (None, Some(sig)) => End::Signalled(sig, t),
                _ => End::Exited(-1, t),
            };
            match status.code() {
                Some(FENCED_STATUS) => self.fence_restarts += 1,
                Some(0) if stopping => continue,
                _ => self.unexpected.push(format!(
                    "slot {slot} process {number} exited by itself: {status} (see {})",
                    self.dir
                        .join(format!("client{slot}.{number}.stderr"))
                        .display()
                )),
            }
            if !stopping {
                self.spawn(slot, number + 1)?;
            }
        }
        Ok(())
    }

    fn fault(&mut self, drive: usize, f: FaultCmd) -> Result<(), String> {
        let name = &self.drive_names[drive];
        self.control
            .fault(name, f.clone())
            .map_err(|e| format!("fault {f:?} on {name}: {e}"))
    }

    /// Ends drive faults and pauses that are due.
    fn due(&mut self, now: u64) -> Result<(), String> {
        for d in 0..self.drive_faults.len() {
            if let Some(f) = self.drive_faults[d].take_if(|f| f.until <= now) {
                self.note(format_args!("heal sim{d} ({})", f.kind.name()));
                self.fault(d, FaultCmd::Heal)?;
            }
        }
        let mut i = 0;
        while i < self.resume_at.len() {
            if self.resume_at[i].0 <= now {
                let (_, slot) = self.resume_at.swap_remove(i);
                self.resume(slot)?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    fn resume(&mut self, slot: usize) -> Result<(), String> {
        let pid = self.pid(slot)?;
        // The time before SIGCONT: the process cannot run (nor be fenced)
        // before it, while after the call it may already have been.
        let t = now_ns();
        kill(pid, Signal::SIGCONT).map_err(|e| format!("SIGCONT: {e}"))?;
        let s = &mut self.slots[slot];
        let stop = s
            .paused
            .take()
            .ok_or_else(|| format!("slot {slot} was not paused"))?;
        self.incs[s.current].pauses.push(Pause { stop, cont: t });
        // Its fence (if it held the lock) comes now: leave it alone meanwhile.
        s.calm_until = t + 3 * self.cfg.lease_ms * 1_000_000 / 2;
        self.note(format_args!(
            "resume client{slot} after {} ms",
            (t - stop) / 1_000_000
        ));
        Ok(())
    }

    /// A slot an event may pick: running, not paused, calm; preferring one
    /// inside a critical section half of the time.
    fn pick_client(&mut self, now: u64) -> Option<usize> {
        let free: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                self.kids.clients[i].is_some()
                    && self.slots[i].paused.is_none()
                    && self.slots[i].calm_until <= now
            })
            .collect();
        if free.is_empty() {
            return None;
        }
        let inside: Vec<usize> = free
            .iter()
            .copied()
            .filter(|&i| self.slots[i].inside)
            .collect();
        if !inside.is_empty() && self.rng.gen_bool(0.5) {
            return Some(inside[0]);
        }
        Some(free[self.rng.gen_range(0..free.len())])
    }

    fn kill_client(&mut self, slot: usize) -> Result<(), String> {
        let mut c = self.kids.clients[slot]
            .take()
            .ok_or_else(|| format!("slot {slot} has no running client"))?;
        let killed = c.kill();
        let reaped = c.wait();
        killed.map_err(|e| format!("kill: {e}"))?;
        reaped.map_err(|e| format!("wait: {e}"))?;
        let t = now_ns();
        let cur = self.slots[slot].current;
        self.incs[cur].end = End::Killed(t);
        self.kills += 1;
        let inside = self.slots[slot].inside;
        self.note(format_args!("kill -9 client{slot} (inside: {inside})"));
        if self.cfg.verbose && self.slots[slot].inside {
            self.dump_tables();
        }
        let number = self.incs[cur].number;
        self.spawn(slot, number + 1)
    }

    /// Prints every drive's table (verbose runs).
    fn dump_tables(&mut self) {
        for d in self.drive_names.clone() {
            let r = self
                .control
                .request(&ControlRequest::DumpTable { drive: d.clone() });
            println!("  {d}: {r:?}");
        }
    }

    fn pause_client(&mut self, slot: usize, now: u64) -> Result<(), String> {
        let lease = self.cfg.lease_ms;
        let ms = self.rng.gen_range(lease + 500..=lease + 2500);
        kill(self.pid(slot)?, Signal::SIGSTOP).map_err(|e| format!("SIGSTOP: {e}"))?;
        self.slots[slot].paused = Some(now_ns());
        self.resume_at.push((now + ms * 1_000_000, slot));
        self.pauses += 1;
        let inside = self.slots[slot].inside;
        self.note(format_args!(
            "pause client{slot} for {ms} ms (inside: {inside})"
        ));
        Ok(())
    }

    fn drive_fault(&mut self, now: u64) -> Result<(), String> {
        let minority = (self.drive_faults.len() - 1) / 2;
        let busy = self.drive_faults.iter().filter(|f| f.is_some()).count();
        if busy >= minority {
            return Ok(());
        }
        let healthy: Vec<usize> = (0..self.drive_faults.len())
            .filter(|&d| self.drive_faults[d].is_none())
            .collect();
        let d = healthy[self.rng.gen_range(0..healthy.len())];
        if self.cfg.faults.is_empty() {
            return Ok(());
        }
        let kind = self.cfg.faults[self.rng.gen_range(0..self.cfg.faults.len())];
        let timeout = self.cfg.command_timeout_ms;
        let ms: u64 = match kind {
            FaultKind::StallShort => self.rng.gen_range(20..=timeout * 3 / 4),
            FaultKind::StallLong => self.rng.gen_range(timeout + 100..=3000),
            FaultKind::PowerCycle => 2 * self.cfg.lease_ms + 1000,
            _ => self.rng.gen_range(300..=3000),
        };
        match kind {
            FaultKind::StallShort | FaultKind::StallLong => {
                self.fault(d, FaultCmd::Stall { ms })?
            }
            FaultKind::IoError => self.fault(d, FaultCmd::IoError)?,
            FaultKind::Drop => {
                let percent = [25.0, 50.0, 100.0][self.rng.gen_range(0..3)];
                self.fault(d, FaultCmd::Drop { percent })?
            }
            FaultKind::Stop => self.fault(d, FaultCmd::Stop)?,
            FaultKind::PowerCycle => {
                self.fault(d, FaultCmd::Stop)?;
                self.fault(d, FaultCmd::PowerCycle)?;
                self.power_cycles.push(now_ns());
            }
        }
        self.note(format_args!("sim{d} {} for {ms} ms", kind.name()));
        *self.report_faults.entry(kind).or_default() += 1;
        // A stall ends by itself; the heal after it is harmless.
        self.drive_faults[d] = Some(DriveFault {
            kind,
            until: now + ms * 1_000_000,
        });
        Ok(())
    }

    fn event(&mut self, now: u64) -> Result<(), String> {
        let max_paused = (self.slots.len() - 1) / 2;
        match self.rng.gen_range(0..8) {
            0 | 1 => {
                if let Some(slot) = self.pick_client(now) {
                    self.kill_client(slot)?;
                }
            }
            2 | 3 => {
                let paused = self.slots.iter().filter(|s| s.paused.is_some()).count();
                if paused < max_paused {
                    if let Some(slot) = self.pick_client(now) {
                        self.pause_client(slot, now)?;
                    }
                }
            }
            _ => self.drive_fault(now)?,
        }
        Ok(())
    }
}

/// Polls `f` every millisecond until it returns `Some`, at most `limit`.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(x) = f() {
            return Some(x);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs the chaos test: builds or finds the binaries, starts the simulator
/// and the clients, injects the schedule, stops everything and checks the logs.
pub fn run(cfg: &Config) -> Result<Report, String> {
    let wall = std::time::Instant::now();
    if cfg.clients < 2 || cfg.drives < 3 {
        return Err("need at least 2 clients and 3 drives".into());
    }
    if cfg.lease_ms < 1000 || cfg.lease_ms < 2 * cfg.command_timeout_ms {
        return Err(format!(
            "the library refuses a {} ms lease with a {} ms command timeout (at least max(1000, 2 x timeout))",
            cfg.lease_ms, cfg.command_timeout_ms
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix("idm-chaos-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = tmp.path().to_path_buf();
    let (idm, lib_dir) = binaries(cfg)?;
    let client = compile_client(cfg, &lib_dir, &dir.join("prefix"))?;

    let mut kids = Children::default();
    let sock = dir.join("sim.sock");
    let addr = format!("unix:{}", sock.display());
    kids.sim = Some(
        tied(&idm)
            .args([
                "sim",
                "--drives",
                &cfg.drives.to_string(),
                "--listen",
                &addr,
            ])
            .args(["--seed", &cfg.seed.to_string()])
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("sim.log")).map_err(|e| e.to_string())?)
            .stderr(fs::File::create(dir.join("sim.stderr")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", idm.display()))?,
    );
    let listen: ListenAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let sim = kids.sim.as_mut().ok_or("the simulator did not start")?;
    let control = poll(Duration::from_secs(30), || {
        if let Ok(Some(st)) = sim.try_wait() {
            return Some(Err(format!("idm sim exited at once: {st}")));
        }
        let mut c = Control::connect(&listen).ok()?;
        c.request(&ControlRequest::Stats).ok()?;
        Some(Ok(c))
    })
    .ok_or("idm sim did not answer within 30 s")??;

    let mut run = Run {
        cfg,
        dir: dir.clone(),
        client,
        addr,
        drive_names: (0..cfg.drives).map(|i| format!("sim{i}")).collect(),
        kids,
        control,
        slots: Vec::new(),
        incs: Vec::new(),
        resume_at: Vec::new(),
        drive_faults: (0..cfg.drives).map(|_| None).collect(),
        power_cycles: Vec::new(),
        report_faults: BTreeMap::new(),
        kills: 0,
        pauses: 0,
        fence_restarts: 0,
        unexpected: Vec::new(),
        rng: SmallRng::seed_from_u64(cfg.seed),
        events: fs::File::create(dir.join("events.log")).map_err(|e| e.to_string())?,
    };
    run.kids.clients = (0..cfg.clients).map(|_| None).collect();
    for slot in 0..cfg.clients {
        run.slots.push(Slot {
            current: 0,
            paused: None,
            calm_until: 0,
            read: 0,
            inside: false,
            last: (String::new(), 0),
        });
        run.spawn(slot, 0)?;
    }

    // The chaos phase.
    let start = now_ns();
    let chaos_end = start + cfg.seconds * 1_000_000_000;
    let mut next = start + cfg.lease_ms * 1_000_000;
    loop {
        let now = now_ns();
        if now >= chaos_end {
            break;
        }
        run.reap(false)?;
        run.tail_logs();
        run.due(now)?;
        if now >= next {
            run.event(now)?;
            let gap = run
                .rng
                .gen_range(cfg.mean_interval_ms / 2..=cfg.mean_interval_ms * 3 / 2);
            next = now + gap * 1_000_000;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Drain: pauses and drive faults run out, then a calm lease, then stop.
    loop {
        let now = now_ns();
        run.reap(false)?;
        run.due(now)?;
        if run.resume_at.is_empty() && run.drive_faults.iter().all(|f| f.is_none()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let calm = now_ns() + 2 * cfg.lease_ms * 1_000_000;
    while now_ns() < calm {
        run.reap(false)?;
        std::thread::sleep(Duration::from_millis(5));
    }
    fs::write(dir.join("stop"), b"").map_err(|e| e.to_string())?;
    let stop_deadline = now_ns() + (4 * cfg.lease_ms + 10_000) * 1_000_000;
    while run.kids.clients.iter().any(|c| c.is_some()) && now_ns() < stop_deadline {
        run.reap(true)?;
        std::thread::sleep(Duration::from_millis(5));
    }
    run.tail_logs();
    for slot in 0..cfg.clients {
        if let Some(mut c) = run.kids.clients[slot].take() {
            let (kind, since) = run.slots[slot].last.clone();
            let call = match kind.as_str() {
                "lock" => "ilm_lock",
                "exit" | "unlock" => "ilm_unlock",
                "enter" => "ilm_read_lvb",
                "counter" => "its hold or ilm_write_lvb",
                _ => "?",
            };
            run.unexpected.push(format!(
                "slot {slot} did not stop: stuck in {call} for {:.1} s (last log line `{kind}`)",
                (now_ns() - since) as f64 / 1e9
            ));
            let _ = c.kill();
            let _ = c.wait();
            let cur = run.slots[slot].current;
            run.incs[cur].end = End::Killed(now_ns());
        }
    }

    for i in 0..run.incs.len() {
        let (slot, number) = (run.incs[i].slot, run.incs[i].number);
        run.incs[i].log = fs::read_to_string(run.log_path(slot, number)).unwrap_or_default();
    }
    let rules = Rules {
        lease_ns: cfg.lease_ms * 1_000_000,
        fence_window_ns: (cfg.lease_ms + 3000) * 1_000_000,
        strict_take_back: cfg.strict_take_back,
    };
    let mut verdict = check(&run.incs, &run.power_cycles, &rules);
    verdict.violations.extend(run.unexpected.iter().cloned());
    let passed = verdict.violations.is_empty();
    let kept_dir = if cfg.keep || !passed {
        Some(tmp.keep())
    } else {
        None
    };
    Ok(Report {
        seed: cfg.seed,
        verdict,
        faults: run.report_faults.clone(),
        kills: run.kills,
        pauses: run.pauses,
        fence_restarts: run.fence_restarts,
        unexpected_exits: run.unexpected.len(),
        processes: run.incs.len(),
        wall_s: wall.elapsed().as_secs_f64(),
        kept_dir,
    })
}
