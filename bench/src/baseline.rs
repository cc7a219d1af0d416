//! The old stack's algorithm, written plainly, for same-run baselines.
//!
//! This is a model of how the old lock manager (`propeller` behind lvmlockd's
//! `ilm.h`) drove IDM drives, run against the very same socket simulator server
//! the engine uses, so that only the host algorithm differs. What it does, and
//! why (IDM.md §7, "Known weaknesses of the old stack"):
//!
//! - **A new connection per command.** The old daemon opened the sg node for
//!   every command and closed it afterwards. Here every command is a fresh Unix
//!   socket: connect, HELLO, ATTACH, one COMMAND, its REPLY, close. That is the
//!   simulator's equivalent of `open()` + `SG_IO` + `close()`.
//! - **A small fixed worker pool, and wait for every drive.** An operation on N
//!   drives hands one command per drive to a pool of [`POOL_THREADS`] blocking
//!   worker threads and waits until **every** drive answered, even after a
//!   majority did. The old daemon used a fixed worker pool in the same way; its
//!   exact size is not part of this model (8 is generous on a 2-core machine:
//!   with modelled latency, 8 drives are served fully in parallel).
//! - **Blocking calls, one at a time per caller.** A caller thread blocks on each
//!   operation; nothing is batched across operations.
//! - **Acquire** = trylock on every drive; a majority of grants wins. Otherwise
//!   the grants are undone (unlock on those drives), the caller backs off a
//!   random 0.5–1 ms and retries until its deadline. A drive answering "already
//!   held by this host" counts as granted.
//! - **Release** = unlock (control byte 1, as the old code sent) on every drive,
//!   then destroy on every drive (the old code destroyed after every unlock).
//! - **Renewal** = one lock at a time: refresh on all its drives, wait for all,
//!   then the next lock.
//! - **Table read** = two round trips per drive: the record count, then that
//!   many records.
//!
//! Everything is blocking `std` I/O; errors are values ([`BaselineError`]).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use idm_sim::frame::{self, CommandFrame, Frame, STATUS_TRANSPORT_ERROR};
use rand::Rng;
use uring_sg::codec::{
    decode_table_count, Condition, ControlByte, DriveError, MutexOp, MutexState, Record, ScsiStatus,
};
use uring_sg::transport::Request;
use uring_sg::{HostId, LockId, Mode};

/// Worker threads of one baseline "daemon".
pub const POOL_THREADS: usize = 8;

/// What can go wrong in a baseline operation.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// Socket trouble talking to the simulator.
    #[error("simulator I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The simulator sent something unexpected.
    #[error("simulator protocol: {0}")]
    Protocol(String),
    /// No majority before the deadline.
    #[error("no majority: {granted} of {drives} drives")]
    NoMajority {
        /// Drives that granted in the last round.
        granted: usize,
        /// Drives of the lock.
        drives: usize,
    },
    /// The worker pool is gone.
    #[error("worker pool stopped")]
    Stopped,
}

/// One drive's answer: the decoded result and data-in.
type Answer = (Result<(), DriveError>, Vec<u8>);

/// A job for the pool: one command to one drive, and where its answer goes.
struct Job {
    drive: String,
    req: Request,
    index: usize,
    reply: mpsc::Sender<(usize, Result<Answer, BaselineError>)>,
}

/// The old stack's host side: a worker pool and the socket path of the simulator.
pub struct Baseline {
    tx: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    host: HostId,
    lease_ms: u64,
    commands: Arc<AtomicU64>,
}

/// Reads one frame from `s` into `buf`.
fn read_frame(s: &mut UnixStream, buf: &mut Vec<u8>) -> Result<(), BaselineError> {
    buf.clear();
    buf.resize(4, 0);
    s.read_exact(&mut buf[..4])?;
    let total = frame::frame_len(buf)
        .map_err(|e| BaselineError::Protocol(e.to_string()))?
        .ok_or_else(|| BaselineError::Protocol("short frame header".into()))?;
    buf.resize(total, 0);
    s.read_exact(&mut buf[4..])?;
    Ok(())
}

