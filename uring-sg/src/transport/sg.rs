//! sg v3 over io_uring: IDM commands to a SCSI generic node (`/dev/sgN`).
//!
//! The sg driver has no native io_uring support, so this transport uses the
//! driver's own asynchronous interface through plain io_uring file operations
//! (ARCHITECTURE.md "Performance model"):
//!
//! - the node is opened `O_RDWR | O_NONBLOCK` several times ([`SgTransport::open`]
//!   takes the count): the sg driver queues at most [`SG_MAX_QUEUE`] commands per
//!   open file, so commands are spread round-robin over the files, 16 slots each;
//! - commands are submitted by writing their 88-byte `sg_io_hdr`s (queue at tail,
//!   `pack_id` = slot index): one io_uring `WRITEV` per file and loop turn carries
//!   every header queued for that file, one iovec each (the driver takes one
//!   header per iovec; a short count means the rest were refused);
//! - one multishot `POLL_ADD(POLLIN)` per file says replies are ready;
//! - replies are reaped with one `READV` with one 88-byte iovec per possible
//!   reply (a plain `READ` of several headers fills only the first), matched to
//!   their slot by `pack_id`;
//! - every header, CDB, sense and data buffer lives in a slot allocated once and
//!   reused; a slot is free again only when both its `WRITEV` completion and its
//!   reply have come back, so the kernel never sees a reused buffer.
//!
//! A command whose deadline passes is reported as [`DriveError::Timeout`] at once;
//! its slot stays taken (the kernel still owns its buffers) until the driver
//! returns the reply, which is then dropped. The kernel's own timeout in the
//! header is the command's remaining time, so that happens soon after.
//!
//! [`sg_io`] is the synchronous path (the SG_IO ioctl) for one-off command-line use.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use nix::libc;

use super::{Completion, Cqe, EnqueueError, Reply, Request, SqSink, Transport};
use crate::codec::{CommandKind, DriveError, ScsiStatus, SenseBuf, RECORD_LEN};
use crate::sys::sg::{
    self as sys, SgIoHdr, DRIVER_SENSE, SG_DXFER_FROM_DEV, SG_DXFER_NONE, SG_DXFER_TO_DEV,
    SG_FLAG_Q_AT_TAIL, SG_IO_HDR_LEN, SG_MAX_QUEUE,
};

/// Sense bytes kept per command.
const SENSE_LEN: usize = SenseBuf::CAPACITY;
/// Data buffer each slot starts with (grown, while free, for bigger table reads).
const INITIAL_DATA_LEN: usize = 4096;
/// `local` kinds: which entry a completion belongs to (bits 32.. of `local`).
const KIND_WRITE: u64 = 1;
const KIND_POLL: u64 = 2;
const KIND_READ: u64 = 3;
/// `DID_TIME_OUT` host status.
const DID_TIME_OUT: u16 = 0x03;
/// An empty iovec.
const NULL_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// Where a slot's command is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SlotState {
    /// Unused.
    Free,
    /// Accepted; its header is not pushed yet.
    Queued,
    /// Header pushed in a `WRITEV`. `written`: its completion came back; `replied`: the reply
    /// was reaped; `abandoned`: the caller was already told (timeout).
    Sent {
        written: bool,
        replied: bool,
        abandoned: bool,
    },
}

/// One command's stable storage.
struct Slot {
    hdr: SgIoHdr,
    cdb: [u8; 16],
    sense: [u8; SENSE_LEN],
    data: Vec<u8>,
    tag: u64,
    kind: CommandKind,
    deadline: Instant,
    state: SlotState,
}

/// One open file of the node, with its reply area.
struct SgFile {
    file: File,
    poll_armed: bool,
    /// A poll error ended this file's use (its commands time out).
    dead: bool,
    read_in_flight: bool,
    read_wanted: bool,
    replies: Box<[SgIoHdr; SG_MAX_QUEUE]>,
    iovecs: Box<[libc::iovec; SG_MAX_QUEUE]>,
    free: Vec<u32>,
    /// Slots accepted for this file whose headers are not pushed yet.
    queued: VecDeque<u32>,
    /// The `WRITEV` in flight: its iovecs and the slots they carry.
    write_iovecs: Box<[libc::iovec; SG_MAX_QUEUE]>,
    writing: Vec<u32>,
}

