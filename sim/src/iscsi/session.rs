//! One iSCSI connection (= one session: MaxConnections is 1), from login to
//! logout, on a blocking socket in its own thread.
//!
//! Full feature phase, per PDU:
//! - **SCSI Command**: a read (or a command without data) runs at once and is
//!   answered with Data-In PDUs of at most the initiator's
//!   MaxRecvDataSegmentLength (F at each MaxBurstLength boundary) whose last one
//!   carries the status (S bit) when the status is GOOD; otherwise (CHECK
//!   CONDITION and other statuses, with sense) a SCSI Response follows. A write
//!   collects immediate data, then unsolicited Data-Out (when InitialR2T=No) up
//!   to FirstBurstLength, then asks for the rest with one R2T at a time
//!   (MaxOutstandingR2T=1) of at most MaxBurstLength; it runs when all its data
//!   is in. Residual over/underflow are reported against the Expected Data
//!   Transfer Length. Several writes may be collecting data at once (by ITT), with
//!   `max_write` bytes at most together (32 MiB by default; a write larger than
//!   that alone is refused with INVALID FIELD IN CDB, one that would take the
//!   connection past it is answered TASK SET FULL).
//! - **NOP-Out** with a task tag: NOP-In echoing its data.
//! - **Faults** of the drive ([`crate::faults`], the table in
//!   [`super`]): judged when a command is ready to run (a write: when its data is
//!   in). `stop`/`cut`: no response; `io_error`: CHECK CONDITION, HARDWARE ERROR,
//!   ASC 0x44; `drop`: executed, no response; `stall`: held in arrival order (at
//!   most `max_held` per connection, one more is answered TASK SET FULL), judged
//!   again and run when the stall ends or a fault change (`resume`, `heal`)
//!   ends it early.
//! - **Task management**: "function complete"; ABORT TASK, ABORT TASK SET,
//!   CLEAR TASK SET and the LU/target resets drop writes still waiting for data
//!   and commands held by a stall (they are never run nor answered; nothing else
//!   is ever in progress: commands run synchronously).
//! - **Text** (`SendTargets`): the targets with this portal's address; answers
//!   longer than the initiator's MaxRecvDataSegmentLength continue (C bit,
//!   target transfer tag) over several exchanges.
//! - **Logout**: answered, then the connection closes.
//! - **SNACK**: Reject (error recovery level 0).
//!
//! A PDU that cannot be decoded, an oversize data segment, a login PDU after
//! login, or a socket error closes this connection only.
//!
//! **Latency**: the drive's latency model (`idm sim --latency`, the control
//! protocol's `set_latency`) delays each command's answer by one sample; answers
//! leave in order, so one delayed answer delays what follows it on the
//! connection (NOP-In too), as on one serial link. Delayed answers count against
//! `max_write`; past it the connection waits them out before reading on.
//!
//! After login a reader thread (scoped to the connection) reads PDUs and hands
//! them over a small bounded channel, which also carries the wake-ups of fault
//! changes; the connection thread waits on it with a timeout at the end of the
//! stall that holds its commands, if any (no polling). Ending the connection
//! shuts the socket down, which ends the reader; held commands are dropped with
//! the connection.
//!
//! Sequence numbers: StatSN counts status-bearing answers from the login
//! request's ExpStatSN; ExpCmdSN follows non-immediate commands in order
//! (this target answers in arrival order); MaxCmdSN = ExpCmdSN + 31.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use super::login::{Login, Params, SessionType, Step};
use super::pdu::{encode_text, op, parse_text, read_pdu, Pdu, PduError, RESERVED_TAG};
use super::scsi::{absent_lun, cdb_len, Answer, Lun, BLOCK};
use super::Ctx;
use crate::faults::Verdict;

/// Command window beyond ExpCmdSN.
const WINDOW: u32 = 31;
/// SCSI status TASK SET FULL.
const TASK_SET_FULL: u8 = 0x28;
/// Sense key HARDWARE ERROR (the answer of a drive under `io_error`).
const HARDWARE_ERROR: u8 = 0x04;
/// ASC INTERNAL TARGET FAILURE.
const ASC_INTERNAL_TARGET_FAILURE: u8 = 0x44;
/// PDUs the reader thread may read ahead of the connection thread.
const READ_AHEAD: usize = 4;

