//! One simulation run: hosts, drives and links under a fault profile, from a seed.
//!
//! Everything random comes from generators seeded from the run's seed, the event
//! queue breaks ties by scheduling order, and no hash map is iterated: so one seed
//! always gives a bit-identical trace, summarised by [`RunReport::trace_hash`].
//!
//! The shape of a run is drawn from the seed too: 2–5 hosts, 1–4 locks, 2–5 drives
//! (every lock spans every drive), a 1 s lease with the engine's default policy
//! ([`LeasePolicy::for_lease`]), a 40 ms command timeout. The workload runs until
//! `ops` lock operations (acquires and releases) reported an outcome; then faults
//! stop, no new acquire starts, and the run drains until every host is idle.
//!
//! **Timed-out commands.** A command whose timeout the host's transport reported
//! before the drive executed it never executes: that is what the SCSI midlayer
//! guarantees (it aborts a timed-out command, with an ABORT TASK or a reset, before
//! it completes it as timed out), and the engine relies on it (a drive's next
//! command on a lock is sent once the previous one answered or timed out). A
//! command that executed before its timeout fired still has its effect; only its
//! reply is lost.

use std::collections::BTreeSet;

use idm_engine::fencing::LeasePolicy;
use idm_engine::Nanos;
use idm_sim::firmware::FirmwareConfig;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use uring_sg::transport::{Reply, Request};
use uring_sg::{Class, HostId, LockId, MutexOp, Record};

use crate::checker::{Checker, Violation};
use crate::drive::SimDrive;
use crate::faults::{self, Fault, FaultProfile};
use crate::host::{Bug, Ctx, Host, HostConfig, Send, Stats};
use crate::net::{Fate, Net};
use crate::world::{Clock, EventQueue};

/// The lease (membership countdown) of every lock.
pub const LEASE: Nanos = Nanos::from_millis(1000);
/// The transport timeout of every command.
pub const CMD_TIMEOUT: Nanos = Nanos::from_millis(40);
/// While only a minority of drives misbehaves, a release, LVB read or host count
/// answers within this (a few round trips of the healthy majority, far below one
/// command timeout).
pub const OP_BOUND: Nanos = Nanos::from_millis(15);
/// After faults stop, every waiting acquire must finish within this.
pub const LIVENESS_BOUND: Nanos = Nanos::from_secs(3);
/// Longest drain after faults stop.
pub const DRAIN_LIMIT: Nanos = Nanos::from_secs(30);
/// Longest simulated time of a run.
pub const SIM_LIMIT: Nanos = Nanos::from_secs(3600);

/// What a run reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Lock operations (acquire, release) that reported an outcome.
    pub ops_done: u64,
    /// Violations found (at most [`crate::checker::MAX_KEPT`]).
    pub violations: Vec<Violation>,
    /// How many violations were found.
    pub violation_count: usize,
    /// A hash of every event processed, in order.
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Simulated (true) time at the end.
    pub sim_time: Nanos,
    /// Counters.
    pub stats: Stats,
    /// The replay command.
    pub replay: String,
}

/// Optional knobs beyond seed, ops and profile.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunOptions {
    /// A planted host bug.
    pub bug: Bug,
    /// Force this many drives (else drawn from the seed).
    pub drives: Option<u16>,
}

enum Ev {
    CmdArrive {
        host: usize,
        epoch: u32,
        drive: usize,
        cmd: u64,
        req: Box<Request>,
    },
    DriveExec {
        host: usize,
        epoch: u32,
        drive: usize,
        cmd: u64,
        req: Box<Request>,
    },
    ReplyArrive {
        host: usize,
        epoch: u32,
        cmd: u64,
        reply: Reply,
    },
    CmdTimeout {
        host: usize,
        epoch: u32,
        cmd: u64,
    },
    HostWake {
        host: usize,
        epoch: u32,
        gen: u64,
    },
    HostRestart {
        host: usize,
    },
    FaultTick,
}

struct HostCell {
    host: Option<Host>,
    id: HostId,
    epoch: u32,
    incarnation: u64,
    paused_until: Nanos,
    wake_gen: u64,
    wake_at: Option<Nanos>,
}