/// IDM commands to one sg node over io_uring. See the module docs.
pub struct SgTransport {
    name: String,
    files: Vec<SgFile>,
    slots: Box<[Slot]>,
    next_file: usize,
    in_flight: usize,
}

// SAFETY: the raw pointers inside the headers and iovecs point only into this
// transport's own heap allocations (slots, reply areas), which move with it; no
// pointer is shared with another owner, so moving the transport to another thread
// is sound.
unsafe impl Send for SgTransport {}

impl SgTransport {
    /// Opens `path` (`/dev/sgN`) `files` times (at least once); up to
    /// `16 * files` commands can then be in flight.
    pub fn open(path: &Path, files: usize) -> io::Result<SgTransport> {
        let files = files.max(1);
        let mut fs = Vec::with_capacity(files);
        for _ in 0..files {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)?;
            fs.push(file);
        }
        Ok(Self::from_files(path.display().to_string(), fs))
    }

    /// A transport on files already opened `O_RDWR | O_NONBLOCK` on one sg node.
    pub fn from_files(name: String, files: Vec<File>) -> SgTransport {
        let n = files.len();
        let slots: Box<[Slot]> = (0..n * SG_MAX_QUEUE)
            .map(|_| Slot {
                hdr: SgIoHdr::default(),
                cdb: [0; 16],
                sense: [0; SENSE_LEN],
                data: vec![0; INITIAL_DATA_LEN],
                tag: 0,
                kind: CommandKind::ReadCount,
                deadline: Instant::now(),
                state: SlotState::Free,
            })
            .collect();
        let mut out = SgTransport {
            name,
            files: Vec::with_capacity(n),
            slots,
            next_file: 0,
            in_flight: 0,
        };
        for (i, file) in files.into_iter().enumerate() {
            let mut f = SgFile {
                file,
                poll_armed: false,
                dead: false,
                read_in_flight: false,
                read_wanted: false,
                replies: Box::new([SgIoHdr::default(); SG_MAX_QUEUE]),
                iovecs: Box::new([NULL_IOVEC; SG_MAX_QUEUE]),
                queued: VecDeque::with_capacity(SG_MAX_QUEUE),
                write_iovecs: Box::new([NULL_IOVEC; SG_MAX_QUEUE]),
                writing: Vec::with_capacity(SG_MAX_QUEUE),
                // Popped from the back: lowest slot first.
                free: (0..SG_MAX_QUEUE as u32)
                    .rev()
                    .map(|k| (i * SG_MAX_QUEUE) as u32 + k)
                    .collect(),
            };
            for (iov, r) in f.iovecs.iter_mut().zip(f.replies.iter_mut()) {
                iov.iov_base = (r as *mut SgIoHdr).cast();
                iov.iov_len = SG_IO_HDR_LEN;
            }
            out.files.push(f);
        }
        out
    }

    /// How many files the transport spreads commands over.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    fn file_of(slot: u32) -> usize {
        slot as usize / SG_MAX_QUEUE
    }

    /// Frees a slot whose `WRITE` and reply (or failed `WRITE`) are both done.
    fn release(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.state = SlotState::Free;
            if let Some(f) = self.files.get_mut(Self::file_of(slot)) {
                f.free.push(slot);
            }
        }
    }

    /// The `WRITEV` of `file` completed: the first `res / 88` headers were taken;
    /// the rest (all of them if `res` is an errno) were refused.
    fn on_write(&mut self, file: usize, res: i32, done: &mut dyn FnMut(Completion)) {
        let Some(f) = self.files.get_mut(file) else {
            return;
        };
        let writing = std::mem::take(&mut f.writing);
        let taken = if res < 0 {
            0
        } else {
            res as usize / SG_IO_HDR_LEN
        };
        let errno = if res < 0 {
            -res
        } else {
            crate::codec::answer::libc_errno::EIO
        };
        for (k, &slot) in writing.iter().enumerate() {
            self.on_header_written(slot, k < taken, errno, done);
        }
        // Keep the allocation for the next batch.
        let mut writing = writing;
        writing.clear();
        if let Some(f) = self.files.get_mut(file) {
            f.writing = writing;
        }
    }

    fn on_header_written(
        &mut self,
        slot: u32,
        taken: bool,
        errno: i32,
        done: &mut dyn FnMut(Completion),
    ) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let SlotState::Sent {
            replied, abandoned, ..
        } = s.state
        else {
            return;
        };
        if !taken {
            // The driver did not take the command: nothing of it stays in the kernel.
            let tag = s.tag;
            if !abandoned {
                self.in_flight -= 1;
                done(Completion {
                    tag,
                    reply: Reply::err(DriveError::Io(errno)),
                });
            }
            self.release(slot);
            return;
        }
        if replied {
            self.release(slot);
        } else {
            s.state = SlotState::Sent {
                written: true,
                replied,
                abandoned,
            };
        }
    }

    fn on_read(&mut self, file: usize, res: i32, done: &mut dyn FnMut(Completion)) {
        let Some(f) = self.files.get_mut(file) else {
            return;
        };
        f.read_in_flight = false;
        if res <= 0 {
            // -EAGAIN: nothing was ready after all; the next poll event reads again.
            return;
        }
        let n = (res as usize / SG_IO_HDR_LEN).min(SG_MAX_QUEUE);
        if n == SG_MAX_QUEUE {
            f.read_wanted = true;
        }
        for i in 0..n {
            let reply = self.files[file].replies[i];
            let Ok(slot) = u32::try_from(reply.pack_id) else {
                continue;
            };
            if Self::file_of(slot) != file {
                continue;
            }
            self.on_reply(slot, &reply, done);
        }
    }

    fn on_reply(&mut self, slot: u32, reply: &SgIoHdr, done: &mut dyn FnMut(Completion)) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let SlotState::Sent {
            written,
            replied: false,
            abandoned,
        } = s.state
        else {
            return;
        };
        if !abandoned {
            let sense_len = (reply.sb_len_wr as usize).min(SENSE_LEN);
            let result = decode_reply(s.kind, reply, &s.sense[..sense_len]);
            let data = match result {
                Ok(()) => {
                    let want = s.hdr.dxfer_len as usize;
                    let got = want.saturating_sub(reply.resid.max(0) as usize);
                    if s.hdr.dxfer_direction == SG_DXFER_FROM_DEV {
                        s.data[..got].to_vec()
                    } else {
                        Vec::new()
                    }
                }
                Err(_) => Vec::new(),
            };
            let tag = s.tag;
            self.in_flight -= 1;
            done(Completion {
                tag,
                reply: Reply { result, data },
            });
        }
        if written {
            self.release(slot);
        } else if let Some(s) = self.slots.get_mut(slot as usize) {
            s.state = SlotState::Sent {
                written,
                replied: true,
                abandoned: true,
            };
        }
    }
}

