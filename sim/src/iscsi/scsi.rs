//! The disk behind each LUN: a data area plus the SCSI commands a kernel's `sd`
//! driver, `sg_inq` and libiscsi's tools send, with the IDM opcode `0xF0` (and
//! the IDM version page `0xC3`) going to the drive's firmware.
//!
//! Commands: INQUIRY (standard; VPD 0x00, 0x80 serial, 0x83 identification,
//! 0xB0 block limits, 0xB1 block device characteristics, 0xC3 from the
//! firmware), TEST UNIT READY, REQUEST SENSE, REPORT LUNS, READ CAPACITY (10,
//! 16), MODE SENSE (6, 10: caching and control pages), READ / WRITE (6, 10, 16),
//! WRITE AND VERIFY (16, as a write: the data is kept, so the verify passes),
//! SYNCHRONIZE CACHE (10, 16), and `0xF0`. Anything else is CHECK CONDITION,
//! ILLEGAL REQUEST, invalid command operation code (5/0x20/0). Disk errors use
//! fixed-format sense; firmware answers keep the firmware's sense format.
//!
//! **Identity**: the NAA designator (type 6, 16 bytes) and the serial are
//! derived from the drive name with FNV-1a, so a drive keeps its WWN across runs
//! and every name gets its own.
//!
//! **Data area**: 512-byte blocks, either sparse RAM (64 KiB chunks allocated on
//! first write, unwritten blocks read as zeros) or a file per drive
//! (`DIR/<drive>.img`, created sparse at the drive's size, written with
//! `pwrite`; SYNCHRONIZE CACHE is `fdatasync`). RAM disks report the write cache
//! off; file disks report it on, so the kernel sends cache flushes.
//!
//! **IDM context commands** (what LVM2's test suite sends before each test,
//! `test/lib/aux.sh` `cleanup_idm_context`, through `sg_raw`), outside the data
//! area whatever the disk's size:
//! - READ(16) of one block at LBA [`CONTEXT_READ_LBA`] (`0x010000000020FF01`)
//!   returns the drive's IDM context, a 512-byte block laid out by
//!   [`context_block`]: magic `IDM-CTX1` (bytes 0..8), records in the mutex table
//!   (8..12), mutexes (12..16), table capacity (16..20), all big-endian u32, the
//!   IDM major version (byte 20), and the drive name, NUL-padded (32..96); the
//!   rest is zero. It describes the table; it is not a copy of it (the real
//!   drive's layout is not public).
//! - WRITE AND VERIFY(16) of one block to LBA [`CONTEXT_RESET_LBA`]
//!   (`0xFF00000000000000`) resets the drive's mutex table
//!   ([`Firmware::reset`]), whatever the block holds (LVM2 writes back what the
//!   read returned). The data area is untouched.
//!
//! Any other block count at these LBAs is CHECK CONDITION, invalid field in CDB.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::firmware::Firmware;
use crate::server::lock_fw;
use uring_sg::codec::{ScsiStatus, Sense, SenseFormat, IDM_OPCODE, VERSION_PAGE};

/// Logical block size.
pub const BLOCK: u64 = 512;
/// RAM chunk size.
const CHUNK: u64 = 64 * 1024;
/// Vendor identification (as the firmware's standard INQUIRY).
const VENDOR: &[u8; 8] = b"IDMSIM  ";
/// Product identification (as the firmware's standard INQUIRY).
const PRODUCT: &[u8; 16] = b"IDM FIRMWARE SIM";
/// Device-specific parameter of MODE SENSE: DPOFUA (DPO and FUA are accepted).
const DEV_SPECIFIC: u8 = 0x10;
/// LBA of the vendor READ(16) that returns the drive's IDM context (module docs).
pub const CONTEXT_READ_LBA: u64 = 0x0100_0000_0020_FF01;
/// LBA of the vendor WRITE AND VERIFY(16) that resets the drive's IDM context.
pub const CONTEXT_RESET_LBA: u64 = 0xFF00_0000_0000_0000;
/// Magic of the IDM context block.
pub const CONTEXT_MAGIC: &[u8; 8] = b"IDM-CTX1";
/// Largest transfer (blocks) one command may ask for (VPD 0xB0).
pub const MAX_TRANSFER_BLOCKS: u32 = 8192;

