//! Small enums of the IDM protocol: lock mode, record class, mutex op, control byte, state.

use std::fmt;

/// The mode a host asks for in the lock API (IDM.md §5: EX → class 0, SH → class 2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Mode {
    /// Exclusive: one holder.
    Exclusive,
    /// Shared: any number of shared holders, no exclusive one.
    Shared,
}

impl Mode {
    /// The record class that carries this mode on the wire.
    pub fn class(self) -> Class {
        match self {
            Mode::Exclusive => Class::Exclusive,
            Mode::Shared => Class::SharedProtectedRead,
        }
    }

    /// Whether two holders in these modes may hold one lock at the same time.
    pub fn compatible(self, other: Mode) -> bool {
        self == Mode::Shared && other == Mode::Shared
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Exclusive => "EX",
            Mode::Shared => "SH",
        })
    }
}

/// The class field of a mutex record (IDM.md §5).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum Class {
    /// 0: exclusive.
    Exclusive = 0,
    /// 1: protected write (unused by hosts; the firmware model treats it as exclusive).
    ProtectedWrite = 1,
    /// 2: shared protected read.
    SharedProtectedRead = 2,
}

impl Class {
    /// Decodes the record's u64 class field.
    pub fn from_u64(v: u64) -> Option<Class> {
        match v {
            0 => Some(Class::Exclusive),
            1 => Some(Class::ProtectedWrite),
            2 => Some(Class::SharedProtectedRead),
            _ => None,
        }
    }

    /// Whether this class may share a mutex with other members of the same class.
    pub fn is_shared(self) -> bool {
        self == Class::SharedProtectedRead
    }

    /// The API mode this class stands for (protected write counts as exclusive).
    pub fn mode(self) -> Mode {
        if self.is_shared() {
            Mode::Shared
        } else {
            Mode::Exclusive
        }
    }
}

/// The mutex op carried in the upper nibble of CDB byte 1 of a mutex write (IDM.md §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum MutexOp {
    /// 0x0: normal (unused by hosts).
    Normal = 0,
    /// 0x1: init (unused by hosts).
    Init = 1,
    /// 0x2: try to acquire.
    Trylock = 2,
    /// 0x3: blocking lock (unused by hosts).
    Lock = 3,
    /// 0x4: release membership.
    Unlock = 4,
    /// 0x5: renew membership, or change its class.
    Refresh = 5,
    /// 0x6: take over from expired members.
    Break = 6,
    /// 0x7: free the table entry.
    Destroy = 7,
}

impl MutexOp {
    /// All ops, in numeric order.
    pub const ALL: [MutexOp; 8] = [
        MutexOp::Normal,
        MutexOp::Init,
        MutexOp::Trylock,
        MutexOp::Lock,
        MutexOp::Unlock,
        MutexOp::Refresh,
        MutexOp::Break,
        MutexOp::Destroy,
    ];

    /// Decodes a 4-bit op.
    pub fn from_nibble(v: u8) -> Option<MutexOp> {
        Self::ALL.get(v as usize).copied()
    }

    /// A lower-case name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            MutexOp::Normal => "normal",
            MutexOp::Init => "init",
            MutexOp::Trylock => "trylock",
            MutexOp::Lock => "lock",
            MutexOp::Unlock => "unlock",
            MutexOp::Refresh => "refresh",
            MutexOp::Break => "break",
            MutexOp::Destroy => "destroy",
        }
    }
}

/// The resource-version control byte (wire byte 32 of a record, IDM.md §5).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum ControlByte {
    /// 0: do not update the stored LVB.
    NoUpdate = 0,
    /// 1: update; the value is not valid (what the old host code sent with unlock).
    UpdateNotValid = 1,
    /// 2: update; the value is valid.
    UpdateValid = 2,
    /// 3: invalid.
    Invalid = 3,
}