/// Fills a header (and the CDB, data-out) for `req` in caller-owned buffers.
/// Returns `false` if `data` is too small for the request.
fn fill_header(
    hdr: &mut SgIoHdr,
    cdb: &mut [u8; 16],
    sense: &mut [u8; SENSE_LEN],
    data: &mut [u8],
    req: &Request,
    timeout: Duration,
) -> bool {
    let (c, len) = req.scsi_cdb();
    *cdb = c;
    let mut h = SgIoHdr {
        cmd_len: len as u8,
        cmdp: cdb.as_ptr(),
        mx_sb_len: SENSE_LEN as u8,
        sbp: sense.as_mut_ptr(),
        timeout: timeout.as_millis().clamp(1, u32::MAX as u128) as u32,
        flags: SG_FLAG_Q_AT_TAIL,
        ..SgIoHdr::default()
    };
    let din = req.data_in_len();
    if din > 0 {
        if data.len() < din {
            return false;
        }
        h.dxfer_direction = SG_DXFER_FROM_DEV;
        h.dxfer_len = din as u32;
        h.dxferp = data.as_mut_ptr();
    } else if let Some(out) = data.get_mut(..RECORD_LEN) {
        let out: &mut [u8; RECORD_LEN] = match out.try_into() {
            Ok(o) => o,
            Err(_) => return false,
        };
        if req.encode_data_out(out) {
            h.dxfer_direction = SG_DXFER_TO_DEV;
            h.dxfer_len = RECORD_LEN as u32;
            h.dxferp = data.as_mut_ptr();
        } else {
            h.dxfer_direction = SG_DXFER_NONE;
        }
    } else {
        return false;
    }
    *hdr = h;
    true
}

