//! What this machine offers the device transports, found at start-up: the
//! kernel version, io_uring features and opcodes, whether 128-byte SQE rings
//! work, and which device nodes exist and can be opened.
//!
//! Nothing here fails: every probe that cannot run is recorded with the reason
//! (in [`Capabilities::problems`] and the plain-words [`Capabilities::report`]),
//! so a missing feature is always said, never silently assumed.
//!
//! The kernel release is read from `/proc/sys/kernel/osrelease` (the same string
//! `uname -r` prints; the workspace's `nix` is built without its `uname`
//! feature).

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use io_uring::{cqueue, opcode, squeue, IoUring, Probe};
use nix::libc;

/// A kernel version `major.minor.patch`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct KernelVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch (0 when the release string has none).
    pub patch: u32,
}

impl KernelVersion {
    /// Parses a release string such as `6.1.0-56-amd64` or `7.1-rc2`.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut nums = release.split(['.', '-', '+', '_']).map(|p| {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<u32>().ok()
        });
        let major = nums.next()??;
        let minor = nums.next()??;
        let patch = nums.next().flatten().unwrap_or(0);
        Some(KernelVersion {
            major,
            minor,
            patch,
        })
    }

    /// Whether this version is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

/// What kind of device node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NodeKind {
    /// `/dev/sgN`: SCSI generic.
    Sg,
    /// `/dev/bsg/H:C:T:L`: block SCSI generic.
    Bsg,
    /// `/dev/nvmeX`: NVMe controller (admin commands).
    NvmeController,
    /// `/dev/ngXnY`: NVMe namespace generic character device.
    NvmeGeneric,
}

impl NodeKind {
    /// A short name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Sg => "sg",
            NodeKind::Bsg => "bsg",
            NodeKind::NvmeController => "nvme",
            NodeKind::NvmeGeneric => "nvme-generic",
        }
    }
}

/// One device node and whether this process can open it read-write.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Node {
    /// Path of the node.
    pub path: PathBuf,
    /// Kind.
    pub kind: NodeKind,
    /// `Ok` if it opened read-write, else the reason.
    pub openable: Result<(), String>,
}

/// The SCSI transports, best first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ScsiTransportKind {
    /// bsg `uring_cmd` (Linux 7.1+).
    BsgUringCmd,
    /// sg v3 over io_uring write/poll/readv.
    Sg,
}

/// io_uring as this kernel offers it.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct UringCaps {
    /// Feature flags the kernel reported, by name.
    pub features: Vec<&'static str>,
    /// The opcodes the transports use and whether the kernel has them.
    pub opcodes: Vec<(&'static str, bool)>,
    /// Whether an SQE128/CQE32 ring could be created (needed by `uring_cmd`).
    pub sqe128: bool,
}

impl UringCaps {
    /// Whether the opcode named `name` is supported.
    pub fn has(&self, name: &str) -> bool {
        self.opcodes.iter().any(|&(n, ok)| n == name && ok)
    }
}

/// Everything found. See the module docs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Capabilities {
    /// The kernel release string (`uname -r`), or why it could not be read.
    pub kernel_release: Result<String, String>,
    /// The parsed kernel version.
    pub kernel: Option<KernelVersion>,
    /// io_uring, or why no ring could be created.
    pub io_uring: Result<UringCaps, String>,
    /// Device nodes found.
    pub nodes: Vec<Node>,
}

