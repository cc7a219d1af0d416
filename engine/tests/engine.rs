//! The engine end to end on in-process simulated drives: real reactors, real
//! io_uring, the firmware model answering through the byte path.

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idm_engine::api::{Engine, EngineError, FenceAction, LockOptions, LockspaceConfig};
use idm_engine::error::LockError;
use idm_engine::locks::OpKind;
use idm_sim::engine::{SimArray, SimEngine};
use uring_sg::{HostId, LockId, Lvb, Mode};

fn host(name: &str) -> HostId {
    name.parse().unwrap()
}

fn space(engine: &Engine, name: &str, host_name: &str) -> idm_engine::api::Lockspace {
    let mut cfg = LockspaceConfig::new(name);
    cfg.host_id = host(host_name);
    engine.lockspace(cfg).unwrap()
}

fn id(s: &str) -> LockId {
    s.parse().unwrap()
}

fn no_wait() -> LockOptions {
    LockOptions {
        timeout: Duration::from_secs(2),
        no_wait: true,
    }
}

#[test]
fn exclusive_lock_excludes_another_host_until_released() {
    let engine = Engine::simulated(3).unwrap();
    let drives = engine.simulated_drives();
    let a = space(&engine, "vg", "host-a");
    let b = space(&engine, "vg", "host-b");
    let l = id("vg/lv0");
    a.lock(l, Mode::Exclusive, &drives, LockOptions::default())
        .unwrap();
    assert_eq!(
        b.lock(l, Mode::Exclusive, &drives, no_wait()),
        Err(EngineError::Lock(LockError::Busy))
    );
    assert_eq!(
        b.lock(l, Mode::Shared, &drives, no_wait()),
        Err(EngineError::Lock(LockError::Busy))
    );
    a.unlock(l).unwrap();
    b.lock(l, Mode::Exclusive, &drives, no_wait()).unwrap();
    b.unlock(l).unwrap();
    let s = engine.stats().unwrap();
    assert!(s.op(OpKind::Acquire).count >= 4);
    assert!(s.commands() >= 12);
}

#[test]
fn shared_locks_coexist_and_convert_both_ways() {
    let engine = Engine::simulated(3).unwrap();
    let drives = engine.simulated_drives();
    let a = space(&engine, "vg", "host-a");
    let b = space(&engine, "vg", "host-b");
    let l = id("vg/lv1");
    a.lock(l, Mode::Shared, &drives, no_wait()).unwrap();
    b.lock(l, Mode::Shared, &drives, no_wait()).unwrap();
    assert_eq!(a.host_count(l, &drives).unwrap(), (1, true));
    // Promotion refused while b holds it; a still holds SH.
    assert!(a.convert(l, Mode::Exclusive).is_err());
    assert_eq!(b.mode(l, &drives).unwrap(), Some(Mode::Shared));
    b.unlock(l).unwrap();
    a.convert(l, Mode::Exclusive).unwrap();
    assert_eq!(b.mode(l, &drives).unwrap(), Some(Mode::Exclusive));
    a.convert(l, Mode::Shared).unwrap();
    b.lock(l, Mode::Shared, &drives, no_wait()).unwrap();
}

#[test]
fn a_lockspace_refuses_a_second_lock_and_an_unknown_unlock() {
    let engine = Engine::simulated(1).unwrap();
    let drives = engine.simulated_drives();
    let a = space(&engine, "vg", "host-a");
    let l = id("vg/lv2");
    a.lock(l, Mode::Exclusive, &drives, no_wait()).unwrap();
    assert_eq!(
        a.lock(l, Mode::Exclusive, &drives, no_wait()),
        Err(EngineError::AlreadyHeld)
    );
    assert_eq!(a.unlock(id("vg/other")), Err(EngineError::NotHeld));
    assert!(matches!(
        a.lock(id("x"), Mode::Exclusive, &["nope"], no_wait()),
        Err(EngineError::Drive { .. })
    ));
    assert!(matches!(
        a.lock(id("y"), Mode::Exclusive, &["sim0", "sim0"], no_wait()),
        Err(EngineError::InvalidArgument(_))
    ));
    let none: [&str; 0] = [];
    assert!(matches!(
        a.lock(id("z"), Mode::Exclusive, &none, no_wait()),
        Err(EngineError::InvalidArgument(_))
    ));
}

