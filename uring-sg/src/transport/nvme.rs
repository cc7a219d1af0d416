//! NVMe admin passthrough over io_uring: IDM commands to an NVMe controller's
//! character device (`/dev/nvmeX`) as `IORING_OP_URING_CMD` entries with
//! `NVME_URING_CMD_ADMIN` (needs an SQE128/CQE32 ring, see
//! [`crate::driver::Driver::new_big`]).
//!
//! Mutex writes are admin opcode `0xC1` with the 512-byte record as data; table
//! and count reads are `0xC2` ([`NvmeAdminCmd`]). A completion's `res` is a
//! negative errno (transport failure) or the NVMe status: status code type in bits
//! 8..10, status code in bits 0..7 ([`crate::Condition::from_nvme_status`]).
//!
//! NVMe IDM drives have no INQUIRY version page. [`Request::Version`] is sent as
//! the record-count read (`0xC2`, group `0xFF`): it answers the question the
//! version read asks of a drive ("is this an IDM drive?"), and its data is the
//! 512-byte count block, not a version page (callers reading the version of an
//! NVMe drive take major 0 when it succeeds).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use io_uring::{opcode, types};
use nix::libc;

use super::pool::Pool;
use super::{Completion, Cqe, EnqueueError, Reply, Request, SqSink, Transport};
use crate::codec::{DriveError, NvmeAdminCmd, RECORD_LEN};
use crate::sys::nvme::{NvmeUringCmd, NVME_URING_CMD_ADMIN};

/// The admin command for a request.
pub fn admin_cmd(req: &Request) -> NvmeAdminCmd {
    match req {
        Request::Mutex { op, .. } => NvmeAdminCmd::mutex_write(*op),
        Request::ReadTable { records } => NvmeAdminCmd::mutex_read(*records),
        Request::ReadCount | Request::Version => NvmeAdminCmd::table_count(),
    }
}

/// The `nvme_uring_cmd` for `cmd` with its data at `addr`.
pub fn uring_cmd(cmd: &NvmeAdminCmd, addr: u64, timeout_ms: u32) -> NvmeUringCmd {
    NvmeUringCmd {
        opcode: cmd.opcode,
        nsid: cmd.nsid,
        addr,
        data_len: cmd.data_len,
        cdw10: cmd.cdw10,
        cdw12: cmd.cdw12,
        timeout_ms,
        ..NvmeUringCmd::default()
    }
}

/// Decodes a completion of a command of `kind`; the data of a successful read is
/// `data` (NVMe reports no residual).
pub fn decode_cqe(req_kind: crate::codec::CommandKind, res: i32, data: &[u8]) -> Reply {
    match DriveError::from_nvme(req_kind, res) {
        Ok(()) => Reply {
            result: Ok(()),
            data: data.to_vec(),
        },
        Err(e) => Reply::err(e),
    }
}

/// Per-command state: the command and whether it reads.
#[derive(Default)]
struct Cmd {
    cmd: Option<NvmeAdminCmd>,
    reads: bool,
}

/// IDM commands to one NVMe controller. See the module docs.
pub struct NvmeTransport {
    name: String,
    file: File,
    pool: Pool<Cmd>,
}

impl NvmeTransport {
    /// Opens `path` (`/dev/nvmeX`) with room for `depth` commands in flight.
    pub fn open(path: &Path, depth: usize) -> io::Result<NvmeTransport> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        Ok(NvmeTransport {
            name: path.display().to_string(),
            file,
            pool: Pool::new(depth.max(1), RECORD_LEN),
        })
    }
}

use std::os::unix::fs::OpenOptionsExt;

