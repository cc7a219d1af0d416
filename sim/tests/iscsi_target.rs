//! The iSCSI front end over real TCP with a hand-written initiator: discovery,
//! login, reads, writes with immediate and solicited data, IDM commands sharing
//! the native server's firmware, NOP, task management, logout, and malformed
//! PDUs closing only their own connection.

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use idm_sim::iscsi::pdu::{encode_text, op, parse_text, read_pdu, Pdu, RESERVED_TAG};
use idm_sim::iscsi::{iqn_of, IscsiConfig, IscsiTarget};
use idm_sim::{ListenAddr, SimConfig, SimHandle};
use uring_sg::codec::{mutex_write_cdb, Class, HostId, LockId, MutexOp, Record, Sense};

struct Initiator {
    s: TcpStream,
    cmd_sn: u32,
    exp_stat_sn: u32,
    itt: u32,
}

impl Initiator {
    fn connect(addr: SocketAddr) -> Initiator {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Initiator {
            s,
            cmd_sn: 1,
            exp_stat_sn: 0,
            itt: 1,
        }
    }

    fn send(&mut self, p: &Pdu) {
        self.s.write_all(&p.to_bytes()).unwrap();
    }

    fn recv(&mut self) -> Pdu {
        // The target's opcodes are not initiator opcodes: read the raw header here.
        let mut bhs = [0u8; 48];
        self.s.read_exact(&mut bhs).unwrap();
        let dsl = (usize::from(bhs[5]) << 16) | (usize::from(bhs[6]) << 8) | usize::from(bhs[7]);
        let mut data = vec![0; dsl + (4 - dsl % 4) % 4];
        self.s.read_exact(&mut data).unwrap();
        data.truncate(dsl);
        let p = Pdu {
            bhs,
            ahs: Vec::new(),
            data,
        };
        if matches!(
            p.opcode(),
            op::SCSI_RESP | op::LOGIN_RESP | op::TEXT_RESP | op::NOP_IN | op::TASK_MGMT_RESP
        ) || (p.opcode() == op::DATA_IN && p.flags() & 1 != 0)
        {
            self.exp_stat_sn = p.u32_at(24).wrapping_add(1);
        }
        p
    }

    fn login(&mut self, keys: &[(&str, &str)]) -> Pdu {
        let mut p = Pdu::new(op::LOGIN_REQ);
        p.bhs[0] |= 0x40;
        p.set_flags(0x87); // T, CSG 1, NSG 3
        p.bhs[8..14].copy_from_slice(&[0x80, 0, 0, 0, 0, 1]);
        p.set_itt(0);
        p.set_u32(24, self.cmd_sn);
        p.set_u32(28, self.exp_stat_sn);
        p.data = encode_text(keys);
        self.send(&p);
        self.recv()
    }

