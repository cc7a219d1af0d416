//! The reactor: one thread that owns an io_uring, the drives it talks to, and the
//! locks hashed to it, and runs the protocol's state machines against real
//! transports (ARCHITECTURE.md "The shape in one paragraph").
//!
//! One loop turn:
//! 1. take every queued request from the channel and start (or queue) its
//!    operation on its lock;
//! 2. fire due timers: operation wake-ups (backoff, deadlines), renewals (all
//!    locks due in this turn go out together), fencing checks;
//! 3. one `io_uring_enter` through [`uring_sg::driver::Driver::turn`] submits every
//!    command that operations emitted and waits for the first completion, the next
//!    timer, or a wake-up from a caller ([`wake`]);
//! 4. each completion goes to its operation, whose new commands go out next turn.
//!
//! Operations on one lock are serialized (the protocol's contract): the next one
//! starts when the previous is `finished()`, even though its caller already has
//! the outcome (acquire answers at quorum). Renewals wait behind a running
//! operation too. Commands live in a `slab` keyed by the tag the transport hands
//! back; nothing is allocated per drive command once the slabs have grown.

pub mod drives;
pub mod msg;
pub mod op;
pub mod ops;
pub mod ring;
pub mod stats;
pub mod timers;
pub mod wake;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, TryRecvError};
use slab::Slab;
use uring_sg::transport::{Completion, EnqueueError, Reply, Request};
use uring_sg::{DriveError, LockId};

use crate::api::{DriveOpener, EngineError, LockspaceShared};
use crate::completion::Completer;
use crate::fencing::LeasePolicy;
use crate::protocol::{Actions, LockSpec, LockState, Now, XorShift64};
use crate::time::Nanos;
use drives::DriveRegistry;
use msg::{DriveNames, LockspaceId, Msg, OpRequest, OpResult};
use op::{DynOp, OpKind, OpOutput};
use ring::Ring;
use stats::ReactorStats;
use timers::{Timer, TimerKind, Timers};
use wake::{Wake, WakeSource, WAKE_TAG};

/// How long a reactor keeps polling (not sleeping) after its last activity.
const SPIN_AFTER_ACTIVITY: Duration = Duration::from_micros(20);
/// The longest a reactor sleeps with nothing to do (it re-checks its timers).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Most drives one lock may span (IDM.md §8: `ILM_DRIVE_MAX_NUM`).
pub const MAX_DRIVES: usize = 512;

/// What a reactor is built with.
#[derive(Clone)]
pub struct ReactorConfig {
    /// Index of this reactor in the engine.
    pub index: usize,
    /// Name for the simulator and logs (`<engine>/r<index>`).
    pub client: String,
    /// Time a drive command may take before it fails as a timeout.
    pub command_timeout: Duration,
    /// SQ entries.
    pub ring_entries: u32,
    /// Seed of backoff jitter and fault injection.
    pub seed: u64,
    /// How drives are opened.
    pub opener: Arc<dyn DriveOpener>,
}

/// A running operation and who waits for it.
struct Running {
    op: Box<dyn DynOp>,
    caller: Option<Completer<OpResult>>,
    started: Instant,
}

/// An operation waiting for the one before it on the same lock.
struct Queued {
    req: OpRequest,
    done: Completer<OpResult>,
    received: Instant,
}

/// One lock on this reactor.
struct LockEntry {
    ls: LockspaceId,
    id: LockId,
    /// Distinguishes this entry from a later one reusing its slab slot.
    incarnation: u64,
    state: LockState,
    /// Registry drive id of each drive number.
    drives: Vec<usize>,
    running: Option<Running>,
    queue: VecDeque<Queued>,
    /// Generation of the running operation's timer.
    op_gen: u64,
    /// Generation of the renewal and fencing timers.
    lease_gen: u64,
    /// How much earlier than the cadence this lock's first renewal comes: a
    /// per-lock phase in `[0, renew_every / 2]`, so locks acquired in one burst
    /// do not renew in one burst forever after; later renewals keep the cadence.
    renew_early: Nanos,
    /// A renewal is due and waits for the running operation.
    renew_due: bool,
    /// Held by this host (after a successful acquire, until release).
    held: bool,
    /// An acquire was accepted and has not failed; a second acquire is "already held".
    claimed: bool,
    /// Only for a query (host count, mode) of a lock we do not hold: not indexed.
    query_only: bool,
}