struct Sim {
    seed: u64,
    ops: u64,
    profile: FaultProfile,
    opts: RunOptions,
    q: EventQueue<Ev>,
    net: Net,
    drives: Vec<SimDrive>,
    hosts: Vec<HostCell>,
    locks: Vec<LockId>,
    cfg: HostConfig,
    checker: Checker,
    stats: Stats,
    rng: SmallRng,
    fault_rng: SmallRng,
    sends: Vec<Send>,
    stopping: bool,
    hash: u64,
    events: u64,
    /// Commands sent and not yet executed by their drive: `(host, epoch, cmd)`.
    unexecuted: BTreeSet<(usize, u32, u64)>,
    /// Commands whose host reported them timed out before they executed: they
    /// never execute (see the module docs).
    aborted: BTreeSet<(usize, u32, u64)>,
}

fn fnv(h: u64, x: u64) -> u64 {
    let mut h = h;
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

fn reply_code(r: &Reply) -> u64 {
    match r.result {
        Ok(()) => 1 + r.data.len() as u64,
        Err(e) => 1_000_000 + e.errno() as u64 * 100 + u64::from(e.is_io()),
    }
}

impl Sim {
    fn new(seed: u64, ops: u64, profile: FaultProfile, opts: RunOptions) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n_hosts = rng.gen_range(2..=5usize);
        let n_locks = rng.gen_range(1..=4usize);
        let sizes: &[u16] = if profile.minority {
            &[3, 4, 5, 5]
        } else {
            &[2, 3, 3, 4, 5, 5]
        };
        let n_drives = opts.drives.unwrap_or(sizes[rng.gen_range(0..sizes.len())]) as usize;
        // Some runs' drives surface BUSY only as a command timeout, as Linux's
        // SCSI midlayer does (it requeues BUSY until the command times out).
        let busy_as_timeout = rng.gen_bool(0.3);
        let ppm = |rng: &mut SmallRng| {
            if profile.drift_ppm == 0 {
                0
            } else {
                rng.gen_range(-profile.drift_ppm..=profile.drift_ppm)
            }
        };
        let mut fw_cfg = FirmwareConfig::default();
        let small = rng.gen_bool(profile.p_small_table);
        let junk = if small { rng.gen_range(1..8usize) } else { 0 };
        if small {
            fw_cfg.capacity = junk + n_locks + rng.gen_range(0..=n_locks * n_hosts / 2);
        }
        let mut drives: Vec<SimDrive> = (0..n_drives)
            .map(|_| {
                let base = Nanos(rng.gen_range(0..1_000_000_000_000));
                let mut d = SimDrive::new(fw_cfg, Clock::new(Nanos::ZERO, base, ppm(&mut rng)));
                d.busy_as_timeout = busy_as_timeout;
                d
            })
            .collect();
        // A near-full table: unlocked leftovers of another host fill it.
        let junk_host: HostId = "junk-host".parse().unwrap_or_default();
        for d in &mut drives {
            for j in 0..junk {
                let id: LockId = format!("junk-{j}").parse().unwrap_or_default();
                let mut rec = Record::new(id, junk_host, Class::Exclusive);
                rec.countdown_ms = 1000;
                let t = d.clock().local_ms(Nanos::ZERO);
                d.firmware_mut().apply(t, MutexOp::Trylock, &rec);
                d.firmware_mut().apply(t, MutexOp::Unlock, &rec);
            }
        }
        let locks: Vec<LockId> = (0..n_locks)
            .map(|i| format!("lock-{i}").parse().unwrap_or_default())
            .collect();
        let cfg = HostConfig {
            policy: LeasePolicy::for_lease(LEASE),
            cmd_timeout: CMD_TIMEOUT,
            n_drives: n_drives as u16,
            bug: opts.bug,
            // With BUSY surfacing as a timeout, a release's re-trylock of a drive
            // another host holds costs a command timeout by the kernel's design:
            // the bound is checked only where the drives answer BUSY.
            op_bound: (!busy_as_timeout).then_some(OP_BOUND),
        };
        let net = Net::new(
            profile.net,
            SmallRng::seed_from_u64(rng.gen()),
            n_hosts,
            n_drives,
        );
        let fault_rng = SmallRng::seed_from_u64(rng.gen());
        let hosts = (0..n_hosts)
            .map(|h| HostCell {
                host: None,
                id: format!("host-{h}").parse().unwrap_or_default(),
                epoch: 0,
                incarnation: 0,
                paused_until: Nanos::ZERO,
                wake_gen: 0,
                wake_at: None,
            })
            .collect();
        let mut sim = Sim {
            seed,
            ops,
            profile,
            opts,
            q: EventQueue::new(),
            net,
            drives,
            hosts,
            locks,
            cfg,
            checker: Checker::new(LIVENESS_BOUND, n_drives),
            stats: Stats::default(),
            rng,
            fault_rng,
            sends: Vec::new(),
            stopping: false,
            hash: 0xCBF2_9CE4_8422_2325,
            events: 0,
            unexecuted: BTreeSet::new(),
            aborted: BTreeSet::new(),
        };
        sim.stats.small_table = small;
        sim.checker.minority_only = profile.minority;
        for h in 0..n_hosts {
            sim.start_host(h);
        }
        if profile.any() {
            sim.q.push(profile.tick, Ev::FaultTick);
        }
        sim
    }

    fn start_host(&mut self, h: usize) {
        let now = self.q.now();
        let ppm = if self.profile.drift_ppm == 0 {
            0
        } else {
            self.rng
                .gen_range(-self.profile.drift_ppm..=self.profile.drift_ppm)
        };
        let base = Nanos(self.rng.gen_range(0..1_000_000_000_000));
        let cell = &mut self.hosts[h];
        cell.epoch += 1;
        cell.incarnation += 1;
        cell.paused_until = now;
        cell.wake_at = None;
        let hrng = SmallRng::seed_from_u64(self.seed ^ (h as u64) << 32 ^ cell.incarnation);
        cell.host = Some(Host::new(
            h,
            cell.id,
            Clock::new(now, base, ppm),
            self.cfg,
            &self.locks,
            hrng,
            now,
        ));
        self.after_host(h);
    }

    fn ctx_parts(&mut self) -> Ctx<'_> {
        Ctx {
            now: self.q.now(),
            sends: &mut self.sends,
            checker: &mut self.checker,
            stats: &mut self.stats,
            may_start: !self.stopping,
        }
    }

    /// After a host ran: send its commands, check its uses, schedule its wake-up.
    fn after_host(&mut self, h: usize) {
        let now = self.q.now();
        let epoch = self.hosts[h].epoch;
        let sends = std::mem::take(&mut self.sends);
        for s in &sends {
            self.unexecuted.insert((h, epoch, s.cmd));
            if let Fate::Deliver(at) = self.net.command(h, s.drive as usize, now) {
                self.q.push(
                    at,
                    Ev::CmdArrive {
                        host: h,
                        epoch,
                        drive: s.drive as usize,
                        cmd: s.cmd,
                        req: Box::new(s.req),
                    },
                );
            }
            self.q.push(
                s.timeout_at,
                Ev::CmdTimeout {
                    host: h,
                    epoch,
                    cmd: s.cmd,
                },
            );
        }
        self.sends = sends;
        self.sends.clear();
        let Some(host) = self.hosts[h].host.as_ref() else {
            return;
        };
        // Invariant 2: every lock this host believes held is in use now.
        let n = self.cfg.n_drives;
        for s in &host.slots {
            if s.believed.is_some() {
                let live = self
                    .drives
                    .iter()
                    .filter(|d| d.live_member(&s.id, &host.host_id, now))
                    .count() as u16;
                self.checker.use_lock(h, s.lock, now, live, n);
            }
        }
        let wake = host
            .wake(!self.stopping)
            .map(|l| host.clock.true_at(l).max(now));
        let cell = &mut self.hosts[h];
        if wake != cell.wake_at {
            cell.wake_at = wake;
            cell.wake_gen += 1;
            if let Some(at) = wake {
                let gen = cell.wake_gen;
                self.q.push(
                    at,
                    Ev::HostWake {
                        host: h,
                        epoch: cell.epoch,
                        gen,
                    },
                );
            }
        }
    }

    fn apply_fault(&mut self, f: Fault) {
        let now = self.q.now();
        let k = match f {
            Fault::DriveCrash { .. } => 0,
            Fault::DriveStall { .. } => 1,
            Fault::Partition { .. } => 2,
            Fault::HostCrash { .. } => 3,
            Fault::HostPause { .. } => 4,
        };
        self.stats.faults[k] += 1;
        match f {
            Fault::DriveCrash { drive, down } => {
                self.drives[drive].power_cycle(now, now + down);
                self.checker.drive_power_cycle(drive, now);
            }
            Fault::DriveStall { drive, dur } => self.drives[drive].stall(now + dur),
            Fault::Partition { host, drives, dur } => {
                for d in 0..self.drives.len() {
                    if drives & (1 << d) != 0 {
                        self.net.partition(host, d, now + dur);
                    }
                }
            }
            Fault::HostCrash { host, down } => {
                if let Some(mut hst) = self.hosts[host].host.take() {
                    let mut ctx = self.ctx_parts();
                    hst.crash(&mut ctx);
                    self.hosts[host].epoch += 1;
                    self.q.push(now + down, Ev::HostRestart { host });
                }
            }
            Fault::HostPause { host, dur } => {
                let c = &mut self.hosts[host];
                c.paused_until = c.paused_until.max(now + dur);
            }
        }
    }

    /// The workload is done: faults stop, everything heals.
    fn stop_faults(&mut self) {
        let now = self.q.now();
        self.stopping = true;
        self.checker.faults_end = Some(now);
        self.net.calm();
        for d in &mut self.drives {
            d.heal(now, self.profile.drive_down_min);
        }
        for h in 0..self.hosts.len() {
            self.hosts[h].paused_until = self.hosts[h].paused_until.min(now);
            match self.hosts[h].host.take() {
                None => self.start_host(h),
                Some(mut host) => {
                    // The host runs now (a paused one resumes): it checks its
                    // leases before anything else.
                    let mut ctx = self.ctx_parts();
                    host.poll(&mut ctx);
                    self.hosts[h].host = Some(host);
                    self.after_host(h);
                }
            }
        }
    }

    fn host_event(&mut self, h: usize, epoch: u32, ev: Ev) {
        let now = self.q.now();
        let cell = &self.hosts[h];
        if cell.host.is_none() || cell.epoch != epoch {
            return;
        }
        if now < cell.paused_until {
            let until = cell.paused_until;
            self.q.push(until, ev);
            return;
        }
        if let Ev::HostWake { gen, .. } = &ev {
            if *gen != self.hosts[h].wake_gen {
                return; // superseded by a later wake-up
            }
            self.hosts[h].wake_at = None;
        }
        if let Ev::CmdTimeout { cmd, .. } = &ev {
            // The transport reports the timeout only once the command can no
            // longer take effect (the SCSI midlayer aborts it first).
            if self.unexecuted.remove(&(h, epoch, *cmd)) {
                self.aborted.insert((h, epoch, *cmd));
            }
        }
        let Some(mut host) = self.hosts[h].host.take() else {
            return;
        };
        {
            let mut ctx = self.ctx_parts();
            match &ev {
                Ev::ReplyArrive { cmd, reply, .. } => host.on_reply(&mut ctx, *cmd, reply),
                Ev::CmdTimeout { cmd, .. } => host.on_timeout(&mut ctx, *cmd),
                Ev::HostWake { .. } => host.on_timer(&mut ctx),
                _ => {}
            }
        }
        self.hosts[h].host = Some(host);
        self.after_host(h);
    }

    fn step(&mut self) -> bool {
        let Some((now, ev)) = self.q.pop() else {
            return false;
        };
        self.events += 1;
        let (tag, a, b, c) = match &ev {
            Ev::CmdArrive {
                host, drive, cmd, ..
            } => (1, *host as u64, *drive as u64, *cmd),
            Ev::DriveExec {
                host, drive, cmd, ..
            } => (2, *host as u64, *drive as u64, *cmd),
            Ev::ReplyArrive {
                host, cmd, reply, ..
            } => (3, *host as u64, reply_code(reply), *cmd),
            Ev::CmdTimeout { host, cmd, .. } => (4, *host as u64, 0, *cmd),
            Ev::HostWake { host, gen, .. } => (5, *host as u64, 0, *gen),
            Ev::HostRestart { host } => (6, *host as u64, 0, 0),
            Ev::FaultTick => (7, 0, 0, 0),
        };
        for x in [now.0, tag, a, b, c] {
            self.hash = fnv(self.hash, x);
        }
        match ev {
            Ev::CmdArrive {
                host,
                epoch,
                drive,
                cmd,
                req,
            } => {
                if self.aborted.contains(&(host, epoch, cmd)) {
                    return true;
                }
                if let Some(at) = self.drives[drive].arrive(now) {
                    self.q.push(
                        at,
                        Ev::DriveExec {
                            host,
                            epoch,
                            drive,
                            cmd,
                            req,
                        },
                    );
                }
            }
            Ev::DriveExec {
                host,
                epoch,
                drive,
                cmd,
                req,
            } => {
                if self.aborted.remove(&(host, epoch, cmd)) {
                    return true;
                }
                self.unexecuted.remove(&(host, epoch, cmd));
                if let Some(reply) = self.drives[drive].execute(now, &req) {
                    if let Request::Mutex { record, .. } = &*req {
                        // Mirror what the drive stores for the run's locks (LVB check).
                        if let Some(lock) = self.locks.iter().position(|l| *l == record.lock_id) {
                            let v = self.drives[drive].stored_lvb(&record.lock_id);
                            self.checker.drive_lvb(lock, drive, now, v);
                        }
                    }
                    if let Fate::Deliver(at) = self.net.reply(host, drive, now) {
                        self.q.push(
                            at,
                            Ev::ReplyArrive {
                                host,
                                epoch,
                                cmd,
                                reply,
                            },
                        );
                    }
                }
            }
            ev @ (Ev::ReplyArrive { .. } | Ev::CmdTimeout { .. } | Ev::HostWake { .. }) => {
                let (h, e) = match &ev {
                    Ev::ReplyArrive { host, epoch, .. }
                    | Ev::CmdTimeout { host, epoch, .. }
                    | Ev::HostWake { host, epoch, .. } => (*host, *epoch),
                    _ => (0, 0),
                };
                self.host_event(h, e, ev);
            }
            Ev::HostRestart { host } => {
                if self.hosts[host].host.is_none() {
                    self.start_host(host);
                }
            }
            Ev::FaultTick => {
                if !self.stopping {
                    let n_hosts = self.hosts.len();
                    let n_drives = self.drives.len();
                    if let Some(f) =
                        faults::draw(&self.profile, &mut self.fault_rng, n_hosts, n_drives)
                    {
                        self.hash = fnv(self.hash, 0xF417);
                        self.apply_fault(f);
                    }
                    self.q.push(now + self.profile.tick, Ev::FaultTick);
                }
            }
        }
        true
    }

    fn all_quiet(&self) -> bool {
        self.hosts
            .iter()
            .all(|c| c.host.as_ref().is_some_and(|h| h.quiescent()))
    }

    fn run(mut self) -> RunReport {
        loop {
            if !self.stopping && self.stats.ops_done >= self.ops {
                self.stop_faults();
            }
            let now = self.q.now();
            if self.stopping {
                let fe = self.checker.faults_end.unwrap_or(now);
                if self.all_quiet() || now > fe + DRAIN_LIMIT {
                    break;
                }
            } else if now > SIM_LIMIT {
                self.stop_faults();
            }
            if !self.step() {
                break;
            }
        }
        let now = self.q.now();
        for h in 0..self.hosts.len() {
            let waiting = self.hosts[h]
                .host
                .as_ref()
                .map(|x| x.waiting_acquires())
                .unwrap_or_default();
            for (lock, started) in waiting {
                self.checker.acquire_stuck(h, lock, started, now);
            }
        }
        self.checker.close_all(now);
        self.stats.lvb_excused = self.checker.lvb_excused();
        self.stats.lvb_losses = self.checker.lvb_losses();
        let violation_count = self.checker.violation_count();
        RunReport {
            seed: self.seed,
            ops_done: self.stats.ops_done,
            violations: self.checker.take_violations(),
            violation_count,
            trace_hash: self.hash,
            events: self.events,
            sim_time: now,
            stats: self.stats,
            replay: replay_command(self.seed, self.ops, &self.profile, &self.opts),
        }
    }
}