/// Where a disk keeps its blocks.
enum Store {
    Ram(Mutex<HashMap<u64, Box<[u8]>>>),
    File(File),
}

/// A LUN's data area.
pub struct Disk {
    blocks: u64,
    store: Store,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.store {
            Store::Ram(_) => "ram",
            Store::File(_) => "file",
        };
        write!(f, "Disk({} blocks, {kind})", self.blocks)
    }
}

impl Disk {
    /// A sparse RAM disk of `bytes` (rounded down to whole blocks).
    pub fn ram(bytes: u64) -> Disk {
        Disk {
            blocks: bytes / BLOCK,
            store: Store::Ram(Mutex::new(HashMap::new())),
        }
    }

    /// A disk backed by the file at `path`, created if missing and grown (sparse)
    /// to `bytes` if shorter; an existing longer file keeps its size.
    pub fn file(path: &Path, bytes: u64) -> io::Result<Disk> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = f.metadata()?.len();
        if len < bytes {
            f.set_len(bytes)?;
        }
        Ok(Disk {
            blocks: len.max(bytes) / BLOCK,
            store: Store::File(f),
        })
    }

    /// Size in blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    fn write_cache(&self) -> bool {
        matches!(self.store, Store::File(_))
    }

    /// Reads `len` bytes at byte offset `off` (in range: checked by the caller).
    fn read(&self, off: u64, out: &mut [u8]) -> io::Result<()> {
        match &self.store {
            Store::File(f) => f.read_exact_at(out, off),
            Store::Ram(m) => {
                let map = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut done = 0usize;
                while done < out.len() {
                    let pos = off + done as u64;
                    let (ci, co) = (pos / CHUNK, (pos % CHUNK) as usize);
                    let n = (CHUNK as usize - co).min(out.len() - done);
                    match map.get(&ci) {
                        Some(c) => out[done..done + n].copy_from_slice(&c[co..co + n]),
                        None => out[done..done + n].fill(0),
                    }
                    done += n;
                }
                Ok(())
            }
        }
    }

    /// Writes `data` at byte offset `off` (in range: checked by the caller).
    fn write(&self, off: u64, data: &[u8]) -> io::Result<()> {
        match &self.store {
            Store::File(f) => f.write_all_at(data, off),
            Store::Ram(m) => {
                let mut map = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut done = 0usize;
                while done < data.len() {
                    let pos = off + done as u64;
                    let (ci, co) = (pos / CHUNK, (pos % CHUNK) as usize);
                    let n = (CHUNK as usize - co).min(data.len() - done);
                    let src = &data[done..done + n];
                    match map.get_mut(&ci) {
                        Some(c) => c[co..co + n].copy_from_slice(src),
                        None if src.iter().all(|&b| b == 0) => {}
                        None => {
                            let mut c = vec![0u8; CHUNK as usize].into_boxed_slice();
                            c[co..co + n].copy_from_slice(src);
                            map.insert(ci, c);
                        }
                    }
                    done += n;
                }
                Ok(())
            }
        }
    }

    fn sync(&self) -> io::Result<()> {
        match &self.store {
            Store::File(f) => f.sync_data(),
            Store::Ram(_) => Ok(()),
        }
    }
}

/// One logical unit: a simulated drive's firmware plus its data area.
#[derive(Debug, Clone)]
pub struct Lun {
    /// Drive name.
    pub name: String,
    /// The drive's firmware (shared with the native server).
    pub fw: Arc<Mutex<Firmware>>,
    /// The data area.
    pub disk: Arc<Disk>,
    /// The drive's faults (shared with the native server; judged per command by
    /// the session, [`super::session`]).
    pub faults: Arc<crate::faults::DriveFaults>,
}

/// Status and sense of one command (data-in goes to the caller's buffer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// SCSI status byte.
    pub status: u8,
    /// Sense bytes (empty unless CHECK CONDITION).
    pub sense: Vec<u8>,
}