    fn login_normal(&mut self, target: &str, extra: &[(&str, &str)]) {
        let mut keys = vec![
            ("InitiatorName", "iqn.2026-11.test:raw"),
            ("SessionType", "Normal"),
            ("TargetName", target),
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "4096"),
        ];
        keys.extend_from_slice(extra);
        let r = self.login(&keys);
        assert_eq!(r.opcode(), op::LOGIN_RESP);
        assert_eq!(r.u16_at(36), 0, "login status");
        assert_eq!(r.flags() & 0x83, 0x83);
        assert_ne!(r.u16_at(14), 0, "TSIH");
    }

    /// Sends a SCSI command; `imm` goes as immediate data.
    fn command(&mut self, cdb: &[u8], read: bool, edtl: u32, imm: &[u8], final_: bool) -> u32 {
        let mut p = Pdu::new(op::SCSI_CMD);
        let mut f = if final_ { 0x80 } else { 0 };
        if read {
            f |= 0x40;
        }
        if edtl > 0 && !read {
            f |= 0x20;
        }
        p.set_flags(f | 0x01);
        let itt = self.itt;
        self.itt += 1;
        p.set_itt(itt);
        p.set_u32(20, edtl);
        p.set_u32(24, self.cmd_sn);
        self.cmd_sn += 1;
        p.set_u32(28, self.exp_stat_sn);
        p.bhs[32..32 + cdb.len()].copy_from_slice(cdb);
        p.data = imm.to_vec();
        self.send(&p);
        itt
    }

    /// Collects Data-In and the status: (status, data, sense).
    fn result(&mut self, itt: u32) -> (u8, Vec<u8>, Vec<u8>) {
        let mut data = Vec::new();
        loop {
            let r = self.recv();
            assert_eq!(r.itt(), itt);
            match r.opcode() {
                op::DATA_IN => {
                    assert_eq!(r.u32_at(40) as usize, data.len(), "buffer offset");
                    data.extend_from_slice(&r.data);
                    if r.flags() & 1 != 0 {
                        return (r.bhs[3], data, Vec::new());
                    }
                }
                op::SCSI_RESP => {
                    let sense = if r.data.len() >= 2 {
                        let n = usize::from(u16::from_be_bytes([r.data[0], r.data[1]]));
                        r.data[2..2 + n].to_vec()
                    } else {
                        Vec::new()
                    };
                    return (r.bhs[3], data, sense);
                }
                other => panic!("unexpected opcode {other:#04x}"),
            }
        }
    }

    fn run(&mut self, cdb: &[u8], read: bool, edtl: u32, imm: &[u8]) -> (u8, Vec<u8>, Vec<u8>) {
        let itt = self.command(cdb, read, edtl, imm, true);
        self.result(itt)
    }
}

