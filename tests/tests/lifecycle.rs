//! Regression tests of issue #12's four field reports, against the production
//! lock lifecycle ([`LockTable`]) and the simulator's firmware, in virtual time.
//!
//! The driver here is only a transport (drives with a fixed one-way latency, or
//! none at all, and command timeouts); every decision is the table's. Each test
//! failed on the engine before the table existed (the reactor then waited for the
//! slowest drive, answered success on a lapsed lease, let a fenced holder store
//! its LVB, and gave a take-over's trylock the whole deadline).

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use idm_engine::api::EngineError;
use idm_engine::fencing::LeasePolicy;
use idm_engine::locks::{
    LockRequest, LockTable, LockspaceCtl, LockspaceInfo, OpOutput, OpResult, Output, TableConfig,
};
use idm_engine::protocol::Now;
use idm_engine::{LockError, Nanos};
use idm_sim::firmware::FirmwareConfig;
use idm_tests::drive::SimDrive;
use idm_tests::host::SimLockspace;
use idm_tests::world::Clock;
use uring_sg::transport::{Reply, Request};
use uring_sg::{DriveError, LockId, Lvb, Mode};

const MS: Nanos = Nanos::from_millis(1);
const LS: u32 = 1;

enum Ev {
    Exec {
        h: usize,
        cmd: u64,
        drive: usize,
        req: Box<Request>,
    },
    Reply {
        h: usize,
        cmd: u64,
        reply: Reply,
    },
    Timeout {
        h: usize,
        cmd: u64,
    },
}

struct Host {
    table: LockTable<u64, SimLockspace>,
    out: Output<u64>,
    answers: HashMap<u64, (Nanos, OpResult)>,
    inflight: HashMap<u64, u64>,
    /// Its commands are lost on the way (a host cut off from every drive).
    cut: bool,
    fences: u32,
}

/// Drives with one-way latencies (`None`: never answers) and hosts.
struct World {
    t: Nanos,
    drives: Vec<SimDrive>,
    latency: Vec<Option<Nanos>>,
    hosts: Vec<Host>,
    q: BinaryHeap<Reverse<(Nanos, u64)>>,
    evs: HashMap<u64, Ev>,
    seq: u64,
    next_cmd: u64,
    aborted: HashSet<(usize, u64)>,
    next_serial: u64,
    /// Commands the drives executed.
    execs: u64,
}

fn policy(lease: Nanos) -> LeasePolicy {
    LeasePolicy::for_lease(lease)
}

impl World {
    fn new(latency: Vec<Option<Nanos>>, hosts: usize, lease: Nanos, cmd_timeout: Nanos) -> World {
        let drives = latency
            .iter()
            .enumerate()
            .map(|(i, _)| {
                SimDrive::new(
                    FirmwareConfig::default(),
                    Clock::new(Nanos::ZERO, Nanos::from_secs(1000 + i as u64), 0),
                )
            })
            .collect();
        let hosts = (0..hosts)
            .map(|i| {
                let mut table = LockTable::new(TableConfig::new(cmd_timeout, 7 + i as u64));
                table.add_lockspace(
                    LS,
                    SimLockspace::default(),
                    LockspaceInfo {
                        host_id: format!("host-{i}").parse().unwrap(),
                        lease_ms: lease.as_millis(),
                        policy: policy(lease),
                    },
                );
                Host {
                    table,
                    out: Output::new(),
                    answers: HashMap::new(),
                    inflight: HashMap::new(),
                    cut: false,
                    fences: 0,
                }
            })
            .collect();
        World {
            t: Nanos::from_secs(1),
            drives,
            latency,
            hosts,
            q: BinaryHeap::new(),
            evs: HashMap::new(),
            seq: 0,
            next_cmd: 0,
            aborted: HashSet::new(),
            next_serial: 0,
            execs: 0,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono: self.t,
            wall_ms: 1_700_000_000_000 + self.t.as_millis(),
        }
    }

    fn push(&mut self, at: Nanos, ev: Ev) {
        self.seq += 1;
        self.evs.insert(self.seq, ev);
        self.q.push(Reverse((at, self.seq)));
    }