/// One drive command in flight.
struct InFlight {
    lock: usize,
    incarnation: u64,
    drive_no: u16,
    drive: usize,
    req: Request,
    /// Paths tried so far (multipath failover).
    tries: u8,
}

/// One lockspace as this reactor sees it.
struct LsEntry {
    shared: Arc<LockspaceShared>,
    policy: LeasePolicy,
}

/// The reactor. See the module docs.
pub struct Reactor {
    cfg: ReactorConfig,
    rx: Receiver<Msg>,
    wake: Arc<Wake>,
    driver: Ring,
    registry: DriveRegistry,
    locks: Slab<LockEntry>,
    index: HashMap<(LockspaceId, LockId), usize>,
    inflight: Slab<InFlight>,
    /// Commands a transport could not take yet (its in-flight cap was reached).
    backlog: VecDeque<usize>,
    /// Replies made up without a drive (closed transport, injected fault).
    synthetic: Vec<(usize, Reply)>,
    timers: Timers,
    lockspaces: HashMap<LockspaceId, LsEntry>,
    /// Lockspace drops waiting for their locks to go.
    drops: Vec<(LockspaceId, Completer<()>)>,
    actions: Actions,
    completed: Vec<(usize, Completion)>,
    origin: Instant,
    rng: XorShift64,
    next_incarnation: u64,
    /// Source of timer generations, unique in this reactor: a timer armed for a
    /// lock entry never matches a later entry that reuses its slab slot.
    next_generation: u64,
    stats: ReactorStats,
}

impl Reactor {
    /// Builds a reactor (its ring and wake-up source); run it with [`Reactor::run`]
    /// on its own thread.
    pub fn new(cfg: ReactorConfig, rx: Receiver<Msg>, wake: Arc<Wake>) -> std::io::Result<Self> {
        let mut driver = Ring::new(cfg.ring_entries, cfg.opener.needs_sqe128())?;
        driver.add(Box::new(WakeSource::new(wake.clone())));
        let registry = DriveRegistry::new(cfg.opener.clone(), cfg.client.clone());
        Ok(Reactor {
            rng: XorShift64::new(cfg.seed ^ (cfg.index as u64 + 1).wrapping_mul(0x9E37_79B9)),
            cfg,
            rx,
            wake,
            driver,
            registry,
            locks: Slab::new(),
            index: HashMap::new(),
            inflight: Slab::new(),
            backlog: VecDeque::new(),
            synthetic: Vec::new(),
            timers: Timers::new(),
            lockspaces: HashMap::new(),
            drops: Vec::new(),
            actions: Actions::new(),
            completed: Vec::new(),
            origin: Instant::now(),
            next_incarnation: 0,
            next_generation: 0,
            stats: ReactorStats::new(),
        })
    }

    /// Runs until told to stop or every sender is gone.
    pub fn run(mut self) {
        let mut last_activity = Instant::now();
        let mut sent_at_last_turn = 0;
        loop {
            if !self.drain_messages() {
                break;
            }
            self.fire_timers();
            self.retry_backlog();
            self.deliver_synthetic();
            let now = self.mono();
            let mut wait = self.timers.next().map_or(IDLE_WAIT, |t| {
                Duration::from_nanos((t - now).0).min(IDLE_WAIT)
            });
            if !self.synthetic.is_empty() {
                wait = Duration::ZERO;
            }
            // Shortly after activity, poll instead of sleeping: waking a sleeping
            // thread costs tens of µs on a VM (an IPI and a halted vCPU), more than
            // a whole lock on fast drives. Callers need not write the eventfd then.
            let spinning = last_activity.elapsed() < SPIN_AFTER_ACTIVITY;
            if spinning {
                wait = Duration::ZERO;
            } else {
                self.wake.about_to_sleep();
            }
            if !self.rx.is_empty() {
                wait = Duration::ZERO;
            }
            let mut completed = std::mem::take(&mut self.completed);
            let sent_before = sent_at_last_turn;
            sent_at_last_turn = self.stats.commands;
            let turn = self.driver.turn(wait, &mut |d, c| completed.push((d, c)));
            self.wake.awake();
            self.stats.turns += 1;
            // Activity: replies, new requests, or commands just sent (their
            // replies may come back within the spin on fast drives).
            if !completed.is_empty() || !self.rx.is_empty() || self.stats.commands != sent_before {
                last_activity = Instant::now();
            } else if spinning {
                std::hint::spin_loop();
            }
            if let Err(e) = turn {
                tracing::error!(reactor = self.cfg.index, error = %e, "io_uring_enter failed");
            }
            for (_, c) in completed.drain(..) {
                if c.tag != WAKE_TAG {
                    self.on_reply(c.tag as usize, c.reply);
                }
            }
            self.completed = completed;
        }
        tracing::debug!(reactor = self.cfg.index, "reactor stopped");
    }

