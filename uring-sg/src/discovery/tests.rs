//! Discovery against fake sysfs and /dev trees shaped like the kernel's.

use super::*;
use std::os::unix::fs::symlink;

struct Tree {
    _dir: tempfile::TempDir,
    roots: Roots,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            sys: dir.path().join("sys"),
            dev: dir.path().join("dev"),
        };
        fs::create_dir_all(&roots.sys).unwrap();
        fs::create_dir_all(&roots.dev).unwrap();
        Tree { _dir: dir, roots }
    }

    fn sys(&self, rel: &str) -> PathBuf {
        self.roots.sys.join(rel)
    }

    fn dev(&self, rel: &str) -> PathBuf {
        self.roots.dev.join(rel)
    }

    fn mkdir(p: &Path) {
        fs::create_dir_all(p).unwrap();
    }

    fn write(p: &Path, s: &str) {
        Self::mkdir(p.parent().unwrap());
        fs::write(p, s).unwrap();
    }

    fn link(link: &Path, target: &Path) {
        Self::mkdir(link.parent().unwrap());
        symlink(target, link).unwrap();
    }

    fn node(&self, rel: &str) {
        Self::write(&self.dev(rel), "");
    }

    /// A SCSI disk `block` at `hctl` with sg node `sg`; returns its device dir.
    fn scsi_disk(&self, hctl: &str, block: &str, sg: &str, wwid: Option<&str>) -> PathBuf {
        let d = self.sys(&format!("devices/pci0000:00/host0/target0:0:0/{hctl}"));
        let b = d.join("block").join(block);
        Self::mkdir(&b);
        Self::link(&b.join("device"), &d);
        Self::link(&self.sys(&format!("class/block/{block}")), &b);
        let g = d.join("scsi_generic").join(sg);
        Self::mkdir(&g);
        Self::link(&g.join("device"), &d);
        Self::link(&self.sys(&format!("class/scsi_generic/{sg}")), &g);
        let bs = d.join("bsg").join(hctl);
        Self::mkdir(&bs);
        Self::link(&bs.join("device"), &d);
        Self::link(&self.sys(&format!("class/bsg/{hctl}")), &bs);
        if let Some(w) = wwid {
            Self::write(&d.join("wwid"), &format!("{w}\n"));
        }
        self.node(block);
        self.node(sg);
        self.node(&format!("bsg/{hctl}"));
        d
    }

    fn partition(&self, disk_dev_dir: &Path, block: &str, part: &str) {
        let p = disk_dev_dir.join("block").join(block).join(part);
        Self::write(&p.join("partition"), "1\n");
        Self::link(&self.sys(&format!("class/block/{part}")), &p);
        self.node(part);
    }

    /// A device-mapper device `dm` over `slaves`, with `/dev/mapper/alias`.
    fn dm(&self, dm: &str, alias: &str, slaves: &[&str]) {
        let d = self.sys(&format!("devices/virtual/block/{dm}"));
        Self::mkdir(&d.join("slaves"));
        for s in slaves {
            let target = fs::canonicalize(self.sys(&format!("class/block/{s}"))).unwrap();
            Self::link(&d.join("slaves").join(s), &target);
        }
        Self::link(&self.sys(&format!("class/block/{dm}")), &d);
        self.node(dm);
        Self::link(
            &self.dev(&format!("mapper/{alias}")),
            Path::new(&format!("../{dm}")),
        );
    }

    /// An NVMe controller `nvmeN` with namespace `nvmeNn1`.
    fn nvme(&self, n: u32, wwid: &str) -> PathBuf {
        let c = self.sys(&format!("devices/pci0000:00/0000:00:04.0/nvme/nvme{n}"));
        Self::write(&c.join("serial"), &format!("idmnvme{n}   \n"));
        Self::write(
            &c.join("subsysnqn"),
            &format!("nqn.2019-08.org.qemu:idmnvme{n}\n"),
        );
        Self::link(&self.sys(&format!("class/nvme/nvme{n}")), &c);
        let ns = c.join(format!("nvme{n}n1"));
        Self::write(&ns.join("wwid"), &format!("{wwid}\n"));
        Self::link(&ns.join("device"), &c);
        Self::link(&self.sys(&format!("class/block/nvme{n}n1")), &ns);
        self.node(&format!("nvme{n}"));
        self.node(&format!("nvme{n}n1"));
        self.node(&format!("ng{n}n1"));
        c
    }
}

