//! A simulated host: the engine's own [`LockTable`] (the per-lock lifecycle the
//! reactor runs in production: queueing, renewal, fencing, answering at quorum,
//! late replies, unresponsive drives, command timeouts) with a seeded workload as
//! its caller, on its own drifting clock.
//!
//! This module decides nothing the engine decides. It is the caller and the
//! transport: it asks for locks, holds them for a while, reads and writes LVBs,
//! converts, releases; it carries the table's commands to the simulated drives and
//! their replies (or timeouts) back; and it reports to the [`Checker`] what the
//! caller was told. Every lock has a lockspace of its own (so a fence ends one
//! lock's lockspace, as lvmlockd's kill path ends one VG's); a fenced lockspace is
//! replaced by a fresh one once its lock is released, as a restarted client would.
//!
//! Per lock the workload cycles: idle (think time) → acquire EX or SH with a
//! deadline → hold, perhaps reading the LVB or converting → write an LVB (after an
//! EX hold) and release. When its lockspace is fenced the holder stops believing it
//! holds the lock and then — like a confused late client — still writes an LVB and
//! releases: the engine must refuse to store it (invariant 9 and "an LVB never goes
//! back").
//!
//! The host never sees true time: every table call gets `Now` from its [`Clock`].
//! What it is told is reported to the checker in true time (the harness knows the
//! mapping).
//!
//! **Planted bugs.** [`Bug`] sets the table's [`PlantedBug`] (a deliberately wrong
//! rule inside the production table), to prove the checker catches it.

use std::cell::Cell;
use std::collections::HashMap;

use idm_engine::fencing::LeasePolicy;
use idm_engine::locks::{
    Event, LockRequest, LockTable, LockspaceCtl, LockspaceId, LockspaceInfo, OpKind, OpOutput,
    Output, PlantedBug, TableConfig,
};
use idm_engine::protocol::{LockState, Now};
use idm_engine::Nanos;
use rand::rngs::SmallRng;
use rand::Rng;
use uring_sg::transport::{Reply, Request};
use uring_sg::{DriveError, HostId, LockId, Lvb, Mode};

use crate::checker::{Checker, ViolationKind};
use crate::world::Clock;

/// Wall-clock origin written into records (ms since the epoch at local time zero).
pub const WALL0_MS: u64 = 1_700_000_000_000;

/// A deliberately wrong host rule (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Bug {
    /// The correct rules.
    #[default]
    None,
    /// ⌊N/2⌋ grants count as held; validity over ⌊N/2⌋ drives.
    MinorityQuorum,
    /// Validity from reply-processing time instead of send time.
    TrustReplyTime,
}

impl Bug {
    fn planted(self) -> PlantedBug {
        match self {
            Bug::None => PlantedBug::None,
            Bug::MinorityQuorum => PlantedBug::MinorityQuorum,
            Bug::TrustReplyTime => PlantedBug::TrustReplyTime,
        }
    }
}

/// How hosts of a run behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// Renewal and fencing.
    pub policy: LeasePolicy,
    /// Transport timeout of every command (host clock).
    pub cmd_timeout: Nanos,
    /// Drives per lock (every lock spans all drives).
    pub n_drives: u16,
    /// A planted bug.
    pub bug: Bug,
    /// Bound on a release / LVB read / host count while only a minority of drives
    /// misbehaves (invariant 7; `None`: not checked).
    pub op_bound: Option<Nanos>,
}

