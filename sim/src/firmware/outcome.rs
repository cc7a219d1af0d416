//! What the firmware decided about one command, before it becomes bytes.
//!
//! [`Outcome`] is the typed answer of [`super::Firmware::apply`]; [`super::scsi`]
//! turns it into status + sense and [`super::nvme`] into an NVMe status. Several
//! outcomes share one wire answer (RESERVATION CONFLICT means "held by another live
//! host" for trylock, "expired" for refresh and "not held" for unlock, IDM.md §6):
//! the host tells them apart by the op it sent, which [`Outcome::drive_error`]
//! mirrors.

use uring_sg::codec::{DriveError, Sense};

/// The firmware's decision about one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// GOOD: granted / renewed / converted / released / broken / destroyed, or a read
    /// that returned its data.
    Granted,
    /// BUSY: a conflicting member exists but every conflicting one is expired
    /// (trylock: the host should break), a break with a live other member, or a
    /// destroy with a live member.
    Busy,
    /// RESERVATION CONFLICT on trylock: a live member holds a conflicting class.
    HeldByOther,
    /// COMMAND TERMINATED on trylock: this host is already a live member.
    AlreadyHeld,
    /// RESERVATION CONFLICT on refresh: the host is not a member, or its membership
    /// expired.
    Expired,
    /// RESERVATION CONFLICT on unlock: the host is not a member.
    NotHeld,
    /// COMMAND TERMINATED on refresh: promotion SH → EX while other members exist.
    ConvertRefused,
    /// COMMAND TERMINATED on unlock: the record's class is not the member's.
    WrongClass,
    /// CHECK 5/0x21: the mutex is not in the table.
    NotFound,
    /// CHECK 7/0x40: the table holds `capacity` records already.
    TableFull,
    /// CHECK 7/0x41: the host table is full. This model has no separate host table
    /// and never decides this; the variant exists so fault injection and the
    /// mapping tests can produce the answer.
    HostTableFull,
    /// CHECK 7/0x42: the mutex has `max_hosts_per_mutex` members already.
    MutexHostListFull,
    /// CHECK 5/0x20: an opcode the drive does not implement (not an IDM command).
    InvalidOpcode,
    /// An IDM mutex write with an op the drive does not implement (normal, init,
    /// lock, or a nibble above 7): CHECK 5/0x20 in descriptor sense, 7/0x31 in fixed
    /// sense (IDM.md §6), NVMe 0xC5.
    InvalidMutexOp,
    /// CHECK 5/0x24: a field of the CDB is invalid (short CDB, transfer length,
    /// unknown group, unsupported page).
    InvalidField,
    /// CHECK 5/0x26: the data-out is not one well-formed 512-byte record.
    InvalidParameter,
}

impl Outcome {
    /// Every outcome, for table-driven tests and fault injection.
    pub const ALL: [Outcome; 16] = [
        Outcome::Granted,
        Outcome::Busy,
        Outcome::HeldByOther,
        Outcome::AlreadyHeld,
        Outcome::Expired,
        Outcome::NotHeld,
        Outcome::ConvertRefused,
        Outcome::WrongClass,
        Outcome::NotFound,
        Outcome::TableFull,
        Outcome::HostTableFull,
        Outcome::MutexHostListFull,
        Outcome::InvalidOpcode,
        Outcome::InvalidMutexOp,
        Outcome::InvalidField,
        Outcome::InvalidParameter,
    ];

    /// Whether the command succeeded.
    pub fn is_good(self) -> bool {
        self == Outcome::Granted
    }

    /// The sense of a CHECK CONDITION outcome (descriptor-format numbers), `None` for
    /// outcomes answered with another status.
    pub fn check_sense(self) -> Option<Sense> {
        use Sense as S;
        let (key, asc) = match self {
            Outcome::NotFound => (S::KEY_ILLEGAL_REQUEST, 0x21),
            Outcome::TableFull => (S::KEY_DATA_PROTECT, 0x40),
            Outcome::HostTableFull => (S::KEY_DATA_PROTECT, 0x41),
            Outcome::MutexHostListFull => (S::KEY_DATA_PROTECT, 0x42),
            Outcome::InvalidOpcode | Outcome::InvalidMutexOp => (S::KEY_ILLEGAL_REQUEST, 0x20),
            Outcome::InvalidField => (S::KEY_ILLEGAL_REQUEST, 0x24),
            Outcome::InvalidParameter => (S::KEY_ILLEGAL_REQUEST, 0x26),
            _ => return None,
        };
        Some(S::new(key, asc, 0))
    }

    /// What a SCSI host decodes this outcome into (IDM.md §6), as the codec's
    /// [`DriveError`]; `Ok(())` for [`Outcome::Granted`]. This is the meaning the
    /// wire answer must carry; the firmware tests check that decoding the bytes gives
    /// exactly this. (Over NVMe the mutex outcomes decode the same; invalid field and
    /// invalid parameter become the generic NVMe "invalid field", `DriveError::Nvme`.)
    pub fn drive_error(self) -> Result<(), DriveError> {
        Err(match self {
            Outcome::Granted => return Ok(()),
            Outcome::Busy => DriveError::Busy,
            Outcome::HeldByOther => DriveError::HeldByOther,
            Outcome::AlreadyHeld => DriveError::AlreadyHeld,
            Outcome::Expired => DriveError::Expired,
            Outcome::NotHeld => DriveError::NotHeld,
            Outcome::ConvertRefused => DriveError::ConvertRefused,
            Outcome::WrongClass => DriveError::WrongClass,
            Outcome::NotFound => DriveError::NotFound,
            Outcome::TableFull => DriveError::TableFull,
            Outcome::HostTableFull => DriveError::HostTableFull,
            Outcome::MutexHostListFull => DriveError::MutexHostListFull,
            Outcome::InvalidOpcode | Outcome::InvalidMutexOp => DriveError::InvalidOpcode,
            Outcome::InvalidField => {
                DriveError::Check(Sense::new(Sense::KEY_ILLEGAL_REQUEST, 0x24, 0))
            }
            Outcome::InvalidParameter => {
                DriveError::Check(Sense::new(Sense::KEY_ILLEGAL_REQUEST, 0x26, 0))
            }
        })
    }
}