fn start() -> (SimHandle, IscsiTarget) {
    let handle = SimHandle::start(
        SimConfig::with_drives(3),
        &[ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())],
    )
    .unwrap();
    let target = IscsiTarget::start(
        &handle.shared_drives(),
        &IscsiConfig {
            lun_bytes: 4 << 20,
            ..IscsiConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    (handle, target)
}

#[test]
fn discovery_lists_one_target_per_drive() {
    let (_h, t) = start();
    let mut i = Initiator::connect(t.local_addr());
    let r = i.login(&[("InitiatorName", "iqn.x:y"), ("SessionType", "Discovery")]);
    assert_eq!(r.u16_at(36), 0);
    let mut p = Pdu::new(op::TEXT_REQ);
    p.set_flags(0x80);
    p.set_itt(5);
    p.set_u32(20, RESERVED_TAG);
    p.set_u32(24, i.cmd_sn);
    p.data = encode_text(&[("SendTargets", "All")]);
    i.send(&p);
    let r = i.recv();
    assert_eq!(r.opcode(), op::TEXT_RESP);
    let kv = parse_text(&r.data).unwrap();
    let names: Vec<&str> = kv
        .iter()
        .filter(|(k, _)| k == "TargetName")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(names, vec![iqn_of("sim0"), iqn_of("sim1"), iqn_of("sim2")]);
    let port = t.local_addr().port();
    assert!(kv
        .iter()
        .any(|(k, v)| k == "TargetAddress" && *v == format!("127.0.0.1:{port},1")));
}

#[test]
fn unknown_target_login_fails() {
    let (_h, t) = start();
    let mut i = Initiator::connect(t.local_addr());
    let r = i.login(&[("InitiatorName", "iqn.x:y"), ("TargetName", "iqn.nope:x")]);
    assert_eq!(r.u16_at(36), 0x0203);
}

#[test]
fn disk_io_with_immediate_and_solicited_data() {
    let (_h, t) = start();
    let mut i = Initiator::connect(t.local_addr());
    i.login_normal(
        &iqn_of("sim1"),
        &[("ImmediateData", "Yes"), ("FirstBurstLength", "1024")],
    );
    let (st, _, _) = i.run(&[0x00, 0, 0, 0, 0, 0], false, 0, &[]);
    assert_eq!(st, 0);
    // WRITE(10) of 16 blocks: 1024 bytes immediate, the rest by R2T / Data-Out.
    let data: Vec<u8> = (0..8192u32).map(|x| (x * 7 % 256) as u8).collect();
    let itt = i.command(
        &[0x2A, 0, 0, 0, 0, 10, 0, 0, 16, 0],
        false,
        8192,
        &data[..1024],
        true,
    );
    let mut offset = 1024;
    loop {
        let r = i.recv();
        if r.opcode() == op::SCSI_RESP {
            assert_eq!(r.bhs[3], 0, "write status");
            break;
        }
        assert_eq!(r.opcode(), op::R2T);
        assert_eq!(r.itt(), itt);
        let (off, len) = (r.u32_at(40) as usize, r.u32_at(44) as usize);
        assert_eq!(off, offset);
        // Send in 4096-byte Data-Out PDUs.
        let mut at = off;
        let mut sn = 0;
        while at < off + len {
            let n = 4096.min(off + len - at);
            let mut d = Pdu::new(op::DATA_OUT);
            d.set_flags(if at + n == off + len { 0x80 } else { 0 });
            d.set_itt(itt);
            d.set_u32(20, r.ttt());
            d.set_u32(36, sn);
            d.set_u32(40, at as u32);
            d.data = data[at..at + n].to_vec();
            i.send(&d);
            at += n;
            sn += 1;
        }
        offset = off + len;
    }
    // Read back in Data-In PDUs of at most 4096 bytes (our MaxRecvDataSegmentLength).
    let (st, back, _) = i.run(&[0x28, 0, 0, 0, 0, 10, 0, 0, 16, 0], true, 8192, &[]);
    assert_eq!(st, 0);
    assert_eq!(back, data);
    // Out of range: CHECK CONDITION with sense in a SCSI Response.
    let (st, d, sense) = i.run(&[0x28, 0, 0, 0x7F, 0, 0, 0, 0, 1, 0], true, 512, &[]);
    assert_eq!(st, 2);
    assert!(d.is_empty());
    assert_eq!(Sense::parse(&sense), Some(Sense::new(5, 0x21, 0)));
    // An opcode the disk does not know.
    let (st, _, sense) = i.run(&[0x4D, 0, 0, 0, 0, 0, 0, 0, 0, 0], false, 0, &[]);
    assert_eq!(st, 2);
    assert_eq!(Sense::parse(&sense), Some(Sense::new(5, 0x20, 0)));
    // NOP-Out ping.
    let mut p = Pdu::new(op::NOP_OUT);
    p.bhs[0] |= 0x40;
    p.set_flags(0x80);
    p.set_itt(777);
    p.set_u32(20, RESERVED_TAG);
    p.set_u32(24, i.cmd_sn);
    p.data = b"ping".to_vec();
    i.send(&p);
    let r = i.recv();
    assert_eq!(
        (r.opcode(), r.itt(), r.data.as_slice()),
        (op::NOP_IN, 777, &b"ping"[..])
    );
    // Task management: function complete.
    let mut p = Pdu::new(op::TASK_MGMT_REQ);
    p.bhs[0] |= 0x40;
    p.set_flags(0x85); // LOGICAL UNIT RESET
    p.set_itt(778);
    p.set_u32(24, i.cmd_sn);
    i.send(&p);
    let r = i.recv();
    assert_eq!((r.opcode(), r.bhs[2]), (op::TASK_MGMT_RESP, 0));
    // Logout.
    let mut p = Pdu::new(op::LOGOUT_REQ);
    p.bhs[0] |= 0x40;
    p.set_flags(0x80);
    p.set_itt(779);
    p.set_u32(24, i.cmd_sn);
    i.send(&p);
    let r = i.recv();
    assert_eq!((r.opcode(), r.bhs[2]), (op::LOGOUT_RESP, 0));
    let mut b = [0u8; 1];
    assert_eq!(i.s.read(&mut b).unwrap(), 0, "closed after logout");
}

fn trylock_record(host: &str) -> Vec<u8> {
    let mut rec = Record::new(
        "iscsi-test-lock".parse::<LockId>().unwrap(),
        host.parse::<HostId>().unwrap(),
        Class::Exclusive,
    );
    rec.countdown_ms = 60_000;
    rec.encode().to_vec()
}

#[test]
fn idm_commands_share_the_firmware_with_the_native_server() {
    let (h, t) = start();
    let mut a = Initiator::connect(t.local_addr());
    a.login_normal(&iqn_of("sim0"), &[]);
    let mut b = Initiator::connect(t.local_addr());
    b.login_normal(
        &iqn_of("sim0"),
        &[("InitialR2T", "No"), ("ImmediateData", "No")],
    );
    let cdb = mutex_write_cdb(MutexOp::Trylock);
    // Host A: immediate data.
    let (st, _, _) = a.run(&cdb, false, 512, &trylock_record("host-a"));
    assert_eq!(st, 0, "granted");
    // Host B: no immediate data, one unsolicited Data-Out.
    let itt = b.command(&cdb, false, 512, &[], false);
    let mut d = Pdu::new(op::DATA_OUT);
    d.set_flags(0x80);
    d.set_itt(itt);
    d.set_u32(20, RESERVED_TAG);
    d.data = trylock_record("host-b");
    b.send(&d);
    let (st, _, _) = b.result(itt);
    assert_eq!(st, 0x18, "held by host A: RESERVATION CONFLICT");
    // The native server sees the same table.
    let resp = h
        .control(idm_sim::ControlRequest::DumpTable {
            drive: "sim0".into(),
        })
        .unwrap();
    let idm_sim::ControlResponse::Table { records } = resp else {
        panic!("{resp:?}")
    };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].host_id, "host-a");
    // The version page comes from the firmware.
    let (st, page, _) = a.run(&[0x12, 1, 0xC3, 0, 0x70, 0], true, 0x70, &[]);
    assert_eq!(st, 0);
    assert_eq!(uring_sg::codec::decode_version_page(&page).unwrap().0, 3);
}

