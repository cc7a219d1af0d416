//! How drive names become transports: the `IDM_SIM` environment variable.
//!
//! | `IDM_SIM` | drives |
//! | --- | --- |
//! | `mem:N` | an in-process array of `N` (1..=512) simulated drives `sim0`..`sim{N-1}`, one per engine: for tests and demos (two engines, e.g. two processes, do not share it) |
//! | `unix:PATH`, `tcp:HOST:PORT` | the drives of an `idm sim` server, looked up by name when a reactor first uses them ([`SimServerOpener`]) |
//! | unset or empty | real devices: a drive name is a device path as lvmlockd passes it (`/dev/sdX`, `/dev/mapper/*`, `/dev/disk/by-id/*`, `/dev/nvmeXnY`), resolved with every other path to the same drive ([`DeviceOpener`]) |
//!
//! **One vote per physical drive.** A lock's drive list often names one disk
//! several times: a VG on `/dev/sda2` and `/dev/sda3`, or on dm devices over
//! partitions of one disk. Before a list reaches the engine, [`Drives::dedupe`]
//! keeps one entry per drive: real devices by identity ([`dedupe_by_identity`]:
//! the WWN, else the serial, else the resolved sg/NVMe command node), each entry
//! renamed to that drive's command node (`/dev/sg0`, `/dev/nvme0`) so every lock
//! of the process names a drive the same way; simulated drives by name (a
//! simulator's drive name is its identity). The majority is then counted over
//! distinct drives.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idm_engine::api::{DeviceOpener, DriveOpener, Engine, EngineConfig, EngineError};
#[cfg(feature = "sim")]
use idm_sim::engine::{SimArray, SimEngine, SimServerOpener};
use uring_sg::discovery::{DriveCache, Roots};
use uring_sg::driver::Driver;
use uring_sg::transport::{Request, Transport};

use crate::guard::errno;

/// Most drives an in-process array may have.
pub const MAX_MEM_DRIVES: usize = 512;

/// Where drives come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriveSource {
    /// An in-process array of this many simulated drives.
    Mem(usize),
    /// An `idm sim` server at this address (`unix:PATH` or `tcp:HOST:PORT`).
    Sim(String),
    /// Real devices.
    Real,
}

/// A drive source that could not be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The text is not `mem:N`, `unix:PATH` or `tcp:HOST:PORT`.
    #[error("IDM_SIM={0:?}: expected mem:N (N in 1..=512), unix:PATH or tcp:HOST:PORT")]
    Bad(String),
}

impl DriveSource {
    /// Parses the text form (see the module docs); empty means real devices.
    pub fn parse(s: &str) -> Result<DriveSource, SourceError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(DriveSource::Real);
        }
        if let Some(n) = s.strip_prefix("mem:") {
            return match n.parse::<usize>() {
                Ok(n) if (1..=MAX_MEM_DRIVES).contains(&n) => Ok(DriveSource::Mem(n)),
                _ => Err(SourceError::Bad(s.to_string())),
            };
        }
        if (s.starts_with("unix:") && s.len() > 5) || (s.starts_with("tcp:") && s.len() > 4) {
            return Ok(DriveSource::Sim(s.to_string()));
        }
        Err(SourceError::Bad(s.to_string()))
    }

    /// The source `IDM_SIM` names.
    pub fn from_env() -> Result<DriveSource, SourceError> {
        DriveSource::parse(&std::env::var("IDM_SIM").unwrap_or_default())
    }
}

/// A started engine and the way it opens drives.
pub struct Drives {
    /// The engine.
    pub engine: Engine,
    opener: Arc<dyn DriveOpener>,
    source: DriveSource,
    /// Resolved real device paths (identity re-checked on every use).
    cache: Mutex<DriveCache>,
}

/// `names` without repeats, first occurrence kept, order kept.
pub fn dedupe_names(names: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    names
        .iter()
        .filter(|n| seen.insert(n.as_str()))
        .cloned()
        .collect()
}

/// What makes two device paths one drive, and the name the drive gets: the
/// identity key (WWN, else serial) with the drive's command node; a drive that
/// says neither is keyed by its command node. A path that does not resolve to
/// exactly one drive (missing, or a dm device over several drives) keeps its own
/// name as key and name: the engine reports it as it would have.
fn drive_key(cache: &mut DriveCache, name: &str) -> (String, String) {
    let own = || (format!("name:{name}"), name.to_string());
    let Ok(found) = cache.resolve(Path::new(name)) else {
        return own();
    };
    let [drive] = found.as_slice() else {
        return own();
    };
    let Some(node) = drive.command_node().and_then(Path::to_str) else {
        return own();
    };
    let key = drive
        .identity
        .key()
        .map_or_else(|| format!("node:{node}"), |k| format!("id:{k}"));
    (key, node.to_string())
}

