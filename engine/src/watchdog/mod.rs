//! Watchdog fencing (ARCHITECTURE.md principle 6; issue 14): what the engine's
//! own threads cannot stop (a paused or killed holder, a hung host) is stopped by
//! a host watchdog armed from the same lease arithmetic. The host resets strictly
//! before the validity of any lock it holds can end; the argument and the numbers
//! are in the crate docs (DESIGN NOTE, "Watchdog").
//!
//! - [`plan`]: the arithmetic, sans-IO ([`WatchdogPlan`]).
//! - [`device`]: `/dev/watchdog` directly; [`wdmd`]: sanlock's multiplexer.
//! - [`Watchdog`]: one per engine (one device). Every reactor publishes its
//!   table's earliest validity end ([`crate::locks::LockTable::earliest_validity`],
//!   as an [`Instant`]) through a [`ValidityPublisher`] at a cadence; one thread
//!   arms, pets, shortens and disarms from the minimum. Nothing held: disarmed.
//!
//! Policy ([`WatchdogPolicy`]): off (default), auto (use one if present), required
//! (locks are refused with [`crate::api::EngineError::NoWatchdog`] while no
//! watchdog can be armed).

pub mod device;
pub mod plan;
pub mod wdmd;

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fencing::LeasePolicy;
use crate::time::Nanos;
pub use plan::{Action, Armed, WatchdogPlan};

/// How often the watchdog thread looks again without news (and pets).
pub const PET_EVERY: Duration = Duration::from_millis(500);
/// How often a reactor publishes its earliest validity while it holds locks.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// After a failure to open or arm, try again this much later.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Whether the engine uses a watchdog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WatchdogPolicy {
    /// No watchdog (the default): fencing is the kill path / signal only.
    #[default]
    Off,
    /// Use wdmd or `/dev/watchdog` when available; run unprotected otherwise
    /// (logged).
    Auto,
    /// As auto, but locks are refused while no watchdog can be armed.
    Required,
}

impl std::str::FromStr for WatchdogPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "0" | "no" | "" => Ok(WatchdogPolicy::Off),
            "auto" | "on" | "1" | "yes" => Ok(WatchdogPolicy::Auto),
            "required" | "require" => Ok(WatchdogPolicy::Required),
            other => Err(format!(
                "watchdog policy must be off, auto or required, not {other:?}"
            )),
        }
    }
}

/// Which watchdog serves the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// sanlock's wdmd, at this socket, with its timing.
    Wdmd {
        /// The socket.
        socket: PathBuf,
        /// Its test interval and fire timeout.
        status: wdmd::Status,
    },
    /// A watchdog device, opened by the engine.
    Device {
        /// The device node.
        path: PathBuf,
        /// What sysfs says about it.
        info: device::DeviceInfo,
    },
}

impl Backend {
    /// The shortest time from arming to reset this backend can give (what must
    /// fit between a renewal and the reset deadline).
    pub fn lead(&self) -> Duration {
        match self {
            Backend::Wdmd { status, .. } => Duration::from_secs(u64::from(status.fire_timeout)),
            // One second, counted twice (a close pets once more).
            Backend::Device { .. } => Duration::from_secs(2),
        }
    }

    /// In words.
    pub fn describe(&self) -> String {
        match self {
            Backend::Wdmd { socket, status } => format!(
                "wdmd at {} (test interval {} s, fire timeout {} s)",
                socket.display(),
                status.test_interval,
                status.fire_timeout
            ),
            Backend::Device { path, info } => format!(
                "{} ({})",
                path.display(),
                info.identity.as_deref().unwrap_or("unknown driver")
            ),
        }
    }
}

