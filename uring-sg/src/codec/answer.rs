//! One error type for a drive's answer, decoded from SCSI status + sense or from
//! NVMe status (IDM.md §4, §6).
//!
//! Decoding is two steps: the transport's raw answer becomes a transport-neutral
//! [`Condition`]; the condition, read in the context of the command that was sent
//! ([`CommandKind`]), becomes `Ok(())` or a [`DriveError`]. The same status means
//! different things for different ops (RESERVATION CONFLICT is "held by another
//! host" for trylock but "our membership expired" for refresh), so the context is
//! part of the decode, never guessed later.

use super::sense::{ScsiStatus, Sense};
use super::types::MutexOp;

/// What kind of command an answer is for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CommandKind {
    /// A mutex write with this op.
    Mutex(MutexOp),
    /// A mutex read of table records.
    ReadTable,
    /// A mutex read of the record count.
    ReadCount,
    /// INQUIRY (version page).
    Inquiry,
}

/// A drive's answer with the transport taken out: what the firmware said.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Condition {
    /// GOOD / NVMe success.
    Good,
    /// BUSY / NVMe 0xCC.
    Busy,
    /// RESERVATION CONFLICT / NVMe 0xCA.
    ReservationConflict,
    /// COMMAND TERMINATED / NVMe 0xCB.
    CommandTerminated,
    /// Invalid opcode: the device is not an IDM drive (or the IDM op is unknown).
    InvalidOpcode,
    /// Mutex or group not found / LBA out of range / NVMe 0xC9.
    NotFound,
    /// The drive's mutex table is full.
    TableFull,
    /// The drive's host table is full.
    HostTableFull,
    /// This mutex's host list is full.
    MutexHostListFull,
    /// Any other CHECK CONDITION.
    Check(Sense),
    /// NVMe command-specific or generic failure without a closer meaning.
    Nvme {
        /// Status code type.
        sct: u8,
        /// Status code.
        sc: u8,
    },
    /// A SCSI status the IDM protocol does not use.
    OtherStatus(u8),
}

/// Why one command to one drive did not succeed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DriveError {
    /// The drive is busy, or the mutex is held by another host (trylock).
    #[error("busy")]
    Busy,
    /// Held by another live host (RESERVATION CONFLICT on trylock or break).
    #[error("held by another live host")]
    HeldByOther,
    /// Our membership expired (RESERVATION CONFLICT on refresh).
    #[error("our membership expired")]
    Expired,
    /// Unlock of a mutex this host is not a member of (RESERVATION CONFLICT on unlock).
    #[error("not held by this host")]
    NotHeld,
    /// Trylock by a host that is already a member (COMMAND TERMINATED on trylock).
    #[error("already held by this host")]
    AlreadyHeld,
    /// Class change refused because other members exist (COMMAND TERMINATED on refresh).
    #[error("class change refused: other members")]
    ConvertRefused,
    /// Unlock with a class other than the member's (COMMAND TERMINATED on unlock).
    #[error("wrong class")]
    WrongClass,
    /// Invalid opcode: the device is not an IDM drive.
    #[error("invalid opcode: not an IDM drive")]
    InvalidOpcode,
    /// The mutex (or group) is not in the drive's table.
    #[error("mutex not found")]
    NotFound,
    /// The drive's mutex table is full.
    #[error("mutex table full")]
    TableFull,
    /// The drive's host table is full.
    #[error("host table full")]
    HostTableFull,
    /// This mutex's host list is full.
    #[error("this mutex's host list is full")]
    MutexHostListFull,
    /// Another CHECK CONDITION.
    #[error("check condition: key {:#x} asc {:#04x} ascq {:#04x}", .0.key, .0.asc, .0.ascq)]
    Check(Sense),
    /// An NVMe status without a closer meaning.
    #[error("NVMe status: sct {sct} sc {sc:#04x}")]
    Nvme {
        /// Status code type.
        sct: u8,
        /// Status code.
        sc: u8,
    },
    /// A status the protocol does not expect for this command.
    #[error("unexpected SCSI status {0:#04x}")]
    Status(u8),
    /// The transport failed: errno of the failure (connection lost, no device, ...).
    #[error("I/O error (errno {0})")]
    Io(i32),
    /// The transport delivered an answer that is not well formed (short data, bad fields).
    #[error("malformed answer from drive")]
    Malformed,
    /// No answer within the command's timeout.
    #[error("timed out")]
    Timeout,
}

