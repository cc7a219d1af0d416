//! The simulator transport: IDM commands as COMMAND frames over a Unix or TCP
//! socket to an `idm sim` server (see [`crate::frame`] for the bytes).
//!
//! One [`SimTransport`] is one connection for one (client, drive) pair: the
//! server's faults ("cut client X off drive Y") and the transport's own failure
//! (a lost connection fails only this drive's commands) both stay per drive,
//! and no demultiplexing between transports is needed. Setup is blocking
//! (connect, HELLO, ATTACH); after that everything goes through the ring:
//!
//! - [`Transport::enqueue`] appends a COMMAND frame to a reusable send buffer
//!   (no allocation in steady state) and files the command in a slab; the wire
//!   tag is `(generation << 32) | slot`, so a late reply for a slot that expired
//!   and was reused is recognised and dropped;
//! - [`Transport::prepare`] pushes at most one SEND (all pending frames at once)
//!   and at most one RECV; each buffer stays untouched until its completion;
//! - REPLY status + sense decode through the codec in the context of the
//!   command's kind; the simulator's transport-error status
//!   ([`crate::frame::STATUS_TRANSPORT_ERROR`]) becomes `Io(EIO)`;
//! - a lost connection (EOF, socket error, a malformed frame from the server)
//!   fails every command in flight with `Io(ECONNRESET)`, and later enqueues
//!   with [`EnqueueError::Closed`];
//! - [`Transport::expire`] fails overdue commands with `Timeout`.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::opcode;
use io_uring::types;
use slab::Slab;

use crate::frame::{self, CommandFrame, Frame, STATUS_TRANSPORT_ERROR};
use crate::{ListenAddr, SimError, Stream};
use uring_sg::codec::answer::libc_errno;
use uring_sg::codec::{CommandKind, Condition, DriveError, ScsiStatus, RECORD_LEN};
use uring_sg::transport::deadlines::Deadlines;
use uring_sg::transport::{Completion, Cqe, EnqueueError, Reply, Request, SqSink, Transport};

/// Local token of the RECV entry.
const LOCAL_RECV: u64 = 0;
/// Local token of the SEND entry.
const LOCAL_SEND: u64 = 1;
/// Commands one transport accepts before [`EnqueueError::Full`].
const MAX_IN_FLIGHT: usize = 1 << 16;
/// Initial receive buffer.
const RBUF_INITIAL: usize = 64 * 1024;
/// Timeout of the blocking handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A command sent and not answered yet.
struct Pending {
    tag: u64,
    wire: u64,
    kind: CommandKind,
}

/// A connection to one drive of a simulator. See the module docs.
pub struct SimTransport {
    name: String,
    fd: OwnedFd,
    drive: u32,
    pending: Slab<Pending>,
    /// Deadlines of `pending`, keyed by slot and wire tag.
    deadlines: Deadlines,
    generation: u32,
    /// Frames not yet handed to a SEND.
    out: Vec<u8>,
    /// The buffer of the SEND in flight (or of a short send to finish).
    sending: Vec<u8>,
    sent: usize,
    send_busy: bool,
    rbuf: Vec<u8>,
    rlen: usize,
    recv_busy: bool,
    /// Set once the connection is lost: the errno later enqueues report.
    closed: Option<i32>,
    /// Commands that failed before reaching the wire, reported at the next expire.
    failed: VecDeque<Completion>,
    record: [u8; RECORD_LEN],
}

