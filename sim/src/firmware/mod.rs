//! The IDM firmware model: one simulated drive as a pure, deterministic state machine.
//!
//! `now_ms` (the drive's own clock, ms) is passed in; there are no threads and no
//! I/O. The simulator server and the deterministic simulation both drive this. Give
//! it a non-decreasing `now_ms`; a clock that goes back only makes members look
//! younger (never breaks the class invariants below, which do not depend on time).
//!
//! Faces:
//! - [`Firmware::execute`]: SCSI, CDB + data-out → status + sense + data-in.
//! - [`Firmware::execute_nvme`]: NVMe admin vendor commands → NVMe status.
//! - [`Firmware::apply`]: the typed path (op + [`Record`] → [`Outcome`]) without bytes.
//! - [`Firmware::snapshot`], [`Firmware::members`], [`Firmware::lvb`],
//!   [`Firmware::mutex_count`], [`Firmware::record_count`]: inspection.
//!
//! # Semantics (IDM.md §5–§6, **inferred**; the decisions taken here)
//!
//! A *member* is a (mutex, host) pair with a class, a countdown and the drive time of
//! its last grant or refresh. It is **expired** when `now_ms >= since + countdown`
//! (computed without overflow; countdown `u64::MAX` never expires); an expired member
//! is no holder but stays in the table until broken, unlocked or destroyed. Two
//! classes are compatible only if both are shared (class 2); protected write (1)
//! behaves as exclusive.
//!
//! - **trylock** (unknown mutex): create the entry with the host as its member, or
//!   CHECK 7/0x40 (table full) when the table holds `capacity` records. Known mutex:
//!   the host already a live member → COMMAND TERMINATED (already held); else look at
//!   the *other* members whose class conflicts with the request: any live one →
//!   RESERVATION CONFLICT (held by another live host); only expired ones → BUSY (the
//!   host then breaks); none → granted (an entry with no member, or only compatible
//!   shared members). Granting a new member checks the host list (CHECK 7/0x42 at
//!   `max_hosts_per_mutex`) and the table (CHECK 7/0x40 when the new record would
//!   exceed `capacity`). The host's own expired membership is replaced by the new
//!   grant, not counted as a conflict.
//!
//!   *Why expired conflicting members answer BUSY instead of being ignored:* the
//!   brief's "grant when there is no live member" would make BUSY unreachable for
//!   trylock, and IDM.md §7 needs the host to go through **break** to take over
//!   from an expired holder: that is how the engine learns that the previous holder
//!   may not have stored its LVB (it then returns `u64::MAX`).
//! - **refresh**: unknown mutex → CHECK 5/0x21 (not found: the drive lost its state,
//!   IDM.md §7); not a member, or an expired member → RESERVATION CONFLICT
//!   (expired). Same class → the countdown is renewed (countdown from the record,
//!   time = now). Another class converts: demotion (to shared, or between exclusive
//!   classes) always; promotion shared → exclusive only if the host is the only
//!   member, else COMMAND TERMINATED (convert refused). *Decision:* other **expired**
//!   members also refuse a promotion (IDM.md §6's table: "class change refused while
//!   other members timed out"; §7: "expired members are broken first"). With trylock
//!   above this keeps a strong invariant independent of time: **an exclusive member
//!   is always the only member of its mutex.**
//! - **unlock**: unknown mutex → not found; not a member → RESERVATION CONFLICT (not
//!   held); the member's class differs from the record's → COMMAND TERMINATED (wrong
//!   class). Otherwise the member is removed (also an expired one) and, when the
//!   control byte says update ([`uring_sg::codec::ControlByte::updates`]), the LVB is
//!   stored (byte 7 zero, as the wire cannot carry it). The entry stays, with its
//!   LVB, reading back as one record in state unlocked.
//! - **break**: unknown mutex → not found. Succeeds only if every other member is
//!   expired or was granted with countdown `u64::MAX`; they are removed and the
//!   breaker becomes the only member (class and countdown from the record). A live
//!   other member → BUSY. The LVB is kept.
//! - **destroy**: unknown mutex → not found; any live member (the sender's own
//!   included) → BUSY; otherwise the entry goes, with its expired members and LVB.
//! - **normal, init, lock** and op nibbles 8..15: invalid mutex op (CHECK 5/0x20 in
//!   descriptor sense, 7/0x31 in fixed sense as IDM.md §6 says of fixed-sense drives;
//!   NVMe 0xC5). Opcodes other than `0xF0`/INQUIRY: CHECK 5/0x20.
//! - A mutex write's data-out must be exactly one well-formed 512-byte record (known
//!   class and control byte), else CHECK 5/0x26. A short CDB, a wrong transfer
//!   length, an unknown group or an unsupported INQUIRY page → CHECK 5/0x24.
//! - **Read** group `0x01` of N records: the first `min(N, table)` records in lock-ID
//!   then host-ID order, zero-filled to `N * 512` bytes (N above
//!   [`exec::MAX_READ_RECORDS`] → CHECK 5/0x24). States: `0x104` timeout for an
//!   expired member, `0x103` multiple locked for a live shared member with other live
//!   members, `0x101` locked for other live members, `0x102` unlocked for the one
//!   record of an entry without members. The time field is the drive time of the
//!   member's last grant/refresh (of the entry's last change for an unlocked record).
//!   Group `0xFF`: one 512-byte block, record count as big-endian u16 (saturated).
//! - INQUIRY EVPD `0xC3`: the version page with the major version at byte 96;
//!   EVPD `0x00` lists the pages; standard INQUIRY returns 36 bytes of a disk.
//!
//! The table counts *records*: one per member, one for an entry without members.
//! No path lets it exceed `capacity` (break leaves one member, destroy and unlock
//! never add). This model has no separate host table, so it never answers "host
//! table full" (7/0x41) on its own; [`Outcome::HostTableFull`] still maps to it.

