//! The iSCSI front end against hostile initiators (issue 15): login text without
//! end, more connections than the limit, logins that never finish and sessions
//! that go silent. Each is refused or closed with its memory bounded, while a
//! well-behaved initiator logs in meanwhile. Waits are reads bounded by a
//! timeout or polls with a deadline; nothing asserts on time.

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use idm_sim::iscsi::login::status;
use idm_sim::iscsi::pdu::{encode_text, op, Pdu};
use idm_sim::iscsi::{iqn_of, IscsiConfig, IscsiTarget, Limits};
use idm_sim::server::SharedDrives;

/// Bound of every wait (generous: the machine is shared).
const T: Duration = Duration::from_secs(20);

fn start(cfg: IscsiConfig) -> IscsiTarget {
    let drives = SharedDrives::fresh(&["sim0".to_string()], Default::default());
    let cfg = IscsiConfig {
        lun_bytes: 1 << 20,
        ..cfg
    };
    IscsiTarget::start(&drives, &cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s
}

/// Reads one target PDU (header and data segment).
fn recv(s: &mut TcpStream) -> Pdu {
    let mut bhs = [0u8; 48];
    s.read_exact(&mut bhs).unwrap();
    let dsl = (usize::from(bhs[5]) << 16) | (usize::from(bhs[6]) << 8) | usize::from(bhs[7]);
    let mut data = vec![0; dsl + (4 - dsl % 4) % 4];
    s.read_exact(&mut data).unwrap();
    data.truncate(dsl);
    Pdu {
        bhs,
        ahs: Vec::new(),
        data,
    }
}

fn login_req(flags: u8, data: Vec<u8>) -> Pdu {
    let mut p = Pdu::new(op::LOGIN_REQ);
    p.bhs[0] |= 0x40;
    p.set_flags(flags);
    p.bhs[8..14].copy_from_slice(&[0x80, 0, 0, 0, 0, 1]);
    p.set_u32(24, 1);
    p.data = data;
    p
}

/// A full login to sim0's target; returns the login response's status.
fn login(s: &mut TcpStream) -> u16 {
    let target = iqn_of("sim0");
    let keys = [
        ("InitiatorName", "iqn.2026-11.test:hostile"),
        ("SessionType", "Normal"),
        ("TargetName", target.as_str()),
    ];
    s.write_all(&login_req(0x87, encode_text(&keys)).to_bytes())
        .unwrap();
    let r = recv(s);
    assert_eq!(r.opcode(), op::LOGIN_RESP);
    r.u16_at(36)
}

/// Reads until the target closes the connection.
fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected the target to close: {e}"),
        }
    }
}

/// Polls until the target serves `n` connections or fewer.
fn wait_connections_at_most(t: &IscsiTarget, n: usize) {
    let until = Instant::now() + T;
    while t.connections() > n {
        assert!(Instant::now() < until, "{} connections", t.connections());
        std::thread::yield_now();
    }
}

/// Defect 4a: login text was buffered without limit (323 MiB from one
/// connection). Now the PDU that would take it over `max_login_text` fails the
/// login ("out of resources") before it is buffered.
#[test]
fn login_text_over_the_limit_is_refused_and_others_log_in() {
    let t = start(IscsiConfig {
        limits: Limits {
            max_login_text: 16 * 1024,
            ..Limits::default()
        },
        ..IscsiConfig::default()
    });
    let mut hostile = connect(t.local_addr());
    let part = vec![b'x'; 8 * 1024];
    // Two parts fit (16 KiB): each is acknowledged, nothing answered yet.
    for _ in 0..2 {
        hostile
            .write_all(&login_req(0x40, part.clone()).to_bytes())
            .unwrap();
        let r = recv(&mut hostile);
        assert_eq!(r.u16_at(36), status::SUCCESS);
        assert!(r.data.is_empty());
    }
    // Meanwhile a well-behaved initiator logs in.
    let mut good = connect(t.local_addr());
    assert_eq!(login(&mut good), status::SUCCESS);
    // The third would make 24 KiB: refused, and the connection closed.
    hostile
        .write_all(&login_req(0x40, part).to_bytes())
        .unwrap();
    let r = recv(&mut hostile);
    assert_eq!(r.opcode(), op::LOGIN_RESP);
    assert_eq!(r.u16_at(36), status::OUT_OF_RESOURCES);
    assert_closed(&mut hostile);
    wait_connections_at_most(&t, 1);
}