/// What the reader thread and the fault watcher hand the connection thread.
enum Event {
    /// The next PDU, the end of the stream (`None`) or a read error.
    Pdu(Result<Option<Pdu>, PduError>),
    /// The drive's faults changed: a stall may have ended.
    Wake,
}

/// A command held by a stall of its drive.
struct HeldTask {
    itt: u32,
    lun: [u8; 8],
    cdb: [u8; 16],
    cmd_len: usize,
    out: Vec<u8>,
    edtl: u32,
    read: bool,
    r2ts: u32,
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading or decoding a PDU failed.
    #[error("{0}")]
    Pdu(#[from] PduError),
    /// Writing to the socket failed.
    #[error("send failed: {0}")]
    Io(#[from] std::io::Error),
    /// The initiator broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A write collecting its data.
struct WriteTask {
    lun: [u8; 8],
    cdb: [u8; 16],
    cmd_len: usize,
    buf: Vec<u8>,
    received: usize,
    /// Unsolicited Data-Out may still come.
    unsolicited_open: bool,
    /// The R2T outstanding: (target transfer tag, end offset).
    r2t: Option<(u32, usize)>,
    r2t_sn: u32,
    /// DataSN the next Data-Out of the current sequence must carry.
    data_sn: u32,
}

struct Conn<'a> {
    ctx: &'a Ctx,
    local: SocketAddr,
    params: Params,
    stat_sn: u32,
    exp_cmd_sn: u32,
    lun_index: Option<usize>,
    kind: SessionType,
    writes: HashMap<u32, WriteTask>,
    next_ttt: u32,
    /// A text answer being sent in parts: (target transfer tag, bytes, offset).
    text: Option<(u32, Vec<u8>, usize)>,
    out: Vec<u8>,
    data_in: Vec<u8>,
    /// The initiator's name (what a `cut` fault names).
    initiator: String,
    /// Commands held by a stall, in arrival order.
    held: Vec<HeldTask>,
    /// When what is in `out` may leave (the drive's latency); `None`: now.
    out_due: Option<Instant>,
    /// Answers waiting for their latency, in order (answers leave in order).
    pending: VecDeque<(Instant, Vec<u8>)>,
}

/// A socket whose reads time out at a deadline (the login's) and after an idle
/// period, whichever comes first: the timeout is set before every read, so a peer
/// trickling a byte at a time cannot stretch a deadline.
struct Timed {
    s: TcpStream,
    deadline: Option<Instant>,
    idle: Option<Duration>,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = match self.deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "login timeout",
                    ));
                }
                Some(left)
            }
            None => None,
        };
        let t = match (left, self.idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.s.set_read_timeout(t)?;
        self.s.read(buf).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "idle or login timeout")
            } else {
                e
            }
        })
    }
}