pub mod exec;
pub mod nvme;
pub mod outcome;
pub mod scsi;
pub mod table;
#[cfg(test)]
mod tests;

pub use outcome::Outcome;
pub use table::{Member, MutexEntry, Table};

use uring_sg::codec::{
    HostId, LockId, Lvb, MutexOp, NvmeAdminCmd, Record, ScsiStatus, SenseBuf, SenseFormat,
};

/// How a simulated drive is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareConfig {
    /// Most records (mutex, host pairs) the table holds; IDM.md §5: 3950.
    pub capacity: usize,
    /// Most members (hosts) one mutex may have.
    pub max_hosts_per_mutex: usize,
    /// IDM major version reported on the version page.
    pub version_major: u8,
    /// Sense format of CHECK CONDITION answers.
    pub sense_format: SenseFormat,
}

impl Default for FirmwareConfig {
    fn default() -> Self {
        FirmwareConfig {
            capacity: 3950,
            max_hosts_per_mutex: 64,
            version_major: 3,
            sense_format: SenseFormat::Descriptor,
        }
    }
}

/// A drive's answer to one command: status and sense (data-in goes to the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScsiAnswer {
    /// SCSI status.
    pub status: ScsiStatus,
    /// Sense bytes (empty unless CHECK CONDITION).
    pub sense: SenseBuf,
}

/// One simulated IDM drive.
#[derive(Debug)]
pub struct Firmware {
    cfg: FirmwareConfig,
    table: Table,
}

impl Firmware {
    /// A drive with an empty table.
    pub fn new(cfg: FirmwareConfig) -> Firmware {
        Firmware {
            cfg,
            table: Table::default(),
        }
    }

    /// The configuration this drive was built with.
    pub fn config(&self) -> &FirmwareConfig {
        &self.cfg
    }

