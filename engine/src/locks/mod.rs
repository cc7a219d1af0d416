//! The per-lock lifecycle as one sans-IO component: [`LockTable`].
//!
//! The protocol's state machines ([`crate::protocol`]) decide what one operation
//! sends and when it is done. Everything around them that decides something at run
//! time lives here, once: which request runs next on a lock, when a held lock is
//! renewed, when a lockspace is fenced, when a caller is answered, what happens to
//! replies that arrive after their caller was answered, which drives are
//! unresponsive, and how long each drive command may take. The reactor
//! (the crate's private `reactor` module) feeds it requests, replies and the clock and executes what
//! it returns; the deterministic simulation (`idm-tests`) drives **this same
//! table** in virtual time. Nothing here reads a clock, does I/O or allocates per
//! drive command once its slabs have grown.
//!
//! # Contract
//!
//! Every entry point takes `now` (monotonic [`Now`]) and an [`Output`] to fill:
//! drive commands to send (each with a key and its own timeout), answers to callers,
//! fences to run and events for statistics and checkers. The driver must:
//!
//! 1. send every [`Command`] and later call [`LockTable::on_reply`] **exactly once**
//!    per command key: the drive's answer, or `Err(DriveError::Timeout)` when the
//!    command's `timeout` passed, or `Err(Io)` when the transport failed;
//! 2. call [`LockTable::on_timer`] when [`LockTable::next_timer`] is due (early or
//!    spurious calls are harmless);
//! 3. run the fencing action of every [`FenceOrder`] (the table has already marked
//!    the lockspace fenced through [`LockspaceCtl::mark_fenced`]).
//!
//! # Semantics (the rules issue #12 asked for, each tested)
//!
//! - **Answer at quorum, never wait for stragglers.** When an operation reports its
//!   outcome the caller is answered and the operation is *detached*: its commands
//!   still in flight become the lock's stragglers, and the next operation on the
//!   lock starts at once. A straggler's reply is absorbed against the lock's
//!   *current* state (module `late`): a late grant joins a held lock, or is unlocked when
//!   the lock is not held (any more); a late refresh extends a drive's window; a
//!   late "expired" drops the drive.
//! - **One command per drive per lock.** A command for a drive that still has one
//!   outstanding for the same lock waits for that reply (per-drive order is kept: a
//!   release's unlock never overtakes the trylock before it).
//! - **Renewals first.** A due renewal starts before any queued caller request, as
//!   soon as the running operation reported its outcome; the renewal timer fires
//!   whatever runs.
//! - **Unresponsive drives.** A drive whose command timed out is marked
//!   unresponsive ([`health`]): its commands get the short probe timeout instead of
//!   a full command timeout, so no operation that needs it waits long, and it is
//!   probed with short table-count reads until it answers. It still gets every
//!   command: a drive that came back answers (and is unmarked by that answer)
//!   before its next probe would have said so, and an operation that has no
//!   majority without it is not failed by a stale mark.
//! - **Command timeouts fit the operation.** A command may take at most the
//!   configured command timeout and a quarter of the lease; an acquire's commands at
//!   most a third of the time left to its deadline, so that a trylock whose BUSY the
//!   kernel requeues until it times out is followed by a break in time.
//! - **No success on a lapsed lease.** An acquire or convert that reached quorum is
//!   reported as success only if the lease is still valid for more than the fence
//!   margin at that moment. An acquire whose grant came too late is released at once
//!   (without LVB) and the caller gets [`LockError::LeaseLost`]; a convert fences.
//! - **Fenced holders store nothing.** A release in a fenced lockspace, or of a lock
//!   whose validity already ran out, is a [`crate::protocol::Release::fenced`]: no
//!   LVB, no re-trylock. Its caller gets [`EngineError::Fenced`] (or
//!   [`LockError::LeaseLost`]) after the unlocks, never success.

//! - **LVB prefetch.** lvmlockd reads the LVB right after every VG lock. A lock
//!   whose LVB a holder of this lockspace read before (at most
//!   [`MAX_LVB_READERS`] lock IDs are remembered per lockspace) gets a read of
//!   its LVB started by the table as soon as an acquire reports success: each
//!   drive's read goes out once that drive answered the trylock (per-drive
//!   order), so the read mostly overlaps the caller's own turnaround. The
//!   value of any successful read is kept while the lock stays held, and a
//!   caller's read of a held lock is answered from it without drive commands.
//!   That is sound because nobody can store an LVB while this host holds the
//!   lock on a majority: stores happen only with an unlock, by a holder (an
//!   exclusive one: lvmlockd writes the LVB under EX only; a value another
//!   **shared** holder stores with its unlock is not seen until the next
//!   acquire, as with a DLM value block, which is read at grant time). The
//!   value is dropped when an acquire or release starts, and not used once the
//!   lease lapsed. A release detaches a running prefetch, as it does a renewal.

pub mod health;
mod late;
mod lease;
pub mod op;
pub mod request;
pub mod timers;

use std::collections::{HashMap, HashSet, VecDeque};

use slab::Slab;
use uring_sg::transport::{Reply, Request};
use uring_sg::{DriveError, HostId, LockId};

use crate::error::LockError;
use crate::fencing::LeasePolicy;
use crate::protocol::{Actions, LockSpec, LockState, Now, XorShift64, MAX_DRIVES};
use crate::shared::EngineError;
use crate::time::Nanos;
use health::Health;
pub use op::{DynOp, OpKind, OpOutput};
pub use request::LockRequest;
use request::{build, Work};
use timers::{Timer, TimerKind, Timers};

/// A drive as the table knows it: an index the driver chose (the reactor's drive
/// registry slot, the simulation's drive number). One physical drive, one id.
pub type DriveId = usize;

/// The id of a lockspace inside one engine.
pub type LockspaceId = u32;

/// The result a caller receives.
pub type OpResult = Result<OpOutput, EngineError>;

/// Renewals are due on a grid of this step (rounded down, so never late): locks
/// whose renewals fall in one step go out in one loop turn, one submission.
pub const RENEWAL_GRID: Nanos = Nanos::from_millis(2);

/// The lockspace id of retired entries (no lockspace has it).
const RETIRED: LockspaceId = LockspaceId::MAX;

/// The fewest records a learned table read asks for beyond the table last seen.
pub const MIN_TABLE_HINT: u32 = 16;