/// The engine's watchdog settings. Start from [`WatchdogConfig::default`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Off (default), auto or required.
    pub policy: WatchdogPolicy,
    /// The device used when wdmd does not run (default `/dev/watchdog`).
    pub device: PathBuf,
    /// wdmd's socket (default [`wdmd::DEFAULT_SOCKET`]).
    pub wdmd_socket: PathBuf,
    /// Use wdmd when it runs (default true).
    pub use_wdmd: bool,
    /// Reset at least this long before the earliest validity end (default 2 s).
    pub margin: Duration,
    /// Allowance for arming calls and timer lateness (default 250 ms).
    pub slack: Duration,
    /// Longest device timeout, seconds (default 60; sysfs `max_timeout` caps it).
    pub max_timeout_s: u32,
    /// Where sysfs is mounted (default `/sys`).
    pub sys: PathBuf,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            policy: WatchdogPolicy::Off,
            device: PathBuf::from("/dev/watchdog"),
            wdmd_socket: PathBuf::from(wdmd::DEFAULT_SOCKET),
            use_wdmd: true,
            margin: Duration::from_secs(2),
            slack: Duration::from_millis(250),
            max_timeout_s: 60,
            sys: PathBuf::from("/sys"),
        }
    }
}

impl WatchdogConfig {
    /// From the texts of `IDM_WATCHDOG` (off|auto|required), `IDM_WATCHDOG_DEVICE`
    /// (a device path, or `wdmd:SOCKET` to use only wdmd at SOCKET) and
    /// `IDM_WATCHDOG_MARGIN_MS`; unset values keep the defaults.
    pub fn parse(
        policy: Option<&str>,
        device: Option<&str>,
        margin_ms: Option<&str>,
    ) -> Result<WatchdogConfig, String> {
        let mut c = WatchdogConfig::default();
        if let Some(p) = policy {
            c.policy = p.parse()?;
        }
        match device.map(str::trim).filter(|d| !d.is_empty()) {
            Some(d) if d.starts_with("wdmd:") => {
                c.wdmd_socket = PathBuf::from(&d[5..]);
                c.device = PathBuf::new();
            }
            Some(d) => {
                c.device = PathBuf::from(d);
                c.use_wdmd = false;
            }
            None => {}
        }
        if let Some(m) = margin_ms.map(str::trim).filter(|m| !m.is_empty()) {
            let ms: u64 = m
                .parse()
                .map_err(|_| format!("IDM_WATCHDOG_MARGIN_MS must be milliseconds, not {m:?}"))?;
            c.margin = Duration::from_millis(ms);
        }
        Ok(c)
    }

    /// From the environment (see [`WatchdogConfig::parse`]).
    pub fn from_env() -> Result<WatchdogConfig, String> {
        let get = |v: &str| std::env::var(v).ok();
        WatchdogConfig::parse(
            get("IDM_WATCHDOG").as_deref(),
            get("IDM_WATCHDOG_DEVICE").as_deref(),
            get("IDM_WATCHDOG_MARGIN_MS").as_deref(),
        )
    }

    fn plan(&self, backend: Option<&Backend>) -> WatchdogPlan {
        let mut max = self.max_timeout_s.max(1);
        if let Some(Backend::Device { info, .. }) = backend {
            if let Some(m) = info.max_timeout.filter(|m| *m > 0) {
                max = max.min(m);
            }
        }
        WatchdogPlan {
            margin: Nanos::from_duration(self.margin),
            slack: Nanos::from_duration(self.slack),
            max_timeout_s: max,
            min_gain: plan::SECOND,
            rearm_ahead: plan::SECOND,
            close_pets: matches!(backend, Some(Backend::Device { .. })),
        }
    }
}

/// What [`probe`] found: each backend's availability and the one the engine
/// would use. Nothing is armed by probing (`/dev/watchdog` is not opened).
#[derive(Clone, Debug)]
pub struct Probe {
    /// wdmd's status, or why it cannot be used.
    pub wdmd: Result<wdmd::Status, String>,
    /// The device's sysfs facts, or why it cannot be used.
    pub device: Result<device::DeviceInfo, String>,
    /// The backend the engine would use, or why none.
    pub chosen: Result<Backend, String>,
}

