//! Drive transports: how one IDM command reaches one drive and its answer comes back.
//!
//! Every transport (sg v3, bsg `uring_cmd` and NVMe admin `uring_cmd` here; the
//! simulator's in-process and socket transports in `idm-sim`) sits behind the one
//! [`Transport`] trait, which is shaped for a reactor that owns a single io_uring:
//!
//! 1. the reactor hands a [`Request`] with its own `tag` to [`Transport::enqueue`];
//! 2. once per loop turn the reactor calls [`Transport::prepare`] with an [`SqSink`]:
//!    the transport pushes the submission entries for everything it has queued (as
//!    many as fit; the rest stays queued for the next turn). Every entry's
//!    `user_data` is `sink.token(local)`, so the reactor can route its completion back;
//! 3. the reactor hands each completion whose token belongs to this transport to
//!    [`Transport::on_cqe`], which reports finished commands as [`Completion`]s;
//! 4. [`Transport::expire`] fails commands whose timeout passed with
//!    [`DriveError::Timeout`], and [`Transport::next_deadline`] tells the reactor
//!    when to wake for that.
//!
//! A transport never blocks, never owns a ring, and never allocates per command on
//! its hot path (record buffers are reused); read commands return their data in a
//! `Vec` (reads are not on the hot path).

pub mod bsg;
pub mod deadlines;
pub mod nvme;
mod pool;
pub mod sg;

use std::time::Instant;

use io_uring::squeue;

use crate::codec::{
    mutex_read_cdb, mutex_write_cdb, table_count_cdb, version_cdb, CommandKind, DriveError,
    MutexOp, Record, RECORD_LEN, VERSION_PAGE_LEN,
};

/// One IDM command for one drive.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Request {
    /// A mutex write: `op` with this record as data-out.
    Mutex {
        /// The mutex op.
        op: MutexOp,
        /// The record to send.
        record: Record,
    },
    /// Read `records` records of the mutex table.
    ReadTable {
        /// How many 512-byte records to ask for.
        records: u32,
    },
    /// Read the table's record count.
    ReadCount,
    /// Read the IDM version page.
    Version,
}

impl Request {
    /// The kind of command, the context its answer is decoded in.
    pub fn kind(&self) -> CommandKind {
        match self {
            Request::Mutex { op, .. } => CommandKind::Mutex(*op),
            Request::ReadTable { .. } => CommandKind::ReadTable,
            Request::ReadCount => CommandKind::ReadCount,
            Request::Version => CommandKind::Inquiry,
        }
    }

    /// The SCSI CDB for this request, and its length (16, or 6 for INQUIRY).
    pub fn scsi_cdb(&self) -> ([u8; 16], usize) {
        match self {
            Request::Mutex { op, .. } => (mutex_write_cdb(*op), 16),
            Request::ReadTable { records } => (mutex_read_cdb(*records), 16),
            Request::ReadCount => (table_count_cdb(), 16),
            Request::Version => {
                let mut c = [0u8; 16];
                c[..6].copy_from_slice(&version_cdb());
                (c, 6)
            }
        }
    }

    /// Bytes of data-in this request expects (0 for writes).
    pub fn data_in_len(&self) -> usize {
        match self {
            Request::Mutex { .. } => 0,
            Request::ReadTable { records } => (*records as usize).saturating_mul(RECORD_LEN),
            Request::ReadCount => RECORD_LEN,
            Request::Version => VERSION_PAGE_LEN as usize,
        }
    }

    /// Writes the data-out of a mutex write into `buf`; `false` for reads (no data-out).
    pub fn encode_data_out(&self, buf: &mut [u8; RECORD_LEN]) -> bool {
        match self {
            Request::Mutex { record, .. } => {
                record.encode_into(buf);
                true
            }
            _ => false,
        }
    }
}

/// The answer to one [`Request`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Reply {
    /// The decoded answer: `Ok(())` when the drive did what was asked.
    pub result: Result<(), DriveError>,
    /// Data-in of a read (empty for writes and failures).
    pub data: Vec<u8>,
}