/// The shortest timeout an acquire's command gets from its deadline (the
/// configured command timeout and the lease still bound it).
pub const ACQUIRE_COMMAND_FLOOR: Nanos = Nanos::from_millis(100);

/// Lock IDs per lockspace whose LVB is prefetched after an acquire (the first ones
/// read; lvmlockd reads the LVB of the global lock and of each VG lock).
pub const MAX_LVB_READERS: usize = 4096;

/// The shortest timeout any command gets.
pub const MIN_COMMAND_TIMEOUT: Nanos = Nanos::from_millis(1);

/// What the table needs of a lockspace that lives outside it (its flags are shared
/// with the API and with other reactors in production, plain cells in the
/// simulation).
pub trait LockspaceCtl {
    /// The lockspace's name (for errors).
    fn name(&self) -> &str;
    /// Whether the lockspace was fenced (by any reactor).
    fn is_fenced(&self) -> bool;
    /// Marks the lockspace fenced; `true` if this call did (the fence must run).
    fn mark_fenced(&self) -> bool;
    /// Renewals are paused (`ilm_stop_renew`): leases lapse, fencing fires first.
    fn renew_paused(&self) -> bool;
    /// Percentage of drive commands to fail with EIO (fault injection, 0..=100).
    fn fault_percent(&self) -> u32;
}

/// A lockspace's fixed parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockspaceInfo {
    /// The host ID sent to the drives.
    pub host_id: HostId,
    /// The membership countdown, ms.
    pub lease_ms: u64,
    /// Renewal and fencing arithmetic.
    pub policy: LeasePolicy,
}

/// A deliberately wrong rule, for proving that the simulation's checker catches
/// the bugs it is meant to catch. Never set outside that self-test.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// The correct rules.
    #[default]
    None,
    /// Callers are told "acquired" once ⌊N/2⌋ drives granted; validity counts ⌊N/2⌋.
    MinorityQuorum,
    /// A grant is trusted from the time its reply was processed, not sent.
    TrustReplyTime,
}

/// How a table behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// The longest any drive command may take.
    pub command_timeout: Nanos,
    /// Timeout of a probe to an unresponsive drive.
    pub probe_timeout: Nanos,
    /// Time between probes of a drive that stays unresponsive.
    pub probe_every: Nanos,
    /// Seed of backoff jitter, renewal phases and fault injection.
    pub seed: u64,
    #[doc(hidden)]
    pub planted_bug: PlantedBug,
}

impl TableConfig {
    /// Defaults for `command_timeout`: probes time out after a quarter of it
    /// (1 ms..=500 ms) and repeat every two probe timeouts.
    pub fn new(command_timeout: Nanos, seed: u64) -> TableConfig {
        let probe_timeout = Nanos(command_timeout.0 / 4)
            .max(Nanos::from_millis(1))
            .min(Nanos::from_millis(500));
        TableConfig {
            command_timeout,
            probe_timeout,
            probe_every: probe_timeout + probe_timeout,
            seed,
            planted_bug: PlantedBug::None,
        }
    }
}

/// One drive command to send.
#[derive(Clone, Debug)]
pub struct Command {
    /// Hand this back with the reply ([`LockTable::on_reply`]).
    pub key: u64,
    /// The drive.
    pub drive: DriveId,
    /// Answer `Err(DriveError::Timeout)` if no reply came within this. What to
    /// send is [`LockTable::command_request`] of the key (not copied here).
    pub timeout: Nanos,
}

/// A caller's answer.
#[derive(Debug)]
pub struct Answer<C> {
    /// Who asked.
    pub caller: C,
    /// What ran (`None`: no drive operation, e.g. write LVB or a refusal).
    pub kind: Option<OpKind>,
    /// The result.
    pub result: OpResult,
    /// From the request to the answer.
    pub latency: Nanos,
}

/// A lockspace to fence now: run its fencing action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceOrder {
    /// The lockspace.
    pub ls: LockspaceId,
    /// The lock whose validity was about to end.
    pub lock: LockId,
}

/// Things that happened, for statistics and checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An operation reported its outcome (renewals included).
    OpDone {
        /// The lock.
        lock: LockId,
        /// What ran.
        kind: OpKind,
        /// Success.
        ok: bool,
        /// From request (or due time, for a renewal) to outcome.
        latency: Nanos,
    },
    /// An operation started on a lock.
    OpStarted {
        /// The lock.
        lock: LockId,
        /// What.
        kind: OpKind,
        /// A renewal of this lock was due and had not started yet.
        renewal_waiting: bool,
    },
    /// A drive stopped answering (a command to it timed out).
    DriveUnresponsive(DriveId),
    /// An unresponsive drive answered again.
    DriveResponsive(DriveId),
    /// A reply came for an operation whose caller was already answered.
    LateReply {
        /// The lock.
        lock: LockId,
        /// The drive.
        drive: DriveId,
    },
}

/// What one call into the table asks the driver to do.
#[derive(Debug)]
pub struct Output<C> {
    /// Drive commands to send now.
    pub commands: Vec<Command>,
    /// Callers to answer.
    pub answers: Vec<Answer<C>>,
    /// Fencing actions to run.
    pub fences: Vec<FenceOrder>,
    /// What happened.
    pub events: Vec<Event>,
}