/// The opcodes the transports use.
const OPCODES: &[(&str, u8)] = &[
    ("NOP", opcode::Nop::CODE),
    ("WRITE", opcode::Write::CODE),
    ("READV", opcode::Readv::CODE),
    ("POLL_ADD", opcode::PollAdd::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ("URING_CMD", opcode::UringCmd80::CODE),
];

impl Capabilities {
    /// Probes this machine, with device nodes under `/dev`.
    pub fn detect() -> Capabilities {
        Self::detect_in(Path::new("/dev"))
    }

    /// Probes this machine, with device nodes under `dev_root`.
    pub fn detect_in(dev_root: &Path) -> Capabilities {
        let kernel_release = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("cannot read /proc/sys/kernel/osrelease: {e}"));
        let kernel = kernel_release
            .as_ref()
            .ok()
            .and_then(|r| KernelVersion::parse(r));
        Capabilities {
            kernel_release,
            kernel,
            io_uring: probe_uring(),
            nodes: list_nodes(dev_root),
        }
    }

    /// Whether bsg `uring_cmd` can be used: kernel 7.1+, `URING_CMD` and SQE128.
    pub fn bsg_uring_cmd_usable(&self) -> bool {
        let kernel_ok = self.kernel.is_some_and(|k| k.at_least(7, 1));
        let uring_ok = self
            .io_uring
            .as_ref()
            .is_ok_and(|u| u.sqe128 && u.has("URING_CMD"));
        kernel_ok && uring_ok
    }

    /// Whether NVMe admin `uring_cmd` can be used (URING_CMD with SQE128 rings).
    pub fn nvme_uring_cmd_usable(&self) -> bool {
        self.io_uring
            .as_ref()
            .is_ok_and(|u| u.sqe128 && u.has("URING_CMD"))
    }

    /// Whether the sg transport can be used (WRITE, READV and POLL_ADD).
    pub fn sg_usable(&self) -> bool {
        self.io_uring
            .as_ref()
            .is_ok_and(|u| u.has("WRITE") && u.has("READV") && u.has("POLL_ADD"))
    }

    /// The best SCSI transport: bsg `uring_cmd` if the kernel is 7.1+ and a bsg
    /// node is present, else sg if an sg node is present; `None` if neither.
    pub fn best_scsi_transport(&self) -> Option<ScsiTransportKind> {
        let has = |k| self.nodes.iter().any(|n| n.kind == k);
        if self.bsg_uring_cmd_usable() && has(NodeKind::Bsg) {
            Some(ScsiTransportKind::BsgUringCmd)
        } else if self.sg_usable() && has(NodeKind::Sg) {
            Some(ScsiTransportKind::Sg)
        } else {
            None
        }
    }

    /// Everything missing or broken, in plain words (empty when all is well).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = &self.kernel_release {
            p.push(e.clone());
        }
        match &self.io_uring {
            Err(e) => p.push(format!(
                "io_uring is not available ({e}): no device transport can run"
            )),
            Ok(u) => {
                for (name, ok) in &u.opcodes {
                    if !ok {
                        p.push(format!(
                            "io_uring opcode {name} is not supported by this kernel"
                        ));
                    }
                }
                if !u.sqe128 {
                    p.push(
                        "io_uring rings with 128-byte entries cannot be created: NVMe and bsg \
                         passthrough are unavailable"
                            .into(),
                    );
                }
            }
        }
        if !self.kernel.is_some_and(|k| k.at_least(7, 1)) {
            p.push(
                "kernel older than 7.1: bsg uring_cmd is unavailable, SCSI drives use sg".into(),
            );
        }
        if self.nodes.is_empty() {
            p.push("no /dev/sg*, /dev/bsg/* or /dev/nvme* nodes found".into());
        } else if !self.nodes.iter().any(|n| n.kind == NodeKind::Sg) {
            p.push("no /dev/sg* nodes: is the sg module loaded (modprobe sg)?".into());
        }
        for n in &self.nodes {
            if let Err(e) = &n.openable {
                p.push(format!("cannot open {}: {e}", n.path.display()));
            }
        }
        p
    }

    /// A plain-words report of everything found.
    pub fn report(&self) -> String {
        let mut s = String::new();
        match &self.kernel_release {
            Ok(r) => {
                let _ = writeln!(s, "kernel: {r}");
            }
            Err(e) => {
                let _ = writeln!(s, "kernel: unknown ({e})");
            }
        }
        match &self.io_uring {
            Ok(u) => {
                let _ = writeln!(s, "io_uring: available");
                let _ = writeln!(s, "  features: {}", u.features.join(", "));
                let ops: Vec<String> = u
                    .opcodes
                    .iter()
                    .map(|(n, ok)| format!("{n}{}", if *ok { "" } else { " (missing)" }))
                    .collect();
                let _ = writeln!(s, "  opcodes: {}", ops.join(", "));
                let _ = writeln!(
                    s,
                    "  128-byte entries (SQE128/CQE32): {}",
                    if u.sqe128 { "yes" } else { "no" }
                );
            }
            Err(e) => {
                let _ = writeln!(s, "io_uring: not available ({e})");
            }
        }
        let _ = writeln!(s, "transports:");
        let yn = |b: bool| if b { "usable" } else { "not usable" };
        let _ = writeln!(s, "  sg over io_uring: {}", yn(self.sg_usable()));
        let _ = writeln!(s, "  bsg uring_cmd: {}", yn(self.bsg_uring_cmd_usable()));
        let _ = writeln!(
            s,
            "  NVMe admin uring_cmd: {}",
            yn(self.nvme_uring_cmd_usable())
        );
        let best = match self.best_scsi_transport() {
            Some(ScsiTransportKind::BsgUringCmd) => "bsg uring_cmd",
            Some(ScsiTransportKind::Sg) => "sg",
            None => "none (no usable SCSI node)",
        };
        let _ = writeln!(s, "  best SCSI transport: {best}");
        let _ = writeln!(s, "device nodes:");
        if self.nodes.is_empty() {
            let _ = writeln!(s, "  none");
        }
        for n in &self.nodes {
            let st = match &n.openable {
                Ok(()) => "opens read-write".to_string(),
                Err(e) => format!("cannot open: {e}"),
            };
            let _ = writeln!(s, "  {} ({}): {st}", n.path.display(), n.kind.as_str());
        }
        let problems = self.problems();
        if !problems.is_empty() {
            let _ = writeln!(s, "missing:");
            for p in problems {
                let _ = writeln!(s, "  - {p}");
            }
        }
        s
    }
}