    /// A timer generation never used before in this reactor.
    fn new_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Monotonic now.
    fn mono(&self) -> Nanos {
        Nanos(self.origin.elapsed().as_nanos().min(u64::MAX as u128) as u64)
    }

    /// Now as the protocol takes it.
    fn now(&self) -> Now {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Now {
            mono: self.mono(),
            wall_ms,
        }
    }

    /// An `Instant` on this reactor's monotonic scale.
    fn to_nanos(&self, t: Instant) -> Nanos {
        Nanos(
            t.saturating_duration_since(self.origin)
                .as_nanos()
                .min(u64::MAX as u128) as u64,
        )
    }

    // ---- messages -------------------------------------------------------------

    /// Handles everything queued; `false` when the reactor must stop.
    fn drain_messages(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Op {
                    ls,
                    lock,
                    req,
                    done,
                }) => self.on_request(ls, lock, req, done),
                Ok(Msg::AddLockspace(shared)) => {
                    let policy = shared.policy;
                    self.lockspaces
                        .insert(shared.id, LsEntry { shared, policy });
                }
                Ok(Msg::DropLockspace { ls, release, done }) => {
                    self.drop_lockspace(ls, release);
                    self.drops.push((ls, done));
                    self.check_drops();
                }
                Ok(Msg::Stats(done)) => done.complete(Some(self.snapshot_stats())),
                Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// Starts or queues one caller request.
    fn on_request(
        &mut self,
        ls: LockspaceId,
        lock: LockId,
        req: OpRequest,
        done: Completer<OpResult>,
    ) {
        let Some(lse) = self.lockspaces.get(&ls) else {
            done.complete(Err(EngineError::InvalidArgument(
                "unknown lockspace".into(),
            )));
            return;
        };
        let fenced = lse.shared.fenced.load(Ordering::SeqCst);
        if fenced && matches!(req, OpRequest::Acquire { .. } | OpRequest::Convert { .. }) {
            done.complete(Err(EngineError::Fenced(lse.shared.name.clone())));
            return;
        }
        let received = Instant::now();
        match &req {
            OpRequest::Acquire { drives, .. } => {
                if let Some(&k) = self.index.get(&(ls, lock)) {
                    let e = &mut self.locks[k];
                    if e.claimed {
                        done.complete(Err(EngineError::AlreadyHeld));
                    } else {
                        // The last acquire failed and its late replies are still
                        // being consumed: wait behind it.
                        e.claimed = true;
                        e.queue.push_back(Queued {
                            req,
                            done,
                            received,
                        });
                        self.advance(k);
                    }
                    return;
                }
                let drives = drives.clone();
                match self.new_entry(ls, lock, &drives, false) {
                    Ok(k) => {
                        self.locks[k].claimed = true;
                        self.index.insert((ls, lock), k);
                        self.start(k, req, Some(done), received);
                    }
                    Err(e) => done.complete(Err(e)),
                }
            }
            OpRequest::HostCount { drives, .. } | OpRequest::Mode { drives, .. } => {
                if let Some(&k) = self.index.get(&(ls, lock)) {
                    self.enqueue_or_start(k, req, done, received);
                    return;
                }
                let drives = drives.clone();
                match self.new_entry(ls, lock, &drives, true) {
                    Ok(k) => self.start(k, req, Some(done), received),
                    Err(e) => done.complete(Err(e)),
                }
            }
            OpRequest::WriteLvb(v) => match self.index.get(&(ls, lock)) {
                Some(&k) if self.locks[k].claimed => {
                    self.locks[k].state.lvb = Some(*v);
                    done.complete(Ok(OpOutput::Done));
                }
                _ => done.complete(Err(EngineError::NotHeld)),
            },
            OpRequest::Renew => done.complete(Err(EngineError::InvalidArgument(
                "renewal is the engine's own business".into(),
            ))),
            OpRequest::Release | OpRequest::Convert { .. } | OpRequest::ReadLvb => {
                match self.index.get(&(ls, lock)) {
                    Some(&k) if self.locks[k].claimed => {
                        if matches!(req, OpRequest::Release) {
                            // Later requests on this lock see it as not held.
                            self.locks[k].claimed = false;
                        }
                        self.enqueue_or_start(k, req, done, received);
                    }
                    _ => done.complete(Err(EngineError::NotHeld)),
                }
            }
        }
    }

