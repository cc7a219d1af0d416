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
//!
//! **Hostile clients** ([`ServerLimits`], every limit a flag of `idm sim`):
//! - *Backpressure*: a connection is owed the replies it asked for; while it is
//!   owed more than `max_queued` bytes the server parses no more of its requests
//!   and arms no RECV, so a client that pipelines requests and never reads the
//!   replies fills its own socket buffers, not the server's memory.
//! - *No stored zeros*: a table read returns the table's records and then zeros up
//!   to the transfer length; the zeros are sent from one static buffer, so a 4 MiB
//!   read of a short table costs the short table.
//! - *Frame sizes*: a frame's header (length and type) is checked against what its
//!   type can need (a COMMAND: its fields plus `max_data_out`; a CONTROL:
//!   `max_control`; a server-only type: nothing) before any room is made for it,
//!   and the receive buffer grows only as bytes arrive.
//! - *Connections*: at most `max_conns`; one more gets an ERROR frame and is
//!   closed. A connection the server waits on (no HELLO yet, a frame half received,
//!   replies it does not read) for `idle_timeout` without progress is closed.
//! - *Accept errors* (out of file descriptors) back the listener off for
//!   `accept_backoff` instead of re-arming at once; logged once per episode.
//!
//! Every refusal is logged through a [`RateLog`] (the first, then at most one line
//! per ten seconds with a count) and counted in [`SimStats`].

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
use nix::sys::socket::{send, setsockopt, shutdown, sockopt, MsgFlags, Shutdown};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use slab::Slab;

use super::faults::{DriveFaults, FaultCmd, Verdict};
use super::frame::{self, kind, CommandFrame, Frame, ReplyFrame, STATUS_TRANSPORT_ERROR};
use super::latency::Latency;
use super::{
    ControlRequest, ControlResponse, DriveInfo, ListenAddr, RateLog, ServerLimits, SimConfig,
    SimError, SimStats, TableEntry,
};
use crate::firmware::Firmware;
use uring_sg::codec::Record;

/// `user_data` layout: operation in the top 8 bits, index in the low 32.
const OP_SHIFT: u32 = 56;
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_STOP: u64 = 4;
const OP_CANCEL: u64 = 5;
/// Initial receive buffer per connection (grows, as bytes arrive, up to one whole
/// frame of the largest size allowed; shrinks back once empty).
const RBUF_INITIAL: usize = 16 * 1024;
/// Buffers larger than this are freed after use rather than kept for reuse.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Reusable buffers kept at most.
const POOL_MAX: usize = 64;
/// Ring size.
const RING_ENTRIES: u32 = 512;
/// Bytes of zeros one SEND takes from [`ZEROS`]: a whole data-in, so the zeros of
/// a reply go out in one SEND (the kernel may take less). Never written, the
/// buffer maps the zero page: it costs no memory.
const ZEROS_LEN: usize = frame::MAX_DATA;
/// The zeros every connection sends for data it does not store (a table read's
/// records past the table's end).
static ZEROS: [u8; ZEROS_LEN] = [0; ZEROS_LEN];
/// What a held command (or a delayed reply) is charged besides its data: the
/// REPLY's fields and sense, and its bookkeeping.
const REPLY_OVERHEAD: usize = 64 + std::mem::size_of::<Delayed>();

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
    /// Shared with the iSCSI front end too: a fault is the drive's, whichever
    /// front end a command comes through.
    faults: Arc<DriveFaults>,
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

impl Held {
    /// What the connection is charged while this command waits: the reply it
    /// asked for and what the command itself takes meanwhile.
    fn charge(&self) -> usize {
        self.data_in_len as usize + self.data_out.len() + REPLY_OVERHEAD
    }
}