impl<C> Default for Output<C> {
    fn default() -> Self {
        Output {
            commands: Vec::new(),
            answers: Vec::new(),
            fences: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl<C> Output<C> {
    /// Empty output.
    pub fn new() -> Output<C> {
        Output::default()
    }

    /// Whether nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
            && self.answers.is_empty()
            && self.fences.is_empty()
            && self.events.is_empty()
    }

    /// Empties every list, keeping their allocations.
    pub fn clear(&mut self) {
        self.commands.clear();
        self.answers.clear();
        self.fences.clear();
        self.events.clear();
    }
}

/// The operation running on a lock, whose caller waits.
struct Running<C> {
    op: Box<dyn DynOp>,
    kind: OpKind,
    serial: u64,
    caller: Option<C>,
    started: Nanos,
    /// An acquire's deadline (its commands must fit before it).
    deadline: Option<Nanos>,
    /// A fenced release: its caller gets this error once it is done.
    fenced_error: Option<EngineError>,
}

impl<C> Running<C> {
    /// The table's own LVB read after an acquire (no caller waits for it).
    fn is_prefetch(&self) -> bool {
        self.kind == OpKind::ReadLvb && self.caller.is_none()
    }
}

/// A request waiting for the running operation.
struct Queued<C> {
    work: Work,
    caller: Option<C>,
    received: Nanos,
}

/// Who owns a command in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// The operation with this serial (detached once it is no longer running).
    Op(u64),
    /// A clean-up the table sent itself for a straggler (late grant → unlock).
    Cleanup,
    /// A probe of an unresponsive drive.
    Probe,
}

/// One command in flight.
struct InFlight {
    lock: usize,
    incarnation: u64,
    drive_no: u16,
    drive: DriveId,
    owner: Owner,
    req: Request,
    sent: Nanos,
}

/// A command waiting for the drive's previous command on the same lock.
struct Deferred {
    drive_no: u16,
    owner: Owner,
    req: Request,
}

/// One lock.
struct Lock<C> {
    ls: LockspaceId,
    id: LockId,
    incarnation: u64,
    state: LockState,
    drives: Vec<DriveId>,
    running: Option<Running<C>>,
    queue: VecDeque<Queued<C>>,
    /// Commands outstanding per drive number (any owner).
    out_on: Vec<u8>,
    deferred: Vec<Deferred>,
    op_gen: u64,
    lease_gen: u64,
    /// Phase of the first renewal (see `arm_lease`).
    renew_early: Nanos,
    /// When a renewal became due and waits for the running operation.
    renew_due: Option<Nanos>,
    held: bool,
    claimed: bool,
    query_only: bool,
    /// The LVB a read (caller's or prefetch) returned during the current hold.
    lvb_seen: Option<uring_sg::Lvb>,
}

impl<C> Lock<C> {
    fn outstanding(&self) -> bool {
        self.out_on.iter().any(|&n| n > 0) || !self.deferred.is_empty()
    }

    /// Nothing runs, waits or is held: the entry may go once stragglers drained.
    fn idle(&self) -> bool {
        !self.held && !self.claimed && self.running.is_none() && self.queue.is_empty()
    }
}

struct LsEntry<L> {
    ctl: L,
    info: LockspaceInfo,
    /// Locks whose LVB a holder read: prefetched after each acquire.
    lvb_readers: HashSet<LockId>,
}

/// The per-lock lifecycle of one reactor (or one simulated host). See the module
/// docs. `C` is the caller token answered through [`Output::answers`], `L` the
/// lockspace handle.
pub struct LockTable<C, L: LockspaceCtl> {
    cfg: TableConfig,
    locks: Slab<Lock<C>>,
    index: HashMap<(LockspaceId, LockId), usize>,
    /// Entries of forgotten lockspaces with commands still in flight, by the
    /// membership they hold on the drives.
    retired: HashMap<(HostId, LockId), usize>,
    lockspaces: HashMap<LockspaceId, LsEntry<L>>,
    inflight: Slab<InFlight>,
    timers: Timers,
    health: Health,
    /// Replies made up without a drive (injected faults), delivered before the
    /// call that made them returns.
    synthetic: VecDeque<(usize, Reply)>,
    /// Commands for the driver, moved to [`Output::commands`] at the end of a call.
    sends: Vec<Command>,
    actions: Actions,
    rng: XorShift64,
    /// Records the next table read asks for: the last table a read returned
    /// plus a quarter (see `learn_table_size`); 0 until one was seen.
    table_hint: u32,
    next_incarnation: u64,
    next_generation: u64,
    next_serial: u64,
}

impl<C, L: LockspaceCtl> LockTable<C, L> {
    /// An empty table.
    pub fn new(cfg: TableConfig) -> LockTable<C, L> {
        LockTable {
            rng: XorShift64::new(cfg.seed),
            cfg,
            locks: Slab::new(),
            index: HashMap::new(),
            retired: HashMap::new(),
            lockspaces: HashMap::new(),
            inflight: Slab::new(),
            timers: Timers::new(),
            health: Health::default(),
            synthetic: VecDeque::new(),
            sends: Vec::new(),
            actions: Actions::new(),
            table_hint: 0,
            next_incarnation: 0,
            next_generation: 0,
            next_serial: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TableConfig {
        &self.cfg
    }

    /// Registers a lockspace.
    pub fn add_lockspace(&mut self, ls: LockspaceId, ctl: L, info: LockspaceInfo) {
        self.lockspaces.insert(
            ls,
            LsEntry {
                ctl,
                info,
                lvb_readers: HashSet::new(),
            },
        );
    }

    /// The lockspace's handle.
    pub fn lockspace(&self, ls: LockspaceId) -> Option<&L> {
        self.lockspaces.get(&ls).map(|l| &l.ctl)
    }

    /// The earliest time [`LockTable::on_timer`] has something to do.
    pub fn next_timer(&self) -> Option<Nanos> {
        debug_assert!(
            self.synthetic.is_empty(),
            "made-up replies are delivered before a call returns"
        );
        self.timers.next()
    }

    /// The request of command `key` while it is in flight (what the driver sends,
    /// and sends again on another path after an I/O error).
    pub fn command_request(&self, key: u64) -> Option<&Request> {
        self.inflight.get(key as usize).map(|f| &f.req)
    }

    /// Commands in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether `drive` is marked unresponsive.
    pub fn is_unresponsive(&self, drive: DriveId) -> bool {
        self.health.is_unresponsive(drive)
    }

    /// The validity of held lock `lock` of `ls` (host monotonic time; `None`: not
    /// held, or no validity left).
    pub fn validity(&self, ls: LockspaceId, lock: LockId) -> Option<Nanos> {
        let &k = self.index.get(&(ls, lock))?;
        let e = &self.locks[k];
        if !e.held {
            return None;
        }
        self.validity_of(e)
    }

    /// The earliest validity end over every held lock of this table (host
    /// monotonic time; `None`: nothing held). A held lock with no validity left
    /// gives `Some(Nanos::ZERO)`. Walks every lock: call it at a cadence, not per
    /// command (the watchdog's arming point).
    pub fn earliest_validity(&self) -> Option<Nanos> {
        self.locks
            .iter()
            .filter(|(_, e)| e.held)
            .map(|(_, e)| self.validity_of(e).unwrap_or(Nanos::ZERO))
            .min()
    }

    /// Whether `lock` of `ls` is held (acquired and not being released).
    pub fn is_held(&self, ls: LockspaceId, lock: LockId) -> bool {
        self.index
            .get(&(ls, lock))
            .is_some_and(|&k| self.locks[k].held)
    }

    /// The protocol state of `lock` of `ls`, for tests and checkers.
    pub fn lock_state(&self, ls: LockspaceId, lock: LockId) -> Option<&LockState> {
        self.index.get(&(ls, lock)).map(|&k| &self.locks[k].state)
    }

    /// Whether no lock of `ls` is held, claimed, running or waiting (commands of
    /// finished operations may still be in flight).
    pub fn lockspace_idle(&self, ls: LockspaceId) -> bool {
        !self.locks.iter().any(|(_, e)| e.ls == ls && !e.idle())
    }

    // ---- entry points -----------------------------------------------------------

    /// A caller's request on `lock` of lockspace `ls`, received at `received`
    /// (≤ `now`; latency is counted from it).
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        now: Now,
        ls: LockspaceId,
        lock: LockId,
        req: LockRequest,
        caller: C,
        received: Nanos,
        out: &mut Output<C>,
    ) {
        // Whatever was due before this request happens first (a lease that ran
        // out while the process was paused is fenced before its release runs).
        self.fire_timers(now, out);
        self.on_request(now, ls, lock, req, caller, received, out);
        self.flush(now, out);
    }

    /// The reply to command `key` (exactly once per command).
    pub fn on_reply(&mut self, now: Now, key: u64, reply: Reply, out: &mut Output<C>) {
        self.fire_timers(now, out);
        self.reply(now, key as usize, reply, out);
        self.flush(now, out);
    }

    /// Runs whatever is due at `now`.
    pub fn on_timer(&mut self, now: Now, out: &mut Output<C>) {
        self.fire_timers(now, out);
        self.flush(now, out);
    }

    /// Removes lockspace `ls`: with `release`, its held locks are released (their
    /// callers' queued requests fail with [`EngineError::Stopped`]); without, they
    /// are forgotten and left to expire on the drives. Watch
    /// [`LockTable::lockspace_idle`] to know when it is done, then call
    /// [`LockTable::remove_lockspace`].
    pub fn drop_lockspace(
        &mut self,
        now: Now,
        ls: LockspaceId,
        release: bool,
        out: &mut Output<C>,
    ) {
        let keys: Vec<usize> = self
            .locks
            .iter()
            .filter(|(_, e)| e.ls == ls)
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            let e = &mut self.locks[k];
            for q in e.queue.drain(..) {
                if let Some(c) = q.caller {
                    out.answers.push(Answer {
                        caller: c,
                        kind: q.work.kind(),
                        result: Err(EngineError::Stopped),
                        latency: now.mono - q.received,
                    });
                }
            }
            e.renew_due = None;
            if release && (e.claimed || e.held) {
                e.claimed = false;
                let work = Work::Caller(LockRequest::Release);
                let e = &mut self.locks[k];
                if e.running.is_some() {
                    e.queue.push_back(Queued {
                        work,
                        caller: None,
                        received: now.mono,
                    });
                } else {
                    self.start(now, k, work, None, now.mono, out);
                }
            } else if !release {
                let e = &mut self.locks[k];
                let running = e.running.take();
                e.held = false;
                e.claimed = false;
                e.lease_gen = u64::MAX;
                e.op_gen = u64::MAX;
                self.retire(k);
                if let Some(r) = running {
                    if let Some(c) = r.caller {
                        out.answers.push(Answer {
                            caller: c,
                            kind: Some(r.kind),
                            result: Err(EngineError::Stopped),
                            latency: now.mono - r.started,
                        });
                    }
                }
            }
        }
        self.flush(now, out);
    }