fn scsi(block: &str, sg: &str, hctl: &str, t: &Tree) -> DriveNodes {
    DriveNodes::Scsi {
        block: Some(block.into()),
        sg: Some(t.dev(sg)),
        bsg: Some(t.dev(&format!("bsg/{hctl}"))),
    }
}

#[test]
fn a_disk_its_partition_and_a_by_id_link_lead_to_its_sg_node() {
    let t = Tree::new();
    let d = t.scsi_disk("0:0:0:0", "sda", "sg0", Some("naa.5000c500a1b2c3d4"));
    t.partition(&d, "sda", "sda1");
    Tree::link(
        &t.dev("disk/by-id/wwn-0x5000c500a1b2c3d4-part1"),
        Path::new("../../sda1"),
    );
    for p in ["sda", "sda1", "disk/by-id/wwn-0x5000c500a1b2c3d4-part1"] {
        let got = resolve(&t.roots, &t.dev(p)).unwrap();
        assert_eq!(got.len(), 1, "{p}");
        assert_eq!(got[0].nodes, scsi("sda", "sg0", "0:0:0:0", &t), "{p}");
        assert_eq!(
            got[0].identity.wwid.as_deref(),
            Some("naa.5000c500a1b2c3d4")
        );
        assert_eq!(got[0].command_node(), Some(t.dev("sg0").as_path()));
    }
    // The sg node itself resolves to the same drive.
    let got = resolve(&t.roots, &t.dev("sg0")).unwrap();
    assert_eq!(got[0].nodes, scsi("sda", "sg0", "0:0:0:0", &t));
}

#[test]
fn identity_falls_back_to_vpd_pages() {
    let t = Tree::new();
    let d = t.scsi_disk("0:0:0:0", "sda", "sg0", None);
    let mut p83 = vec![0, 0x83, 0, 12, 1, 3, 0, 8];
    p83.extend_from_slice(&[0x53, 0x33, 0x33, 0x30, 0, 0, 0, 9]);
    fs::write(d.join("vpd_pg83"), &p83).unwrap();
    fs::write(d.join("vpd_pg80"), [0, 0x80, 0, 4, b'S', b'N', b'4', b'2']).unwrap();
    let got = resolve(&t.roots, &t.dev("sda")).unwrap();
    assert_eq!(
        got[0].identity,
        Identity {
            wwid: Some("naa.5333333000000009".into()),
            serial: Some("SN42".into())
        }
    );
}

#[test]
fn device_mapper_follows_slaves_to_every_drive() {
    let t = Tree::new();
    let a = t.scsi_disk("0:0:0:0", "sda", "sg0", Some("naa.1"));
    let b = t.scsi_disk("0:0:1:0", "sdb", "sg1", Some("naa.2"));
    t.partition(&a, "sda", "sda1");
    t.partition(&b, "sdb", "sdb2");
    t.dm("dm-0", "vg-lv", &["sda1", "sdb2"]);
    // A dm stacked on that dm (e.g. a snapshot) goes down both levels.
    t.dm("dm-1", "vg-snap", &["dm-0"]);
    for p in ["mapper/vg-lv", "dm-0", "mapper/vg-snap"] {
        let got = resolve(&t.roots, &t.dev(p)).unwrap();
        let nodes: Vec<_> = got.iter().map(|d| d.nodes.clone()).collect();
        assert_eq!(
            nodes,
            [
                scsi("sda", "sg0", "0:0:0:0", &t),
                scsi("sdb", "sg1", "0:0:1:0", &t)
            ],
            "{p}"
        );
    }
}