    /// A new lock entry on `drives` (resolving and opening them).
    fn new_entry(
        &mut self,
        ls: LockspaceId,
        lock: LockId,
        names: &DriveNames,
        query_only: bool,
    ) -> Result<usize, EngineError> {
        let count = names.len();
        if count == 0 || count > MAX_DRIVES {
            return Err(EngineError::InvalidArgument(format!(
                "a lock spans 1 to {MAX_DRIVES} drives, not {count}"
            )));
        }
        let lse = self
            .lockspaces
            .get(&ls)
            .ok_or_else(|| EngineError::InvalidArgument("unknown lockspace".into()))?;
        let host_id = lse.shared.host_id;
        let countdown_ms = lse.shared.lease_ms;
        let lse_renew_every = lse.policy.renew_every;
        let mut drives = Vec::with_capacity(count);
        for name in names.iter() {
            let driver = &mut self.driver;
            let id = self.registry.resolve(name, &mut |t| driver.add(t))?;
            if drives.contains(&id) {
                return Err(EngineError::InvalidArgument(format!(
                    "drive {name} is named twice in one lock"
                )));
            }
            drives.push(id);
        }
        let spec = LockSpec {
            lock_id: lock,
            host_id,
            n_drives: drives.len() as u16,
            countdown_ms,
        };
        self.next_incarnation += 1;
        let seed = self.rng.next_u64();
        let renew_early = Nanos(self.rng.range(0, lse_renew_every.0 / 2));
        Ok(self.locks.insert(LockEntry {
            ls,
            id: lock,
            incarnation: self.next_incarnation,
            state: LockState::new(spec, seed),
            drives,
            running: None,
            queue: VecDeque::new(),
            op_gen: 0,
            lease_gen: 0,
            renew_early,
            renew_due: false,
            held: false,
            claimed: false,
            query_only,
        }))
    }

    fn enqueue_or_start(
        &mut self,
        k: usize,
        req: OpRequest,
        done: Completer<OpResult>,
        received: Instant,
    ) {
        let e = &mut self.locks[k];
        if e.running.is_some() || !e.queue.is_empty() {
            e.queue.push_back(Queued {
                req,
                done,
                received,
            });
        } else {
            self.start(k, req, Some(done), received);
        }
    }

    /// Starts an operation on lock `k` (which has none running).
    fn start(
        &mut self,
        k: usize,
        req: OpRequest,
        caller: Option<Completer<OpResult>>,
        started: Instant,
    ) {
        let deadline = |t: Instant| self.to_nanos(t);
        let op = match ops::build(&req, &deadline) {
            Ok(op) => op,
            Err(e) => {
                if let Some(c) = caller {
                    c.complete(Err(e));
                }
                self.advance(k);
                return;
            }
        };
        let now = self.now();
        let generation = self.new_generation();
        let e = &mut self.locks[k];
        if matches!(req, OpRequest::Release) {
            // The protocol stops trusting the lease the moment a release starts
            // (it clears the lock state): no renewal, no fencing check from here.
            e.held = false;
            e.renew_due = false;
            e.lease_gen = generation;
        }
        let running = e.running.insert(Running {
            op,
            caller,
            started,
        });
        self.actions.clear();
        running.op.start(now, &mut e.state, &mut self.actions);
        self.apply_actions(k);
        self.after_step(k);
    }

