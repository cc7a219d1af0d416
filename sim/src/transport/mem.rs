//! An in-process simulated drive: the firmware model behind a [`Transport`].
//!
//! This is the engine's embedded default (`Engine::simulated`) and what the
//! reactor's tests and the zero-cost benchmarks run on: no socket, no server
//! thread. Each command goes through the same bytes as a real drive (CDB and
//! 512-byte record into [`Firmware::execute`], SCSI status and sense decoded by the
//! codec), so only the transport differs from hardware.
//!
//! The firmware runs when the reactor prepares the command (the drive "receives"
//! it then, never before the protocol recorded its send time). The reply comes
//! back through the ring: a NOP, or with a modelled latency an io_uring TIMEOUT of
//! that length, so completions interleave with the other drives' exactly as real
//! replies do. Several reactors may share one [`MemDrive`] (a mutex, as a drive
//! serializes its own commands).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use slab::Slab;

use crate::firmware::{Firmware, FirmwareConfig};
use uring_sg::codec::answer::libc_errno;
use uring_sg::codec::{DriveError, RECORD_LEN};
use uring_sg::transport::deadlines::Deadlines;
use uring_sg::transport::{Completion, Cqe, EnqueueError, Reply, Request, SqSink, Transport};

/// One simulated drive shared by the transports (reactors) that talk to it.
#[derive(Debug)]
pub struct MemDrive {
    name: String,
    fw: Mutex<Firmware>,
    origin: Instant,
    /// The drive does not answer at all (commands time out).
    down: AtomicBool,
    /// The drive answers every command with an I/O error.
    io_error: AtomicBool,
}

impl MemDrive {
    /// A drive called `name` with an empty table.
    pub fn new(name: &str, cfg: FirmwareConfig) -> Arc<MemDrive> {
        Arc::new(MemDrive {
            name: name.to_string(),
            fw: Mutex::new(Firmware::new(cfg)),
            origin: Instant::now(),
            down: AtomicBool::new(false),
            io_error: AtomicBool::new(false),
        })
    }

    /// The drive's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The drive's own clock, ms since it was made.
    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Stops (`true`) or resumes answering.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Makes every answer an I/O error (`true`), or not.
    pub fn set_io_error(&self, on: bool) {
        self.io_error.store(on, Ordering::SeqCst);
    }

    /// Loses the mutex table, as a power cycle does.
    pub fn power_cycle(&self) {
        self.with_firmware(|f| f.power_cycle());
    }

