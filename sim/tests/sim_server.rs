//! The simulator server driven through SimTransport + Driver, end to end: real
//! sockets (Unix and TCP), real io_uring on both sides.

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use idm_sim::frame::{self, Frame};
use idm_sim::transport::sim::SimTransport;
use idm_sim::{
    Control, ControlRequest, ControlResponse, FaultCmd, Latency, ListenAddr, SimConfig, SimHandle,
};
use uring_sg::codec::{decode_table_count, Class, DriveError, HostId, LockId, MutexOp, Record};
use uring_sg::driver::Driver;
use uring_sg::transport::{EnqueueError, Reply, Request};

/// Timeout of commands that must be answered (generous: the machine is shared).
const T: Duration = Duration::from_secs(20);
/// Timeout of commands that must not be answered.
const SHORT: Duration = Duration::from_millis(100);

struct Sim {
    _dir: tempfile::TempDir,
    h: SimHandle,
}

impl Sim {
    fn start(cfg: SimConfig) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let addrs = [
            ListenAddr::Unix(dir.path().join("sim.sock")),
            "tcp:127.0.0.1:0".parse().unwrap(),
        ];
        let h = SimHandle::start(cfg, &addrs).unwrap();
        Sim { _dir: dir, h }
    }
    fn unix(&self) -> ListenAddr {
        self.h.addrs()[0].clone()
    }
    fn tcp(&self) -> ListenAddr {
        self.h.addrs()[1].clone()
    }
    fn fault(&self, drive: &str, f: FaultCmd) {
        Control::connect(&self.unix())
            .unwrap()
            .fault(drive, f)
            .unwrap();
    }
    /// A driver with one transport per drive name, as `client`.
    fn driver(&self, addr: &ListenAddr, client: &str, drives: &[&str]) -> Driver {
        let mut d = Driver::new(64).unwrap();
        for name in drives {
            d.add(Box::new(SimTransport::connect(addr, client, name).unwrap()));
        }
        d
    }
}

fn mutex(op: MutexOp, lock: &str, host: &str) -> Request {
    let mut record = Record::new(
        lock.parse::<LockId>().unwrap(),
        host.parse::<HostId>().unwrap(),
        Class::Exclusive,
    );
    record.countdown_ms = 60_000;
    Request::Mutex { op, record }
}

fn call(d: &mut Driver, drive: usize, req: &Request, t: Duration) -> Reply {
    d.call(drive, req, t).unwrap()
}

fn count(d: &mut Driver, drive: usize) -> u16 {
    let r = call(d, drive, &Request::ReadCount, T);
    r.result.unwrap();
    decode_table_count(&r.data).unwrap()
}

fn is_busy(r: &Reply) -> bool {
    matches!(
        r.result,
        Err(DriveError::Busy) | Err(DriveError::HeldByOther)
    )
}

#[test]
fn trylock_unlock_over_unix_and_tcp() {
    let sim = Sim::start(SimConfig::with_drives(2));
    for (addr, lock) in [(sim.unix(), "lock-u"), (sim.tcp(), "lock-t")] {
        let mut a = sim.driver(&addr, "host-a", &["sim0"]);
        let mut b = sim.driver(&addr, "host-b", &["sim0"]);
        assert_eq!(
            call(&mut a, 0, &mutex(MutexOp::Trylock, lock, "A"), T).result,
            Ok(())
        );
        let r = call(&mut b, 0, &mutex(MutexOp::Trylock, lock, "B"), T);
        assert!(is_busy(&r), "{r:?}");
        assert_eq!(
            call(&mut a, 0, &mutex(MutexOp::Trylock, lock, "A"), T).result,
            Err(DriveError::AlreadyHeld)
        );
        assert_eq!(
            call(&mut a, 0, &mutex(MutexOp::Unlock, lock, "A"), T).result,
            Ok(())
        );
        assert_eq!(
            call(&mut b, 0, &mutex(MutexOp::Trylock, lock, "B"), T).result,
            Ok(())
        );
    }
    // Both locks live on sim0, none on sim1; the table dump sees them.
    let mut d = sim.driver(&sim.unix(), "reader", &["sim0", "sim1"]);
    assert!(count(&mut d, 0) >= 2);
    assert_eq!(count(&mut d, 1), 0);
    let table = sim
        .h
        .control(ControlRequest::DumpTable {
            drive: "sim0".into(),
        })
        .unwrap();
    let ControlResponse::Table { records } = table else {
        panic!("{table:?}")
    };
    let held: HashSet<_> = records
        .iter()
        .filter(|r| r.state == "locked")
        .map(|r| (r.lock_id.as_str(), r.host_id.as_str()))
        .collect();
    assert!(
        held.contains(&("lock-u", "B")) && held.contains(&("lock-t", "B")),
        "{records:?}"
    );
    sim.h.stop().unwrap();
}

