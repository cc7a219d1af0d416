//! A small io_uring owner that runs a set of [`Transport`]s: the shell every
//! single-threaded user of the transports shares (the `idm` command line, the
//! simulator's tests, the device tests in a guest). The engine's reactor is a
//! bigger version of the same loop.
//!
//! One loop turn ([`Driver::turn`]):
//! 1. every transport pushes its queued entries into the SQ ([`Transport::prepare`]);
//! 2. one `io_uring_enter` submits them and waits for at least one completion, or
//!    until the earliest command deadline;
//! 3. completions are routed to their transport by the token in `user_data`
//!    (transport index in the top 16 bits, the transport's own `local` in the low
//!    48), and finished commands are handed to the caller;
//! 4. commands whose deadline passed are failed with a timeout.
//!
//! A turn visits only the **active** transports: those given work (an enqueue)
//! or a completion since they were last prepared, and those with commands in
//! flight. A quiet drive among 512 costs nothing per turn.
//!
//! The ring is either a plain one ([`Driver::new`]) or an SQE128/CQE32 one
//! ([`Driver::new_big`]) for `uring_cmd` transports (bsg, NVMe); 64-byte entries
//! go into a big ring too.

use std::io;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::transport::{Completion, Cqe, EnqueueError, Reply, Request, SqSink, Transport};

/// Bits of `user_data` that carry the transport's own `local` value.
const LOCAL_BITS: u32 = 48;
/// Mask of the `local` part of a token.
const LOCAL_MASK: u64 = (1 << LOCAL_BITS) - 1;
/// Flag: the transport is in the active list.
const ACTIVE: u8 = 1;
/// Flag: the transport got work or a completion since it was last prepared.
const TOUCHED: u8 = 2;

/// Marks transport `i` as needing a `prepare` and a place in the active list.
fn touch(active: &mut Vec<usize>, flags: &mut [u8], i: usize) {
    if let Some(f) = flags.get_mut(i) {
        *f |= TOUCHED;
        if *f & ACTIVE == 0 {
            *f |= ACTIVE;
            active.push(i);
        }
    }
}

/// Token of the driver's own cancel entries (never routed to a transport).
const DRIVER_TOKEN: u64 = u64::MAX;

/// The entry types a [`Driver`] can run with: plain 64-byte SQEs or 128-byte ones.
pub trait RingEntry: squeue::EntryMarker {
    /// Converts a 64-byte entry for this ring.
    fn from_small(e: &squeue::Entry) -> Self;
    /// Converts a 128-byte entry for this ring, if it takes them.
    fn from_big(e: &squeue::Entry128) -> Option<Self>;
}

impl RingEntry for squeue::Entry {
    fn from_small(e: &squeue::Entry) -> Self {
        e.clone()
    }
    fn from_big(_: &squeue::Entry128) -> Option<Self> {
        None
    }
}

impl RingEntry for squeue::Entry128 {
    fn from_small(e: &squeue::Entry) -> Self {
        squeue::Entry128::from(e.clone())
    }
    fn from_big(e: &squeue::Entry128) -> Option<Self> {
        Some(e.clone())
    }
}

/// The completion types a [`Driver`] can run with: 16-byte CQEs or 32-byte ones.
pub trait RingCqe: cqueue::EntryMarker {
    /// The CQE as a transport sees it.
    fn to_cqe(&self) -> (u64, Cqe);
}

impl RingCqe for cqueue::Entry {
    fn to_cqe(&self) -> (u64, Cqe) {
        (
            self.user_data(),
            Cqe {
                res: self.result(),
                flags: self.flags(),
                big: [0; 2],
            },
        )
    }
}

impl RingCqe for cqueue::Entry32 {
    fn to_cqe(&self) -> (u64, Cqe) {
        (
            self.user_data(),
            Cqe {
                res: self.result(),
                flags: self.flags(),
                big: *self.big_cqe(),
            },
        )
    }
}

/// A single-threaded io_uring owner running several transports. See the module docs.
pub struct Driver<S: RingEntry = squeue::Entry, C: RingCqe = cqueue::Entry> {
    ring: IoUring<S, C>,
    transports: Vec<Box<dyn Transport>>,
    /// Indices of the active transports (see the module docs).
    active: Vec<usize>,
    /// Per transport: [`ACTIVE`] and [`TOUCHED`] bits.
    flags: Vec<u8>,
    /// Entries pushed whose final completion has not arrived yet.
    sqes_in_flight: usize,
}