    /// Forgets lockspace `ls` (after [`LockTable::lockspace_idle`] said so).
    pub fn remove_lockspace(&mut self, ls: LockspaceId) {
        self.lockspaces.remove(&ls);
    }

    // ---- requests -----------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn on_request(
        &mut self,
        now: Now,
        ls: LockspaceId,
        lock: LockId,
        req: LockRequest,
        caller: C,
        received: Nanos,
        out: &mut Output<C>,
    ) {
        let kind = req.kind();
        let answer = |out: &mut Output<C>, caller: C, result: OpResult| {
            out.answers.push(Answer {
                caller,
                kind,
                result,
                latency: now.mono - received,
            })
        };
        let Some(lse) = self.lockspaces.get(&ls) else {
            answer(
                out,
                caller,
                Err(EngineError::InvalidArgument("unknown lockspace".into())),
            );
            return;
        };
        let fenced = lse.ctl.is_fenced();
        if fenced
            && matches!(
                req,
                LockRequest::Acquire { .. } | LockRequest::Convert { .. }
            )
        {
            answer(out, caller, Err(EngineError::Fenced(lse.ctl.name().into())));
            return;
        }
        match req {
            LockRequest::Acquire { ref drives, .. } => {
                if let Some(&k) = self.index.get(&(ls, lock)) {
                    let e = &mut self.locks[k];
                    if e.claimed {
                        answer(out, caller, Err(EngineError::AlreadyHeld));
                        return;
                    }
                    if e.drives != *drives {
                        // The lock's entry is still draining late replies of an
                        // earlier hold on other drives: a new entry cannot share its
                        // id. Refuse rather than mix two drive sets.
                        if (e.query_only || (e.running.is_none() && e.queue.is_empty()))
                            && !e.outstanding()
                        {
                            self.remove_entry(k);
                            return self.on_request(now, ls, lock, req, caller, received, out);
                        }
                        answer(out, caller, Err(EngineError::Lock(LockError::Busy)));
                        return;
                    }
                    e.claimed = true;
                    e.query_only = false;
                    self.enqueue_or_start(now, k, Work::Caller(req), Some(caller), received, out);
                    return;
                }
                let drives = drives.clone();
                match self.new_entry(ls, lock, drives, false) {
                    Ok(k) => {
                        self.locks[k].claimed = true;
                        self.start(now, k, Work::Caller(req), Some(caller), received, out);
                    }
                    Err(e) => answer(out, caller, Err(e)),
                }
            }
            LockRequest::HostCount { ref drives } | LockRequest::Mode { ref drives } => {
                if let Some(&k) = self.index.get(&(ls, lock)) {
                    self.enqueue_or_start(now, k, Work::Caller(req), Some(caller), received, out);
                    return;
                }
                let drives = drives.clone();
                match self.new_entry(ls, lock, drives, true) {
                    Ok(k) => self.start(now, k, Work::Caller(req), Some(caller), received, out),
                    Err(e) => answer(out, caller, Err(e)),
                }
            }
            LockRequest::WriteLvb(v) => match self.index.get(&(ls, lock)) {
                Some(&k) if self.locks[k].claimed => {
                    self.locks[k].state.lvb = Some(v);
                    answer(out, caller, Ok(OpOutput::Done));
                }
                _ => answer(out, caller, Err(EngineError::NotHeld)),
            },
            LockRequest::Release | LockRequest::Convert { .. } | LockRequest::ReadLvb => {
                if matches!(req, LockRequest::ReadLvb) {
                    if let Some(lse) = self.lockspaces.get_mut(&ls) {
                        if lse.lvb_readers.len() < MAX_LVB_READERS {
                            lse.lvb_readers.insert(lock);
                        }
                    }
                }
                match self.index.get(&(ls, lock)) {
                    Some(&k) if self.locks[k].claimed => {
                        let work = if matches!(req, LockRequest::Release) {
                            // Later requests on this lock see it as not held.
                            let e = &mut self.locks[k];
                            e.claimed = false;
                            e.renew_due = None;
                            // A running renewal no longer matters: detach it (its
                            // replies are absorbed) so the release does not wait.
                            if e.running
                                .as_ref()
                                .is_some_and(|r| r.kind == OpKind::Renew || r.is_prefetch())
                            {
                                e.running = None;
                            }
                            e.queue.retain(|q| q.work != Work::PrefetchLvb);
                            // start() decides whether it is a fenced release.
                            Work::Caller(LockRequest::Release)
                        } else {
                            Work::Caller(req)
                        };
                        self.enqueue_or_start(now, k, work, Some(caller), received, out);
                    }
                    _ => answer(out, caller, Err(EngineError::NotHeld)),
                }
            }
        }
    }