#[test]
fn attach_to_unknown_drive_fails() {
    let sim = Sim::start(SimConfig::with_drives(1));
    let e = SimTransport::connect(&sim.unix(), "x", "nope")
        .err()
        .unwrap();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn a_thousand_pipelined_commands_complete_out_of_order() {
    let mut cfg = SimConfig::with_drives(1);
    cfg.latency = vec![Latency::Uniform { lo: 0, hi: 3000 }];
    cfg.seed = 42;
    let sim = Sim::start(cfg);
    let mut d = sim.driver(&sim.unix(), "host-a", &["sim0"]);
    const N: u64 = 1000;
    for tag in 0..N {
        let req = mutex(MutexOp::Trylock, &format!("lock-{tag}"), "A");
        d.enqueue(0, tag, &req, T).unwrap();
    }
    let mut order = Vec::new();
    while order.len() < N as usize {
        d.turn(T, &mut |_, c| {
            assert_eq!(c.reply.result, Ok(()), "tag {}", c.tag);
            order.push(c.tag);
        })
        .unwrap();
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..N).collect::<Vec<_>>(), "every tag exactly once");
    assert_ne!(order, sorted, "random latency reorders replies");
    assert_eq!(count(&mut d, 0), N as u16);
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn stop_times_out_and_resume_answers_again() {
    let sim = Sim::start(SimConfig::with_drives(1));
    let mut d = sim.driver(&sim.unix(), "h", &["sim0"]);
    sim.fault("sim0", FaultCmd::Stop);
    assert_eq!(
        call(&mut d, 0, &Request::ReadCount, SHORT).result,
        Err(DriveError::Timeout)
    );
    sim.fault("sim0", FaultCmd::Resume);
    assert_eq!(count(&mut d, 0), 0);
}

#[test]
fn io_error_fails_with_eio_and_does_not_execute() {
    let sim = Sim::start(SimConfig::with_drives(1));
    let mut d = sim.driver(&sim.tcp(), "h", &["sim0"]);
    sim.fault("sim0", FaultCmd::IoError);
    let r = call(&mut d, 0, &mutex(MutexOp::Trylock, "l", "A"), T);
    assert_eq!(r.result, Err(DriveError::Io(5)));
    sim.fault("sim0", FaultCmd::Heal);
    assert_eq!(count(&mut d, 0), 0, "the failed trylock did not run");
}

#[test]
fn stall_delays_but_answers_and_late_replies_of_expired_commands_are_dropped() {
    let sim = Sim::start(SimConfig::with_drives(1));
    let mut d = sim.driver(&sim.unix(), "h", &["sim0"]);
    sim.fault("sim0", FaultCmd::Stall { ms: 200 });
    // Held for the stall, then executed and answered.
    let r = call(&mut d, 0, &mutex(MutexOp::Trylock, "l", "A"), T);
    assert_eq!(r.result, Ok(()));
    // A command that gives up during a long stall times out; its reply comes
    // later and must not be taken for the next command's.
    sim.fault("sim0", FaultCmd::Stall { ms: 60_000 });
    let r = call(&mut d, 0, &mutex(MutexOp::Trylock, "l", "A"), SHORT);
    assert_eq!(r.result, Err(DriveError::Timeout));
    sim.fault("sim0", FaultCmd::Resume);
    let r = call(&mut d, 0, &mutex(MutexOp::Unlock, "l", "A"), T);
    assert_eq!(
        r.result,
        Ok(()),
        "unlock's own answer, not the late trylock's"
    );
}

#[test]
fn power_cycle_loses_the_table() {
    let sim = Sim::start(SimConfig::with_drives(1));
    let mut d = sim.driver(&sim.unix(), "h", &["sim0"]);
    assert_eq!(
        call(&mut d, 0, &mutex(MutexOp::Trylock, "l", "A"), T).result,
        Ok(())
    );
    assert_eq!(count(&mut d, 0), 1);
    sim.fault("sim0", FaultCmd::PowerCycle);
    assert_eq!(count(&mut d, 0), 0);
    assert_eq!(
        call(&mut d, 0, &mutex(MutexOp::Refresh, "l", "A"), T).result,
        Err(DriveError::NotFound)
    );
}

#[test]
fn dropped_replies_time_out_while_the_rest_arrive() {
    let mut cfg = SimConfig::with_drives(1);
    cfg.seed = 7;
    let sim = Sim::start(cfg);
    let mut d = sim.driver(&sim.unix(), "h", &["sim0"]);
    sim.fault("sim0", FaultCmd::Drop { percent: 50.0 });
    for tag in 0..200 {
        d.enqueue(0, tag, &Request::ReadCount, SHORT * 3).unwrap();
    }
    let (mut ok, mut timeout, mut n) = (0, 0, 0);
    while n < 200 {
        d.turn(T, &mut |_, c| {
            n += 1;
            match c.reply.result {
                Ok(()) => ok += 1,
                Err(DriveError::Timeout) => timeout += 1,
                other => panic!("{other:?}"),
            }
        })
        .unwrap();
    }
    assert!(ok > 0 && timeout > 0, "ok {ok} timeout {timeout}");
    sim.fault("sim0", FaultCmd::Heal);
    assert_eq!(count(&mut d, 0), 0);
}

#[test]
fn cut_client_times_out_only_that_client_on_that_drive() {
    let sim = Sim::start(SimConfig::with_drives(2));
    let mut a = sim.driver(&sim.unix(), "host-a", &["sim0", "sim1"]);
    let mut b = sim.driver(&sim.tcp(), "host-b", &["sim0", "sim1"]);
    sim.fault(
        "sim0",
        FaultCmd::Cut {
            client: "host-b".into(),
        },
    );
    assert_eq!(
        call(&mut b, 0, &Request::ReadCount, SHORT).result,
        Err(DriveError::Timeout)
    );
    assert_eq!(count(&mut b, 1), 0, "host-b still reaches sim1");
    assert_eq!(count(&mut a, 0), 0, "host-a still reaches sim0");
    sim.fault("sim0", FaultCmd::Heal);
    assert_eq!(count(&mut b, 0), 0);
}

fn raw_hello(addr: &ListenAddr) -> UnixStream {
    let ListenAddr::Unix(p) = addr else { panic!() };
    let mut s = UnixStream::connect(p).unwrap();
    let mut out = Vec::new();
    Frame::Hello { client: "raw" }.encode(&mut out).unwrap();
    s.write_all(&out).unwrap();
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr).unwrap();
    let n = frame::frame_len(&hdr).unwrap().unwrap();
    let mut body = vec![0u8; n - 4];
    s.read_exact(&mut body).unwrap();
    s
}

