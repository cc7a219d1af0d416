//! The iSCSI target front end of the simulator: every simulated drive is a disk
//! an initiator (the Linux kernel's, libiscsi's, QEMU's) can log in to, whose
//! IDM opcode `0xF0` reaches the same firmware the native framed protocol
//! serves.
//!
//! **Layout: one target per drive**, each with one LUN (LUN 0), named
//! `iqn.2026-11.org.idm-engine:<drive>` ([`iqn_of`]). "Attach three drives" is
//! then "log in to three targets", and each target's LUN is a whole drive with
//! its own WWN, as separate IDM drives on a SAN are.
//!
//! **Threads, not the ring**: the listener runs on its own thread with blocking
//! std sockets and one thread per connection, plus its reader thread after login
//! ([`session`]). The native server's io_uring loop stays as it is; iSCSI
//! traffic (block I/O, a few initiators) does not need its scale. The two front
//! ends share each drive's firmware behind a mutex (locked for one command) and
//! one drive clock
//! ([`crate::SharedDrives`]), so a lock taken over iSCSI is seen by a
//! native client and the other way round.
//!
//! **Faults are the drive's** ([`crate::faults::DriveFaults`], shared with
//! the native server, set by `idm fault` through its control protocol) and apply
//! to every SCSI command of the drive's LUN, as a real drive behind a healthy
//! target would show them (the target itself keeps answering NOP-Out, task
//! management, text and logout):
//!
//! | fault | an iSCSI command received while it holds |
//! | --- | --- |
//! | `stop`, `cut` (by `InitiatorName`) | not executed, no response ever: the initiator's timeout and abort path runs |
//! | `stall` | held (not executed) until the stall ends or `resume`/`heal`, then executed and answered; ABORT TASK, ABORT/CLEAR TASK SET, LUN and target resets drop held commands (never executed, never answered), logout or a closed connection too |
//! | `io_error` | not executed; CHECK CONDITION, fixed sense, HARDWARE ERROR (4), ASC 0x44 (internal target failure) |
//! | `drop` | executed, the response (Data-In and status) not sent |
//! | `power_cycle` | the shared table is lost |
//!
//! The drive's latency model delays each command's answer too (answers leave in
//! order: [`session`]).
//!
//! **Limits** ([`IscsiConfig`], flags of `idm sim`): at most `max_conns`
//! connection threads (one more is answered "service unavailable" by a single
//! refuser thread and closed); a login must complete within `login_timeout` and
//! its text stays under [`Limits::max_login_text`]; write data waiting on one
//! connection stays under `max_write`; a logged-in connection idle
//! (or not reading) for `idle_timeout` is closed; accept errors back off. Refusals
//! are logged through a [`RateLog`], not per event.
//!
//! Modules: [`pdu`] (codec), [`login`] (login phase and key negotiation),
//! [`session`] (one connection), [`scsi`] (the disk: data area and command set).
//!
//! What is implemented: SendTargets discovery, login without authentication,
//! digests off, ERL 0, one connection per session, immediate / unsolicited /
//! solicited (R2T) write data, Data-In with the status in the last PDU or a
//! separate SCSI Response with sense, NOP-Out/NOP-In, task management answered
//! "function complete" (ABORT TASK and the resets drop the commands they name
//! that a stall holds), logout. Not implemented: CHAP, digests, multiple
//! connections per session, error recovery (SNACK is rejected), target-initiated
//! NOP-In pings, asynchronous messages.

pub mod login;
pub mod pdu;
pub mod scsi;
pub mod session;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use login::Limits;
pub use scsi::{Disk, Lun};

use super::server::SharedDrives;
use super::{RateLog, SimError};
use pdu::{op, read_pdu, Pdu};

/// The IQN prefix of every simulated drive's target.
pub const IQN_PREFIX: &str = "iqn.2026-11.org.idm-engine:";

/// The target name of drive `name`: [`IQN_PREFIX`] + the name in lower case
/// (IQNs are case-insensitive and normalised to lower case).
pub fn iqn_of(name: &str) -> String {
    format!("{IQN_PREFIX}{}", name.to_lowercase())
}