    /// Carries out host `h`'s output.
    fn flush(&mut self, h: usize) {
        let mut out = std::mem::take(&mut self.hosts[h].out);
        for c in out.commands.drain(..) {
            self.next_cmd += 1;
            let cmd = self.next_cmd;
            self.hosts[h].inflight.insert(cmd, c.key);
            if let (false, Some(l)) = (self.hosts[h].cut, self.latency[c.drive]) {
                self.push(
                    self.t + l,
                    Ev::Exec {
                        h,
                        cmd,
                        drive: c.drive,
                        req: Box::new(*self.hosts[h].table.command_request(c.key).unwrap()),
                    },
                );
            }
            self.push(self.t + c.timeout, Ev::Timeout { h, cmd });
        }
        self.hosts[h].fences += out.fences.len() as u32;
        for a in out.answers.drain(..) {
            self.hosts[h].answers.insert(a.caller, (self.t, a.result));
        }
        out.clear();
        self.hosts[h].out = out;
    }

    fn request(&mut self, h: usize, lock: &str, req: LockRequest) -> u64 {
        self.next_serial += 1;
        let serial = self.next_serial;
        let now = self.now();
        let id: LockId = lock.parse().unwrap();
        let host = &mut self.hosts[h];
        host.table
            .request(now, LS, id, req, serial, now.mono, &mut host.out);
        self.flush(h);
        serial
    }

