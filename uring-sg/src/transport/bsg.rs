//! bsg `uring_cmd` (Linux 7.1+): IDM commands to a SCSI device's block SCSI
//! generic node (`/dev/bsg/H:C:T:L`) as `IORING_OP_URING_CMD` entries carrying a
//! [`BsgUringCmd`] (needs an SQE128/CQE32 ring).
//!
//! Unlike sg, nothing is written or read back: one entry per command, and the
//! SCSI outcome comes in the big CQE: `res` is 0 or a negative errno, the first
//! extra word (`res2`) packs device, driver and host status, the sense length
//! and the residual ([`BsgRes2`]). Sense bytes land in the slot's sense buffer.
//!
//! This path cannot be exercised on the project's test guest (Debian 6.1): the
//! kernel there has no `uring_cmd` on bsg and answers `-EOPNOTSUPP`-style errors,
//! so [`crate::caps::Capabilities::best_scsi_transport`] picks sg there. The
//! payload encoding and CQE decoding are unit-tested against the 7.1 uapi
//! layout (see [`crate::sys::bsg`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use io_uring::{opcode, types};
use nix::libc;

use super::pool::Pool;
use super::{Completion, Cqe, EnqueueError, Reply, Request, SqSink, Transport};
use crate::codec::answer::libc_errno;
use crate::codec::{CommandKind, DriveError, ScsiStatus, SenseBuf, RECORD_LEN};
use crate::sys::bsg::{BsgRes2, BsgUringCmd, BSG_PROTOCOL_SCSI, BSG_SUB_PROTOCOL_SCSI_CMD};

const SENSE_LEN: usize = SenseBuf::CAPACITY;
/// `DID_TIME_OUT`.
const DID_TIME_OUT: u8 = 0x03;
/// `DRIVER_SENSE`.
const DRIVER_SENSE: u8 = 0x08;

/// Per-command buffers the payload points at.
struct Bufs {
    cdb: [u8; 16],
    cdb_len: u32,
    sense: [u8; SENSE_LEN],
    din: u32,
    dout: u32,
}

impl Default for Bufs {
    fn default() -> Self {
        Bufs {
            cdb: [0; 16],
            cdb_len: 0,
            sense: [0; SENSE_LEN],
            din: 0,
            dout: 0,
        }
    }
}

/// The payload for a command whose CDB, sense and data buffers are at the given
/// addresses.
#[allow(clippy::too_many_arguments)] // one argument per kernel field; a struct would just rename them
pub fn payload(
    cdb: u64,
    cdb_len: u32,
    sense: u64,
    sense_len: u32,
    data: u64,
    din_len: u32,
    dout_len: u32,
    timeout_ms: u32,
) -> BsgUringCmd {
    BsgUringCmd {
        request: cdb,
        request_len: cdb_len,
        protocol: BSG_PROTOCOL_SCSI,
        subprotocol: BSG_SUB_PROTOCOL_SCSI_CMD,
        max_response_len: sense_len,
        response: sense,
        dout_xferp: if dout_len > 0 { data } else { 0 },
        dout_xfer_len: dout_len,
        din_xferp: if din_len > 0 { data } else { 0 },
        din_xfer_len: din_len,
        timeout_ms,
        ..BsgUringCmd::default()
    }
}

/// Decodes a bsg `uring_cmd` completion of a command of `kind`: `res` and `res2`
/// from the CQE, the slot's sense buffer and data-in buffer (`din` bytes asked).
pub fn decode_cqe(kind: CommandKind, res: i32, res2: u64, sense: &[u8], data: &[u8]) -> Reply {
    if res < 0 {
        return Reply::err(DriveError::Io(-res));
    }
    let r = BsgRes2::unpack(res2);
    if r.host_status != 0 {
        let errno = if r.host_status == DID_TIME_OUT {
            libc_errno::ETIMEDOUT
        } else {
            libc_errno::EIO
        };
        return Reply::err(DriveError::Io(errno));
    }
    if r.driver_status & !DRIVER_SENSE != 0 {
        return Reply::err(DriveError::Io(libc_errno::EIO));
    }
    let sense = &sense[..(r.sense_len as usize).min(sense.len())];
    match DriveError::from_scsi(kind, ScsiStatus(r.device_status), sense) {
        Ok(()) => {
            let got = data.len().saturating_sub(r.resid as usize);
            Reply {
                result: Ok(()),
                data: data[..got].to_vec(),
            }
        }
        Err(e) => Reply::err(e),
    }
}

/// IDM commands to one bsg node through `uring_cmd`. See the module docs.
pub struct BsgTransport {
    name: String,
    file: File,
    pool: Pool<Bufs>,
}

impl BsgTransport {
    /// Opens `path` (`/dev/bsg/H:C:T:L`) with room for `depth` commands in flight.
    pub fn open(path: &Path, depth: usize) -> io::Result<BsgTransport> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        Ok(BsgTransport {
            name: path.display().to_string(),
            file,
            pool: Pool::new(depth.max(1), RECORD_LEN),
        })
    }
}

