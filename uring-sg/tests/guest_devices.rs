//! Tests against real kernel devices. Each runs only when its environment
//! variable names a device, and otherwise returns early saying it was skipped:
//!
//! - `IDM_TEST_SG`: an sg node (`/dev/sg0`) of a disk that is not an IDM drive;
//! - `IDM_TEST_NVME`: an NVMe controller node (`/dev/nvme0`), not an IDM drive;
//! - `IDM_TEST_BSG`: a bsg node (`/dev/bsg/H:C:T:L`).
//!
//! `scripts/guest-test.sh` runs them in a throw-away guest with `scsi_debug` and
//! QEMU's NVMe controller (`../shared/tools/guest-run`).

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use uring_sg::caps::{Capabilities, NodeKind};
use uring_sg::discovery::{self, DriveNodes, Roots};
use uring_sg::driver::Driver;
use uring_sg::transport::bsg::BsgTransport;
use uring_sg::transport::nvme::NvmeTransport;
use uring_sg::transport::sg::{sg_io, SgTransport};
use uring_sg::transport::Request;
use uring_sg::{Class, DriveError, HostId, LockId, MutexOp, Record};

const T: Duration = Duration::from_secs(15);

fn device(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!("skipped: {var} names no device");
            None
        }
    }
}

fn trylock() -> Request {
    Request::Mutex {
        op: MutexOp::Trylock,
        record: Record::new(
            LockId::from_slice(&[7; 64]).unwrap(),
            HostId::from_slice(&[3; 32]).unwrap(),
            Class::Exclusive,
        ),
    }
}

#[test]
fn sg_inquiry_and_the_idm_opcode_through_io_uring() {
    let Some(sg) = device("IDM_TEST_SG") else {
        return;
    };
    let mut d = Driver::new(64).unwrap();
    let i = d.add(Box::new(SgTransport::open(&sg, 2).unwrap()));
    // The version page INQUIRY reaches the disk and comes back decoded: a plain
    // disk has no page 0xC3 (ILLEGAL REQUEST, invalid field in CDB).
    let v = d.call(i, &Request::Version, T).unwrap();
    println!("version page on {}: {:?}", sg.display(), v.result);
    match v.result {
        Ok(()) => assert!(!v.data.is_empty()),
        Err(DriveError::Check(s)) => assert_eq!(s.key, 5),
        Err(e) => panic!("unexpected answer to INQUIRY: {e:?}"),
    }
    // The IDM opcode: CHECK CONDITION, key 5, ASC 0x20 -> not an IDM drive.
    let r = d.call(i, &trylock(), T).unwrap();
    assert_eq!(r.result, Err(DriveError::InvalidOpcode));
    let r = d.call(i, &Request::ReadCount, T).unwrap();
    assert_eq!(r.result, Err(DriveError::InvalidOpcode));
}