impl Transport for NvmeTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn enqueue(&mut self, tag: u64, req: &Request, deadline: Instant) -> Result<(), EnqueueError> {
        let cmd = admin_cmd(req);
        let len = cmd.data_len as usize;
        let i = self
            .pool
            .alloc(tag, req.kind(), deadline, len.max(RECORD_LEN))
            .ok_or(EnqueueError::Full)?;
        let Some(s) = self.pool.slot(i) else {
            return Err(EnqueueError::Full);
        };
        let mut reads = true;
        if let Some(out) = s.data.get_mut(..RECORD_LEN) {
            if let Ok(out) = <&mut [u8; RECORD_LEN]>::try_from(out) {
                reads = !req.encode_data_out(out);
            }
        }
        s.x = Cmd {
            cmd: Some(cmd),
            reads,
        };
        Ok(())
    }

    fn prepare(&mut self, sink: &mut dyn SqSink) {
        if !sink.supports_sqe128() {
            // Without 128-byte entries nothing can be sent; the commands time out.
            return;
        }
        let fd = types::Fd(self.file.as_raw_fd());
        while let Some(i) = self.pool.front() {
            let Some(s) = self.pool.slot(i) else {
                return;
            };
            let Some(cmd) = s.x.cmd else {
                self.pool.unalloc(i);
                continue;
            };
            let timeout = s
                .deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, u32::MAX as u128) as u32;
            let c = uring_cmd(&cmd, s.data.as_mut_ptr() as u64, timeout);
            let e = opcode::UringCmd80::new(fd, NVME_URING_CMD_ADMIN)
                .cmd(c.to_payload())
                .build()
                .user_data(sink.token(i as u64));
            // SAFETY: the data buffer lives in the slot, which is neither freed,
            // resized nor reused until this entry's completion is handled.
            if !unsafe { sink.push128(&e) } {
                return;
            }
            self.pool.sent_front();
        }
    }

    fn on_cqe(&mut self, local: u64, cqe: &Cqe, done: &mut dyn FnMut(Completion)) {
        let res = cqe.res;
        self.pool.complete(
            local as u32,
            |s| {
                let n = if s.x.reads {
                    s.x.cmd.map_or(0, |c| c.data_len as usize)
                } else {
                    0
                };
                decode_cqe(s.kind, res, &s.data[..n.min(s.data.len())])
            },
            done,
        );
    }

    fn expire(&mut self, now: Instant, done: &mut dyn FnMut(Completion)) {
        self.pool.expire(now, done);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pool.next_deadline()
    }

    fn in_flight(&self) -> usize {
        self.pool.in_flight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Class, CommandKind, HostId, LockId, MutexOp, Record};

    #[test]
    fn commands_for_each_request() {
        let rec = Record::new(
            LockId::default(),
            HostId::default(),
            Class::SharedProtectedRead,
        );
        let w = admin_cmd(&Request::Mutex {
            op: MutexOp::Unlock,
            record: rec,
        });
        assert_eq!(
            (w.opcode, w.data_len, w.op()),
            (0xC1, 512, Some(MutexOp::Unlock))
        );
        let c = uring_cmd(&w, 0x1000, 15000);
        assert_eq!(
            (c.opcode, c.addr, c.data_len, c.cdw10),
            (0xC1, 0x1000, 512, 128)
        );
        assert_eq!(c.cdw12, w.cdw12);
        let r = admin_cmd(&Request::ReadTable { records: 4 });
        assert_eq!((r.opcode, r.data_len), (0xC2, 2048));
        assert_eq!(admin_cmd(&Request::Version), NvmeAdminCmd::table_count());
    }

    #[test]
    fn decodes_nvme_status_and_errno() {
        let tl = CommandKind::Mutex(MutexOp::Trylock);
        // QEMU's answer to 0xC1: do-not-retry + invalid opcode.
        assert_eq!(
            decode_cqe(tl, 0x4001, &[]).result,
            Err(DriveError::InvalidOpcode)
        );
        assert_eq!(
            decode_cqe(tl, 0x1CA, &[]).result,
            Err(DriveError::HeldByOther)
        );
        assert_eq!(decode_cqe(tl, -19, &[]).result, Err(DriveError::Io(19)));
        let ok = decode_cqe(CommandKind::ReadCount, 0, &[1, 2]);
        assert_eq!((ok.result, ok.data), (Ok(()), vec![1, 2]));
    }

    /// On a plain ring nothing can be pushed: the command times out, it is never
    /// sent as a broken 64-byte entry.
    #[test]
    fn needs_a_big_ring() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nvme-fake");
        std::fs::write(&p, b"").unwrap();
        let mut d = crate::driver::Driver::new(8).unwrap();
        let i = d.add(Box::new(NvmeTransport::open(&p, 4).unwrap()));
        let r = d
            .call(i, &Request::ReadCount, std::time::Duration::from_millis(5))
            .unwrap();
        assert_eq!(r.result, Err(DriveError::Timeout));
    }

    /// On a big ring against a file that has no `uring_cmd`, the kernel's errno
    /// comes back as an I/O error.
    #[test]
    fn a_file_without_uring_cmd_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nvme-fake");
        std::fs::write(&p, b"").unwrap();
        let Ok(mut d) = crate::driver::Driver::new_big(8) else {
            eprintln!("skipped: this kernel has no SQE128 rings");
            return;
        };
        let i = d.add(Box::new(NvmeTransport::open(&p, 4).unwrap()));
        let r = d
            .call(i, &Request::ReadCount, std::time::Duration::from_secs(5))
            .unwrap();
        assert!(matches!(r.result, Err(DriveError::Io(_))), "{r:?}");
    }

    struct Recorder(Vec<(u32, u64)>);

    impl SqSink for Recorder {
        fn token(&self, local: u64) -> u64 {
            local
        }
        unsafe fn push(&mut self, _: &io_uring::squeue::Entry) -> bool {
            false
        }
        unsafe fn push128(&mut self, e: &io_uring::squeue::Entry128) -> bool {
            self.0.push((e.get_opcode(), e.get_user_data()));
            true
        }
        fn supports_sqe128(&self) -> bool {
            true
        }
    }

    /// One URING_CMD entry per command; a completion goes back to its tag, and
    /// the slot is free again after it.
    #[test]
    fn one_uring_cmd_per_command_and_completions_by_slot() {
        let mut t = NvmeTransport {
            name: "rec".into(),
            file: File::open("/dev/null").unwrap(),
            pool: Pool::new(2, RECORD_LEN),
        };
        let later = Instant::now() + std::time::Duration::from_secs(60);
        t.enqueue(10, &Request::ReadCount, later).unwrap();
        t.enqueue(11, &Request::ReadTable { records: 2 }, later)
            .unwrap();
        assert_eq!(
            t.enqueue(12, &Request::ReadCount, later),
            Err(EnqueueError::Full)
        );
        let mut r = Recorder(Vec::new());
        t.prepare(&mut r);
        assert_eq!(r.0.len(), 2);
        assert!(r.0.iter().all(|e| e.0 == opcode::UringCmd80::CODE as u32));
        let mut done = Vec::new();
        t.on_cqe(
            r.0[1].1,
            &Cqe {
                res: 0,
                ..Cqe::default()
            },
            &mut |c| done.push(c),
        );
        t.on_cqe(
            r.0[0].1,
            &Cqe {
                res: 0x4001,
                ..Cqe::default()
            },
            &mut |c| done.push(c),
        );
        assert_eq!((done[0].tag, done[0].reply.data.len()), (11, 1024));
        assert_eq!(done[1].tag, 10);
        assert_eq!(done[1].reply.result, Err(DriveError::InvalidOpcode));
        assert_eq!(t.in_flight(), 0);
        t.enqueue(12, &Request::ReadCount, later).unwrap();
    }
}