fn probe_uring() -> Result<UringCaps, String> {
    let ring: IoUring = IoUring::new(8).map_err(|e| e.to_string())?;
    let p = ring.params();
    let mut features = Vec::new();
    for (name, on) in [
        ("single_mmap", p.is_feature_single_mmap()),
        ("nodrop", p.is_feature_nodrop()),
        ("submit_stable", p.is_feature_submit_stable()),
        ("fast_poll", p.is_feature_fast_poll()),
        ("ext_arg", p.is_feature_ext_arg()),
        ("native_workers", p.is_feature_native_workers()),
    ] {
        if on {
            features.push(name);
        }
    }
    let mut probe = Probe::new();
    let probed = ring.submitter().register_probe(&mut probe).is_ok();
    let opcodes = OPCODES
        .iter()
        .map(|&(n, code)| (n, probed && probe.is_supported(code)))
        .collect();
    let sqe128 = IoUring::<squeue::Entry128, cqueue::Entry32>::builder()
        .build(8)
        .is_ok();
    Ok(UringCaps {
        features,
        opcodes,
        sqe128,
    })
}

fn try_open(path: &Path) -> Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map(drop)
        .map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => {
                "permission denied (run as root or grant access to the device)".to_string()
            }
            _ => e.to_string(),
        })
}

/// Whether `name` is `prefix` followed by digits, then optionally `mid` and digits.
fn numbered(name: &str, prefix: &str, mid: Option<char>) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let (a, b) = match mid {
        Some(m) => match rest.split_once(m) {
            Some((a, b)) => (a, Some(b)),
            None => return false,
        },
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    digits(a) && b.is_none_or(digits)
}

fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    v.sort_by_key(|a| natural_key(&a.0));
    v
}

/// Sort key that puts `sg2` before `sg10`.
fn natural_key(s: &str) -> (String, u64) {
    let digits: String = s.chars().rev().take_while(|c| c.is_ascii_digit()).collect();
    let n: String = digits.chars().rev().collect();
    (s[..s.len() - n.len()].to_string(), n.parse().unwrap_or(0))
}

