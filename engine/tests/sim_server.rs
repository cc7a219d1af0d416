//! The engine against the simulator server over a real Unix socket: the same
//! path `IDM_SIM` selects for the C library and the command line.

use std::time::Duration;

use idm_engine::api::{Engine, EngineError, LockOptions, LockspaceConfig};
use idm_engine::error::LockError;
use uring_sg::sim::{FaultCmd, ListenAddr, SimConfig};
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
    let mut ctl = uring_sg::sim::Control::connect(&bound[0]).unwrap();
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