/// Serves one accepted connection until logout, close or error.
pub(super) fn serve(ctx: &Ctx, stream: TcpStream) -> Result<(), SessionError> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr()?;
    let idle = Some(ctx.idle_timeout).filter(|d| !d.is_zero());
    let login = Some(ctx.login_timeout).filter(|d| !d.is_zero());
    let mut writer = stream.try_clone()?;
    // A peer that does not take our responses cannot hold the thread forever.
    writer.set_write_timeout(idle.or(login))?;
    let timed = Timed {
        s: stream,
        deadline: login.map(|d| Instant::now() + d),
        idle,
    };
    let mut reader = BufReader::with_capacity(64 * 1024, timed);
    let tsih = ctx.next_tsih.fetch_add(1, Ordering::Relaxed).max(1);
    let mut login = Login::new(ctx.limits, tsih);
    let mut stat_sn: Option<u32> = None;
    let mut exp_cmd_sn: u32;
    // Login phase.
    loop {
        let Some(req) = read_pdu(&mut reader, ctx.limits.max_recv_dsl as usize)? else {
            return Ok(());
        };
        let sn = *stat_sn.get_or_insert(req.exp_stat_sn());
        exp_cmd_sn = req.cmd_sn();
        let step = login.step(&req, &ctx.iqns);
        let (mut resp, next) = match step {
            Step::Continue(r) => (r, None),
            Step::Done(r) => (r, Some(true)),
            Step::Fail(r) => (r, Some(false)),
        };
        resp.set_sns(sn, exp_cmd_sn, exp_cmd_sn.wrapping_add(WINDOW));
        stat_sn = Some(sn.wrapping_add(1));
        writer.write_all(&resp.to_bytes())?;
        match next {
            None => {}
            Some(true) => break,
            Some(false) => {
                if let Some(quiet) = ctx.log(|l| l.login_failed.hit(Instant::now())) {
                    tracing::info!(
                        status = resp.u16_at(36),
                        not_logged = quiet,
                        "iSCSI login refused"
                    );
                }
                return Ok(());
            }
        }
    }
    // Logged in: no deadline, only the idle timeout.
    reader.get_mut().deadline = None;
    if idle.is_none() {
        writer.set_write_timeout(None)?;
    }
    tracing::debug!(
        initiator = login.initiator.as_deref().unwrap_or("-"),
        target = login.target.map(|i| ctx.iqns[i].as_str()).unwrap_or("-"),
        "iSCSI login complete"
    );
    let mut c = Conn {
        ctx,
        local,
        params: login.params,
        stat_sn: stat_sn.unwrap_or(0),
        exp_cmd_sn,
        lun_index: login.target,
        kind: login.kind,
        writes: HashMap::new(),
        next_ttt: 1,
        text: None,
        out: Vec::new(),
        data_in: Vec::new(),
        initiator: login.initiator.clone().unwrap_or_default(),
        held: Vec::new(),
        out_due: None,
        pending: VecDeque::new(),
    };
    let max = c.params.recv_dsl as usize;
    let (tx, rx) = sync_channel::<Event>(READ_AHEAD);
    // A change of the drive's faults (resume, heal) may end a stall early. The
    // wake-up is dropped if the channel is full: the connection thread looks at
    // its held commands after every event anyway.
    let lun = c.lun();
    let watch = lun.map(|l| {
        let tx = tx.clone();
        l.faults.watch(Box::new(move || {
            let _ = tx.try_send(Event::Wake);
        }))
    });
    let shut = writer.try_clone();
    let result = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("idm-iscsi-rd".into())
            .spawn_scoped(scope, move || read_loop(reader, max, &tx));
        let r = match spawned {
            Ok(_) => run(&mut c, &rx, &mut writer),
            Err(e) => Err(SessionError::Io(e)),
        };
        drop(rx);
        // Ends the reader: a read in progress returns, a send finds no receiver.
        match &shut {
            Ok(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Err(_) => {
                let _ = writer.shutdown(Shutdown::Both);
            }
        }
        r
    });
    if let (Some(l), Some(id)) = (lun, watch) {
        l.faults.unwatch(id);
    }
    result
}

/// The reader thread: PDUs to the connection thread until the end of the
/// stream, an error, or the connection thread is gone.
fn read_loop(mut r: impl Read, max: usize, tx: &SyncSender<Event>) {
    loop {
        let p = read_pdu(&mut r, max);
        let end = !matches!(p, Ok(Some(_)));
        if tx.send(Event::Pdu(p)).is_err() || end {
            return;
        }
    }
}

