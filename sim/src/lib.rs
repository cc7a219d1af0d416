//! # idm-sim: the IDM drive simulator
//!
//! Everything needed to run IDM drives without hardware, and nothing a production
//! host links (the wire and the device transports are in `uring-sg`; this crate
//! adds serde, serde_json and rand, which production does not need):
//!
//! - [`firmware`]: one simulated IDM drive as a pure state machine
//!   ([`firmware::Firmware`]).
//! - [`frame`]: the framed protocol (byte layout documented there).
//! - [`latency`]: per-drive latency models.
//! - [`faults`]: per-drive fault state (stop, I/O error, stall, power cycle, drop, cut).
//! - [`server`]: [`SimServer`], one thread on one io_uring serving every connection
//!   (Unix and TCP sockets).
//! - [`iscsi`]: an iSCSI target front end serving the same drives as LUNs with a
//!   data area (so a kernel's initiator sees disks that also answer IDM commands).
//! - [`SimHandle`]: a server on a background thread, for tests and embedding.
//! - [`Control`]: a blocking client for CONTROL frames (faults, table dump, stats).
//! - [`transport`]: the client side, two [`uring_sg::transport::Transport`]s:
//!   in-process drives ([`transport::mem::MemTransport`]) and the socket to a
//!   server ([`transport::sim::SimTransport`]).
//! - [`engine`]: the engine on simulated drives (`Engine::simulated`,
//!   `Engine::on_array`, `Engine::on_sim_server`, `Engine::with_sim_server`
//!   through the [`engine::SimEngine`] extension trait), built on the engine's
//!   general hooks ([`idm_engine::api::DriveOpener`] and a kept-alive value).
//!
//! **Drive clock**: every drive's `now_ms` is milliseconds since the server was
//! bound (monotonic). **Command timing**: a command is executed when it is
//! received (so a drive's countdown starts at receipt, as on a real drive); its
//! reply is sent after the drive's latency sample. A stalled drive executes held
//! commands when the stall ends. Replies go out in completion order.
//!
//! **Control requests** are JSON in CONTROL frames, tagged by `op`; answers are
//! JSON in CONTROL_OK frames tagged by `result` (or an ERROR frame). Examples:
//!
//! ```text
//! {"op":"list_drives"}                                  -> {"result":"drives","drives":[...]}
//! {"op":"fault","drive":"sim0","fault":"stall","ms":250} -> {"result":"ok"}
//! {"op":"fault","drive":"sim1","fault":"cut","client":"host-b"}
//! {"op":"set_latency","drive":"sim0","latency":{"fixed":{"us":100}}}
//! {"op":"dump_table","drive":"sim0"}                    -> {"result":"table","records":[...]}
//! {"op":"stats"}                                        -> {"result":"stats","commands":..,"cpu_ns":..}
//! ```
//!
//! **Table dump** (control) returns the firmware's snapshot: the records a
//! host's table read would return at that drive time.

pub mod engine;
pub mod faults;
pub mod firmware;
pub mod frame;
pub mod iscsi;
pub mod latency;
pub mod server;
pub mod transport;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use serde::{Deserialize, Serialize};

use crate::firmware::FirmwareConfig;
pub use faults::{FaultCmd, FaultState};
pub use frame::{Frame, FrameError};
pub use latency::Latency;
pub use server::{SharedDrive, SharedDrives, SimServer};

/// Where a simulator listens (and where clients connect).
///
/// Text form: `unix:PATH` or `tcp:HOST:PORT` (`HOST` may be a name or an
/// address; IPv6 in brackets).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A Unix stream socket at this path.
    Unix(PathBuf),
    /// A TCP socket (port 0 binds any free port; see [`SimServer::local_addrs`]).
    Tcp(SocketAddr),
}

