//! A simulated host: the real protocol operations of `idm-engine` on its locks,
//! driven by a seeded workload, with its own drifting clock.
//!
//! Per lock the host cycles: idle (think time) → acquire EX or SH with a deadline
//! ([`Acquire`]) → hold for a while, renewing per [`LeasePolicy::next_renewal`]
//! ([`Renew`]) and fencing per [`LeasePolicy::should_fence`] → release
//! ([`Release`], carrying a fresh LVB after an EX hold). Operations on one lock are
//! serialized as the engine's contract says: the next starts only when the
//! previous one is `finished()`.
//!
//! The host never sees true time: every protocol call gets `Now` from its
//! [`Clock`]. What it *believes* is reported to the [`Checker`] in true time (the
//! harness knows the mapping): hold intervals, validity, fences.
//!
//! **Planted bugs.** [`Bug`] makes the harness's host apply a deliberately wrong
//! rule on top of the unchanged engine, to prove the checker catches it:
//! [`Bug::MinorityQuorum`] believes a lock held once ⌊N/2⌋ drives granted it and
//! computes validity over ⌊N/2⌋ drives; [`Bug::TrustReplyTime`] computes validity
//! from the time a grant's reply was *processed* instead of the command's send time.

use std::collections::HashMap;

use idm_engine::fencing::LeasePolicy;
use idm_engine::protocol::{
    Acquire, Actions, Convert, LockSpec, LockState, Now, Operation, ReadLvb, Release, Renew,
};
use idm_engine::Nanos;
use rand::rngs::SmallRng;
use rand::Rng;
use uring_sg::transport::{Reply, Request};
use uring_sg::{DriveError, HostId, LockId, Lvb, Mode};

use crate::checker::Checker;
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
    /// Acquires that failed otherwise (I/O, table full, ...).
    pub acquire_err: u64,
    /// Releases that reached a majority.
    pub released: u64,
    /// Releases that failed.
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
    /// Locks fenced.
    pub fences: u64,
    /// Drive commands sent.
    pub commands: u64,
    /// Command timeouts delivered.
    pub timeouts: u64,
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

enum OpKind {
    Acquire(Acquire, Mode),
    Release(Release, Option<u64>),
    Renew(Renew),
    Convert(Convert, Mode),
    ReadLvb(ReadLvb),
}

/// Calls the same method on whichever operation runs.
macro_rules! with_op {
    ($k:expr, $op:ident => $body:expr) => {
        match $k {
            OpKind::Acquire($op, _) => $body,
            OpKind::Release($op, _) => $body,
            OpKind::Renew($op) => $body,
            OpKind::Convert($op, _) => $body,
            OpKind::ReadLvb($op) => $body,
        }
    };
}

struct Running {
    kind: OpKind,
    timer: Option<Nanos>,
    started: Nanos,
    reported: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle { at: Nanos },
    Acquiring,
    Holding { until: Nanos, mode: Mode },
    Fenced,
    Releasing,
}

/// One lock as this host sees it.
pub struct Slot {
    /// Lock index in the run.
    pub lock: usize,
    /// The engine's per-lock state.
    pub st: LockState,
    phase: Phase,
    op: Option<Running>,
    /// The mode this host believes it holds the lock in (reported to the checker).
    pub believed: Option<Mode>,
    reply_at: Vec<Nanos>,
    want_read: bool,
    want_convert: bool,
}