#[test]
fn multipath_paths_group_as_one_drive() {
    let t = Tree::new();
    t.scsi_disk("0:0:0:0", "sda", "sg0", Some("naa.600a0b80"));
    t.scsi_disk("1:0:0:0", "sdb", "sg1", Some("naa.600a0b80"));
    t.scsi_disk("2:0:0:0", "sdc", "sg2", Some("naa.other"));
    t.dm("dm-0", "mpatha", &["sda", "sdb"]);
    let got = resolve(&t.roots, &t.dev("mapper/mpatha")).unwrap();
    assert_eq!(got.len(), 2);
    let mut all = got.clone();
    all.extend(resolve(&t.roots, &t.dev("sdc")).unwrap());
    let groups = group_by_identity(&all);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].len(), 2);
    assert_eq!(groups[0][0].identity.key().as_deref(), Some("naa.600a0b80"));
    assert_eq!(groups[1].len(), 1);
}

#[test]
fn nvme_namespace_and_partition_lead_to_the_controller() {
    let t = Tree::new();
    let c = t.nvme(0, "eui.0011223344556677");
    let part = c.join("nvme0n1/nvme0n1p1");
    Tree::write(&part.join("partition"), "1\n");
    Tree::link(&t.sys("class/block/nvme0n1p1"), &part);
    t.node("nvme0n1p1");
    let want = DriveNodes::Nvme {
        controller: t.dev("nvme0"),
        namespace: Some("nvme0n1".into()),
        generic: Some(t.dev("ng0n1")),
    };
    for p in ["nvme0n1", "nvme0n1p1", "nvme0"] {
        let got = resolve(&t.roots, &t.dev(p)).unwrap();
        assert_eq!(got.len(), 1, "{p}");
        assert_eq!(got[0].nodes, want, "{p}");
        assert_eq!(
            got[0].identity,
            Identity {
                wwid: Some("eui.0011223344556677".into()),
                serial: Some("idmnvme0".into())
            }
        );
    }
}

#[test]
fn native_nvme_multipath_gives_every_controller() {
    let t = Tree::new();
    let s = t.sys("devices/virtual/nvme-subsystem/nvme-subsys0");
    let mut ctrls = Vec::new();
    for n in 0..2 {
        let c = t.sys(&format!("devices/pci0000:00/0000:00:0{n}.0/nvme/nvme{n}"));
        Tree::write(&c.join("serial"), "SAME\n");
        Tree::link(&s.join(format!("nvme{n}")), &c);
        t.node(&format!("nvme{n}"));
        ctrls.push(c);
    }
    let ns = s.join("nvme0n1");
    Tree::write(&ns.join("wwid"), "eui.abcd\n");
    Tree::link(&ns.join("device"), &s);
    Tree::link(&t.sys("class/block/nvme0n1"), &ns);
    t.node("nvme0n1");
    let got = resolve(&t.roots, &t.dev("nvme0n1")).unwrap();
    let ctl: Vec<_> = got.iter().filter_map(|d| d.command_node()).collect();
    assert_eq!(ctl, [t.dev("nvme0"), t.dev("nvme1")]);
    assert_eq!(group_by_identity(&got).len(), 1);
}

#[test]
fn paths_that_lead_nowhere_are_errors_naming_the_path() {
    let t = Tree::new();
    let e = resolve(&t.roots, &t.dev("sdz")).unwrap_err();
    assert!(matches!(e, DiscoveryError::NotFound { .. }));
    assert!(e.to_string().contains("sdz"), "{e}");
    // A node sysfs does not know.
    t.node("weird");
    let e = resolve(&t.roots, &t.dev("weird")).unwrap_err();
    assert!(matches!(e, DiscoveryError::NotADevice { .. }), "{e}");
    assert!(e.to_string().contains("weird"));
    // A disk whose sg node and bsg node are missing from /dev.
    t.scsi_disk("0:0:0:0", "sda", "sg0", Some("naa.1"));
    fs::remove_file(t.dev("sg0")).unwrap();
    fs::remove_file(t.dev("bsg/0:0:0:0")).unwrap();
    let e = resolve(&t.roots, &t.dev("sda")).unwrap_err();
    assert!(matches!(e, DiscoveryError::NoCommandNode { .. }), "{e}");
    assert!(
        e.to_string().contains("sda") && e.to_string().contains("sg module"),
        "{e}"
    );
    // A block device without an underlying drive (a loop device).
    let l = t.sys("devices/virtual/block/loop0");
    Tree::mkdir(&l);
    Tree::link(&t.sys("class/block/loop0"), &l);
    t.node("loop0");
    let e = resolve(&t.roots, &t.dev("loop0")).unwrap_err();
    assert!(e.to_string().contains("loop0"), "{e}");
}

