//! The reactor: one thread that owns an io_uring, the drives it talks to, and the
//! [`LockTable`] of the locks hashed to it (ARCHITECTURE.md "The shape in one
//! paragraph"). The reactor is a shell: every decision about a lock (what runs
//! next, when to renew, when to fence, when a caller is answered, how long a
//! command may take) is the table's, which the deterministic simulation drives
//! too. The reactor keeps the ring, the request channel, the drive registry
//! (opening, multipath failover), the command slab and the wake-up.
//!
//! One loop turn:
//! 1. take every queued request from the channel and hand it to the table (drive
//!    names resolved to registry ids);
//! 2. let the table fire its due timers;
//! 3. one `io_uring_enter` through [`uring_sg::driver::Driver::turn`] submits every
//!    command the table emitted and waits for the first completion, the next timer,
//!    or a wake-up from a caller ([`wake`]);
//! 4. each completion goes back to the table (after failover to another path on an
//!    I/O error); its answers go to the callers, its fences run.
//!
//! Nothing is allocated per drive command once the slabs have grown.

pub(crate) mod drives;
pub(crate) mod ring;
pub(crate) mod wake;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, TryRecvError};
use slab::Slab;
use uring_sg::transport::{Completion, EnqueueError, Reply};
use uring_sg::{DriveError, LockId};

use crate::completion::Completer;
use crate::locks::{
    Event, LockRequest, LockTable, LockspaceId, LockspaceInfo, OpKind, OpResult, Output,
    TableConfig,
};
use crate::protocol::Now;
use crate::shared::msg::{DriveNames, Msg, OpRequest};
use crate::shared::{DriveOpener, EngineError, LockspaceShared, ReactorStats};
use crate::time::Nanos;
use crate::watchdog::ValidityPublisher;
use drives::DriveRegistry;
use ring::Ring;
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
    /// Where the earliest validity of the held locks goes (the watchdog).
    pub validity: Option<ValidityPublisher>,
}

/// One drive command in the ring (or waiting for room in its transport).
struct Sent {
    /// The table's key for it.
    key: u64,
    drive: usize,
    timeout: Duration,
    /// Paths tried so far (multipath failover).
    tries: u8,
}

type Caller = Completer<OpResult>;

/// The reactor. See the module docs.
pub struct Reactor {
    cfg: ReactorConfig,
    rx: Receiver<Msg>,
    wake: Arc<Wake>,
    driver: Ring,
    registry: DriveRegistry,
    table: LockTable<Caller, Arc<LockspaceShared>>,
    out: Output<Caller>,
    sent: Slab<Sent>,
    /// Commands a transport could not take yet (its in-flight cap was reached).
    backlog: VecDeque<usize>,
    /// Replies made up without a drive (no path, closed transport).
    synthetic: Vec<(usize, Reply)>,
    lockspaces: HashMap<LockspaceId, Arc<LockspaceShared>>,
    /// Lockspace drops waiting for their locks to go.
    drops: Vec<(LockspaceId, Completer<()>)>,
    completed: Vec<(usize, Completion)>,
    origin: Instant,
    stats: ReactorStats,
}