    /// A new lock entry on `drives`.
    fn new_entry(
        &mut self,
        ls: LockspaceId,
        lock: LockId,
        drives: Vec<DriveId>,
        query_only: bool,
    ) -> Result<usize, EngineError> {
        let count = drives.len();
        if count == 0 || count > usize::from(MAX_DRIVES) {
            return Err(EngineError::InvalidArgument(format!(
                "a lock spans 1 to {MAX_DRIVES} drives, not {count}"
            )));
        }
        for (i, d) in drives.iter().enumerate() {
            if drives[..i].contains(d) {
                return Err(EngineError::InvalidArgument(format!(
                    "drive {d} is named twice in one lock"
                )));
            }
        }
        let lse = self
            .lockspaces
            .get(&ls)
            .ok_or_else(|| EngineError::InvalidArgument("unknown lockspace".into()))?;
        let spec = LockSpec {
            lock_id: lock,
            host_id: lse.info.host_id,
            n_drives: count as u16,
            countdown_ms: lse.info.lease_ms,
        };
        let renew_every = lse.info.policy.renew_every;
        let seed = self.rng.next_u64();
        let renew_early = Nanos(self.rng.range(0, renew_every.0 / 2));
        if let Some(&k) = self.retired.get(&(spec.host_id, lock)) {
            // A forgotten lockspace's entry of the same membership on the drives
            // still has commands in flight: this lock takes it over, so its
            // commands stay ordered behind them (an old unlock must not land
            // after a new grant).
            if self.locks[k].drives == drives {
                self.retired.remove(&(spec.host_id, lock));
                let e = &mut self.locks[k];
                e.ls = ls;
                e.state = LockState::new(spec, seed);
                e.renew_early = renew_early;
                e.renew_due = None;
                e.query_only = query_only;
                self.index.insert((ls, lock), k);
                return Ok(k);
            }
        }
        self.next_incarnation += 1;
        let k = self.locks.insert(Lock {
            ls,
            id: lock,
            incarnation: self.next_incarnation,
            state: LockState::new(spec, seed),
            out_on: vec![0; count],
            drives,
            running: None,
            queue: VecDeque::new(),
            deferred: Vec::new(),
            op_gen: 0,
            lease_gen: 0,
            renew_early,
            renew_due: None,
            held: false,
            claimed: false,
            query_only,
            lvb_seen: None,
        });
        self.index.insert((ls, lock), k);
        Ok(k)
    }

    fn remove_entry(&mut self, k: usize) {
        let e = self.locks.remove(k);
        if self.index.get(&(e.ls, e.id)) == Some(&k) {
            self.index.remove(&(e.ls, e.id));
        }
        let member = (e.state.spec.host_id, e.id);
        if self.retired.get(&member) == Some(&k) {
            self.retired.remove(&member);
        }
    }

    /// Takes lock `k` out of its lockspace (forgotten): gone at once if nothing
    /// of it is in flight, else kept, unindexed, until its commands answered, so
    /// that a new lock of the same host and ID takes it over ([`Self::new_entry`]).
    fn retire(&mut self, k: usize) {
        let e = &self.locks[k];
        if !e.outstanding() {
            self.remove_entry(k);
            return;
        }
        let (ls, id, member) = (e.ls, e.id, (e.state.spec.host_id, e.id));
        if self.index.get(&(ls, id)) == Some(&k) {
            self.index.remove(&(ls, id));
        }
        self.locks[k].ls = RETIRED;
        self.retired.insert(member, k);
    }

    fn enqueue_or_start(
        &mut self,
        now: Now,
        k: usize,
        work: Work,
        caller: Option<C>,
        received: Nanos,
        out: &mut Output<C>,
    ) {
        let e = &mut self.locks[k];
        if e.running.is_some() || !e.queue.is_empty() || e.renew_due.is_some() {
            e.queue.push_back(Queued {
                work,
                caller,
                received,
            });
            if e.running.is_none() {
                self.advance(now, k, out);
            }
        } else {
            self.start(now, k, work, caller, received, out);
        }
    }

