//! The simulator server: one thread, one io_uring, every listener and connection.
//!
//! Each loop turn: send replies whose latency has passed and release held
//! commands of drives whose stall ended; arm one ACCEPT per listener and, per
//! connection, one RECV and (when output is pending) one SEND; then one
//! `io_uring_enter` that waits for a completion or until the earliest timer (the
//! wait timeout is the timer: no timer thread, no sleeps). The stop fd (an
//! eventfd or signalfd) is read through the ring too; when it becomes readable the
//! loop cancels everything in flight, reaps it, and returns.
//!
//! A connection whose peer sends a malformed frame (bad length, unknown type,
//! oversize, bad fields, a server-only frame, anything before HELLO) is shut down
//! with a `tracing` warning naming the reason; other connections are unaffected.
//! Replies still pending for a closed connection are discarded (each connection
//! slot carries a generation, so a reused slot never gets a stale reply).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};
use nix::sys::socket::{setsockopt, shutdown, sockopt, Shutdown};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use slab::Slab;

use super::faults::{FaultCmd, FaultState, Verdict};
use super::frame::{self, CommandFrame, Frame, ReplyFrame, STATUS_TRANSPORT_ERROR};
use super::latency::Latency;
use super::{
    ControlRequest, ControlResponse, DriveInfo, ListenAddr, SimConfig, SimError, SimStats,
    TableEntry,
};
use crate::codec::Record;
use crate::firmware::Firmware;

/// `user_data` layout: operation in the top 8 bits, index in the low 32.
const OP_SHIFT: u32 = 56;
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_STOP: u64 = 4;
const OP_CANCEL: u64 = 5;
/// Initial receive buffer per connection (grows to one whole frame when needed).
const RBUF_INITIAL: usize = 64 * 1024;
/// Ring size.
const RING_ENTRIES: u32 = 512;

fn ud(op: u64, index: usize) -> u64 {
    (op << OP_SHIFT) | (index as u64 & 0xFFFF_FFFF)
}

/// One simulated drive.
struct Drive {
    name: String,
    /// Shared with the iSCSI front end ([`super::iscsi`]), which serves the same
    /// drive; locked for the duration of one command.
    fw: Arc<Mutex<Firmware>>,
    latency: Latency,
    faults: FaultState,
    /// Commands held by a stall, in arrival order.
    held: VecDeque<Held>,
}

/// A command held by a stall.
struct Held {
    conn: usize,
    gen: u64,
    tag: u64,
    cdb: [u8; frame::MAX_CDB],
    cdb_len: u8,
    data_in_len: u32,
    data_out: Vec<u8>,
}