fn send_frame(s: &mut UnixStream, f: &Frame<'_>, out: &mut Vec<u8>) -> Result<(), BaselineError> {
    out.clear();
    f.encode(out)
        .map_err(|e| BaselineError::Protocol(e.to_string()))?;
    s.write_all(out)?;
    Ok(())
}

fn decoded(buf: &[u8]) -> Result<Frame<'_>, BaselineError> {
    frame::decode(buf)
        .map_err(|e| BaselineError::Protocol(e.to_string()))?
        .map(|(f, _)| f)
        .ok_or_else(|| BaselineError::Protocol("truncated frame".into()))
}

/// One command the old way: connect, HELLO, ATTACH, COMMAND, REPLY, close.
fn one_command(
    path: &PathBuf,
    client: &str,
    drive: &str,
    req: &Request,
) -> Result<Answer, BaselineError> {
    let mut s = UnixStream::connect(path)?;
    let mut out = Vec::with_capacity(1024);
    let mut buf = Vec::with_capacity(1024);
    send_frame(&mut s, &Frame::Hello { client }, &mut out)?;
    read_frame(&mut s, &mut buf)?;
    if !matches!(decoded(&buf)?, Frame::HelloOk { .. }) {
        return Err(BaselineError::Protocol("expected HELLO_OK".into()));
    }
    send_frame(&mut s, &Frame::Attach { drive }, &mut out)?;
    read_frame(&mut s, &mut buf)?;
    let id = match decoded(&buf)? {
        Frame::Attached { drive } => drive,
        other => {
            return Err(BaselineError::Protocol(format!(
                "expected ATTACHED, got {:#04x}",
                other.kind()
            )))
        }
    };
    let (cdb, cdb_len) = req.scsi_cdb();
    let mut record = [0u8; uring_sg::codec::RECORD_LEN];
    let data_out: &[u8] = if req.encode_data_out(&mut record) {
        &record
    } else {
        &[]
    };
    out.clear();
    frame::encode_command(
        &mut out,
        &CommandFrame {
            tag: 1,
            drive: id,
            cdb: &cdb[..cdb_len],
            data_in_len: req.data_in_len() as u32,
            data_out,
        },
    )
    .map_err(|e| BaselineError::Protocol(e.to_string()))?;
    s.write_all(&out)?;
    read_frame(&mut s, &mut buf)?;
    match decoded(&buf)? {
        Frame::Reply(r) => {
            let result = if r.status == STATUS_TRANSPORT_ERROR {
                Err(DriveError::Io(5))
            } else {
                Condition::from_scsi(ScsiStatus(r.status), r.sense).into_result(req.kind())
            };
            Ok((result, r.data.to_vec()))
        }
        other => Err(BaselineError::Protocol(format!(
            "expected REPLY, got {:#04x}",
            other.kind()
        ))),
    }
    // The socket closes here, as the old code closed the sg node.
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Baseline {
    /// A baseline host called `name` (its thread names start with `bl-<name>`)
    /// with host ID `host`, talking to the simulator at Unix socket `path`.
    pub fn new(name: &str, path: PathBuf, host: HostId, lease_ms: u64) -> Baseline {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let commands = Arc::new(AtomicU64::new(0));
        let threads = (0..POOL_THREADS)
            .filter_map(|i| {
                let rx = rx.clone();
                let path = path.clone();
                let client = format!("baseline-{name}");
                let commands = commands.clone();
                std::thread::Builder::new()
                    .name(format!("bl-{name}-{i}"))
                    .spawn(move || loop {
                        let job = {
                            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                            guard.recv()
                        };
                        let Ok(job) = job else { break };
                        commands.fetch_add(1, Ordering::Relaxed);
                        let r = one_command(&path, &client, &job.drive, &job.req);
                        let _ = job.reply.send((job.index, r));
                    })
                    .ok()
            })
            .collect();
        Baseline {
            tx: Some(tx),
            threads,
            host,
            lease_ms,
            commands,
        }
    }

    /// Drive commands sent so far.
    pub fn commands(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    /// Sends `make(i)` to every drive `drives[i]` through the pool and waits for
    /// every answer (the old stack's "wait for all").
    fn all(
        &self,
        drives: &[String],
        make: impl Fn(usize) -> Request,
    ) -> Result<Vec<Answer>, BaselineError> {
        let tx = self.tx.as_ref().ok_or(BaselineError::Stopped)?;
        let (rtx, rrx) = mpsc::channel();
        for (index, d) in drives.iter().enumerate() {
            tx.send(Job {
                drive: d.clone(),
                req: make(index),
                index,
                reply: rtx.clone(),
            })
            .map_err(|_| BaselineError::Stopped)?;
        }
        drop(rtx);
        let mut out: Vec<Option<Answer>> = (0..drives.len()).map(|_| None).collect();
        for _ in 0..drives.len() {
            let (i, r) = rrx.recv().map_err(|_| BaselineError::Stopped)?;
            out[i] = Some(r?);
        }
        Ok(out
            .into_iter()
            .map(|a| a.unwrap_or((Err(DriveError::Timeout), Vec::new())))
            .collect())
    }

    fn record(&self, id: LockId, mode: Mode) -> Record {
        let mut r = Record::new(id, self.host, mode.class());
        r.countdown_ms = self.lease_ms;
        r.time_ms = wall_ms();
        r
    }

    fn mutex(&self, op: MutexOp, id: LockId, mode: Mode) -> Request {
        let mut record = self.record(id, mode);
        if op == MutexOp::Unlock {
            record.control = ControlByte::UpdateNotValid;
        }
        Request::Mutex { op, record }
    }

    /// Acquires `id` in `mode` on `drives`, retrying until `timeout`.
    pub fn lock(
        &self,
        id: LockId,
        mode: Mode,
        drives: &[String],
        timeout: Duration,
    ) -> Result<(), BaselineError> {
        let deadline = Instant::now() + timeout;
        let majority = drives.len() / 2 + 1;
        loop {
            let req = self.mutex(MutexOp::Trylock, id, mode);
            let answers = self.all(drives, |_| req)?;
            let granted: Vec<String> = answers
                .iter()
                .zip(drives)
                .filter(|((r, _), _)| matches!(r, Ok(()) | Err(DriveError::AlreadyHeld)))
                .map(|(_, d)| d.clone())
                .collect();
            if granted.len() >= majority {
                return Ok(());
            }
            if !granted.is_empty() {
                let req = self.mutex(MutexOp::Unlock, id, mode);
                self.all(&granted, |_| req)?;
            }
            if Instant::now() >= deadline {
                return Err(BaselineError::NoMajority {
                    granted: granted.len(),
                    drives: drives.len(),
                });
            }
            let backoff = rand::thread_rng().gen_range(500..=1000);
            std::thread::sleep(Duration::from_micros(backoff));
        }
    }

    /// Releases `id`: unlock on every drive, then destroy on every drive.
    pub fn unlock(&self, id: LockId, mode: Mode, drives: &[String]) -> Result<(), BaselineError> {
        let req = self.mutex(MutexOp::Unlock, id, mode);
        self.all(drives, |_| req)?;
        let req = self.mutex(MutexOp::Destroy, id, mode);
        self.all(drives, |_| req)?;
        Ok(())
    }

    /// Renews one lock: refresh on every drive, wait for all; a majority must answer GOOD.
    pub fn renew(&self, id: LockId, mode: Mode, drives: &[String]) -> Result<(), BaselineError> {
        let req = self.mutex(MutexOp::Refresh, id, mode);
        let answers = self.all(drives, |_| req)?;
        let ok = answers.iter().filter(|(r, _)| r.is_ok()).count();
        if ok > drives.len() / 2 {
            Ok(())
        } else {
            Err(BaselineError::NoMajority {
                granted: ok,
                drives: drives.len(),
            })
        }
    }

    /// Every drive's table, by two round trips per drive (the record count, then
    /// the records); `None` for a drive that failed.
    fn tables(&self, drives: &[String]) -> Result<Vec<Option<Vec<Record>>>, BaselineError> {
        let counts = self.all(drives, |_| Request::ReadCount)?;
        let counts: Vec<u32> = counts
            .iter()
            .map(|(r, d)| match r {
                Ok(()) => decode_table_count(d).map_or(0, u32::from),
                Err(_) => 0,
            })
            .collect();
        let tables = self.all(drives, |i| Request::ReadTable {
            records: counts[i].max(1),
        })?;
        Ok(tables
            .iter()
            .map(|(r, data)| {
                r.is_ok()
                    .then(|| Record::decode_table(data).unwrap_or_default())
            })
            .collect())
    }

    /// Other hosts holding `id` (maximum over drives), by two round trips per
    /// drive: the record count, then the records.
    pub fn host_count(&self, id: LockId, drives: &[String]) -> Result<u32, BaselineError> {
        let mut most = 0;
        for recs in self.tables(drives)?.iter().flatten() {
            let n = recs
                .iter()
                .filter(|rec| {
                    rec.lock_id == id
                        && rec.host_id != self.host
                        && matches!(rec.state, MutexState::Locked | MutexState::MultipleLocked)
                })
                .count() as u32;
            most = most.max(n);
        }
        Ok(most)
    }

    /// The LVB of `id` (maximum over the drives that answered), read as the old
    /// stack read it: the whole table of every drive, two round trips each.
    pub fn read_lvb(&self, id: LockId, drives: &[String]) -> Result<u64, BaselineError> {
        let mut most = 0;
        for recs in self.tables(drives)?.iter().flatten() {
            for rec in recs.iter().filter(|rec| rec.lock_id == id) {
                most = most.max(rec.lvb.to_u64());
            }
        }
        Ok(most)
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idm_sim::{ListenAddr, SimConfig, SimHandle};

    #[test]
    fn baseline_locks_counts_renews_and_releases_through_the_simulator() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.sock");
        let sim =
            SimHandle::start(SimConfig::with_drives(3), &[ListenAddr::Unix(path.clone())]).unwrap();
        let drives: Vec<String> = (0..3).map(|i| format!("sim{i}")).collect();
        let a = Baseline::new(
            "a",
            path.clone(),
            HostId::from_slice(b"host-a").unwrap(),
            60_000,
        );
        let b = Baseline::new("b", path, HostId::from_slice(b"host-b").unwrap(), 60_000);
        let id = LockId::from_slice(b"vg-lv").unwrap();
        a.lock(id, Mode::Exclusive, &drives, Duration::from_secs(5))
            .unwrap();
        // One connection per command: every drive got one trylock.
        assert_eq!(a.commands(), 3);
        // B cannot take it, and sees one other holder (two round trips per drive).
        assert!(matches!(
            b.lock(id, Mode::Exclusive, &drives, Duration::from_millis(5)),
            Err(BaselineError::NoMajority {
                granted: 0,
                drives: 3
            })
        ));
        assert_eq!(b.host_count(id, &drives).unwrap(), 1);
        assert_eq!(b.read_lvb(id, &drives).unwrap(), 0);
        a.renew(id, Mode::Exclusive, &drives).unwrap();
        a.unlock(id, Mode::Exclusive, &drives).unwrap();
        // Released and destroyed: B takes it at once.
        b.lock(id, Mode::Exclusive, &drives, Duration::from_secs(5))
            .unwrap();
        assert_eq!(a.host_count(id, &drives).unwrap(), 1);
        drop(sim);
    }
}