/// Finds which watchdog `cfg` would use, without arming anything.
pub fn probe(cfg: &WatchdogConfig) -> Probe {
    let wdmd = if cfg.use_wdmd {
        wdmd::Wdmd::connect(&cfg.wdmd_socket).and_then(|mut w| w.status())
    } else {
        Err("not used (a device was named)".to_string())
    };
    let device = if cfg.device.as_os_str().is_empty() {
        Err("not used (wdmd was named)".to_string())
    } else {
        device::accessible(&cfg.device).and_then(|()| {
            let info = device::DeviceInfo::read(&cfg.sys, &cfg.device);
            match info.refusal() {
                Some(why) => Err(why),
                None => Ok(info),
            }
        })
    };
    let chosen = match (&wdmd, &device) {
        (Ok(status), _) => Ok(Backend::Wdmd {
            socket: cfg.wdmd_socket.clone(),
            status: *status,
        }),
        (_, Ok(info)) => Ok(Backend::Device {
            path: cfg.device.clone(),
            info: info.clone(),
        }),
        (Err(a), Err(b)) => Err(format!("no watchdog: wdmd: {a}; device: {b}")),
    };
    Probe {
        wdmd,
        device,
        chosen,
    }
}

/// What the watchdog is doing, for callers and `idm doctor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchdogState {
    /// The policy.
    pub policy: WatchdogPolicy,
    /// The backend in use, or why none can be.
    pub backend: Result<String, String>,
    /// Armed: when it fires at the latest unless petted.
    pub fires_by: Option<Instant>,
}

struct HubState {
    published: Vec<Option<Instant>>,
    /// Why no watchdog can be armed (probe failure, open failure).
    problem: Option<String>,
    backend: Option<Backend>,
    fires_by: Option<Instant>,
    stop: bool,
}

