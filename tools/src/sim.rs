//! `idm sim`: run a drive simulator in the foreground.

use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use idm_sim::firmware::FirmwareConfig;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use idm_sim::iscsi::{IscsiConfig, IscsiTarget, Limits};
use idm_sim::{Latency, ListenAddr, ServerLimits, SimConfig, SimServer};

use crate::common::{fail, parse_addr, DEFAULT_SIM};

/// Arguments of `idm sim`.
#[derive(clap::Args)]
pub struct Args {
    /// Number of drives named sim0..simN-1 (default 3 when no --drive is given).
    #[arg(long)]
    drives: Option<usize>,
    /// A drive with this name (repeatable; added after the sim0.. drives).
    #[arg(long = "drive", value_name = "NAME")]
    names: Vec<String>,
    /// Where to listen: unix:PATH or tcp:HOST:PORT (repeatable; default $IDM_SIM
    /// or unix:/tmp/idm-sim.sock).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// Reply latency of every drive: none, fixed:US, uniform:LO-HI, tail:MEDIAN_US,P99_US.
    #[arg(long, default_value = "none")]
    latency: Latency,
    /// Seed of the latency and drop random numbers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Records each drive's table holds.
    #[arg(long, default_value_t = FirmwareConfig::default().capacity)]
    capacity: usize,
    /// Also serve every drive as an iSCSI target on tcp:HOST:PORT (port 0: any
    /// free port), IQN iqn.2026-11.org.idm-engine:<drive>, one LUN each.
    #[arg(long, value_name = "tcp:HOST:PORT")]
    iscsi: Option<String>,
    /// Size of each iSCSI LUN's data area, MiB.
    #[arg(long, default_value_t = 64)]
    lun_size_mib: u64,
    /// Keep each LUN's data in DIR/<drive>.img instead of sparse RAM.
    #[arg(long, value_name = "DIR")]
    backing: Option<std::path::PathBuf>,
    /// Most client connections open at once; one more gets an ERROR frame ("too
    /// many connections") and is closed.
    #[arg(long, value_name = "N", default_value_t = ServerLimits::default().max_conns,
          help_heading = "Limits (hostile clients)")]
    max_conns: usize,
    /// Reply bytes one connection may be owed before the server stops reading its
    /// requests (backpressure: a client that pipelines and never reads replies
    /// fills its own socket, not the server).
    #[arg(long, value_name = "BYTES", default_value_t = ServerLimits::default().max_queued,
          help_heading = "Limits (hostile clients)")]
    max_queued_bytes: usize,
    /// Largest data-out of one COMMAND frame (an IDM write carries 512 bytes); a
    /// frame header announcing more closes the connection before any allocation.
    #[arg(long, value_name = "BYTES", default_value_t = ServerLimits::default().max_data_out,
          help_heading = "Limits (hostile clients)")]
    max_data_out_bytes: usize,
    /// Largest CONTROL frame (JSON request), checked the same way.
    #[arg(long, value_name = "BYTES", default_value_t = ServerLimits::default().max_control,
          help_heading = "Limits (hostile clients)")]
    max_control_bytes: usize,
    /// Close a connection that makes no progress for this long while the server
    /// waits on it (no HELLO yet, a frame half received, replies it does not read);
    /// quiet clients between commands are kept. 0: never.
    #[arg(long, value_name = "MS", default_value_t = ServerLimits::default().idle_timeout.as_millis() as u64,
          help_heading = "Limits (hostile clients)")]
    idle_timeout_ms: u64,
    /// Wait this long after a failed accept (e.g. out of file descriptors) before
    /// trying again (native and iSCSI listeners).
    #[arg(long, value_name = "MS", default_value_t = ServerLimits::default().accept_backoff.as_millis() as u64,
          help_heading = "Limits (hostile clients)")]
    accept_backoff_ms: u64,
    /// Most iSCSI connections at once; one more is answered with a login reject
    /// ("service unavailable") and closed.
    #[arg(long, value_name = "N", default_value_t = IscsiConfig::default().max_conns,
          help_heading = "Limits (hostile clients)")]
    iscsi_max_conns: usize,
    /// Largest login text (all PDUs of one login request together); more fails the
    /// login.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_login_text,
          help_heading = "Limits (hostile clients)")]
    iscsi_max_login_text_bytes: usize,
    /// An iSCSI login must complete within this long. 0: no limit.
    #[arg(long, value_name = "MS", default_value_t = IscsiConfig::default().login_timeout.as_millis() as u64,
          help_heading = "Limits (hostile clients)")]
    iscsi_login_timeout_ms: u64,
    /// Close an iSCSI connection after this long without a PDU received or a
    /// response taken by the initiator (initiators ping idle sessions with NOP-Out).
    /// 0: never.
    #[arg(long, value_name = "MS", default_value_t = IscsiConfig::default().idle_timeout.as_millis() as u64,
          help_heading = "Limits (hostile clients)")]
    iscsi_idle_timeout_ms: u64,
    /// Write data one iSCSI connection may have waiting for the rest of its data,
    /// over all its writes; a write past it is answered TASK SET FULL.
    #[arg(long, value_name = "BYTES", default_value_t = IscsiConfig::default().max_write,
          help_heading = "Limits (hostile clients)")]
    iscsi_max_write_bytes: usize,
    /// Commands one iSCSI connection may have held by a stall of its drive
    /// (`idm fault DRIVE stall MS`); one more is answered TASK SET FULL.
    #[arg(long, value_name = "N", default_value_t = IscsiConfig::default().max_held,
          help_heading = "Limits (hostile clients)")]
    iscsi_max_held: usize,
}