impl Reply {
    /// A failed reply with no data.
    pub fn err(e: DriveError) -> Reply {
        Reply {
            result: Err(e),
            data: Vec::new(),
        }
    }
}

/// A finished command: the caller's tag and the reply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Completion {
    /// The tag given to [`Transport::enqueue`].
    pub tag: u64,
    /// What the drive answered.
    pub reply: Reply,
}

/// Why a transport could not take a request now.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The transport's in-flight cap is reached; try again after a completion.
    #[error("transport queue full")]
    Full,
    /// The transport is closed (connection lost for good, device gone).
    #[error("transport closed: errno {0}")]
    Closed(i32),
}

/// Where a transport pushes its submission entries: the reactor's SQ.
pub trait SqSink {
    /// The `user_data` to put on an entry so its completion comes back to this
    /// transport's [`Transport::on_cqe`] with `local`. `local` must fit in 48 bits.
    fn token(&self, local: u64) -> u64;

    /// Pushes a 64-byte entry; `false` when the SQ is full (keep it for next turn).
    ///
    /// # Safety
    ///
    /// Every buffer, iovec and file descriptor the entry points at must stay valid
    /// and unmoved until the entry's last completion has been handed to
    /// [`Transport::on_cqe`] (the same contract as `io_uring::SubmissionQueue::push`).
    unsafe fn push(&mut self, entry: &squeue::Entry) -> bool;

    /// Pushes a 128-byte entry (`uring_cmd`); `false` when the SQ is full or the
    /// ring was not set up with SQE128 (see [`SqSink::supports_sqe128`]).
    ///
    /// # Safety
    ///
    /// As for [`SqSink::push`].
    unsafe fn push128(&mut self, entry: &squeue::Entry128) -> bool {
        let _ = entry;
        false
    }

    /// Whether this sink's ring takes 128-byte entries (and gives 32-byte CQEs).
    fn supports_sqe128(&self) -> bool {
        false
    }
}

/// One completion queue entry as a transport sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Cqe {
    /// The entry's result (negative errno, or the operation's value).
    pub res: i32,
    /// The entry's flags (`IORING_CQE_F_MORE` for multishot and so on).
    pub flags: u32,
    /// The extra 16 bytes of a 32-byte CQE (`uring_cmd` results); zero on a
    /// 16-byte-CQE ring.
    pub big: [u64; 2],
}

impl Cqe {
    /// Whether more completions will follow for the same entry (multishot).
    pub fn more(&self) -> bool {
        io_uring::cqueue::more(self.flags)
    }
}

/// One path to one drive, driven by a reactor's io_uring. See the module docs.
///
/// A transport must keep every buffer its pushed entries point at alive until
/// the entry's final completion (see [`SqSink::push`]); dropping a transport with
/// entries in flight is the ring owner's business (it cancels and reaps them
/// first, see [`crate::driver::Driver`]).
pub trait Transport {
    /// A human-readable name for logs and stats (the drive name or device node).
    fn name(&self) -> &str;

    /// Accepts a request, to be sent at the next [`Transport::prepare`]. The
    /// request is copied; `deadline` is when it fails with [`DriveError::Timeout`].
    fn enqueue(&mut self, tag: u64, req: &Request, deadline: Instant) -> Result<(), EnqueueError>;

    /// Pushes entries for queued work into `sink`, as many as fit.
    fn prepare(&mut self, sink: &mut dyn SqSink);

    /// Handles the completion of an entry this transport pushed (`local` is what it
    /// passed to [`SqSink::token`]); finished commands go to `done`.
    fn on_cqe(&mut self, local: u64, cqe: &Cqe, done: &mut dyn FnMut(Completion));

    /// Fails every command whose deadline is at or before `now`.
    fn expire(&mut self, now: Instant, done: &mut dyn FnMut(Completion));

    /// The earliest deadline of a command in flight or queued.
    fn next_deadline(&self) -> Option<Instant>;

    /// Commands accepted and not yet completed.
    fn in_flight(&self) -> usize;
}
