//! Command slots shared by the `uring_cmd` transports (NVMe admin, bsg): one
//! preallocated entry per command in flight with its stable data buffer, the
//! queue of accepted commands not yet pushed, and deadline handling.
//!
//! A slot is reused only after the completion of the entry that points at its
//! buffers came back; a command that timed out is reported at once and its slot
//! stays taken until then.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Completion, Reply};
use crate::codec::{CommandKind, DriveError};

/// Where a slot's command is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    /// Unused.
    Free,
    /// Accepted, entry not pushed yet.
    Queued,
    /// Entry pushed; `abandoned` once the caller was told it timed out.
    Sent { abandoned: bool },
}

/// One command's storage: `X` holds the transport's own per-command buffers.
pub(crate) struct Slot<X> {
    pub tag: u64,
    pub kind: CommandKind,
    pub deadline: Instant,
    pub state: State,
    pub data: Vec<u8>,
    pub x: X,
}

/// A fixed set of slots. See the module docs.
pub(crate) struct Pool<X> {
    slots: Box<[Slot<X>]>,
    free: Vec<u32>,
    queued: VecDeque<u32>,
    in_flight: usize,
}

impl<X: Default> Pool<X> {
    /// `n` slots with `data_len`-byte buffers.
    pub fn new(n: usize, data_len: usize) -> Pool<X> {
        Pool {
            slots: (0..n)
                .map(|_| Slot {
                    tag: 0,
                    kind: CommandKind::ReadCount,
                    deadline: Instant::now(),
                    state: State::Free,
                    data: vec![0; data_len],
                    x: X::default(),
                })
                .collect(),
            free: (0..n as u32).rev().collect(),
            queued: VecDeque::new(),
            in_flight: 0,
        }
    }
}

impl<X> Pool<X> {
    /// Takes a free slot for a command, its data buffer at least `data_len` long,
    /// and queues it. `None` when every slot is taken.
    pub fn alloc(
        &mut self,
        tag: u64,
        kind: CommandKind,
        deadline: Instant,
        data_len: usize,
    ) -> Option<u32> {
        let i = self.free.pop()?;
        let s = &mut self.slots[i as usize];
        if s.data.len() < data_len {
            s.data.resize(data_len, 0);
        }
        s.tag = tag;
        s.kind = kind;
        s.deadline = deadline;
        s.state = State::Queued;
        self.queued.push_back(i);
        self.in_flight += 1;
        Some(i)
    }

    /// Gives back a slot taken by [`Pool::alloc`] that was never pushed.
    pub fn unalloc(&mut self, i: u32) {
        self.queued.retain(|&q| q != i);
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.state = State::Free;
            self.free.push(i);
            self.in_flight -= 1;
        }
    }

    /// The slot at `i`.
    pub fn slot(&mut self, i: u32) -> Option<&mut Slot<X>> {
        self.slots.get_mut(i as usize)
    }

    /// The oldest queued slot.
    pub fn front(&self) -> Option<u32> {
        self.queued.front().copied()
    }

    /// Marks the oldest queued slot as pushed.
    pub fn sent_front(&mut self) {
        if let Some(i) = self.queued.pop_front() {
            self.slots[i as usize].state = State::Sent { abandoned: false };
        }
    }

    /// The entry of slot `i` completed: frees the slot and reports `reply` unless
    /// the caller was already told (timeout). `reply` is built from the slot.
    pub fn complete(
        &mut self,
        i: u32,
        reply: impl FnOnce(&Slot<X>) -> Reply,
        done: &mut dyn FnMut(Completion),
    ) {
        let Some(s) = self.slots.get_mut(i as usize) else {
            return;
        };
        let State::Sent { abandoned } = s.state else {
            return;
        };
        if !abandoned {
            let r = reply(s);
            self.in_flight -= 1;
            done(Completion {
                tag: s.tag,
                reply: r,
            });
        }
        s.state = State::Free;
        self.free.push(i);
    }

    /// Fails every command whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant, done: &mut dyn FnMut(Completion)) {
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            if s.deadline > now {
                continue;
            }
            let tag = s.tag;
            match s.state {
                State::Queued => self.unalloc(i as u32),
                State::Sent { abandoned: false } => {
                    s.state = State::Sent { abandoned: true };
                    self.in_flight -= 1;
                }
                _ => continue,
            }
            done(Completion {
                tag,
                reply: Reply::err(DriveError::Timeout),
            });
        }
    }

    /// The earliest deadline of a command the caller waits for.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, State::Queued | State::Sent { abandoned: false }))
            .map(|s| s.deadline)
            .min()
    }

    /// Commands accepted and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_timed_out_slot_is_reused_only_after_its_completion() {
        let mut p: Pool<()> = Pool::new(1, 16);
        let now = Instant::now();
        let i = p.alloc(7, CommandKind::ReadCount, now, 32).unwrap();
        assert_eq!(p.slot(i).unwrap().data.len(), 32);
        assert!(p.alloc(8, CommandKind::ReadCount, now, 0).is_none());
        p.sent_front();
        let mut got = Vec::new();
        p.expire(now, &mut |c| got.push(c));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reply.result, Err(DriveError::Timeout));
        assert_eq!(p.in_flight(), 0);
        assert!(p.alloc(8, CommandKind::ReadCount, now, 0).is_none());
        p.complete(i, |_| Reply::err(DriveError::Busy), &mut |c| got.push(c));
        assert_eq!(got.len(), 1, "no second report for a timed-out command");
        let j = p
            .alloc(9, CommandKind::ReadCount, now + Duration::from_secs(1), 0)
            .unwrap();
        p.sent_front();
        p.complete(j, |_| Reply::err(DriveError::Busy), &mut |c| got.push(c));
        assert_eq!(got[1].tag, 9);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn queued_commands_expire_without_being_sent() {
        let mut p: Pool<()> = Pool::new(2, 0);
        let now = Instant::now();
        p.alloc(1, CommandKind::ReadCount, now, 0).unwrap();
        assert_eq!(p.next_deadline(), Some(now));
        let mut n = 0;
        p.expire(now, &mut |_| n += 1);
        assert_eq!((n, p.front(), p.in_flight()), (1, None, 0));
    }
}