/// Counters of one run.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Lock operations that reported an outcome (acquire, release).
    pub ops_done: u64,
    /// Acquires that succeeded.
    pub acquired: u64,
    /// Acquires that failed busy / timed out.
    pub acquire_busy: u64,
    /// Acquires that failed otherwise (I/O, table full, lease lost, ...).
    pub acquire_err: u64,
    /// Releases that reached a majority.
    pub released: u64,
    /// Releases that failed (fenced releases included).
    pub release_err: u64,
    /// Renewals that reached a majority.
    pub renewed: u64,
    /// Renewals that failed.
    pub renew_err: u64,
    /// Converts that succeeded.
    pub converted: u64,
    /// Converts that failed (rolled back).
    pub convert_err: u64,
    /// LVB reads that succeeded.
    pub lvb_reads: u64,
    /// LVB reads that failed.
    pub lvb_read_err: u64,
    /// Host counts answered.
    pub host_counts: u64,
    /// Lockspaces fenced.
    pub fences: u64,
    /// Drive commands sent.
    pub commands: u64,
    /// Command timeouts delivered.
    pub timeouts: u64,
    /// Replies absorbed after their caller was answered.
    pub late_replies: u64,
    /// Times a drive was marked unresponsive.
    pub unresponsive: u64,
    /// Faults injected: drive power cycles, stalls, partitions, host crashes, pauses.
    pub faults: [u64; 5],
    /// The drives had a near-full table.
    pub small_table: bool,
    /// LVB reads that went back, excused because drives lost the lock's mutex:
    /// `[power cycle, destroy by table clean-up]` (see [`crate::checker`]).
    pub lvb_excused: [u64; 2],
    /// Times a drive lost one of the run's lock mutexes holding a non-zero LVB:
    /// `[power cycle, destroy by table clean-up]`.
    pub lvb_losses: [u64; 2],
}

/// A command the host sends now.
#[derive(Clone, Debug)]
pub struct Send {
    /// Drive number.
    pub drive: u16,
    /// The host's command id.
    pub cmd: u64,
    /// The request.
    pub req: Request,
    /// True time at which the host's transport times the command out.
    pub timeout_at: Nanos,
}

/// What a host call may touch.
pub struct Ctx<'a> {
    /// True time.
    pub now: Nanos,
    /// Commands to send.
    pub sends: &'a mut Vec<Send>,
    /// The invariant checker.
    pub checker: &'a mut Checker,
    /// Run counters.
    pub stats: &'a mut Stats,
    /// Whether new acquires may start (the workload is still running).
    pub may_start: bool,
}

/// A simulated lockspace's flags.
#[derive(Debug, Default)]
pub struct SimLockspace {
    fenced: Cell<bool>,
}

impl LockspaceCtl for SimLockspace {
    fn name(&self) -> &str {
        "sim"
    }
    fn is_fenced(&self) -> bool {
        self.fenced.get()
    }
    fn mark_fenced(&self) -> bool {
        !self.fenced.replace(true)
    }
    fn renew_paused(&self) -> bool {
        false
    }
    fn fault_percent(&self) -> u32 {
        0
    }
}

/// Who the table answers: lock slot and the request's serial.
type Caller = (usize, u64);

/// The request a slot waits for.
#[derive(Clone, Copy, Debug)]
struct Asked {
    serial: u64,
    kind: Ask,
    started: Nanos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Acquire(Mode),
    Release(Option<u64>, bool),
    Convert(Mode),
    ReadLvb,
    HostCount,
    WriteLvb,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle {
        at: Nanos,
    },
    Acquiring,
    Holding {
        until: Nanos,
        mode: Mode,
    },
    /// The lockspace was fenced while held: release (with a stale LVB) next.
    Fenced,
    Releasing,
}

/// One lock as this host's workload sees it.
pub struct Slot {
    /// Lock index in the run.
    pub lock: usize,
    /// The lock's ID.
    pub id: LockId,
    /// Its current lockspace.
    pub ls: LockspaceId,
    phase: Phase,
    asked: Option<Asked>,
    /// The mode this host believes it holds the lock in (reported to the checker).
    pub believed: Option<Mode>,
    want_read: bool,
    want_convert: bool,
    want_count: bool,
}