impl DriveError {
    /// The errno this error is reported with (IDM.md §6), positive.
    pub fn errno(self) -> i32 {
        use DriveError::*;
        match self {
            Busy | HeldByOther => libc_errno::EBUSY,
            Expired => libc_errno::ETIME,
            NotHeld | NotFound => libc_errno::ENOENT,
            AlreadyHeld => libc_errno::EAGAIN,
            ConvertRefused => libc_errno::EPERM,
            WrongClass | InvalidOpcode | Check(_) | Nvme { .. } => libc_errno::EINVAL,
            TableFull | HostTableFull | MutexHostListFull => libc_errno::ENOMEM,
            Status(_) | Io(_) | Malformed | Timeout => libc_errno::EIO,
        }
    }

    /// Whether the failure says nothing about the mutex (transport-level): the drive
    /// may or may not have executed the command.
    pub fn is_io(self) -> bool {
        matches!(
            self,
            DriveError::Io(_) | DriveError::Timeout | DriveError::Malformed | DriveError::Status(_)
        )
    }
}

/// The errno values used here (Linux x86-64 / generic), so the codec needs no libc.
pub mod libc_errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Try again.
    pub const EAGAIN: i32 = 11;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Timer expired.
    pub const ETIME: i32 = 62;
    /// Connection reset.
    pub const ECONNRESET: i32 = 104;
    /// Connection timed out.
    pub const ETIMEDOUT: i32 = 110;
}

impl Condition {
    /// The condition of a SCSI answer: status byte plus sense (either format).
    pub fn from_scsi(status: ScsiStatus, sense: &[u8]) -> Condition {
        match status {
            ScsiStatus::GOOD | ScsiStatus::CONDITION_MET => Condition::Good,
            ScsiStatus::BUSY => Condition::Busy,
            ScsiStatus::RESERVATION_CONFLICT => Condition::ReservationConflict,
            ScsiStatus::COMMAND_TERMINATED => Condition::CommandTerminated,
            ScsiStatus::CHECK_CONDITION => {
                let s = Sense::parse(sense).unwrap_or(Sense::new(0, 0, 0));
                match (s.key, s.asc) {
                    (Sense::KEY_ILLEGAL_REQUEST, 0x20) => Condition::InvalidOpcode,
                    (Sense::KEY_DATA_PROTECT, 0x31) => Condition::InvalidOpcode,
                    (Sense::KEY_ILLEGAL_REQUEST, 0x21) => Condition::NotFound,
                    (Sense::KEY_DATA_PROTECT, 0x40) => Condition::TableFull,
                    (Sense::KEY_DATA_PROTECT, 0x41) => Condition::HostTableFull,
                    (Sense::KEY_DATA_PROTECT, 0x42) => Condition::MutexHostListFull,
                    _ => Condition::Check(s),
                }
            }
            ScsiStatus(other) => Condition::OtherStatus(other),
        }
    }

    /// The condition of an NVMe completion whose `res` is non-negative: the NVMe
    /// status, status code type in bits 8..10 and status code in bits 0..7 (the
    /// do-not-retry and more bits are ignored). IDM.md §4.
    pub fn from_nvme_status(status: u16) -> Condition {
        let sct = ((status >> 8) & 0x7) as u8;
        let sc = (status & 0xFF) as u8;
        match (sct, sc) {
            (0, 0) => Condition::Good,
            (0, 0x01) => Condition::InvalidOpcode,
            (1, 0xC5) => Condition::InvalidOpcode,
            (1, 0xC6) => Condition::TableFull,
            (1, 0xC7) => Condition::HostTableFull,
            (1, 0xC8) => Condition::MutexHostListFull,
            (1, 0xC9) => Condition::NotFound,
            (1, 0xCA) => Condition::ReservationConflict,
            (1, 0xCB) => Condition::CommandTerminated,
            (1, 0xCC) => Condition::Busy,
            (sct, sc) => Condition::Nvme { sct, sc },
        }
    }