/// The connection thread after login: PDUs and fault wake-ups in, answers out.
fn run(c: &mut Conn<'_>, rx: &Receiver<Event>, writer: &mut TcpStream) -> Result<(), SessionError> {
    loop {
        // Answers delayed by latency count against `max_write`: past it, wait
        // them out before reading on.
        while c.pending.iter().map(|(_, b)| b.len()).sum::<usize>() > c.ctx.max_write {
            let Some((due, b)) = c.pending.pop_front() else {
                break;
            };
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            writer.write_all(&b)?;
        }
        let ev = match c.next_wait() {
            Some(d) => rx.recv_timeout(d),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let more = match ev {
            Ok(Event::Pdu(Ok(Some(p)))) => c.on_pdu(p),
            Ok(Event::Pdu(Ok(None))) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Ok(Event::Pdu(Err(e))) => return Err(e.into()),
            Ok(Event::Wake) | Err(RecvTimeoutError::Timeout) => Ok(true),
        };
        if matches!(more, Ok(true)) {
            c.release_held();
        }
        // Whatever was queued (a Reject before a protocol error, too) goes out
        // first; the answers of a logout after what latency still holds.
        c.send_ready(writer)?;
        if !more? {
            while let Some((due, b)) = c.pending.pop_front() {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                writer.write_all(&b)?;
            }
            return Ok(());
        }
    }
}

impl<'a> Conn<'a> {
    /// The logical unit this session logged in to.
    fn lun(&self) -> Option<&'a Lun> {
        self.lun_index.and_then(|i| self.ctx.luns.get(i))
    }

    /// Sends what is due: `out` at once unless latency delays it (or delayed
    /// answers are still ahead of it), then the delayed answers whose time came.
    fn send_ready(&mut self, writer: &mut TcpStream) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let due = self.out_due.take();
            if due.is_none() && self.pending.is_empty() {
                writer.write_all(&self.out)?;
                self.out.clear();
            } else {
                let now = Instant::now();
                let due = due.unwrap_or(now);
                let due = self.pending.back().map_or(due, |(t, _)| (*t).max(due));
                self.pending.push_back((due, std::mem::take(&mut self.out)));
            }
        }
        let now = Instant::now();
        while self.pending.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, b)) = self.pending.pop_front() {
                writer.write_all(&b)?;
            }
        }
        Ok(())
    }

    /// Delays what this command answers by one latency sample of its drive.
    fn delay_answer(&mut self, l: &Lun) {
        let d = l.faults.sample_latency();
        if !d.is_zero() {
            let due = Instant::now() + d;
            self.out_due = Some(self.out_due.map_or(due, |t| t.max(due)));
        }
    }

    /// How long the connection thread may wait for the next event: until the
    /// first delayed answer is due or the stall holding commands ends.
    fn next_wait(&self) -> Option<Duration> {
        let p = self
            .pending
            .front()
            .map(|(t, _)| t.saturating_duration_since(Instant::now()));
        match (p, self.release_wait()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long until the stall holding this connection's commands ends (`None`:
    /// nothing held, or no end known: a fault change wakes the thread).
    fn release_wait(&self) -> Option<Duration> {
        if self.held.is_empty() {
            return None;
        }
        let until = self.lun()?.faults.stall_until_ms()?;
        // +1: drive time counts whole milliseconds.
        Some(Duration::from_millis(
            until.saturating_sub(self.ctx.now_ms()) + 1,
        ))
    }

    /// Runs the held commands if their drive's stall has ended (each is judged
    /// again: it may be held again, dropped, failed or run).
    fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let Some(l) = self.lun() else {
            self.held.clear();
            return;
        };
        if l.faults.stalled(self.ctx.now_ms()) {
            return;
        }
        for h in std::mem::take(&mut self.held) {
            let cdb = &h.cdb[..h.cmd_len];
            self.execute_with(h.itt, h.lun, cdb, &h.out, h.edtl, h.read, h.r2ts);
        }
    }

    /// Write data this connection holds: writes collecting data and held writes.
    fn waiting_bytes(&self) -> usize {
        let w: usize = self.writes.values().map(|t| t.buf.len()).sum();
        w + self.held.iter().map(|h| h.out.len()).sum::<usize>()
    }

    /// Takes the next StatSN.
    fn stat(&mut self) -> u32 {
        let s = self.stat_sn;
        self.stat_sn = s.wrapping_add(1);
        s
    }

    fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.wrapping_add(WINDOW)
    }

    /// Whether `sn` is in [ExpCmdSN, MaxCmdSN] (serial arithmetic).
    fn in_window(&self, sn: u32) -> bool {
        sn.wrapping_sub(self.exp_cmd_sn) <= WINDOW
    }

    /// Advances ExpCmdSN past a non-immediate command.
    fn count_cmd(&mut self, p: &Pdu) {
        if !p.immediate() && (p.cmd_sn().wrapping_sub(self.exp_cmd_sn) as i32) >= 0 {
            self.exp_cmd_sn = p.cmd_sn().wrapping_add(1);
        }
    }

    /// Queues a status-bearing PDU (fills StatSN, ExpCmdSN, MaxCmdSN).
    fn send_status(&mut self, mut p: Pdu) {
        let sn = self.stat();
        p.set_sns(sn, self.exp_cmd_sn, self.max_cmd_sn());
        p.encode(&mut self.out);
    }

    /// Handles one PDU; `Ok(false)` ends the connection cleanly.
    fn on_pdu(&mut self, p: Pdu) -> Result<bool, SessionError> {
        match p.opcode() {
            op::SCSI_CMD => {
                if !p.immediate() && !self.in_window(p.cmd_sn()) {
                    // RFC 7143 §3.2.2.1: a command outside the window is dropped.
                    tracing::debug!(
                        cmd_sn = p.cmd_sn(),
                        exp = self.exp_cmd_sn,
                        "CmdSN outside the window: dropped"
                    );
                    return Ok(true);
                }
                self.count_cmd(&p);
                self.on_command(p)?;
            }
            op::DATA_OUT => self.on_data_out(p)?,
            op::NOP_OUT => {
                self.count_cmd(&p);
                if p.itt() != RESERVED_TAG {
                    let mut r = Pdu::new(op::NOP_IN);
                    r.set_flags(0x80);
                    r.set_lun(p.lun());
                    r.set_itt(p.itt());
                    r.set_u32(20, RESERVED_TAG);
                    r.data = p.data;
                    self.send_status(r);
                }
            }
            op::TASK_MGMT_REQ => {
                self.count_cmd(&p);
                let function = p.flags() & 0x7F;
                let before = self.held.len();
                match function {
                    1 => {
                        let tag = p.u32_at(20);
                        self.writes.remove(&tag);
                        self.held.retain(|h| h.itt != tag);
                    }
                    2 | 4..=7 => {
                        self.writes.clear();
                        self.held.clear();
                    }
                    _ => {}
                }
                if self.held.len() < before {
                    tracing::debug!(
                        function,
                        dropped = before - self.held.len(),
                        "task management dropped commands held by a stall"
                    );
                }
                let mut r = Pdu::new(op::TASK_MGMT_RESP);
                r.set_flags(0x80);
                r.set_itt(p.itt());
                r.bhs[2] = 0; // function complete
                self.send_status(r);
            }
            op::TEXT_REQ => {
                self.count_cmd(&p);
                self.on_text(&p)?;
            }
            op::LOGOUT_REQ => {
                self.count_cmd(&p);
                let mut r = Pdu::new(op::LOGOUT_RESP);
                r.set_flags(0x80);
                r.set_itt(p.itt());
                self.send_status(r);
                return Ok(false);
            }
            op::SNACK_REQ => self.reject(&p, 0x03),
            op::LOGIN_REQ => {
                self.reject(&p, 0x04);
                return Err(SessionError::Protocol(
                    "login request in the full feature phase".into(),
                ));
            }
            other => {
                return Err(SessionError::Protocol(format!("opcode {other:#04x}")));
            }
        }
        Ok(true)
    }

    /// Queues a Reject carrying the offending header.
    fn reject(&mut self, p: &Pdu, reason: u8) {
        let mut r = Pdu::new(op::REJECT);
        r.set_flags(0x80);
        r.bhs[2] = reason;
        r.set_itt(RESERVED_TAG);
        r.data = p.bhs.to_vec();
        self.send_status(r);
    }

    fn on_text(&mut self, p: &Pdu) -> Result<(), SessionError> {
        let ttt = p.ttt();
        let body = if ttt != RESERVED_TAG {
            match self.text.take() {
                Some((t, b, at)) if t == ttt => Some((b, at)),
                _ => None,
            }
        } else {
            None
        };
        let (bytes, at) = match body {
            Some(x) => x,
            None => {
                let keys = parse_text(&p.data)?;
                let mut answer: Vec<(String, String)> = Vec::new();
                for (k, v) in &keys {
                    if k != "SendTargets" {
                        answer.push((k.clone(), "NotUnderstood".into()));
                        continue;
                    }
                    let addr = match self.local {
                        SocketAddr::V4(a) => format!("{}:{},1", a.ip(), a.port()),
                        SocketAddr::V6(a) => format!("[{}]:{},1", a.ip(), a.port()),
                    };
                    for (i, iqn) in self.ctx.iqns.iter().enumerate() {
                        let wanted = match v.as_str() {
                            "All" => self.kind == SessionType::Discovery,
                            "" => self.lun_index == Some(i),
                            name => name == iqn,
                        };
                        if wanted {
                            answer.push(("TargetName".into(), iqn.clone()));
                            answer.push(("TargetAddress".into(), addr.clone()));
                        }
                    }
                }
                (encode_text(&answer), 0)
            }
        };
        let chunk = (self.params.send_dsl as usize).max(512);
        let end = (at + chunk).min(bytes.len());
        let mut r = Pdu::new(op::TEXT_RESP);
        r.set_itt(p.itt());
        r.data = bytes[at..end].to_vec();
        if end < bytes.len() {
            let t = self.ttt();
            r.set_flags(0x40);
            r.set_u32(20, t);
            self.text = Some((t, bytes, end));
        } else {
            r.set_flags(0x80);
            r.set_u32(20, RESERVED_TAG);
        }
        self.send_status(r);
        Ok(())
    }

    fn ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        t
    }

    fn on_command(&mut self, p: Pdu) -> Result<(), SessionError> {
        let flags = p.flags();
        let (read, write) = (flags & 0x40 != 0, flags & 0x20 != 0);
        let edtl = p.u32_at(20);
        let mut cdb = [0u8; 16];
        cdb.copy_from_slice(&p.bhs[32..48]);
        let cmd_len = cdb_len(cdb[0]);
        if self.kind != SessionType::Normal {
            self.reject(&p, 0x05);
            return Ok(());
        }
        if !write {
            self.execute(p.itt(), p.lun(), &cdb[..cmd_len], &[], edtl, read);
            return Ok(());
        }
        let max_write = self.ctx.max_write;
        if edtl as usize > max_write || p.data.len() > edtl as usize {
            self.respond(p.itt(), p.lun(), 0, &Answer::check(5, 0x24, 0), edtl, 0);
            return Ok(());
        }
        // Writes waiting for their data share one budget per connection (immediate
        // commands bypass the command window, so the window alone bounds nothing).
        let waiting = self.waiting_bytes();
        if waiting + edtl as usize > max_write {
            let full = Answer {
                status: TASK_SET_FULL,
                sense: Vec::new(),
            };
            self.respond(p.itt(), p.lun(), 0, &full, edtl, 0);
            return Ok(());
        }
        let mut buf = vec![0u8; edtl as usize];
        buf[..p.data.len()].copy_from_slice(&p.data);
        let t = WriteTask {
            lun: p.lun(),
            cdb,
            cmd_len,
            buf,
            received: p.data.len(),
            unsolicited_open: !p.is_final(),
            r2t: None,
            r2t_sn: 0,
            data_sn: 0,
        };
        self.writes.insert(p.itt(), t);
        self.advance_write(p.itt());
        Ok(())
    }

    fn on_data_out(&mut self, p: Pdu) -> Result<(), SessionError> {
        let itt = p.itt();
        let Some(t) = self.writes.get_mut(&itt) else {
            // Data for a task we no longer have (aborted or refused): drop it.
            return Ok(());
        };
        let off = p.u32_at(40) as usize;
        let end = off.checked_add(p.data.len()).filter(|&e| e <= t.buf.len());
        let Some(end) = end else {
            return Err(SessionError::Protocol(format!(
                "Data-Out beyond the expected length (offset {off}, {} bytes)",
                p.data.len()
            )));
        };
        if p.u32_at(36) != t.data_sn {
            // Error recovery level 0: a sequence error ends the connection.
            return Err(SessionError::Protocol(format!(
                "Data-Out DataSN {} where {} was due",
                p.u32_at(36),
                t.data_sn
            )));
        }
        t.data_sn += 1;
        t.buf[off..end].copy_from_slice(&p.data);
        t.received += p.data.len();
        if p.is_final() {
            t.data_sn = 0;
            if p.ttt() == RESERVED_TAG {
                t.unsolicited_open = false;
            } else if t.r2t.is_some_and(|(tt, _)| tt == p.ttt()) {
                t.r2t = None;
            }
            self.advance_write(itt);
        }
        Ok(())
    }

    /// Runs a write whose data is complete, or asks for more.
    fn advance_write(&mut self, itt: u32) {
        let Some(t) = self.writes.get(&itt) else {
            return;
        };
        if t.unsolicited_open || t.r2t.is_some() {
            return;
        }
        if t.received >= t.buf.len() {
            let Some(t) = self.writes.remove(&itt) else {
                return;
            };
            let edtl = t.buf.len() as u32;
            self.execute_write(itt, &t, edtl);
            return;
        }
        let ttt = self.ttt();
        let max_burst = self.params.max_burst as usize;
        let (exp, max) = (self.exp_cmd_sn, self.max_cmd_sn());
        let sn = self.stat_sn;
        let Some(t) = self.writes.get_mut(&itt) else {
            return;
        };
        let off = t.received;
        let len = (t.buf.len() - off).min(max_burst);
        let mut r = Pdu::new(op::R2T);
        r.set_flags(0x80);
        r.set_lun(t.lun);
        r.set_itt(itt);
        r.set_u32(20, ttt);
        r.set_sns(sn, exp, max); // R2T carries StatSN without advancing it
        r.set_u32(36, t.r2t_sn);
        r.set_u32(40, off as u32);
        r.set_u32(44, len as u32);
        t.r2t_sn += 1;
        t.r2t = Some((ttt, off + len));
        r.encode(&mut self.out);
    }

    fn execute_write(&mut self, itt: u32, t: &WriteTask, edtl: u32) {
        let cdb = &t.cdb[..t.cmd_len];
        self.execute_with(itt, t.lun, cdb, &t.buf, edtl, false, t.r2t_sn);
    }

    fn execute(&mut self, itt: u32, lun: [u8; 8], cdb: &[u8], out: &[u8], edtl: u32, read: bool) {
        self.execute_with(itt, lun, cdb, out, edtl, read, 0);
    }

    #[allow(clippy::too_many_arguments)] // one internal call shape for reads and writes
    fn execute_with(
        &mut self,
        itt: u32,
        lun: [u8; 8],
        cdb: &[u8],
        out: &[u8],
        edtl: u32,
        read: bool,
        r2ts: u32,
    ) {
        let unit = self.lun().filter(|_| lun == [0; 8]);
        let mut drop_reply = false;
        if let Some(l) = unit {
            match l.faults.judge_seeded(&self.initiator, self.ctx.now_ms()) {
                Verdict::Execute => {}
                Verdict::ExecuteAndDrop => drop_reply = true,
                Verdict::Ignore => return,
                Verdict::Hold => {
                    if self.held.len() >= self.ctx.max_held {
                        let full = Answer {
                            status: TASK_SET_FULL,
                            sense: Vec::new(),
                        };
                        self.respond(itt, lun, 0, &full, edtl, if read { 0 } else { r2ts });
                        return;
                    }
                    let mut c = [0u8; 16];
                    let n = cdb.len().min(16);
                    c[..n].copy_from_slice(&cdb[..n]);
                    self.held.push(HeldTask {
                        itt,
                        lun,
                        cdb: c,
                        cmd_len: n,
                        out: out.to_vec(),
                        edtl,
                        read,
                        r2ts,
                    });
                    return;
                }
                Verdict::IoError => {
                    self.delay_answer(l);
                    let a = Answer::check(HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE, 0);
                    self.respond(itt, lun, 0, &a, edtl, if read { 0 } else { r2ts });
                    return;
                }
            }
        }
        let mut data_in = std::mem::take(&mut self.data_in);
        let a = match unit {
            Some(l) => l.execute(self.ctx.now_ms(), cdb, out, &mut data_in),
            None => absent_lun(cdb, &mut data_in),
        };
        if drop_reply {
            // Executed; the response is lost on the way.
            self.data_in = data_in;
            return;
        }
        if let Some(l) = unit {
            self.delay_answer(l);
        }
        if !read {
            // Data-in for a command without the R bit cannot be delivered.
            data_in.clear();
        }
        // Residual of a write: what the command used against what was announced.
        let used = if read {
            data_in.len()
        } else {
            write_len(cdb).unwrap_or(out.len())
        };
        let sent = self.send_data_in(itt, lun, &a, &data_in, edtl);
        if !(sent && a.status == 0 && a.sense.is_empty()) {
            self.respond(
                itt,
                lun,
                used,
                &a,
                edtl,
                if read {
                    sent_count(&data_in, edtl, self.params)
                } else {
                    r2ts
                },
            );
        }
        self.data_in = data_in;
    }

    /// Sends the Data-In PDUs of a read; `true` if the status went in the last one.
    fn send_data_in(&mut self, itt: u32, lun: [u8; 8], a: &Answer, data: &[u8], edtl: u32) -> bool {
        let n = data.len().min(edtl as usize);
        if n == 0 {
            return false;
        }
        let status_inline = a.status == 0 && a.sense.is_empty();
        let seg = (self.params.send_dsl as usize).max(512);
        let burst = (self.params.max_burst as usize).max(seg);
        let mut off = 0;
        let mut sn = 0u32;
        while off < n {
            let in_burst = burst - off % burst;
            let len = seg.min(n - off).min(in_burst);
            let last = off + len == n;
            let mut r = Pdu::new(op::DATA_IN);
            let mut flags = 0u8;
            if last || len == in_burst {
                flags |= 0x80;
            }
            r.set_lun(lun);
            r.set_itt(itt);
            r.set_u32(20, RESERVED_TAG);
            r.set_u32(36, sn);
            r.set_u32(40, off as u32);
            r.data = data[off..off + len].to_vec();
            if last && status_inline {
                flags |= 0x81;
                let (rf, residual) = residual(data.len(), edtl);
                flags |= rf;
                r.set_u32(44, residual);
                r.set_flags(flags);
                r.bhs[3] = a.status;
                self.send_status(r);
            } else {
                r.set_flags(flags);
                r.set_u32(28, self.exp_cmd_sn);
                r.set_u32(32, self.max_cmd_sn());
                r.encode(&mut self.out);
            }
            sn += 1;
            off += len;
        }
        status_inline
    }

    /// Sends a SCSI Response (status, sense, residual of `used` against `edtl`).
    fn respond(
        &mut self,
        itt: u32,
        _lun: [u8; 8],
        used: usize,
        a: &Answer,
        edtl: u32,
        data_sns: u32,
    ) {
        let mut r = Pdu::new(op::SCSI_RESP);
        let (rf, resid) = residual(used, edtl);
        r.set_flags(0x80 | rf);
        r.bhs[2] = 0; // command completed at target
        r.bhs[3] = a.status;
        r.set_itt(itt);
        r.set_u32(36, data_sns);
        r.set_u32(44, resid);
        if !a.sense.is_empty() {
            let mut d = (a.sense.len() as u16).to_be_bytes().to_vec();
            d.extend_from_slice(&a.sense);
            r.data = d;
        }
        self.send_status(r);
    }
}