#[test]
fn scan_lists_scsi_and_nvme_drives() {
    let t = Tree::new();
    t.scsi_disk("0:0:0:0", "sda", "sg0", Some("naa.1"));
    t.scsi_disk("0:0:1:0", "sdb", "sg1", Some("naa.2"));
    t.nvme(0, "eui.1");
    let s = scan(&t.roots);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    let nodes: Vec<_> = s.drives.iter().filter_map(|d| d.command_node()).collect();
    assert_eq!(nodes, [t.dev("sg0"), t.dev("sg1"), t.dev("nvme0")]);
    // The scan and a resolve of the block path agree.
    assert_eq!(resolve(&t.roots, &t.dev("sdb")).unwrap()[0], s.drives[1]);
    // A SCSI device whose nodes are gone is reported, not dropped silently.
    fs::remove_file(t.dev("sg1")).unwrap();
    fs::remove_file(t.dev("bsg/0:0:1:0")).unwrap();
    let s = scan(&t.roots);
    assert_eq!(s.drives.len(), 2);
    assert_eq!(s.problems.len(), 1);
}

#[test]
fn the_cache_reverifies_identity_before_reuse() {
    let t = Tree::new();
    let d = t.scsi_disk("0:0:0:0", "sda", "sg0", Some("naa.old"));
    let mut c = DriveCache::new(t.roots.clone());
    let first = c.resolve(&t.dev("sda")).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c.resolve(&t.dev("sda")).unwrap(), first);
    // Another drive took the name: the cached answer is not reused.
    fs::write(d.join("wwid"), "naa.new\n").unwrap();
    let again = c.resolve(&t.dev("sda")).unwrap();
    assert_eq!(again[0].identity.wwid.as_deref(), Some("naa.new"));
    assert!(!first[0].still_valid(&t.roots));
    assert!(again[0].still_valid(&t.roots));
    // The drive went away: the error names the path, and nothing stale stays.
    fs::remove_file(t.dev("sda")).unwrap();
    fs::remove_file(t.dev("sg0")).unwrap();
    assert!(c.resolve(&t.dev("sda")).is_err());
    assert!(c.is_empty());
}

#[test]
fn a_mapper_node_made_without_udev_resolves_by_its_device_number() {
    // libdm without udev makes /dev/mapper/NAME a block node of its own (no
    // link to dm-N): sysfs knows it only as dev/block/MAJ:MIN -> dm-N.
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let t = Tree::new();
    let a = t.scsi_disk("0:0:0:0", "sda", "sg0", Some("naa.1"));
    t.partition(&a, "sda", "sda2");
    t.dm("dm-0", "vg-lv", &["sda2"]);
    let dm_dir = fs::canonicalize(t.sys("class/block/dm-0")).unwrap();
    Tree::link(&t.sys("dev/block/253:7"), &dm_dir);
    let node = t.dev("mapper/LVMTESTpv1");
    if let Err(e) = mknod(
        &node,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(253, 7),
    ) {
        eprintln!("skipped: cannot make a block node here ({e})");
        return;
    }
    let got = resolve(&t.roots, &node).unwrap();
    let nodes: Vec<_> = got.iter().map(|d| d.nodes.clone()).collect();
    assert_eq!(nodes, [scsi("sda", "sg0", "0:0:0:0", &t)]);
    // A plain file of an unknown name stays an error naming the path.
    t.node("mapper/plain");
    let err = resolve(&t.roots, &t.dev("mapper/plain")).unwrap_err();
    assert!(err.to_string().contains("mapper/plain"), "{err}");
}