struct Hub {
    state: Mutex<HubState>,
    cv: Condvar,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine's watchdog: shared state and the thread that arms it.
pub struct Watchdog {
    hub: Arc<Hub>,
    cfg: WatchdogConfig,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Watchdog {
    /// Starts the watchdog thread for an engine of `reactors` reactors (`None`
    /// when the policy is off). The backend is chosen now ([`probe`]) but
    /// armed only when something is held.
    pub fn start(
        cfg: WatchdogConfig,
        reactors: usize,
        name: &str,
    ) -> std::io::Result<Option<Watchdog>> {
        if cfg.policy == WatchdogPolicy::Off {
            return Ok(None);
        }
        let p = probe(&cfg);
        let (backend, problem) = match p.chosen {
            Ok(b) => {
                tracing::info!(backend = %b.describe(), policy = ?cfg.policy, "watchdog available");
                (Some(b), None)
            }
            Err(e) => {
                tracing::warn!(policy = ?cfg.policy, error = %e, "no watchdog can be armed");
                (None, Some(e))
            }
        };
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState {
                published: vec![None; reactors],
                problem,
                backend,
                fires_by: None,
                stop: false,
            }),
            cv: Condvar::new(),
        });
        let h = hub.clone();
        let c = cfg.clone();
        let name = name.to_string();
        let thread = std::thread::Builder::new()
            .name("idm-watchdog".into())
            .spawn(move || Runner::new(h, c, name).run())?;
        Ok(Some(Watchdog {
            hub,
            cfg,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The policy.
    pub fn policy(&self) -> WatchdogPolicy {
        self.cfg.policy
    }

    /// The publisher for reactor `index`.
    pub fn publisher(&self, index: usize) -> ValidityPublisher {
        ValidityPublisher {
            hub: self.hub.clone(),
            index,
            last: None,
            last_at: None,
        }
    }

    /// `Ok` when a watchdog can protect the locks of a lockspace with `policy`:
    /// a backend is there, and its lead (1 s for a device, wdmd's fire timeout)
    /// fits between a renewal and the reset deadline.
    pub fn usable_for(&self, policy: &LeasePolicy) -> Result<(), String> {
        let st = self.hub.lock();
        if let Some(p) = &st.problem {
            return Err(p.clone());
        }
        let Some(b) = &st.backend else {
            return Err("no watchdog backend".into());
        };
        let room = policy
            .lease
            .saturating_sub(policy.drift_margin)
            .saturating_sub(policy.renew_every)
            .saturating_sub(Nanos::from_duration(self.cfg.margin + self.cfg.slack));
        let lead = Nanos::from_duration(b.lead());
        if room < lead {
            return Err(format!(
                "{} cannot protect a {} ms lease: between a renewal and the reset deadline \
                 (lease - drift - renewal interval - {} ms margin) there are {} ms, it needs {} ms",
                b.describe(),
                policy.lease.as_millis(),
                self.cfg.margin.as_millis(),
                room.as_millis(),
                lead.as_millis()
            ));
        }
        Ok(())
    }

    /// What it is doing now.
    pub fn state(&self) -> WatchdogState {
        let st = self.hub.lock();
        WatchdogState {
            policy: self.cfg.policy,
            backend: match (&st.problem, &st.backend) {
                (Some(p), _) => Err(p.clone()),
                (None, Some(b)) => Ok(b.describe()),
                (None, None) => Err("no watchdog backend".into()),
            },
            fires_by: st.fires_by,
        }
    }

    /// Stops the thread: disarmed if nothing is held, else left running (the
    /// host resets before the held locks' validity ends).
    pub fn stop(&self) {
        self.hub.lock().stop = true;
        self.hub.cv.notify_all();
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A reactor's side: publishes its earliest validity end (on the shared
/// monotonic clock, an [`Instant`]) at most every [`PUBLISH_EVERY`] while it
/// holds locks, and at once on a change between "nothing held" and "something
/// held".
#[derive(Clone)]
pub struct ValidityPublisher {
    hub: Arc<Hub>,
    index: usize,
    last: Option<Instant>,
    last_at: Option<Instant>,
}

impl ValidityPublisher {
    /// Whether a new value should be computed now (walking the table): while
    /// nothing was held, every turn (the walk of an empty table is cheap, and
    /// the first grant must arm at once); while held, every [`PUBLISH_EVERY`].
    pub fn due(&self, now: Instant) -> bool {
        match (self.last, self.last_at) {
            (Some(_), Some(at)) => now.saturating_duration_since(at) >= PUBLISH_EVERY,
            _ => true,
        }
    }

    /// Publishes `earliest` (taken at `now`). The watchdog thread is woken when
    /// the value appears, goes, or moves earlier.
    pub fn publish(&mut self, now: Instant, earliest: Option<Instant>) {
        let prev = self.last;
        self.last_at = Some(now);
        if prev == earliest {
            return;
        }
        self.last = earliest;
        let wake = match (prev, earliest) {
            (Some(p), Some(e)) => e < p,
            _ => true,
        };
        if let Some(slot) = self.hub.lock().published.get_mut(self.index) {
            *slot = earliest;
        }
        if wake {
            self.hub.cv.notify_all();
        }
    }
}

/// The open backend.
enum Open {
    Device(device::Device),
    Wdmd { conn: wdmd::Wdmd, expire: u64 },
}

/// The watchdog thread.
struct Runner {
    hub: Arc<Hub>,
    cfg: WatchdogConfig,
    name: String,
    origin: Instant,
    /// `CLOCK_MONOTONIC` at `origin`, ns (wdmd speaks that clock).
    origin_mono: u64,
    open: Option<Open>,
    armed: Option<Armed>,
    retry_at: Option<Instant>,
    warned_late: bool,
    warned_unprotected: bool,
}

fn clock_monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64)
    })
}

impl Runner {
    fn new(hub: Arc<Hub>, cfg: WatchdogConfig, name: String) -> Runner {
        Runner {
            hub,
            cfg,
            name,
            origin: Instant::now(),
            origin_mono: clock_monotonic_ns(),
            open: None,
            armed: None,
            retry_at: None,
            warned_late: false,
            warned_unprotected: false,
        }
    }

