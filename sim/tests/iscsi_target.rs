//! The iSCSI front end over real TCP with a hand-written initiator: discovery,
//! login, reads, writes with immediate and solicited data, IDM commands sharing
//! the native server's firmware, NOP, task management, logout, and malformed
//! PDUs closing only their own connection; the drive's faults (`idm fault`,
//! through the native server's control protocol) on the iSCSI path.

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use idm_sim::iscsi::pdu::{encode_text, op, parse_text, read_pdu, Pdu, RESERVED_TAG};
use idm_sim::iscsi::{iqn_of, IscsiConfig, IscsiTarget};
use idm_sim::{
    ControlRequest, ControlResponse, FaultCmd, Latency, ListenAddr, SimConfig, SimHandle,
};
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
        self.login_as(target, "iqn.2026-11.test:raw", extra);
    }

    fn login_as(&mut self, target: &str, initiator: &str, extra: &[(&str, &str)]) {
        let mut keys = vec![
            ("InitiatorName", initiator),
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

    fn next_itt(&mut self) -> u32 {
        let itt = self.itt;
        self.itt += 1;
        itt
    }

    /// An immediate NOP-Out with a tag, and its NOP-In. The target answers in
    /// order: whatever it answers before the NOP-In comes first, so this proves
    /// that nothing else was answered in between.
    fn ping(&mut self) {
        let itt = self.next_itt();
        let mut p = Pdu::new(op::NOP_OUT);
        p.bhs[0] |= 0x40;
        p.set_flags(0x80);
        p.set_itt(itt);
        p.set_u32(20, RESERVED_TAG);
        p.set_u32(24, self.cmd_sn);
        p.set_u32(28, self.exp_stat_sn);
        p.data = b"ping".to_vec();
        self.send(&p);
        let r = self.recv();
        assert_eq!((r.opcode(), r.itt()), (op::NOP_IN, itt), "only the NOP-In");
    }

    /// Task management `function` (1 ABORT TASK of `task`, 5 LUN RESET, ...);
    /// returns the response code.
    fn tmf(&mut self, function: u8, task: u32) -> u8 {
        let itt = self.next_itt();
        let mut p = Pdu::new(op::TASK_MGMT_REQ);
        p.bhs[0] |= 0x40;
        p.set_flags(0x80 | function);
        p.set_itt(itt);
        p.set_u32(20, task);
        p.set_u32(24, self.cmd_sn);
        p.set_u32(28, self.exp_stat_sn);
        self.send(&p);
        let r = self.recv();
        assert_eq!((r.opcode(), r.itt()), (op::TASK_MGMT_RESP, itt));
        r.bhs[2]
    }

    fn logout(&mut self) {
        let itt = self.next_itt();
        let mut p = Pdu::new(op::LOGOUT_REQ);
        p.bhs[0] |= 0x40;
        p.set_flags(0x80);
        p.set_itt(itt);
        p.set_u32(24, self.cmd_sn);
        p.set_u32(28, self.exp_stat_sn);
        self.send(&p);
        let r = self.recv();
        assert_eq!((r.opcode(), r.itt(), r.bhs[2]), (op::LOGOUT_RESP, itt, 0));
        let mut b = [0u8; 1];
        assert_eq!(self.s.read(&mut b).unwrap(), 0, "closed after logout");
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

fn fault(h: &SimHandle, drive: &str, fault: FaultCmd) {
    h.control(ControlRequest::Fault {
        drive: drive.into(),
        fault,
    })
    .unwrap();
}

/// READ(10) of one block at `lba`.
fn read10(lba: u8) -> [u8; 10] {
    [0x28, 0, 0, 0, 0, lba, 0, 0, 1, 0]
}

/// WRITE(10) of one block at `lba`.
fn write10(lba: u8) -> [u8; 10] {
    [0x2A, 0, 0, 0, 0, lba, 0, 0, 1, 0]
}

/// The sense key and ASC of fixed or descriptor sense.
fn key_asc(sense: &[u8]) -> (u8, u8) {
    match sense.first().map(|b| b & 0x7F) {
        Some(0x72 | 0x73) => (sense[1] & 0x0F, sense[2]),
        _ => (sense[2] & 0x0F, sense[12]),
    }
}

#[test]
fn io_error_answers_check_condition_and_other_drives_are_served() {
    let (h, t) = start();
    let mut a = Initiator::connect(t.local_addr());
    a.login_normal(&iqn_of("sim0"), &[]);
    let mut b = Initiator::connect(t.local_addr());
    b.login_normal(&iqn_of("sim1"), &[]);
    fault(&h, "sim0", FaultCmd::IoError);
    let (st, data, sense) = a.run(&read10(1), true, 512, &[]);
    assert_eq!((st, data.len()), (2, 0), "CHECK CONDITION, no data");
    assert_eq!(
        key_asc(&sense),
        (4, 0x44),
        "HARDWARE ERROR, internal target failure"
    );
    // The IDM opcode too: the lock is not taken.
    let (st, _, sense) = a.run(
        &mutex_write_cdb(MutexOp::Trylock),
        false,
        512,
        &trylock_record("host-a"),
    );
    assert_eq!((st, key_asc(&sense)), (2, (4, 0x44)));
    let resp = h
        .control(ControlRequest::DumpTable {
            drive: "sim0".into(),
        })
        .unwrap();
    assert!(matches!(resp, ControlResponse::Table { records } if records.is_empty()));
    // Another drive, another connection: served.
    assert_eq!(b.run(&read10(1), true, 512, &[]).0, 0);
    // The fault shows in the drive list, and heals.
    let ControlResponse::Drives { drives } = h.control(ControlRequest::ListDrives).unwrap() else {
        panic!()
    };
    assert!(drives[0].faults.io_error && !drives[1].faults.io_error);
    fault(&h, "sim0", FaultCmd::Heal);
    assert_eq!(a.run(&read10(1), true, 512, &[]).0, 0);
}

#[test]
fn stopped_drive_never_answers_and_abort_task_clears_the_command() {
    let (h, t) = start();
    let mut a = Initiator::connect(t.local_addr());
    a.login_normal(&iqn_of("sim0"), &[]);
    let mut b = Initiator::connect(t.local_addr());
    b.login_normal(&iqn_of("sim1"), &[]);
    fault(&h, "sim0", FaultCmd::Stop);
    let stuck = a.command(&write10(2), false, 512, &[0xAA; 512], true);
    // The target is alive (NOP-In) but the command gets no response...
    a.ping();
    // ... while another drive is served.
    assert_eq!(b.run(&read10(2), true, 512, &[]).0, 0);
    // The initiator's timeout path: ABORT TASK is answered.
    assert_eq!(a.tmf(1, stuck), 0, "function complete");
    fault(&h, "sim0", FaultCmd::Resume);
    // Served again; the stopped write was never executed, never answered (the
    // next response is this read's).
    let (st, data, _) = a.run(&read10(2), true, 512, &[]);
    assert_eq!((st, data), (0, vec![0; 512]));
}

#[test]
fn cut_names_the_initiator() {
    let (h, t) = start();
    let mut a = Initiator::connect(t.local_addr());
    a.login_as(&iqn_of("sim1"), "iqn.2026-11.test:a", &[]);
    let mut b = Initiator::connect(t.local_addr());
    b.login_as(&iqn_of("sim1"), "iqn.2026-11.test:b", &[]);
    fault(
        &h,
        "sim1",
        FaultCmd::Cut {
            client: "iqn.2026-11.test:a".into(),
        },
    );
    a.command(&read10(0), true, 512, &[], true);
    a.ping();
    assert_eq!(
        b.run(&read10(0), true, 512, &[]).0,
        0,
        "the other initiator is served"
    );
    fault(&h, "sim1", FaultCmd::Heal);
    assert_eq!(a.run(&read10(0), true, 512, &[]).0, 0);
}

#[test]
fn dropped_replies_are_executed_but_not_sent() {
    let (h, t) = start();
    let mut a = Initiator::connect(t.local_addr());
    a.login_normal(&iqn_of("sim2"), &[]);
    fault(&h, "sim2", FaultCmd::Drop { percent: 100.0 });
    a.command(&write10(3), false, 512, &[0x5A; 512], true);
    a.command(&read10(3), true, 512, &[], true);
    a.ping();
    fault(&h, "sim2", FaultCmd::Heal);
    let (st, data, _) = a.run(&read10(3), true, 512, &[]);
    assert_eq!((st, data), (0, vec![0x5A; 512]), "the write was executed");
}

#[test]
fn stall_holds_commands_until_it_ends_or_is_resumed() {
    let (h, t) = start();
    let mut a = Initiator::connect(t.local_addr());
    a.login_normal(&iqn_of("sim0"), &[]);
    let mut b = Initiator::connect(t.local_addr());
    b.login_normal(&iqn_of("sim0"), &[]);
    // A long stall ended early by `resume`: the held write and read run in order.
    fault(&h, "sim0", FaultCmd::Stall { ms: 600_000 });
    let w = a.command(&write10(4), false, 512, &[0x11; 512], true);
    let r = a.command(&read10(4), true, 512, &[], true);
    a.ping();
    b.ping();
    fault(&h, "sim0", FaultCmd::Resume);
    assert_eq!(a.result(w).0, 0);
    let (st, data, _) = a.result(r);
    assert_eq!((st, data), (0, vec![0x11; 512]));
    // A short stall ends by itself (no fault change wakes the connection).
    fault(&h, "sim0", FaultCmd::Stall { ms: 200 });
    let at = std::time::Instant::now();
    let (st, _, _) = a.run(&read10(4), true, 512, &[]);
    assert_eq!(st, 0);
    assert!(
        at.elapsed() >= Duration::from_millis(190),
        "held for the stall"
    );
}

#[test]
fn lun_reset_and_logout_drop_held_commands_without_leaking() {
    let (h, t) = start();
    let drives = h.shared_drives();
    let mut a = Initiator::connect(t.local_addr());
    a.login_normal(&iqn_of("sim0"), &[]);
    let mut c = Initiator::connect(t.local_addr());
    c.login_normal(&iqn_of("sim1"), &[]);
    fault(&h, "sim0", FaultCmd::Stall { ms: 600_000 });
    a.command(&write10(5), false, 512, &[0x22; 512], true);
    a.command(&read10(5), true, 512, &[], true);
    assert_eq!(a.tmf(5, RESERVED_TAG), 0, "LUN RESET: function complete");
    fault(&h, "sim0", FaultCmd::Resume);
    // Nothing held is answered after the reset, and the write never ran.
    let (st, data, _) = a.run(&read10(5), true, 512, &[]);
    assert_eq!((st, data), (0, vec![0; 512]));
    // Logout with a command held: answered, closed, the target serves on.
    fault(&h, "sim0", FaultCmd::Stall { ms: 600_000 });
    a.command(&write10(6), false, 512, &[0x33; 512], true);
    a.logout();
    assert_eq!(c.run(&read10(6), true, 512, &[]).0, 0);
    // A connection closed with a command held.
    let mut d = Initiator::connect(t.local_addr());
    d.login_normal(&iqn_of("sim0"), &[]);
    d.command(&read10(6), true, 512, &[], true);
    d.ping();
    drop(d);
    fault(&h, "sim0", FaultCmd::Heal);
    let mut e = Initiator::connect(t.local_addr());
    e.login_normal(&iqn_of("sim0"), &[]);
    let (st, data, _) = e.run(&read10(6), true, 512, &[]);
    assert_eq!((st, data), (0, vec![0; 512]), "the held write never ran");
    drop((c, e));
    // Every connection thread ends (stop joins them) and unregisters its watcher.
    t.stop();
    for d in &drives.drives {
        assert_eq!(d.faults.watchers(), 0, "{}", d.name);
    }
}

#[test]
fn held_commands_are_bounded() {
    let h = SimHandle::start(
        SimConfig::with_drives(1),
        &[ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())],
    )
    .unwrap();
    let t = IscsiTarget::start(
        &h.shared_drives(),
        &IscsiConfig {
            lun_bytes: 1 << 20,
            max_held: 2,
            ..IscsiConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let mut a = Initiator::connect(t.local_addr());
    a.login_normal(&iqn_of("sim0"), &[]);
    fault(&h, "sim0", FaultCmd::Stall { ms: 600_000 });
    let r1 = a.command(&read10(0), true, 512, &[], true);
    let r2 = a.command(&read10(1), true, 512, &[], true);
    let r3 = a.command(&read10(2), true, 512, &[], true);
    assert_eq!(a.result(r3).0, 0x28, "TASK SET FULL");
    fault(&h, "sim0", FaultCmd::Heal);
    assert_eq!(a.result(r1).0, 0);
    assert_eq!(a.result(r2).0, 0);
}

#[test]
fn power_cycle_over_the_control_protocol_clears_what_iscsi_wrote() {
    let (h, t) = start();
    let mut a = Initiator::connect(t.local_addr());
    a.login_normal(&iqn_of("sim0"), &[]);
    let cdb = mutex_write_cdb(MutexOp::Trylock);
    assert_eq!(a.run(&cdb, false, 512, &trylock_record("host-a")).0, 0);
    fault(&h, "sim0", FaultCmd::PowerCycle);
    let resp = h
        .control(ControlRequest::DumpTable {
            drive: "sim0".into(),
        })
        .unwrap();
    assert!(matches!(resp, ControlResponse::Table { records } if records.is_empty()));
}

#[test]
fn latency_delays_iscsi_answers_in_order() {
    let (h, t) = start();
    let mut a = Initiator::connect(t.local_addr());
    a.login_normal(&iqn_of("sim0"), &[]);
    let mut b = Initiator::connect(t.local_addr());
    b.login_normal(&iqn_of("sim1"), &[]);
    h.control(ControlRequest::SetLatency {
        drive: "sim0".into(),
        latency: Latency::Fixed { us: 200_000 },
    })
    .unwrap();
    let at = std::time::Instant::now();
    let r = a.command(&read10(0), true, 512, &[], true);
    // A NOP-Out right behind it: its NOP-In leaves after the read's answer.
    let mut p = Pdu::new(op::NOP_OUT);
    p.bhs[0] |= 0x40;
    p.set_flags(0x80);
    p.set_itt(9999);
    p.set_u32(20, RESERVED_TAG);
    p.set_u32(24, a.cmd_sn);
    a.send(&p);
    // The other drive has no latency: served meanwhile.
    assert_eq!(b.run(&read10(0), true, 512, &[]).0, 0);
    assert_eq!(a.result(r).0, 0);
    assert!(
        at.elapsed() >= Duration::from_millis(190),
        "delayed by the latency"
    );
    let n = a.recv();
    assert_eq!((n.opcode(), n.itt()), (op::NOP_IN, 9999));
    h.control(ControlRequest::SetLatency {
        drive: "sim0".into(),
        latency: Latency::None,
    })
    .unwrap();
    assert_eq!(a.run(&read10(0), true, 512, &[]).0, 0);
}