/// Runs `idm sim`.
pub fn run(a: Args) -> ExitCode {
    let generated = a.drives.unwrap_or(if a.names.is_empty() { 3 } else { 0 });
    let mut drives: Vec<String> = (0..generated).map(|i| format!("sim{i}")).collect();
    drives.extend(a.names);
    let listen = if a.listen.is_empty() {
        vec![std::env::var("IDM_SIM").unwrap_or_else(|_| DEFAULT_SIM.to_string())]
    } else {
        a.listen
    };
    let mut addrs = Vec::new();
    for l in &listen {
        match parse_addr(l) {
            Ok(x) => addrs.push(x),
            Err(e) => return fail(e),
        }
    }
    let cfg = SimConfig {
        drives,
        firmware: FirmwareConfig {
            capacity: a.capacity,
            ..FirmwareConfig::default()
        },
        latency: vec![a.latency],
        seed: a.seed,
        limits: ServerLimits {
            max_conns: a.max_conns,
            max_queued: a.max_queued_bytes,
            max_data_out: a.max_data_out_bytes,
            max_control: a.max_control_bytes,
            idle_timeout: Duration::from_millis(a.idle_timeout_ms),
            accept_backoff: Duration::from_millis(a.accept_backoff_ms),
        },
    };
    // Signals arrive through a signalfd the server's ring reads: block them first.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    if let Err(e) = mask.thread_block() {
        return fail(format!("cannot block signals: {e}"));
    }
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot create a signalfd: {e}")),
    };
    let mut server = match SimServer::bind(cfg.clone(), &addrs) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let iscsi = match &a.iscsi {
        None => None,
        Some(spec) => {
            let addr = match parse_addr(spec) {
                Ok(ListenAddr::Tcp(x)) => x,
                Ok(_) => return fail(format!("--iscsi wants tcp:HOST:PORT, not `{spec}`")),
                Err(e) => return fail(e),
            };
            let icfg = IscsiConfig {
                lun_bytes: a.lun_size_mib.saturating_mul(1 << 20),
                backing: a.backing.clone(),
                limits: Limits {
                    max_login_text: a.iscsi_max_login_text_bytes,
                    ..Limits::default()
                },
                max_conns: a.iscsi_max_conns,
                login_timeout: Duration::from_millis(a.iscsi_login_timeout_ms),
                idle_timeout: Duration::from_millis(a.iscsi_idle_timeout_ms),
                accept_backoff: Duration::from_millis(a.accept_backoff_ms),
                max_write: a.iscsi_max_write_bytes,
                max_held: a.iscsi_max_held,
            };
            match IscsiTarget::start(&server.shared_drives(), &icfg, addr) {
                Ok(t) => Some(t),
                Err(e) => return fail(e),
            }
        }
    };
    {
        let mut out = std::io::stdout().lock();
        for a in server.local_addrs() {
            let _ = writeln!(out, "listening on {a}");
        }
        if let Some(t) = &iscsi {
            let _ = writeln!(out, "iscsi listening on tcp:{}", t.local_addr());
            for q in t.iqns() {
                let _ = writeln!(out, "iscsi target {q}");
            }
        }
        let _ = writeln!(out, "drives: {}", cfg.drives.join(" "));
        let _ = out.flush();
    }
    tracing::info!(drives = cfg.drives.len(), latency = %a.latency, seed = a.seed, "simulator running");
    let r = server.run_until(sfd.as_fd());
    drop(server);
    drop(iscsi);
    match r {
        Ok(()) => {
            tracing::info!("simulator stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