impl ControlByte {
    /// Decodes the control byte; `None` for values other than 0..=3.
    pub fn from_u8(v: u8) -> Option<ControlByte> {
        match v {
            0 => Some(ControlByte::NoUpdate),
            1 => Some(ControlByte::UpdateNotValid),
            2 => Some(ControlByte::UpdateValid),
            3 => Some(ControlByte::Invalid),
            _ => None,
        }
    }

    /// Whether a write carrying this byte stores the LVB on the drive.
    pub fn updates(self) -> bool {
        matches!(self, ControlByte::UpdateNotValid | ControlByte::UpdateValid)
    }
}

/// The state field of a record read back from a drive (IDM.md §5).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MutexState {
    /// 0: uninitialised (also what zero-filled records past the table's end hold).
    Uninit,
    /// 0x101: locked by this record's host.
    Locked,
    /// 0x102: unlocked (the entry stays with its LVB).
    Unlocked,
    /// 0x103: locked by several hosts in shared class.
    MultipleLocked,
    /// 0x104: this member's countdown ran out.
    Timeout,
    /// 0xDEAD: dead.
    Dead,
    /// Any other value a drive returned.
    Other(u32),
}

impl MutexState {
    /// Decodes the state field (the firmware keeps 32 bits of it).
    pub fn from_u64(v: u64) -> MutexState {
        match v as u32 {
            0 => MutexState::Uninit,
            0x101 => MutexState::Locked,
            0x102 => MutexState::Unlocked,
            0x103 => MutexState::MultipleLocked,
            0x104 => MutexState::Timeout,
            0xDEAD => MutexState::Dead,
            other => MutexState::Other(other),
        }
    }

    /// The wire value.
    pub fn to_u64(self) -> u64 {
        match self {
            MutexState::Uninit => 0,
            MutexState::Locked => 0x101,
            MutexState::Unlocked => 0x102,
            MutexState::MultipleLocked => 0x103,
            MutexState::Timeout => 0x104,
            MutexState::Dead => 0xDEAD,
            MutexState::Other(v) => v as u64,
        }
    }

    /// Whether the record's host counts as a holder (locked or multiple locked).
    pub fn is_held(self) -> bool {
        matches!(self, MutexState::Locked | MutexState::MultipleLocked)
    }
}

impl fmt::Display for MutexState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MutexState::Uninit => f.write_str("uninit"),
            MutexState::Locked => f.write_str("locked"),
            MutexState::Unlocked => f.write_str("unlocked"),
            MutexState::MultipleLocked => f.write_str("multiple-locked"),
            MutexState::Timeout => f.write_str("timeout"),
            MutexState::Dead => f.write_str("dead"),
            MutexState::Other(v) => write!(f, "state-{v:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_nibbles() {
        for (i, op) in MutexOp::ALL.iter().enumerate() {
            assert_eq!(*op as u8, i as u8);
            assert_eq!(MutexOp::from_nibble(i as u8), Some(*op));
        }
        assert_eq!(MutexOp::from_nibble(8), None);
    }

    #[test]
    fn mode_class_mapping() {
        assert_eq!(Mode::Exclusive.class() as u8, 0);
        assert_eq!(Mode::Shared.class() as u8, 2);
        assert_eq!(Class::from_u64(1).unwrap().mode(), Mode::Exclusive);
        assert!(Mode::Shared.compatible(Mode::Shared));
        assert!(!Mode::Shared.compatible(Mode::Exclusive));
        assert!(!Mode::Exclusive.compatible(Mode::Exclusive));
    }

    #[test]
    fn states() {
        for s in [0u64, 0x101, 0x102, 0x103, 0x104, 0xDEAD, 0x77] {
            assert_eq!(MutexState::from_u64(s).to_u64(), s);
        }
        // The firmware keeps 32 bits.
        assert_eq!(
            MutexState::from_u64(0xFFFF_FFFF_0000_0101),
            MutexState::Locked
        );
    }
}