/// A reply waiting for its latency to pass.
struct Delayed {
    due: Instant,
    seq: u64,
    conn: usize,
    gen: u64,
    /// The frame up to the end of its stored data.
    bytes: Vec<u8>,
    /// Zeros that end its data-in (sent, not stored).
    zeros: usize,
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
    /// After a failed accept: no new ACCEPT before this.
    retry_at: Option<Instant>,
    /// Failed accepts in the current episode (0: accepting normally).
    failures: u64,
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

/// Output queued on a connection, in order.
enum Piece {
    /// Bytes to send.
    Bytes(Vec<u8>),
    /// This many zeros, sent from [`ZEROS`].
    Zeros(usize),
}

struct Conn {
    fd: OwnedFd,
    gen: u64,
    client: Option<String>,
    rbuf: Vec<u8>,
    rlen: usize,
    /// Output not yet handed to a SEND.
    queue: VecDeque<Piece>,
    /// The piece being sent: `sending[sent..]` is left of a bytes piece, or
    /// `zeros_left` zeros of a zeros piece. Untouched while a SEND is in flight.
    sending: Vec<u8>,
    sent: usize,
    zeros_left: usize,
    /// Reply bytes this connection is owed: ready to send (`ready`), delayed by
    /// latency, or charged for commands held by a stall.
    owed: usize,
    /// Bytes in `queue` plus what is left of the piece being sent.
    ready: usize,
    /// Parsing stopped at the `max_queued` cap with bytes left in `rbuf`.
    paused: bool,
    /// Last time a byte came in or went out (or the connection was set up or
    /// resumed reading): the idle timeout counts from here.
    last_progress: Instant,
    recv_busy: bool,
    send_busy: bool,
    closing: bool,
}

impl Conn {
    /// Appends to the output through `f` (into the last bytes piece, or a new
    /// one); returns the bytes appended, counted as owed and ready.
    fn append(
        &mut self,
        pool: &mut Vec<Vec<u8>>,
        f: impl FnOnce(&mut Vec<u8>) -> Result<(), frame::FrameError>,
    ) -> Result<usize, frame::FrameError> {
        if !matches!(self.queue.back(), Some(Piece::Bytes(_))) {
            self.queue
                .push_back(Piece::Bytes(pool.pop().unwrap_or_default()));
        }
        let Some(Piece::Bytes(v)) = self.queue.back_mut() else {
            return Ok(0);
        };
        let before = v.len();
        f(v)?;
        let n = v.len() - before;
        self.ready += n;
        self.owed += n;
        Ok(n)
    }

    /// Queues `n` zeros (counted as owed and ready).
    fn push_zeros(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        match self.queue.back_mut() {
            Some(Piece::Zeros(z)) => *z += n,
            _ => self.queue.push_back(Piece::Zeros(n)),
        }
        self.ready += n;
        self.owed += n;
    }

    /// Whether the server is waiting on the peer (the idle timeout runs).
    fn waiting_on_peer(&self) -> bool {
        self.client.is_none() || (self.rlen > 0 && !self.paused) || self.ready > 0
    }

    /// Heap bytes this connection holds.
    fn buffered(&self) -> usize {
        let q: usize = self
            .queue
            .iter()
            .map(|p| match p {
                Piece::Bytes(v) => v.capacity(),
                Piece::Zeros(_) => 0,
            })
            .sum();
        self.rbuf.capacity() + self.sending.capacity() + q
    }
}

/// Rate limits of the refusal log lines.
#[derive(Default)]
struct Logs {
    refused: RateLog,
    idle: RateLog,
    bad_frame: RateLog,
}

/// The simulator server. See the module docs.
pub struct SimServer {
    ring: IoUring,
    limits: ServerLimits,
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
    logs: Logs,
    /// The earliest idle deadline of a connection (computed by `arm`).
    next_idle: Option<Instant>,
    /// Scratch lists reused every turn (no allocation per turn).
    cqes: Vec<(u64, i32)>,
    keys: Vec<usize>,
    to_close: Vec<usize>,
}

fn bind_one(addr: &ListenAddr) -> Result<Listener, SimError> {
    let (fd, addr, tcp, owns_path) = match addr {
        ListenAddr::Unix(path) => {
            // A socket file nobody listens on is a leftover of a dead server
            // (anything that is not a socket is left alone: bind then fails).
            let stale = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
                && UnixStream::connect(path).is_err();
            if stale {
                let _ = std::fs::remove_file(path);
            }
            let l = UnixListener::bind(path)?;
            (l.into(), addr.clone(), false, Some(path.clone()))
        }
        ListenAddr::Tcp(a) => {
            let l = TcpListener::bind(a)?;
            let real = l.local_addr()?;
            (l.into(), ListenAddr::Tcp(real), true, None)
        }
    };
    Ok(Listener {
        fd,
        addr,
        tcp,
        busy: false,
        retry_at: None,
        failures: 0,
        owns_path,
    })
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
        if cfg.limits.max_conns == 0 {
            return Err(SimError::Config("max_conns must be at least 1".into()));
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
            .map(|(i, name)| {
                let faults = DriveFaults::new(fault_seed(cfg.seed, i));
                faults.set_latency(cfg.latency_of(i));
                Drive {
                    name: name.clone(),
                    fw: Arc::new(Mutex::new(Firmware::new(cfg.firmware))),
                    latency: cfg.latency_of(i),
                    faults: Arc::new(faults),
                    held: VecDeque::new(),
                }
            })
            .collect();
        Ok(SimServer {
            ring: IoUring::new(RING_ENTRIES)?,
            limits: cfg.limits,
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
            stats: SimStats::default(),
            logs: Logs::default(),
            next_idle: None,
            cqes: Vec::new(),
            keys: Vec::new(),
            to_close: Vec::new(),
        })
    }

    /// The addresses listened on, with TCP port 0 replaced by the bound port.
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        self.listeners.iter().map(|l| l.addr.clone()).collect()
    }