/// Decodes the outcome fields of a returned `sg_io_hdr` for a command of `kind`:
/// host or driver errors are transport failures ([`DriveError::Io`]); otherwise
/// the SCSI status (or masked status) and sense decide.
pub fn decode_reply(kind: CommandKind, hdr: &SgIoHdr, sense: &[u8]) -> Result<(), DriveError> {
    if hdr.host_status != 0 {
        return Err(DriveError::Io(if hdr.host_status == DID_TIME_OUT {
            crate::codec::answer::libc_errno::ETIMEDOUT
        } else {
            crate::codec::answer::libc_errno::EIO
        }));
    }
    if hdr.driver_status & !DRIVER_SENSE != 0 {
        return Err(DriveError::Io(crate::codec::answer::libc_errno::EIO));
    }
    let status = if hdr.status != 0 {
        ScsiStatus(hdr.status)
    } else {
        ScsiStatus::from_masked(hdr.masked_status)
    };
    DriveError::from_scsi(kind, status, sense)
}

impl Transport for SgTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn enqueue(&mut self, tag: u64, req: &Request, deadline: Instant) -> Result<(), EnqueueError> {
        let n = self.files.len();
        let pick = (0..n)
            .map(|i| (self.next_file + i) % n)
            .find(|&i| !self.files[i].dead && !self.files[i].free.is_empty());
        let Some(fi) = pick else {
            return if self.files.iter().all(|f| f.dead) {
                Err(EnqueueError::Closed(crate::codec::answer::libc_errno::EIO))
            } else {
                Err(EnqueueError::Full)
            };
        };
        self.next_file = (fi + 1) % n;
        let Some(slot) = self.files[fi].free.pop() else {
            return Err(EnqueueError::Full);
        };
        let s = &mut self.slots[slot as usize];
        let need = req.data_in_len().max(RECORD_LEN);
        if s.data.len() < need {
            s.data.resize(need, 0);
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let Slot {
            hdr,
            cdb,
            sense,
            data,
            ..
        } = s;
        if !fill_header(hdr, cdb, sense, data, req, timeout) {
            self.files[fi].free.push(slot);
            return Err(EnqueueError::Full);
        }
        s.hdr.pack_id = slot as i32;
        s.tag = tag;
        s.kind = req.kind();
        s.deadline = deadline;
        s.state = SlotState::Queued;
        self.files[fi].queued.push_back(slot);
        self.in_flight += 1;
        Ok(())
    }

    fn prepare(&mut self, sink: &mut dyn SqSink) {
        for (i, f) in self.files.iter_mut().enumerate() {
            if f.dead {
                continue;
            }
            let fd = types::Fd(f.file.as_raw_fd());
            if !f.poll_armed {
                let e = opcode::PollAdd::new(fd, libc::POLLIN as u32)
                    .multi(true)
                    .build()
                    .user_data(sink.token((KIND_POLL << 32) | i as u64));
                // SAFETY: a poll entry points at no memory; the fd lives as long
                // as the transport, which the ring owner drains before dropping.
                if !unsafe { sink.push(&e) } {
                    return;
                }
                f.poll_armed = true;
            }
            if f.read_wanted && !f.read_in_flight {
                let e = opcode::Readv::new(fd, f.iovecs.as_ptr(), SG_MAX_QUEUE as u32)
                    .build()
                    .user_data(sink.token((KIND_READ << 32) | i as u64));
                // SAFETY: the iovecs and the reply headers they point at are boxed
                // in this file's entry and never freed or moved while the transport
                // lives; no second read of this file is pushed until this one
                // completes (`read_in_flight`).
                if !unsafe { sink.push(&e) } {
                    return;
                }
                f.read_in_flight = true;
                f.read_wanted = false;
            }
        }
        for (i, f) in self.files.iter_mut().enumerate() {
            if f.dead || f.queued.is_empty() || !f.writing.is_empty() {
                continue;
            }
            for (k, &slot) in f.queued.iter().enumerate().take(SG_MAX_QUEUE) {
                f.write_iovecs[k] = libc::iovec {
                    iov_base: (&mut self.slots[slot as usize].hdr as *mut SgIoHdr).cast(),
                    iov_len: SG_IO_HDR_LEN,
                };
            }
            let n = f.queued.len().min(SG_MAX_QUEUE);
            let e = opcode::Writev::new(
                types::Fd(f.file.as_raw_fd()),
                f.write_iovecs.as_ptr(),
                n as u32,
            )
            .build()
            .user_data(sink.token((KIND_WRITE << 32) | i as u64));
            // SAFETY: the iovecs are boxed in this file's entry and not rewritten
            // until this entry completes (`writing` is non-empty until then); the
            // headers they point at, and the CDB, sense and data buffers those
            // point at, live in slots that are not reused (nor their data resized)
            // until both this write's completion and the command's reply are in.
            if !unsafe { sink.push(&e) } {
                return;
            }
            for _ in 0..n {
                let Some(slot) = f.queued.pop_front() else {
                    break;
                };
                self.slots[slot as usize].state = SlotState::Sent {
                    written: false,
                    replied: false,
                    abandoned: false,
                };
                f.writing.push(slot);
            }
        }
    }

