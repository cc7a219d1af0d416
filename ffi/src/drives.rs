//! How drive names become transports: the `IDM_SIM` environment variable.
//!
//! | `IDM_SIM` | drives |
//! | --- | --- |
//! | `mem:N` | an in-process array of `N` (1..=512) simulated drives `sim0`..`sim{N-1}`, one per engine: for tests and demos (two engines, e.g. two processes, do not share it) |
//! | `unix:PATH`, `tcp:HOST:PORT` | the drives of an `idm sim` server, looked up by name when a reactor first uses them ([`SimServerOpener`]) |
//! | unset or empty | real devices: a drive name is a device path as lvmlockd passes it (`/dev/sdX`, `/dev/mapper/*`, `/dev/disk/by-id/*`, `/dev/nvmeXnY`), resolved with every other path to the same drive ([`DeviceOpener`]) |

use std::sync::Arc;
use std::time::Duration;

use idm_engine::api::{
    DeviceOpener, DriveOpener, Engine, EngineConfig, EngineError, SimArray, SimServerOpener,
};
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
}

impl Drives {
    /// Starts an engine on `source`, with `tweak` applied to its configuration.
    pub fn start(
        source: DriveSource,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<Drives, EngineError> {
        let (engine, opener): (Engine, Arc<dyn DriveOpener>) = match &source {
            DriveSource::Mem(n) => {
                let array = SimArray::new(*n);
                let engine = Engine::on_array(array.clone(), tweak)?;
                (engine, array)
            }
            DriveSource::Sim(addr) => {
                let opener: Arc<dyn DriveOpener> = Arc::new(SimServerOpener::parse(addr)?);
                let mut cfg = EngineConfig::new(opener.clone());
                tweak(&mut cfg);
                (Engine::start(cfg)?, opener)
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
        })
    }

    /// Checks a drive name before any work is queued. Every source accepts every
    /// name here: a drive that cannot be opened counts as a failed drive of its
    /// lock (the others may still be a majority), and a lock none of whose
    /// drives opens fails with the open error (`ENOENT`) from the engine. Names
    /// outside an in-process array are logged once per call.
    pub fn precheck(&self, name: &str) -> Result<(), i32> {
        if let DriveSource::Mem(_) = &self.source {
            if !self.engine.simulated_drives().iter().any(|d| d == name) {
                tracing::warn!(drive = name, "no such simulated drive: it counts as failed");
            }
        }
        Ok(())
    }

    /// Refuses a name that is not one of an in-process array's drives.
    fn known(&self, name: &str) -> Result<(), i32> {
        match &self.source {
            DriveSource::Mem(_) if !self.engine.simulated_drives().iter().any(|d| d == name) => {
                Err(errno::ENOENT)
            }
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

    #[test]
    fn unknown_real_drives_are_refused() {
        let d = Drives::start(DriveSource::Real, |c| c.reactors = 1).unwrap();
        assert!(d
            .version("/nonexistent/idm-drive", Duration::from_secs(1))
            .is_err());
    }
}
