//! From a device path as lvmlockd passes it to the drive behind it, and to the
//! node an IDM command must be sent to.
//!
//! lvmlockd names a drive by whatever path the volume group sits on: `/dev/sdX`,
//! a partition (`/dev/sdX1`), a device-mapper device (`/dev/mapper/…`,
//! `/dev/dm-N`, which may stack on several drives or on multipath), a
//! `/dev/disk/by-id/…` link, or an NVMe namespace (`/dev/nvmeXnY[pZ]`). IDM
//! commands go to the whole drive: its sg node (or bsg node) for SCSI, its
//! controller node (`/dev/nvmeX`) for NVMe. [`resolve`] walks sysfs:
//!
//! 1. the path is canonicalised (links followed) and its name looked up in
//!    `class/block` (sg and NVMe controller nodes are taken as they are); a
//!    block node of another name (`/dev/mapper/NAME` made by libdm without
//!    udev) by its device number in `dev/block/MAJ:MIN`;
//! 2. a partition goes to its parent disk;
//! 3. a device-mapper device follows its `slaves/` down to the drives;
//! 4. a SCSI disk's `device/` gives `scsi_generic/sgN` and `bsg/H:C:T:L`;
//!    an NVMe namespace's `device/` is its controller (or, with native NVMe
//!    multipath, its subsystem, whose controllers are all paths to it).
//!
//! Each [`Drive`] carries its [`Identity`] (WWN, serial) so several paths to one
//! drive group as one ([`group_by_identity`]); [`DriveCache`] re-verifies the
//! identity before reusing an answer. A path that resolves to nothing is an
//! error naming the path and why.
//!
//! The sysfs and `/dev` roots are parameters ([`Roots`]) so tests run against
//! fake trees.

mod cache;
mod identity;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use cache::DriveCache;
pub use identity::{nvme_identity, scsi_identity, serial_from_vpd80, wwid_from_vpd83, Identity};

/// Where sysfs and the device nodes are.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Roots {
    /// sysfs (`/sys`).
    pub sys: PathBuf,
    /// Device nodes (`/dev`).
    pub dev: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// The nodes through which a drive takes commands.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DriveNodes {
    /// A SCSI drive.
    Scsi {
        /// Its disk's block device name (`sda`), if it has one.
        block: Option<String>,
        /// Its sg node (`/dev/sg0`).
        sg: Option<PathBuf>,
        /// Its bsg node (`/dev/bsg/0:0:0:0`).
        bsg: Option<PathBuf>,
    },
    /// An NVMe drive (one controller path to it).
    Nvme {
        /// The controller node (`/dev/nvme0`), where admin commands go.
        controller: PathBuf,
        /// The namespace block device name (`nvme0n1`), if any.
        namespace: Option<String>,
        /// The namespace's generic character node (`/dev/ng0n1`), if present.
        generic: Option<PathBuf>,
    },
}

/// One path to one drive.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Drive {
    /// Who the drive is.
    pub identity: Identity,
    /// How to reach it.
    pub nodes: DriveNodes,
    /// Its sysfs directory (SCSI device or NVMe controller).
    pub sys_dir: PathBuf,
}

impl Drive {
    /// The node IDM commands go to (sg before bsg for SCSI, the controller for NVMe).
    pub fn command_node(&self) -> Option<&Path> {
        match &self.nodes {
            DriveNodes::Scsi { sg, bsg, .. } => sg.as_deref().or(bsg.as_deref()),
            DriveNodes::Nvme { controller, .. } => Some(controller),
        }
    }

    /// Whether the drive still has the identity it was found with and its nodes
    /// still exist.
    pub fn still_valid(&self, roots: &Roots) -> bool {
        let now = match &self.nodes {
            DriveNodes::Scsi { .. } => scsi_identity(&self.sys_dir),
            DriveNodes::Nvme { namespace, .. } => {
                let ns = namespace
                    .as_ref()
                    .map(|n| roots.sys.join("class/block").join(n));
                nvme_identity(&self.sys_dir, ns.as_deref())
            }
        };
        let nodes_exist = match &self.nodes {
            DriveNodes::Scsi { sg, bsg, .. } => sg.iter().chain(bsg.iter()).all(|p| p.exists()),
            DriveNodes::Nvme { controller, .. } => controller.exists(),
        };
        now == self.identity && nodes_exist
    }
}

