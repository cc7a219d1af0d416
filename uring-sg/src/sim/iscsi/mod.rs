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
//! std sockets and one thread per connection ([`session`]). The native server's
//! io_uring loop stays as it is; iSCSI traffic (block I/O, a few initiators) does
//! not need its scale. The two front ends share each drive's firmware behind a
//! mutex (locked for one command) and one drive clock
//! ([`crate::sim::SharedDrives`]), so a lock taken over iSCSI is seen by a
//! native client and the other way round. The native server's latency and fault
//! injection do not apply to iSCSI commands (a power cycle does: it clears the
//! shared table).
//!
//! Modules: [`pdu`] (codec), [`login`] (login phase and key negotiation),
//! [`session`] (one connection), [`scsi`] (the disk: data area and command set).
//!
//! What is implemented: SendTargets discovery, login without authentication,
//! digests off, ERL 0, one connection per session, immediate / unsolicited /
//! solicited (R2T) write data, Data-In with the status in the last PDU or a
//! separate SCSI Response with sense, NOP-Out/NOP-In, task management answered
//! "function complete", logout. Not implemented: CHAP, digests, multiple
//! connections per session, error recovery (SNACK is rejected), target-initiated
//! NOP-In pings, asynchronous messages.

pub mod login;
pub mod pdu;
pub mod scsi;
pub mod session;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

pub use login::Limits;
pub use scsi::{Disk, Lun};

use super::server::SharedDrives;
use super::SimError;

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
    /// Negotiation limits.
    pub limits: Limits,
}

impl Default for IscsiConfig {
    fn default() -> Self {
        IscsiConfig {
            lun_bytes: 64 << 20,
            backing: None,
            limits: Limits::default(),
        }
    }
}

/// What every connection thread shares.
pub(crate) struct Ctx {
    pub(crate) luns: Vec<Lun>,
    pub(crate) iqns: Vec<String>,
    pub(crate) limits: Limits,
    pub(crate) next_tsih: AtomicU16,
    start: Instant,
}

impl Ctx {
    pub(crate) fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
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
            });
        }
        let ctx = Arc::new(Ctx {
            luns,
            iqns: iqns.clone(),
            limits: cfg.limits,
            next_tsih: AtomicU16::new(1),
            start: drives.start,
        });
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: ConnList = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            let conns = Arc::clone(&conns);
            std::thread::Builder::new()
                .name("idm-iscsi".into())
                .spawn(move || accept_loop(&listener, &ctx, &stop, &conns))?
        };
        Ok(IscsiTarget {
            addr,
            iqns,
            stop,
            conns,
            thread: Some(thread),
        })
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
        let _ = t.join();
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

fn accept_loop(listener: &TcpListener, ctx: &Arc<Ctx>, stop: &AtomicBool, conns: &ConnList) {
    let mut next_id = 0u64;
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "iSCSI accept failed");
                continue;
            }
        };
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let id = next_id;
        next_id += 1;
        let ctx = Arc::clone(ctx);
        let list = Arc::clone(conns);
        let mut guard = lock(conns);
        let spawned = std::thread::Builder::new()
            .name(format!("idm-iscsi-{id}"))
            .spawn(move || {
                if let Err(e) = session::serve(&ctx, stream) {
                    tracing::warn!(%peer, error = %e, "iSCSI connection closed on error");
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