/// One simulated host (one incarnation: a crash makes a new one).
pub struct Host {
    /// Host index in the run.
    pub idx: usize,
    /// The host's clock.
    pub clock: Clock,
    cfg: HostConfig,
    /// The host's locks.
    pub slots: Vec<Slot>,
    outstanding: HashMap<u64, (usize, u16)>,
    next_cmd: u64,
    rng: SmallRng,
    actions: Actions,
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
        let slots = locks
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let spec = LockSpec {
                    lock_id: *id,
                    host_id,
                    n_drives: cfg.n_drives,
                    countdown_ms: cfg.policy.lease.as_millis(),
                };
                Slot {
                    lock: i,
                    st: LockState::new(spec, rng.gen()),
                    phase: Phase::Idle {
                        at: local + Nanos(rng.gen_range(0..20_000_000)),
                    },
                    op: None,
                    believed: None,
                    reply_at: vec![Nanos::ZERO; cfg.n_drives as usize],
                    want_read: false,
                    want_convert: false,
                }
            })
            .collect();
        Host {
            idx,
            clock,
            cfg,
            slots,
            outstanding: HashMap::new(),
            next_cmd: 0,
            rng,
            actions: Actions::new(),
        }
    }

    fn now(&self, t: Nanos) -> Now {
        let mono = self.clock.local(t);
        Now {
            mono,
            wall_ms: WALL0_MS + mono.as_millis(),
        }
    }

    /// The validity of `slot` by the host's rule (host clock), with the planted bug.
    fn validity(&self, s: &Slot) -> Option<Nanos> {
        let p = &self.cfg.policy;
        let n = s.st.spec.n_drives;
        let c = s.st.spec.countdown();
        let kth = |k: usize, ends: &mut Vec<Nanos>| -> Option<Nanos> {
            if k == 0 || ends.len() < k {
                return None;
            }
            ends.sort_unstable_by(|a, b| b.cmp(a));
            Some(ends[k - 1] - p.drift_margin)
        };
        match self.cfg.bug {
            Bug::None => p.validity(&s.st),
            Bug::MinorityQuorum => {
                let mut ends: Vec<Nanos> =
                    s.st.drives
                        .iter()
                        .filter(|d| d.held)
                        .map(|d| d.sent + c)
                        .collect();
                kth((n as usize / 2).max(1), &mut ends)
            }
            Bug::TrustReplyTime => {
                let mut ends: Vec<Nanos> =
                    s.st.drives
                        .iter()
                        .zip(&s.reply_at)
                        .filter(|(d, _)| d.held)
                        .map(|(_, r)| *r + c)
                        .collect();
                kth(s.st.spec.majority() as usize, &mut ends)
            }
        }
    }

    /// The validity of lock slot `i` in true time (`Nanos::ZERO` when none).
    pub fn validity_true(&self, i: usize) -> Nanos {
        self.slots
            .get(i)
            .and_then(|s| self.validity(s))
            .map_or(Nanos::ZERO, |v| self.clock.true_at(v))
    }

    /// Runs one call on the slot's operation and handles what it asked for.
    /// `replied`: the drive whose reply is being fed (its grant time is noted for
    /// [`Bug::TrustReplyTime`]).
    fn call(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        replied: Option<u16>,
        f: &mut dyn FnMut(&mut OpKind, Now, &mut LockState, &mut Actions),
    ) {
        let now = self.now(ctx.now);
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        let slot = &mut self.slots[i];
        let Some(op) = slot.op.as_mut() else {
            self.actions = actions;
            return;
        };
        let before = replied.and_then(|d| slot.st.drives.get(d as usize).copied());
        f(&mut op.kind, now, &mut slot.st, &mut actions);
        op.timer = actions.timer;
        if let (Some(d), Some(b)) = (replied, before) {
            let after = slot.st.drives[d as usize];
            if after.held && (!b.held || after.sent != b.sent) {
                slot.reply_at[d as usize] = now.mono;
            }
        }
        let timeout_at = self.clock.true_at(now.mono + self.cfg.cmd_timeout);
        for (drive, req) in actions.commands.drain(..) {
            self.next_cmd += 1;
            let cmd = self.next_cmd;
            self.outstanding.insert(cmd, (i, drive));
            ctx.stats.commands += 1;
            ctx.sends.push(Send {
                drive,
                cmd,
                req,
                timeout_at,
            });
        }
        self.actions = actions;
        self.take_outcome(ctx, i);
    }

    fn start_op(&mut self, ctx: &mut Ctx<'_>, i: usize, kind: OpKind) {
        self.slots[i].op = Some(Running {
            kind,
            timer: None,
            started: ctx.now,
            reported: false,
        });
        self.call(
            ctx,
            i,
            None,
            &mut |k, now, st, a| with_op!(k, op => op.start(now, st, a)),
        );
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

    /// Reports an outcome the slot's operation may have produced.
    fn take_outcome(&mut self, ctx: &mut Ctx<'_>, i: usize) {
        let local = self.clock.local(ctx.now);
        let host = self.idx;
        let bug = self.cfg.bug;
        let n = self.cfg.n_drives;
        let Some(op) = self.slots[i].op.as_mut() else {
            return;
        };
        let started = op.started;
        enum Done {
            Acquired(Mode, bool),
            Released(Option<u64>, bool),
            Renewed(bool),
            Converted(Mode, bool),
            Read(Option<u64>),
            Nothing,
        }
        let done = match &mut op.kind {
            OpKind::Acquire(a, mode) => match a.outcome() {
                Some(Ok(_)) => Done::Acquired(*mode, true),
                Some(Err(e)) => {
                    let busy = matches!(
                        e,
                        idm_engine::LockError::Busy | idm_engine::LockError::Timeout
                    );
                    if busy {
                        ctx.stats.acquire_busy += 1;
                    } else {
                        ctx.stats.acquire_err += 1;
                    }
                    Done::Acquired(*mode, false)
                }
                None => Done::Nothing,
            },
            OpKind::Release(r, lvb) => match r.outcome() {
                Some(res) => Done::Released(*lvb, res.is_ok()),
                None => Done::Nothing,
            },
            OpKind::Renew(r) => match r.outcome() {
                Some(res) => Done::Renewed(res.is_ok()),
                None => Done::Nothing,
            },
            OpKind::Convert(c, new) => match c.outcome() {
                Some(res) => Done::Converted(*new, res.is_ok()),
                None => Done::Nothing,
            },
            OpKind::ReadLvb(r) => match r.outcome() {
                Some(res) => Done::Read(res.ok().map(|l| l.to_u64())),
                None => Done::Nothing,
            },
        };
        if !matches!(done, Done::Nothing) {
            op.reported = true;
        }
        match done {
            Done::Nothing => {
                // Planted bug: a minority of grants is believed to be the lock.
                let s = &self.slots[i];
                if bug == Bug::MinorityQuorum
                    && s.phase == Phase::Acquiring
                    && s.believed.is_none()
                    && s.st.held_count() >= (n / 2).max(1)
                {
                    if let Some(OpKind::Acquire(_, mode)) = s.op.as_ref().map(|o| &o.kind) {
                        let mode = *mode;
                        let v = self.validity_true(i);
                        let lock = s.lock;
                        self.slots[i].believed = Some(mode);
                        ctx.checker.hold(host, lock, mode, ctx.now, v);
                    }
                }
            }
            Done::Acquired(mode, ok) => {
                ctx.stats.ops_done += 1;
                let lock = self.slots[i].lock;
                ctx.checker.acquire_done(host, lock, started, ctx.now);
                if ok {
                    ctx.stats.acquired += 1;
                    let until = local + self.hold_time();
                    self.slots[i].phase = Phase::Holding { until, mode };
                    self.slots[i].want_read = self.rng.gen_bool(0.5);
                    self.slots[i].want_convert = self.rng.gen_bool(0.2);
                    self.slots[i].believed = Some(mode);
                    let v = self.validity_true(i);
                    ctx.checker.hold(host, lock, mode, ctx.now, v);
                } else {
                    if self.slots[i].believed.take().is_some() {
                        ctx.checker.unhold(host, lock, ctx.now);
                    }
                    let at = self.think(local);
                    self.slots[i].phase = Phase::Idle { at };
                }
            }
            Done::Released(lvb, ok) => {
                ctx.stats.ops_done += 1;
                if ok {
                    ctx.stats.released += 1;
                    if let Some(v) = lvb {
                        let lock = self.slots[i].lock;
                        ctx.checker.release_wrote(host, lock, started, ctx.now, v);
                    }
                } else {
                    ctx.stats.release_err += 1;
                }
                let at = self.think(local);
                self.slots[i].phase = Phase::Idle { at };
            }
            Done::Converted(new, ok) => {
                ctx.stats.ops_done += 1;
                let lock = self.slots[i].lock;
                if ok {
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
                } else {
                    ctx.stats.convert_err += 1;
                }
            }
            Done::Read(v) => {
                ctx.stats.ops_done += 1;
                match v {
                    Some(v) => {
                        ctx.stats.lvb_reads += 1;
                        let lock = self.slots[i].lock;
                        ctx.checker.lvb_read(host, lock, started, ctx.now, v);
                    }
                    None => ctx.stats.lvb_read_err += 1,
                }
            }
            Done::Renewed(ok) => {
                if ok {
                    ctx.stats.renewed += 1;
                } else {
                    ctx.stats.renew_err += 1;
                }
            }
        }
    }

    /// The reply to command `cmd` arrived.
    pub fn on_reply(&mut self, ctx: &mut Ctx<'_>, cmd: u64, reply: &Reply) {
        let Some((i, drive)) = self.outstanding.remove(&cmd) else {
            // Timed out already: a late reply is dropped. The host still ran.
            self.poll(ctx);
            return;
        };
        self.call(
            ctx,
            i,
            Some(drive),
            &mut |k, now, st, a| with_op!(k, op => op.on_reply(now, st, drive, reply, a)),
        );
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

    /// A wake-up: due operation timers and workload steps.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        let local = self.clock.local(ctx.now);
        for i in 0..self.slots.len() {
            let due = self.slots[i]
                .op
                .as_ref()
                .and_then(|o| o.timer)
                .is_some_and(|t| t <= local);
            if due {
                self.call(
                    ctx,
                    i,
                    None,
                    &mut |k, now, st, a| with_op!(k, op => op.on_timer(now, st, a)),
                );
            }
        }
        self.poll(ctx);
    }

    fn op_finished(s: &Slot) -> bool {
        match &s.op {
            None => true,
            Some(o) => o.reported && with_op!(&o.kind, op => op.finished()),
        }
    }

    /// Advances every lock's workload: fence, renew, release, start acquires.
    pub fn poll(&mut self, ctx: &mut Ctx<'_>) {
        for i in 0..self.slots.len() {
            self.poll_slot(ctx, i);
        }
    }

    fn poll_slot(&mut self, ctx: &mut Ctx<'_>, i: usize) {
        let host = self.idx;
        for _ in 0..4 {
            let local = self.clock.local(ctx.now);
            if Host::op_finished(&self.slots[i]) {
                self.slots[i].op = None;
            }
            let lock = self.slots[i].lock;
            // Fencing first, whatever runs: strictly before validity ends.
            if self.slots[i].believed.is_some() {
                let v = self.validity(&self.slots[i]);
                if self.cfg.policy.should_fence(local, v) {
                    ctx.checker.unhold(host, lock, ctx.now);
                    ctx.stats.fences += 1;
                    self.slots[i].believed = None;
                    if matches!(self.slots[i].phase, Phase::Holding { .. }) {
                        self.slots[i].phase = Phase::Fenced;
                    }
                } else {
                    let vt = v.map_or(Nanos::ZERO, |v| self.clock.true_at(v));
                    ctx.checker.update_validity(host, lock, ctx.now, vt);
                }
            }
            let idle = self.slots[i].op.is_none();
            match self.slots[i].phase {
                Phase::Holding { until, mode } if idle => {
                    if local >= until {
                        ctx.checker.unhold(host, lock, ctx.now);
                        self.slots[i].believed = None;
                        let lvb = (mode == Mode::Exclusive).then(|| ctx.checker.next_lvb(lock));
                        if let Some(v) = lvb {
                            self.slots[i].st.lvb = Some(Lvb::from_u64(v));
                        }
                        self.slots[i].phase = Phase::Releasing;
                        self.start_op(ctx, i, OpKind::Release(Release::new(), lvb));
                        continue;
                    }
                    if local >= self.cfg.policy.next_renewal(&self.slots[i].st) {
                        self.start_op(ctx, i, OpKind::Renew(Renew::new()));
                        continue;
                    }
                    if std::mem::take(&mut self.slots[i].want_read) {
                        self.start_op(ctx, i, OpKind::ReadLvb(ReadLvb::new()));
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
                        self.start_op(ctx, i, OpKind::Convert(Convert::new(new), new));
                        continue;
                    }
                }
                Phase::Fenced if idle => {
                    if self.slots[i].st.mode.is_some() {
                        self.slots[i].phase = Phase::Releasing;
                        self.start_op(ctx, i, OpKind::Release(Release::new(), None));
                    } else {
                        let at = self.think(local);
                        self.slots[i].phase = Phase::Idle { at };
                    }
                    continue;
                }
                Phase::Idle { at } if idle && ctx.may_start && local >= at => {
                    let mode = if self.rng.gen_bool(0.6) {
                        Mode::Exclusive
                    } else {
                        Mode::Shared
                    };
                    let wait = Nanos::from_millis(self.rng.gen_range(5..150));
                    let no_wait = self.rng.gen_bool(0.25);
                    self.slots[i].phase = Phase::Acquiring;
                    self.start_op(
                        ctx,
                        i,
                        OpKind::Acquire(Acquire::new(mode, local + wait, no_wait), mode),
                    );
                    continue;
                }
                _ => {}
            }
            break;
        }
    }

    /// The next local time this host wants to run (`None`: nothing scheduled).
    pub fn wake(&self, may_start: bool) -> Option<Nanos> {
        let p = &self.cfg.policy;
        let mut w: Option<Nanos> = None;
        let mut at = |t: Nanos| w = Some(w.map_or(t, |x: Nanos| x.min(t)));
        for s in &self.slots {
            if let Some(t) = s.op.as_ref().and_then(|o| o.timer) {
                at(t);
            }
            if s.believed.is_some() {
                at(p.fence_at(self.validity(s)));
            }
            if s.op.is_some() {
                continue;
            }
            match s.phase {
                Phase::Idle { at: t } if may_start => at(t),
                Phase::Holding { until, .. } => {
                    at(until);
                    at(p.next_renewal(&s.st));
                }
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
            .filter_map(|s| match &s.op {
                Some(o) if !o.reported && matches!(o.kind, OpKind::Acquire(..)) => {
                    Some((s.lock, o.started))
                }
                _ => None,
            })
            .collect()
    }

    /// Every lock idle with no operation running.
    pub fn quiescent(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.op.is_none() && matches!(s.phase, Phase::Idle { .. }))
    }
}