/// The sg, bsg and NVMe nodes under `dev_root`.
pub fn list_nodes(dev_root: &Path) -> Vec<Node> {
    let mut out = Vec::new();
    for (name, path) in sorted_entries(dev_root) {
        let kind = if numbered(&name, "sg", None) {
            NodeKind::Sg
        } else if numbered(&name, "nvme", None) {
            NodeKind::NvmeController
        } else if numbered(&name, "ng", Some('n')) {
            NodeKind::NvmeGeneric
        } else {
            continue;
        };
        out.push(Node {
            openable: try_open(&path),
            path,
            kind,
        });
    }
    for (_, path) in sorted_entries(&dev_root.join("bsg")) {
        out.push(Node {
            openable: try_open(&path),
            path,
            kind: NodeKind::Bsg,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        let k = KernelVersion::parse("6.1.0-56-amd64").unwrap();
        assert_eq!((k.major, k.minor, k.patch), (6, 1, 0));
        assert!(!k.at_least(7, 1));
        assert!(KernelVersion::parse("7.1-rc2").unwrap().at_least(7, 1));
        assert!(KernelVersion::parse("10.0.3").unwrap().at_least(7, 1));
        assert_eq!(KernelVersion::parse("garbage"), None);
    }

    #[test]
    fn lists_nodes_and_says_what_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for n in [
            "sg0", "sg10", "sg2", "nvme0", "nvme0n1", "ng0n1", "sda", "sgx",
        ] {
            fs::write(d.join(n), b"").unwrap();
        }
        fs::create_dir(d.join("bsg")).unwrap();
        fs::write(d.join("bsg/0:0:0:0"), b"").unwrap();
        // A dangling link cannot be opened: its reason is recorded.
        std::os::unix::fs::symlink(d.join("missing"), d.join("sg3")).unwrap();
        let nodes = list_nodes(d);
        let names: Vec<String> = nodes
            .iter()
            .map(|n| n.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["ng0n1", "nvme0", "sg0", "sg2", "sg3", "sg10", "0:0:0:0"]
        );
        assert_eq!(nodes[1].kind, NodeKind::NvmeController);
        assert_eq!(nodes[6].kind, NodeKind::Bsg);
        assert!(nodes[4].openable.is_err());
        assert!(nodes[3].openable.is_ok());
    }

    #[test]
    fn best_transport_follows_kernel_and_nodes() {
        let uring = UringCaps {
            features: vec![],
            opcodes: OPCODES.iter().map(|&(n, _)| (n, true)).collect(),
            sqe128: true,
        };
        let node = |kind| Node {
            path: PathBuf::from("/dev/x"),
            kind,
            openable: Ok(()),
        };
        let mut c = Capabilities {
            kernel_release: Ok("7.1.0".into()),
            kernel: KernelVersion::parse("7.1.0"),
            io_uring: Ok(uring),
            nodes: vec![node(NodeKind::Sg), node(NodeKind::Bsg)],
        };
        assert_eq!(
            c.best_scsi_transport(),
            Some(ScsiTransportKind::BsgUringCmd)
        );
        c.kernel = KernelVersion::parse("6.1.0");
        assert_eq!(c.best_scsi_transport(), Some(ScsiTransportKind::Sg));
        assert!(c.problems().iter().any(|p| p.contains("older than 7.1")));
        c.nodes.clear();
        assert_eq!(c.best_scsi_transport(), None);
        assert!(c.report().contains("best SCSI transport: none"));
        c.io_uring = Err("ENOSYS".into());
        assert!(c
            .problems()
            .iter()
            .any(|p| p.contains("io_uring is not available")));
    }

    #[test]
    fn detect_runs_here_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let c = Capabilities::detect_in(dir.path());
        let r = c.report();
        assert!(r.contains("kernel:"));
        assert!(r.contains("device nodes:\n  none"));
        assert!(c
            .problems()
            .iter()
            .any(|p| p.contains("no /dev/sg*, /dev/bsg/* or /dev/nvme* nodes found")));
    }
}