/// Why a path does not lead to a drive.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The path does not exist (or a link in it dangles).
    #[error("{path}: no such device: {source}")]
    NotFound {
        /// The path asked for.
        path: PathBuf,
        /// Why it could not be opened.
        source: io::Error,
    },
    /// The path exists but is not a device sysfs knows.
    #[error("{path}: not a block, sg or NVMe device known to sysfs ({reason})")]
    NotADevice {
        /// The path asked for.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// The device has no node an IDM command can be sent to.
    #[error("{path}: no command node: {reason}")]
    NoCommandNode {
        /// The path asked for.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Reading sysfs failed.
    #[error("{path}: reading {what}: {source}")]
    Sysfs {
        /// The path asked for.
        path: PathBuf,
        /// The sysfs entry.
        what: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The entry names of a directory, sorted; empty if it does not exist.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_string)
}

/// `nvme` + digits.
fn is_nvme_ctrl(name: &str) -> bool {
    name.strip_prefix("nvme")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit()))
}

/// `sg` + digits.
fn is_sg(name: &str) -> bool {
    name.strip_prefix("sg")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit()))
}

/// The drives behind `path` (several for a device-mapper device on several
/// drives). See the module docs.
pub fn resolve(roots: &Roots, path: &Path) -> Result<Vec<Drive>, DiscoveryError> {
    let canon = fs::canonicalize(path).map_err(|source| DiscoveryError::NotFound {
        path: path.to_path_buf(),
        source,
    })?;
    let Some(name) = file_name(&canon) else {
        return Err(DiscoveryError::NotADevice {
            path: path.to_path_buf(),
            reason: "the path has no device name".into(),
        });
    };
    let mut out = Vec::new();
    if is_sg(&name) {
        let dev = roots
            .sys
            .join("class/scsi_generic")
            .join(&name)
            .join("device");
        let dev_dir = fs::canonicalize(&dev).map_err(|_| DiscoveryError::NotADevice {
            path: path.to_path_buf(),
            reason: format!("no {}", dev.display()),
        })?;
        out.push(scsi_drive(roots, path, &dev_dir, None)?);
    } else if is_nvme_ctrl(&name) {
        let ctrl = roots.sys.join("class/nvme").join(&name);
        let ctrl_dir = fs::canonicalize(&ctrl).map_err(|_| DiscoveryError::NotADevice {
            path: path.to_path_buf(),
            reason: format!("no {}", ctrl.display()),
        })?;
        let ns = first_namespace(&ctrl_dir, &name);
        out.push(nvme_drive(roots, path, &ctrl_dir, ns)?);
    } else if roots.sys.join("class/block").join(&name).exists() {
        resolve_block(roots, path, &name, 0, &mut out)?;
    } else {
        // A block node whose name sysfs does not know: device-mapper devices
        // made without udev (libdm's own mknod of /dev/mapper/NAME, as LVM2
        // built without udev sync and its test suite do) are nodes, not links
        // to dm-N. The device number names the sysfs entry.
        let name = block_name_by_number(roots, &canon).unwrap_or(name);
        resolve_block(roots, path, &name, 0, &mut out)?;
    }
    dedup(&mut out);
    Ok(out)
}

/// The sysfs name (`dm-0`) of the block device node at `node`, through its
/// device number (`sys/dev/block/MAJ:MIN`); None if it is no block node.
fn block_name_by_number(roots: &Roots, node: &Path) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = fs::metadata(node).ok()?;
    if !md.file_type().is_block_device() {
        return None;
    }
    let rdev = md.rdev();
    // glibc's major()/minor() encoding of dev_t.
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
    let entry = fs::canonicalize(roots.sys.join(format!("dev/block/{major}:{minor}"))).ok()?;
    file_name(&entry)
}

