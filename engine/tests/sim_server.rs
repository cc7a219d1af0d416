//! The engine against the simulator server over a real Unix socket: the same
//! path `IDM_SIM` selects for the C library and the command line.

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use idm_engine::api::{Engine, EngineError, LockOptions, LockspaceConfig};
use idm_engine::error::LockError;
use idm_sim::engine::SimEngine;
use idm_sim::{FaultCmd, ListenAddr, SimConfig};
use uring_sg::Mode;

#[test]
fn lock_contention_and_a_cut_host_through_the_socket_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let addr = ListenAddr::Unix(dir.path().join("sim.sock"));
    let (engine, bound) = Engine::with_sim_server(SimConfig::with_drives(3), &[addr], |c| {
        c.command_timeout = Duration::from_millis(100);
        c.name = "host-a-engine".into();
    })
    .unwrap();
    let drives = engine.simulated_drives();
    assert_eq!(drives, ["sim0", "sim1", "sim2"]);
    let mut cfg = LockspaceConfig::new("vg");
    cfg.host_id = "host-a".parse().unwrap();
    let a = engine.lockspace(cfg).unwrap();

    // A second engine (another "host") on the same simulator.
    let other =
        Engine::on_sim_server(&bound[0].to_string(), |c| c.name = "host-b-engine".into()).unwrap();
    let mut cfg = LockspaceConfig::new("vg");
    cfg.host_id = "host-b".parse().unwrap();
    let b = other.lockspace(cfg).unwrap();

    let id = "vg/lv".parse().unwrap();
    let no_wait = LockOptions {
        timeout: Duration::from_secs(2),
        no_wait: true,
    };
    a.lock(id, Mode::Exclusive, &drives, no_wait).unwrap();
    assert_eq!(
        b.lock(id, Mode::Exclusive, &drives, no_wait),
        Err(EngineError::Lock(LockError::Busy))
    );
    a.unlock(id).unwrap();
    b.lock(id, Mode::Exclusive, &drives, no_wait).unwrap();
    b.unlock(id).unwrap();

    // Cut host a's reactors off two drives: it can no longer reach a majority.
    let mut ctl = idm_sim::Control::connect(&bound[0]).unwrap();
    for d in ["sim0", "sim1"] {
        for r in 0..engine.reactors() {
            ctl.fault(
                d,
                FaultCmd::Cut {
                    client: format!("host-a-engine/r{r}"),
                },
            )
            .unwrap();
        }
    }
    let r = a.lock(
        "vg/lv2".parse().unwrap(),
        Mode::Exclusive,
        &drives,
        LockOptions {
            timeout: Duration::from_millis(400),
            no_wait: false,
        },
    );
    assert!(
        matches!(
            r,
            Err(EngineError::Lock(LockError::Io(_) | LockError::Timeout))
        ),
        "{r:?}"
    );
    b.lock("vg/lv2".parse().unwrap(), Mode::Exclusive, &drives, no_wait)
        .unwrap();
}

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use idm_engine::api::{FenceAction, Lockspace};
use idm_sim::{ControlRequest, ControlResponse};

/// An engine on its own simulator with `n` drives, and one lockspace with `lease`.
fn setup(
    n: usize,
    lease: Duration,
    fence: FenceAction,
) -> (tempfile::TempDir, Engine, Lockspace, Vec<ListenAddr>) {
    let dir = tempfile::tempdir().unwrap();
    let addr = ListenAddr::Unix(dir.path().join("sim.sock"));
    let (engine, bound) = Engine::with_sim_server(SimConfig::with_drives(n), &[addr], |c| {
        // Generous: 512 drives answer over 512 connections to one server thread.
        c.command_timeout = Duration::from_secs(2);
        c.reactors = 1;
    })
    .unwrap();
    let mut cfg = LockspaceConfig::new("vg").with_lease(lease);
    cfg.host_id = "host-a".parse().unwrap();
    cfg.fence = fence;
    let ls = engine.lockspace(cfg).unwrap();
    (dir, engine, ls, bound)
}

fn no_wait() -> LockOptions {
    LockOptions {
        timeout: Duration::from_secs(2),
        no_wait: true,
    }
}