impl Transport for BsgTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn enqueue(&mut self, tag: u64, req: &Request, deadline: Instant) -> Result<(), EnqueueError> {
        let din = req.data_in_len();
        let i = self
            .pool
            .alloc(tag, req.kind(), deadline, din.max(RECORD_LEN))
            .ok_or(EnqueueError::Full)?;
        let Some(s) = self.pool.slot(i) else {
            return Err(EnqueueError::Full);
        };
        let (cdb, cdb_len) = req.scsi_cdb();
        let mut dout = 0;
        if let Some(out) = s.data.get_mut(..RECORD_LEN) {
            if let Ok(out) = <&mut [u8; RECORD_LEN]>::try_from(out) {
                if req.encode_data_out(out) {
                    dout = RECORD_LEN as u32;
                }
            }
        }
        s.x = Bufs {
            cdb,
            cdb_len: cdb_len as u32,
            sense: [0; SENSE_LEN],
            din: din as u32,
            dout,
        };
        Ok(())
    }

    fn prepare(&mut self, sink: &mut dyn SqSink) {
        if !sink.supports_sqe128() {
            return;
        }
        let fd = types::Fd(self.file.as_raw_fd());
        while let Some(i) = self.pool.front() {
            let Some(s) = self.pool.slot(i) else {
                return;
            };
            let timeout = s
                .deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, u32::MAX as u128) as u32;
            let p = payload(
                s.x.cdb.as_ptr() as u64,
                s.x.cdb_len,
                s.x.sense.as_mut_ptr() as u64,
                SENSE_LEN as u32,
                s.data.as_mut_ptr() as u64,
                s.x.din,
                s.x.dout,
                timeout,
            );
            let e = opcode::UringCmd80::new(fd, 0)
                .cmd(p.to_payload())
                .build()
                .user_data(sink.token(i as u64));
            // SAFETY: the CDB, sense and data buffers live in the slot, which is
            // neither freed, resized nor reused until this entry's completion.
            if !unsafe { sink.push128(&e) } {
                return;
            }
            self.pool.sent_front();
        }
    }

    fn on_cqe(&mut self, local: u64, cqe: &Cqe, done: &mut dyn FnMut(Completion)) {
        let (res, res2) = (cqe.res, cqe.big[0]);
        self.pool.complete(
            local as u32,
            |s| {
                let din = (s.x.din as usize).min(s.data.len());
                decode_cqe(s.kind, res, res2, &s.x.sense, &s.data[..din])
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
    use crate::codec::{MutexOp, Sense, SenseFormat};

    #[test]
    fn payload_for_a_write_and_a_read() {
        let w = payload(0x10, 16, 0x20, 32, 0x30, 0, 512, 15000).to_payload();
        let u32_at = |p: &[u8; 80], o: usize| u32::from_ne_bytes(p[o..o + 4].try_into().unwrap());
        let u64_at = |p: &[u8; 80], o: usize| u64::from_ne_bytes(p[o..o + 8].try_into().unwrap());
        assert_eq!(u64_at(&w, 0), 0x10);
        assert_eq!(u32_at(&w, 8), 16);
        assert_eq!((u32_at(&w, 12), u32_at(&w, 16)), (0, 0));
        assert_eq!(u32_at(&w, 20), 32);
        assert_eq!(u64_at(&w, 24), 0x20);
        assert_eq!((u64_at(&w, 32), u32_at(&w, 40)), (0x30, 512));
        assert_eq!((u64_at(&w, 48), u32_at(&w, 56)), (0, 0));
        assert_eq!(u32_at(&w, 64), 15000);
        let r = payload(0x10, 6, 0x20, 32, 0x30, 0x70, 0, 1).to_payload();
        assert_eq!((u64_at(&r, 32), u32_at(&r, 40)), (0, 0));
        assert_eq!((u64_at(&r, 48), u32_at(&r, 56)), (0x30, 0x70));
    }

    #[test]
    fn decodes_the_big_cqe() {
        let inv = Sense::new(5, 0x20, 0).to_buf(SenseFormat::Fixed);
        let mut sense = [0u8; SENSE_LEN];
        sense[..18].copy_from_slice(inv.as_slice());
        let res2 = |dev, drv, host, slen, resid| {
            BsgRes2 {
                device_status: dev,
                driver_status: drv,
                host_status: host,
                sense_len: slen,
                resid,
            }
            .pack()
        };
        let tl = CommandKind::Mutex(MutexOp::Trylock);
        assert_eq!(
            decode_cqe(tl, 0, res2(2, 8, 0, 18, 0), &sense, &[]).result,
            Err(DriveError::InvalidOpcode)
        );
        assert_eq!(
            decode_cqe(tl, 0, res2(0x18, 0, 0, 0, 0), &sense, &[]).result,
            Err(DriveError::HeldByOther)
        );
        assert_eq!(
            decode_cqe(tl, -95, 0, &sense, &[]).result,
            Err(DriveError::Io(95))
        );
        assert_eq!(
            decode_cqe(tl, 0, res2(0, 0, 3, 0, 0), &sense, &[]).result,
            Err(DriveError::Io(110))
        );
        let data = [9u8; 0x70];
        let ok = decode_cqe(
            CommandKind::Inquiry,
            0,
            res2(0, 0, 0, 0, 0x10),
            &sense,
            &data,
        );
        assert_eq!((ok.result, ok.data.len()), (Ok(()), 0x60));
    }
}