    /// Runs `f` on the firmware (inspection in tests and `dump`).
    pub fn with_firmware<T>(&self, f: impl FnOnce(&mut Firmware) -> T) -> T {
        f(&mut self.fw.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Executes `req` now and decodes the answer as a host would.
    fn execute(&self, req: &Request, out: &mut [u8; RECORD_LEN], data_in: &mut Vec<u8>) -> Reply {
        if self.io_error.load(Ordering::SeqCst) {
            return Reply::err(DriveError::Io(libc_errno::EIO));
        }
        let (cdb, len) = req.scsi_cdb();
        let data_out: &[u8] = if req.encode_data_out(out) {
            &out[..]
        } else {
            &[]
        };
        let now = self.now_ms();
        let ans = self.with_firmware(|f| f.execute(now, &cdb[..len], data_out, data_in));
        let result = DriveError::from_scsi(req.kind(), ans.status, ans.sense.as_slice());
        let data = if result.is_ok() && req.data_in_len() > 0 {
            std::mem::take(data_in)
        } else {
            Vec::new()
        };
        Reply { result, data }
    }
}

/// How long an in-process drive takes to answer.
pub type LatencyFn = Box<dyn FnMut() -> Duration + Send>;

/// Where one command is.
enum State {
    /// Accepted, not yet executed (the next `prepare` runs it).
    Queued(Request),
    /// The drive is down: no answer will come; the deadline ends it.
    Silent,
    /// Executed; the completion entry is in the ring (`pushed`) or waits for room.
    Answered {
        reply: Reply,
        /// Timeout spec of a delayed reply (boxed: its address must not move while
        /// the slab grows); `None` answers with a NOP, allocation-free.
        ts: Option<Box<types::Timespec>>,
        pushed: bool,
    },
    /// Reported as timed out while its entry was still in the ring.
    Expired,
}

/// One command.
struct Slot {
    tag: u64,
    seq: u64,
    state: State,
}

/// The [`Transport`] of one [`MemDrive`] for one reactor.
pub struct MemTransport {
    drive: Arc<MemDrive>,
    name: String,
    latency: Option<LatencyFn>,
    slots: Slab<Slot>,
    /// Slots to execute at the next `prepare`, with their sequence numbers.
    queued: VecDeque<(usize, u64)>,
    /// Slots executed but not yet pushed (the SQ was full).
    unpushed: VecDeque<(usize, u64)>,
    deadlines: Deadlines,
    seq: u64,
    /// Commands accepted and not yet reported.
    live: usize,
    out: Box<[u8; RECORD_LEN]>,
    data_in: Vec<u8>,
    max_in_flight: usize,
}

impl MemTransport {
    /// A transport to `drive` answering at once.
    pub fn new(drive: Arc<MemDrive>) -> MemTransport {
        MemTransport {
            name: drive.name.clone(),
            drive,
            latency: None,
            slots: Slab::new(),
            queued: VecDeque::new(),
            unpushed: VecDeque::new(),
            deadlines: Deadlines::new(),
            seq: 0,
            live: 0,
            out: Box::new([0; RECORD_LEN]),
            data_in: Vec::new(),
            max_in_flight: 65536,
        }
    }

    /// Answers after `latency()` for each command instead of at once.
    pub fn with_latency(mut self, latency: LatencyFn) -> MemTransport {
        self.latency = Some(latency);
        self
    }

    /// Caps commands in flight (enqueue answers `Full` beyond it).
    pub fn with_max_in_flight(mut self, n: usize) -> MemTransport {
        self.max_in_flight = n.max(1);
        self
    }

    /// Whether slot `k` still holds command `seq`.
    fn holds(&self, k: usize, seq: u64) -> bool {
        self.slots.get(k).is_some_and(|s| s.seq == seq)
    }

    /// Pushes slot `k`'s completion entry; `false` if the SQ is full.
    fn push(&mut self, k: usize, sink: &mut dyn SqSink) -> bool {
        let token = sink.token(k as u64);
        let State::Answered { ts, pushed, .. } = &mut self.slots[k].state else {
            return true;
        };
        let entry = match ts {
            None => opcode::Nop::new().build().user_data(token),
            Some(ts) => opcode::Timeout::new(&**ts).build().user_data(token),
        };
        // SAFETY: a NOP points at nothing; a TIMEOUT points at the boxed timespec,
        // kept in `slots` until this entry's completion arrives in `on_cqe`
        // (expire marks a pushed slot Expired but never frees it).
        *pushed = unsafe { sink.push(&entry) };
        *pushed
    }

    /// Reports slot `k` as timed out.
    fn time_out(&mut self, k: usize, done: &mut dyn FnMut(Completion)) {
        let slot = &mut self.slots[k];
        let tag = slot.tag;
        if matches!(slot.state, State::Answered { pushed: true, .. }) {
            // The entry is in the ring: keep the slot (and its timespec) until
            // the completion comes.
            slot.state = State::Expired;
        } else {
            self.slots.remove(k);
        }
        self.live -= 1;
        done(Completion {
            tag,
            reply: Reply::err(DriveError::Timeout),
        });
    }
}

impl Transport for MemTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn enqueue(&mut self, tag: u64, req: &Request, deadline: Instant) -> Result<(), EnqueueError> {
        if self.live >= self.max_in_flight {
            return Err(EnqueueError::Full);
        }
        self.seq += 1;
        let seq = self.seq;
        let k = self.slots.insert(Slot {
            tag,
            seq,
            state: State::Queued(*req),
        });
        self.queued.push_back((k, seq));
        self.live += 1;
        let slots = &self.slots;
        self.deadlines
            .push(deadline, k as u64, seq, self.live, |k, q| {
                slots.get(k as usize).is_some_and(|s| s.seq == q)
            });
        Ok(())
    }

    fn prepare(&mut self, sink: &mut dyn SqSink) {
        while let Some(&(k, seq)) = self.unpushed.front() {
            if self.holds(k, seq) && !self.push(k, sink) {
                return;
            }
            self.unpushed.pop_front();
        }
        let down = self.drive.down.load(Ordering::SeqCst);
        while let Some((k, seq)) = self.queued.pop_front() {
            if !self.holds(k, seq) {
                continue;
            }
            let State::Queued(req) = &self.slots[k].state else {
                continue;
            };
            if down {
                self.slots[k].state = State::Silent;
                continue;
            }
            let reply = self.drive.execute(req, &mut self.out, &mut self.data_in);
            let delay = self.latency.as_mut().map_or(Duration::ZERO, |f| f());
            self.slots[k].state = State::Answered {
                reply,
                ts: (!delay.is_zero()).then(|| Box::new(types::Timespec::from(delay))),
                pushed: false,
            };
            if !self.push(k, sink) {
                self.unpushed.push_back((k, seq));
                return;
            }
        }
    }

    fn on_cqe(&mut self, local: u64, _: &Cqe, done: &mut dyn FnMut(Completion)) {
        let k = local as usize;
        if !self.slots.contains(k) {
            return;
        }
        let slot = self.slots.remove(k);
        if let State::Answered { reply, .. } = slot.state {
            self.live -= 1;
            done(Completion {
                tag: slot.tag,
                reply,
            });
        }
    }

    fn expire(&mut self, now: Instant, done: &mut dyn FnMut(Completion)) {
        while let Some((k, seq)) = self.deadlines.pop_due(now) {
            let k = k as usize;
            if self.holds(k, seq) && !matches!(self.slots[k].state, State::Expired) {
                self.time_out(k, done);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.live == 0 {
            return None;
        }
        self.deadlines.next()
    }

    fn in_flight(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uring_sg::codec::{Class, HostId, LockId, MutexOp, Record};
    use uring_sg::driver::Driver;

    fn rec(host: &str) -> Record {
        Record::new(
            "lock".parse::<LockId>().unwrap(),
            host.parse::<HostId>().unwrap(),
            Class::Exclusive,
        )
    }

    fn trylock(host: &str) -> Request {
        let mut r = rec(host);
        r.countdown_ms = 10_000;
        Request::Mutex {
            op: MutexOp::Trylock,
            record: r,
        }
    }

    #[test]
    fn commands_reach_the_firmware_and_decode_like_hardware() {
        let drive = MemDrive::new("sim0", FirmwareConfig::default());
        let mut d = Driver::new(16).unwrap();
        let a = d.add(Box::new(MemTransport::new(drive.clone())));
        let t = Duration::from_secs(5);
        assert_eq!(d.call(a, &trylock("h1"), t).unwrap().result, Ok(()));
        assert_eq!(
            d.call(a, &trylock("h2"), t).unwrap().result,
            Err(DriveError::HeldByOther)
        );
        assert_eq!(
            d.call(a, &trylock("h1"), t).unwrap().result,
            Err(DriveError::AlreadyHeld)
        );
        let table = d.call(a, &Request::ReadTable { records: 4 }, t).unwrap();
        assert_eq!(table.result, Ok(()));
        assert_eq!(table.data.len(), 4 * RECORD_LEN);
        assert_eq!(drive.with_firmware(|f| f.record_count()), 1);
    }

    #[test]
    fn a_down_drive_times_out_and_an_io_error_drive_fails() {
        let drive = MemDrive::new("sim0", FirmwareConfig::default());
        let mut d = Driver::new(16).unwrap();
        let a = d.add(Box::new(MemTransport::new(drive.clone())));
        drive.set_down(true);
        let r = d.call(a, &trylock("h1"), Duration::from_millis(5)).unwrap();
        assert_eq!(r.result, Err(DriveError::Timeout));
        drive.set_down(false);
        drive.set_io_error(true);
        let r = d.call(a, &trylock("h1"), Duration::from_secs(5)).unwrap();
        assert_eq!(r.result, Err(DriveError::Io(libc_errno::EIO)));
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn modelled_latency_delays_the_reply_and_a_short_timeout_wins() {
        let drive = MemDrive::new("sim0", FirmwareConfig::default());
        let mut d = Driver::new(16).unwrap();
        let slow =
            MemTransport::new(drive.clone()).with_latency(Box::new(|| Duration::from_millis(200)));
        let a = d.add(Box::new(slow));
        let r = d.call(a, &trylock("h1"), Duration::from_millis(1)).unwrap();
        assert_eq!(r.result, Err(DriveError::Timeout));
        // The drive did execute it (it received the command).
        assert_eq!(drive.with_firmware(|f| f.record_count()), 1);
        let started = Instant::now();
        let r = d.call(a, &trylock("h2"), Duration::from_secs(5)).unwrap();
        assert_eq!(r.result, Err(DriveError::HeldByOther));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