impl FromStr for ListenAddr {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Self, SimError> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(SimError::Addr(s.to_string()));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(p)));
        }
        if let Some(hp) = s.strip_prefix("tcp:") {
            let a = hp
                .to_socket_addrs()
                .map_err(|_| SimError::Addr(s.to_string()))?
                .next()
                .ok_or_else(|| SimError::Addr(s.to_string()))?;
            return Ok(ListenAddr::Tcp(a));
        }
        Err(SimError::Addr(s.to_string()))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Everything that can go wrong setting up, serving or talking to a simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A socket or ring operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// An address is not `unix:PATH` or `tcp:HOST:PORT`.
    #[error("bad simulator address `{0}`: expected unix:PATH or tcp:HOST:PORT")]
    Addr(String),
    /// The peer sent a frame that does not decode.
    #[error("bad frame from simulator: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent a valid frame that makes no sense here.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server answered with ERROR.
    #[error("simulator: {0}")]
    Remote(String),
    /// The connection closed.
    #[error("simulator closed the connection")]
    Closed,
    /// A configuration value is unusable.
    #[error("bad simulator configuration: {0}")]
    Config(String),
    /// The server thread failed.
    #[error("simulator thread failed: {0}")]
    Thread(String),
}

/// How a simulator is built.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Drive names; a drive's id is its position.
    pub drives: Vec<String>,
    /// The firmware every drive runs.
    pub firmware: FirmwareConfig,
    /// Latency per drive: drive `i` uses `latency[i]`, or the last entry when the
    /// list is shorter, or none when it is empty.
    pub latency: Vec<Latency>,
    /// Seed of the latency and drop random numbers.
    pub seed: u64,
    /// What one client may cost the server ([`ServerLimits`]).
    pub limits: ServerLimits,
}

/// The native server's defences against hostile or broken clients. Every limit
/// is a flag of `idm sim`; a refusal is logged once and then counted
/// ([`RateLog`]), never logged per event.
///
/// Worst case a connection costs about `max_queued` plus one largest reply (a
/// 4 MiB table read's real records; zeros past the table's end are sent from a
/// shared buffer, not stored) plus its receive buffer (at most one frame of the
/// largest size allowed below); times `max_conns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most connections open at once. One more is answered with an ERROR frame
    /// ("too many connections") and closed.
    pub max_conns: usize,
    /// Reply bytes one connection may be owed (queued, being sent, delayed by
    /// latency, or expected from commands held by a stall) before the server stops
    /// reading its requests; reading resumes once the client has read enough
    /// replies. A single reply may exceed it (one is let through, then reading stops).
    pub max_queued: usize,
    /// Largest data-out a COMMAND frame may carry (an IDM mutex write carries one
    /// 512-byte record). A frame header announcing more closes the connection before
    /// anything is allocated for it.
    pub max_data_out: usize,
    /// Largest CONTROL frame (its JSON request), checked the same way.
    pub max_control: usize,
    /// A connection that makes no progress for this long while the server waits on
    /// it (HELLO not yet received, a frame half received, or replies it does not
    /// read) is closed. A client that is simply quiet between commands is not: it
    /// costs only its small buffers. Zero disables the timeout.
    pub idle_timeout: Duration,
    /// After a failed accept (out of file descriptors, say) the listener waits this
    /// long before trying again, instead of spinning.
    pub accept_backoff: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_conns: 1024,
            max_queued: 1 << 20,
            max_data_out: 4096,
            max_control: 64 * 1024,
            idle_timeout: Duration::from_secs(30),
            accept_backoff: Duration::from_millis(100),
        }
    }
}

/// How often a rate-limited log line may repeat ([`RateLog`]).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Rate limit of one kind of log line: the first event is logged, later ones at
/// most once per [`LOG_INTERVAL`], each such line saying how many went unlogged.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateLog {
    last: Option<std::time::Instant>,
    quiet: u64,
}

impl RateLog {
    /// One event at `now`: `Some(n)` if it is to be logged (`n` events since the
    /// last logged one were not), `None` if it is only counted.
    pub fn hit(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < LOG_INTERVAL => {
                self.quiet += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.quiet))
            }
        }
    }
}

