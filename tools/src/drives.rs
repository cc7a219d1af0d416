//! The drives `idm dump` and `idm cmd` send single commands to: simulated drives
//! by name on a simulator server (`--sim ADDR`), or real devices by path, opened
//! exactly as the engine opens them. Nothing here opens a device itself:
//!
//! - real devices go through [`DeviceOpener`]: discovery resolves the path
//!   (`/dev/sgN`, `/dev/sdX` and its partitions, `/dev/disk/by-id/...`,
//!   `/dev/mapper/...` multipath, `/dev/nvmeXnY`) to the drive's command node
//!   (bsg `uring_cmd` where the kernel has it, else sg v3; the NVMe controller),
//!   and every other path with the same WWN is opened too, as a fail-over path;
//! - simulated drives go through [`SimServerOpener`], one connection per drive.
//!
//! The transports run on one small [`Driver`] (an SQE128 ring when the kernel
//! offers `uring_cmd`, as the engine's reactors do). A command that fails with an
//! I/O error on one path is sent again on the next.
//!
//! Errors are one line that names the drive as given and the cause.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use idm_engine::api::{DeviceOpener, DriveOpener, EngineError};
use idm_sim::engine::SimServerOpener;
use nix::errno::Errno;
use nix::unistd::{access, AccessFlags};
use uring_sg::codec::{decode_table_count, Record};
use uring_sg::discovery::DriveNodes;
use uring_sg::driver::{Driver, RingCqe, RingEntry};
use uring_sg::transport::{Reply, Request, Transport};

use crate::common::describe;

/// SQ entries of the ring (one command at a time, a few paths).
const RING_ENTRIES: u32 = 64;

/// What `idm dump`/`idm cmd` need of a [`Driver`], whatever its ring's entry size.
trait Ring {
    fn add(&mut self, t: Box<dyn Transport>) -> usize;
    fn call(&mut self, i: usize, req: &Request, timeout: Duration) -> io::Result<Reply>;
}

impl<S: RingEntry, C: RingCqe> Ring for Driver<S, C> {
    fn add(&mut self, t: Box<dyn Transport>) -> usize {
        Driver::add(self, t)
    }
    fn call(&mut self, i: usize, req: &Request, timeout: Duration) -> io::Result<Reply> {
        Driver::call(self, i, req, timeout)
    }
}

/// How drives are reached.
enum Opener {
    /// Drives by name on a simulator server.
    Sim(SimServerOpener),
    /// Real devices by path.
    Devices(DeviceOpener),
}

/// One opened drive.
#[derive(Debug, Clone)]
pub struct Target {
    /// The drive as the user named it.
    pub name: String,
    /// The drive's sg node (its bsg node when it has none; the NVMe controller),
    /// for real devices. The transport may use the bsg node instead where the
    /// kernel offers bsg `uring_cmd`, as the engine does.
    pub node: Option<PathBuf>,
    /// The drive's identity (WWN, or `serial:...`), if it has one (real devices).
    pub identity: Option<String>,
    /// Paths to the drive (multipath): more than one when several nodes lead to it.
    pub path_count: usize,
    /// Indices of its transports in the ring.
    paths: Vec<usize>,
}

#[cfg(test)]
impl Target {
    /// A target with no path, for tests of what is printed.
    pub fn for_test(name: &str) -> Target {
        Target {
            name: name.to_string(),
            node: None,
            identity: None,
            path_count: 0,
            paths: Vec::new(),
        }
    }
}

/// Drives opened on one ring. See the module docs.
pub struct Drives {
    opener: Opener,
    ring: Box<dyn Ring>,
}

impl Drives {
    /// Simulated drives on the server at `sim` (`unix:PATH`, `tcp:HOST:PORT`), or
    /// real devices without it.
    pub fn new(sim: Option<&str>) -> Result<Drives, String> {
        let opener = match sim {
            Some(addr) => Opener::Sim(SimServerOpener::parse(addr).map_err(|e| e.to_string())?),
            None => Opener::Devices(DeviceOpener::new()),
        };
        let big = match &opener {
            Opener::Sim(o) => o.needs_sqe128(),
            Opener::Devices(o) => o.needs_sqe128(),
        };
        let ring: Box<dyn Ring> = if big {
            Box::new(Driver::new_big(RING_ENTRIES).map_err(ring_error)?)
        } else {
            Box::new(Driver::new(RING_ENTRIES).map_err(ring_error)?)
        };
        Ok(Drives { opener, ring })
    }

    /// Whether these are real devices (not simulated drives).
    pub fn real(&self) -> bool {
        matches!(self.opener, Opener::Devices(_))
    }

    /// Opens drive `name` (`client` is the connection's name on a simulator).
    pub fn open(&mut self, name: &str, client: &str) -> Result<Target, String> {
        let (node, identity, transports) = match &self.opener {
            Opener::Sim(o) => {
                let t = o.open(name, client).map_err(|e| drive_error(name, e))?;
                (None, None, t)
            }
            Opener::Devices(o) => {
                check_node(name)?;
                let paths = o.paths(name).map_err(|e| drive_error(name, e))?;
                let first = paths.first();
                let node = first.and_then(|d| d.command_node()).map(Path::to_path_buf);
                let identity = first.and_then(|d| d.identity.key());
                let t = match o.open(name, client) {
                    Ok(t) => t,
                    Err(e) => {
                        let denied = paths.iter().flat_map(|d| nodes(&d.nodes)).find(|n| {
                            matches!(
                                access(n.as_path(), AccessFlags::R_OK | AccessFlags::W_OK),
                                Err(Errno::EACCES | Errno::EPERM | Errno::EROFS)
                            )
                        });
                        return Err(match denied {
                            Some(n) => format!(
                                "`{name}`: permission denied on {}: IDM commands need read and write access to the drive's command node (run as root)",
                                n.display()
                            ),
                            None => drive_error(name, e),
                        });
                    }
                };
                (node, identity, t)
            }
        };
        let paths: Vec<usize> = transports.into_iter().map(|t| self.ring.add(t)).collect();
        Ok(Target {
            name: name.to_string(),
            node,
            identity,
            path_count: paths.len(),
            paths,
        })
    }

