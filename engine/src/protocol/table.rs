//! Reading a drive's mutex table, and freeing a table entry when it is full.
//!
//! **Table read in one round trip (usually).** The old host code read the record
//! count, then the records: two round trips. [`TableRead`] asks for a remembered or
//! generous number of records at once; a table shorter than the read comes back
//! zero-filled past its end (IDM.md §3, inferred), or short. Only when every block
//! of the answer is a record (the table may be longer) does it ask again for twice
//! as many, up to [`MAX_TABLE_RECORDS`].
//!
//! **Table full.** When trylock answers "mutex table full", [`TableCleanup`] reads
//! the table, destroys one mutex whose every record is unlocked (never the lock
//! being acquired), and reports back so the caller can retry the trylock. The
//! victim ([`cleanup_victim`]) is a mutex whose LVB is 0 if there is one (destroying
//! it loses nothing: a reader sees 0 with or without the entry), else the
//! least-recently-modified one. Destroying a mutex with an LVB forgets the value on
//! that drive; if enough drives of the last writer's majority forget it, a later
//! reader sees an older value or 0 (the limit documented in [`super::lvb`]). IDM.md
//! §5 prescribes this clean-up; lvmlockd re-reads its metadata when the value
//! changes, which a value that went back to 0 does too.

use uring_sg::transport::{Reply, Request};
use uring_sg::{Class, DriveError, LockId, MutexOp, MutexState, Record, RECORD_LEN};

use super::{Actions, LockState, Now};
use crate::error::LockError;

/// Records asked for by the first read when nothing better is known.
pub const DEFAULT_TABLE_HINT: u32 = 256;
/// The largest read: above the firmware's limit (IDM.md §5: 3950).
pub const MAX_TABLE_RECORDS: u32 = 4096;

/// What to do after a table-read reply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TableStep {
    /// Send this request to the same drive and feed its reply back.
    Send(Request),
    /// The whole table.
    Done(Vec<Record>),
    /// The read failed.
    Failed(DriveError),
}

/// A table read on one drive (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TableRead {
    records: u32,
    /// Keep only this lock's records (`None`: all, for the clean-up).
    only: Option<LockId>,
}

impl TableRead {
    /// A read asking first for `hint` records (at least 1, at most [`MAX_TABLE_RECORDS`]).
    pub fn new(hint: u32) -> TableRead {
        TableRead {
            records: hint.clamp(1, MAX_TABLE_RECORDS),
            only: None,
        }
    }

    /// A read that returns only the records of `lock` (the others are skipped
    /// undecoded).
    pub fn of_lock(hint: u32, lock: LockId) -> TableRead {
        TableRead {
            only: Some(lock),
            ..TableRead::new(hint)
        }
    }

    /// The request to send now.
    pub fn request(&self) -> Request {
        Request::ReadTable {
            records: self.records,
        }
    }

    /// Handles the reply to [`TableRead::request`].
    pub fn on_reply(&mut self, reply: &Reply) -> TableStep {
        if let Err(e) = reply.result {
            return TableStep::Failed(e);
        }
        let want = self.records as usize * RECORD_LEN;
        let data = &reply.data[..reply.data.len().min(want)];
        let maybe_more = data.len() >= want
            && data
                .chunks_exact(RECORD_LEN)
                .last()
                .is_some_and(|b| b.iter().any(|&x| x != 0));
        if maybe_more && self.records < MAX_TABLE_RECORDS {
            self.records = self.records.saturating_mul(2).min(MAX_TABLE_RECORDS);
            return TableStep::Send(self.request());
        }
        match Record::decode_table_matching(data, self.only.as_ref()) {
            Ok(recs) => TableStep::Done(recs),
            Err(_) => TableStep::Failed(DriveError::Malformed),
        }
    }
}

/// The LVB `records` hold for `lock` as the drive stores it: the largest among
/// that lock's records (0 when the drive does not know the lock).
pub fn stored_lvb(records: &[Record], lock: &LockId) -> u64 {
    records
        .iter()
        .filter(|r| r.lock_id == *lock)
        .map(|r| r.lvb.to_u64())
        .max()
        .unwrap_or(0)
}

