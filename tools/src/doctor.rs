//! `idm doctor`: what this machine offers idm-engine, in plain words.
//!
//! Prints the kernel, io_uring features and opcodes, which transports can run,
//! every drive found (with its IDM version, or "not an IDM drive"), which nodes
//! cannot be opened (permissions), which watchdog the engine would use (wdmd,
//! the device, or none, and whether it can protect a 60 s lease; nothing is
//! armed), and what is missing. `--json` prints the same
//! as one JSON object.
//!
//! Drives are probed with one read-only command each: the IDM version page
//! INQUIRY through the synchronous SG_IO path for SCSI, the IDM record-count read
//! (`0xC2`) through NVMe admin `uring_cmd` for NVMe (NVMe IDM drives have no
//! version page).

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use idm_engine::api::LockspaceConfig;
use idm_engine::watchdog::{self, WatchdogConfig};
use serde_json::{json, Value};
use uring_sg::caps::Capabilities;
use uring_sg::discovery::{self, Drive, DriveNodes, Roots};
use uring_sg::driver::Driver;
use uring_sg::transport::nvme::NvmeTransport;
use uring_sg::transport::sg::sg_io;
use uring_sg::transport::{Reply, Request};
use uring_sg::{decode_version_page, DriveError};

/// How long one probe command may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `idm doctor`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where sysfs is mounted.
    #[arg(long, default_value = "/sys")]
    pub sys: PathBuf,
    /// Where the device nodes are.
    #[arg(long, default_value = "/dev")]
    pub dev: PathBuf,
}

/// What one drive answered.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// An IDM drive, with its version if it has a version page.
    Idm(Option<(u8, u8)>),
    /// It answered "invalid opcode" (or has no IDM version page).
    NotIdm,
    /// It could not be asked, with why.
    Failed(String),
}

impl Probe {
    fn text(&self) -> String {
        match self {
            Probe::Idm(Some((a, b))) => format!("IDM drive, spec version {a}.{b}"),
            Probe::Idm(None) => "IDM drive (NVMe: no version page)".into(),
            Probe::NotIdm => "not an IDM drive".into(),
            Probe::Failed(why) => format!("could not be asked: {why}"),
        }
    }
}

/// Reads a SCSI answer to the version INQUIRY.
fn scsi_probe(reply: Reply) -> Probe {
    match reply.result {
        Ok(()) => match decode_version_page(&reply.data) {
            Ok(v) => Probe::Idm(Some(v)),
            Err(e) => Probe::Failed(format!("malformed version page: {e}")),
        },
        // No page 0xC3 (invalid field) or the IDM opcode unknown: a plain disk.
        Err(DriveError::InvalidOpcode) => Probe::NotIdm,
        Err(DriveError::Check(s)) if s.key == 5 => Probe::NotIdm,
        Err(e) => Probe::Failed(e.to_string()),
    }
}

/// Reads an NVMe answer to the record-count read.
fn nvme_probe(reply: Reply) -> Probe {
    match reply.result {
        Ok(()) => Probe::Idm(None),
        Err(DriveError::InvalidOpcode) => Probe::NotIdm,
        Err(e) => Probe::Failed(e.to_string()),
    }
}

fn probe(drive: &Drive, caps: &Capabilities) -> Probe {
    match &drive.nodes {
        DriveNodes::Scsi { sg: Some(sg), .. } => {
            match OpenOptions::new().read(true).write(true).open(sg) {
                Ok(f) => scsi_probe(sg_io(f.as_fd(), &Request::Version, PROBE_TIMEOUT)),
                Err(e) => Probe::Failed(format!("cannot open {}: {e}", sg.display())),
            }
        }
        DriveNodes::Scsi { sg: None, .. } => {
            Probe::Failed("no sg node (load the sg module); bsg alone needs Linux 7.1".into())
        }
        DriveNodes::Nvme { controller, .. } => {
            if !caps.nvme_uring_cmd_usable() {
                return Probe::Failed(
                    "io_uring URING_CMD with 128-byte entries unavailable".into(),
                );
            }
            let t = match NvmeTransport::open(controller, 1) {
                Ok(t) => t,
                Err(e) => {
                    return Probe::Failed(format!("cannot open {}: {e}", controller.display()))
                }
            };
            match Driver::new_big(4) {
                Ok(mut d) => {
                    let i = d.add(Box::new(t));
                    match d.call(i, &Request::ReadCount, PROBE_TIMEOUT) {
                        Ok(r) => nvme_probe(r),
                        Err(e) => Probe::Failed(e.to_string()),
                    }
                }
                Err(e) => Probe::Failed(format!("cannot create an io_uring: {e}")),
            }
        }
    }
}