impl SimConfig {
    /// `n` drives named `sim0..sim{n-1}`, default firmware, no latency, seed 0.
    pub fn with_drives(n: usize) -> SimConfig {
        SimConfig {
            drives: (0..n).map(|i| format!("sim{i}")).collect(),
            firmware: FirmwareConfig::default(),
            latency: Vec::new(),
            seed: 0,
            limits: ServerLimits::default(),
        }
    }

    /// The latency model of drive `i`.
    pub fn latency_of(&self, i: usize) -> Latency {
        self.latency
            .get(i)
            .or(self.latency.last())
            .copied()
            .unwrap_or_default()
    }
}

/// A request carried by a CONTROL frame (JSON, tagged by `op`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// List the drives with their state.
    ListDrives,
    /// Apply a fault command to a drive.
    Fault {
        /// Drive name.
        drive: String,
        /// What to do.
        #[serde(flatten)]
        fault: FaultCmd,
    },
    /// Change a drive's latency model.
    SetLatency {
        /// Drive name.
        drive: String,
        /// The new model.
        latency: Latency,
    },
    /// Dump a drive's table.
    DumpTable {
        /// Drive name.
        drive: String,
    },
    /// Server counters.
    Stats,
}

/// One drive in a [`ControlResponse::Drives`] answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriveInfo {
    /// Drive name.
    pub name: String,
    /// Drive id (position).
    pub id: u32,
    /// Records in its table.
    pub records: usize,
    /// Latency model.
    pub latency: Latency,
    /// Faults in force.
    pub faults: FaultState,
}

/// One record of a [`ControlResponse::Table`] answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Lock ID (text or `hex:`).
    pub lock_id: String,
    /// Host ID (text or `hex:`).
    pub host_id: String,
    /// State name.
    pub state: String,
    /// Class (0 EX, 1 PW, 2 SH).
    pub class: u64,
    /// Countdown, ms.
    pub countdown_ms: u64,
    /// Last-modified time, ms.
    pub time_ms: u64,
    /// LVB as a little-endian u64.
    pub lvb: u64,
}

/// Server counters (the fields after `cpu_ns` default to 0 when absent, so
/// answers of older servers still decode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimStats {
    /// COMMAND frames received.
    pub commands: u64,
    /// REPLY frames sent.
    pub replies: u64,
    /// Open connections.
    pub connections: u64,
    /// CPU time of the server thread so far, ns.
    pub cpu_ns: u64,
    /// Heap bytes the server holds for its connections now: receive buffers,
    /// queued, delayed and held frames, and its reusable buffers.
    pub buffered_bytes: u64,
    /// Reply bytes owed to clients now, over all connections (what
    /// [`ServerLimits::max_queued`] bounds per connection; zeros sent from the
    /// shared buffer count here though they are not stored).
    pub queued_bytes: u64,
    /// The largest number of reply bytes one connection is owed now.
    pub max_conn_queued_bytes: u64,
    /// Connections whose requests are not being read now (backpressure).
    pub paused_connections: u64,
    /// Connections refused at [`ServerLimits::max_conns`] so far.
    pub refused_connections: u64,
    /// Connections closed by [`ServerLimits::idle_timeout`] so far.
    pub idle_closed: u64,
    /// Connections closed for a malformed, oversize or unexpected frame so far.
    pub bad_frames: u64,
    /// Failed accepts so far (each followed by [`ServerLimits::accept_backoff`]).
    pub accept_errors: u64,
}

/// The answer carried by a CONTROL_OK frame (JSON, tagged by `result`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ControlResponse {
    /// Done.
    Ok,
    /// The drives.
    Drives {
        /// One entry per drive, by id.
        drives: Vec<DriveInfo>,
    },
    /// A drive's table.
    Table {
        /// Its records.
        records: Vec<TableEntry>,
    },
    /// Server counters.
    Stats(SimStats),
}