    fn new_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    // ---- running operations --------------------------------------------------------

    /// Starts `work` on lock `k` (which has nothing running).
    fn start(
        &mut self,
        now: Now,
        k: usize,
        mut work: Work,
        caller: Option<C>,
        started: Nanos,
        out: &mut Output<C>,
    ) {
        debug_assert!(self.locks[k].running.is_none());
        let mut fenced_error = None;
        if matches!(
            work,
            Work::Caller(LockRequest::Release) | Work::FencedRelease
        ) {
            // Decide now whether this holder may still store anything: not once
            // its lockspace is fenced, nor once its own validity ran out.
            let e = &self.locks[k];
            let lse = self.lockspaces.get(&e.ls);
            let ls_fenced = lse.is_none_or(|l| l.ctl.is_fenced());
            let lapsed = e.held && self.lapsed(k, now.mono);
            if ls_fenced || matches!(work, Work::FencedRelease) {
                work = Work::FencedRelease;
                fenced_error = Some(EngineError::Fenced(
                    lse.map_or_else(String::new, |l| l.ctl.name().to_string()),
                ));
            } else if lapsed {
                work = Work::FencedRelease;
                fenced_error = Some(EngineError::Lock(LockError::LeaseLost));
                self.fence_lock(k, out);
            }
        }
        if matches!(work, Work::Caller(LockRequest::ReadLvb) | Work::PrefetchLvb) {
            let e = &self.locks[k];
            if let Some(v) = e.lvb_seen.filter(|_| e.held && !self.lapsed(k, now.mono)) {
                if let Some(c) = caller {
                    let latency = now.mono - started;
                    out.events.push(Event::OpDone {
                        lock: e.id,
                        kind: OpKind::ReadLvb,
                        ok: true,
                        latency,
                    });
                    out.answers.push(Answer {
                        caller: c,
                        kind: Some(OpKind::ReadLvb),
                        result: Ok(OpOutput::Lvb(v)),
                        latency,
                    });
                }
                self.advance(now, k, out);
                return;
            }
            if matches!(work, Work::PrefetchLvb) && !e.held {
                self.advance(now, k, out);
                return;
            }
        }
        let Some(op) = build(&work) else {
            if let Some(c) = caller {
                out.answers.push(Answer {
                    caller: c,
                    kind: None,
                    result: Err(EngineError::InvalidArgument(
                        "this request runs no drive operation".into(),
                    )),
                    latency: now.mono - started,
                });
            }
            self.advance(now, k, out);
            return;
        };
        let generation = self.new_generation();
        self.next_serial += 1;
        let serial = self.next_serial;
        let kind = op.kind();
        let e = &mut self.locks[k];
        let renewal_waiting = e.renew_due.is_some() && kind != OpKind::Renew;
        out.events.push(Event::OpStarted {
            lock: e.id,
            kind,
            renewal_waiting,
        });
        if matches!(kind, OpKind::Acquire | OpKind::Release) {
            e.lvb_seen = None;
        }
        if kind == OpKind::Release {
            // The protocol stops trusting the lease the moment a release starts
            // (it clears the lock state): no renewal, no fencing check from here.
            e.held = false;
            e.renew_due = None;
            e.lease_gen = generation;
        }
        if kind == OpKind::Renew {
            e.renew_due = None;
        }
        let deadline = match &work {
            Work::Caller(LockRequest::Acquire { deadline, .. }) => Some(*deadline),
            _ => None,
        };
        let running = e.running.insert(Running {
            op,
            kind,
            serial,
            caller,
            started,
            deadline,
            fenced_error,
        });
        self.actions.clear();
        e.state.table_hint = self.table_hint;
        running.op.start(now, &mut e.state, &mut self.actions);
        self.apply_actions(now, k, serial);
        self.after_step(now, k, out);
    }

    /// Queues the commands and arms the timer the last call into lock `k`'s
    /// running operation asked for.
    fn apply_actions(&mut self, now: Now, k: usize, serial: u64) {
        let timer = self.actions.timer;
        let mut cmds = std::mem::take(&mut self.actions.commands);
        let generation = self.new_generation();
        let e = &mut self.locks[k];
        e.op_gen = generation;
        if let Some(at) = timer {
            self.timers.arm(Timer {
                at,
                kind: TimerKind::Op,
                lock: k,
                generation,
            });
        }
        for (drive_no, req) in cmds.drain(..) {
            self.emit(now, k, drive_no, Owner::Op(serial), req);
        }
        self.actions.commands = cmds;
    }

    /// Sends (or defers behind the drive's outstanding command) one command of
    /// lock `k`.
    fn emit(&mut self, now: Now, k: usize, drive_no: u16, owner: Owner, req: Request) {
        let e = &mut self.locks[k];
        let Some(n) = e.out_on.get_mut(drive_no as usize) else {
            debug_assert!(false, "operation addressed a drive the lock does not span");
            return;
        };
        let waiting = e.deferred.iter().position(|x| x.drive_no == drive_no);
        if *n > 0 || (waiting.is_some() && owner != Owner::Cleanup) {
            let d = Deferred {
                drive_no,
                owner,
                req,
            };
            // A clean-up of a straggler's effect (a late grant) goes before the
            // commands waiting for the drive: they were decided without it, and an
            // unlock after them would undo their grants.
            match (owner, waiting) {
                (Owner::Cleanup, Some(i)) => e.deferred.insert(i, d),
                _ => e.deferred.push(d),
            }
            return;
        }
        self.emit_now(now, k, drive_no, owner, req);
    }

    /// Sends one command of lock `k` now (its drive has nothing outstanding).
    fn emit_now(&mut self, now: Now, k: usize, drive_no: u16, owner: Owner, req: Request) {
        let e = &mut self.locks[k];
        debug_assert_eq!(e.out_on[drive_no as usize], 0);
        e.out_on[drive_no as usize] += 1;
        let drive = e.drives[drive_no as usize];
        let incarnation = e.incarnation;
        let key = self.inflight.insert(InFlight {
            lock: k,
            incarnation,
            drive_no,
            drive,
            owner,
            req,
            sent: now.mono,
        });
        self.send(now, key);
    }