#[test]
fn malformed_pdus_close_only_their_connection() {
    let (_h, t) = start();
    let mut good = Initiator::connect(t.local_addr());
    good.login_normal(&iqn_of("sim2"), &[]);
    let bad_inputs: Vec<Vec<u8>> = vec![
        {
            // A target opcode from an initiator.
            let mut p = Pdu::new(op::DATA_IN);
            p.set_itt(1);
            p.to_bytes()
        },
        {
            // A data segment far beyond the limit.
            let mut b = Pdu::new(op::LOGIN_REQ).to_bytes();
            b[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
            b
        },
        // Login text that is not key=value.
        {
            let mut p = Pdu::new(op::LOGIN_REQ);
            p.set_flags(0x87);
            p.data = b"garbage-without-equals\0".to_vec();
            p.to_bytes()
        },
        // A SCSI command before login.
        Pdu::new(op::SCSI_CMD).to_bytes(),
    ];
    for bytes in bad_inputs {
        let mut s = TcpStream::connect(t.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&bytes).unwrap();
        // The target answers (a login reject) or not, then closes.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        if !rest.is_empty() {
            assert_eq!(rest[0] & 0x3F, op::LOGIN_RESP);
            assert_ne!(rest[36], 0, "login refused");
        }
    }
    // A logged-in connection sending a login PDU in the full feature phase is closed.
    let mut other = Initiator::connect(t.local_addr());
    other.login_normal(&iqn_of("sim2"), &[]);
    other.send(&Pdu::new(op::LOGIN_REQ));
    let r = other.recv();
    assert_eq!(r.opcode(), op::REJECT);
    let mut b = [0u8; 1];
    assert_eq!(other.s.read(&mut b).unwrap_or(0), 0);
    // The first connection still works.
    let (st, d, _) = good.run(&[0x12, 0, 0, 0, 36, 0], true, 36, &[]);
    assert_eq!(st, 0);
    assert_eq!(&d[8..14], b"IDMSIM");
    // And the decoder itself refuses what the target refused.
    let mut r = &Pdu::new(op::R2T).to_bytes()[..];
    assert!(read_pdu(&mut r, 1024).is_err());
}