/// A reply waiting for its latency to pass.
struct Delayed {
    due: Instant,
    seq: u64,
    conn: usize,
    gen: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

struct Listener {
    fd: OwnedFd,
    addr: ListenAddr,
    tcp: bool,
    busy: bool,
    /// Unix socket file this server created (removed on drop).
    owns_path: Option<PathBuf>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(p) = &self.owns_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

struct Conn {
    fd: OwnedFd,
    gen: u64,
    client: Option<String>,
    rbuf: Vec<u8>,
    rlen: usize,
    /// Frames waiting to be sent.
    out: Vec<u8>,
    /// The buffer of the SEND in flight, and how much of it went already.
    sending: Vec<u8>,
    sent: usize,
    recv_busy: bool,
    send_busy: bool,
    closing: bool,
}

/// The simulator server. See the module docs.
pub struct SimServer {
    ring: IoUring,
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    drives: Vec<Drive>,
    timers: BinaryHeap<Reverse<Delayed>>,
    pool: Vec<Vec<u8>>,
    rng: SmallRng,
    start: Instant,
    next_gen: u64,
    next_seq: u64,
    in_flight: usize,
    data_in: Vec<u8>,
    stop_buf: Box<[u8; 128]>,
    stats: SimStats,
    /// Scratch lists reused every turn (no allocation per turn).
    cqes: Vec<(u64, i32)>,
    keys: Vec<usize>,
}

fn bind_one(addr: &ListenAddr) -> Result<Listener, SimError> {
    match addr {
        ListenAddr::Unix(path) => {
            // A socket file nobody listens on is a leftover of a dead server
            // (anything that is not a socket is left alone: bind then fails).
            let stale = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
                && UnixStream::connect(path).is_err();
            if stale {
                let _ = std::fs::remove_file(path);
            }
            let l = UnixListener::bind(path)?;
            Ok(Listener {
                fd: l.into(),
                addr: addr.clone(),
                tcp: false,
                busy: false,
                owns_path: Some(path.clone()),
            })
        }
        ListenAddr::Tcp(a) => {
            let l = TcpListener::bind(a)?;
            let real = l.local_addr()?;
            Ok(Listener {
                fd: l.into(),
                addr: ListenAddr::Tcp(real),
                tcp: true,
                busy: false,
                owns_path: None,
            })
        }
    }
}

impl SimServer {
    /// Builds the drives and binds every address (a stale Unix socket file with
    /// no listener behind it is replaced).
    pub fn bind(cfg: SimConfig, addrs: &[ListenAddr]) -> Result<SimServer, SimError> {
        if cfg.drives.is_empty() {
            return Err(SimError::Config("no drives".into()));
        }
        if addrs.is_empty() {
            return Err(SimError::Config("no listen address".into()));
        }
        for (i, n) in cfg.drives.iter().enumerate() {
            if n.is_empty() || cfg.drives[..i].contains(n) {
                return Err(SimError::Config(format!(
                    "empty or duplicate drive name `{n}`"
                )));
            }
        }
        let mut listeners = Vec::new();
        for a in addrs {
            listeners.push(bind_one(a)?);
        }
        let drives = cfg
            .drives
            .iter()
            .enumerate()
            .map(|(i, name)| Drive {
                name: name.clone(),
                fw: Arc::new(Mutex::new(Firmware::new(cfg.firmware))),
                latency: cfg.latency_of(i),
                faults: FaultState::default(),
                held: VecDeque::new(),
            })
            .collect();
        Ok(SimServer {
            ring: IoUring::new(RING_ENTRIES)?,
            listeners,
            conns: Slab::new(),
            drives,
            timers: BinaryHeap::new(),
            pool: Vec::new(),
            rng: SmallRng::seed_from_u64(cfg.seed),
            start: Instant::now(),
            next_gen: 0,
            next_seq: 0,
            in_flight: 0,
            data_in: Vec::new(),
            stop_buf: Box::new([0; 128]),
            stats: SimStats {
                commands: 0,
                replies: 0,
                connections: 0,
                cpu_ns: 0,
            },
            cqes: Vec::new(),
            keys: Vec::new(),
        })
    }

    /// The addresses listened on, with TCP port 0 replaced by the bound port.
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        self.listeners.iter().map(|l| l.addr.clone()).collect()
    }

    /// The drives' firmware and clock, for another front end serving the same
    /// drives (the iSCSI target, [`super::iscsi`]): commands through either see one
    /// table per drive and one drive clock.
    pub fn shared_drives(&self) -> SharedDrives {
        SharedDrives {
            start: self.start,
            drives: self
                .drives
                .iter()
                .map(|d| SharedDrive {
                    name: d.name.clone(),
                    fw: Arc::clone(&d.fw),
                })
                .collect(),
        }
    }

    /// Drive time: ms since the server was bound.
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Serves until `stop` becomes readable (an eventfd written to, a signalfd
    /// with a signal pending, ...). Returns after every operation in the ring
    /// has been cancelled and reaped; connections stay open.
    pub fn run_until(&mut self, stop: BorrowedFd<'_>) -> Result<(), SimError> {
        let e = opcode::Read::new(
            types::Fd(stop.as_raw_fd()),
            self.stop_buf.as_mut_ptr(),
            self.stop_buf.len() as u32,
        )
        .build()
        .user_data(ud(OP_STOP, 0));
        // SAFETY: stop_buf is boxed in self and outlives the read: this function
        // cancels and reaps every entry before returning.
        unsafe { self.push(&e)? };
        let r = self.serve();
        let drained = self.drain();
        r.and(drained)
    }

    fn serve(&mut self) -> Result<(), SimError> {
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            self.release_stalls();
            self.arm()?;
            let wait = self.next_wake().map(|t| t.saturating_duration_since(now));
            self.enter(wait)?;
            if self.reap()? {
                return Ok(());
            }
        }
    }