/// A blocking stream to a simulator, Unix or TCP.
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// Connects (blocking) to `addr`.
    pub(crate) fn connect(addr: &ListenAddr) -> Result<Stream, SimError> {
        Ok(match addr {
            ListenAddr::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
            ListenAddr::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
        })
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }

    /// The socket's file descriptor.
    pub(crate) fn into_fd(self) -> std::os::fd::OwnedFd {
        match self {
            Stream::Unix(s) => s.into(),
            Stream::Tcp(s) => s.into(),
        }
    }

    /// Sends one frame.
    pub(crate) fn send(&mut self, f: &Frame<'_>) -> Result<(), SimError> {
        let mut out = Vec::new();
        f.encode(&mut out)?;
        self.io().write_all(&out)?;
        Ok(())
    }

    /// Receives one frame into `buf` (replaced) and calls `on` with it.
    pub(crate) fn recv<T>(
        &mut self,
        buf: &mut Vec<u8>,
        on: impl FnOnce(Frame<'_>) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        buf.clear();
        buf.resize(4, 0);
        self.read_exact(&mut buf[..4])?;
        let total = frame::frame_len(buf)?.ok_or(SimError::Closed)?;
        buf.resize(total, 0);
        self.read_exact(&mut buf[4..])?;
        let (f, _) = frame::decode(buf)?.ok_or(SimError::Closed)?;
        on(f)
    }

    fn read_exact(&mut self, b: &mut [u8]) -> Result<(), SimError> {
        self.io().read_exact(b).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                SimError::Closed
            } else {
                SimError::Io(e)
            }
        })
    }

    /// Sets a timeout on blocking reads.
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> Result<(), SimError> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t)?,
            Stream::Tcp(s) => s.set_read_timeout(t)?,
        }
        Ok(())
    }

    /// HELLO, answered by HELLO_OK: returns the drive names.
    pub(crate) fn hello(&mut self, client: &str) -> Result<Vec<String>, SimError> {
        self.send(&Frame::Hello { client })?;
        let mut buf = Vec::new();
        self.recv(&mut buf, |f| match f {
            Frame::HelloOk { drives } => Ok(drives.into_iter().map(str::to_string).collect()),
            Frame::Error { message } => Err(SimError::Remote(message.to_string())),
            other => Err(SimError::Protocol(format!(
                "expected HELLO_OK, got frame type {:#04x}",
                other.kind()
            ))),
        })
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A blocking client for CONTROL frames.
pub struct Control {
    stream: Stream,
    buf: Vec<u8>,
}

impl Control {
    /// Connects to a simulator (HELLO with client name `idm-control`).
    pub fn connect(addr: &ListenAddr) -> Result<Control, SimError> {
        let mut stream = Stream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.hello("idm-control")?;
        Ok(Control {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends one request and waits for its answer.
    pub fn request(&mut self, req: &ControlRequest) -> Result<ControlResponse, SimError> {
        let json = serde_json::to_string(req).map_err(|e| SimError::Protocol(e.to_string()))?;
        self.stream.send(&Frame::Control { json: &json })?;
        self.stream.recv(&mut self.buf, |f| match f {
            Frame::ControlOk { json } => {
                serde_json::from_str(json).map_err(|e| SimError::Protocol(e.to_string()))
            }
            Frame::Error { message } => Err(SimError::Remote(message.to_string())),
            other => Err(SimError::Protocol(format!(
                "expected CONTROL_OK, got frame type {:#04x}",
                other.kind()
            ))),
        })
    }

    /// Applies a fault command to `drive`.
    pub fn fault(&mut self, drive: &str, fault: FaultCmd) -> Result<(), SimError> {
        self.request(&ControlRequest::Fault {
            drive: drive.to_string(),
            fault,
        })
        .map(|_| ())
    }
}

/// A [`SimServer`] running on a background thread. Dropping it stops the server.
pub struct SimHandle {
    addrs: Vec<ListenAddr>,
    shared: SharedDrives,
    stop: EventFd,
    thread: Option<JoinHandle<Result<(), SimError>>>,
}

impl SimHandle {
    /// Binds a server to `addrs` (errors come back here) and runs it on a new thread.
    pub fn start(cfg: SimConfig, addrs: &[ListenAddr]) -> Result<SimHandle, SimError> {
        let mut server = SimServer::bind(cfg, addrs)?;
        let addrs = server.local_addrs();
        let shared = server.shared_drives();
        let stop =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).map_err(io::Error::from)?;
        let stop_fd = stop.as_fd().try_clone_to_owned()?;
        let thread = std::thread::Builder::new()
            .name("idm-sim".into())
            .spawn(move || server.run_until(stop_fd.as_fd()))?;
        Ok(SimHandle {
            addrs,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The addresses the server listens on (TCP port 0 replaced by the real port).
    pub fn addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    /// The server's drives and clock, to serve them through another front end
    /// too ([`iscsi::IscsiTarget::start`]).
    pub fn shared_drives(&self) -> SharedDrives {
        self.shared.clone()
    }

    /// Sends one control request over a fresh connection to the first address.
    pub fn control(&self, req: ControlRequest) -> Result<ControlResponse, SimError> {
        let addr = self
            .addrs
            .first()
            .ok_or_else(|| SimError::Config("no listen address".into()))?;
        Control::connect(addr)?.request(&req)
    }

    /// Stops the server and waits for its thread; reports how it ended.
    pub fn stop(mut self) -> Result<(), SimError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), SimError> {
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        self.stop.write(1).map_err(io::Error::from)?;
        t.join()
            .map_err(|_| SimError::Thread("server thread panicked".into()))?
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::warn!(error = %e, "simulator stopped with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_json_is_as_documented() {
        let r: ControlRequest =
            serde_json::from_str(r#"{"op":"fault","drive":"sim0","fault":"stall","ms":250}"#)
                .unwrap();
        assert_eq!(
            r,
            ControlRequest::Fault {
                drive: "sim0".into(),
                fault: FaultCmd::Stall { ms: 250 }
            }
        );
        let r: ControlRequest = serde_json::from_str(
            r#"{"op":"set_latency","drive":"sim0","latency":{"fixed":{"us":100}}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            ControlRequest::SetLatency {
                drive: "sim0".into(),
                latency: Latency::Fixed { us: 100 }
            }
        );
        let s = serde_json::to_string(&ControlResponse::Ok).unwrap();
        assert_eq!(s, r#"{"result":"ok"}"#);
        assert!(serde_json::to_string(&ControlResponse::Stats(SimStats {
            commands: 1,
            replies: 1,
            connections: 1,
            cpu_ns: 5,
            ..SimStats::default()
        }))
        .unwrap()
        .starts_with(r#"{"result":"stats","commands":1"#));
    }

    #[test]
    fn rate_log_logs_the_first_then_once_per_interval_with_a_count() {
        let t0 = std::time::Instant::now();
        let mut r = RateLog::default();
        assert_eq!(r.hit(t0), Some(0));
        for i in 1..1000 {
            assert_eq!(r.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.hit(t0 + LOG_INTERVAL), Some(999));
        assert_eq!(r.hit(t0 + LOG_INTERVAL), None);
    }

    #[test]
    fn listen_addrs_parse_and_print() {
        let u: ListenAddr = "unix:/tmp/x.sock".parse().unwrap();
        assert_eq!(u, ListenAddr::Unix("/tmp/x.sock".into()));
        assert_eq!(u.to_string(), "unix:/tmp/x.sock");
        let t: ListenAddr = "tcp:127.0.0.1:0".parse().unwrap();
        assert_eq!(t.to_string(), "tcp:127.0.0.1:0");
        for bad in ["", "unix:", "tcp:nohost", "udp:1.2.3.4:5", "/tmp/x"] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
    }
}