/// The mutex to destroy to make room: every record of it unlocked, never `keep`;
/// among those, one whose LVB is 0 first (nothing is lost), then the least recently
/// modified (largest record time of the mutex is the smallest), then the smallest
/// lock ID (deterministic).
pub fn cleanup_victim(records: &[Record], keep: &LockId) -> Option<LockId> {
    let mut best: Option<(bool, u64, LockId)> = None;
    for r in records {
        if r.lock_id == *keep || r.state != MutexState::Unlocked {
            continue;
        }
        let same = records.iter().filter(|o| o.lock_id == r.lock_id);
        if same.clone().any(|o| o.state != MutexState::Unlocked) {
            continue;
        }
        let modified = same.clone().map(|o| o.time_ms).max().unwrap_or(r.time_ms);
        let has_lvb = same.map(|o| o.lvb.to_u64()).max().unwrap_or(0) != 0;
        let key = (has_lvb, modified, r.lock_id);
        if best.is_none_or(|b| key < b) {
            best = Some(key);
        }
    }
    best.map(|(_, _, id)| id)
}

/// What to do after a clean-up reply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CleanupStep {
    /// Send this request to the same drive and feed its reply back.
    Send(Request),
    /// An entry was freed (or someone else freed the victim): retry the trylock.
    Done,
    /// Nothing could be freed.
    Failed(LockError),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CleanupPhase {
    Reading(TableRead),
    Destroying,
}

/// "Table full" clean-up on one drive: read the table, destroy one unlocked mutex.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TableCleanup {
    phase: CleanupPhase,
}

impl TableCleanup {
    /// A clean-up; send [`TableCleanup::first_request`] to the drive.
    pub fn new() -> TableCleanup {
        TableCleanup {
            phase: CleanupPhase::Reading(TableRead::new(MAX_TABLE_RECORDS)),
        }
    }

    /// The first request (a table read).
    pub fn first_request(&self) -> Request {
        Request::ReadTable {
            records: MAX_TABLE_RECORDS,
        }
    }

    /// Handles the reply to the last request sent.
    pub fn on_reply(&mut self, now: Now, state: &LockState, reply: &Reply) -> CleanupStep {
        match &mut self.phase {
            CleanupPhase::Reading(read) => match read.on_reply(reply) {
                TableStep::Send(req) => CleanupStep::Send(req),
                TableStep::Failed(e) => CleanupStep::Failed(LockError::Io(e)),
                TableStep::Done(recs) => match cleanup_victim(&recs, &state.spec.lock_id) {
                    None => CleanupStep::Failed(LockError::TableFull),
                    Some(victim) => {
                        self.phase = CleanupPhase::Destroying;
                        let mut record = Record::new(victim, state.spec.host_id, Class::Exclusive);
                        record.time_ms = now.wall_ms;
                        CleanupStep::Send(Request::Mutex {
                            op: MutexOp::Destroy,
                            record,
                        })
                    }
                },
            },
            CleanupPhase::Destroying => match reply.result {
                Ok(()) | Err(DriveError::NotFound) => CleanupStep::Done,
                Err(e) if e.is_io() => CleanupStep::Failed(LockError::Io(e)),
                Err(_) => CleanupStep::Failed(LockError::TableFull),
            },
        }
    }
}

impl Default for TableCleanup {
    fn default() -> Self {
        TableCleanup::new()
    }
}

/// A table read on every drive of a lock at once (used by read LVB, host count and
/// mode): one [`TableRead`] per drive, at most one command outstanding per drive.
#[derive(Clone, Debug, Default)]
pub struct TableScan {
    reads: Vec<Option<TableRead>>,
}

impl TableScan {
    /// Starts a read of `n` drives, each asking first for `hint` records and
    /// returning the records of `lock` only.
    pub fn start(n: u16, hint: u32, lock: LockId, a: &mut Actions) -> TableScan {
        let read = TableRead::of_lock(hint, lock);
        for d in 0..n {
            a.send(d, read.request());
        }
        TableScan {
            reads: vec![Some(read); n as usize],
        }
    }

    /// Feeds a reply; returns the drive's table (or error) once its read is complete.
    pub fn on_reply(
        &mut self,
        drive: u16,
        reply: &Reply,
        a: &mut Actions,
    ) -> Option<Result<Vec<Record>, DriveError>> {
        let slot = self.reads.get_mut(drive as usize)?;
        let read = slot.as_mut()?;
        match read.on_reply(reply) {
            TableStep::Send(req) => {
                a.send(drive, req);
                None
            }
            TableStep::Done(recs) => {
                *slot = None;
                Some(Ok(recs))
            }
            TableStep::Failed(e) => {
                *slot = None;
                Some(Err(e))
            }
        }
    }