    /// Cancels everything in flight and reaps until nothing is left.
    fn drain(&mut self) -> Result<(), SimError> {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(ud(OP_CANCEL, 0));
        // SAFETY: a cancel entry points at no memory.
        unsafe { self.push(&e)? };
        while self.in_flight > 0 {
            self.enter(None)?;
            while let Some(c) = self.ring.completion().next() {
                self.in_flight = self.in_flight.saturating_sub(1);
                let op = c.user_data() >> OP_SHIFT;
                let i = (c.user_data() & 0xFFFF_FFFF) as usize;
                match op {
                    OP_ACCEPT => {
                        if c.result() >= 0 {
                            // SAFETY: a successful accept returns a new fd we own.
                            drop(unsafe { OwnedFd::from_raw_fd(c.result()) });
                        }
                        if let Some(l) = self.listeners.get_mut(i) {
                            l.busy = false;
                        }
                    }
                    OP_RECV => {
                        if let Some(cn) = self.conns.get_mut(i) {
                            cn.recv_busy = false;
                            if c.result() > 0 {
                                cn.rlen += c.result() as usize;
                            }
                        }
                    }
                    OP_SEND => {
                        if let Some(cn) = self.conns.get_mut(i) {
                            cn.send_busy = false;
                            if c.result() > 0 {
                                cn.sent += c.result() as usize;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Pushes one entry, submitting first if the SQ is full.
    ///
    /// # Safety
    ///
    /// Everything the entry points at stays valid until its completion is reaped.
    unsafe fn push(&mut self, e: &squeue::Entry) -> Result<(), SimError> {
        // SAFETY: forwarded from the caller.
        if unsafe { self.ring.submission().push(e) }.is_err() {
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(e) }
                .map_err(|_| SimError::Io(io::Error::other("submission queue full")))?;
        }
        self.in_flight += 1;
        Ok(())
    }

    fn enter(&mut self, wait: Option<Duration>) -> Result<(), SimError> {
        let r = match wait {
            Some(w) => {
                let ts = types::Timespec::from(w);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(62 | 4 | 16)) => Ok(()), // ETIME, EINTR, EBUSY
            Err(e) => Err(e.into()),
        }
    }

    /// The earliest timer: a delayed reply or the end of a stall.
    fn next_wake(&self) -> Option<Instant> {
        let t = self.timers.peek().map(|Reverse(d)| d.due);
        let s = self
            .drives
            .iter()
            .filter(|d| !d.held.is_empty())
            .filter_map(|d| d.faults.stall_until_ms)
            .min()
            .map(|ms| self.start + Duration::from_millis(ms));
        match (t, s) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while self.timers.peek().is_some_and(|Reverse(d)| d.due <= now) {
            let Some(Reverse(mut d)) = self.timers.pop() else {
                break;
            };
            if let Some(c) = self.conns.get_mut(d.conn) {
                if c.gen == d.gen && !c.closing {
                    c.out.extend_from_slice(&d.bytes);
                    self.stats.replies += 1;
                }
            }
            d.bytes.clear();
            self.pool.push(d.bytes);
        }
    }

    fn release_stalls(&mut self) {
        let now_ms = self.now_ms();
        for di in 0..self.drives.len() {
            if self.drives[di].held.is_empty() || self.drives[di].faults.stalled(now_ms) {
                continue;
            }
            let held = std::mem::take(&mut self.drives[di].held);
            for h in held {
                let Some(c) = self.conns.get(h.conn) else {
                    continue;
                };
                if c.gen != h.gen || c.closing {
                    continue;
                }
                let cmd = CommandFrame {
                    tag: h.tag,
                    drive: di as u32,
                    cdb: &h.cdb[..h.cdb_len as usize],
                    data_in_len: h.data_in_len,
                    data_out: &h.data_out,
                };
                self.on_command(h.conn, &cmd);
            }
        }
    }

    /// Arms accepts, receives and sends; frees closed connections.
    fn arm(&mut self) -> Result<(), SimError> {
        for i in 0..self.listeners.len() {
            if !self.listeners[i].busy {
                let e = opcode::Accept::new(
                    types::Fd(self.listeners[i].fd.as_raw_fd()),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
                .flags(nix::libc::SOCK_CLOEXEC)
                .build()
                .user_data(ud(OP_ACCEPT, i));
                // SAFETY: no buffers; the listener fd lives as long as self.
                unsafe { self.push(&e)? };
                self.listeners[i].busy = true;
            }
        }
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        keys.extend(self.conns.iter().map(|(k, _)| k));
        let mut dead = 0;
        for ki in 0..keys.len() {
            let k = keys[ki];
            let Some(c) = self.conns.get_mut(k) else {
                continue;
            };
            if c.closing {
                if !c.recv_busy && !c.send_busy {
                    keys[dead] = k;
                    dead += 1;
                }
                continue;
            }
            let mut entries: [Option<squeue::Entry>; 2] = [None, None];
            if !c.recv_busy {
                if c.rlen == c.rbuf.len() {
                    // Only happens below a whole frame's size: grow to it.
                    let need = frame::frame_len(&c.rbuf[..c.rlen])
                        .ok()
                        .flatten()
                        .unwrap_or(c.rbuf.len() * 2);
                    c.rbuf.resize(need.max(c.rbuf.len() + 1), 0);
                }
                let free = &mut c.rbuf[c.rlen..];
                entries[0] = Some(
                    opcode::Recv::new(
                        types::Fd(c.fd.as_raw_fd()),
                        free.as_mut_ptr(),
                        free.len() as u32,
                    )
                    .build()
                    .user_data(ud(OP_RECV, k)),
                );
                c.recv_busy = true;
            }
            if !c.send_busy && !c.out.is_empty() {
                std::mem::swap(&mut c.out, &mut c.sending);
                c.out.clear();
                c.sent = 0;
                entries[1] = Some(
                    opcode::Send::new(
                        types::Fd(c.fd.as_raw_fd()),
                        c.sending.as_ptr(),
                        c.sending.len() as u32,
                    )
                    .flags(nix::libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(ud(OP_SEND, k)),
                );
                c.send_busy = true;
            }
            for e in entries.into_iter().flatten() {
                // SAFETY: rbuf and sending are heap buffers of the connection, which
                // is not resized (rbuf) or reused (sending) while its entry is in
                // flight, and not freed before both entries completed (see `closing`).
                unsafe { self.push(&e)? };
            }
        }
        for &k in &keys[..dead] {
            self.conns.remove(k);
            self.stats.connections = self.stats.connections.saturating_sub(1);
        }
        self.keys = keys;
        Ok(())
    }

    /// Handles every ready completion; `true` when the stop fd fired.
    fn reap(&mut self) -> Result<bool, SimError> {
        let mut stop = false;
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(user_data, res) in &cqes {
            self.in_flight = self.in_flight.saturating_sub(1);
            let op = user_data >> OP_SHIFT;
            let i = (user_data & 0xFFFF_FFFF) as usize;
            match op {
                OP_ACCEPT => self.on_accept(i, res),
                OP_RECV => self.on_recv(i, res),
                OP_SEND => self.on_send(i, res)?,
                OP_STOP => stop = true,
                _ => {}
            }
        }
        self.cqes = cqes;
        Ok(stop)
    }

    fn on_accept(&mut self, i: usize, res: i32) {
        let Some(l) = self.listeners.get_mut(i) else {
            return;
        };
        l.busy = false;
        if res < 0 {
            tracing::warn!(addr = %l.addr, errno = -res, "accept failed");
            return;
        }
        // SAFETY: a successful accept returns a new fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        if l.tcp {
            let s = TcpStream::from(fd);
            let _ = s.set_nodelay(true);
            let fd: OwnedFd = s.into();
            self.add_conn(fd);
        } else {
            self.add_conn(fd);
        }
    }

    fn add_conn(&mut self, fd: OwnedFd) {
        let gen = self.next_gen;
        self.next_gen += 1;
        let _ = setsockopt(&fd, sockopt::KeepAlive, &true);
        self.conns.insert(Conn {
            fd,
            gen,
            client: None,
            rbuf: vec![0; RBUF_INITIAL],
            rlen: 0,
            out: Vec::with_capacity(RBUF_INITIAL),
            sending: Vec::with_capacity(RBUF_INITIAL),
            sent: 0,
            recv_busy: false,
            send_busy: false,
            closing: false,
        });
        self.stats.connections += 1;
    }

    /// Shuts a connection down (its entries complete soon; `arm` frees it).
    fn close(&mut self, k: usize, reason: &str) {
        if let Some(c) = self.conns.get_mut(k) {
            if !c.closing {
                tracing::debug!(
                    conn = k,
                    client = c.client.as_deref().unwrap_or("-"),
                    reason,
                    "closing connection"
                );
                c.closing = true;
                let _ = shutdown(c.fd.as_raw_fd(), Shutdown::Both);
            }
        }
    }

    fn on_send(&mut self, k: usize, res: i32) -> Result<(), SimError> {
        let Some(c) = self.conns.get_mut(k) else {
            return Ok(());
        };
        c.send_busy = false;
        if res < 0 {
            self.close(k, "send failed");
            return Ok(());
        }
        c.sent += res as usize;
        if c.sent < c.sending.len() && !c.closing {
            // A short send: push the rest now (the buffer stays as it is).
            let rest = &c.sending[c.sent..];
            let e = opcode::Send::new(
                types::Fd(c.fd.as_raw_fd()),
                rest.as_ptr(),
                rest.len() as u32,
            )
            .flags(nix::libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(OP_SEND, k));
            c.send_busy = true;
            // SAFETY: as in `arm`: `sending` is untouched until this completes.
            unsafe { self.push(&e)? };
        }
        Ok(())
    }

    fn on_recv(&mut self, k: usize, res: i32) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        c.recv_busy = false;
        if c.closing {
            return;
        }
        if res <= 0 {
            self.close(
                k,
                if res == 0 {
                    "peer closed"
                } else {
                    "recv failed"
                },
            );
            return;
        }
        c.rlen += res as usize;
        // Parse out of a taken buffer so handlers may borrow the server mutably.
        let rbuf = std::mem::take(&mut c.rbuf);
        let rlen = c.rlen;
        let mut at = 0;
        let mut bad = None;
        while at < rlen {
            match frame::decode(&rbuf[at..rlen]) {
                Ok(Some((f, n))) => {
                    if let Err(reason) = self.on_frame(k, f) {
                        bad = Some(reason);
                        break;
                    }
                    at += n;
                }
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            }
        }
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        c.rbuf = rbuf;
        c.rbuf.copy_within(at..rlen, 0);
        c.rlen = rlen - at;
        if let Some(reason) = bad {
            tracing::warn!(
                conn = k,
                client = c.client.as_deref().unwrap_or("-"),
                reason = %reason,
                "malformed frame: closing the connection"
            );
            self.close(k, "malformed frame");
        }
    }

    /// Queues a small frame on a connection.
    fn send_frame(&mut self, k: usize, f: &Frame<'_>) {
        if let Some(c) = self.conns.get_mut(k) {
            if f.encode(&mut c.out).is_err() {
                tracing::warn!(conn = k, "could not encode an answer frame");
            }
        }
    }

    /// Handles one frame; `Err(reason)` closes the connection.
    fn on_frame(&mut self, k: usize, f: Frame<'_>) -> Result<(), String> {
        let hello_done = self.conns.get(k).is_some_and(|c| c.client.is_some());
        match f {
            Frame::Hello { client } => {
                if let Some(c) = self.conns.get_mut(k) {
                    c.client = Some(client.to_string());
                }
                let names: Vec<String> = self.drives.iter().map(|d| d.name.clone()).collect();
                let drives = names.iter().map(String::as_str).collect();
                self.send_frame(k, &Frame::HelloOk { drives });
                Ok(())
            }
            _ if !hello_done => Err(format!("frame type {:#04x} before HELLO", f.kind())),
            Frame::Attach { drive } => {
                match self.drives.iter().position(|d| d.name == drive) {
                    Some(id) => self.send_frame(k, &Frame::Attached { drive: id as u32 }),
                    None => {
                        let message = format!("no drive named `{drive}`");
                        self.send_frame(k, &Frame::Error { message: &message })
                    }
                }
                Ok(())
            }
            Frame::Command(c) => {
                self.stats.commands += 1;
                self.on_command(k, &c);
                Ok(())
            }
            Frame::Control { json } => {
                let answer = match serde_json::from_str::<ControlRequest>(json) {
                    Ok(req) => self.control(&req),
                    Err(e) => Err(format!("bad control request: {e}")),
                };
                let out = answer.and_then(|r| serde_json::to_string(&r).map_err(|e| e.to_string()));
                match out {
                    Ok(json) => self.send_frame(k, &Frame::ControlOk { json: &json }),
                    Err(message) => self.send_frame(k, &Frame::Error { message: &message }),
                }
                Ok(())
            }
            other => Err(format!(
                "server-only frame type {:#04x} from a client",
                other.kind()
            )),
        }
    }

    /// Runs (or holds, or ignores) one command and schedules its reply.
    fn on_command(&mut self, k: usize, c: &CommandFrame<'_>) {
        let now_ms = self.now_ms();
        let Some(conn) = self.conns.get(k) else {
            return;
        };
        let gen = conn.gen;
        let client = conn.client.as_deref().unwrap_or("");
        let Some(drive) = self.drives.get_mut(c.drive as usize) else {
            self.reply(k, gen, Duration::ZERO, &io_error(c.tag));
            return;
        };
        let verdict = drive.faults.judge(client, now_ms, &mut self.rng);
        let delay = drive.latency.sample(&mut self.rng);
        match verdict {
            Verdict::Ignore => {}
            Verdict::Hold => {
                let mut cdb = [0u8; frame::MAX_CDB];
                cdb[..c.cdb.len()].copy_from_slice(c.cdb);
                drive.held.push_back(Held {
                    conn: k,
                    gen,
                    tag: c.tag,
                    cdb,
                    cdb_len: c.cdb.len() as u8,
                    data_in_len: c.data_in_len,
                    data_out: c.data_out.to_vec(),
                });
            }
            Verdict::IoError => {
                self.reply(k, gen, delay, &io_error(c.tag));
            }
            Verdict::Execute | Verdict::ExecuteAndDrop => {
                let mut data_in = std::mem::take(&mut self.data_in);
                let a = lock_fw(&drive.fw).execute(now_ms, c.cdb, c.data_out, &mut data_in);
                data_in.truncate(c.data_in_len as usize);
                if verdict == Verdict::Execute {
                    let r = ReplyFrame {
                        tag: c.tag,
                        status: a.status.0,
                        sense: a.sense.as_slice(),
                        data: &data_in,
                    };
                    self.reply(k, gen, delay, &r);
                }
                self.data_in = data_in;
            }
        }
    }

    /// Sends `r` on connection `k` (generation `gen`) now, or after `delay`.
    fn reply(&mut self, k: usize, gen: u64, delay: Duration, r: &ReplyFrame<'_>) {
        if delay.is_zero() {
            if let Some(c) = self.conns.get_mut(k) {
                if frame::encode_reply(&mut c.out, r).is_ok() {
                    self.stats.replies += 1;
                }
            }
            return;
        }
        let mut bytes = self.pool.pop().unwrap_or_default();
        if frame::encode_reply(&mut bytes, r).is_err() {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.timers.push(Reverse(Delayed {
            due: Instant::now() + delay,
            seq,
            conn: k,
            gen,
            bytes,
        }));
    }

    fn drive_index(&self, name: &str) -> Result<usize, String> {
        self.drives
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| format!("no drive named `{name}`"))
    }

    fn control(&mut self, req: &ControlRequest) -> Result<ControlResponse, String> {
        let now_ms = self.now_ms();
        match req {
            ControlRequest::ListDrives => Ok(ControlResponse::Drives {
                drives: self
                    .drives
                    .iter()
                    .enumerate()
                    .map(|(i, d)| DriveInfo {
                        name: d.name.clone(),
                        id: i as u32,
                        records: lock_fw(&d.fw).record_count(),
                        latency: d.latency,
                        faults: d.faults.clone(),
                    })
                    .collect(),
            }),
            ControlRequest::Fault { drive, fault } => {
                let i = self.drive_index(drive)?;
                let d = &mut self.drives[i];
                if d.faults.apply(fault, now_ms) {
                    lock_fw(&d.fw).power_cycle();
                }
                tracing::info!(drive = %d.name, ?fault, "fault applied");
                if matches!(fault, FaultCmd::Resume | FaultCmd::Heal) {
                    self.release_stalls();
                }
                Ok(ControlResponse::Ok)
            }
            ControlRequest::SetLatency { drive, latency } => {
                let i = self.drive_index(drive)?;
                self.drives[i].latency = *latency;
                Ok(ControlResponse::Ok)
            }
            ControlRequest::DumpTable { drive } => {
                let i = self.drive_index(drive)?;
                let recs = lock_fw(&self.drives[i].fw).snapshot(now_ms);
                Ok(ControlResponse::Table {
                    records: recs.iter().map(table_entry).collect(),
                })
            }
            ControlRequest::Stats => {
                let cpu = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
                    .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
                    .unwrap_or(0);
                Ok(ControlResponse::Stats(SimStats {
                    cpu_ns: cpu,
                    ..self.stats
                }))
            }
        }
    }
}

/// Locks a drive's firmware. A poisoned lock (a panic while holding it, which the
/// firmware's no-panic contract rules out) is taken over: the table is still
/// consistent between commands.
pub(crate) fn lock_fw(fw: &Mutex<Firmware>) -> MutexGuard<'_, Firmware> {
    fw.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One drive of [`SharedDrives`].
#[derive(Clone, Debug)]
pub struct SharedDrive {
    /// Drive name.
    pub name: String,
    /// Its firmware (the same instance the native server runs).
    pub fw: Arc<Mutex<Firmware>>,
}

/// A simulator's drives and drive clock, shared with another front end.
#[derive(Clone, Debug)]
pub struct SharedDrives {
    /// Drive time zero: a drive's `now_ms` is milliseconds since this instant.
    pub start: Instant,
    /// The drives, by id.
    pub drives: Vec<SharedDrive>,
}

impl SharedDrives {
    /// `n` fresh drives named `sim0..`, clock starting now (for tests and for an
    /// iSCSI target without a native server).
    pub fn fresh(names: &[String], cfg: crate::firmware::FirmwareConfig) -> SharedDrives {
        SharedDrives {
            start: Instant::now(),
            drives: names
                .iter()
                .map(|n| SharedDrive {
                    name: n.clone(),
                    fw: Arc::new(Mutex::new(Firmware::new(cfg))),
                })
                .collect(),
        }
    }

    /// Drive time now, ms.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// The REPLY of a command the simulated transport failed.
fn io_error(tag: u64) -> ReplyFrame<'static> {
    ReplyFrame {
        tag,
        status: STATUS_TRANSPORT_ERROR,
        sense: &[],
        data: &[],
    }
}

/// The control form of a table record.
pub fn table_entry(r: &Record) -> TableEntry {
    TableEntry {
        lock_id: r.lock_id.to_string(),
        host_id: r.host_id.to_string(),
        state: r.state.to_string(),
        class: r.class as u64,
        countdown_ms: r.countdown_ms,
        time_ms: r.time_ms,
        lvb: r.lvb.to_u64(),
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        // Entries still in the kernel point at buffers about to be freed.
        if self.in_flight > 0 {
            let _ = self.drain();
        }
    }
}