    /// Hands command `key` to the driver (a drive marked unresponsive with a
    /// probe's short timeout), or fails it at once with EIO for an injected fault.
    fn send(&mut self, now: Now, key: usize) {
        let Some(f) = self.inflight.get(key) else {
            return;
        };
        let (mut timeout, fault_pct) = self.timeout_and_faults(now, f);
        if self.health.is_unresponsive(f.drive) {
            // Marked drives get probe-length timeouts: a dead one costs little
            // (and never delays an answer at quorum), one that came back answers
            // and is unmarked by that answer.
            timeout = timeout.min(self.cfg.probe_timeout);
        }
        if fault_pct > 0 && self.rng.range(0, 99) < u64::from(fault_pct) {
            self.synthetic.push_back((
                key,
                Reply::err(DriveError::Io(uring_sg::codec::answer::libc_errno::EIO)),
            ));
            return;
        }
        self.sends.push(Command {
            key: key as u64,
            drive: f.drive,
            timeout,
        });
    }

    /// The timeout of command `f` (see the module docs) and the lockspace's
    /// injected fault rate.
    fn timeout_and_faults(&self, now: Now, f: &InFlight) -> (Nanos, u32) {
        if f.owner == Owner::Probe {
            return (self.cfg.probe_timeout, 0);
        }
        let mut t = self.cfg.command_timeout;
        let mut pct = 0;
        if let Some(e) = self.locks.get(f.lock) {
            if let Some(l) = self.lockspaces.get(&e.ls) {
                t = t.min(Nanos(l.info.policy.lease.0 / 4));
                pct = l.ctl.fault_percent().min(100);
            }
            if let (Owner::Op(s), Some(r)) = (f.owner, e.running.as_ref()) {
                if r.serial == s {
                    if let Some(d) = r.deadline {
                        // A third of the time left (room for a break after a
                        // BUSY that surfaced as a timeout), but never below
                        // ACQUIRE_COMMAND_FLOOR: a short wait must not turn a
                        // loaded drive's ordinary answer into an I/O error.
                        t = t.min(Nanos((d - now.mono).0 / 3).max(ACQUIRE_COMMAND_FLOOR));
                    }
                }
            }
        }
        (t.max(MIN_COMMAND_TIMEOUT), pct)
    }

    /// A reply (or a made-up one) for command `key`.
    fn reply(&mut self, now: Now, key: usize, reply: Reply, out: &mut Output<C>) {
        let Some(f) = self.inflight.try_remove(key) else {
            return;
        };
        // A trylock or break that times out may be a BUSY the kernel requeued
        // until the command's timeout (Linux does that for SG_IO too): the drive
        // answers, so it is not marked unresponsive for it (the acquire sends its
        // break next, which must reach the drive).
        let ambiguous = matches!(
            f.req,
            Request::Mutex {
                op: uring_sg::MutexOp::Trylock | uring_sg::MutexOp::Break,
                ..
            }
        ) && matches!(reply.result, Err(DriveError::Timeout));
        // (Made-up replies are injected EIOs: I/O errors leave health alone.)
        if !ambiguous {
            self.note_health(now, f.drive, &reply, f.owner == Owner::Probe, out);
        }
        if f.owner == Owner::Probe {
            return;
        }
        if let (Request::ReadTable { records }, Ok(())) = (f.req, reply.result) {
            self.learn_table_size(records, &reply.data);
        }
        let k = f.lock;
        match self.locks.get_mut(k) {
            Some(e) if e.incarnation == f.incarnation => {
                let d = f.drive_no as usize;
                e.out_on[d] = e.out_on[d].saturating_sub(1);
            }
            _ => return,
        }
        let running = self.locks[k]
            .running
            .as_ref()
            .is_some_and(|r| f.owner == Owner::Op(r.serial));
        if running {
            let e = &mut self.locks[k];
            let before = e.state.drives.get(f.drive_no as usize).copied();
            let held_before = e.state.held_count();
            let Some(r) = e.running.as_mut() else {
                return;
            };
            let serial = r.serial;
            self.actions.clear();
            r.op.on_reply(now, &mut e.state, f.drive_no, &reply, &mut self.actions);
            if self.cfg.planted_bug == PlantedBug::TrustReplyTime {
                if let (Some(b), Some(a)) = (before, e.state.drives.get_mut(f.drive_no as usize)) {
                    if a.held && (!b.held || a.sent != b.sent) {
                        a.sent = now.mono;
                    }
                }
            }
            self.apply_actions(now, k, serial);
            self.check_shrunk(now, k, held_before, out);
            self.after_step(now, k, out);
        } else {
            out.events.push(Event::LateReply {
                lock: self.locks[k].id,
                drive: f.drive,
            });
            let held_before = self.locks[k].state.held_count();
            self.absorb_late(now, k, &f, &reply);
            self.check_shrunk(now, k, held_before, out);
        }
        // What the reply itself emitted for this drive went out first (a clean-up
        // unlock of a late grant precedes the next operation's trylock); then the
        // oldest command waiting for the drive.
        self.undefer(now, k, f.drive_no);
        self.maybe_remove(k);
    }

    /// A table read of `asked` records returned `data`: the next reads ask for
    /// the records it held plus a quarter (at least [`MIN_TABLE_HINT`] more; a
    /// table that grew past that is read again, doubling, by
    /// [`crate::protocol::table::TableRead`]). Every record asked for is moved,
    /// zero-filled past the table's end: twice the table (the first rule)
    /// made an LVB read of a 130-record table move 260 records per drive.
    fn learn_table_size(&mut self, asked: u32, data: &[u8]) {
        let used = data
            .chunks(uring_sg::RECORD_LEN)
            .take_while(|b| b.iter().any(|&x| x != 0))
            .count() as u32;
        if used < asked {
            self.table_hint = used.saturating_add((used / 4).max(MIN_TABLE_HINT));
        }
    }

    /// Sends the oldest command deferred for `drive_no` of lock `k`, if its
    /// previous command is answered.
    fn undefer(&mut self, now: Now, k: usize, drive_no: u16) {
        let Some(e) = self.locks.get_mut(k) else {
            return;
        };
        if e.out_on[drive_no as usize] > 0 {
            return;
        }
        let Some(i) = e.deferred.iter().position(|d| d.drive_no == drive_no) else {
            return;
        };
        let d = e.deferred.remove(i);
        // Straight out, even when more commands wait for the same drive (they
        // follow it one reply at a time).
        self.emit_now(now, k, d.drive_no, d.owner, d.req);
    }