/// How the iSCSI front end is built.
#[derive(Clone, Debug)]
pub struct IscsiConfig {
    /// Size of every LUN's data area, bytes (rounded down to 512-byte blocks).
    pub lun_bytes: u64,
    /// Keep each drive's data in `DIR/<drive>.img` instead of sparse RAM.
    pub backing: Option<PathBuf>,
    /// Negotiation limits (and the login text limit).
    pub limits: Limits,
    /// Most connections (threads) at once. One more is answered, if it sends its
    /// login request within [`REFUSE_WAIT`], with a login response "service
    /// unavailable" (status 0x0301), and closed.
    pub max_conns: usize,
    /// A login must complete within this long from the connection's accept.
    /// Zero: no limit.
    pub login_timeout: Duration,
    /// After login, a connection that sends nothing for this long (initiators ping
    /// idle sessions with NOP-Out), or does not take a response for this long, is
    /// closed. Zero: never.
    pub idle_timeout: Duration,
    /// After a failed accept the listener waits this long before trying again.
    pub accept_backoff: Duration,
    /// Write data one connection may have waiting, bytes, over all its writes
    /// (each buffered until complete): a larger write is refused, and one that
    /// would take the connection past it is answered TASK SET FULL.
    pub max_write: usize,
    /// Commands one connection may have held by a stall of its drive (their write
    /// data counts against `max_write` too); one more is answered TASK SET FULL.
    pub max_held: usize,
}

impl Default for IscsiConfig {
    fn default() -> Self {
        IscsiConfig {
            lun_bytes: 64 << 20,
            backing: None,
            limits: Limits::default(),
            max_conns: 64,
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            accept_backoff: Duration::from_millis(100),
            max_write: 32 << 20,
            max_held: 64,
        }
    }
}

/// How long a refused connection is given to send its login request (to be
/// answered "service unavailable") before it is simply closed.
pub const REFUSE_WAIT: Duration = Duration::from_millis(500);
/// Refused connections waiting for that answer at most; more are closed at once.
const REFUSE_QUEUE: usize = 16;

/// Rate limits of the log lines about refused or failed connections.
#[derive(Default)]
pub(crate) struct Logs {
    pub(crate) refused: RateLog,
    pub(crate) login_failed: RateLog,
    pub(crate) closed_on_error: RateLog,
}

/// What every connection thread shares.
pub(crate) struct Ctx {
    pub(crate) luns: Vec<Lun>,
    pub(crate) iqns: Vec<String>,
    pub(crate) limits: Limits,
    pub(crate) login_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_write: usize,
    pub(crate) max_held: usize,
    pub(crate) next_tsih: AtomicU16,
    pub(crate) logs: Mutex<Logs>,
    start: Instant,
}

impl Ctx {
    pub(crate) fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Runs `f` on one of the rate-limited logs.
    pub(crate) fn log<T>(&self, f: impl FnOnce(&mut Logs) -> T) -> T {
        f(&mut lock(&self.logs))
    }
}

/// Open connections: a clone of each socket (to shut it down on stop) and its thread.
type ConnList = Arc<Mutex<Vec<(u64, TcpStream, Option<JoinHandle<()>>)>>>;

/// A running iSCSI target (see the module docs). Dropping it stops it.
pub struct IscsiTarget {
    addr: SocketAddr,
    iqns: Vec<String>,
    stop: Arc<AtomicBool>,
    conns: ConnList,
    thread: Option<JoinHandle<()>>,
    refuser: Option<JoinHandle<()>>,
}

impl IscsiTarget {
    /// Builds one LUN per drive of `drives` and serves them on `addr` (port 0
    /// binds a free port; see [`IscsiTarget::local_addr`]) from a new thread.
    pub fn start(
        drives: &SharedDrives,
        cfg: &IscsiConfig,
        addr: SocketAddr,
    ) -> Result<IscsiTarget, SimError> {
        let mut luns = Vec::new();
        let mut iqns: Vec<String> = Vec::new();
        for d in &drives.drives {
            let disk = match &cfg.backing {
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    Disk::file(&dir.join(format!("{}.img", d.name)), cfg.lun_bytes)?
                }
                None => Disk::ram(cfg.lun_bytes),
            };
            let iqn = iqn_of(&d.name);
            if iqns.contains(&iqn) {
                return Err(SimError::Config(format!(
                    "drive names `{}` collide as iSCSI target names",
                    d.name
                )));
            }
            iqns.push(iqn);
            luns.push(Lun {
                name: d.name.clone(),
                fw: Arc::clone(&d.fw),
                disk: Arc::new(disk),
                faults: Arc::clone(&d.faults),
            });
        }
        let ctx = Arc::new(Ctx {
            luns,
            iqns: iqns.clone(),
            limits: cfg.limits,
            login_timeout: cfg.login_timeout,
            idle_timeout: cfg.idle_timeout,
            max_write: cfg.max_write,
            max_held: cfg.max_held,
            next_tsih: AtomicU16::new(1),
            logs: Mutex::new(Logs::default()),
            start: drives.start,
        });
        if cfg.max_conns == 0 {
            return Err(SimError::Config(
                "iSCSI max_conns must be at least 1".into(),
            ));
        }
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: ConnList = Arc::new(Mutex::new(Vec::new()));
        let (refuse_tx, refuse_rx) = sync_channel::<TcpStream>(REFUSE_QUEUE);
        let refuser = std::thread::Builder::new()
            .name("idm-iscsi-refuse".into())
            .spawn(move || refuse_loop(&refuse_rx))?;
        let thread = {
            let stop = Arc::clone(&stop);
            let conns = Arc::clone(&conns);
            let a = Accept {
                max_conns: cfg.max_conns,
                backoff: cfg.accept_backoff,
                refuse: refuse_tx,
            };
            std::thread::Builder::new()
                .name("idm-iscsi".into())
                .spawn(move || accept_loop(&listener, &ctx, &stop, &conns, &a))?
        };
        Ok(IscsiTarget {
            addr,
            iqns,
            stop,
            conns,
            thread: Some(thread),
            refuser: Some(refuser),
        })
    }

    /// Connections being served now.
    pub fn connections(&self) -> usize {
        lock(&self.conns).len()
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The target names, by drive id.
    pub fn iqns(&self) -> &[String] {
        &self.iqns
    }

    /// Stops accepting, closes every connection and waits for the threads.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let Some(t) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        drop(TcpStream::connect(self.addr));
        // The accept thread held the refuser's only sender: it ends too.
        let _ = t.join();
        if let Some(r) = self.refuser.take() {
            let _ = r.join();
        }
        let list = std::mem::take(&mut *lock(&self.conns));
        for (_, s, h) in list {
            let _ = s.shutdown(std::net::Shutdown::Both);
            if let Some(h) = h {
                let _ = h.join();
            }
        }
    }
}