impl Driver<squeue::Entry, cqueue::Entry> {
    /// A driver on a plain ring with `entries` SQ slots.
    pub fn new(entries: u32) -> io::Result<Self> {
        Ok(Driver {
            ring: IoUring::new(entries)?,
            transports: Vec::new(),
            active: Vec::new(),
            flags: Vec::new(),
            sqes_in_flight: 0,
        })
    }
}

impl Driver<squeue::Entry128, cqueue::Entry32> {
    /// A driver on an SQE128/CQE32 ring (needed by `uring_cmd` transports).
    pub fn new_big(entries: u32) -> io::Result<Self> {
        Ok(Driver {
            ring: IoUring::builder().build(entries)?,
            transports: Vec::new(),
            active: Vec::new(),
            flags: Vec::new(),
            sqes_in_flight: 0,
        })
    }
}

/// The [`SqSink`] a driver hands to one transport during [`Driver::turn`].
struct Sink<'a, S: RingEntry, C: RingCqe> {
    ring: &'a mut IoUring<S, C>,
    index: u64,
    pushed: &'a mut usize,
    /// A push was refused (SQ full, or the kernel busy with a CQ backlog): the
    /// transport has work left and must be prepared again next turn.
    refused: bool,
}

impl<S: RingEntry, C: RingCqe> Sink<'_, S, C> {
    /// Pushes one converted entry, submitting once to make room if the SQ is full.
    ///
    /// # Safety
    ///
    /// The caller's [`SqSink::push`] contract.
    unsafe fn push_entry(&mut self, e: &S) -> bool {
        // SAFETY: forwarded from the transport's SqSink::push contract.
        if unsafe { self.ring.submission().push(e) }.is_ok() {
            *self.pushed += 1;
            return true;
        }
        if self.ring.submit().is_err() {
            self.refused = true;
            return false;
        }
        // SAFETY: as above.
        let ok = unsafe { self.ring.submission().push(e) }.is_ok();
        if ok {
            *self.pushed += 1;
        } else {
            self.refused = true;
        }
        ok
    }
}

impl<S: RingEntry, C: RingCqe> SqSink for Sink<'_, S, C> {
    fn token(&self, local: u64) -> u64 {
        debug_assert!(local <= LOCAL_MASK, "local token over 48 bits");
        (self.index << LOCAL_BITS) | (local & LOCAL_MASK)
    }

    unsafe fn push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: the caller upholds SqSink::push's contract for `entry`.
        unsafe { self.push_entry(&S::from_small(entry)) }
    }

    unsafe fn push128(&mut self, entry: &squeue::Entry128) -> bool {
        match S::from_big(entry) {
            // SAFETY: the caller upholds SqSink::push128's contract for `entry`.
            Some(e) => unsafe { self.push_entry(&e) },
            None => false,
        }
    }

    fn supports_sqe128(&self) -> bool {
        S::from_big(&opcode::Nop::new().build().into()).is_some()
    }
}

impl<S: RingEntry, C: RingCqe> Driver<S, C> {
    /// Adds a transport; returns its index (the `drive` of [`Driver::enqueue`]).
    pub fn add(&mut self, transport: Box<dyn Transport>) -> usize {
        self.transports.push(transport);
        self.flags.push(0);
        let i = self.transports.len() - 1;
        touch(&mut self.active, &mut self.flags, i);
        i
    }

    /// The transport at `index`.
    pub fn transport(&mut self, index: usize) -> Option<&mut (dyn Transport + 'static)> {
        // The caller may give it work: prepare it next turn.
        touch(&mut self.active, &mut self.flags, index);
        self.transports.get_mut(index).map(|t| t.as_mut())
    }

    /// How many transports this driver runs.
    pub fn len(&self) -> usize {
        self.transports.len()
    }

    /// Whether the driver runs no transport.
    pub fn is_empty(&self) -> bool {
        self.transports.is_empty()
    }