impl Answer {
    /// GOOD.
    pub fn good() -> Answer {
        Answer {
            status: ScsiStatus::GOOD.0,
            sense: Vec::new(),
        }
    }

    /// CHECK CONDITION with fixed-format sense.
    pub fn check(key: u8, asc: u8, ascq: u8) -> Answer {
        Answer {
            status: ScsiStatus::CHECK_CONDITION.0,
            sense: Sense::new(key, asc, ascq)
                .to_buf(SenseFormat::Fixed)
                .as_slice()
                .to_vec(),
        }
    }
}

const ILLEGAL: u8 = Sense::KEY_ILLEGAL_REQUEST;
const MEDIUM_ERROR: u8 = 0x3;

fn invalid_opcode() -> Answer {
    Answer::check(ILLEGAL, 0x20, 0)
}
fn invalid_field() -> Answer {
    Answer::check(ILLEGAL, 0x24, 0)
}
fn lba_out_of_range() -> Answer {
    Answer::check(ILLEGAL, 0x21, 0)
}

/// FNV-1a 64 of `data` from `seed`.
fn fnv(seed: u64, data: &[u8]) -> u64 {
    let mut h = seed;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The 16-byte NAA (type 6, IEEE registered extended) designator of a drive.
pub fn naa_of(name: &str) -> [u8; 16] {
    let a = fnv(0xcbf2_9ce4_8422_2325, name.as_bytes());
    let b = fnv(a ^ 0x9e37_79b9_7f4a_7c15, name.as_bytes());
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&a.to_be_bytes());
    id[8..].copy_from_slice(&b.to_be_bytes());
    id[0] = 0x60 | (id[0] & 0x0F);
    id
}

/// The unit serial number of a drive (VPD 0x80): `IDM` and 12 hex digits.
pub fn serial_of(name: &str) -> String {
    format!(
        "IDM{:012X}",
        fnv(0x8422_2325_cbf2_9ce4, name.as_bytes()) >> 16
    )
}