    /// Sends the commands and sets the timer the last operation call asked for.
    fn apply_actions(&mut self, k: usize) {
        let timer = self.actions.timer;
        let mut cmds = std::mem::take(&mut self.actions.commands);
        let generation = self.new_generation();
        let (incarnation, ls) = {
            let e = &mut self.locks[k];
            e.op_gen = generation;
            if let Some(at) = timer {
                self.timers.arm(Timer {
                    at,
                    kind: TimerKind::Op,
                    lock: k,
                    generation: e.op_gen,
                });
            }
            (e.incarnation, e.ls)
        };
        let fault_pct = self
            .lockspaces
            .get(&ls)
            .map_or(0, |l| l.shared.fault_pct.load(Ordering::Relaxed));
        for (drive_no, req) in cmds.drain(..) {
            let Some(&drive) = self.locks[k].drives.get(drive_no as usize) else {
                tracing::error!(
                    drive_no,
                    "operation addressed a drive the lock does not span"
                );
                continue;
            };
            let key = self.inflight.insert(InFlight {
                lock: k,
                incarnation,
                drive_no,
                drive,
                req,
                tries: 0,
            });
            if fault_pct > 0 && self.rng.range(0, 99) < u64::from(fault_pct) {
                self.synthetic.push((
                    key,
                    Reply::err(DriveError::Io(uring_sg::codec::answer::libc_errno::EIO)),
                ));
                continue;
            }
            self.send(key);
        }
        self.actions.commands = cmds;
    }

    /// Hands in-flight command `key` to its drive's current path.
    fn send(&mut self, key: usize) {
        let Some(f) = self.inflight.get(key) else {
            return;
        };
        let slot = &mut self.registry.slots[f.drive];
        let path = slot.path();
        match self
            .driver
            .enqueue(path, key as u64, &f.req, self.cfg.command_timeout)
        {
            Ok(()) => {
                slot.health.commands += 1;
                self.stats.commands += 1;
            }
            Err(EnqueueError::Full) => self.backlog.push_back(key),
            Err(EnqueueError::Closed(errno)) => {
                self.synthetic
                    .push((key, Reply::err(DriveError::Io(errno))));
            }
        }
    }

    /// Retries commands that found their transport full.
    fn retry_backlog(&mut self) {
        for _ in 0..self.backlog.len() {
            let Some(key) = self.backlog.pop_front() else {
                break;
            };
            self.send(key);
        }
    }

    /// Delivers replies made up without a drive.
    fn deliver_synthetic(&mut self) {
        while !self.synthetic.is_empty() {
            let batch = std::mem::take(&mut self.synthetic);
            for (key, reply) in batch {
                self.on_reply(key, reply);
            }
        }
    }

    /// A command's answer: fail over to another path, or feed the operation.
    fn on_reply(&mut self, key: usize, reply: Reply) {
        let Some(f) = self.inflight.get_mut(key) else {
            return;
        };
        let slot = &mut self.registry.slots[f.drive];
        slot.record(&reply.result);
        if matches!(reply.result, Err(DriveError::Io(_)))
            && usize::from(f.tries) + 1 < slot.paths.len()
            && slot.fail_over()
        {
            f.tries += 1;
            tracing::warn!(drive = %slot.name, "I/O error: retrying on the next path");
            self.send(key);
            return;
        }
        let f = self.inflight.remove(key);
        self.stats.replies += 1;
        let k = f.lock;
        let now = self.now();
        let Some(e) = self.locks.get_mut(k) else {
            return;
        };
        if e.incarnation != f.incarnation {
            return;
        }
        let Some(running) = e.running.as_mut() else {
            return;
        };
        self.actions.clear();
        running
            .op
            .on_reply(now, &mut e.state, f.drive_no, &reply, &mut self.actions);
        self.apply_actions(k);
        self.after_step(k);
    }