/// One simulated host (one incarnation: a crash makes a new one).
pub struct Host {
    /// Host index in the run.
    pub idx: usize,
    /// The host's clock.
    pub clock: Clock,
    /// The host's ID on the drives.
    pub host_id: HostId,
    cfg: HostConfig,
    /// The host's locks.
    pub slots: Vec<Slot>,
    table: LockTable<Caller, SimLockspace>,
    out: Output<Caller>,
    /// Host command id → table key.
    outstanding: HashMap<u64, u64>,
    next_cmd: u64,
    next_serial: u64,
    next_ls: LockspaceId,
    rng: SmallRng,
}

impl Host {
    /// A host (incarnation) starting at true time `now`.
    pub fn new(
        idx: usize,
        host_id: HostId,
        clock: Clock,
        cfg: HostConfig,
        locks: &[LockId],
        mut rng: SmallRng,
        now: Nanos,
    ) -> Host {
        let local = clock.local(now);
        let mut tcfg = TableConfig::new(cfg.cmd_timeout, rng.gen());
        tcfg.planted_bug = cfg.bug.planted();
        let mut host = Host {
            idx,
            clock,
            host_id,
            cfg,
            slots: Vec::new(),
            table: LockTable::new(tcfg),
            out: Output::new(),
            outstanding: HashMap::new(),
            next_cmd: 0,
            next_serial: 0,
            next_ls: 0,
            rng,
        };
        for (i, id) in locks.iter().enumerate() {
            let ls = host.new_lockspace();
            let at = local + Nanos(host.rng.gen_range(0..20_000_000));
            host.slots.push(Slot {
                lock: i,
                id: *id,
                ls,
                phase: Phase::Idle { at },
                asked: None,
                believed: None,
                want_read: false,
                want_convert: false,
                want_count: false,
            });
        }
        host
    }

    fn new_lockspace(&mut self) -> LockspaceId {
        self.next_ls += 1;
        let info = LockspaceInfo {
            host_id: self.host_id,
            lease_ms: self.cfg.policy.lease.as_millis(),
            policy: self.cfg.policy,
        };
        self.table
            .add_lockspace(self.next_ls, SimLockspace::default(), info);
        self.next_ls
    }

    fn now(&self, t: Nanos) -> Now {
        let mono = self.clock.local(t);
        Now {
            mono,
            wall_ms: WALL0_MS + mono.as_millis(),
        }
    }

    /// The validity of lock slot `i` in true time (`Nanos::ZERO` when none).
    pub fn validity_true(&self, i: usize) -> Nanos {
        self.slots
            .get(i)
            .and_then(|s| self.table.validity(s.ls, s.id))
            .map_or(Nanos::ZERO, |v| self.clock.true_at(v))
    }

    /// The engine's state of lock slot `i` (while it has an entry).
    pub fn lock_state(&self, i: usize) -> Option<&LockState> {
        let s = self.slots.get(i)?;
        self.table.lock_state(s.ls, s.id)
    }

    fn ask(&mut self, ctx: &mut Ctx<'_>, i: usize, kind: Ask, req: LockRequest) {
        self.next_serial += 1;
        let serial = self.next_serial;
        self.slots[i].asked = Some(Asked {
            serial,
            kind,
            started: ctx.now,
        });
        let now = self.now(ctx.now);
        let (ls, id) = (self.slots[i].ls, self.slots[i].id);
        let mut out = std::mem::take(&mut self.out);
        self.table
            .request(now, ls, id, req, (i, serial), now.mono, &mut out);
        self.out = out;
        self.handle_output(ctx);
    }