#[test]
fn lvb_written_at_release_is_read_by_the_next_holder() {
    let engine = Engine::simulated(3).unwrap();
    let drives = engine.simulated_drives();
    let a = space(&engine, "vg", "host-a");
    let b = space(&engine, "vg", "host-b");
    let l = id("vg/lvb");
    a.lock(l, Mode::Exclusive, &drives, no_wait()).unwrap();
    a.write_lvb(l, Lvb::from_u64(0x0000_1234_5678_9abc))
        .unwrap();
    a.unlock(l).unwrap();
    b.lock(l, Mode::Shared, &drives, no_wait()).unwrap();
    assert_eq!(b.read_lvb(l).unwrap(), Lvb::from_u64(0x0000_1234_5678_9abc));
    assert_eq!(
        b.write_lvb(id("not-held"), Lvb::from_u64(1)),
        Err(EngineError::NotHeld)
    );
}

#[test]
fn quorum_survives_a_minority_of_dead_drives_and_not_a_majority() {
    let array = SimArray::new(5);
    let engine = Engine::on_array(array.clone(), |c| {
        c.command_timeout = Duration::from_millis(50);
    })
    .unwrap();
    let drives = engine.simulated_drives();
    let a = space(&engine, "vg", "host-a");
    array.drives()[0].set_down(true);
    array.drives()[1].set_io_error(true);
    a.lock(id("q1"), Mode::Exclusive, &drives, no_wait())
        .unwrap();
    array.drives()[2].set_down(true);
    let r = a.lock(
        id("q2"),
        Mode::Exclusive,
        &drives,
        LockOptions {
            timeout: Duration::from_millis(300),
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
    let s = engine.stats().unwrap();
    let sim1 = s.drives().iter().find(|(n, _)| n == "sim1").unwrap();
    assert!(sim1.1.consecutive_errors > 0);
}

#[test]
fn locks_are_renewed_and_a_lockspace_that_stops_renewing_is_fenced_before_its_lease_ends() {
    let engine = Engine::simulated(3).unwrap();
    let drives = engine.simulated_drives();
    let (tx, rx) = mpsc::channel();
    let mut cfg = LockspaceConfig::new("vg-fence").with_lease(Duration::from_millis(1500));
    cfg.host_id = host("host-f");
    cfg.fence = FenceAction::Callback(Arc::new(move |name: &str| {
        let _ = tx.send((name.to_string(), Instant::now()));
    }));
    let ls = engine.lockspace(cfg).unwrap();
    let sent = Instant::now();
    ls.lock(id("f1"), Mode::Exclusive, &drives, no_wait())
        .unwrap();
    // Renewals happen on their own (cadence lease/6 = 250 ms).
    let until = Instant::now() + Duration::from_secs(10);
    while engine.stats().unwrap().renewals() < 2 {
        assert!(Instant::now() < until, "no renewals");
        std::thread::yield_now();
    }
    ls.stop_renew();
    let stopped = Instant::now();
    let (name, fenced_at) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(name, "vg-fence");
    assert!(ls.is_fenced());
    // The last renewal was sent before stop_renew; the lease of that renewal ends
    // at most 1500 ms after it. Fencing must come before that.
    assert!(
        fenced_at < stopped + Duration::from_millis(1500),
        "fenced too late"
    );
    assert!(fenced_at > sent);
    assert!(matches!(
        ls.lock(id("f2"), Mode::Exclusive, &drives, no_wait()),
        Err(EngineError::Fenced(_))
    ));
    assert_eq!(engine.stats().unwrap().fences(), 1);
}

#[test]
fn dropping_a_lockspace_releases_its_locks_and_close_without_release_leaves_them() {
    let engine = Engine::simulated(3).unwrap();
    let drives = engine.simulated_drives();
    let b = space(&engine, "vg", "host-b");
    {
        let a = space(&engine, "vg", "host-a");
        a.lock(id("d1"), Mode::Exclusive, &drives, no_wait())
            .unwrap();
    }
    b.lock(id("d1"), Mode::Exclusive, &drives, no_wait())
        .unwrap();
    let a = space(&engine, "vg", "host-a");
    a.lock(id("d2"), Mode::Exclusive, &drives, no_wait())
        .unwrap();
    a.close(false);
    assert_eq!(
        b.lock(id("d2"), Mode::Exclusive, &drives, no_wait()),
        Err(EngineError::Lock(LockError::Busy))
    );
}

#[test]
fn a_restarted_host_takes_its_own_stale_mutex_back_at_once() {
    let array = SimArray::new(3);
    let drives = array.names();
    {
        let engine = Engine::on_array(array.clone(), |_| {}).unwrap();
        let a = space(&engine, "vg", "host-a");
        a.lock(id("crash"), Mode::Exclusive, &drives, no_wait())
            .unwrap();
        // The process "crashes": its lockspace is forgotten, the drives keep the
        // membership (60 s lease).
        a.close(false);
    }
    let engine = Engine::on_array(array.clone(), |_| {}).unwrap();
    let a = space(&engine, "vg", "host-a");
    let started = Instant::now();
    a.lock(id("crash"), Mode::Exclusive, &drives, no_wait())
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let b = space(&engine, "vg", "host-b");
    assert_eq!(
        b.lock(id("crash"), Mode::Exclusive, &drives, no_wait()),
        Err(EngineError::Lock(LockError::Busy))
    );
}

#[test]
fn many_threads_many_locks_and_async_submission() {
    let engine = Engine::simulated(8).unwrap();
    let drives = engine.simulated_drives();
    let ls = Arc::new(space(&engine, "vg", "host-a"));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let ls = ls.clone();
            let drives = drives.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let l = id(&format!("t{t}-l{i}"));
                    ls.lock(l, Mode::Exclusive, &drives, no_wait()).unwrap();
                    ls.unlock(l).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Submit 200 without waiting, then reap.
    let pending: Vec<_> = (0..200)
        .map(|i| ls.lock_async(id(&format!("a{i}")), Mode::Shared, &drives, no_wait()))
        .collect();
    for p in pending {
        p.wait().unwrap();
    }
    let s = engine.stats().unwrap();
    assert_eq!(s.op(OpKind::Acquire).count, 400);
    assert_eq!(s.op(OpKind::Acquire).errors, 0);
}

#[test]
fn bad_lockspace_settings_are_refused() {
    let engine = Engine::simulated(1).unwrap();
    let mut cfg = LockspaceConfig::new("bad");
    cfg.renew_every = Duration::ZERO;
    assert!(matches!(
        engine.lockspace(cfg),
        Err(EngineError::InvalidArgument(_))
    ));
    let ls = space(&engine, "vg", "h");
    assert!(ls.inject_fault(101).is_err());
}

#[test]
fn injected_faults_fail_commands_with_eio() {
    let engine = Engine::simulated(3).unwrap();
    let drives = engine.simulated_drives();
    let ls = space(&engine, "vg", "host-a");
    ls.inject_fault(100).unwrap();
    assert!(matches!(
        ls.lock(id("inj"), Mode::Exclusive, &drives, no_wait()),
        Err(EngineError::Lock(LockError::Io(_)))
    ));
    ls.inject_fault(0).unwrap();
    ls.lock(id("inj"), Mode::Exclusive, &drives, no_wait())
        .unwrap();
}

/// A path that fails every command with an I/O error (a dead HBA port).
struct DeadPath(Vec<u64>);

impl uring_sg::transport::Transport for DeadPath {
    fn name(&self) -> &str {
        "dead-path"
    }
    fn enqueue(
        &mut self,
        tag: u64,
        _: &uring_sg::transport::Request,
        _: Instant,
    ) -> Result<(), uring_sg::transport::EnqueueError> {
        self.0.push(tag);
        Ok(())
    }
    fn prepare(&mut self, _: &mut dyn uring_sg::transport::SqSink) {}
    fn on_cqe(
        &mut self,
        _: u64,
        _: &uring_sg::transport::Cqe,
        _: &mut dyn FnMut(uring_sg::transport::Completion),
    ) {
    }
    fn expire(&mut self, _: Instant, done: &mut dyn FnMut(uring_sg::transport::Completion)) {
        for tag in self.0.drain(..) {
            done(uring_sg::transport::Completion {
                tag,
                reply: uring_sg::transport::Reply::err(uring_sg::DriveError::Io(5)),
            });
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        (!self.0.is_empty()).then(Instant::now)
    }
    fn in_flight(&self) -> usize {
        self.0.len()
    }
}

/// Every drive reachable through a dead path first and a working one second.
struct TwoPaths(Arc<SimArray>);

impl idm_engine::api::DriveOpener for TwoPaths {
    fn open(
        &self,
        name: &str,
        client: &str,
    ) -> Result<Vec<Box<dyn uring_sg::transport::Transport>>, EngineError> {
        let mut good = self.0.open(name, client)?;
        let mut paths: Vec<Box<dyn uring_sg::transport::Transport>> =
            vec![Box::new(DeadPath(Vec::new()))];
        paths.append(&mut good);
        Ok(paths)
    }
}

#[test]
fn an_io_error_on_one_path_fails_over_to_the_next() {
    use idm_engine::api::DriveOpener;
    let array = SimArray::new(3);
    let mut cfg = idm_engine::api::EngineConfig::new(Arc::new(TwoPaths(array.clone())));
    cfg.reactors = 1;
    let engine = Engine::start(cfg).unwrap();
    let a = space(&engine, "vg", "host-a");
    let drives = array.names();
    a.lock(id("mp"), Mode::Exclusive, &drives, no_wait())
        .unwrap();
    a.unlock(id("mp")).unwrap();
    let s = engine.stats().unwrap();
    for (name, h) in s.drives() {
        assert_eq!(h.failovers, 1, "{name}: {h:?}");
        assert_eq!(h.consecutive_errors, 0, "{name}: {h:?}");
    }
    // The opener itself is usable directly too.
    assert_eq!(TwoPaths(array).open("sim0", "c").unwrap().len(), 2);
}

#[test]
fn an_acquire_queued_behind_a_release_keeps_the_lock_releasable() {
    // Regression: the release's outcome used to clear the claim the queued
    // acquire had set, leaving a held lock that could be neither unlocked nor
    // released when its lockspace was dropped (the drop then waited forever).
    let array = SimArray::with_firmware(
        3,
        idm_sim::firmware::FirmwareConfig::default(),
        Some(Arc::new(|| Duration::from_micros(200))),
    );
    let engine = Engine::on_array(array.clone(), |c| c.reactors = 1).unwrap();
    let drives = array.names();
    let a = space(&engine, "vg", "host-a");
    let l = id("queued");
    for _ in 0..20 {
        a.lock(l, Mode::Exclusive, &drives, no_wait()).unwrap();
        let release = a.unlock_async(l);
        let again = a.lock_async(l, Mode::Exclusive, &drives, LockOptions::default());
        release.wait().unwrap();
        again.wait().unwrap();
        a.unlock(l).unwrap();
    }
    a.lock(l, Mode::Exclusive, &drives, no_wait()).unwrap();
    drop(a); // must release and return
    let b = space(&engine, "vg", "host-b");
    b.lock(l, Mode::Exclusive, &drives, no_wait()).unwrap();
}

#[test]
fn short_leases_with_many_quick_lock_cycles_never_fence() {
    // Regression: a fencing timer armed for one lock entry fired on a later entry
    // that reused its slot (same generation), and a fencing check during a
    // release saw the cleared state as "no validity" and fenced a healthy host.
    let engine = Engine::simulated(3).unwrap();
    let drives = engine.simulated_drives();
    let mut cfg = LockspaceConfig::new("quick").with_lease(Duration::from_millis(600));
    cfg.host_id = host("host-q");
    let ls = engine.lockspace(cfg).unwrap();
    let started = Instant::now();
    let mut i = 0u32;
    while started.elapsed() < Duration::from_millis(1500) {
        let l = id(&format!("q{}", i % 50));
        ls.lock(l, Mode::Exclusive, &drives, no_wait()).unwrap();
        ls.unlock(l).unwrap();
        i += 1;
    }
    assert!(!ls.is_fenced(), "fenced after {i} cycles");
    assert_eq!(engine.stats().unwrap().fences(), 0);
}

#[test]
fn required_lockspace_refuses_locks_and_valid_until_reports() {
    // Moved from the watchdog's unit tests: it needs the simulator (idm-sim), which
    // only integration tests can link with the same idm-engine.
    let engine = Engine::simulated(3).unwrap();
    assert!(engine.watchdog().is_none());
    let drives = engine.simulated_drives();
    let id = "wd-1".parse().unwrap();
    let mut cfg = LockspaceConfig::new("wd");
    cfg.require_watchdog = true;
    let ls = engine.lockspace(cfg).unwrap();
    let e = ls
        .lock(
            id,
            uring_sg::Mode::Exclusive,
            &drives,
            LockOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(e, EngineError::NoWatchdog(_)), "{e}");
    assert_eq!(e.errno(), 19);
    let plain = engine.lockspace(LockspaceConfig::new("plain")).unwrap();
    assert_eq!(plain.valid_until(id).unwrap(), None);
    plain
        .lock(
            id,
            uring_sg::Mode::Exclusive,
            &drives,
            LockOptions::default(),
        )
        .unwrap();
    let until = plain.valid_until(id).unwrap().expect("held");
    // 60 s lease: validity is the send time plus 60 s minus the drift margin.
    assert!(until > Instant::now());
    plain.unlock(id).unwrap();
    assert_eq!(plain.valid_until(id).unwrap(), None);
}