fn drive_json(d: &Drive, p: &Probe) -> Value {
    let (kind, nodes) = match &d.nodes {
        DriveNodes::Scsi { block, sg, bsg } => {
            ("scsi", json!({"block": block, "sg": sg, "bsg": bsg}))
        }
        DriveNodes::Nvme {
            controller,
            namespace,
            generic,
        } => (
            "nvme",
            json!({"controller": controller, "namespace": namespace, "generic": generic}),
        ),
    };
    let (idm, version) = match p {
        Probe::Idm(v) => (Some(true), v.map(|(a, b)| format!("{a}.{b}"))),
        Probe::NotIdm => (Some(false), None),
        Probe::Failed(_) => (None, None),
    };
    json!({
        "kind": kind,
        "nodes": nodes,
        "wwid": d.identity.wwid,
        "serial": d.identity.serial,
        "idm": idm,
        "idm_version": version,
        "status": p.text(),
    })
}

/// The watchdog section: what `IDM_WATCHDOG_DEVICE` (or the defaults) would
/// use, without arming anything, and whether it can protect lvmlockd's lease.
fn watchdog_report(sys: &std::path::Path) -> (Vec<String>, Value) {
    let mut cfg = WatchdogConfig::from_env().unwrap_or_default();
    cfg.sys = sys.to_path_buf();
    let p = watchdog::probe(&cfg);
    // lvmlockd's lease with the lockspace defaults (renewal every 10 s, drift
    // 610 ms).
    let lvm = LockspaceConfig::new("lvm");
    let mut lines = vec![format!(
        "watchdog (policy {:?} from IDM_WATCHDOG; default off):",
        cfg.policy
    )];
    let wdmd_text = match &p.wdmd {
        Ok(s) => format!(
            "running (test interval {} s, fire timeout {} s)",
            s.test_interval, s.fire_timeout
        ),
        Err(e) => format!("not usable: {e}"),
    };
    lines.push(format!(
        "  wdmd ({}): {wdmd_text}",
        cfg.wdmd_socket.display()
    ));
    let dev_text = match &p.device {
        Ok(i) => format!(
            "available ({}, max timeout {})",
            i.identity.as_deref().unwrap_or("driver unknown"),
            i.max_timeout.map_or("unknown".into(), |m| format!("{m} s"))
        ),
        Err(e) => format!("not usable: {e}"),
    };
    lines.push(format!("  device ({}): {dev_text}", cfg.device.display()));
    // The lead a backend needs against lvmlockd's 60 s lease (renewal every
    // 10 s, 2 s watchdog margin by default).
    let room = lvm
        .lease
        .saturating_sub(lvm.drift_margin)
        .saturating_sub(lvm.renew_every)
        .saturating_sub(cfg.margin + cfg.slack);
    let (chosen, fits) = match &p.chosen {
        Ok(b) => {
            let fits = b.lead() <= room;
            lines.push(format!(
                "  would use: {}; protects a 60 s lease: {}",
                b.describe(),
                if fits {
                    "yes"
                } else {
                    "no (fire timeout too long)"
                }
            ));
            (Some(b.describe()), Some(fits))
        }
        Err(e) => {
            lines.push(format!("  would use: nothing ({e})"));
            (None, None)
        }
    };
    let v = json!({
        "policy": format!("{:?}", cfg.policy).to_lowercase(),
        "wdmd": p.wdmd.as_ref().map(|s| json!({"test_interval": s.test_interval, "fire_timeout": s.fire_timeout})).map_err(|e| e.clone()).unwrap_or_else(|e| json!({"error": e})),
        "device": p.device.as_ref().map(|i| json!({"path": cfg.device, "identity": i.identity, "max_timeout": i.max_timeout})).map_err(|e| e.clone()).unwrap_or_else(|e| json!({"error": e})),
        "chosen": chosen,
        "protects_60s_lease": fits,
    });
    (lines, v)
}