/// Reads until EOF; the server closed the connection.
fn assert_closed(mut s: UnixStream) {
    s.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected the server to close: {e}"),
        }
    }
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let sim = Sim::start(SimConfig::with_drives(1));
    let mut good = sim.driver(&sim.unix(), "good", &["sim0"]);
    assert_eq!(count(&mut good, 0), 0);
    let bad_frames: [&[u8]; 4] = [
        &[1, 0, 0, 0, 0x99],             // unknown type
        &[0, 0, 0, 0],                   // zero length
        &[0xFF, 0xFF, 0xFF, 0x7F],       // oversize
        &[5, 0, 0, 0, 0x02, 0, 0, 0, 0], // HELLO_OK from a client
    ];
    for bad in bad_frames {
        let mut s = raw_hello(&sim.unix());
        s.write_all(bad).unwrap();
        assert_closed(s);
        assert_eq!(count(&mut good, 0), 0, "the other client keeps working");
    }
    // A command before HELLO is a protocol error too.
    let ListenAddr::Unix(p) = sim.unix() else {
        panic!()
    };
    let mut s = UnixStream::connect(p).unwrap();
    let mut out = Vec::new();
    frame::encode_command(
        &mut out,
        &frame::CommandFrame {
            tag: 1,
            drive: 0,
            cdb: &[0x12],
            data_in_len: 0,
            data_out: &[],
        },
    )
    .unwrap();
    s.write_all(&out).unwrap();
    assert_closed(s);
    assert_eq!(count(&mut good, 0), 0);
}