impl SimTransport {
    /// Connects to the simulator at `addr` as `client_name` (the name faults match)
    /// and attaches to `drive_name`. Blocking.
    pub fn connect(
        addr: &ListenAddr,
        client_name: &str,
        drive_name: &str,
    ) -> Result<SimTransport, SimError> {
        let mut s = Stream::connect(addr)?;
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        s.hello(client_name)?;
        s.send(&Frame::Attach { drive: drive_name })?;
        let mut buf = Vec::new();
        let drive = s.recv(&mut buf, |f| match f {
            Frame::Attached { drive } => Ok(drive),
            Frame::Error { message } => Err(SimError::Remote(message.to_string())),
            other => Err(SimError::Protocol(format!(
                "expected ATTACHED, got frame type {:#04x}",
                other.kind()
            ))),
        })?;
        // The ring's receives must not inherit a socket timeout.
        s.set_read_timeout(None)?;
        Ok(SimTransport {
            name: drive_name.to_string(),
            fd: s.into_fd(),
            drive,
            pending: Slab::with_capacity(1024),
            deadlines: Deadlines::new(),
            generation: 0,
            out: Vec::with_capacity(RBUF_INITIAL),
            sending: Vec::with_capacity(RBUF_INITIAL),
            sent: 0,
            send_busy: false,
            rbuf: vec![0; RBUF_INITIAL],
            rlen: 0,
            recv_busy: false,
            closed: None,
            failed: VecDeque::new(),
            record: [0; RECORD_LEN],
        })
    }

    /// The drive id the server gave this drive.
    pub fn drive_id(&self) -> u32 {
        self.drive
    }

    /// Marks the connection lost and fails everything in flight.
    fn lose(&mut self, done: &mut dyn FnMut(Completion)) {
        if self.closed.is_none() {
            tracing::debug!(drive = %self.name, "simulator connection lost");
            self.closed = Some(libc_errno::ECONNRESET);
            // Completes the other entry in flight, if any.
            let _ =
                nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        for p in self.pending.drain() {
            done(Completion {
                tag: p.tag,
                reply: Reply::err(DriveError::Io(libc_errno::ECONNRESET)),
            });
        }
    }

    /// Parses every complete frame in the receive buffer; `false` if the server
    /// sent something malformed.
    fn parse(&mut self, done: &mut dyn FnMut(Completion)) -> bool {
        let mut at = 0;
        let mut ok = true;
        while at < self.rlen {
            match frame::decode(&self.rbuf[at..self.rlen]) {
                Ok(Some((Frame::Reply(r), n))) => {
                    at += n;
                    let slot = (r.tag & 0xFFFF_FFFF) as usize;
                    if self.pending.get(slot).is_none_or(|p| p.wire != r.tag) {
                        // Late reply of an expired command.
                        continue;
                    }
                    let p = self.pending.remove(slot);
                    let result = if r.status == STATUS_TRANSPORT_ERROR {
                        Err(DriveError::Io(libc_errno::EIO))
                    } else {
                        Condition::from_scsi(ScsiStatus(r.status), r.sense).into_result(p.kind)
                    };
                    let data = if result.is_ok() && !r.data.is_empty() {
                        r.data.to_vec()
                    } else {
                        Vec::new()
                    };
                    done(Completion {
                        tag: p.tag,
                        reply: Reply { result, data },
                    });
                }
                Ok(Some((other, n))) => {
                    at += n;
                    tracing::warn!(drive = %self.name, kind = other.kind(), "unexpected frame from simulator ignored");
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(drive = %self.name, error = %e, "malformed frame from simulator");
                    ok = false;
                    break;
                }
            }
        }
        self.rbuf.copy_within(at..self.rlen, 0);
        self.rlen -= at;
        ok
    }
}

impl Transport for SimTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn enqueue(&mut self, tag: u64, req: &Request, deadline: Instant) -> Result<(), EnqueueError> {
        if let Some(e) = self.closed {
            return Err(EnqueueError::Closed(e));
        }
        if self.pending.len() >= MAX_IN_FLIGHT {
            return Err(EnqueueError::Full);
        }
        let (cdb, cdb_len) = req.scsi_cdb();
        let data_out: &[u8] = if req.encode_data_out(&mut self.record) {
            &self.record
        } else {
            &[]
        };
        let slot = self.pending.vacant_key();
        self.generation = self.generation.wrapping_add(1);
        let wire = ((self.generation as u64) << 32) | slot as u64;
        let data_in_len = u32::try_from(req.data_in_len()).unwrap_or(u32::MAX);
        let c = CommandFrame {
            tag: wire,
            drive: self.drive,
            cdb: &cdb[..cdb_len],
            data_in_len,
            data_out,
        };
        if frame::encode_command(&mut self.out, &c).is_err() {
            // Too big for one frame (a read of more than 1 MiB): fail it, not the link.
            self.failed.push_back(Completion {
                tag,
                reply: Reply::err(DriveError::Io(libc_errno::EINVAL)),
            });
            return Ok(());
        }
        self.pending.insert(Pending {
            tag,
            wire,
            kind: req.kind(),
        });
        let pending = &self.pending;
        self.deadlines
            .push(deadline, slot as u64, wire, pending.len(), |k, w| {
                pending.get(k as usize).is_some_and(|p| p.wire == w)
            });
        Ok(())
    }

