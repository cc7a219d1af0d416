//! The IDM firmware model: one simulated drive as a pure, deterministic state machine.
//!
//! `now_ms` (the drive's own clock, ms) is passed in; there are no threads and no
//! I/O. The simulator server and the deterministic simulation both drive this.
//!
//! SKELETON: the API is fixed; the behaviour of IDM.md §6 is being filled in.

use crate::codec::{ScsiStatus, Sense, SenseBuf, SenseFormat};

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
}

impl Firmware {
    /// A drive with an empty table.
    pub fn new(cfg: FirmwareConfig) -> Firmware {
        Firmware { cfg }
    }

    /// The configuration this drive was built with.
    pub fn config(&self) -> &FirmwareConfig {
        &self.cfg
    }

    /// Executes one command received at drive time `now_ms`: `cdb` plus `data_out`;
    /// data-in (if any) replaces the contents of `data_in`. Never panics.
    pub fn execute(
        &mut self,
        now_ms: u64,
        cdb: &[u8],
        data_out: &[u8],
        data_in: &mut Vec<u8>,
    ) -> ScsiAnswer {
        let _ = (now_ms, cdb, data_out);
        data_in.clear();
        ScsiAnswer {
            status: ScsiStatus::CHECK_CONDITION,
            sense: Sense::new(Sense::KEY_ILLEGAL_REQUEST, 0x20, 0).to_buf(self.cfg.sense_format),
        }
    }

    /// Loses the whole table, as a power cycle of a real drive does.
    pub fn power_cycle(&mut self) {}

    /// Records (mutex, host pairs) in the table now.
    pub fn record_count(&self) -> usize {
        0
    }
}
