//! The simulator server driven through SimTransport + Driver, end to end.

use std::time::Duration;

use uring_sg::codec::{Class, DriveError, HostId, LockId, MutexOp, Record};
use uring_sg::driver::Driver;
use uring_sg::sim::{Control, FaultCmd, ListenAddr, SimConfig, SimHandle};
use uring_sg::transport::sim::SimTransport;
use uring_sg::transport::{Reply, Request};

const T: Duration = Duration::from_secs(10);

fn start(drives: usize) -> (tempfile::TempDir, SimHandle) {
    let dir = tempfile::tempdir().unwrap();
    let addrs = [
        ListenAddr::Unix(dir.path().join("sim.sock")),
        "tcp:127.0.0.1:0".parse().unwrap(),
    ];
    let h = SimHandle::start(SimConfig::with_drives(drives), &addrs).unwrap();
    (dir, h)
}

fn lock(name: &str) -> LockId {
    name.parse().unwrap()
}

fn host(name: &str) -> HostId {
    name.parse().unwrap()
}

fn mutex(op: MutexOp, l: &str, h: &str) -> Request {
    let mut record = Record::new(lock(l), host(h), Class::Exclusive);
    record.countdown_ms = 60_000;
    Request::Mutex { op, record }
}

fn call(d: &mut Driver, drive: usize, req: &Request, t: Duration) -> Reply {
    d.call(drive, req, t).unwrap()
}

#[test]
fn commands_get_answers_and_faults_apply() {
    let (_dir, sim) = start(2);
    for addr in sim.addrs().to_vec() {
        let mut d = Driver::new(64).unwrap();
        let a = d.add(Box::new(
            SimTransport::connect(&addr, "host-a", "sim0").unwrap(),
        ));
        let r = call(&mut d, a, &Request::ReadCount, T);
        assert!(!r.result.is_err_and(|e| e.is_io()), "{r:?}");

        let mut ctl = Control::connect(&addr).unwrap();
        ctl.fault("sim0", FaultCmd::IoError).unwrap();
        let r = call(&mut d, a, &mutex(MutexOp::Trylock, "l", "a"), T);
        assert_eq!(r.result, Err(DriveError::Io(5)));

        ctl.fault("sim0", FaultCmd::Heal).unwrap();
        ctl.fault("sim0", FaultCmd::Stop).unwrap();
        let r = call(&mut d, a, &Request::ReadCount, Duration::from_millis(50));
        assert_eq!(r.result, Err(DriveError::Timeout));
        ctl.fault("sim0", FaultCmd::Heal).unwrap();
    }
    sim.stop().unwrap();
}