    /// No read outstanding.
    pub fn idle(&self) -> bool {
        self.reads.iter().all(Option::is_none)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use uring_sg::{HostId, MutexState::*};

    fn id(s: &str) -> LockId {
        s.parse().unwrap()
    }

    #[test]
    fn read_grows_when_full_and_stops_on_zero_block() {
        let h = HostId::default();
        let recs: Vec<Record> = (0..4)
            .map(|i| table_rec(id(&format!("l{i}")), h, Locked, Class::Exclusive, 0, 0))
            .collect();
        let mut r = TableRead::new(2);
        // Two asked, two full records: maybe more.
        let step = r.on_reply(&data(table_data(&recs[..2], 2)));
        assert_eq!(step, TableStep::Send(Request::ReadTable { records: 4 }));
        // Four asked, three records and a zero block: done.
        let step = r.on_reply(&data(table_data(&recs[..3], 4)));
        assert_eq!(step, TableStep::Done(recs[..3].to_vec()));
        // Short answer: done.
        let mut r = TableRead::new(8);
        assert_eq!(
            r.on_reply(&data(table_data(&recs, 4))),
            TableStep::Done(recs.clone())
        );
        assert_eq!(
            r.on_reply(&err(DriveError::Timeout)),
            TableStep::Failed(DriveError::Timeout)
        );
        assert_eq!(
            r.on_reply(&data(vec![0xFF; RECORD_LEN])),
            TableStep::Failed(DriveError::Malformed)
        );
    }

    #[test]
    fn victim_is_oldest_fully_unlocked_mutex() {
        let (h1, h2) = (id("x").0, id("y").0);
        let h1 = HostId::from_slice(&h1[..32]).unwrap();
        let h2 = HostId::from_slice(&h2[..32]).unwrap();
        let recs = vec![
            table_rec(
                id("old-but-held"),
                h1,
                Unlocked,
                Class::SharedProtectedRead,
                0,
                1,
            ),
            table_rec(
                id("old-but-held"),
                h2,
                Locked,
                Class::SharedProtectedRead,
                0,
                1,
            ),
            table_rec(id("newer"), h1, Unlocked, Class::Exclusive, 0, 50),
            table_rec(id("older"), h1, Unlocked, Class::Exclusive, 0, 10),
            table_rec(id("keep"), h1, Unlocked, Class::Exclusive, 0, 0),
        ];
        assert_eq!(cleanup_victim(&recs, &id("keep")), Some(id("older")));
        assert_eq!(cleanup_victim(&recs[..2], &id("keep")), None);
    }

    #[test]
    fn victim_prefers_a_mutex_without_lvb() {
        let h = HostId::default();
        let recs = vec![
            table_rec(id("old-with-lvb"), h, Unlocked, Class::Exclusive, 42, 1),
            table_rec(id("new-no-lvb"), h, Unlocked, Class::Exclusive, 0, 90),
            table_rec(id("newer-no-lvb"), h, Unlocked, Class::Exclusive, 0, 95),
            table_rec(id("held"), h, Locked, Class::Exclusive, 0, 0),
        ];
        // Nothing is lost by destroying a mutex whose LVB is 0: the older of those.
        assert_eq!(cleanup_victim(&recs, &id("x")), Some(id("new-no-lvb")));
        // Only mutexes with an LVB left: the least recently modified.
        let with = vec![
            table_rec(id("a"), h, Unlocked, Class::Exclusive, 7, 30),
            table_rec(id("b"), h, Unlocked, Class::Exclusive, 9, 20),
        ];
        assert_eq!(cleanup_victim(&with, &id("x")), Some(id("b")));
    }

    #[test]
    fn cleanup_reads_then_destroys() {
        let st = LockState::new(spec(1), 1);
        let mut c = TableCleanup::new();
        assert_eq!(
            c.first_request(),
            Request::ReadTable {
                records: MAX_TABLE_RECORDS
            }
        );
        let recs = vec![table_rec(
            id("gone"),
            HostId::default(),
            Unlocked,
            Class::Exclusive,
            0,
            3,
        )];
        let step = c.on_reply(at(1), &st, &data(table_data(&recs, 1)));
        match step {
            CleanupStep::Send(Request::Mutex { op, record }) => {
                assert_eq!(op, MutexOp::Destroy);
                assert_eq!(record.lock_id, id("gone"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(c.on_reply(at(2), &st, &ok()), CleanupStep::Done);
        let mut c = TableCleanup::new();
        assert_eq!(
            c.on_reply(at(1), &st, &data(Vec::new())),
            CleanupStep::Failed(LockError::TableFull)
        );
    }
}