#[test]
fn sg_many_commands_in_flight_over_several_files() {
    let Some(sg) = device("IDM_TEST_SG") else {
        return;
    };
    let mut d = Driver::new(32).unwrap();
    let t = SgTransport::open(&sg, 3).unwrap();
    assert_eq!(t.files(), 3);
    let i = d.add(Box::new(t));
    let n = 45u64;
    for round in 0..3 {
        for tag in 0..n {
            let req = if tag % 2 == 0 {
                trylock()
            } else {
                Request::ReadCount
            };
            d.enqueue(i, tag, &req, T).unwrap();
        }
        assert_eq!(d.in_flight(), n as usize);
        let mut seen = vec![false; n as usize];
        let mut got = 0;
        while got < n {
            d.turn(T, &mut |_, c| {
                assert_eq!(c.reply.result, Err(DriveError::InvalidOpcode));
                assert!(!seen[c.tag as usize], "tag {} twice", c.tag);
                seen[c.tag as usize] = true;
                got += 1;
            })
            .unwrap();
        }
        println!("round {round}: {n} commands in flight over 3 files, all answered");
    }
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn sg_sync_path() {
    let Some(sg) = device("IDM_TEST_SG") else {
        return;
    };
    let f = OpenOptions::new().read(true).write(true).open(&sg).unwrap();
    let r = sg_io(f.as_fd(), &trylock(), T);
    assert_eq!(r.result, Err(DriveError::InvalidOpcode));
    let r = sg_io(f.as_fd(), &Request::ReadTable { records: 2 }, T);
    assert_eq!(r.result, Err(DriveError::InvalidOpcode));
}

#[test]
fn nvme_idm_opcodes_are_invalid_on_a_plain_controller() {
    let Some(nvme) = device("IDM_TEST_NVME") else {
        return;
    };
    let mut d = Driver::new_big(32).unwrap();
    let i = d.add(Box::new(NvmeTransport::open(&nvme, 8).unwrap()));
    // 0xC1 (write) and 0xC2 (read): invalid opcode status (0x4001 on QEMU).
    let r = d.call(i, &trylock(), T).unwrap();
    assert_eq!(r.result, Err(DriveError::InvalidOpcode));
    let r = d.call(i, &Request::ReadTable { records: 1 }, T).unwrap();
    assert_eq!(r.result, Err(DriveError::InvalidOpcode));
    // Several in flight at once.
    for tag in 0..8 {
        d.enqueue(i, tag, &Request::ReadCount, T).unwrap();
    }
    let mut got = 0;
    while got < 8 {
        d.turn(T, &mut |_, c| {
            assert_eq!(c.reply.result, Err(DriveError::InvalidOpcode));
            got += 1;
        })
        .unwrap();
    }
}

#[test]
fn bsg_uring_cmd_matches_what_the_kernel_offers() {
    let Some(bsg) = device("IDM_TEST_BSG") else {
        return;
    };
    let caps = Capabilities::detect();
    let mut d = Driver::new_big(8).unwrap();
    let i = d.add(Box::new(BsgTransport::open(&bsg, 4).unwrap()));
    let r = d.call(i, &trylock(), T).unwrap();
    println!(
        "bsg uring_cmd on {} (kernel {:?}): {:?}",
        bsg.display(),
        caps.kernel_release,
        r.result
    );
    if caps.bsg_uring_cmd_usable() {
        assert_eq!(r.result, Err(DriveError::InvalidOpcode));
    } else {
        // Before 7.1 bsg has no uring_cmd: the kernel refuses the entry.
        assert!(matches!(r.result, Err(DriveError::Io(_))), "{:?}", r.result);
    }
}

#[test]
fn capabilities_see_the_guest_devices() {
    let sg = device("IDM_TEST_SG");
    let nvme = device("IDM_TEST_NVME");
    if sg.is_none() && nvme.is_none() {
        return;
    }
    let caps = Capabilities::detect();
    println!("{}", caps.report());
    assert!(caps.sg_usable());
    let has = |p: &Path, k| caps.nodes.iter().any(|n| n.path == p && n.kind == k);
    if let Some(sg) = &sg {
        assert!(has(sg, NodeKind::Sg));
        assert!(caps.best_scsi_transport().is_some());
    }
    if let Some(nvme) = &nvme {
        assert!(has(nvme, NodeKind::NvmeController));
        assert!(caps.nvme_uring_cmd_usable());
    }
}

#[test]
fn discovery_finds_the_real_devices() {
    let roots = Roots::default();
    if let Some(sg) = device("IDM_TEST_SG") {
        let drives = discovery::scan(&roots).drives;
        let d = drives
            .iter()
            .find(|d| matches!(&d.nodes, DriveNodes::Scsi { sg: Some(p), .. } if *p == sg))
            .expect("the sg node is found by the scan");
        println!("scsi drive: {d:?}");
        // From its block device path back to the same sg node and identity.
        if let DriveNodes::Scsi {
            block: Some(block), ..
        } = &d.nodes
        {
            let got = discovery::resolve(&roots, &Path::new("/dev").join(block)).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0], *d);
        }
    }
    if let Some(nvme) = device("IDM_TEST_NVME") {
        let drives = discovery::scan(&roots).drives;
        let d = drives
            .iter()
            .find(
                |d| matches!(&d.nodes, DriveNodes::Nvme { controller, .. } if *controller == nvme),
            )
            .expect("the NVMe controller is found by the scan");
        println!("nvme drive: {d:?}");
        if let DriveNodes::Nvme {
            namespace: Some(ns),
            ..
        } = &d.nodes
        {
            let got = discovery::resolve(&roots, &Path::new("/dev").join(ns)).unwrap();
            assert_eq!(got[0], *d);
        }
    }
    let missing = discovery::resolve(&roots, Path::new("/dev/does-not-exist"));
    assert!(missing
        .unwrap_err()
        .to_string()
        .contains("/dev/does-not-exist"));
}