fn be16(v: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([v[at], v[at + 1]]))
}
fn be32(v: &[u8], at: usize) -> u64 {
    u64::from(u32::from_be_bytes([v[at], v[at + 1], v[at + 2], v[at + 3]]))
}
fn be64(v: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&v[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Length of the CDB of `opcode` by its group code (SAM), 16 for vendor groups.
pub fn cdb_len(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 16,
    }
}

impl Lun {
    /// Executes one command on this LUN at drive time `now_ms`. `data_out` is the
    /// data the initiator sent; data-in replaces `data_in` (before truncation to
    /// the initiator's expected length, which the caller applies). Never panics.
    pub fn execute(
        &self,
        now_ms: u64,
        cdb: &[u8],
        data_out: &[u8],
        data_in: &mut Vec<u8>,
    ) -> Answer {
        data_in.clear();
        let Some(&opcode) = cdb.first() else {
            return invalid_opcode();
        };
        if cdb.len() < cdb_len(opcode).min(16) {
            return invalid_field();
        }
        let a = match opcode {
            0x00 => Answer::good(),
            0x03 => request_sense(cdb, data_in),
            0x12 => self.inquiry(now_ms, cdb, data_in),
            0xA0 => report_luns(cdb, data_in),
            0x25 => self.read_capacity10(data_in),
            0x9E if cdb[1] & 0x1F == 0x10 => self.read_capacity16(cdb, data_in),
            0x1A => self.mode_sense(cdb, false, data_in),
            0x5A => self.mode_sense(cdb, true, data_in),
            0x88 if be64(cdb, 2) == CONTEXT_READ_LBA => self.read_context(cdb, data_in),
            0x8E if be64(cdb, 2) == CONTEXT_RESET_LBA => self.reset_context(cdb),
            0x08 | 0x28 | 0x88 => self.read(cdb, data_in),
            0x0A | 0x2A | 0x8A | 0x8E => self.write(cdb, data_out),
            0x35 | 0x91 => match self.disk.sync() {
                Ok(()) => Answer::good(),
                Err(_) => Answer::check(MEDIUM_ERROR, 0x0C, 0),
            },
            IDM_OPCODE => {
                let a = lock_fw(&self.fw).execute(now_ms, cdb, data_out, data_in);
                Answer {
                    status: a.status.0,
                    sense: a.sense.as_slice().to_vec(),
                }
            }
            _ => invalid_opcode(),
        };
        if a.status != ScsiStatus::GOOD.0 {
            data_in.clear();
        }
        a
    }

    fn inquiry(&self, now_ms: u64, cdb: &[u8], out: &mut Vec<u8>) -> Answer {
        let evpd = cdb[1] & 1 != 0;
        let page = cdb[2];
        let alloc = be16(cdb, 3);
        if !evpd && page != 0 {
            return invalid_field();
        }
        let mut d = if !evpd {
            let mut d = vec![0u8; 96];
            d[2] = 0x06; // SPC-4
            d[3] = 0x12; // HiSup, response data format 2
            d[4] = 91;
            d[7] = 0x02; // CmdQue
            d[8..16].copy_from_slice(VENDOR);
            d[16..32].copy_from_slice(PRODUCT);
            d[32..36].copy_from_slice(b"0001");
            // Version descriptors: SAM-5, SPC-4, SBC-3, iSCSI.
            for (i, v) in [0x00A0u16, 0x0460, 0x04C0, 0x0960].iter().enumerate() {
                d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
            }
            d
        } else {
            match page {
                0x00 => vec![0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, VERSION_PAGE],
                0x80 => {
                    let s = serial_of(&self.name);
                    let mut d = vec![0, 0x80, 0, s.len() as u8];
                    d.extend_from_slice(s.as_bytes());
                    d
                }
                0x83 => self.vpd83(),
                0xB0 => {
                    let mut d = vec![0u8; 64];
                    d[1] = 0xB0;
                    d[3] = 0x3C;
                    d[8..12].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
                    d[12..16].copy_from_slice(&128u32.to_be_bytes()); // optimal
                    d
                }
                0xB1 => {
                    let mut d = vec![0u8; 64];
                    d[1] = 0xB1;
                    d[3] = 0x3C;
                    d[5] = 1; // non-rotating medium
                    d
                }
                VERSION_PAGE => {
                    let mut d = Vec::new();
                    let a = lock_fw(&self.fw).execute(now_ms, &cdb[..6], &[], &mut d);
                    if a.status != ScsiStatus::GOOD {
                        return Answer {
                            status: a.status.0,
                            sense: a.sense.as_slice().to_vec(),
                        };
                    }
                    d
                }
                _ => return invalid_field(),
            }
        };
        d.truncate(alloc);
        *out = d;
        Answer::good()
    }

    fn vpd83(&self) -> Vec<u8> {
        let mut body = vec![0x01, 0x03, 0x00, 16]; // binary, LU, NAA
        body.extend_from_slice(&naa_of(&self.name));
        let mut t10 = VENDOR.to_vec();
        t10.extend_from_slice(self.name.as_bytes());
        t10.truncate(252);
        body.extend_from_slice(&[0x02, 0x01, 0x00, t10.len() as u8]); // ASCII, LU, T10
        body.extend_from_slice(&t10);
        let mut d = vec![0, 0x83];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(&body);
        d
    }

    fn read_capacity10(&self, out: &mut Vec<u8>) -> Answer {
        let last = self.disk.blocks.saturating_sub(1).min(0xFFFF_FFFF) as u32;
        out.extend_from_slice(&last.to_be_bytes());
        out.extend_from_slice(&(BLOCK as u32).to_be_bytes());
        Answer::good()
    }

    fn read_capacity16(&self, cdb: &[u8], out: &mut Vec<u8>) -> Answer {
        let alloc = be32(cdb, 10) as usize;
        let mut d = vec![0u8; 32];
        d[..8].copy_from_slice(&self.disk.blocks.saturating_sub(1).to_be_bytes());
        d[8..12].copy_from_slice(&(BLOCK as u32).to_be_bytes());
        d.truncate(alloc);
        *out = d;
        Answer::good()
    }

    fn mode_sense(&self, cdb: &[u8], ten: bool, out: &mut Vec<u8>) -> Answer {
        let dbd = cdb[1] & 0x08 != 0;
        let pc = cdb[2] >> 6;
        let page = cdb[2] & 0x3F;
        let subpage = cdb[3];
        let alloc = if ten {
            be16(cdb, 7)
        } else {
            usize::from(cdb[4])
        };
        if pc == 3 {
            return Answer::check(ILLEGAL, 0x39, 0); // saving parameters not supported
        }
        if subpage != 0 && !(page == 0x3F && subpage == 0xFF) {
            return invalid_field();
        }
        let changeable = pc == 1;
        let caching = {
            let mut p = vec![0u8; 20];
            p[0] = 0x08;
            p[1] = 0x12;
            if !changeable && self.disk.write_cache() {
                p[2] = 0x04; // WCE
            }
            p
        };
        let control = {
            let mut p = vec![0u8; 12];
            p[0] = 0x0A;
            p[1] = 0x0A;
            p
        };
        let pages = match page {
            0x08 => caching,
            0x0A => control,
            0x3F => [caching, control].concat(),
            _ => return invalid_field(),
        };
        let mut bd = Vec::new();
        if !dbd {
            let n = self.disk.blocks.min(0xFFFF_FFFF) as u32;
            bd.extend_from_slice(&n.to_be_bytes());
            bd.extend_from_slice(&(BLOCK as u32).to_be_bytes()); // density 0 + length
        }
        let mut d = Vec::new();
        if ten {
            let len = 6 + bd.len() + pages.len();
            d.extend_from_slice(&(len as u16).to_be_bytes());
            d.extend_from_slice(&[0, DEV_SPECIFIC, 0, 0]);
            d.extend_from_slice(&(bd.len() as u16).to_be_bytes());
        } else {
            let len = 3 + bd.len() + pages.len();
            d.extend_from_slice(&[len.min(255) as u8, 0, DEV_SPECIFIC, bd.len() as u8]);
        }
        d.extend_from_slice(&bd);
        d.extend_from_slice(&pages);
        d.truncate(alloc);
        *out = d;
        Answer::good()
    }

    /// LBA and block count of a READ/WRITE CDB (6, 10 or 16).
    fn rw_range(cdb: &[u8]) -> (u64, u64) {
        match cdb[0] {
            0x08 | 0x0A => {
                let lba = (u64::from(cdb[1] & 0x1F) << 16) | (be16(cdb, 2) as u64);
                let n = if cdb[4] == 0 { 256 } else { u64::from(cdb[4]) };
                (lba, n)
            }
            0x28 | 0x2A => (be32(cdb, 2), be16(cdb, 7) as u64),
            _ => (be64(cdb, 2), be32(cdb, 10)),
        }
    }

    fn check_range(&self, cdb: &[u8], lba: u64, n: u64) -> Option<Answer> {
        // RDPROTECT / WRPROTECT: this disk has no protection information.
        if cdb[0] != 0x08 && cdb[0] != 0x0A && cdb[1] & 0xE0 != 0 {
            return Some(invalid_field());
        }
        if lba.checked_add(n).is_none_or(|end| end > self.disk.blocks) {
            return Some(lba_out_of_range());
        }
        if n > u64::from(MAX_TRANSFER_BLOCKS) {
            return Some(invalid_field());
        }
        None
    }

    fn read(&self, cdb: &[u8], out: &mut Vec<u8>) -> Answer {
        let (lba, n) = Self::rw_range(cdb);
        if let Some(a) = self.check_range(cdb, lba, n) {
            return a;
        }
        out.resize((n * BLOCK) as usize, 0);
        match self.disk.read(lba * BLOCK, out) {
            Ok(()) => Answer::good(),
            Err(_) => Answer::check(MEDIUM_ERROR, 0x11, 0), // unrecovered read error
        }
    }

    /// READ(16) at [`CONTEXT_READ_LBA`]: the IDM context block.
    fn read_context(&self, cdb: &[u8], out: &mut Vec<u8>) -> Answer {
        if be32(cdb, 10) != 1 {
            return invalid_field();
        }
        *out = context_block(&self.name, &lock_fw(&self.fw));
        Answer::good()
    }

    /// WRITE AND VERIFY(16) at [`CONTEXT_RESET_LBA`]: wipe the mutex table.
    fn reset_context(&self, cdb: &[u8]) -> Answer {
        if be32(cdb, 10) != 1 {
            return invalid_field();
        }
        lock_fw(&self.fw).reset();
        Answer::good()
    }

    fn write(&self, cdb: &[u8], data: &[u8]) -> Answer {
        let (lba, n) = Self::rw_range(cdb);
        if let Some(a) = self.check_range(cdb, lba, n) {
            return a;
        }
        // Fewer bytes than the CDB asks for (the initiator's expected length was
        // shorter: an overflow the session reports as a residual): write the
        // whole blocks that came.
        let need = (n * BLOCK) as usize;
        let have = data.len().min(need) / BLOCK as usize * BLOCK as usize;
        let fua = cdb[0] != 0x0A && cdb[1] & 0x08 != 0;
        let r = self.disk.write(lba * BLOCK, &data[..have]);
        let r = r.and_then(|()| if fua { self.disk.sync() } else { Ok(()) });
        match r {
            Ok(()) => Answer::good(),
            Err(_) => Answer::check(MEDIUM_ERROR, 0x0C, 0), // write error
        }
    }
}

/// The 512-byte IDM context block of drive `name` (layout in the module docs).
pub fn context_block(name: &str, fw: &Firmware) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    let sat = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    b[0..8].copy_from_slice(CONTEXT_MAGIC);
    b[8..12].copy_from_slice(&sat(fw.record_count()));
    b[12..16].copy_from_slice(&sat(fw.mutex_count()));
    b[16..20].copy_from_slice(&sat(fw.config().capacity));
    b[20] = fw.config().version_major;
    let n = name.len().min(63);
    b[32..32 + n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

fn request_sense(cdb: &[u8], out: &mut Vec<u8>) -> Answer {
    let desc = cdb[1] & 1 != 0;
    let fmt = if desc {
        SenseFormat::Descriptor
    } else {
        SenseFormat::Fixed
    };
    let mut d = Sense::new(0, 0, 0).to_buf(fmt).as_slice().to_vec();
    d.truncate(usize::from(cdb[4]));
    *out = d;
    Answer::good()
}

fn report_luns(cdb: &[u8], out: &mut Vec<u8>) -> Answer {
    let alloc = be32(cdb, 6) as usize;
    if alloc < 16 {
        return invalid_field();
    }
    let mut d = vec![0u8; 16];
    d[3] = 8; // one LUN (LUN 0)
    *out = d;
    Answer::good()
}

/// The answer for a command addressed to a LUN that does not exist: INQUIRY
/// reports "no device here" (peripheral qualifier 3), REPORT LUNS and REQUEST
/// SENSE work as on LUN 0, anything else is 5/0x25/0 (LU not supported).
pub fn absent_lun(cdb: &[u8], data_in: &mut Vec<u8>) -> Answer {
    data_in.clear();
    match cdb.first() {
        Some(0x12) if cdb.len() >= 6 && cdb[1] & 1 == 0 => {
            let mut d = vec![0u8; 36];
            d[0] = 0x7F;
            d[2] = 0x06;
            d[3] = 0x12;
            d[4] = 31;
            d.truncate(be16(cdb, 3));
            *data_in = d;
            Answer::good()
        }
        Some(0xA0) if cdb.len() >= 12 => report_luns(cdb, data_in),
        Some(0x03) if cdb.len() >= 6 => request_sense(cdb, data_in),
        _ => Answer::check(ILLEGAL, 0x25, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firmware::FirmwareConfig;
    use uring_sg::codec::version_cdb;

    fn lun(bytes: u64) -> Lun {
        Lun {
            name: "sim0".into(),
            fw: Arc::new(Mutex::new(Firmware::new(FirmwareConfig::default()))),
            disk: Arc::new(Disk::ram(bytes)),
            faults: Arc::new(crate::faults::DriveFaults::new(0)),
        }
    }

    fn run(l: &Lun, cdb: &[u8], out: &[u8]) -> (Answer, Vec<u8>) {
        let mut d = Vec::new();
        let a = l.execute(0, cdb, out, &mut d);
        (a, d)
    }

    fn sense(a: &Answer) -> Sense {
        Sense::parse(&a.sense).unwrap()
    }

    #[test]
    fn write_then_read_back_across_chunks_and_sparse_zeros() {
        let l = lun(1 << 20);
        let data: Vec<u8> = (0..512 * 200).map(|i| (i % 251) as u8).collect();
        // WRITE(10) at LBA 100, 200 blocks: crosses the 64 KiB chunk boundary at LBA 128.
        let (a, _) = run(&l, &[0x2A, 0, 0, 0, 0, 100, 0, 0, 200, 0], &data);
        assert_eq!(a, Answer::good());
        let (a, back) = run(&l, &[0x28, 0, 0, 0, 0, 100, 0, 0, 200, 0], &[]);
        assert_eq!(a, Answer::good());
        assert_eq!(back, data);
        // READ(16) of never-written blocks returns zeros.
        let mut r16 = [0u8; 16];
        r16[0] = 0x88;
        r16[9] = 1;
        r16[13] = 2;
        let (a, z) = run(&l, &r16, &[]);
        assert_eq!(a, Answer::good());
        assert_eq!(z, vec![0; 1024]);
        // READ(6) of LBA 100.
        let (_, six) = run(&l, &[0x08, 0, 0, 100, 1, 0], &[]);
        assert_eq!(six, data[..512]);
    }

    #[test]
    fn out_of_range_short_data_and_unknown_opcodes() {
        let l = lun(1 << 20); // 2048 blocks
        let (a, _) = run(&l, &[0x28, 0, 0, 0, 0x07, 0xFF, 0, 0, 2, 0], &[]);
        assert_eq!(sense(&a), Sense::new(5, 0x21, 0));
        let (a, _) = run(&l, &[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0], &[]);
        assert_eq!(sense(&a), Sense::new(5, 0x24, 0), "RDPROTECT");
        // Short data (expected length below the CDB's): the blocks that came are written.
        let (a, _) = run(&l, &[0x2A, 0, 0, 0, 0, 0, 0, 0, 2, 0], &[9; 512]);
        assert_eq!(a, Answer::good());
        let (_, d) = run(&l, &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], &[]);
        assert_eq!(d[..512], [9; 512]);
        assert_eq!(d[512..], [0; 512]);
        let (a, _) = run(&l, &[0x4D, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(a.status, 2);
        assert_eq!(sense(&a), Sense::new(5, 0x20, 0));
        let (a, _) = run(&l, &[0x28, 0, 0], &[]);
        assert_eq!(sense(&a), Sense::new(5, 0x24, 0));
    }

    #[test]
    fn capacity_and_luns() {
        let l = lun(64 << 20);
        let (_, d) = run(&l, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(d, [0, 1, 0xFF, 0xFF, 0, 0, 2, 0]);
        let mut c = [0u8; 16];
        c[0] = 0x9E;
        c[1] = 0x10;
        c[13] = 32;
        let (_, d) = run(&l, &c, &[]);
        assert_eq!(d.len(), 32);
        assert_eq!(be64(&d, 0), (64 << 20) / 512 - 1);
        let (_, d) = run(&l, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
        assert_eq!(d, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn inquiry_pages_and_identity() {
        let l = lun(1 << 20);
        let (_, std) = run(&l, &[0x12, 0, 0, 0, 96, 0], &[]);
        assert_eq!(&std[8..16], VENDOR);
        assert_eq!(std[0], 0);
        let (_, p0) = run(&l, &[0x12, 1, 0, 0, 255, 0], &[]);
        assert_eq!(&p0[4..], &[0x00, 0x80, 0x83, 0xB0, 0xB1, 0xC3]);
        let (_, p80) = run(&l, &[0x12, 1, 0x80, 0, 255, 0], &[]);
        assert_eq!(
            uring_sg::discovery::serial_from_vpd80(&p80).as_deref(),
            Some(serial_of("sim0").as_str())
        );
        let (_, p83) = run(&l, &[0x12, 1, 0x83, 0, 255, 0], &[]);
        let wwid = uring_sg::discovery::wwid_from_vpd83(&p83).unwrap();
        assert!(wwid.starts_with("naa.6"), "{wwid}");
        assert_ne!(naa_of("sim0"), naa_of("sim1"));
        assert_eq!(naa_of("sim0"), naa_of("sim0"));
        let (a, c3) = run(&l, &version_cdb(), &[]);
        assert_eq!(a, Answer::good());
        assert_eq!(uring_sg::codec::decode_version_page(&c3).unwrap(), (3, 0));
        let (a, _) = run(&l, &[0x12, 1, 0x99, 0, 255, 0], &[]);
        assert_eq!(sense(&a), Sense::new(5, 0x24, 0));
        let (_, short) = run(&l, &[0x12, 1, 0x83, 0, 4, 0], &[]);
        assert_eq!(short.len(), 4);
    }

    #[test]
    fn mode_sense_pages() {
        let l = lun(1 << 20);
        let (a, d) = run(&l, &[0x1A, 0, 0x3F, 0, 255, 0], &[]);
        assert_eq!(a, Answer::good());
        assert_eq!(usize::from(d[0]) + 1, d.len());
        assert_eq!(d[3], 8);
        assert_eq!(d[12], 0x08);
        let (_, d) = run(&l, &[0x5A, 0x08, 0x08, 0, 0, 0, 0, 0, 255, 0], &[]);
        assert_eq!(be16(&d, 0) + 2, d.len());
        assert_eq!(d[8], 0x08);
        let (a, _) = run(&l, &[0x1A, 0, 0x19, 0, 255, 0], &[]);
        assert_eq!(sense(&a), Sense::new(5, 0x24, 0));
    }

    #[test]
    fn idm_opcode_reaches_the_firmware() {
        let l = lun(1 << 20);
        // A mutex read of the count group: one block whose first two bytes count records.
        let mut cdb = [0u8; 16];
        cdb[0] = 0xF0;
        cdb[1] = 0x01;
        cdb[13] = 1;
        cdb[14] = 0xFF;
        let (a, d) = run(&l, &cdb, &[]);
        assert_eq!(a, Answer::good());
        assert_eq!(&d[..2], &[0, 0]);
    }

    #[test]
    fn file_backing_persists() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sim0.img");
        {
            let l = Lun {
                disk: Arc::new(Disk::file(&p, 1 << 20).unwrap()),
                ..lun(0)
            };
            let (a, _) = run(&l, &[0x2A, 0, 0, 0, 0, 5, 0, 0, 1, 0], &[0xAB; 512]);
            assert_eq!(a, Answer::good());
            assert_eq!(
                run(&l, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).0,
                Answer::good()
            );
        }
        let l = Lun {
            disk: Arc::new(Disk::file(&p, 1 << 20).unwrap()),
            ..lun(0)
        };
        assert_eq!(l.disk.blocks(), 2048);
        let (_, d) = run(&l, &[0x28, 0, 0, 0, 0, 5, 0, 0, 1, 0], &[]);
        assert_eq!(d, vec![0xAB; 512]);
    }

    #[test]
    fn absent_lun_answers() {
        let mut d = Vec::new();
        assert_eq!(absent_lun(&[0x12, 0, 0, 0, 36, 0], &mut d), Answer::good());
        assert_eq!(d[0], 0x7F);
        let a = absent_lun(&[0x00, 0, 0, 0, 0, 0], &mut d);
        assert_eq!(sense(&a), Sense::new(5, 0x25, 0));
    }
}