    /// Runs one command on `t`, on its next path after an I/O error. `Err` when
    /// no path could run it; a drive's answer (a refusal too) is `Ok`.
    pub fn call(&mut self, t: &Target, req: &Request, timeout: Duration) -> Result<Reply, String> {
        let mut last = Err(format!("`{}`: no path to the drive is open", t.name));
        for &i in &t.paths {
            match self.ring.call(i, req, timeout) {
                Ok(r) => {
                    let io = r.result.is_err_and(|e| e.is_io());
                    last = Ok(r);
                    if !io {
                        break;
                    }
                }
                Err(e) => last = Err(format!("`{}`: {e}", t.name)),
            }
        }
        last
    }

    /// Reads the drive's whole table (the record count, then that many records).
    /// `Err` names the drive and says why, in people's words.
    pub fn read_table(&mut self, t: &Target, timeout: Duration) -> Result<Vec<Record>, String> {
        let real = self.real();
        let why = |e| format!("`{}`: {}", t.name, explain_io(e, real));
        let r = self.call(t, &Request::ReadCount, timeout)?;
        r.result.map_err(why)?;
        let n = decode_table_count(&r.data)
            .map_err(|e| format!("`{}`: the record count does not decode: {e}", t.name))?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let r = self.call(t, &Request::ReadTable { records: n as u32 }, timeout)?;
        r.result.map_err(why)?;
        Record::decode_table(&r.data)
            .map_err(|e| format!("`{}`: the table does not decode: {e}", t.name))
    }
}

/// A drive error in people's words, with what it usually means on real devices.
pub fn explain_io(e: uring_sg::codec::DriveError, real: bool) -> String {
    use uring_sg::codec::DriveError as E;
    let hint = match e {
        E::Timeout | E::Io(110) if real => {
            "; a drive's BUSY answer looks like this on Linux: the SCSI layer retries BUSY until the command times out"
        }
        E::Status(0x01) if real => {
            "; QEMU's iSCSI initiator turns the drive's COMMAND TERMINATED (0x22) into 0x01: already held by this host, or the wrong class"
        }
        _ => "",
    };
    format!("{}{hint}", describe(e))
}

fn ring_error(e: io::Error) -> String {
    format!("cannot set up io_uring: {e}")
}

/// "`NAME`: reason" from the opener's error.
fn drive_error(name: &str, e: EngineError) -> String {
    match e {
        EngineError::Drive { reason, .. } => {
            // Discovery's reasons start with the path already.
            let reason = reason
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix(": "))
                .unwrap_or(&reason);
            format!("`{name}`: {reason}")
        }
        other => format!("`{name}`: {other}"),
    }
}

/// The device nodes a drive's commands may go to.
fn nodes(n: &DriveNodes) -> Vec<PathBuf> {
    match n {
        DriveNodes::Scsi { sg, bsg, .. } => sg.iter().chain(bsg.iter()).cloned().collect(),
        DriveNodes::Nvme { controller, .. } => vec![controller.clone()],
    }
}

/// Refuses what is no device node at all (discovery goes by the node's name, so a
/// regular file named like a device must not be taken for it).
fn check_node(name: &str) -> Result<(), String> {
    let hint =
        "name a disk: /dev/sdX, /dev/sgN, /dev/disk/by-id/..., /dev/mapper/..., /dev/nvmeXnY";
    let m = match std::fs::metadata(name) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let sim = if name.contains('/') {
                ""
            } else {
                "; a simulated drive? give the simulator with --sim ADDR or IDM_SIM"
            };
            return Err(format!("`{name}`: no such device{sim}"));
        }
        Err(e) => return Err(format!("`{name}`: {e}")),
    };
    let ft = m.file_type();
    if ft.is_block_device() || ft.is_char_device() {
        return Ok(());
    }
    let what = if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "not a device"
    };
    Err(format!("`{name}`: not a device node ({what}); {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uring_sg::codec::DriveError;

    #[test]
    fn what_is_no_device_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sg0");
        std::fs::write(&f, b"x").unwrap();
        let e = check_node(f.to_str().unwrap()).unwrap_err();
        assert!(e.contains("a regular file") && e.contains("sg0"), "{e}");
        let e = check_node(dir.path().to_str().unwrap()).unwrap_err();
        assert!(e.contains("a directory"), "{e}");
        let e = check_node("sim7").unwrap_err();
        assert!(e.contains("--sim"), "{e}");
        assert!(check_node("/dev/null").is_ok());
    }

    #[test]
    fn drive_errors_in_plain_words() {
        assert!(explain_io(DriveError::InvalidOpcode, true).contains("not an IDM drive"));
        assert!(explain_io(DriveError::Timeout, true).contains("BUSY"));
        assert!(!explain_io(DriveError::Timeout, false).contains("BUSY"));
        assert!(explain_io(DriveError::Status(1), true).contains("0x22"));
    }
}