/// READ(16) of LBA 0x010000000020FF01 as LVM2's `cleanup_idm_context` sends it.
const CONTEXT_READ: [u8; 16] = [
    0x88, 0, 0x01, 0, 0, 0, 0, 0x20, 0xFF, 0x01, 0, 0, 0, 1, 0, 0,
];
/// WRITE AND VERIFY(16) of one block to LBA 0xFF00000000000000.
const CONTEXT_RESET: [u8; 16] = [0x8E, 0, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];

#[test]
fn lvm2_context_wipe_reads_the_context_and_resets_the_table() {
    let (h, t) = start();
    let mut a = Initiator::connect(t.local_addr());
    a.login_normal(&iqn_of("sim1"), &[]);
    // Some data in the data area, and a lock held by host A.
    let mut w = [0u8; 16];
    w[0] = 0x8A;
    w[13] = 1;
    let (st, _, _) = a.run(&w, false, 512, &[0x5A; 512]);
    assert_eq!(st, 0);
    let cdb = mutex_write_cdb(MutexOp::Trylock);
    assert_eq!(a.run(&cdb, false, 512, &trylock_record("host-a")).0, 0);

    // The context read: magic, one record, one mutex, the drive's name.
    let (st, ctx, _) = a.run(&CONTEXT_READ, true, 512, &[]);
    assert_eq!(st, 0);
    assert_eq!(ctx.len(), 512);
    assert_eq!(&ctx[0..8], b"IDM-CTX1");
    assert_eq!(u32::from_be_bytes(ctx[8..12].try_into().unwrap()), 1);
    assert_eq!(u32::from_be_bytes(ctx[12..16].try_into().unwrap()), 1);
    assert_eq!(ctx[20], 3);
    assert_eq!(&ctx[32..36], b"sim1");

    // Written back to the reset LBA: the table is empty, host B gets the lock.
    let (st, _, sense) = a.run(&CONTEXT_RESET, false, 512, &ctx);
    assert_eq!(st, 0, "sense {sense:02x?}");
    let resp = h
        .control(idm_sim::ControlRequest::DumpTable {
            drive: "sim1".into(),
        })
        .unwrap();
    let idm_sim::ControlResponse::Table { records } = resp else {
        panic!("{resp:?}")
    };
    assert!(records.is_empty(), "{records:?}");
    let (st, ctx, _) = a.run(&CONTEXT_READ, true, 512, &[]);
    assert_eq!(st, 0);
    assert_eq!(u32::from_be_bytes(ctx[8..12].try_into().unwrap()), 0);
    assert_eq!(a.run(&cdb, false, 512, &trylock_record("host-b")).0, 0);

    // The data area is untouched; other drives' tables too.
    let mut r = [0u8; 16];
    r[0] = 0x88;
    r[13] = 1;
    let (st, data, _) = a.run(&r, true, 512, &[]);
    assert_eq!(st, 0);
    assert_eq!(data, vec![0x5A; 512]);

    // Other block counts at the special LBAs are refused, not read from the disk.
    let mut two = CONTEXT_READ;
    two[13] = 2;
    let (st, _, sense) = a.run(&two, true, 1024, &[]);
    assert_eq!(st, 2);
    assert_eq!(
        Sense::parse(&sense).map(|s| (s.key, s.asc)),
        Some((5, 0x24))
    );
}