    /// Reads this condition as the answer to `kind`.
    pub fn into_result(self, kind: CommandKind) -> Result<(), DriveError> {
        use CommandKind::Mutex;
        use MutexOp::*;
        Err(match self {
            Condition::Good => return Ok(()),
            Condition::Busy => DriveError::Busy,
            Condition::ReservationConflict => match kind {
                Mutex(Trylock | Lock | Break | Destroy) => DriveError::HeldByOther,
                Mutex(Refresh) => DriveError::Expired,
                Mutex(Unlock) => DriveError::NotHeld,
                _ => DriveError::Status(ScsiStatus::RESERVATION_CONFLICT.0),
            },
            Condition::CommandTerminated => match kind {
                Mutex(Trylock | Lock | Break) => DriveError::AlreadyHeld,
                Mutex(Refresh) => DriveError::ConvertRefused,
                Mutex(Unlock) => DriveError::WrongClass,
                _ => DriveError::Status(ScsiStatus::COMMAND_TERMINATED.0),
            },
            Condition::InvalidOpcode => DriveError::InvalidOpcode,
            Condition::NotFound => DriveError::NotFound,
            Condition::TableFull => DriveError::TableFull,
            Condition::HostTableFull => DriveError::HostTableFull,
            Condition::MutexHostListFull => DriveError::MutexHostListFull,
            Condition::Check(s) => DriveError::Check(s),
            Condition::Nvme { sct, sc } => DriveError::Nvme { sct, sc },
            Condition::OtherStatus(s) => DriveError::Status(s),
        })
    }
}

impl DriveError {
    /// Decodes a SCSI answer to `kind`.
    pub fn from_scsi(
        kind: CommandKind,
        status: ScsiStatus,
        sense: &[u8],
    ) -> Result<(), DriveError> {
        Condition::from_scsi(status, sense).into_result(kind)
    }