impl Reactor {
    /// Builds a reactor (its ring and wake-up source); run it with [`Reactor::run`]
    /// on its own thread.
    pub fn new(cfg: ReactorConfig, rx: Receiver<Msg>, wake: Arc<Wake>) -> std::io::Result<Self> {
        let mut driver = Ring::new(cfg.ring_entries, cfg.opener.needs_sqe128())?;
        driver.add(Box::new(WakeSource::new(wake.clone())));
        let registry = DriveRegistry::new(cfg.opener.clone(), cfg.client.clone());
        let seed = cfg.seed ^ (cfg.index as u64 + 1).wrapping_mul(0x9E37_79B9);
        let table = LockTable::new(TableConfig::new(
            Nanos::from_duration(cfg.command_timeout),
            seed,
        ));
        Ok(Reactor {
            cfg,
            rx,
            wake,
            driver,
            registry,
            table,
            out: Output::new(),
            sent: Slab::new(),
            backlog: VecDeque::new(),
            synthetic: Vec::new(),
            lockspaces: HashMap::new(),
            drops: Vec::new(),
            completed: Vec::new(),
            origin: Instant::now(),
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
            let now = self.now();
            self.table.on_timer(now, &mut self.out);
            self.execute();
            self.retry_backlog();
            self.deliver_synthetic();
            self.publish_validity(false);
            let now = self.mono();
            let mut wait = self.table.next_timer().map_or(IDLE_WAIT, |t| {
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
                    self.on_completion(c.tag as usize, c.reply);
                }
            }
            self.completed = completed;
        }
        self.publish_validity(true);
        tracing::debug!(reactor = self.cfg.index, "reactor stopped");
    }

    /// Hands the table's earliest validity end to the watchdog, at its cadence
    /// (or now, with `force`).
    fn publish_validity(&mut self, force: bool) {
        let Some(p) = self.cfg.validity.as_mut() else {
            return;
        };
        let now = Instant::now();
        if force || p.due(now) {
            let origin = self.origin;
            let v = self
                .table
                .earliest_validity()
                .map(|n| origin + n.to_duration());
            p.publish(now, v);
        }
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
                    let info = LockspaceInfo {
                        host_id: shared.host_id,
                        lease_ms: shared.lease_ms,
                        policy: shared.policy,
                    };
                    self.table.add_lockspace(shared.id, shared.clone(), info);
                    self.lockspaces.insert(shared.id, shared);
                }
                Ok(Msg::DropLockspace { ls, release, done }) => {
                    let now = self.now();
                    self.table.drop_lockspace(now, ls, release, &mut self.out);
                    self.drops.push((ls, done));
                    self.execute();
                }
                Ok(Msg::Stats(done)) => done.complete(Some(self.snapshot_stats())),
                Ok(Msg::ValidUntil { ls, lock, done }) => {
                    let v = self.table.validity(ls, lock);
                    done.complete(v.map(|n| self.origin + n.to_duration()));
                }
                Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// Resolves `names` to registry drive ids, opening new drives. A drive that
    /// cannot be opened still gets an id (it answers every command with EIO until
    /// it can be opened: a missing PV counts as a failed drive); only when no
    /// drive at all can be opened is the lock refused with the first error.
    fn resolve(&mut self, names: &DriveNames) -> Result<Vec<usize>, EngineError> {
        let count = names.len();
        if count == 0 || count > MAX_DRIVES {
            return Err(EngineError::InvalidArgument(format!(
                "a lock spans 1 to {MAX_DRIVES} drives, not {count}"
            )));
        }
        let mut ids = Vec::with_capacity(count);
        let mut first_error = None;
        let mut any_open = false;
        for name in names.iter() {
            let driver = &mut self.driver;
            let id = self.registry.resolve(name, &mut |t| driver.add(t));
            let slot = &self.registry.slots[id];
            match &slot.open_error {
                Some(e) => {
                    first_error.get_or_insert_with(|| e.clone());
                }
                None => any_open = true,
            }
            if ids.contains(&id) {
                return Err(EngineError::InvalidArgument(format!(
                    "drive {name} is named twice in one lock"
                )));
            }
            ids.push(id);
        }
        match first_error {
            Some(e) if !any_open => Err(e),
            _ => Ok(ids),
        }
    }

    /// Hands one caller request to the table.
    fn on_request(&mut self, ls: LockspaceId, lock: LockId, req: OpRequest, done: Caller) {
        let now = self.now();
        let req = match req {
            OpRequest::Acquire {
                mode,
                drives,
                deadline,
                no_wait,
            } => match self.resolve(&drives) {
                Ok(drives) => LockRequest::Acquire {
                    mode,
                    drives,
                    deadline: self.to_nanos(deadline),
                    no_wait,
                },
                Err(e) => return done.complete(Err(e)),
            },
            OpRequest::HostCount { drives } => match self.resolve(&drives) {
                Ok(drives) => LockRequest::HostCount { drives },
                Err(e) => return done.complete(Err(e)),
            },
            OpRequest::Mode { drives } => match self.resolve(&drives) {
                Ok(drives) => LockRequest::Mode { drives },
                Err(e) => return done.complete(Err(e)),
            },
            OpRequest::Release => LockRequest::Release,
            OpRequest::Convert { mode } => LockRequest::Convert { mode },
            OpRequest::ReadLvb => LockRequest::ReadLvb,
            OpRequest::WriteLvb(v) => LockRequest::WriteLvb(v),
        };
        self.table
            .request(now, ls, lock, req, done, now.mono, &mut self.out);
        self.execute();
    }

    /// Carries out what the table asked for: commands, answers, fences, stats.
    fn execute(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        for ev in out.events.drain(..) {
            match ev {
                Event::OpDone {
                    kind, ok, latency, ..
                } => {
                    self.stats.record(kind, latency.0, ok);
                    if kind == OpKind::Renew {
                        if ok {
                            self.stats.renewals += 1;
                        } else {
                            self.stats.renew_failures += 1;
                        }
                    }
                }
                Event::DriveUnresponsive(d) => {
                    if let Some(slot) = self.registry.slots.get_mut(d) {
                        slot.health.unresponsive_episodes += 1;
                        tracing::warn!(drive = %slot.name, "drive unresponsive: probing it");
                    }
                }
                Event::DriveResponsive(d) => {
                    if let Some(slot) = self.registry.slots.get(d) {
                        tracing::info!(drive = %slot.name, "drive answers again");
                    }
                }
                Event::LateReply { .. } => self.stats.late_replies += 1,
                Event::OpStarted { .. } => {}
            }
        }
        for f in out.fences.drain(..) {
            if let Some(shared) = self.lockspaces.get(&f.ls) {
                self.stats.fences += 1;
                tracing::error!(lockspace = %shared.name, lock = %f.lock, "lease about to lapse: fencing");
                shared.run_fence_action();
            }
        }
        for a in out.answers.drain(..) {
            a.caller.complete(a.result);
        }
        for c in out.commands.drain(..) {
            let key = self.sent.insert(Sent {
                key: c.key,
                drive: c.drive,
                timeout: c.timeout.to_duration(),
                tries: 0,
            });
            self.send(key);
        }
        self.out = out;
        self.check_drops();
    }

    /// Hands command `key` to its drive's current path.
    fn send(&mut self, key: usize) {
        let Some(s) = self.sent.get(key) else {
            return;
        };
        let slot = &mut self.registry.slots[s.drive];
        if slot.paths.is_empty() {
            // Not opened (missing device): try again now and then.
            let driver = &mut self.driver;
            if !self.registry.reopen(s.drive, &mut |t| driver.add(t)) {
                self.synthetic.push((
                    key,
                    Reply::err(DriveError::Io(uring_sg::codec::answer::libc_errno::EIO)),
                ));
                return;
            }
        }
        let slot = &mut self.registry.slots[s.drive];
        let path = slot.path();
        let Some(req) = self.table.command_request(s.key) else {
            return;
        };
        match self.driver.enqueue(path, key as u64, req, s.timeout) {
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
                self.on_completion(key, reply);
            }
        }
    }