    /// After any call into lock `k`'s running operation: answer its caller once
    /// the outcome is there, detach it, start what waits.
    fn after_step(&mut self, now: Now, k: usize, out: &mut Output<C>) {
        self.planted_minority_grant(now, k, out);
        let e = &mut self.locks[k];
        let Some(r) = e.running.as_mut() else {
            return;
        };
        let Some(result) = r.op.outcome() else {
            if r.op.finished() {
                // Finished without an outcome: cannot happen by the contract.
                debug_assert!(false, "operation finished without an outcome");
                if let Some(c) = e.running.take().and_then(|r| r.caller) {
                    out.answers.push(Answer {
                        caller: c,
                        kind: None,
                        result: Err(EngineError::Stopped),
                        latency: Nanos::ZERO,
                    });
                }
                self.advance(now, k, out);
            }
            return;
        };
        let Some(mut r) = e.running.take() else {
            return;
        };
        let kind = r.kind;
        let ok = result.is_ok();
        let mut result = result.map_err(EngineError::from);
        let mut relock_release = false;
        let mut fence = false;
        match kind {
            OpKind::Acquire if ok => {
                if self.lapsed(k, now.mono) {
                    // Too late to use: give it back, tell the caller.
                    result = Err(EngineError::Lock(LockError::LeaseLost));
                    relock_release = true;
                    let e = &mut self.locks[k];
                    e.held = false;
                    e.claimed = false;
                } else {
                    self.locks[k].held = true;
                }
            }
            OpKind::Acquire => {
                let e = &mut self.locks[k];
                e.claimed = false;
                e.held = false;
            }
            OpKind::Release => {
                self.locks[k].held = false;
                if let Some(err) = r.fenced_error.take() {
                    result = Err(err);
                }
            }
            OpKind::Convert if ok && self.lapsed(k, now.mono) => {
                result = Err(EngineError::Lock(LockError::LeaseLost));
                fence = true;
            }
            _ => {}
        }
        let e = &mut self.locks[k];
        if let Ok(OpOutput::Lvb(v)) = &result {
            if e.held {
                e.lvb_seen = Some(*v);
            }
        }
        let prefetch = r.is_prefetch();
        if !prefetch {
            out.events.push(Event::OpDone {
                lock: e.id,
                kind,
                ok: result.is_ok(),
                latency: now.mono - r.started,
            });
        }
        if let Some(c) = r.caller.take() {
            out.answers.push(Answer {
                caller: c,
                kind: Some(kind),
                result,
                latency: now.mono - r.started,
            });
        }
        drop(r); // detached: its commands still in flight are stragglers now
        if relock_release {
            let e = &mut self.locks[k];
            e.queue.push_front(Queued {
                work: Work::FencedRelease,
                caller: None,
                received: now.mono,
            });
        }
        if fence {
            self.fence_lock(k, out);
        }
        if kind == OpKind::Acquire && self.locks[k].held {
            let e = &self.locks[k];
            let wanted = self
                .lockspaces
                .get(&e.ls)
                .is_some_and(|l| l.lvb_readers.contains(&e.id));
            if wanted
                && e.queue
                    .iter()
                    .all(|q| q.work != Work::Caller(LockRequest::Release))
            {
                self.locks[k].queue.push_front(Queued {
                    work: Work::PrefetchLvb,
                    caller: None,
                    received: now.mono,
                });
            }
        }
        let e = &self.locks[k];
        if e.held && matches!(kind, OpKind::Acquire | OpKind::Renew | OpKind::Convert) {
            self.arm_lease(now, k, kind == OpKind::Renew && !ok, out);
        }
        self.advance(now, k, out);
    }

    /// A drive of held lock `k` stopped counting (its held set shrank from
    /// `before`): validity may have moved back, so fence now if it is too close to
    /// its end, whatever is running (a convert that drops drives, a late
    /// "expired").
    fn check_shrunk(&mut self, now: Now, k: usize, before: u16, out: &mut Output<C>) {
        let Some(e) = self.locks.get(k) else {
            return;
        };
        if e.held && e.state.held_count() < before && self.lapsed(k, now.mono) {
            self.fence_lock(k, out);
        }
    }

    /// Lock `k`'s validity is too close to its end to be used (or gone).
    fn lapsed(&self, k: usize, now: Nanos) -> bool {
        let e = &self.locks[k];
        self.lockspaces
            .get(&e.ls)
            .is_none_or(|l| l.info.policy.should_fence(now, self.validity_of(e)))
    }

    /// If nothing runs on lock `k`: start the next work (a due renewal first), or
    /// forget the lock once it is idle and drained.
    fn advance(&mut self, now: Now, k: usize, out: &mut Output<C>) {
        let Some(e) = self.locks.get_mut(k) else {
            return;
        };
        if e.running.is_some() {
            return;
        }
        if let Some(due) = e.renew_due {
            if e.held {
                self.start(now, k, Work::Renew, None, due, out);
                return;
            }
            e.renew_due = None;
        }
        if let Some(q) = e.queue.pop_front() {
            self.start(now, k, q.work, q.caller, q.received, out);
            return;
        }
        self.maybe_remove(k);
    }

    /// Removes lock `k` if it is idle and none of its commands is in flight.
    fn maybe_remove(&mut self, k: usize) {
        if self
            .locks
            .get(k)
            .is_some_and(|e| e.idle() && !e.outstanding())
        {
            self.remove_entry(k);
        }
    }

    /// Delivers made-up replies and hands the commands to the driver.
    fn flush(&mut self, now: Now, out: &mut Output<C>) {
        while let Some((key, reply)) = self.synthetic.pop_front() {
            self.reply(now, key, reply, out);
        }
        out.commands.append(&mut self.sends);
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    /// Debug builds: no command waits for a drive that has nothing outstanding
    /// (it would wait forever). Allocates nothing.
    #[cfg(debug_assertions)]
    fn check_invariants(&self) {
        for (_, e) in self.locks.iter() {
            for w in &e.deferred {
                assert!(
                    e.out_on[w.drive_no as usize] > 0,
                    "lock {}: a command for drive {} waits with nothing outstanding",
                    e.id,
                    w.drive_no
                );
            }
        }
    }
}