    /// Executes one command received at drive time `now_ms`: `cdb` plus `data_out`;
    /// data-in (if any) replaces the contents of `data_in` (left empty on failure).
    /// Never panics.
    pub fn execute(
        &mut self,
        now_ms: u64,
        cdb: &[u8],
        data_out: &[u8],
        data_in: &mut Vec<u8>,
    ) -> ScsiAnswer {
        let outcome = scsi::decide(&mut self.table, &self.cfg, now_ms, cdb, data_out, data_in);
        scsi::answer(outcome, self.cfg.sense_format)
    }

    /// [`Firmware::execute`] for a transport that sends zeros without storing them:
    /// data-in is cut to `limit` bytes, and the zero-filled tail of a table read
    /// (records past the table's end) is not written to `data_in`. Returns the
    /// answer and the data-in length; the bytes past `data_in.len()` up to it are
    /// zeros. A read of 8 MiB from a short table so costs the table's records, not
    /// 8 MiB of zeros. Never panics.
    pub fn execute_sparse(
        &mut self,
        now_ms: u64,
        cdb: &[u8],
        data_out: &[u8],
        limit: usize,
        data_in: &mut Vec<u8>,
    ) -> (ScsiAnswer, usize) {
        let (outcome, len) = scsi::decide_limited(
            &mut self.table,
            &self.cfg,
            now_ms,
            cdb,
            data_out,
            limit,
            false,
            data_in,
        );
        (scsi::answer(outcome, self.cfg.sense_format), len)
    }

    /// Executes one NVMe admin command received at drive time `now_ms`; returns the
    /// NVMe status (0 success, SCT in bits 8..10, SC in bits 0..7; IDM.md §4).
    /// Data-in (if any) replaces the contents of `data_in`. Never panics.
    pub fn execute_nvme(
        &mut self,
        now_ms: u64,
        cmd: &NvmeAdminCmd,
        data_out: &[u8],
        data_in: &mut Vec<u8>,
    ) -> u16 {
        let outcome = nvme::decide(&mut self.table, &self.cfg, now_ms, cmd, data_out, data_in);
        nvme::status_of(outcome)
    }

    /// Applies one mutex op at drive time `now_ms` on the typed path (no bytes). The
    /// record's state field is ignored, as on the wire; its LVB is stored with byte 7
    /// cleared, as the wire would.
    pub fn apply(&mut self, now_ms: u64, op: MutexOp, rec: &Record) -> Outcome {
        exec::apply(&mut self.table, &self.cfg, now_ms, op, rec)
    }

    /// The whole table as a read at `now_ms` returns it: one record per (mutex, host)
    /// pair, one unlocked record per mutex without members.
    pub fn snapshot(&self, now_ms: u64) -> Vec<Record> {
        self.table.records(now_ms).collect()
    }

    /// Mutexes (table entries) in the table now.
    pub fn mutex_count(&self) -> usize {
        self.table.mutex_count()
    }

    /// The members of `lock_id` by host, or `None` if the mutex is not in the table.
    pub fn members(&self, lock_id: &LockId) -> Option<Vec<(HostId, Member)>> {
        self.table
            .get(lock_id)
            .map(|e| e.members.iter().map(|(h, m)| (*h, *m)).collect())
    }

    /// The LVB stored for `lock_id`, or `None` if the mutex is not in the table.
    pub fn lvb(&self, lock_id: &LockId) -> Option<Lvb> {
        self.table.get(lock_id).map(|e| e.lvb)
    }

    /// The table itself (read-only), for inspection.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Loses the whole table, as a power cycle of a real drive does.
    pub fn power_cycle(&mut self) {
        self.table.clear();
    }

    /// Wipes the mutex table (every mutex, member and LVB), as the vendor
    /// context-reset command does (WRITE AND VERIFY(16) to LBA
    /// `0xFF00000000000000`, which LVM2's test suite sends before each test; see
    /// `crate::iscsi::scsi`). The configuration is kept. The table ends as
    /// after [`Firmware::power_cycle`].
    pub fn reset(&mut self) {
        self.table.clear();
    }

    /// Records (mutex, host pairs) in the table now.
    pub fn record_count(&self) -> usize {
        self.table.record_count()
    }
}