    /// After any call into lock `k`'s operation: deliver its outcome, finish it,
    /// start what waits.
    fn after_step(&mut self, k: usize) {
        let Some(e) = self.locks.get_mut(k) else {
            return;
        };
        let Some(running) = e.running.as_mut() else {
            return;
        };
        let kind = running.op.kind();
        if let Some(result) = running.op.outcome() {
            let ok = result.is_ok();
            self.stats
                .record(kind, running.started.elapsed().as_nanos() as u64, ok);
            match kind {
                OpKind::Acquire if ok => e.held = true,
                OpKind::Acquire => e.claimed = false,
                // `claimed` was cleared when the release was requested; an
                // acquire queued behind this release has set it again since.
                OpKind::Release => e.held = false,
                OpKind::Renew if ok => self.stats.renewals += 1,
                OpKind::Renew => self.stats.renew_failures += 1,
                _ => {}
            }
            if let Some(caller) = running.caller.take() {
                caller.complete(result.map_err(EngineError::from));
            }
            if e.held && matches!(kind, OpKind::Acquire | OpKind::Renew | OpKind::Convert) {
                self.arm_lease(k);
            }
        }
        self.advance(k);
    }

    /// If lock `k`'s operation is finished: start the next one, or forget the lock.
    fn advance(&mut self, k: usize) {
        let Some(e) = self.locks.get_mut(k) else {
            return;
        };
        if e.running.as_ref().is_some_and(|r| !r.op.finished()) {
            return;
        }
        if let Some(r) = e.running.take() {
            // An outcome never reported (should not happen): tell the caller.
            if let Some(c) = r.caller {
                c.complete(Err(EngineError::Stopped));
            }
            if e.held {
                self.arm_lease(k);
            }
        }
        let e = &mut self.locks[k];
        if let Some(q) = e.queue.pop_front() {
            self.start(k, q.req, Some(q.done), q.received);
            return;
        }
        if e.renew_due && e.held {
            e.renew_due = false;
            let req = OpRequest::Renew;
            self.start(k, req, None, Instant::now());
            return;
        }
        if !e.held && !e.claimed {
            let e = self.locks.remove(k);
            if !e.query_only {
                self.index.remove(&(e.ls, e.id));
            }
            self.check_drops();
        }
    }

    // ---- leases ---------------------------------------------------------------

    /// Re-arms lock `k`'s renewal and fencing timers from its current state, and
    /// fences at once if the lease is already too close to its end.
    fn arm_lease(&mut self, k: usize) {
        let now = self.mono();
        let generation = self.new_generation();
        let e = &mut self.locks[k];
        let Some(lse) = self.lockspaces.get(&e.ls) else {
            return;
        };
        e.lease_gen = generation;
        let validity = lse.policy.validity(&e.state);
        if lse.policy.should_fence(now, validity) {
            let (shared, id) = (lse.shared.clone(), e.id);
            self.fence(&shared, id);
            return;
        }
        self.timers.arm(Timer {
            at: lse.policy.fence_at(validity),
            kind: TimerKind::Fence,
            lock: k,
            generation: e.lease_gen,
        });
        self.timers.arm(Timer {
            at: renewal_slot(if e.state.last_renewal.is_none() {
                lse.policy.next_renewal(&e.state) - e.renew_early
            } else {
                lse.policy.next_renewal(&e.state)
            }),
            kind: TimerKind::Renew,
            lock: k,
            generation: e.lease_gen,
        });
    }