    /// Decodes an NVMe `uring_cmd` completion `res` for `kind`: negative is a
    /// transport errno, zero success, positive the NVMe status.
    pub fn from_nvme(kind: CommandKind, res: i32) -> Result<(), DriveError> {
        if res < 0 {
            return Err(DriveError::Io(-res));
        }
        Condition::from_nvme_status((res & 0xFFFF) as u16).into_result(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::libc_errno::*;
    use super::*;
    use crate::codec::sense::SenseFormat;

    const TRY: CommandKind = CommandKind::Mutex(MutexOp::Trylock);
    const REF: CommandKind = CommandKind::Mutex(MutexOp::Refresh);
    const UNL: CommandKind = CommandKind::Mutex(MutexOp::Unlock);

    fn both(key: u8, asc: u8) -> [Vec<u8>; 2] {
        let s = Sense::new(key, asc, 0);
        [
            s.to_buf(SenseFormat::Descriptor).as_slice().to_vec(),
            s.to_buf(SenseFormat::Fixed).as_slice().to_vec(),
        ]
    }

    /// Every row of IDM.md §6, per op column, with its errno.
    #[test]
    fn status_rows() {
        let rows: &[(ScsiStatus, CommandKind, Result<(), DriveError>, i32)] = &[
            (ScsiStatus::GOOD, TRY, Ok(()), 0),
            (ScsiStatus::GOOD, REF, Ok(()), 0),
            (ScsiStatus::GOOD, UNL, Ok(()), 0),
            (
                ScsiStatus::RESERVATION_CONFLICT,
                TRY,
                Err(DriveError::HeldByOther),
                EBUSY,
            ),
            (
                ScsiStatus::RESERVATION_CONFLICT,
                REF,
                Err(DriveError::Expired),
                ETIME,
            ),
            (
                ScsiStatus::RESERVATION_CONFLICT,
                UNL,
                Err(DriveError::NotHeld),
                ENOENT,
            ),
            (ScsiStatus::BUSY, TRY, Err(DriveError::Busy), EBUSY),
            (ScsiStatus::BUSY, REF, Err(DriveError::Busy), EBUSY),
            (ScsiStatus::BUSY, UNL, Err(DriveError::Busy), EBUSY),
            (
                ScsiStatus::COMMAND_TERMINATED,
                TRY,
                Err(DriveError::AlreadyHeld),
                EAGAIN,
            ),
            (
                ScsiStatus::COMMAND_TERMINATED,
                REF,
                Err(DriveError::ConvertRefused),
                EPERM,
            ),
            (
                ScsiStatus::COMMAND_TERMINATED,
                UNL,
                Err(DriveError::WrongClass),
                EINVAL,
            ),
        ];
        for (status, kind, want, errno) in rows {
            let got = DriveError::from_scsi(*kind, *status, &[]);
            assert_eq!(got, *want, "{status:?} {kind:?}");
            assert_eq!(got.err().map_or(0, |e| e.errno()), *errno);
        }
    }

    #[test]
    fn check_condition_rows_both_formats() {
        let rows: &[(u8, u8, DriveError, i32)] = &[
            (5, 0x20, DriveError::InvalidOpcode, EINVAL),
            (7, 0x31, DriveError::InvalidOpcode, EINVAL),
            (5, 0x21, DriveError::NotFound, ENOENT),
            (7, 0x40, DriveError::TableFull, ENOMEM),
            (7, 0x41, DriveError::HostTableFull, ENOMEM),
            (7, 0x42, DriveError::MutexHostListFull, ENOMEM),
            (5, 0x24, DriveError::Check(Sense::new(5, 0x24, 0)), EINVAL),
        ];
        for (key, asc, want, errno) in rows {
            for sense in both(*key, *asc) {
                let got = DriveError::from_scsi(TRY, ScsiStatus::CHECK_CONDITION, &sense);
                assert_eq!(got, Err(*want), "key {key} asc {asc:#x} sense {sense:02x?}");
                assert_eq!(want.errno(), *errno);
            }
        }
        // CHECK without usable sense is still an error, never a success.
        assert_eq!(
            DriveError::from_scsi(TRY, ScsiStatus::CHECK_CONDITION, &[]),
            Err(DriveError::Check(Sense::new(0, 0, 0)))
        );
    }

    #[test]
    fn transport_failures_are_eio() {
        for e in [
            DriveError::Io(ECONNRESET),
            DriveError::Timeout,
            DriveError::Status(0x28),
        ] {
            assert_eq!(e.errno(), EIO);
            assert!(e.is_io());
        }
        assert_eq!(
            DriveError::from_scsi(TRY, ScsiStatus::TASK_SET_FULL, &[]),
            Err(DriveError::Status(0x28))
        );
    }

    /// IDM.md §4: every NVMe vendor status, and the generic invalid opcode seen on QEMU.
    #[test]
    fn nvme_rows() {
        let st = |sc: u16| 0x100 | sc as i32;
        let rows: &[(i32, CommandKind, Result<(), DriveError>)] = &[
            (0, TRY, Ok(())),
            (0x4001, TRY, Err(DriveError::InvalidOpcode)),
            (st(0xC0), TRY, Err(DriveError::Nvme { sct: 1, sc: 0xC0 })),
            (st(0xC4), TRY, Err(DriveError::Nvme { sct: 1, sc: 0xC4 })),
            (st(0xC5), TRY, Err(DriveError::InvalidOpcode)),
            (st(0xC6), TRY, Err(DriveError::TableFull)),
            (st(0xC7), TRY, Err(DriveError::HostTableFull)),
            (st(0xC8), TRY, Err(DriveError::MutexHostListFull)),
            (st(0xC9), TRY, Err(DriveError::NotFound)),
            (st(0xCA), TRY, Err(DriveError::HeldByOther)),
            (st(0xCA), REF, Err(DriveError::Expired)),
            (st(0xCB), TRY, Err(DriveError::AlreadyHeld)),
            (st(0xCB), UNL, Err(DriveError::WrongClass)),
            (st(0xCC), TRY, Err(DriveError::Busy)),
            (-5, TRY, Err(DriveError::Io(5))),
        ];
        for (res, kind, want) in rows {
            assert_eq!(DriveError::from_nvme(*kind, *res), *want, "res {res:#x}");
        }
    }
}