    /// Commands accepted by all transports and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.transports.iter().map(|t| t.in_flight()).sum()
    }

    /// Queues `req` on transport `drive` with the caller's `tag`; it fails with a
    /// timeout if no answer came within `timeout`.
    pub fn enqueue(
        &mut self,
        drive: usize,
        tag: u64,
        req: &Request,
        timeout: Duration,
    ) -> Result<(), EnqueueError> {
        let t = self
            .transports
            .get_mut(drive)
            .ok_or(EnqueueError::Closed(libc_einval()))?;
        t.enqueue(tag, req, Instant::now() + timeout)?;
        touch(&mut self.active, &mut self.flags, drive);
        Ok(())
    }

    /// One loop turn: submit what is queued, wait at most `max_wait` (and never past
    /// the earliest command deadline) for completions, and hand every finished
    /// command to `done` as `(drive, completion)`.
    pub fn turn(
        &mut self,
        max_wait: Duration,
        done: &mut dyn FnMut(usize, Completion),
    ) -> io::Result<()> {
        for &i in &self.active {
            self.flags[i] &= !TOUCHED;
            let mut sink = Sink {
                ring: &mut self.ring,
                index: i as u64,
                pushed: &mut self.sqes_in_flight,
                refused: false,
            };
            self.transports[i].prepare(&mut sink);
            if sink.refused {
                // Work left behind (a full SQ): stay active, prepare again.
                self.flags[i] |= TOUCHED;
            }
        }
        let now = Instant::now();
        let mut wait = max_wait;
        if let Some(d) = self
            .active
            .iter()
            .filter_map(|&i| self.transports[i].next_deadline())
            .min()
        {
            wait = wait.min(d.saturating_duration_since(now));
        }
        self.enter(wait)?;
        self.reap(done);
        let now = Instant::now();
        for &i in &self.active {
            self.transports[i].expire(now, &mut |c| done(i, c));
        }
        let (transports, flags) = (&self.transports, &mut self.flags);
        self.active.retain(|&i| {
            let t = &transports[i];
            let keep = flags[i] & TOUCHED != 0 || t.in_flight() > 0 || t.next_deadline().is_some();
            if !keep {
                flags[i] &= !ACTIVE;
            }
            keep
        });
        Ok(())
    }

    /// Runs one command to completion (for the command line and tests).
    pub fn call(&mut self, drive: usize, req: &Request, timeout: Duration) -> io::Result<Reply> {
        const TAG: u64 = u64::MAX - 1;
        self.enqueue(drive, TAG, req, timeout)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut reply = None;
        while reply.is_none() {
            self.turn(timeout, &mut |d, c| {
                if d == drive && c.tag == TAG {
                    reply = Some(c.reply);
                }
            })?;
        }
        reply.ok_or_else(|| io::Error::other("no reply"))
    }

    /// Submits pending entries and waits up to `wait` for one completion.
    fn enter(&mut self, wait: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(wait);
        let args = types::SubmitArgs::new().timespec(&ts);
        let want = if self.sqes_in_flight > 0 && !wait.is_zero() {
            1
        } else {
            0
        };
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            // A timed-out wait, a signal, or a CQ overflow backlog that reaping clears.
            Err(e) if matches!(e.raw_os_error(), Some(ETIME | EINTR | EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Routes every ready completion to its transport.
    fn reap(&mut self, done: &mut dyn FnMut(usize, Completion)) {
        loop {
            let Some(raw) = self.ring.completion().next() else {
                break;
            };
            let (user_data, cqe) = raw.to_cqe();
            if !cqe.more() {
                self.sqes_in_flight = self.sqes_in_flight.saturating_sub(1);
            }
            if user_data == DRIVER_TOKEN {
                continue;
            }
            let index = (user_data >> LOCAL_BITS) as usize;
            touch(&mut self.active, &mut self.flags, index);
            if let Some(t) = self.transports.get_mut(index) {
                t.on_cqe(user_data & LOCAL_MASK, &cqe, &mut |c| done(index, c));
            }
        }
    }
}

impl<S: RingEntry, C: RingCqe> Drop for Driver<S, C> {
    /// Cancels every entry still in the kernel and reaps it before the transports
    /// (and the buffers the entries point at) are freed.
    fn drop(&mut self) {
        if self.sqes_in_flight == 0 {
            return;
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(DRIVER_TOKEN);
        // SAFETY: a cancel entry points at no memory.
        let _ = unsafe { self.ring.submission().push(&S::from_small(&cancel)) };
        let _ = self.ring.submit();
        // The cancel's own completion is counted too; bound the wait so a device
        // that ignores cancellation cannot hang the drop forever (after that the
        // buffers are leaked rather than freed under the kernel).
        self.sqes_in_flight += 1;
        for _ in 0..1000 {
            if self.sqes_in_flight == 0 {
                return;
            }
            let _ = self.enter(Duration::from_millis(10));
            while let Some(raw) = self.ring.completion().next() {
                if !raw.to_cqe().1.more() {
                    self.sqes_in_flight = self.sqes_in_flight.saturating_sub(1);
                }
            }
        }
        let leaked = std::mem::take(&mut self.transports);
        std::mem::forget(leaked);
    }
}

/// `ETIME`: a timed wait ended without completions.
const ETIME: i32 = 62;
/// `EINTR`.
const EINTR: i32 = 4;
/// `EBUSY`: CQ overflow backlog; reaping makes room.
const EBUSY: i32 = 16;

/// `EINVAL`, for an enqueue on a transport index that does not exist.
fn libc_einval() -> i32 {
    22
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Class, DriveError, HostId, LockId, MutexOp, Record};
    use std::collections::VecDeque;

    /// A transport that answers every request with an io_uring NOP (so the
    /// completion really comes through the ring), or never answers when `mute`.
    struct NopTransport {
        queued: VecDeque<(u64, Instant)>,
        sent: Vec<Option<(u64, Instant)>>,
        mute: bool,
    }

    impl NopTransport {
        fn new(mute: bool) -> Self {
            NopTransport {
                queued: VecDeque::new(),
                sent: Vec::new(),
                mute,
            }
        }
    }

    impl Transport for NopTransport {
        fn name(&self) -> &str {
            "nop"
        }
        fn enqueue(
            &mut self,
            tag: u64,
            _: &Request,
            deadline: Instant,
        ) -> Result<(), EnqueueError> {
            self.queued.push_back((tag, deadline));
            Ok(())
        }
        fn prepare(&mut self, sink: &mut dyn SqSink) {
            if self.mute {
                return;
            }
            while let Some(q) = self.queued.pop_front() {
                let local = self.sent.len() as u64;
                let e = opcode::Nop::new().build().user_data(sink.token(local));
                // SAFETY: a NOP points at no memory.
                if !unsafe { sink.push(&e) } {
                    self.queued.push_front(q);
                    return;
                }
                self.sent.push(Some(q));
            }
        }
        fn on_cqe(&mut self, local: u64, cqe: &Cqe, done: &mut dyn FnMut(Completion)) {
            if let Some((tag, _)) = self.sent.get_mut(local as usize).and_then(Option::take) {
                let result = if cqe.res == 0 {
                    Ok(())
                } else {
                    Err(DriveError::Io(-cqe.res))
                };
                done(Completion {
                    tag,
                    reply: Reply {
                        result,
                        data: Vec::new(),
                    },
                });
            }
        }
        fn expire(&mut self, now: Instant, done: &mut dyn FnMut(Completion)) {
            while self.queued.front().is_some_and(|q| q.1 <= now) {
                if let Some((tag, _)) = self.queued.pop_front() {
                    done(Completion {
                        tag,
                        reply: Reply::err(DriveError::Timeout),
                    });
                }
            }
        }
        fn next_deadline(&self) -> Option<Instant> {
            self.queued.iter().map(|q| q.1).min()
        }
        fn in_flight(&self) -> usize {
            self.queued.len() + self.sent.iter().filter(|s| s.is_some()).count()
        }
    }

    fn trylock() -> Request {
        Request::Mutex {
            op: MutexOp::Trylock,
            record: Record::new(LockId::default(), HostId::default(), Class::Exclusive),
        }
    }

    #[test]
    fn routes_completions_to_their_transport_and_tag() {
        let mut d = Driver::new(8).unwrap();
        let a = d.add(Box::new(NopTransport::new(false)));
        let b = d.add(Box::new(NopTransport::new(false)));
        // More commands than SQ slots: the sink submits to make room.
        for tag in 0..20 {
            d.enqueue(a, tag, &trylock(), Duration::from_secs(5))
                .unwrap();
            d.enqueue(b, 100 + tag, &trylock(), Duration::from_secs(5))
                .unwrap();
        }
        let mut seen = Vec::new();
        while seen.len() < 40 {
            d.turn(Duration::from_secs(5), &mut |drive, c| {
                assert!(c.reply.result.is_ok());
                seen.push((drive, c.tag));
            })
            .unwrap();
        }
        seen.sort();
        let want: Vec<_> = (0..20)
            .map(|t| (a, t))
            .chain((0..20).map(|t| (b, 100 + t)))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn a_command_nobody_answers_times_out() {
        let mut d = Driver::new(8).unwrap();
        let m = d.add(Box::new(NopTransport::new(true)));
        let r = d.call(m, &trylock(), Duration::from_millis(1)).unwrap();
        assert_eq!(r.result, Err(DriveError::Timeout));
    }

    #[test]
    fn big_ring_takes_small_entries() {
        let mut d = Driver::new_big(8).unwrap();
        let a = d.add(Box::new(NopTransport::new(false)));
        let r = d.call(a, &trylock(), Duration::from_secs(5)).unwrap();
        assert_eq!(r.result, Ok(()));
    }

    #[test]
    fn unknown_transport_index_is_an_error() {
        let mut d = Driver::new(8).unwrap();
        assert!(d.enqueue(3, 0, &trylock(), Duration::from_secs(1)).is_err());
    }
}