    fn prepare(&mut self, sink: &mut dyn SqSink) {
        if self.closed.is_some() {
            return;
        }
        let fd = types::Fd(self.fd.as_raw_fd());
        if !self.recv_busy {
            if self.rlen == self.rbuf.len() {
                let need = frame::frame_len(&self.rbuf[..self.rlen])
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                self.rbuf.resize(need.max(self.rbuf.len() * 2), 0);
            }
            let free = &mut self.rbuf[self.rlen..];
            let e = opcode::Recv::new(fd, free.as_mut_ptr(), free.len() as u32)
                .build()
                .user_data(sink.token(LOCAL_RECV));
            // SAFETY: rbuf is neither resized nor freed while the RECV is in flight
            // (resizing happens only here, with recv_busy false; the driver reaps
            // entries before dropping the transport).
            self.recv_busy = unsafe { sink.push(&e) };
        }
        if !self.send_busy {
            let (ptr, len, fresh) = if self.sent < self.sending.len() {
                let rest = &self.sending[self.sent..];
                (rest.as_ptr(), rest.len(), false)
            } else if !self.out.is_empty() {
                (self.out.as_ptr(), self.out.len(), true)
            } else {
                return;
            };
            let e = opcode::Send::new(fd, ptr, len as u32)
                .flags(nix::libc::MSG_NOSIGNAL)
                .build()
                .user_data(sink.token(LOCAL_SEND));
            // SAFETY: the bytes are in `sending` (or in `out`, swapped into
            // `sending` right below: swapping moves the Vec, not its heap buffer),
            // which is not written until this SEND completes.
            if unsafe { sink.push(&e) } {
                self.send_busy = true;
                if fresh {
                    std::mem::swap(&mut self.out, &mut self.sending);
                    self.out.clear();
                    self.sent = 0;
                }
            }
        }
    }

    fn on_cqe(&mut self, local: u64, cqe: &Cqe, done: &mut dyn FnMut(Completion)) {
        match local {
            LOCAL_RECV => {
                self.recv_busy = false;
                if self.closed.is_some() {
                    return;
                }
                if cqe.res <= 0 {
                    self.lose(done);
                    return;
                }
                self.rlen += cqe.res as usize;
                if !self.parse(done) {
                    self.lose(done);
                }
            }
            LOCAL_SEND => {
                self.send_busy = false;
                if cqe.res < 0 {
                    self.lose(done);
                    return;
                }
                self.sent += cqe.res as usize;
            }
            _ => {}
        }
    }

    fn expire(&mut self, now: Instant, done: &mut dyn FnMut(Completion)) {
        while let Some(c) = self.failed.pop_front() {
            done(c);
        }
        while let Some((slot, wire)) = self.deadlines.pop_due(now) {
            let slot = slot as usize;
            if self.pending.get(slot).is_some_and(|p| p.wire == wire) {
                let p = self.pending.remove(slot);
                done(Completion {
                    tag: p.tag,
                    reply: Reply::err(DriveError::Timeout),
                });
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        if !self.failed.is_empty() {
            return Some(Instant::now());
        }
        if self.pending.is_empty() {
            return None;
        }
        self.deadlines.next()
    }

    fn in_flight(&self) -> usize {
        self.pending.len() + self.failed.len()
    }
}
