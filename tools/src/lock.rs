//! `idm lock`: take one lock through the engine, on simulated or real drives,
//! hold it (renewing), and release it. The end-to-end tests (real kernels over
//! iSCSI) and people trying the engine use it.
//!
//! Exit codes: 0 granted (and released, or fenced as asked for), 1 the lock was
//! refused (busy), 2 any other error, 3 the lockspace was fenced while holding
//! the lock without `--stop-renew-after-ms` asking for it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idm_engine::api::{EngineError, FenceAction, LockOptions, LockspaceConfig};
use idm_engine::error::LockError;
use uring_sg::{HostId, Mode};

use crate::common::{errno_name, fail, EXIT_ERROR};
use crate::target::{parse_mode, LockTarget};

/// Options of `idm lock`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: LockTarget,
    /// This host's ID (text up to 32 bytes, or `hex:...`).
    #[arg(long)]
    host: HostId,
    /// Lock mode.
    #[arg(long, default_value = "ex", value_parser = parse_mode)]
    mode: Mode,
    /// Lease (drive membership countdown), ms: 1000 to 3600000, and at least
    /// twice --command-timeout-ms (a renewal must be able to fail and be retried
    /// before the fence).
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1000..=3_600_000))]
    lease_ms: u64,
    /// Give up acquiring after this long, ms.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Fail at once with "busy" on live contention.
    #[arg(long)]
    no_wait: bool,
    /// Hold the lock this long before releasing it, ms (renewing meanwhile).
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Leave the lock held when this command ends, without renewing it: it lapses
    /// after the lease unless `idm unlock` (same host ID) releases it first.
    #[arg(long, conflicts_with = "stop_renew_after_ms")]
    keep: bool,
    /// Stop renewing this long after the grant (to show lease expiry and
    /// fencing); the lock is then left to lapse, not released.
    #[arg(long)]
    stop_renew_after_ms: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What happened, for `--json`.
struct Report {
    result: &'static str,
    errno: i32,
    acquire_ms: f64,
    fenced: bool,
    message: String,
}

impl Report {
    fn print(&self, json: bool) {
        if json {
            let v = serde_json::json!({
                "result": self.result,
                "errno": self.errno,
                "acquire_ms": self.acquire_ms,
                "fenced": self.fenced,
                "message": self.message,
            });
            outln!("{v}");
        } else {
            outln!("{}", self.message);
        }
    }
}

/// Runs `idm lock`.
pub fn run(args: Args) -> ExitCode {
    if args.lease_ms < 2 * args.target.command_timeout_ms {
        return fail(format!(
            "--lease-ms {} is shorter than twice --command-timeout-ms {}: a lease must outlive a failed renewal and its retry",
            args.lease_ms, args.target.command_timeout_ms
        ));
    }
    let fenced = Arc::new(AtomicBool::new(false));
    let mut cfg = LockspaceConfig::new("idm-lock").with_lease(Duration::from_millis(args.lease_ms));
    cfg.host_id = args.host;
    let f = fenced.clone();
    cfg.fence = FenceAction::Callback(Arc::new(move |_| f.store(true, Ordering::SeqCst)));
    let ls = match args.target.open(cfg) {
        Ok(ls) => ls,
        Err(e) => return fail(e),
    };
    let opts = LockOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        no_wait: args.no_wait,
    };
    let started = Instant::now();
    let got = ls.lock(args.target.lock, args.mode, &args.target.drives, opts);
    let acquire_ms = started.elapsed().as_secs_f64() * 1e3;
    if let Err(e) = got {
        let busy = matches!(e, EngineError::Lock(LockError::Busy));
        Report {
            result: if busy { "busy" } else { "error" },
            errno: e.errno(),
            acquire_ms,
            fenced: false,
            message: format!("{e} ({}) after {acquire_ms:.1} ms", errno_name(e.errno())),
        }
        .print(args.json);
        ls.close(false);
        return ExitCode::from(if busy { 1 } else { EXIT_ERROR });
    }
    if !args.json {
        outln!(
            "granted {:?} on {} drive(s) in {acquire_ms:.1} ms",
            args.mode,
            args.target.drives.len()
        );
        if let Ok(Some(until)) = ls.valid_until(args.target.lock) {
            outln!(
                "valid for {} ms more (renewed every {} ms)",
                until.saturating_duration_since(Instant::now()).as_millis(),
                args.lease_ms / 6
            );
        }
        if let Some(w) = ls.engine().watchdog() {
            match w.backend {
                Ok(b) => outln!("watchdog ({:?}): {b}", w.policy),
                Err(e) => outln!("watchdog ({:?}): none: {e}", w.policy),
            }
        }
    }
    let granted = Instant::now();
    let hold = Duration::from_millis(args.hold_ms);
    if args.keep {
        std::thread::sleep(hold);
        Report {
            result: "kept",
            errno: 0,
            acquire_ms,
            fenced: false,
            message: format!(
                "left held (not renewed: it lapses {} ms after its last renewal unless released with idm unlock)",
                args.lease_ms
            ),
        }
        .print(args.json);
        ls.close(false);
        return ExitCode::SUCCESS;
    }
    if let Some(after) = args.stop_renew_after_ms {
        std::thread::sleep(Duration::from_millis(after));
        ls.stop_renew();
        if !args.json {
            outln!("stopped renewing; waiting for the fence");
        }
        // Fencing fires before the lease ends; wait for it (bounded by the lease).
        let until = Instant::now() + Duration::from_millis(args.lease_ms);
        while !fenced.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let was = fenced.load(Ordering::SeqCst);
        Report {
            result: if was { "fenced" } else { "error" },
            errno: 0,
            acquire_ms,
            fenced: was,
            message: if was {
                format!(
                    "fenced {:.0} ms after the grant, before the lease ended; lock left to lapse",
                    granted.elapsed().as_secs_f64() * 1e3
                )
            } else {
                "not fenced within the lease: this is a bug".into()
            },
        }
        .print(args.json);
        ls.close(false);
        return if was {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_ERROR)
        };
    }
    while granted.elapsed() < hold && !fenced.load(Ordering::SeqCst) {
        std::thread::sleep((hold - granted.elapsed().min(hold)).min(Duration::from_millis(50)));
    }
    if fenced.load(Ordering::SeqCst) {
        Report {
            result: "fenced",
            errno: 0,
            acquire_ms,
            fenced: true,
            message: "fenced: renewals failed and the lease was about to end".into(),
        }
        .print(args.json);
        ls.close(false);
        return ExitCode::from(3);
    }
    match ls.unlock(args.target.lock) {
        Ok(()) => {
            Report {
                result: "released",
                errno: 0,
                acquire_ms,
                fenced: false,
                message: format!(
                    "released after holding {:.0} ms",
                    granted.elapsed().as_secs_f64() * 1e3
                ),
            }
            .print(args.json);
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("unlock failed: {e}")),
    }
}