/// Residual flags (O 0x04, U 0x02) and count of `used` bytes against `edtl`.
fn residual(used: usize, edtl: u32) -> (u8, u32) {
    let edtl = edtl as usize;
    match used.cmp(&edtl) {
        std::cmp::Ordering::Greater => (0x04, (used - edtl).min(u32::MAX as usize) as u32),
        std::cmp::Ordering::Less => (0x02, (edtl - used) as u32),
        std::cmp::Ordering::Equal => (0, 0),
    }
}

/// Data-In PDUs a read of `data` (cut to `edtl`) took, for ExpDataSN.
fn sent_count(data: &[u8], edtl: u32, p: Params) -> u32 {
    let n = data.len().min(edtl as usize);
    let seg = (p.send_dsl as usize).max(512);
    let burst = (p.max_burst as usize).max(seg);
    let per_burst = burst.div_ceil(seg);
    let full = n / burst;
    let rest = n % burst;
    (full * per_burst + rest.div_ceil(seg)) as u32
}

/// Bytes a WRITE CDB transfers, `None` for other commands.
fn write_len(cdb: &[u8]) -> Option<usize> {
    let blocks = match *cdb.first()? {
        0x0A => match cdb.get(4)? {
            0 => 256,
            &n => u64::from(n),
        },
        0x2A => u64::from(u16::from_be_bytes([*cdb.get(7)?, *cdb.get(8)?])),
        0x8A => {
            let b = cdb.get(10..14)?;
            u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
        _ => return None,
    };
    Some((blocks * BLOCK) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residuals() {
        assert_eq!(residual(36, 255), (0x02, 219));
        assert_eq!(residual(512, 256), (0x04, 256));
        assert_eq!(residual(8, 8), (0, 0));
    }

    #[test]
    fn data_in_pdu_count() {
        let mut p = Params::defaults(&super::super::login::Limits::default());
        p.send_dsl = 8192;
        p.max_burst = 16384;
        assert_eq!(sent_count(&[0; 100], 1000, p), 1);
        assert_eq!(sent_count(&[0; 20000], 20000, p), 3);
        assert_eq!(sent_count(&[0; 20000], 0, p), 0);
    }

    #[test]
    fn write_lengths() {
        assert_eq!(write_len(&[0x2A, 0, 0, 0, 0, 0, 0, 0, 2, 0]), Some(1024));
        assert_eq!(write_len(&[0x0A, 0, 0, 0, 0, 0]), Some(256 * 512));
        assert_eq!(write_len(&[0xF0; 16]), None);
    }
}