fn dedup(v: &mut Vec<Drive>) {
    let mut seen = Vec::new();
    v.retain(|d| {
        if seen.contains(&d.nodes) {
            false
        } else {
            seen.push(d.nodes.clone());
            true
        }
    });
}

/// Resolves a block device by name, following partitions and dm slaves.
fn resolve_block(
    roots: &Roots,
    path: &Path,
    name: &str,
    depth: usize,
    out: &mut Vec<Drive>,
) -> Result<(), DiscoveryError> {
    if depth > 16 {
        return Err(DiscoveryError::NotADevice {
            path: path.to_path_buf(),
            reason: "device-mapper stack deeper than 16".into(),
        });
    }
    let class = roots.sys.join("class/block").join(name);
    let mut blk = fs::canonicalize(&class).map_err(|_| DiscoveryError::NotADevice {
        path: path.to_path_buf(),
        reason: format!("no {}", class.display()),
    })?;
    if blk.join("partition").exists() {
        blk = blk
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| DiscoveryError::NotADevice {
                path: path.to_path_buf(),
                reason: format!("partition {} has no parent disk", blk.display()),
            })?;
    }
    let disk = file_name(&blk).unwrap_or_default();
    let slaves = names(&blk.join("slaves"));
    if !slaves.is_empty() {
        for s in slaves {
            resolve_block(roots, path, &s, depth + 1, out)?;
        }
        return Ok(());
    }
    let dev_link = blk.join("device");
    let dev_dir = fs::canonicalize(&dev_link).map_err(|_| DiscoveryError::NoCommandNode {
        path: path.to_path_buf(),
        reason: format!(
            "block device {disk} has no underlying drive (no {})",
            dev_link.display()
        ),
    })?;
    if disk.starts_with("nvme") {
        let dev_name = file_name(&dev_dir).unwrap_or_default();
        if is_nvme_ctrl(&dev_name) {
            out.push(nvme_drive(roots, path, &dev_dir, Some(disk))?);
        } else {
            // Native NVMe multipath: the namespace head's device is the
            // subsystem; every controller in it is a path to the drive.
            let ctrls: Vec<String> = names(&dev_dir)
                .into_iter()
                .filter(|n| is_nvme_ctrl(n))
                .collect();
            if ctrls.is_empty() {
                return Err(DiscoveryError::NoCommandNode {
                    path: path.to_path_buf(),
                    reason: format!(
                        "NVMe namespace {disk} has no controller under {}",
                        dev_dir.display()
                    ),
                });
            }
            for c in ctrls {
                let ctrl_dir =
                    fs::canonicalize(dev_dir.join(&c)).map_err(|source| DiscoveryError::Sysfs {
                        path: path.to_path_buf(),
                        what: dev_dir.join(&c),
                        source,
                    })?;
                out.push(nvme_drive(roots, path, &ctrl_dir, Some(disk.clone()))?);
            }
        }
    } else {
        out.push(scsi_drive(roots, path, &dev_dir, Some(disk))?);
    }
    Ok(())
}

/// The first namespace block device of a controller (`nvme0n1`).
fn first_namespace(ctrl_dir: &Path, ctrl: &str) -> Option<String> {
    names(ctrl_dir).into_iter().find(|n| {
        n.strip_prefix(ctrl)
            .and_then(|r| r.strip_prefix('n'))
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit()))
    })
}

/// A SCSI drive from its device directory.
fn scsi_drive(
    roots: &Roots,
    path: &Path,
    dev_dir: &Path,
    block: Option<String>,
) -> Result<Drive, DiscoveryError> {
    let block = block.or_else(|| names(&dev_dir.join("block")).into_iter().next());
    let sg = names(&dev_dir.join("scsi_generic"))
        .into_iter()
        .map(|n| roots.dev.join(n))
        .find(|p| p.exists());
    let bsg = names(&dev_dir.join("bsg"))
        .into_iter()
        .map(|n| roots.dev.join("bsg").join(n))
        .find(|p| p.exists());
    if sg.is_none() && bsg.is_none() {
        return Err(DiscoveryError::NoCommandNode {
            path: path.to_path_buf(),
            reason: format!(
                "SCSI device {} has no sg or bsg node under {} (is the sg module loaded?)",
                dev_dir.display(),
                roots.dev.display()
            ),
        });
    }
    Ok(Drive {
        identity: scsi_identity(dev_dir),
        nodes: DriveNodes::Scsi { block, sg, bsg },
        sys_dir: dev_dir.to_path_buf(),
    })
}