impl Drop for IscsiTarget {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The accept thread's settings.
struct Accept {
    max_conns: usize,
    backoff: Duration,
    refuse: SyncSender<TcpStream>,
}

fn accept_loop(
    listener: &TcpListener,
    ctx: &Arc<Ctx>,
    stop: &AtomicBool,
    conns: &ConnList,
    a: &Accept,
) {
    let mut next_id = 0u64;
    let mut failures = 0u64;
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning; one
                // log line per episode.
                if failures == 0 {
                    tracing::warn!(
                        error = %e,
                        backoff_ms = a.backoff.as_millis() as u64,
                        "iSCSI accept failed: retrying after each backoff; further failures are counted, not logged, until an accept succeeds"
                    );
                }
                failures += 1;
                std::thread::sleep(a.backoff);
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(failures, "iSCSI accepting again");
            failures = 0;
        }
        let mut guard = lock(conns);
        if guard.len() >= a.max_conns {
            drop(guard);
            if let Some(quiet) = ctx.log(|l| l.refused.hit(Instant::now())) {
                tracing::warn!(
                    %peer,
                    max_conns = a.max_conns,
                    not_logged = quiet,
                    "iSCSI connection limit reached: refusing new connections"
                );
            }
            // The refuser answers it; if too many wait already, it is just closed.
            if let Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) =
                a.refuse.try_send(stream)
            {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            continue;
        }
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let id = next_id;
        next_id += 1;
        let ctx = Arc::clone(ctx);
        let list = Arc::clone(conns);
        let spawned = std::thread::Builder::new()
            .name(format!("idm-iscsi-{id}"))
            .spawn(move || {
                if let Err(e) = session::serve(&ctx, stream) {
                    if let Some(quiet) = ctx.log(|l| l.closed_on_error.hit(Instant::now())) {
                        tracing::warn!(%peer, error = %e, not_logged = quiet, "iSCSI connection closed on error");
                    }
                }
                // Forget this connection (dropping our own handle detaches nothing
                // that is still needed: the thread is ending).
                lock(&list).retain(|(i, _, _)| *i != id);
            });
        match spawned {
            Ok(h) => guard.push((id, clone, Some(h))),
            Err(e) => tracing::warn!(error = %e, "cannot start an iSCSI connection thread"),
        }
    }
}

/// Answers refused connections: reads the login request (within
/// [`REFUSE_WAIT`]), answers "service unavailable", closes.
fn refuse_loop(rx: &Receiver<TcpStream>) {
    while let Ok(s) = rx.recv() {
        let _ = s.set_read_timeout(Some(REFUSE_WAIT));
        let _ = s.set_write_timeout(Some(REFUSE_WAIT));
        let mut r = &s;
        if let Ok(Some(req)) = read_pdu(&mut r, 64 * 1024) {
            if req.opcode() == op::LOGIN_REQ {
                let mut resp = Pdu::new(op::LOGIN_RESP);
                resp.bhs[8..14].copy_from_slice(&req.bhs[8..14]); // ISID
                resp.set_itt(req.itt());
                let sn = req.exp_stat_sn();
                resp.set_sns(sn, req.cmd_sn(), req.cmd_sn());
                resp.bhs[36..38].copy_from_slice(&login::status::SERVICE_UNAVAILABLE.to_be_bytes());
                let _ = (&s).write_all(&resp.to_bytes());
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}