    fn nanos(&self, t: Instant) -> Nanos {
        Nanos::from_duration(t.saturating_duration_since(self.origin))
    }

    fn run(mut self) {
        loop {
            let (earliest, backend, stop) = {
                let st = self.hub.lock();
                let e = st.published.iter().flatten().min().copied();
                (e, st.backend.clone(), st.stop)
            };
            if stop {
                self.finish(earliest);
                return;
            }
            match backend {
                Some(b) => self.step(&b, earliest),
                None if earliest.is_some() && !self.warned_unprotected => {
                    self.warned_unprotected = true;
                    tracing::warn!(
                        "locks are held without watchdog protection (no watchdog could be used)"
                    );
                }
                None => {}
            }
            if earliest.is_none() {
                self.reprobe();
            }
            let fires_by = self.armed.map(|a| self.origin + a.fires_by.to_duration());
            let mut st = self.hub.lock();
            st.fires_by = fires_by;
            if st.stop {
                continue;
            }
            let _ = self
                .hub
                .cv
                .wait_timeout(st, PET_EVERY)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// While nothing is held and no watchdog could be used: look again now and
    /// then (a device may appear, wdmd may start), so that "required" lockspaces
    /// take locks again.
    fn reprobe(&mut self) {
        let now = Instant::now();
        if self.open.is_some() || self.retry_at.is_some_and(|r| now < r) {
            return;
        }
        if self.hub.lock().problem.is_none() {
            return;
        }
        self.retry_at = Some(now + RETRY_AFTER);
        let p = probe(&self.cfg);
        let mut st = self.hub.lock();
        match p.chosen {
            Ok(b) => {
                tracing::info!(backend = %b.describe(), "watchdog available");
                st.backend = Some(b);
                st.problem = None;
                // The next lock arms at once.
                self.retry_at = None;
            }
            Err(e) => st.problem = Some(e),
        }
    }

    fn set_problem(&self, p: Option<String>) {
        self.hub.lock().problem = p;
    }

    fn step(&mut self, backend: &Backend, earliest: Option<Instant>) {
        let now = Instant::now();
        if earliest.is_some() && self.open.is_none() {
            if let Some(r) = self.retry_at {
                if now < r {
                    return;
                }
            }
        }
        match backend {
            Backend::Device { path, .. } => self.step_device(backend, path.clone(), earliest),
            Backend::Wdmd { socket, status } => self.step_wdmd(socket.clone(), *status, earliest),
        }
    }

    fn fail(&mut self, what: String) {
        tracing::error!(error = %what, "watchdog could not be armed: held locks are not protected by it");
        self.set_problem(Some(what));
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
    }

    fn step_device(&mut self, backend: &Backend, path: PathBuf, earliest: Option<Instant>) {
        let plan = self.cfg.plan(Some(backend));
        let now = self.nanos(Instant::now());
        let e = earliest.map(|t| self.nanos(t));
        match plan.decide(now, e, self.armed) {
            Action::Nothing => {}
            Action::Arm { timeout_s } => {
                let r = match &mut self.open {
                    Some(Open::Device(d)) => d.set_timeout(timeout_s).map(|_| ()),
                    _ => device::Device::open(&self.cfg.sys, &path, timeout_s).map(|d| {
                        tracing::info!(device = %path.display(), timeout_s, "watchdog armed");
                        self.open = Some(Open::Device(d));
                    }),
                };
                match r {
                    Ok(()) => {
                        let got = match &self.open {
                            Some(Open::Device(d)) => d.timeout_s,
                            _ => timeout_s,
                        };
                        self.armed = Some(plan.armed(self.nanos(Instant::now()), got));
                        self.warned_late = false;
                        self.set_problem(None);
                    }
                    Err(e) => {
                        // A device that took the timeout wrongly is stopped
                        // (it was opened and is running).
                        if let Some(Open::Device(d)) = self.open.take() {
                            d.close_magic();
                        }
                        self.armed = None;
                        self.fail(e);
                    }
                }
            }
            Action::Pet => {
                if let Some(Open::Device(d)) = &mut self.open {
                    match d.pet() {
                        Ok(()) => {
                            let t = d.timeout_s;
                            self.armed = Some(plan.armed(self.nanos(Instant::now()), t));
                        }
                        Err(e) => tracing::error!(error = %e, "watchdog keepalive failed"),
                    }
                }
            }
            Action::Disarm => self.disarm(),
            Action::TooLate { late } => {
                if !self.warned_late {
                    self.warned_late = true;
                    if self.armed.is_none() {
                        tracing::error!("a held lock's validity ends within the watchdog's granularity: not armed (the lease fence is due)");
                    } else if late {
                        tracing::error!("a held lock's validity shrank below the armed watchdog timeout and cannot be caught up");
                    } else {
                        tracing::warn!(
                            "watchdog left to fire: a held lock's validity is about to end"
                        );
                    }
                }
            }
        }
    }

    fn step_wdmd(&mut self, socket: PathBuf, status: wdmd::Status, earliest: Option<Instant>) {
        let plan = self.cfg.plan(None);
        let Some(e) = earliest else {
            if self.open.is_some() {
                self.disarm();
            }
            return;
        };
        let now = Instant::now();
        let to_mono = |t: Instant| {
            self.origin_mono
                .saturating_add(t.saturating_duration_since(self.origin).as_nanos() as u64)
        };
        let now_mono = to_mono(now);
        let deadline = to_mono(e).saturating_sub(plan.margin.0);
        let Some(expire) = plan.wdmd_expire(now_mono, deadline, status.fire_timeout) else {
            if !self.warned_late {
                self.warned_late = true;
                tracing::error!(
                    fire_timeout = status.fire_timeout,
                    "wdmd's fire timeout does not fit before a held lock's reset deadline"
                );
            }
            return;
        };
        let renewal = now_mono / plan::SECOND.0;
        if self.open.is_none() {
            match wdmd::Wdmd::connect(&socket).and_then(|mut c| {
                c.register(&self.name)?;
                Ok(c)
            }) {
                Ok(conn) => {
                    tracing::info!(socket = %socket.display(), "registered with wdmd");
                    self.open = Some(Open::Wdmd { conn, expire: 0 });
                }
                Err(err) => return self.fail(err),
            }
        }
        if let Some(Open::Wdmd { conn, expire: cur }) = &mut self.open {
            if *cur != expire {
                match conn.test_live(renewal, expire) {
                    Ok(()) => {
                        *cur = expire;
                        let fires = Nanos::from_secs(expire + u64::from(status.fire_timeout))
                            .saturating_sub(Nanos(self.origin_mono));
                        self.armed = Some(Armed {
                            fires_by: fires,
                            alive_by: fires,
                            timeout_s: status.fire_timeout,
                        });
                        self.warned_late = false;
                        self.set_problem(None);
                    }
                    Err(err) => {
                        self.open = None;
                        self.armed = None;
                        self.fail(err);
                    }
                }
            }
        }
    }

    fn disarm(&mut self) {
        match self.open.take() {
            Some(Open::Device(d)) => {
                d.close_magic();
                tracing::info!("watchdog disarmed: nothing held");
            }
            Some(Open::Wdmd { conn, .. }) => {
                if let Err(e) = conn.disarm() {
                    tracing::error!(error = %e, "wdmd disarm failed");
                }
            }
            None => {}
        }
        self.armed = None;
    }

    fn finish(&mut self, earliest: Option<Instant>) {
        if earliest.is_none() {
            self.disarm();
            return;
        }
        if self.open.is_some() {
            tracing::error!("engine stopped while holding locks: the watchdog is left running and resets this host before their validity ends");
        }
        if let Some(Open::Device(d)) = self.open.take() {
            d.close_running();
        }
        // A wdmd connection closing with an expiry set keeps being tested.
        self.open = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_and_env_parsing() {
        assert_eq!("off".parse(), Ok(WatchdogPolicy::Off));
        assert_eq!("AUTO".parse(), Ok(WatchdogPolicy::Auto));
        assert_eq!("required".parse(), Ok(WatchdogPolicy::Required));
        assert!("sometimes".parse::<WatchdogPolicy>().is_err());
        let d = WatchdogConfig::parse(None, None, None).unwrap();
        assert_eq!(d, WatchdogConfig::default());
        assert_eq!(d.policy, WatchdogPolicy::Off);
        let c = WatchdogConfig::parse(Some("auto"), Some("/dev/watchdog1"), Some("3000")).unwrap();
        assert_eq!(c.device, PathBuf::from("/dev/watchdog1"));
        assert!(!c.use_wdmd);
        assert_eq!(c.margin, Duration::from_secs(3));
        let w = WatchdogConfig::parse(Some("required"), Some("wdmd:/tmp/w.sock"), None).unwrap();
        assert!(w.use_wdmd);
        assert_eq!(w.wdmd_socket, PathBuf::from("/tmp/w.sock"));
        assert!(w.device.as_os_str().is_empty());
        assert!(WatchdogConfig::parse(None, None, Some("soon")).is_err());
    }

    fn hermetic(dir: &std::path::Path) -> WatchdogConfig {
        WatchdogConfig {
            policy: WatchdogPolicy::Required,
            device: dir.join("no-watchdog"),
            wdmd_socket: dir.join("no-wdmd.sock"),
            sys: dir.to_path_buf(),
            ..WatchdogConfig::default()
        }
    }

    #[test]
    fn probe_without_any_watchdog_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(&hermetic(dir.path()));
        assert!(p.wdmd.is_err());
        assert!(p.device.is_err());
        let e = p.chosen.unwrap_err();
        assert!(e.contains("no watchdog"), "{e}");
    }

    #[test]
    fn required_without_watchdog_is_not_usable_and_never_arms() {
        let dir = tempfile::tempdir().unwrap();
        let w = Watchdog::start(hermetic(dir.path()), 2, "t")
            .unwrap()
            .unwrap();
        let lease = LeasePolicy::for_lease(Nanos::from_secs(60));
        assert!(w.usable_for(&lease).is_err());
        let mut p = w.publisher(1);
        let now = Instant::now();
        assert!(p.due(now));
        p.publish(now, Some(now + Duration::from_secs(50)));
        assert!(!p.due(now));
        p.publish(now, None);
        assert!(w.state().fires_by.is_none());
        assert!(w.state().backend.is_err());
        w.stop();
    }

    #[test]
    fn leases_a_backend_can_protect() {
        let dir = tempfile::tempdir().unwrap();
        let w = Watchdog::start(hermetic(dir.path()), 1, "t")
            .unwrap()
            .unwrap();
        {
            let mut st = w.hub.lock();
            st.problem = None;
            st.backend = Some(Backend::Wdmd {
                socket: dir.path().join("x"),
                status: wdmd::Status {
                    test_interval: 10,
                    fire_timeout: 60,
                    last_keepalive: 0,
                },
            });
        }
        let lvm = LeasePolicy::for_lease(Nanos::from_secs(60));
        let e = w.usable_for(&lvm).unwrap_err();
        assert!(e.contains("cannot protect"), "{e}");
        w.hub.lock().backend = Some(Backend::Device {
            path: dir.path().join("wd"),
            info: device::DeviceInfo::default(),
        });
        assert!(w.usable_for(&lvm).is_ok());
        assert!(w
            .usable_for(&LeasePolicy::for_lease(Nanos::from_secs(3)))
            .is_err());
        w.stop();
    }
}