    fn next_time(&self) -> Option<Nanos> {
        let q = self.q.peek().map(|Reverse((t, _))| *t);
        let timers = self.hosts.iter().filter_map(|h| h.table.next_timer()).min();
        match (q, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs until `until` (virtual time).
    fn run_until(&mut self, until: Nanos) {
        while let Some(t) = self.next_time() {
            if t > until {
                break;
            }
            self.t = self.t.max(t);
            if self.q.peek().is_some_and(|Reverse((at, _))| *at <= self.t) {
                let Some(Reverse((_, seq))) = self.q.pop() else {
                    break;
                };
                let Some(ev) = self.evs.remove(&seq) else {
                    continue;
                };
                self.event(ev);
            } else {
                for h in 0..self.hosts.len() {
                    let now = self.now();
                    let host = &mut self.hosts[h];
                    host.table.on_timer(now, &mut host.out);
                    self.flush(h);
                }
            }
        }
        self.t = self.t.max(until);
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Exec { h, cmd, drive, req } => {
                if self.aborted.remove(&(h, cmd)) {
                    return;
                }
                self.execs += 1;
                if let (Some(reply), Some(l)) = (
                    self.drives[drive].execute(self.t, &req),
                    self.latency[drive],
                ) {
                    self.push(self.t + l, Ev::Reply { h, cmd, reply });
                }
            }
            Ev::Reply { h, cmd, reply } => self.deliver(h, cmd, reply),
            Ev::Timeout { h, cmd } => {
                if self.hosts[h].inflight.contains_key(&cmd) {
                    self.aborted.insert((h, cmd));
                    self.deliver(h, cmd, Reply::err(DriveError::Timeout));
                }
            }
        }
    }

    fn deliver(&mut self, h: usize, cmd: u64, reply: Reply) {
        let Some(key) = self.hosts[h].inflight.remove(&cmd) else {
            return;
        };
        let now = self.now();
        let host = &mut self.hosts[h];
        host.table.on_reply(now, key, reply, &mut host.out);
        self.flush(h);
    }

    /// Runs until request `serial` of host `h` is answered (at most `limit` of
    /// virtual time): when, and what.
    fn answer(&mut self, h: usize, serial: u64, limit: Nanos) -> (Nanos, OpResult) {
        let start = self.t;
        loop {
            if let Some(a) = self.hosts[h].answers.remove(&serial) {
                return (a.0 - start, a.1);
            }
            let Some(t) = self.next_time() else {
                panic!("request {serial} of host {h} never answered (nothing left to run)");
            };
            assert!(
                t <= start + limit,
                "request {serial} of host {h} not answered within {limit:?}"
            );
            self.run_until(t);
        }
    }

    fn drive_list(&self) -> Vec<usize> {
        (0..self.drives.len()).collect()
    }

    fn acquire(&self, mode: Mode, wait: Nanos) -> LockRequest {
        LockRequest::Acquire {
            mode,
            drives: self.drive_list(),
            deadline: self.t + wait,
            no_wait: false,
        }
    }
}

fn ok(r: &OpResult) -> bool {
    r.is_ok()
}

/// Case 1: one unresponsive drive of five (`idm fault sim4 stop`). Before: the
/// unlock took 9.9 s, the idle holder was fenced 2.46 s after the lock, and every
/// later lock failed. Now: lock, unlock, LVB read and host count answer at the
/// majority's pace, and a lock held for ten leases is never fenced.
#[test]
fn one_dead_drive_of_five_neither_slows_nor_fences() {
    let lat = Some(Nanos::from_micros(100));
    let mut w = World::new(
        vec![lat, lat, lat, lat, None],
        1,
        Nanos::from_secs(3),
        Nanos::from_secs(5),
    );
    let req = w.acquire(Mode::Exclusive, Nanos::from_secs(5));
    let s = w.request(0, "vg0", req);
    let (took, r) = w.answer(0, s, Nanos::from_secs(1));
    assert!(ok(&r), "{r:?}");
    assert!(took < MS, "lock took {took:?}");
    w.run_until(w.t + Nanos::from_millis(100));
    let s = w.request(0, "vg0", LockRequest::Release);
    let (took, r) = w.answer(0, s, Nanos::from_secs(1));
    assert!(ok(&r) && took < MS, "unlock took {took:?}: {r:?}");

    // Held for ten leases, reading the LVB and counting hosts now and then.
    let req = w.acquire(Mode::Exclusive, Nanos::from_secs(5));
    let s = w.request(0, "vg0", req);
    assert!(ok(&w.answer(0, s, Nanos::from_secs(1)).1));
    for i in 0..30 {
        w.run_until(w.t + Nanos::from_secs(1));
        let s = w.request(0, "vg0", LockRequest::ReadLvb);
        let (took, r) = w.answer(0, s, Nanos::from_secs(6));
        assert!(ok(&r), "read {i}: {r:?}");
        assert!(took < Nanos::from_millis(5), "read {i} took {took:?}");
        let s = w.request(
            0,
            "vg0",
            LockRequest::HostCount {
                drives: w.drive_list(),
            },
        );
        let (took, r) = w.answer(0, s, Nanos::from_secs(6));
        assert!(ok(&r), "count {i}: {r:?}");
        assert!(took < Nanos::from_millis(5), "count {i} took {took:?}");
    }
    assert_eq!(w.hosts[0].fences, 0, "a dead minority fenced the lockspace");
    let s = w.request(0, "vg0", LockRequest::Release);
    let (took, r) = w.answer(0, s, Nanos::from_secs(1));
    assert!(ok(&r) && took < MS, "{took:?} {r:?}");
}

/// Case 2: drives answering slower than the lease (`--latency fixed:3300000` with
/// a 3 s lease). Before: `ilm_lock` returned 0 while another host could hold the
/// lock. Now: the caller gets "lease lost", and the grant is given back.
#[test]
fn a_grant_that_arrives_after_its_lease_is_not_success() {
    let lat = Some(Nanos::from_millis(1650)); // 3.3 s round trip
    let mut w = World::new(
        vec![lat, lat, lat],
        1,
        Nanos::from_secs(3),
        Nanos::from_secs(10),
    );
    let req = w.acquire(Mode::Exclusive, Nanos::from_secs(30));
    let s = w.request(0, "vg0", req);
    let (_, r) = w.answer(0, s, Nanos::from_secs(30));
    // Either the grant is refused as too late ("lease lost"), or the commands
    // time out first (a command may take at most a quarter of the lease): never
    // success.
    assert!(
        matches!(
            r,
            Err(EngineError::Lock(
                LockError::LeaseLost | LockError::Timeout | LockError::Io(_) | LockError::Busy
            ))
        ),
        "{r:?}"
    );
    assert!(!w.hosts[0].table.is_held(LS, "vg0".parse().unwrap()));
    // The given-back grant leaves the drives free for others.
    w.run_until(w.t + Nanos::from_secs(10));
    let id: LockId = "vg0".parse().unwrap();
    let live = w
        .drives
        .iter()
        .filter(|d| d.live_member(&id, &"host-0".parse().unwrap(), w.t))
        .count();
    assert_eq!(live, 0);
}

/// Case 3: a fenced holder's late unlock. Before: A writes 100 and lapses, B takes
/// the lock, writes 200, releases; A's unlock then returned 0 and a reader saw
/// 100. Now: A's unlock fails and stores nothing; the reader sees 200.
#[test]
fn a_fenced_holders_late_unlock_does_not_roll_the_lvb_back() {
    let lat = Some(Nanos::from_micros(100));
    let lease = Nanos::from_secs(3);
    let mut w = World::new(vec![lat, lat, lat], 2, lease, Nanos::from_millis(500));
    let req = w.acquire(Mode::Exclusive, Nanos::from_secs(5));
    let s = w.request(0, "vg0", req);
    assert!(ok(&w.answer(0, s, Nanos::from_secs(1)).1));
    let s = w.request(0, "vg0", LockRequest::WriteLvb(Lvb::from_u64(100)));
    assert!(ok(&w.answer(0, s, MS).1));
    // A is cut off from the drives: its renewals fail, it is fenced, it lapses.
    w.hosts[0].cut = true;
    w.run_until(w.t + lease + lease);
    assert_eq!(
        w.hosts[0].fences, 1,
        "A must be fenced before its lease ends"
    );
    // B takes over (break), publishes 200, releases.
    let req = w.acquire(Mode::Exclusive, Nanos::from_secs(5));
    let s = w.request(1, "vg0", req);
    assert!(ok(&w.answer(1, s, Nanos::from_secs(6)).1));
    let s = w.request(1, "vg0", LockRequest::WriteLvb(Lvb::from_u64(200)));
    assert!(ok(&w.answer(1, s, MS).1));
    let s = w.request(1, "vg0", LockRequest::Release);
    assert!(ok(&w.answer(1, s, Nanos::from_secs(1)).1));
    // A comes back and releases late.
    w.hosts[0].cut = false;
    let s = w.request(0, "vg0", LockRequest::Release);
    let (_, r) = w.answer(0, s, Nanos::from_secs(5));
    assert!(matches!(r, Err(EngineError::Fenced(_))), "{r:?}");
    // A reader (B again) sees 200.
    let req = w.acquire(Mode::Shared, Nanos::from_secs(5));
    let s = w.request(1, "vg0", req);
    assert!(ok(&w.answer(1, s, Nanos::from_secs(6)).1));
    let s = w.request(1, "vg0", LockRequest::ReadLvb);
    let (_, r) = w.answer(1, s, Nanos::from_secs(1));
    assert_eq!(r, Ok(OpOutput::Lvb(Lvb::from_u64(200))));
    // Every drive still stores B's value.
    let id: LockId = "vg0".parse().unwrap();
    for d in &w.drives {
        assert_eq!(d.stored_lvb(&id), Some(200));
    }
}

/// Case 4: taking over a dead holder's lock when the drive's BUSY only surfaces
/// as a command timeout (Linux requeues BUSY until the command times out). Before:
/// the 5 s command timeout equalled the 5 s deadline and the break was never sent
/// in time. Now the trylock's timeout is a third of the time left, and the break
/// wins within the deadline.
#[test]
fn a_takeover_completes_within_its_deadline_when_busy_is_a_timeout() {
    let lat = Some(Nanos::from_micros(100));
    let lease = Nanos::from_secs(3);
    let mut w = World::new(vec![lat, lat, lat], 2, lease, Nanos::from_secs(5));
    for d in &mut w.drives {
        d.busy_as_timeout = true;
    }
    let req = w.acquire(Mode::Exclusive, Nanos::from_secs(5));
    let s = w.request(0, "vg0", req);
    assert!(ok(&w.answer(0, s, Nanos::from_secs(1)).1));
    // Host 0 is cut off for good (as dead as the drives can tell): its lease runs out.
    w.hosts[0].cut = true;
    w.run_until(w.t + lease + Nanos::from_millis(100));
    let req = w.acquire(Mode::Exclusive, Nanos::from_secs(5));
    let s = w.request(1, "vg0", req);
    let (took, r) = w.answer(1, s, Nanos::from_secs(6));
    assert!(ok(&r), "{r:?} after {took:?}");
    assert!(took < Nanos::from_secs(5), "took {took:?}");
}

#[test]
fn sim_lockspace_flags() {
    let l = SimLockspace::default();
    assert!(!l.is_fenced());
    assert!(l.mark_fenced());
    assert!(!l.mark_fenced());
}

/// lvmlockd reads the LVB right after every VG lock (issue #13: the read was
/// slower than the lock). Once a lock's LVB was read, the table reads it by
/// itself after each acquire; the caller's read is then answered without a
/// drive command, with the value the last release stored.
#[test]
fn an_lvb_read_after_a_lock_is_answered_from_the_prefetch() {
    let lat = Some(Nanos::from_micros(100));
    let mut w = World::new(
        vec![lat, lat, lat],
        2,
        Nanos::from_secs(3),
        Nanos::from_secs(5),
    );
    // First hold: the read goes to the drives (nothing learned yet).
    let req = w.acquire(Mode::Exclusive, Nanos::from_secs(5));
    let s = w.request(0, "vg0", req);
    assert!(ok(&w.answer(0, s, Nanos::from_secs(1)).1));
    let s = w.request(0, "vg0", LockRequest::ReadLvb);
    let (took, r) = w.answer(0, s, Nanos::from_secs(1));
    assert_eq!(r, Ok(OpOutput::Lvb(Lvb::from_u64(0))));
    assert!(
        took >= Nanos::from_micros(200),
        "a drive round trip: {took:?}"
    );
    let s = w.request(0, "vg0", LockRequest::WriteLvb(Lvb::from_u64(5)));
    assert!(ok(&w.answer(0, s, MS).1));
    let s = w.request(0, "vg0", LockRequest::Release);
    assert!(ok(&w.answer(0, s, Nanos::from_secs(1)).1));
    // Another host stores 6 meanwhile.
    let req = w.acquire(Mode::Exclusive, Nanos::from_secs(5));
    let s = w.request(1, "vg0", req);
    assert!(ok(&w.answer(1, s, Nanos::from_secs(1)).1));
    let s = w.request(1, "vg0", LockRequest::WriteLvb(Lvb::from_u64(6)));
    assert!(ok(&w.answer(1, s, MS).1));
    let s = w.request(1, "vg0", LockRequest::Release);
    assert!(ok(&w.answer(1, s, Nanos::from_secs(1)).1));
    w.run_until(w.t + MS);
    // Second hold of host 0: the prefetch runs right after the grant.
    let req = w.acquire(Mode::Shared, Nanos::from_secs(5));
    let s = w.request(0, "vg0", req);
    assert!(ok(&w.answer(0, s, Nanos::from_secs(1)).1));
    w.run_until(w.t + MS);
    let before = w.execs;
    let s = w.request(0, "vg0", LockRequest::ReadLvb);
    let (took, r) = w.answer(0, s, MS);
    assert_eq!(r, Ok(OpOutput::Lvb(Lvb::from_u64(6))));
    assert_eq!(took, Nanos::ZERO, "answered from the prefetch");
    assert_eq!(w.execs, before, "no drive command for the read");
    // After the release the value is not trusted any more: not held.
    let s = w.request(0, "vg0", LockRequest::Release);
    assert!(ok(&w.answer(0, s, Nanos::from_secs(1)).1));
    let s = w.request(0, "vg0", LockRequest::ReadLvb);
    assert!(matches!(w.answer(0, s, MS).1, Err(EngineError::NotHeld)));
}