    /// Runs every due timer.
    fn fire_timers(&mut self) {
        let at = self.now();
        let now = at.mono;
        while let Some(t) = self.timers.pop_due(now) {
            let Some(e) = self.locks.get_mut(t.lock) else {
                continue;
            };
            match t.kind {
                TimerKind::Op if t.generation == e.op_gen => {
                    if let Some(r) = e.running.as_mut() {
                        self.actions.clear();
                        r.op.on_timer(at, &mut e.state, &mut self.actions);
                        self.apply_actions(t.lock);
                        self.after_step(t.lock);
                    }
                }
                TimerKind::Renew if t.generation == e.lease_gen && e.held => {
                    let paused = self
                        .lockspaces
                        .get(&e.ls)
                        .is_some_and(|l| l.shared.renew_paused.load(Ordering::SeqCst));
                    if paused {
                        // As if renewals failed: the fence timer fires before the
                        // lease ends. Look again one cadence later.
                        let every = self.lockspaces[&e.ls].policy.renew_every;
                        self.timers.arm(Timer {
                            at: now + every,
                            ..t
                        });
                    } else if e.running.is_some() || !e.queue.is_empty() {
                        e.renew_due = true;
                    } else {
                        self.start(t.lock, OpRequest::Renew, None, Instant::now());
                    }
                }
                TimerKind::Fence if t.generation == e.lease_gen && e.held => {
                    let Some(lse) = self.lockspaces.get(&e.ls) else {
                        continue;
                    };
                    let v = lse.policy.validity(&e.state);
                    if lse.policy.should_fence(now, v) {
                        let (shared, id) = (lse.shared.clone(), e.id);
                        self.fence(&shared, id);
                    } else {
                        self.timers.arm(Timer {
                            at: lse.policy.fence_at(v),
                            ..t
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Fences lockspace `shared` (once): its leases are about to lapse.
    fn fence(&mut self, shared: &Arc<LockspaceShared>, lock: LockId) {
        if shared.fenced.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stats.fences += 1;
        tracing::error!(lockspace = %shared.name, lock = %lock, "lease about to lapse: fencing");
        shared.run_fence_action();
    }

    // ---- lockspaces and stats ------------------------------------------------------

    /// Releases (or forgets) every lock of lockspace `ls` on this reactor.
    fn drop_lockspace(&mut self, ls: LockspaceId, release: bool) {
        let keys: Vec<usize> = self
            .locks
            .iter()
            .filter(|(_, e)| e.ls == ls)
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            let e = &mut self.locks[k];
            for q in e.queue.drain(..) {
                q.done.complete(Err(EngineError::Stopped));
            }
            e.renew_due = false;
            if release && (e.claimed || e.held) {
                e.claimed = false;
                if e.running.is_some() {
                    e.queue.push_back(Queued {
                        req: OpRequest::Release,
                        done: crate::completion::pair(stopped).0,
                        received: Instant::now(),
                    });
                } else {
                    self.start(k, OpRequest::Release, None, Instant::now());
                }
            } else if !release {
                // Forget it: the drives expire our membership. Late replies of a
                // running operation find no entry and are dropped.
                let e = self.locks.remove(k);
                if !e.query_only {
                    self.index.remove(&(e.ls, e.id));
                }
                if let Some(r) = e.running {
                    if let Some(c) = r.caller {
                        c.complete(Err(EngineError::Stopped));
                    }
                }
            }
        }
    }

    /// Completes lockspace drops whose locks are all gone here.
    fn check_drops(&mut self) {
        if self.drops.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.drops.len() {
            let ls = self.drops[i].0;
            if self.locks.iter().any(|(_, e)| e.ls == ls) {
                i += 1;
            } else {
                let (ls, done) = self.drops.swap_remove(i);
                self.lockspaces.remove(&ls);
                done.complete(());
            }
        }
    }

    fn snapshot_stats(&self) -> ReactorStats {
        let mut s = self.stats.clone();
        s.drives = self
            .registry
            .slots
            .iter()
            .map(|d| (d.name.to_string(), d.health.clone()))
            .collect();
        s
    }
}

/// Renewals are due on a grid of this step (rounded down, so never late): locks
/// whose renewals fall in one step go out in one loop turn, one submission.
const RENEWAL_GRID: Nanos = Nanos::from_millis(2);

/// `at` rounded down to the renewal grid.
fn renewal_slot(at: Nanos) -> Nanos {
    Nanos(at.0 - at.0 % RENEWAL_GRID.0)
}

/// The value a caller gets when its operation is dropped unfinished.
pub fn stopped() -> OpResult {
    Err(EngineError::Stopped)
}
