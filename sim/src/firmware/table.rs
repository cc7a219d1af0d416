//! The drive's mutex table: entries keyed by [`LockId`], each with its members keyed
//! by [`HostId`] and its LVB.
//!
//! A *record* is what a table read returns: one per (mutex, member) pair, and one for
//! an entry that has no member left (state unlocked, so hosts can find and destroy
//! it). [`Table::record_count`] counts them and is what the capacity limits.

use std::collections::BTreeMap;

use uring_sg::codec::{Class, ControlByte, HostId, LockId, Lvb, MutexState, Record};

/// One host's membership of one mutex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The class the member holds.
    pub class: Class,
    /// Membership countdown (lease) in ms, from the last grant/refresh record.
    pub countdown_ms: u64,
    /// Drive time (ms) of the last grant or refresh.
    pub since_ms: u64,
    /// Metadata of the record that granted or last refreshed the membership.
    pub metadata: [u8; 64],
}

impl Member {
    /// Whether the countdown ran out at drive time `now_ms`: `now_ms >= since_ms +
    /// countdown_ms`, computed without overflow (a countdown of `u64::MAX` never runs
    /// out; a `now_ms` before `since_ms` counts as no time elapsed).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.countdown_ms != u64::MAX && now_ms.saturating_sub(self.since_ms) >= self.countdown_ms
    }

    /// Whether the member counts as a holder at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.is_expired(now_ms)
    }

    /// Whether a break by another host may remove this member: it expired, or it was
    /// granted with the never-expiring countdown `u64::MAX` (IDM.md §6).
    pub fn is_breakable(&self, now_ms: u64) -> bool {
        self.countdown_ms == u64::MAX || self.is_expired(now_ms)
    }
}

/// One mutex of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutexEntry {
    /// Members by host.
    pub members: BTreeMap<HostId, Member>,
    /// The stored lock value block (byte 7 always zero, as the wire cannot carry it).
    pub lvb: Lvb,
    /// Drive time (ms) of the last change to the entry.
    pub modified_ms: u64,
    /// The host of the last change (shown in the record of an entry with no member).
    pub last_host: HostId,
    /// The class of the last change (shown in the record of an entry with no member).
    pub last_class: Class,
}

impl MutexEntry {
    fn new(now_ms: u64, host: HostId, class: Class) -> MutexEntry {
        MutexEntry {
            members: BTreeMap::new(),
            lvb: Lvb::default(),
            modified_ms: now_ms,
            last_host: host,
            last_class: class,
        }
    }

    /// Records this entry contributes to a table read.
    pub fn record_count(&self) -> usize {
        self.members.len().max(1)
    }

    /// Notes a change made by `host` in `class` at `now_ms`.
    pub(crate) fn touch(&mut self, now_ms: u64, host: HostId, class: Class) {
        self.modified_ms = now_ms;
        self.last_host = host;
        self.last_class = class;
    }

    /// Live members at `now_ms`.
    pub fn live_count(&self, now_ms: u64) -> usize {
        self.members.values().filter(|m| m.is_live(now_ms)).count()
    }

    /// The records of this entry as a read at `now_ms` returns them.
    pub fn records<'a>(
        &'a self,
        lock_id: &'a LockId,
        now_ms: u64,
    ) -> impl Iterator<Item = Record> + 'a {
        let live = self.live_count(now_ms);
        let unlocked = self.members.is_empty().then_some(Record {
            state: MutexState::Unlocked,
            time_ms: self.modified_ms,
            countdown_ms: 0,
            class: self.last_class,
            lvb: self.lvb,
            control: ControlByte::NoUpdate,
            lock_id: *lock_id,
            metadata: [0; 64],
            host_id: self.last_host,
        });
        let members = self.members.iter().map(move |(host, m)| {
            let state = if m.is_expired(now_ms) {
                MutexState::Timeout
            } else if m.class.is_shared() && live > 1 {
                MutexState::MultipleLocked
            } else {
                MutexState::Locked
            };
            Record {
                state,
                time_ms: m.since_ms,
                countdown_ms: m.countdown_ms,
                class: m.class,
                lvb: self.lvb,
                control: ControlByte::NoUpdate,
                lock_id: *lock_id,
                metadata: m.metadata,
                host_id: *host,
            }
        });
        unlocked.into_iter().chain(members)
    }
}

/// The whole table. Ordered maps keep reads and snapshots deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    entries: BTreeMap<LockId, MutexEntry>,
    records: usize,
}

impl Table {
    /// Records (what a read returns) in the table.
    pub fn record_count(&self) -> usize {
        self.records
    }

    /// Mutexes in the table.
    pub fn mutex_count(&self) -> usize {
        self.entries.len()
    }

    /// The entry of `lock_id`, if any.
    pub fn get(&self, lock_id: &LockId) -> Option<&MutexEntry> {
        self.entries.get(lock_id)
    }

    /// Runs `f` on the entry of `lock_id` (if any), keeping the record count right.
    pub(crate) fn modify<R>(
        &mut self,
        lock_id: &LockId,
        f: impl FnOnce(&mut MutexEntry) -> R,
    ) -> Option<R> {
        let entry = self.entries.get_mut(lock_id)?;
        let before = entry.record_count();
        let out = f(entry);
        let after = entry.record_count();
        self.records = self.records.saturating_sub(before) + after;
        Some(out)
    }

    /// Creates the entry of `lock_id` with `host` as its first member.
    pub(crate) fn create(&mut self, lock_id: LockId, host: HostId, member: Member, now_ms: u64) {
        let mut entry = MutexEntry::new(now_ms, host, member.class);
        entry.members.insert(host, member);
        if let Some(old) = self.entries.insert(lock_id, entry) {
            self.records = self.records.saturating_sub(old.record_count());
        }
        self.records += 1;
    }

    /// Removes the entry of `lock_id`; whether it existed.
    pub(crate) fn remove(&mut self, lock_id: &LockId) -> bool {
        match self.entries.remove(lock_id) {
            Some(old) => {
                self.records = self.records.saturating_sub(old.record_count());
                true
            }
            None => false,
        }
    }

    /// Empties the table.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.records = 0;
    }

    /// Every record, in lock-ID then host-ID order, as a read at `now_ms` returns them.
    pub fn records(&self, now_ms: u64) -> impl Iterator<Item = Record> + '_ {
        self.entries
            .iter()
            .flat_map(move |(id, e)| e.records(id, now_ms))
    }
}
