//! Real drives: a path as lvmlockd passes it (`/dev/sdX`, a partition,
//! `/dev/mapper/*`, `/dev/disk/by-id/*`, `/dev/nvmeXnY`) resolved by
//! [`uring_sg::discovery`] to the drive's command node, and every other path to
//! the same drive (same WWN / EUI) found by a scan, so a reactor can fail over.
//!
//! SCSI drives use bsg `uring_cmd` where the kernel has it (7.1+) and sg v3
//! otherwise; NVMe drives use admin `uring_cmd` on the controller. What the
//! machine offers is detected once ([`uring_sg::caps::Capabilities`]).

use std::path::Path;

use uring_sg::caps::{Capabilities, ScsiTransportKind};
use uring_sg::discovery::{self, Drive, DriveNodes, Roots};
use uring_sg::transport::bsg::BsgTransport;
use uring_sg::transport::nvme::NvmeTransport;
use uring_sg::transport::sg::SgTransport;
use uring_sg::transport::Transport;

use super::{DriveOpener, EngineError};

/// sg files opened per drive path (16 commands in flight each).
const SG_FILES: usize = 4;
/// `uring_cmd` commands in flight per drive path.
const URING_CMD_DEPTH: usize = 64;

/// Opens real drives. See the module docs.
#[derive(Debug)]
pub struct DeviceOpener {
    roots: Roots,
    caps: Capabilities,
}

impl DeviceOpener {
    /// Drives of this machine (`/sys`, `/dev`), with capabilities detected now.
    pub fn new() -> DeviceOpener {
        DeviceOpener::with_roots(Roots::default())
    }

    /// Drives under other sysfs and /dev roots (tests, containers).
    pub fn with_roots(roots: Roots) -> DeviceOpener {
        let caps = Capabilities::detect_in(&roots.dev);
        DeviceOpener { roots, caps }
    }

    /// What was detected.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Every path to the drive behind `name`, first the one named.
    pub fn paths(&self, name: &str) -> Result<Vec<Drive>, EngineError> {
        let err = |reason: String| EngineError::Drive {
            drive: name.to_string(),
            reason,
        };
        let found =
            discovery::resolve(&self.roots, Path::new(name)).map_err(|e| err(e.to_string()))?;
        let first = match found.as_slice() {
            [] => return Err(err("resolves to no drive".into())),
            [one] => one.clone(),
            many => {
                return Err(err(format!(
                    "spans {} drives (a device-mapper device over several drives); name one drive",
                    many.len()
                )))
            }
        };
        let mut paths = vec![first.clone()];
        for d in discovery::scan(&self.roots).drives {
            if d.identity == first.identity && d.command_node() != first.command_node() {
                paths.push(d);
            }
        }
        Ok(paths)
    }

    fn open_path(&self, d: &Drive) -> Result<Box<dyn Transport>, String> {
        match &d.nodes {
            DriveNodes::Scsi { sg, bsg, .. } => {
                let use_bsg =
                    self.caps.best_scsi_transport() == Some(ScsiTransportKind::BsgUringCmd);
                match (use_bsg, bsg, sg) {
                    (true, Some(b), _) => BsgTransport::open(b, URING_CMD_DEPTH)
                        .map(|t| Box::new(t) as Box<dyn Transport>)
                        .map_err(|e| format!("{}: {e}", b.display())),
                    (_, _, Some(s)) => SgTransport::open(s, SG_FILES)
                        .map(|t| Box::new(t) as Box<dyn Transport>)
                        .map_err(|e| format!("{}: {e}", s.display())),
                    _ => Err("no sg node (is the sg driver loaded?)".into()),
                }
            }
            DriveNodes::Nvme { controller, .. } => NvmeTransport::open(controller, URING_CMD_DEPTH)
                .map(|t| Box::new(t) as Box<dyn Transport>)
                .map_err(|e| format!("{}: {e}", controller.display())),
        }
    }
}

impl Default for DeviceOpener {
    fn default() -> Self {
        DeviceOpener::new()
    }
}

impl DriveOpener for DeviceOpener {
    fn open(&self, name: &str, _client: &str) -> Result<Vec<Box<dyn Transport>>, EngineError> {
        let paths = self.paths(name)?;
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for p in &paths {
            match self.open_path(p) {
                Ok(t) => out.push(t),
                Err(e) => errors.push(e),
            }
        }
        if out.is_empty() {
            return Err(EngineError::Drive {
                drive: name.to_string(),
                reason: errors.join("; "),
            });
        }
        for e in errors {
            tracing::warn!(drive = name, error = %e, "a path to this drive could not be opened");
        }
        Ok(out)
    }

    fn needs_sqe128(&self) -> bool {
        self.caps.io_uring.as_ref().is_ok_and(|u| u.sqe128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_no_drive_is_a_clear_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            sys: dir.path().join("sys"),
            dev: dir.path().join("dev"),
        };
        let o = DeviceOpener::with_roots(roots);
        let e = o.open("/dev/no-such-disk", "c").err().unwrap();
        match e {
            EngineError::Drive { drive, .. } => assert_eq!(drive, "/dev/no-such-disk"),
            other => panic!("{other:?}"),
        }
    }
}