/// Waits (polling the engine, bounded) until `cond` holds.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_held_lock_survives_many_lease_lengths_by_renewal() {
    // Commands may take a quarter of the lease: 600 ms leaves a loaded 2-core
    // machine 150 ms per command before a drive counts as unresponsive.
    let lease = Duration::from_millis(600);
    let (_d, engine, a, bound) = setup(3, lease, FenceAction::None);
    let drives = engine.simulated_drives();
    let id = "long".parse().unwrap();
    a.lock(id, Mode::Exclusive, &drives, no_wait()).unwrap();
    let held_since = Instant::now();
    // Six lease lengths: without renewal the drives would have expired us.
    until("six leases", || held_since.elapsed() > lease * 6);
    let other = Engine::on_sim_server(&bound[0].to_string(), |c| c.reactors = 1).unwrap();
    let mut cfg = LockspaceConfig::new("vg");
    cfg.host_id = "host-b".parse().unwrap();
    let b = other.lockspace(cfg).unwrap();
    assert_eq!(
        b.lock(id, Mode::Exclusive, &drives, no_wait()),
        Err(EngineError::Lock(LockError::Busy))
    );
    let s = engine.stats().unwrap();
    assert!(s.renewals() >= 6, "{} renewals", s.renewals());
    assert_eq!(s.fences(), 0);
    assert!(!a.is_fenced());
    a.unlock(id).unwrap();
}

#[test]
fn a_power_cycled_drive_is_healed_by_renewal() {
    let (_d, engine, a, bound) = setup(3, Duration::from_millis(600), FenceAction::None);
    let drives = engine.simulated_drives();
    let id = "healed".parse().unwrap();
    a.lock(id, Mode::Exclusive, &drives, no_wait()).unwrap();
    let mut ctl = idm_sim::Control::connect(&bound[0]).unwrap();
    ctl.fault("sim0", FaultCmd::PowerCycle).unwrap();
    let table = |ctl: &mut idm_sim::Control| match ctl
        .request(&ControlRequest::DumpTable {
            drive: "sim0".into(),
        })
        .unwrap()
    {
        ControlResponse::Table { records } => records,
        other => panic!("{other:?}"),
    };
    assert!(table(&mut ctl).is_empty(), "the power cycle lost the table");
    // The next renewal finds "not found" on sim0 and takes the drive back.
    until("sim0 re-acquired", || {
        table(&mut ctl)
            .iter()
            .any(|r| r.lock_id == "healed" && r.host_id == "host-a" && r.state == "locked")
    });
    assert!(!a.is_fenced());
    a.unlock(id).unwrap();
}

#[test]
fn drives_stalled_beyond_the_lease_fence_the_lockspace_before_the_lease_ends() {
    let lease = Duration::from_millis(600);
    let (tx, rx) = mpsc::channel();
    let fence = FenceAction::Callback(Arc::new(move |_: &str| {
        let _ = tx.send(Instant::now());
    }));
    let (_d, engine, a, bound) = setup(3, lease, fence);
    let drives = engine.simulated_drives();
    a.lock(
        "stall".parse().unwrap(),
        Mode::Exclusive,
        &drives,
        no_wait(),
    )
    .unwrap();
    let mut ctl = idm_sim::Control::connect(&bound[0]).unwrap();
    // Every renewal sent so far was sent before this instant, so no lease of
    // this lock can be valid beyond it plus one lease.
    let stalled_at = Instant::now();
    for d in ["sim0", "sim1"] {
        ctl.fault(d, FaultCmd::Stall { ms: 3000 }).unwrap();
    }
    let fenced_at = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        fenced_at < stalled_at + lease,
        "fenced {:?} after the stall, lease {lease:?}",
        fenced_at - stalled_at
    );
    assert!(a.is_fenced());
    assert!(matches!(
        a.lock(
            "other".parse().unwrap(),
            Mode::Exclusive,
            &drives,
            no_wait()
        ),
        Err(EngineError::Fenced(_))
    ));
    for d in ["sim0", "sim1"] {
        ctl.fault(d, FaultCmd::Heal).unwrap();
    }
}

#[test]
fn a_lock_on_512_drives() {
    let (_d, engine, a, _) = setup(512, Duration::from_secs(60), FenceAction::None);
    let drives = engine.simulated_drives();
    assert_eq!(drives.len(), 512);
    let id = "wide".parse().unwrap();
    a.lock(id, Mode::Exclusive, &drives, no_wait()).unwrap();
    assert_eq!(a.host_count(id, &drives).unwrap(), (0, true));
    a.unlock(id).unwrap();
}