#[test]
fn twenty_clients_at_once_exactly_one_wins() {
    let sim = Sim::start(SimConfig::with_drives(1));
    let winners: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|i| {
                let addr = if i % 2 == 0 { sim.unix() } else { sim.tcp() };
                let sim = &sim;
                s.spawn(move || {
                    let mut d = sim.driver(&addr, &format!("client-{i}"), &["sim0"]);
                    let r = call(
                        &mut d,
                        0,
                        &mutex(MutexOp::Trylock, "shared", &format!("H{i}")),
                        T,
                    );
                    for _ in 0..20 {
                        assert!(count(&mut d, 0) >= 1);
                    }
                    match r.result {
                        Ok(()) => 1,
                        Err(DriveError::Busy | DriveError::HeldByOther) => 0,
                        other => panic!("{other:?}"),
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(winners, 1);
    let st = sim.h.control(ControlRequest::Stats).unwrap();
    let ControlResponse::Stats(st) = st else {
        panic!("{st:?}")
    };
    assert!(st.commands >= 20 * 21, "{st:?}");
}

#[test]
fn a_lost_connection_fails_in_flight_commands_and_closes_the_transport() {
    let sim = Sim::start(SimConfig::with_drives(1));
    let mut d = sim.driver(&sim.unix(), "h", &["sim0"]);
    sim.fault("sim0", FaultCmd::Stop);
    d.enqueue(0, 9, &Request::ReadCount, T).unwrap();
    // Get the command onto the wire, then take the server away.
    d.turn(Duration::ZERO, &mut |_, c| panic!("{c:?}")).unwrap();
    sim.h.stop().unwrap();
    let deadline = Instant::now() + T;
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        d.turn(T, &mut |_, c| got = Some(c)).unwrap();
    }
    let c = got.unwrap();
    assert_eq!(c.tag, 9);
    assert_eq!(c.reply.result, Err(DriveError::Io(104)));
    assert_eq!(
        d.enqueue(0, 10, &Request::ReadCount, T),
        Err(EnqueueError::Closed(104))
    );
}

#[test]
fn a_table_read_larger_than_one_mib_arrives_whole() {
    let sim = Sim::start(SimConfig::with_drives(1));
    let mut d = sim.driver(&sim.tcp(), "h", &["sim0"]);
    const N: u64 = 2500; // 2500 × 512 B = 1.22 MiB of data-in
    for tag in 0..N {
        let req = mutex(MutexOp::Trylock, &format!("big-{tag}"), "A");
        d.enqueue(0, tag, &req, T).unwrap();
    }
    let mut n = 0;
    while n < N {
        d.turn(T, &mut |_, c| {
            assert_eq!(c.reply.result, Ok(()));
            n += 1;
        })
        .unwrap();
    }
    assert_eq!(count(&mut d, 0), N as u16);
    let r = call(&mut d, 0, &Request::ReadTable { records: N as u32 }, T);
    r.result.unwrap();
    let recs = Record::decode_table(&r.data).unwrap();
    let locks: HashSet<String> = recs.iter().map(|r| r.lock_id.to_string()).collect();
    assert_eq!(locks.len(), N as usize);
    assert!(locks.contains("big-0") && locks.contains("big-2499"));
}

#[test]
fn bind_replaces_a_stale_socket_but_never_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let r = SimHandle::start(SimConfig::with_drives(1), &[ListenAddr::Unix(file.clone())]);
    assert!(r.is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    let sock = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap()); // leaves the file
    assert!(sock.exists());
    let h = SimHandle::start(SimConfig::with_drives(1), &[ListenAddr::Unix(sock.clone())]).unwrap();
    let mut d = Driver::new(8).unwrap();
    d.add(Box::new(
        SimTransport::connect(&h.addrs()[0], "c", "sim0").unwrap(),
    ));
    assert_eq!(count(&mut d, 0), 0);
    h.stop().unwrap();
    assert!(!sock.exists(), "the server removes its socket file");
}