    /// The limits this server enforces.
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
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
                    faults: Arc::clone(&d.faults),
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
            self.arm(now)?;
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

    /// The earliest timer: a delayed reply, the end of a stall, an idle deadline
    /// or the end of an accept backoff.
    fn next_wake(&self) -> Option<Instant> {
        let t = self.timers.peek().map(|Reverse(d)| d.due);
        let s = self
            .drives
            .iter()
            .filter(|d| !d.held.is_empty())
            .filter_map(|d| d.faults.stall_until_ms())
            .min()
            .map(|ms| self.start + Duration::from_millis(ms));
        let a = self
            .listeners
            .iter()
            .filter(|l| !l.busy)
            .filter_map(|l| l.retry_at)
            .min();
        [t, s, a, self.next_idle].into_iter().flatten().min()
    }

    fn fire_timers(&mut self, now: Instant) {
        while self.timers.peek().is_some_and(|Reverse(d)| d.due <= now) {
            let Some(Reverse(mut d)) = self.timers.pop() else {
                break;
            };
            if let Some(c) = self.conns.get_mut(d.conn) {
                if c.gen == d.gen && !c.closing {
                    // Already owed since it was scheduled (with its bookkeeping,
                    // now freed): now it is ready too.
                    let n = d.bytes.len() + d.zeros;
                    c.owed = c.owed.saturating_sub(REPLY_OVERHEAD);
                    if !matches!(c.queue.back(), Some(Piece::Bytes(_))) {
                        c.queue
                            .push_back(Piece::Bytes(std::mem::take(&mut d.bytes)));
                    } else if let Some(Piece::Bytes(v)) = c.queue.back_mut() {
                        v.extend_from_slice(&d.bytes);
                    }
                    if d.zeros > 0 {
                        c.queue.push_back(Piece::Zeros(d.zeros));
                    }
                    c.ready += n;
                    self.stats.replies += 1;
                }
            }
            recycle(&mut self.pool, d.bytes);
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
                let Some(c) = self.conns.get_mut(h.conn) else {
                    continue;
                };
                if c.gen != h.gen || c.closing {
                    continue;
                }
                c.owed = c.owed.saturating_sub(h.charge());
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

    /// Arms accepts, receives and sends; resumes connections whose backpressure
    /// ended; closes idle ones; frees closed ones.
    fn arm(&mut self, now: Instant) -> Result<(), SimError> {
        for i in 0..self.listeners.len() {
            let l = &self.listeners[i];
            if !l.busy && l.retry_at.is_none_or(|t| now >= t) {
                let e = opcode::Accept::new(
                    types::Fd(l.fd.as_raw_fd()),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
                .flags(nix::libc::SOCK_CLOEXEC)
                .build()
                .user_data(ud(OP_ACCEPT, i));
                // SAFETY: no buffers; the listener fd lives as long as self.
                unsafe { self.push(&e)? };
                self.listeners[i].busy = true;
                self.listeners[i].retry_at = None;
            }
        }
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        keys.extend(self.conns.iter().map(|(k, _)| k));
        // Connections whose replies drained below the cap parse what they have.
        let cap = self.limits.max_queued;
        for &k in &keys {
            if self
                .conns
                .get(k)
                .is_some_and(|c| c.paused && !c.closing && c.owed <= cap)
            {
                if let Some(c) = self.conns.get_mut(k) {
                    c.paused = false;
                    c.last_progress = now;
                }
                self.process(k);
            }
        }
        let idle = self.limits.idle_timeout;
        let mut next_idle: Option<Instant> = None;
        let mut to_close = std::mem::take(&mut self.to_close);
        to_close.clear();
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
            if !idle.is_zero() && c.waiting_on_peer() {
                let due = c.last_progress + idle;
                if now >= due {
                    to_close.push(k);
                    continue;
                }
                next_idle = Some(next_idle.map_or(due, |t| t.min(due)));
            }
            let mut entries: [Option<squeue::Entry>; 2] = [None, None];
            if !c.recv_busy && !c.paused && c.owed <= cap {
                if c.rlen == c.rbuf.len() {
                    // A partial frame fills the buffer (its header was checked
                    // against the limits by `process`): grow towards it.
                    let need = frame::frame_len(&c.rbuf[..c.rlen])
                        .ok()
                        .flatten()
                        .unwrap_or(c.rbuf.len() * 2);
                    let grown = need.min(c.rbuf.len().saturating_mul(2)).max(c.rlen + 1);
                    c.rbuf.resize(grown, 0);
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
            if !c.send_busy {
                if c.sent >= c.sending.len() && c.zeros_left == 0 {
                    match c.queue.pop_front() {
                        Some(Piece::Bytes(v)) => {
                            let old = std::mem::replace(&mut c.sending, v);
                            recycle(&mut self.pool, old);
                            c.sent = 0;
                        }
                        Some(Piece::Zeros(n)) => {
                            c.sending.clear();
                            c.sent = 0;
                            c.zeros_left = n;
                        }
                        None => {}
                    }
                }
                let chunk: Option<&[u8]> = if c.zeros_left > 0 {
                    Some(&ZEROS[..c.zeros_left.min(ZEROS_LEN)])
                } else if c.sent < c.sending.len() {
                    let rest = &c.sending[c.sent..];
                    Some(&rest[..rest.len().min(u32::MAX as usize)])
                } else {
                    None
                };
                if let Some(b) = chunk {
                    entries[1] = Some(
                        opcode::Send::new(types::Fd(c.fd.as_raw_fd()), b.as_ptr(), b.len() as u32)
                            .flags(nix::libc::MSG_NOSIGNAL)
                            .build()
                            .user_data(ud(OP_SEND, k)),
                    );
                    c.send_busy = true;
                }
            }
            for e in entries.into_iter().flatten() {
                // SAFETY: rbuf and sending are heap buffers of the connection, which
                // is not resized (rbuf) or reused (sending) while its entry is in
                // flight, and not freed before both entries completed (see
                // `closing`); ZEROS is static.
                unsafe { self.push(&e)? };
            }
        }
        for &k in &keys[..dead] {
            self.conns.remove(k);
            self.stats.connections = self.stats.connections.saturating_sub(1);
        }
        for &k in &to_close {
            self.stats.idle_closed += 1;
            if let Some(quiet) = self.logs.idle.hit(now) {
                let client = self.conns.get(k).and_then(|c| c.client.clone());
                tracing::warn!(
                    conn = k,
                    client = client.as_deref().unwrap_or("-"),
                    timeout_ms = idle.as_millis() as u64,
                    not_logged = quiet,
                    "connection made no progress within the idle timeout: closing it"
                );
            }
            self.close(k, "idle timeout");
        }
        self.next_idle = next_idle;
        self.keys = keys;
        self.to_close = to_close;
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
                OP_SEND => self.on_send(i, res),
                OP_STOP => stop = true,
                _ => {}
            }
        }
        self.cqes = cqes;
        Ok(stop)
    }

    fn on_accept(&mut self, i: usize, res: i32) {
        let now = Instant::now();
        let backoff = self.limits.accept_backoff;
        let Some(l) = self.listeners.get_mut(i) else {
            return;
        };
        l.busy = false;
        if res < 0 {
            self.stats.accept_errors += 1;
            l.retry_at = Some(now + backoff);
            if l.failures == 0 {
                tracing::warn!(
                    addr = %l.addr,
                    errno = -res,
                    backoff_ms = backoff.as_millis() as u64,
                    "accept failed: retrying after each backoff; further failures are counted, not logged, until an accept succeeds"
                );
            }
            l.failures += 1;
            return;
        }
        if l.failures > 0 {
            tracing::info!(addr = %l.addr, failures = l.failures, "accepting again");
            l.failures = 0;
        }
        // SAFETY: a successful accept returns a new fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        let fd = if l.tcp {
            let s = TcpStream::from(fd);
            let _ = s.set_nodelay(true);
            s.into()
        } else {
            fd
        };
        if self.conns.len() >= self.limits.max_conns {
            self.refuse(fd, now);
        } else {
            self.add_conn(fd, now);
        }
    }

    /// Answers a connection over the limit with an ERROR frame and closes it. The
    /// frame is tiny and the socket new, so one non-blocking send takes it.
    fn refuse(&mut self, fd: OwnedFd, now: Instant) {
        self.stats.refused_connections += 1;
        let max = self.limits.max_conns;
        if let Some(quiet) = self.logs.refused.hit(now) {
            tracing::warn!(
                max_conns = max,
                not_logged = quiet,
                "connection limit reached: refusing new connections"
            );
        }
        let message = format!("too many connections (the simulator's limit is {max})");
        let mut b = Vec::new();
        if (Frame::Error { message: &message }).encode(&mut b).is_ok() {
            let _ = send(
                fd.as_raw_fd(),
                &b,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            );
        }
        let _ = shutdown(fd.as_raw_fd(), Shutdown::Write);
        // Take a HELLO that already arrived: closing with unread bytes would reset
        // the connection, and the peer might lose the ERROR frame.
        let mut sink = [0u8; 512];
        let _ = nix::sys::socket::recv(fd.as_raw_fd(), &mut sink, MsgFlags::MSG_DONTWAIT);
    }

    fn add_conn(&mut self, fd: OwnedFd, now: Instant) {
        let gen = self.next_gen;
        self.next_gen += 1;
        let _ = setsockopt(&fd, sockopt::KeepAlive, &true);
        self.conns.insert(Conn {
            fd,
            gen,
            client: None,
            rbuf: vec![0; RBUF_INITIAL],
            rlen: 0,
            queue: VecDeque::new(),
            sending: Vec::new(),
            sent: 0,
            zeros_left: 0,
            owed: 0,
            ready: 0,
            paused: false,
            last_progress: now,
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

    fn on_send(&mut self, k: usize, res: i32) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        c.send_busy = false;
        if res < 0 {
            self.close(k, "send failed");
            return;
        }
        let n = res as usize;
        if c.zeros_left > 0 {
            c.zeros_left = c.zeros_left.saturating_sub(n);
        } else {
            c.sent += n;
            if c.sent >= c.sending.len() && c.sending.capacity() > KEEP_CAPACITY {
                c.sending = Vec::new();
                c.sent = 0;
            }
        }
        c.ready = c.ready.saturating_sub(n);
        c.owed = c.owed.saturating_sub(n);
        if n > 0 {
            c.last_progress = Instant::now();
        }
        // What is left (a short send, the next piece) goes out from `arm`.
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
        c.last_progress = Instant::now();
        self.process(k);
    }

    /// The largest `len` a client's frame of type `ty` may announce (`None`: a
    /// client never sends that type).
    fn max_len(&self, ty: u8) -> Option<usize> {
        match ty {
            // A u16-length string.
            kind::HELLO | kind::ATTACH => Some(1 + 2 + u16::MAX as usize),
            kind::COMMAND => Some(frame::COMMAND_FIXED_MAX + 4 + self.limits.max_data_out),
            kind::CONTROL => Some(1 + self.limits.max_control),
            _ => None,
        }
    }

    /// Checks the header of the frame at the start of `buf` against what its type
    /// can need; `Err(reason)` closes the connection.
    fn check_header(&self, buf: &[u8]) -> Result<(), String> {
        let Some((len, ty)) = frame::peek_header(buf) else {
            return Ok(());
        };
        match self.max_len(ty) {
            None => Err(format!("frame type {ty:#04x} is not one a client sends")),
            Some(max) if len > max => Err(format!(
                "frame type {ty:#04x} announces {len} bytes, more than the {max} it can need"
            )),
            Some(_) => Ok(()),
        }
    }

    /// Parses the complete frames in a connection's receive buffer, until one is
    /// incomplete or the connection is owed more than `max_queued` (then it is
    /// paused: the rest waits in the buffer until replies drain).
    fn process(&mut self, k: usize) {
        let cap = self.limits.max_queued;
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        if c.recv_busy {
            // Never with a RECV in flight: it writes into `rbuf`, which this may replace.
            return;
        }
        // Parse out of a taken buffer so handlers may borrow the server mutably.
        let rbuf = std::mem::take(&mut c.rbuf);
        let rlen = c.rlen;
        let mut at = 0;
        let mut bad = None;
        let mut paused = false;
        while at < rlen {
            if self.conns.get(k).is_none_or(|c| c.closing) {
                break;
            }
            if self.conns.get(k).is_some_and(|c| c.owed > cap) {
                paused = true;
                break;
            }
            if let Err(reason) = self.check_header(&rbuf[at..rlen]) {
                bad = Some(reason);
                break;
            }
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
        c.paused = paused;
        if c.rlen == 0 && c.rbuf.len() > RBUF_INITIAL {
            // A large frame passed: give its room back.
            c.rbuf = vec![0; RBUF_INITIAL];
        }
        if let Some(reason) = bad {
            self.stats.bad_frames += 1;
            if let Some(quiet) = self.logs.bad_frame.hit(Instant::now()) {
                let c = self.conns.get(k);
                tracing::warn!(
                    conn = k,
                    client = c.and_then(|c| c.client.as_deref()).unwrap_or("-"),
                    reason = %reason,
                    not_logged = quiet,
                    "malformed frame: closing the connection"
                );
            }
            self.close(k, "malformed frame");
        }
    }

    /// Queues a small frame on a connection.
    fn send_frame(&mut self, k: usize, f: &Frame<'_>) {
        if let Some(c) = self.conns.get_mut(k) {
            if c.append(&mut self.pool, |v| f.encode(v)).is_err() {
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
            self.reply(k, gen, Duration::ZERO, &io_error(c.tag), 0);
            return;
        };
        let verdict = drive.faults.judge(client, now_ms, &mut self.rng);
        let delay = drive.latency.sample(&mut self.rng);
        match verdict {
            Verdict::Ignore => {}
            Verdict::Hold => {
                let mut cdb = [0u8; frame::MAX_CDB];
                cdb[..c.cdb.len()].copy_from_slice(c.cdb);
                let h = Held {
                    conn: k,
                    gen,
                    tag: c.tag,
                    cdb,
                    cdb_len: c.cdb.len() as u8,
                    data_in_len: c.data_in_len,
                    data_out: c.data_out.to_vec(),
                };
                if let Some(conn) = self.conns.get_mut(k) {
                    conn.owed += h.charge();
                }
                drive.held.push_back(h);
            }
            Verdict::IoError => {
                self.reply(k, gen, delay, &io_error(c.tag), 0);
            }
            Verdict::Execute | Verdict::ExecuteAndDrop => {
                let mut data_in = std::mem::take(&mut self.data_in);
                let (a, len) = lock_fw(&drive.fw).execute_sparse(
                    now_ms,
                    c.cdb,
                    c.data_out,
                    c.data_in_len as usize,
                    &mut data_in,
                );
                if verdict == Verdict::Execute {
                    let r = ReplyFrame {
                        tag: c.tag,
                        status: a.status.0,
                        sense: a.sense.as_slice(),
                        data: &data_in,
                    };
                    self.reply(k, gen, delay, &r, len.saturating_sub(data_in.len()));
                }
                if data_in.capacity() > KEEP_CAPACITY {
                    data_in = Vec::new();
                }
                self.data_in = data_in;
            }
        }
    }

    /// Sends `r` on connection `k` (generation `gen`) now, or after `delay`; its
    /// data-in is `r.data` followed by `zeros` zeros (sent, never stored).
    fn reply(&mut self, k: usize, gen: u64, delay: Duration, r: &ReplyFrame<'_>, zeros: usize) {
        let data_len = r.data.len() + zeros;
        let encode = |v: &mut Vec<u8>| {
            frame::encode_reply_head(v, r.tag, r.status, r.sense, data_len)?;
            v.extend_from_slice(r.data);
            Ok(())
        };
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        if delay.is_zero() {
            if c.append(&mut self.pool, encode).is_ok() {
                c.push_zeros(zeros);
                self.stats.replies += 1;
            }
            return;
        }
        let mut bytes = self.pool.pop().unwrap_or_default();
        if encode(&mut bytes).is_err() {
            recycle(&mut self.pool, bytes);
            return;
        }
        c.owed += bytes.len() + zeros + REPLY_OVERHEAD;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.timers.push(Reverse(Delayed {
            due: Instant::now() + delay,
            seq,
            conn: k,
            gen,
            bytes,
            zeros,
        }));
    }

    /// Heap bytes held for connections now (see [`SimStats::buffered_bytes`]).
    fn buffered(&self) -> usize {
        let conns: usize = self.conns.iter().map(|(_, c)| c.buffered()).sum();
        let timers: usize = self
            .timers
            .iter()
            .map(|Reverse(d)| d.bytes.capacity())
            .sum();
        let held: usize = self
            .drives
            .iter()
            .flat_map(|d| d.held.iter())
            .map(|h| h.data_out.capacity() + std::mem::size_of::<Held>())
            .sum();
        let pool: usize = self.pool.iter().map(Vec::capacity).sum();
        conns + timers + held + pool + self.data_in.capacity()
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
                        faults: d.faults.snapshot(),
                    })
                    .collect(),
            }),
            ControlRequest::Fault { drive, fault } => {
                let i = self.drive_index(drive)?;
                let d = &self.drives[i];
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
                self.drives[i].faults.set_latency(*latency);
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
                let cap = self.limits.max_queued;
                let owed = self.conns.iter().map(|(_, c)| c.owed as u64);
                Ok(ControlResponse::Stats(SimStats {
                    cpu_ns: cpu,
                    buffered_bytes: self.buffered() as u64,
                    queued_bytes: owed.clone().sum(),
                    max_conn_queued_bytes: owed.max().unwrap_or(0),
                    paused_connections: self
                        .conns
                        .iter()
                        .filter(|(_, c)| c.paused || c.owed > cap)
                        .count() as u64,
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
    /// Its faults (the same state the native server judges by).
    pub faults: Arc<DriveFaults>,
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
                .enumerate()
                .map(|(i, n)| SharedDrive {
                    name: n.clone(),
                    fw: Arc::new(Mutex::new(Firmware::new(cfg))),
                    faults: Arc::new(DriveFaults::new(fault_seed(0, i))),
                })
                .collect(),
        }
    }

    /// Drive time now, ms.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// The seed of drive `i`'s own fault generator (front ends without one of their
/// own draw `drop` verdicts from it).
fn fault_seed(seed: u64, i: usize) -> u64 {
    seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Keeps a used buffer for reuse, unless it is large or enough are kept.
fn recycle(pool: &mut Vec<Vec<u8>>, mut v: Vec<u8>) {
    if v.capacity() > 0 && v.capacity() <= KEEP_CAPACITY && pool.len() < POOL_MAX {
        v.clear();
        pool.push(v);
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