    fn on_cqe(&mut self, local: u64, cqe: &Cqe, done: &mut dyn FnMut(Completion)) {
        let index = (local & 0xFFFF_FFFF) as usize;
        match local >> 32 {
            KIND_WRITE => self.on_write(index, cqe.res, done),
            KIND_READ => self.on_read(index, cqe.res, done),
            KIND_POLL => {
                let Some(f) = self.files.get_mut(index) else {
                    return;
                };
                if !cqe.more() {
                    f.poll_armed = false;
                }
                if cqe.res < 0 {
                    if cqe.res != -libc::ECANCELED {
                        f.dead = true;
                    }
                } else {
                    f.read_wanted = true;
                }
            }
            _ => {}
        }
    }

    fn expire(&mut self, now: Instant, done: &mut dyn FnMut(Completion)) {
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            if s.deadline > now {
                continue;
            }
            match s.state {
                SlotState::Queued => {
                    let tag = s.tag;
                    if let Some(f) = self.files.get_mut(Self::file_of(i as u32)) {
                        f.queued.retain(|&q| q as usize != i);
                    }
                    self.in_flight -= 1;
                    self.release(i as u32);
                    done(Completion {
                        tag,
                        reply: Reply::err(DriveError::Timeout),
                    });
                }
                SlotState::Sent {
                    written,
                    replied: false,
                    abandoned: false,
                } => {
                    s.state = SlotState::Sent {
                        written,
                        replied: false,
                        abandoned: true,
                    };
                    let tag = s.tag;
                    self.in_flight -= 1;
                    done(Completion {
                        tag,
                        reply: Reply::err(DriveError::Timeout),
                    });
                }
                _ => {}
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    SlotState::Queued
                        | SlotState::Sent {
                            replied: false,
                            abandoned: false,
                            ..
                        }
                )
            })
            .map(|s| s.deadline)
            .min()
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Runs `req` synchronously with the SG_IO ioctl (v3 header) on an sg node (a
/// SCSI disk's block node takes it too; bsg nodes want the v4 header and do
/// not): the path for one-off command-line use. Blocks the calling thread.
pub fn sg_io(fd: BorrowedFd<'_>, req: &Request, timeout: Duration) -> Reply {
    let mut hdr = SgIoHdr::default();
    let mut cdb = [0u8; 16];
    let mut sense = [0u8; SENSE_LEN];
    let mut data = vec![0u8; req.data_in_len().max(RECORD_LEN)];
    if !fill_header(&mut hdr, &mut cdb, &mut sense, &mut data, req, timeout) {
        return Reply::err(DriveError::Malformed);
    }
    // SAFETY: the header points at `cdb`, `sense` and `data`, which live on this
    // frame for the whole (blocking) call and have the lengths the header gives.
    match unsafe { sys::sg_io(fd.as_fd().as_raw_fd(), &mut hdr) } {
        Err(e) => Reply::err(DriveError::Io(e as i32)),
        Ok(_) => {
            let sense_len = (hdr.sb_len_wr as usize).min(SENSE_LEN);
            let result = decode_reply(req.kind(), &hdr, &sense[..sense_len]);
            let mut out = Vec::new();
            if result.is_ok() && hdr.dxfer_direction == SG_DXFER_FROM_DEV {
                let got = (hdr.dxfer_len as usize).saturating_sub(hdr.resid.max(0) as usize);
                data.truncate(got);
                out = data;
            }
            Reply { result, data: out }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Class, HostId, LockId, MutexOp, Record, Sense, SenseFormat};

    fn reply(status: u8, host: u16, driver: u16) -> SgIoHdr {
        SgIoHdr {
            status,
            masked_status: status >> 1,
            host_status: host,
            driver_status: driver,
            ..SgIoHdr::default()
        }
    }

    #[test]
    fn decodes_status_sense_and_transport_errors() {
        let inv = Sense::new(5, 0x20, 0).to_buf(SenseFormat::Fixed);
        assert_eq!(
            decode_reply(
                CommandKind::Inquiry,
                &reply(2, 0, DRIVER_SENSE),
                inv.as_slice()
            ),
            Err(DriveError::InvalidOpcode)
        );
        assert_eq!(
            decode_reply(CommandKind::Inquiry, &reply(0, 0, 0), &[]),
            Ok(())
        );
        let tl = CommandKind::Mutex(MutexOp::Trylock);
        assert_eq!(
            decode_reply(tl, &reply(0x18, 0, 0), &[]),
            Err(DriveError::HeldByOther)
        );
        // Only masked_status set (old drivers).
        let mut h = reply(0, 0, 0);
        h.masked_status = 0x04;
        assert_eq!(decode_reply(tl, &h, &[]), Err(DriveError::Busy));
        assert_eq!(
            decode_reply(tl, &reply(0, DID_TIME_OUT, 0), &[]),
            Err(DriveError::Io(110))
        );
        assert_eq!(
            decode_reply(tl, &reply(0, 0x07, 0), &[]),
            Err(DriveError::Io(5))
        );
        assert_eq!(
            decode_reply(tl, &reply(0, 0, 0x06), &[]),
            Err(DriveError::Io(5))
        );
    }

    #[test]
    fn headers_for_each_request() {
        let mut hdr = SgIoHdr::default();
        let mut cdb = [0u8; 16];
        let mut sense = [0u8; SENSE_LEN];
        let mut data = vec![0u8; 4096];
        let rec = Record::new(LockId::default(), HostId::default(), Class::Exclusive);
        let w = Request::Mutex {
            op: MutexOp::Trylock,
            record: rec,
        };
        let t = Duration::from_secs(15);
        assert!(fill_header(
            &mut hdr, &mut cdb, &mut sense, &mut data, &w, t
        ));
        assert_eq!(hdr.dxfer_direction, SG_DXFER_TO_DEV);
        assert_eq!(hdr.dxfer_len, 512);
        assert_eq!(hdr.cmd_len, 16);
        assert_eq!(cdb[0], 0xF0);
        assert_eq!(hdr.timeout, 15000);
        assert_eq!(hdr.flags, SG_FLAG_Q_AT_TAIL);
        assert_eq!(&data[..512], &rec.encode()[..]);
        assert!(fill_header(
            &mut hdr,
            &mut cdb,
            &mut sense,
            &mut data,
            &Request::Version,
            t
        ));
        assert_eq!(
            (hdr.dxfer_direction, hdr.dxfer_len, hdr.cmd_len),
            (SG_DXFER_FROM_DEV, 0x70, 6)
        );
        assert_eq!(&cdb[..6], &[0x12, 1, 0xC3, 0, 0x70, 0]);
        // A table read bigger than the buffer is refused, not overrun.
        assert!(!fill_header(
            &mut hdr,
            &mut cdb,
            &mut sense,
            &mut data,
            &Request::ReadTable { records: 9 },
            t
        ));
    }

    fn fifo(dir: &Path, name: &str) -> File {
        let p = dir.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::S_IRWXU).unwrap();
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p)
            .unwrap()
    }

    /// A FIFO hands every written header straight back, as the sg driver hands
    /// back a finished command (status GOOD): the write, poll, readv and pack_id
    /// matching run end to end across several files, beyond 16 per file.
    #[test]
    fn loopback_through_fifos_matches_replies_to_commands() {
        let dir = tempfile::tempdir().unwrap();
        let files = (0..3).map(|i| fifo(dir.path(), &format!("f{i}"))).collect();
        let t = SgTransport::from_files("loop".into(), files);
        let mut d = crate::driver::Driver::new(16).unwrap();
        let i = d.add(Box::new(t));
        for tag in 0..48 {
            d.enqueue(i, tag, &Request::ReadCount, Duration::from_secs(30))
                .unwrap();
        }
        assert_eq!(
            d.enqueue(i, 99, &Request::ReadCount, Duration::from_secs(30)),
            Err(EnqueueError::Full)
        );
        let mut tags = Vec::new();
        while tags.len() < 48 {
            d.turn(Duration::from_secs(5), &mut |_, c| {
                assert_eq!(c.reply.result, Ok(()));
                assert_eq!(c.reply.data.len(), RECORD_LEN);
                tags.push(c.tag);
            })
            .unwrap();
        }
        tags.sort();
        assert_eq!(tags, (0..48).collect::<Vec<_>>());
        assert_eq!(d.in_flight(), 0);
        // Every slot came back: a second round fits again.
        for tag in 0..48 {
            d.enqueue(i, tag, &Request::Version, Duration::from_secs(30))
                .unwrap();
        }
        let mut n = 0;
        while n < 48 {
            d.turn(Duration::from_secs(5), &mut |_, c| {
                assert_eq!(c.reply.data.len(), 0x70);
                n += 1;
            })
            .unwrap();
        }
    }

    /// `/dev/null` takes the writes and never answers: commands time out.
    #[test]
    fn commands_without_replies_time_out() {
        let t = SgTransport::open(Path::new("/dev/null"), 2).unwrap();
        assert_eq!(t.files(), 2);
        let mut d = crate::driver::Driver::new(64).unwrap();
        let i = d.add(Box::new(t));
        for tag in 0..32 {
            d.enqueue(i, tag, &Request::ReadCount, Duration::from_millis(20))
                .unwrap();
        }
        let mut timed_out = 0;
        while timed_out < 32 {
            d.turn(Duration::from_millis(50), &mut |_, c| {
                assert_eq!(c.reply.result, Err(DriveError::Timeout));
                timed_out += 1;
            })
            .unwrap();
        }
        assert_eq!(d.in_flight(), 0);
        // Timed-out commands keep their slots until the driver answers.
        assert_eq!(
            d.enqueue(i, 99, &Request::ReadCount, Duration::from_millis(20)),
            Err(EnqueueError::Full)
        );
    }

    /// Records what a transport pushes, without a ring.
    struct Recorder(Vec<(u8, u64)>);

    impl SqSink for Recorder {
        fn token(&self, local: u64) -> u64 {
            local
        }
        unsafe fn push(&mut self, e: &io_uring::squeue::Entry) -> bool {
            self.0.push((e.get_opcode() as u8, e.get_user_data()));
            true
        }
    }

    /// One turn: a multishot poll per file, and one WRITEV per file carrying every
    /// header queued for it (never one entry per command).
    #[test]
    fn one_writev_per_file_per_turn() {
        let f = |_| File::open("/dev/null").unwrap();
        let mut t = SgTransport::from_files("rec".into(), (0..3).map(f).collect());
        let later = Instant::now() + Duration::from_secs(60);
        for tag in 0..40 {
            t.enqueue(tag, &Request::ReadCount, later).unwrap();
        }
        let mut r = Recorder(Vec::new());
        t.prepare(&mut r);
        let polls = r.0.iter().filter(|e| e.0 == opcode::PollAdd::CODE).count();
        let writes: Vec<u64> =
            r.0.iter()
                .filter(|e| e.0 == opcode::Writev::CODE)
                .map(|e| e.1)
                .collect();
        assert_eq!(polls, 3);
        assert_eq!(writes.len(), 3);
        assert_eq!(r.0.len(), 6);
        // Nothing more until those complete; then 14 + 14 + 12 headers were taken.
        r.0.clear();
        t.prepare(&mut r);
        assert!(r.0.is_empty());
        let mut done = Vec::new();
        for (w, n) in writes.iter().zip([14, 13, 13]) {
            let cqe = Cqe {
                res: n * SG_IO_HDR_LEN as i32,
                ..Cqe::default()
            };
            t.on_cqe(*w, &cqe, &mut |c| done.push(c));
        }
        assert!(done.is_empty());
        assert_eq!(t.in_flight(), 40);
        // A refused batch fails its commands with the errno and frees their slots.
        for tag in 40..42 {
            t.enqueue(tag, &Request::ReadCount, later).unwrap();
        }
        t.prepare(&mut r);
        let ws: Vec<u64> =
            r.0.iter()
                .filter(|e| e.0 == opcode::Writev::CODE)
                .map(|e| e.1)
                .collect();
        assert_eq!(ws.len(), 2, "the two commands went to two files");
        for w in ws {
            t.on_cqe(
                w,
                &Cqe {
                    res: -16,
                    ..Cqe::default()
                },
                &mut |c| done.push(c),
            );
        }
        assert_eq!(done.len(), 2);
        assert!(done
            .iter()
            .all(|c| c.reply.result == Err(DriveError::Io(16))));
        assert_eq!(t.in_flight(), 40);
    }
}