    /// Carries out the table's output: commands to the drives, answers to the
    /// workload, fences, events to the checker.
    fn handle_output(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            let mut out = std::mem::take(&mut self.out);
            if out.is_empty() {
                self.out = out;
                return;
            }
            let local = self.clock.local(ctx.now);
            for c in out.commands.drain(..) {
                self.next_cmd += 1;
                let cmd = self.next_cmd;
                self.outstanding.insert(cmd, c.key);
                ctx.stats.commands += 1;
                ctx.sends.push(Send {
                    drive: c.drive as u16,
                    cmd,
                    req: self
                        .table
                        .command_request(c.key)
                        .copied()
                        .unwrap_or(Request::ReadCount),
                    timeout_at: self.clock.true_at(local + c.timeout),
                });
            }
            for ev in out.events.drain(..) {
                self.on_event(ctx, ev);
            }
            for f in out.fences.drain(..) {
                ctx.stats.fences += 1;
                if ctx.checker.minority_only {
                    ctx.checker.violation(
                        ViolationKind::FalseFence,
                        ctx.now,
                        self.slot_of(f.ls)
                            .map_or(usize::MAX, |i| self.slots[i].lock),
                        self.idx,
                        "fenced while only a minority of drives misbehaved".into(),
                    );
                }
                if let Some(i) = self.slot_of(f.ls) {
                    self.fenced(ctx, i);
                }
            }
            let answers: Vec<_> = out.answers.drain(..).collect();
            self.out = out;
            for a in answers {
                let (i, serial) = a.caller;
                self.answered(ctx, i, serial, a.result);
            }
        }
    }

    fn slot_of(&self, ls: LockspaceId) -> Option<usize> {
        self.slots.iter().position(|s| s.ls == ls)
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_>, ev: Event) {
        match ev {
            Event::OpDone {
                kind: OpKind::Renew,
                ok,
                ..
            } => {
                if ok {
                    ctx.stats.renewed += 1;
                } else {
                    ctx.stats.renew_err += 1;
                }
            }
            Event::OpStarted {
                lock,
                kind,
                renewal_waiting: true,
            } => {
                let l = self
                    .slots
                    .iter()
                    .find(|s| s.id == lock)
                    .map_or(usize::MAX, |s| s.lock);
                ctx.checker.violation(
                    ViolationKind::RenewalStarved,
                    ctx.now,
                    l,
                    self.idx,
                    format!("{} started while a renewal was due", kind.name()),
                );
            }
            Event::DriveUnresponsive(_) => ctx.stats.unresponsive += 1,
            Event::LateReply { .. } => ctx.stats.late_replies += 1,
            _ => {}
        }
    }

    /// The lockspace of slot `i` was fenced: stop believing.
    fn fenced(&mut self, ctx: &mut Ctx<'_>, i: usize) {
        let lock = self.slots[i].lock;
        if self.slots[i].believed.take().is_some() {
            ctx.checker.unhold(self.idx, lock, ctx.now);
        }
        if matches!(self.slots[i].phase, Phase::Holding { .. }) {
            self.slots[i].phase = Phase::Fenced;
        }
    }

    fn think(&mut self, local: Nanos) -> Nanos {
        local + Nanos(self.rng.gen_range(0..30_000_000))
    }

    fn hold_time(&mut self) -> Nanos {
        let x: f64 = self.rng.gen();
        let ms = if x < 0.85 {
            self.rng.gen_range(1..30)
        } else if x < 0.97 {
            self.rng.gen_range(50..300)
        } else {
            self.rng.gen_range(500..2000)
        };
        Nanos::from_millis(ms)
    }

    /// The table answered request `serial` of slot `i`.
    fn answered(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        serial: u64,
        result: Result<OpOutput, idm_engine::api::EngineError>,
    ) {
        let Some(asked) = self.slots[i].asked.filter(|a| a.serial == serial) else {
            return;
        };
        self.slots[i].asked = None;
        let local = self.clock.local(ctx.now);
        let host = self.idx;
        let lock = self.slots[i].lock;
        let started = asked.started;
        let took = ctx.now - started;
        if let (Some(bound), true) = (self.cfg.op_bound, ctx.checker.minority_only) {
            // A release that stores an LVB may need a re-trylock of a drive
            // another host holds for a moment (contention, not a dead drive):
            // only releases without an LVB are bounded.
            let bounded = matches!(
                asked.kind,
                Ask::Release(None, _) | Ask::ReadLvb | Ask::HostCount
            );
            if bounded && took > bound {
                ctx.checker.violation(
                    ViolationKind::SlowOperation,
                    ctx.now,
                    lock,
                    host,
                    format!(
                        "{:?} took {} µs (bound {} µs)",
                        asked.kind,
                        took.0 / 1000,
                        bound.0 / 1000
                    ),
                );
            }
        }
        match asked.kind {
            Ask::Acquire(mode) => {
                ctx.stats.ops_done += 1;
                ctx.checker.acquire_done(host, lock, started, ctx.now);
                match result {
                    Ok(_) => {
                        ctx.stats.acquired += 1;
                        let v = self.validity_true(i);
                        let margin =
                            self.clock.true_at(local + self.cfg.policy.fence_margin) - ctx.now;
                        if v <= ctx.now + margin && self.cfg.bug == Bug::None {
                            ctx.checker.violation(
                                ViolationKind::SuccessOnLapsedLease,
                                ctx.now,
                                lock,
                                host,
                                format!("acquired with validity {} ns", v.0),
                            );
                        }
                        let until = local + self.hold_time();
                        let s = &mut self.slots[i];
                        s.phase = Phase::Holding { until, mode };
                        s.believed = Some(mode);
                        s.want_read = self.rng.gen_bool(0.5);
                        s.want_convert = self.rng.gen_bool(0.2);
                        s.want_count = self.rng.gen_bool(0.2);
                        ctx.checker.hold(host, lock, mode, ctx.now, v);
                    }
                    Err(e) => {
                        let busy = matches!(
                            e,
                            idm_engine::api::EngineError::Lock(
                                idm_engine::LockError::Busy | idm_engine::LockError::Timeout
                            )
                        );
                        if busy {
                            ctx.stats.acquire_busy += 1;
                        } else {
                            ctx.stats.acquire_err += 1;
                        }
                        if self.slots[i].believed.take().is_some() {
                            ctx.checker.unhold(host, lock, ctx.now);
                        }
                        let at = self.think(local);
                        self.slots[i].phase = Phase::Idle { at };
                    }
                }
            }
            Ask::Release(lvb, was_fenced) => {
                ctx.stats.ops_done += 1;
                match result {
                    Ok(_) => {
                        ctx.stats.released += 1;
                        if was_fenced {
                            ctx.checker.violation(
                                ViolationKind::FencedReleaseSucceeded,
                                ctx.now,
                                lock,
                                host,
                                "a release after the fence reported success".into(),
                            );
                        } else if let Some(v) = lvb {
                            ctx.checker.release_wrote(host, lock, started, ctx.now, v);
                        }
                    }
                    Err(_) => ctx.stats.release_err += 1,
                }
                if self
                    .table
                    .lockspace(self.slots[i].ls)
                    .is_some_and(|l| l.is_fenced())
                {
                    // A restarted client: a fresh lockspace for this lock.
                    let old = self.slots[i].ls;
                    let mut out = std::mem::take(&mut self.out);
                    let now = self.now(ctx.now);
                    self.table.drop_lockspace(now, old, false, &mut out);
                    self.out = out;
                    self.table.remove_lockspace(old);
                    self.slots[i].ls = self.new_lockspace();
                }
                let at = self.think(local);
                self.slots[i].phase = Phase::Idle { at };
            }
            Ask::Convert(new) => {
                ctx.stats.ops_done += 1;
                match result {
                    Ok(_) => {
                        ctx.stats.converted += 1;
                        if let Phase::Holding { until, .. } = self.slots[i].phase {
                            self.slots[i].phase = Phase::Holding { until, mode: new };
                        }
                        // A promotion is used as EX only from now on.
                        if new == Mode::Exclusive && self.slots[i].believed.is_some() {
                            ctx.checker.unhold(host, lock, ctx.now);
                            self.slots[i].believed = Some(new);
                            let v = self.validity_true(i);
                            ctx.checker.hold(host, lock, new, ctx.now, v);
                        }
                    }
                    Err(_) => ctx.stats.convert_err += 1,
                }
            }
            Ask::ReadLvb => {
                ctx.stats.ops_done += 1;
                match result {
                    Ok(OpOutput::Lvb(v)) => {
                        ctx.stats.lvb_reads += 1;
                        ctx.checker
                            .lvb_read(host, lock, started, ctx.now, v.to_u64());
                    }
                    _ => ctx.stats.lvb_read_err += 1,
                }
            }
            Ask::HostCount => {
                ctx.stats.ops_done += 1;
                if result.is_ok() {
                    ctx.stats.host_counts += 1;
                }
            }
            Ask::WriteLvb => {}
        }
    }

    /// The reply to command `cmd` arrived.
    pub fn on_reply(&mut self, ctx: &mut Ctx<'_>, cmd: u64, reply: &Reply) {
        let Some(key) = self.outstanding.remove(&cmd) else {
            // Timed out already: a late reply is dropped. The host still ran.
            self.poll(ctx);
            return;
        };
        let now = self.now(ctx.now);
        let mut out = std::mem::take(&mut self.out);
        self.table.on_reply(now, key, reply.clone(), &mut out);
        self.out = out;
        self.handle_output(ctx);
        self.poll(ctx);
    }

    /// Command `cmd` timed out at the transport.
    pub fn on_timeout(&mut self, ctx: &mut Ctx<'_>, cmd: u64) {
        if !self.outstanding.contains_key(&cmd) {
            self.poll(ctx);
            return;
        }
        ctx.stats.timeouts += 1;
        self.on_reply(ctx, cmd, &Reply::err(DriveError::Timeout));
    }

    /// A wake-up: due table timers and workload steps.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        self.poll(ctx);
    }

    /// Advances every lock's workload: release, read, convert, start acquires.
    pub fn poll(&mut self, ctx: &mut Ctx<'_>) {
        // The engine's due timers run first whenever the host runs (a host resumed
        // from a pause fences before it does anything else).
        let now = self.now(ctx.now);
        let mut out = std::mem::take(&mut self.out);
        self.table.on_timer(now, &mut out);
        self.out = out;
        self.handle_output(ctx);
        for i in 0..self.slots.len() {
            self.poll_slot(ctx, i);
        }
        // Validity as the engine computes it now, for the checker.
        for i in 0..self.slots.len() {
            if self.slots[i].believed.is_some() {
                let v = self.validity_true(i);
                let lock = self.slots[i].lock;
                ctx.checker.update_validity(self.idx, lock, ctx.now, v);
            }
        }
    }

    fn poll_slot(&mut self, ctx: &mut Ctx<'_>, i: usize) {
        let host = self.idx;
        for _ in 0..4 {
            if self.slots[i].asked.is_some() {
                return;
            }
            let local = self.clock.local(ctx.now);
            let lock = self.slots[i].lock;
            match self.slots[i].phase {
                Phase::Holding { until, mode } => {
                    if local >= until {
                        if self.slots[i].believed.take().is_some() {
                            ctx.checker.unhold(host, lock, ctx.now);
                        }
                        self.release(ctx, i, mode == Mode::Exclusive, false);
                        continue;
                    }
                    if std::mem::take(&mut self.slots[i].want_read) {
                        self.ask(ctx, i, Ask::ReadLvb, LockRequest::ReadLvb);
                        continue;
                    }
                    if std::mem::take(&mut self.slots[i].want_count) {
                        let drives = (0..self.cfg.n_drives as usize).collect();
                        self.ask(ctx, i, Ask::HostCount, LockRequest::HostCount { drives });
                        continue;
                    }
                    if std::mem::take(&mut self.slots[i].want_convert) {
                        let new = match mode {
                            Mode::Exclusive => Mode::Shared,
                            Mode::Shared => Mode::Exclusive,
                        };
                        // A demotion stops EX use before the drives change.
                        if new == Mode::Shared && self.slots[i].believed.is_some() {
                            ctx.checker.unhold(host, lock, ctx.now);
                            self.slots[i].believed = Some(new);
                            let v = self.validity_true(i);
                            ctx.checker.hold(host, lock, new, ctx.now, v);
                        }
                        self.ask(
                            ctx,
                            i,
                            Ask::Convert(new),
                            LockRequest::Convert { mode: new },
                        );
                        continue;
                    }
                }
                Phase::Fenced => {
                    // The late holder still publishes a value and releases.
                    self.release(ctx, i, true, true);
                    continue;
                }
                Phase::Idle { at } if ctx.may_start && local >= at => {
                    let mode = if self.rng.gen_bool(0.6) {
                        Mode::Exclusive
                    } else {
                        Mode::Shared
                    };
                    let wait = Nanos::from_millis(self.rng.gen_range(5..150));
                    let no_wait = self.rng.gen_bool(0.25);
                    self.slots[i].phase = Phase::Acquiring;
                    let drives = (0..self.cfg.n_drives as usize).collect();
                    self.ask(
                        ctx,
                        i,
                        Ask::Acquire(mode),
                        LockRequest::Acquire {
                            mode,
                            drives,
                            deadline: local + wait,
                            no_wait,
                        },
                    );
                    continue;
                }
                _ => {}
            }
            break;
        }
    }

    /// Writes an LVB (when `write`) and releases slot `i`.
    fn release(&mut self, ctx: &mut Ctx<'_>, i: usize, write: bool, fenced: bool) {
        let lock = self.slots[i].lock;
        let lvb = write.then(|| ctx.checker.next_lvb(lock));
        self.slots[i].phase = Phase::Releasing;
        if let Some(v) = lvb {
            self.ask(
                ctx,
                i,
                Ask::WriteLvb,
                LockRequest::WriteLvb(Lvb::from_u64(v)),
            );
        }
        let was_fenced = fenced
            || self
                .table
                .lockspace(self.slots[i].ls)
                .is_some_and(|l| l.is_fenced());
        self.ask(ctx, i, Ask::Release(lvb, was_fenced), LockRequest::Release);
    }

    /// The next local time this host wants to run (`None`: nothing scheduled).
    pub fn wake(&self, may_start: bool) -> Option<Nanos> {
        let mut w = self.table.next_timer();
        let mut at = |t: Nanos| w = Some(w.map_or(t, |x: Nanos| x.min(t)));
        for s in &self.slots {
            if s.asked.is_some() {
                continue;
            }
            match s.phase {
                Phase::Idle { at: t } if may_start => at(t),
                Phase::Holding { until, .. } => at(until),
                _ => {}
            }
        }
        w
    }

    /// The host crashes at `ctx.now`: it stops believing anything.
    pub fn crash(&mut self, ctx: &mut Ctx<'_>) {
        for s in &mut self.slots {
            if s.believed.take().is_some() {
                ctx.checker.unhold(self.idx, s.lock, ctx.now);
            }
        }
    }

    /// Acquires still waiting for an outcome: `(lock, started)`.
    pub fn waiting_acquires(&self) -> Vec<(usize, Nanos)> {
        self.slots
            .iter()
            .filter_map(|s| match s.asked {
                Some(a) if matches!(a.kind, Ask::Acquire(_)) => Some((s.lock, a.started)),
                _ => None,
            })
            .collect()
    }

    /// Every lock idle with nothing asked or in flight.
    pub fn quiescent(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.asked.is_none() && matches!(s.phase, Phase::Idle { .. }))
            && self.table.in_flight() == 0
    }
}