/// Defect 4b: a thread per connection without limit. Now one more connection than
/// `max_conns` is answered "service unavailable" and closed; a freed slot takes
/// the next initiator.
#[test]
fn connections_over_the_cap_are_refused_politely() {
    let t = start(IscsiConfig {
        max_conns: 2,
        ..IscsiConfig::default()
    });
    let mut a = connect(t.local_addr());
    assert_eq!(login(&mut a), status::SUCCESS);
    let mut b = connect(t.local_addr());
    assert_eq!(login(&mut b), status::SUCCESS);
    let mut c = connect(t.local_addr());
    assert_eq!(login(&mut c), status::SERVICE_UNAVAILABLE);
    assert_closed(&mut c);
    assert_eq!(t.connections(), 2);
    drop(a);
    wait_connections_at_most(&t, 1);
    let mut d = connect(t.local_addr());
    assert_eq!(login(&mut d), status::SUCCESS);
    // The sessions still there keep working: b logs out cleanly.
    let mut p = Pdu::new(op::LOGOUT_REQ);
    p.bhs[0] |= 0x40;
    p.set_flags(0x80);
    p.set_itt(7);
    b.write_all(&p.to_bytes()).unwrap();
    assert_eq!(recv(&mut b).opcode(), op::LOGOUT_RESP);
}

/// Defect 4c: no timeout. Now a login that never completes is closed at the login
/// timeout, and a logged-in session that goes silent at the idle timeout; their
/// threads end.
#[test]
fn unfinished_logins_and_silent_sessions_are_closed() {
    let t = start(IscsiConfig {
        login_timeout: Duration::from_secs(1),
        idle_timeout: Duration::ZERO,
        ..IscsiConfig::default()
    });
    let mut silent = connect(t.local_addr());
    let mut half = connect(t.local_addr());
    half.write_all(&[0x43, 0x87, 0, 0]).unwrap(); // 4 bytes of a 48-byte header
    let mut good = connect(t.local_addr());
    assert_eq!(login(&mut good), status::SUCCESS);
    assert_closed(&mut silent);
    assert_closed(&mut half);
    wait_connections_at_most(&t, 1);

    let t = start(IscsiConfig {
        idle_timeout: Duration::from_millis(500),
        ..IscsiConfig::default()
    });
    let mut idle = connect(t.local_addr());
    assert_eq!(login(&mut idle), status::SUCCESS);
    assert_closed(&mut idle);
    wait_connections_at_most(&t, 0);
}

/// Writes waiting for their data share a 32 MiB budget per connection: a hostile
/// initiator cannot make the target reserve a buffer per command without end
/// (immediate commands bypass the command window). Past it: TASK SET FULL.
#[test]
fn writes_waiting_for_data_share_a_budget() {
    let t = start(IscsiConfig::default());
    let mut s = connect(t.local_addr());
    assert_eq!(login(&mut s), status::SUCCESS);
    let write = |itt: u32, sn: u32| {
        let mut p = Pdu::new(op::SCSI_CMD);
        p.bhs[0] |= 0x40; // immediate
        p.set_flags(0x80 | 0x20 | 0x01);
        p.set_itt(itt);
        p.set_u32(20, 20 << 20);
        p.set_u32(24, sn);
        // WRITE(10) of 40960 blocks (20 MiB) at LBA 0.
        p.bhs[32..42].copy_from_slice(&[0x2A, 0, 0, 0, 0, 0, 0, 0xA0, 0x00, 0]);
        p
    };
    s.write_all(&write(1, 1).to_bytes()).unwrap();
    s.write_all(&write(2, 1).to_bytes()).unwrap();
    loop {
        let r = recv(&mut s);
        if r.opcode() == op::SCSI_RESP {
            assert_eq!(r.itt(), 2);
            assert_eq!(r.bhs[3], 0x28, "TASK SET FULL");
            break;
        }
        assert_eq!(r.opcode(), op::R2T, "only the first write asks for data");
        assert_eq!(r.itt(), 1);
    }
    // Another initiator is served meanwhile.
    let mut good = connect(t.local_addr());
    assert_eq!(login(&mut good), status::SUCCESS);
}