/// The command that replays one run.
pub fn replay_command(seed: u64, ops: u64, profile: &FaultProfile, opts: &RunOptions) -> String {
    let mut s = format!(
        "cargo run -p idm-tests --release --bin idm-soak -- --start-seed {seed} --seeds 1 --ops {ops} --faults {}",
        profile.name
    );
    match opts.bug {
        Bug::None => {}
        Bug::MinorityQuorum => s.push_str(" --bug minority-quorum"),
        Bug::TrustReplyTime => s.push_str(" --bug trust-reply-time"),
    }
    if let Some(d) = opts.drives {
        s.push_str(&format!(" --drives {d}"));
    }
    s
}

/// Runs one simulation: `seed`, until `ops` lock operations completed, under `profile`.
pub fn run(seed: u64, ops: u64, profile: FaultProfile) -> RunReport {
    run_with(seed, ops, profile, RunOptions::default())
}

/// [`run`] with extra options (planted bug, drive count).
pub fn run_with(seed: u64, ops: u64, profile: FaultProfile, opts: RunOptions) -> RunReport {
    let report = Sim::new(seed, ops, profile, opts).run();
    if report.violation_count > 0 && opts.bug == Bug::None {
        eprintln!(
            "seed {seed}: {} violation(s); replay with: {}",
            report.violation_count, report.replay
        );
        for v in report.violations.iter().take(5) {
            eprintln!("  {v}");
        }
    }
    report
}