    /// A command's answer: fail over to another path, or hand it to the table.
    fn on_completion(&mut self, key: usize, reply: Reply) {
        let Some(s) = self.sent.get_mut(key) else {
            return;
        };
        let slot = &mut self.registry.slots[s.drive];
        slot.record(&reply.result);
        if matches!(reply.result, Err(DriveError::Io(_)))
            && usize::from(s.tries) + 1 < slot.paths.len()
            && slot.fail_over()
        {
            s.tries += 1;
            tracing::warn!(drive = %slot.name, "I/O error: retrying on the next path");
            self.send(key);
            return;
        }
        let s = self.sent.remove(key);
        self.stats.replies += 1;
        let now = self.now();
        self.table.on_reply(now, s.key, reply, &mut self.out);
        self.execute();
    }

    // ---- lockspaces and stats ------------------------------------------------------

    /// Completes lockspace drops whose locks are all gone here.
    fn check_drops(&mut self) {
        let mut i = 0;
        while i < self.drops.len() {
            let ls = self.drops[i].0;
            if self.table.lockspace_idle(ls) {
                let (ls, done) = self.drops.swap_remove(i);
                self.table.remove_lockspace(ls);
                self.lockspaces.remove(&ls);
                done.complete(());
            } else {
                i += 1;
            }
        }
    }

    fn snapshot_stats(&self) -> ReactorStats {
        let mut s = self.stats.clone();
        s.drives = self
            .registry
            .slots
            .iter()
            .enumerate()
            .map(|(id, d)| {
                let mut h = d.health.clone();
                h.unresponsive = self.table.is_unresponsive(id);
                (d.name.to_string(), h)
            })
            .collect();
        s
    }
}