/// Real device paths deduplicated by the drive behind them (module docs): one
/// entry per drive, in the order of first appearance, each named by its command
/// node; paths that resolve to no single drive are kept as given (deduplicated
/// as strings).
pub fn dedupe_by_identity(cache: &mut DriveCache, names: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let (key, name) = drive_key(cache, n);
        if seen.insert(key) {
            out.push(name);
        }
    }
    out
}

impl Drives {
    /// Starts an engine on `source`, with `tweak` applied to its configuration.
    pub fn start(
        source: DriveSource,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<Drives, EngineError> {
        let (engine, opener): (Engine, Arc<dyn DriveOpener>) = match &source {
            #[cfg(feature = "sim")]
            DriveSource::Mem(n) => {
                let array = SimArray::new(*n);
                let engine = Engine::on_array(array.clone(), tweak)?;
                (engine, array)
            }
            #[cfg(feature = "sim")]
            DriveSource::Sim(addr) => {
                let opener: Arc<dyn DriveOpener> = Arc::new(SimServerOpener::parse(addr)?);
                let mut cfg = EngineConfig::new(opener.clone());
                tweak(&mut cfg);
                (Engine::start(cfg)?, opener)
            }
            #[cfg(not(feature = "sim"))]
            DriveSource::Mem(_) | DriveSource::Sim(_) => {
                return Err(EngineError::InvalidArgument(
                    "IDM_SIM is set, but this library was built without simulator \
                     support (cargo feature `sim` of idm-ffi)"
                        .into(),
                ))
            }
            DriveSource::Real => {
                let opener: Arc<dyn DriveOpener> = Arc::new(DeviceOpener::new());
                let mut cfg = EngineConfig::new(opener.clone());
                tweak(&mut cfg);
                (Engine::start(cfg)?, opener)
            }
        };
        Ok(Drives {
            engine,
            opener,
            source,
            cache: Mutex::new(DriveCache::new(Roots::default())),
        })
    }

    /// One entry per physical drive (module docs), order of first appearance.
    pub fn dedupe(&self, names: &[String]) -> Vec<String> {
        let out = match self.source {
            DriveSource::Real => {
                let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                dedupe_by_identity(&mut c, names)
            }
            DriveSource::Mem(_) | DriveSource::Sim(_) => dedupe_names(names),
        };
        if out.as_slice() != names {
            tracing::debug!(given = ?names, drives = ?out, "drive list deduplicated");
        }
        out
    }

    /// Checks a drive name before any work is queued. Every source accepts every
    /// name here: a drive that cannot be opened counts as a failed drive of its
    /// lock (the others may still be a majority), and a lock none of whose
    /// drives opens fails with the open error (`ENOENT`) from the engine. Names
    /// outside an in-process array are logged once per call.
    pub fn precheck(&self, name: &str) -> Result<(), i32> {
        if let DriveSource::Mem(_) = &self.source {
            if !self.simulated(name) {
                tracing::warn!(drive = name, "no such simulated drive: it counts as failed");
            }
        }
        Ok(())
    }

    /// Whether `name` is one of the in-process array's drives.
    #[cfg(feature = "sim")]
    fn simulated(&self, name: &str) -> bool {
        self.engine.simulated_drives().iter().any(|d| d == name)
    }

    /// Whether `name` is one of the in-process array's drives (there is none
    /// without the simulator).
    #[cfg(not(feature = "sim"))]
    fn simulated(&self, _name: &str) -> bool {
        false
    }

    /// Refuses a name that is not one of an in-process array's drives.
    fn known(&self, name: &str) -> Result<(), i32> {
        match &self.source {
            DriveSource::Mem(_) if !self.simulated(name) => Err(errno::ENOENT),
            _ => Ok(()),
        }
    }

    /// The IDM version (major, minor) of drive `name`, asked through each of its
    /// paths in turn on a small private ring (not on a reactor: this is rare).
    pub fn version(&self, name: &str, timeout: Duration) -> Result<(u8, u8), i32> {
        self.known(name)?;
        let paths = self
            .opener
            .open(name, &format!("version-{}", std::process::id()))
            .map_err(|e| {
                tracing::warn!(drive = name, error = %e, "cannot open drive for its version");
                e.errno()
            })?;
        let mut last = errno::EIO;
        let big = self.opener.needs_sqe128();
        for path in paths {
            match version_on(path, big, timeout) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Runs one version INQUIRY on `path`, on a ring with 128-byte entries if `big`.
fn version_on(path: Box<dyn Transport>, big: bool, timeout: Duration) -> Result<(u8, u8), i32> {
    let ring_err = |e: std::io::Error| {
        tracing::error!(error = %e, "io_uring setup for a version query failed");
        errno::EIO
    };
    let reply = if big {
        let mut driver = Driver::new_big(8).map_err(ring_err)?;
        let index = driver.add(path);
        driver.call(index, &Request::Version, timeout)
    } else {
        let mut driver = Driver::new(8).map_err(ring_err)?;
        let index = driver.add(path);
        driver.call(index, &Request::Version, timeout)
    }
    .map_err(|e| {
        tracing::warn!(error = %e, "version query failed");
        errno::EIO
    })?;
    reply.result.map_err(|e| e.errno())?;
    uring_sg::decode_version_page(&reply.data).map_err(|e| {
        tracing::warn!(error = %e, "bad version page");
        errno::EIO
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(DriveSource::parse("mem:3"), Ok(DriveSource::Mem(3)));
        assert_eq!(DriveSource::parse(""), Ok(DriveSource::Real));
        assert_eq!(
            DriveSource::parse("unix:/tmp/s"),
            Ok(DriveSource::Sim("unix:/tmp/s".into()))
        );
        assert!(DriveSource::parse("mem:0").is_err());
        assert!(DriveSource::parse("mem:513").is_err());
        assert!(DriveSource::parse("mem:x").is_err());
        assert!(DriveSource::parse("unix:").is_err());
        assert!(DriveSource::parse("disk").is_err());
    }

    #[test]
    #[cfg(not(feature = "sim"))]
    fn simulated_sources_are_refused_without_the_sim_feature() {
        for source in [
            DriveSource::Mem(3),
            DriveSource::Sim("unix:/nonexistent".into()),
        ] {
            match Drives::start(source, |c| c.reactors = 1) {
                Err(EngineError::InvalidArgument(m)) => assert!(m.contains("`sim`"), "{m}"),
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("a simulated source started without the sim feature"),
            }
        }
    }

    #[test]
    #[cfg(feature = "sim")]
    fn mem_drives_answer_version_and_unknown_names_are_refused() {
        let d = Drives::start(DriveSource::Mem(2), |c| c.reactors = 1).unwrap();
        let (major, _minor) = d.version("sim1", Duration::from_secs(5)).unwrap();
        assert!(major > 0);
        assert_eq!(
            d.precheck("sim9"),
            Ok(()),
            "counts as a failed drive of its lock"
        );
        assert_eq!(
            d.version("sim9", Duration::from_secs(5)),
            Err(errno::ENOENT)
        );
    }

    /// A fake sysfs and /dev tree shaped like the kernel's (as in uring-sg's
    /// discovery tests): SCSI disks with partitions, a dm device.
    struct Tree {
        _dir: tempfile::TempDir,
        roots: Roots,
    }

    impl Tree {
        fn new() -> Tree {
            let dir = tempfile::tempdir().unwrap();
            let roots = Roots {
                sys: dir.path().join("sys"),
                dev: dir.path().join("dev"),
            };
            Tree { _dir: dir, roots }
        }

        fn write(p: &Path, s: &str) {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        }

        fn link(link: &Path, target: &Path) {
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, link).unwrap();
        }

        fn dev(&self, rel: &str) -> String {
            self.roots.dev.join(rel).display().to_string()
        }

        /// Disk `block` at `hctl` with sg node `sg`, its WWID if given, and
        /// partitions `parts`.
        fn disk(&self, hctl: &str, block: &str, sg: &str, wwid: Option<&str>, parts: &[&str]) {
            let sys = &self.roots.sys;
            let d = sys.join(format!("devices/pci0000:00/host0/target0:0:0/{hctl}"));
            let b = d.join("block").join(block);
            std::fs::create_dir_all(&b).unwrap();
            Self::link(&b.join("device"), &d);
            Self::link(&sys.join(format!("class/block/{block}")), &b);
            let g = d.join("scsi_generic").join(sg);
            std::fs::create_dir_all(&g).unwrap();
            Self::link(&g.join("device"), &d);
            Self::link(&sys.join(format!("class/scsi_generic/{sg}")), &g);
            if let Some(w) = wwid {
                Self::write(&d.join("wwid"), &format!("{w}\n"));
            }
            Self::write(&self.roots.dev.join(block), "");
            Self::write(&self.roots.dev.join(sg), "");
            for p in parts {
                let pd = b.join(p);
                Self::write(&pd.join("partition"), "1\n");
                Self::link(&sys.join(format!("class/block/{p}")), &pd);
                Self::write(&self.roots.dev.join(p), "");
            }
        }

        /// dm device `dm` over `slaves`, with `/dev/mapper/alias`.
        fn dm(&self, dm: &str, alias: &str, slaves: &[&str]) {
            let sys = &self.roots.sys;
            let d = sys.join(format!("devices/virtual/block/{dm}"));
            std::fs::create_dir_all(d.join("slaves")).unwrap();
            for s in slaves {
                let t = std::fs::canonicalize(sys.join(format!("class/block/{s}"))).unwrap();
                Self::link(&d.join("slaves").join(s), &t);
            }
            Self::link(&sys.join(format!("class/block/{dm}")), &d);
            Self::write(&self.roots.dev.join(dm), "");
            Self::link(
                &self.roots.dev.join(format!("mapper/{alias}")),
                Path::new(&format!("../{dm}")),
            );
        }
    }

    #[test]
    fn partitions_and_dm_devices_of_one_disk_are_one_drive() {
        let t = Tree::new();
        t.disk(
            "0:0:0:0",
            "sda",
            "sg0",
            Some("naa.5000c500a1b2c3d4"),
            &["sda2", "sda3"],
        );
        t.disk(
            "0:0:1:0",
            "sdb",
            "sg1",
            Some("naa.5000c500a1b2c3d5"),
            &["sdb1"],
        );
        // A second path (multipath) to sdb's drive: same WWID, another sg node.
        t.disk("0:0:2:0", "sdc", "sg2", Some("naa.5000c500a1b2c3d5"), &[]);
        // A disk that says neither WWID nor serial: keyed by its sg node.
        t.disk("0:0:3:0", "sdd", "sg3", None, &["sdd1", "sdd2"]);
        t.dm("dm-0", "vg-lv", &["sda3"]);
        t.dm("dm-1", "vg-span", &["sda2", "sdb1"]);
        let mut cache = DriveCache::new(t.roots.clone());
        let names: Vec<String> = [
            "sda2",
            "sda3",
            "mapper/vg-lv",
            "sdb1",
            "sdc",
            "sdd1",
            "sdd2",
            "sda",
        ]
        .iter()
        .map(|n| t.dev(n))
        .collect();
        let got = dedupe_by_identity(&mut cache, &names);
        assert_eq!(got, vec![t.dev("sg0"), t.dev("sg1"), t.dev("sg3")]);
        // Same answer from the cache.
        assert_eq!(dedupe_by_identity(&mut cache, &names), got);

        // Names that resolve to no single drive stay as given (the engine reports
        // them), deduplicated as strings; the drives around them still count once.
        let missing = t.dev("sdz");
        let span = t.dev("mapper/vg-span");
        let names = vec![
            missing.clone(),
            t.dev("sda3"),
            span.clone(),
            missing.clone(),
            t.dev("sda2"),
        ];
        let got = dedupe_by_identity(&mut cache, &names);
        assert_eq!(got, vec![missing, t.dev("sg0"), span]);
    }

    #[test]
    #[cfg(feature = "sim")]
    fn simulated_drive_names_are_their_own_identity() {
        let names: Vec<String> = ["sim0", "sim1", "sim0", "sim2", "sim1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(dedupe_names(&names), vec!["sim0", "sim1", "sim2"]);
        let d = Drives::start(DriveSource::Mem(3), |c| c.reactors = 1).unwrap();
        assert_eq!(d.dedupe(&names), vec!["sim0", "sim1", "sim2"]);
    }

    #[test]
    fn unknown_real_drives_are_refused() {
        let d = Drives::start(DriveSource::Real, |c| c.reactors = 1).unwrap();
        assert!(d
            .version("/nonexistent/idm-drive", Duration::from_secs(1))
            .is_err());
    }
}