/// Runs `idm doctor`.
pub fn run(args: Args) -> ExitCode {
    let (wd_lines, wd_json) = watchdog_report(&args.sys);
    let caps = Capabilities::detect_in(&args.dev);
    let roots = Roots {
        sys: args.sys.clone(),
        dev: args.dev.clone(),
    };
    let scan = discovery::scan(&roots);
    let probes: Vec<Probe> = scan.drives.iter().map(|d| probe(d, &caps)).collect();
    let groups = discovery::group_by_identity(&scan.drives);
    let mut missing = caps.problems();
    missing.extend(scan.problems.iter().map(|e| e.to_string()));
    if scan.drives.is_empty() {
        missing.push(format!(
            "no drives found under {} and {}",
            args.sys.display(),
            args.dev.display()
        ));
    }
    if args.json {
        let uring = match &caps.io_uring {
            Ok(u) => json!({
                "available": true,
                "features": u.features,
                "opcodes": u.opcodes.iter().map(|(n, ok)| json!({"name": n, "supported": ok})).collect::<Vec<_>>(),
                "sqe128": u.sqe128,
            }),
            Err(e) => json!({"available": false, "error": e}),
        };
        let out = json!({
            "kernel": caps.kernel_release.as_ref().ok(),
            "io_uring": uring,
            "transports": {
                "sg": caps.sg_usable(),
                "bsg_uring_cmd": caps.bsg_uring_cmd_usable(),
                "nvme_uring_cmd": caps.nvme_uring_cmd_usable(),
                "best_scsi": caps.best_scsi_transport().map(|t| format!("{t:?}")),
            },
            "nodes": caps.nodes.iter().map(|n| json!({
                "path": n.path,
                "kind": n.kind.as_str(),
                "openable": n.openable.is_ok(),
                "error": n.openable.as_ref().err(),
            })).collect::<Vec<_>>(),
            "drives": scan.drives.iter().zip(&probes).map(|(d, p)| drive_json(d, p)).collect::<Vec<_>>(),
            "distinct_drives": groups.len(),
            "watchdog": wd_json,
            "missing": missing,
        });
        outln!("{out:#}");
    } else {
        let mut report = caps.report();
        // The capability report's own "missing" list is printed once, below.
        if let Some(i) = report.find("missing:\n") {
            report.truncate(i);
        }
        out!("{report}");
        outln!("drives:");
        if scan.drives.is_empty() {
            outln!("  none");
        }
        for (d, p) in scan.drives.iter().zip(&probes) {
            let node = d
                .command_node()
                .map_or("?".to_string(), |n| n.display().to_string());
            let id = d.identity.key().unwrap_or_else(|| "no identity".into());
            outln!("  {node} ({id}): {}", p.text());
        }
        if groups.len() != scan.drives.len() {
            outln!(
                "  {} paths lead to {} distinct drives (multipath)",
                scan.drives.len(),
                groups.len()
            );
        }
        for l in &wd_lines {
            outln!("{l}");
        }
        if !missing.is_empty() {
            outln!("missing:");
            for m in &missing {
                outln!("  - {m}");
            }
        }
    }
    if caps.io_uring.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uring_sg::{encode_version_page, Sense};

    #[test]
    fn probe_answers_in_plain_words() {
        let ok = |data| Reply {
            result: Ok(()),
            data,
        };
        assert_eq!(
            scsi_probe(ok(encode_version_page(2, 0x70))),
            Probe::Idm(Some((2, 0)))
        );
        assert!(matches!(scsi_probe(ok(vec![0; 4])), Probe::Failed(_)));
        assert_eq!(
            scsi_probe(Reply::err(DriveError::Check(Sense::new(5, 0x24, 0)))),
            Probe::NotIdm
        );
        assert_eq!(
            scsi_probe(Reply::err(DriveError::InvalidOpcode)),
            Probe::NotIdm
        );
        assert_eq!(
            scsi_probe(Reply::err(DriveError::Io(13))).text(),
            "could not be asked: I/O error (errno 13)"
        );
        assert_eq!(
            nvme_probe(Reply::err(DriveError::InvalidOpcode)).text(),
            "not an IDM drive"
        );
        assert_eq!(nvme_probe(ok(vec![0; 512])), Probe::Idm(None));
    }
}