/// An NVMe drive from its controller directory and namespace name.
fn nvme_drive(
    roots: &Roots,
    path: &Path,
    ctrl_dir: &Path,
    namespace: Option<String>,
) -> Result<Drive, DiscoveryError> {
    let ctrl = file_name(ctrl_dir).unwrap_or_default();
    let controller = roots.dev.join(&ctrl);
    if !controller.exists() {
        return Err(DiscoveryError::NoCommandNode {
            path: path.to_path_buf(),
            reason: format!(
                "NVMe controller node {} does not exist",
                controller.display()
            ),
        });
    }
    let generic = namespace
        .as_ref()
        .and_then(|n| n.strip_prefix("nvme"))
        .map(|rest| roots.dev.join(format!("ng{rest}")))
        .filter(|p| p.exists());
    let ns_dir = namespace
        .as_ref()
        .map(|n| roots.sys.join("class/block").join(n));
    Ok(Drive {
        identity: nvme_identity(ctrl_dir, ns_dir.as_deref()),
        nodes: DriveNodes::Nvme {
            controller,
            namespace,
            generic,
        },
        sys_dir: ctrl_dir.to_path_buf(),
    })
}

/// Every drive sysfs lists (SCSI devices with an sg or bsg node, NVMe
/// controllers), and the devices that were found but cannot take commands.
#[derive(Debug, Default)]
pub struct Scan {
    /// Drives found.
    pub drives: Vec<Drive>,
    /// Devices found that lead to no command node, with why.
    pub problems: Vec<DiscoveryError>,
}

/// Lists every drive on the machine. See [`Scan`].
pub fn scan(roots: &Roots) -> Scan {
    let mut s = Scan::default();
    let mut dev_dirs: Vec<PathBuf> = Vec::new();
    for class in ["scsi_generic", "bsg"] {
        let base = roots.sys.join("class").join(class);
        for n in names(&base) {
            let link = base.join(&n).join("device");
            let Ok(d) = fs::canonicalize(&link) else {
                continue;
            };
            // bsg also registers transports (SAS hosts...); only SCSI devices
            // (H:C:T:L directories with a scsi_generic or block child) count.
            if !dev_dirs.contains(&d)
                && (d.join("scsi_generic").exists() || d.join("block").exists())
            {
                dev_dirs.push(d);
            }
        }
    }
    for d in dev_dirs {
        match scsi_drive(roots, &d, &d, None) {
            Ok(drive) => s.drives.push(drive),
            Err(e) => s.problems.push(e),
        }
    }
    let base = roots.sys.join("class/nvme");
    for n in names(&base).into_iter().filter(|n| is_nvme_ctrl(n)) {
        let Ok(ctrl_dir) = fs::canonicalize(base.join(&n)) else {
            continue;
        };
        let ns = first_namespace(&ctrl_dir, &n);
        match nvme_drive(roots, &ctrl_dir, &ctrl_dir, ns) {
            Ok(drive) => s.drives.push(drive),
            Err(e) => s.problems.push(e),
        }
    }
    s
}

/// Groups paths to the same drive (same [`Identity::key`]); a drive without an
/// identity is a group of its own. Groups keep the order of first appearance.
pub fn group_by_identity(drives: &[Drive]) -> Vec<Vec<Drive>> {
    let mut groups: Vec<(Option<String>, Vec<Drive>)> = Vec::new();
    for d in drives {
        let key = d.identity.key();
        match groups.iter_mut().find(|(k, _)| key.is_some() && *k == key) {
            Some((_, g)) => g.push(d.clone()),
            None => groups.push((key, vec![d.clone()])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

#[cfg(test)]
mod tests;
