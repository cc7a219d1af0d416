//! SCSI status bytes and sense data (descriptor `0x72/0x73` and fixed `0x70/0x71`).

/// A SCSI status byte (SAM). The sg driver also reports it shifted right by one as
/// `masked_status`; [`ScsiStatus::from_masked`] undoes that.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ScsiStatus(pub u8);

impl ScsiStatus {
    /// GOOD.
    pub const GOOD: ScsiStatus = ScsiStatus(0x00);
    /// CHECK CONDITION: sense data says why.
    pub const CHECK_CONDITION: ScsiStatus = ScsiStatus(0x02);
    /// CONDITION MET.
    pub const CONDITION_MET: ScsiStatus = ScsiStatus(0x04);
    /// BUSY.
    pub const BUSY: ScsiStatus = ScsiStatus(0x08);
    /// RESERVATION CONFLICT.
    pub const RESERVATION_CONFLICT: ScsiStatus = ScsiStatus(0x18);
    /// COMMAND TERMINATED (obsolete in SAM, used by IDM firmware).
    pub const COMMAND_TERMINATED: ScsiStatus = ScsiStatus(0x22);
    /// TASK SET FULL.
    pub const TASK_SET_FULL: ScsiStatus = ScsiStatus(0x28);

    /// The status from sg's `masked_status` (status >> 1).
    pub fn from_masked(masked: u8) -> ScsiStatus {
        ScsiStatus((masked & 0x7F) << 1)
    }

    /// sg's `masked_status` for this status.
    pub fn masked(self) -> u8 {
        (self.0 >> 1) & 0x7F
    }
}

/// Which sense data format to build.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SenseFormat {
    /// Descriptor format, response code `0x72` (8 bytes, no descriptors).
    Descriptor,
    /// Fixed format, response code `0x70` (18 bytes).
    Fixed,
}

/// The three numbers of sense data that say what went wrong.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Sense {
    /// Sense key (4 bits).
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

impl Sense {
    /// ILLEGAL REQUEST.
    pub const KEY_ILLEGAL_REQUEST: u8 = 0x5;
    /// DATA PROTECT (used by IDM firmware for table limits).
    pub const KEY_DATA_PROTECT: u8 = 0x7;
    /// ABORTED COMMAND.
    pub const KEY_ABORTED_COMMAND: u8 = 0xB;

    /// A sense triple.
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense { key, asc, ascq }
    }

    /// Parses sense bytes in descriptor (`0x72`, `0x73`) or fixed (`0x70`, `0x71`)
    /// format. Returns `None` for empty, short or unknown-format sense; never panics.
    pub fn parse(bytes: &[u8]) -> Option<Sense> {
        let code = bytes.first()? & 0x7F;
        match code {
            0x72 | 0x73 => {
                if bytes.len() < 4 {
                    return None;
                }
                Some(Sense::new(bytes[1] & 0x0F, bytes[2], bytes[3]))
            }
            0x70 | 0x71 => {
                if bytes.len() < 3 {
                    return None;
                }
                let key = bytes[2] & 0x0F;
                // ASC/ASCQ live at 12/13 when the additional length covers them.
                let asc = bytes.get(12).copied().unwrap_or(0);
                let ascq = bytes.get(13).copied().unwrap_or(0);
                Some(Sense::new(key, asc, ascq))
            }
            _ => None,
        }
    }

    /// Builds sense bytes in the given format.
    pub fn to_buf(self, format: SenseFormat) -> SenseBuf {
        let mut b = SenseBuf::default();
        match format {
            SenseFormat::Descriptor => {
                b.bytes[0] = 0x72;
                b.bytes[1] = self.key & 0x0F;
                b.bytes[2] = self.asc;
                b.bytes[3] = self.ascq;
                b.len = 8;
            }
            SenseFormat::Fixed => {
                b.bytes[0] = 0x70;
                b.bytes[2] = self.key & 0x0F;
                b.bytes[7] = 10; // additional sense length
                b.bytes[12] = self.asc;
                b.bytes[13] = self.ascq;
                b.len = 18;
            }
        }
        b
    }
}

/// Sense bytes in a fixed-size buffer (no allocation per command).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SenseBuf {
    bytes: [u8; SenseBuf::CAPACITY],
    len: u8,
}

impl Default for SenseBuf {
    fn default() -> Self {
        SenseBuf {
            bytes: [0; SenseBuf::CAPACITY],
            len: 0,
        }
    }
}

impl SenseBuf {
    /// The most sense bytes kept (SPC allows up to 252; IDM answers use 8 or 18).
    pub const CAPACITY: usize = 32;

    /// Copies up to [`Self::CAPACITY`] bytes of sense.
    pub fn from_slice(s: &[u8]) -> SenseBuf {
        let n = s.len().min(Self::CAPACITY);
        let mut b = SenseBuf::default();
        b.bytes[..n].copy_from_slice(&s[..n]);
        b.len = n as u8;
        b
    }

    /// The sense bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Whether there are no sense bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_status() {
        for s in [0x00u8, 0x02, 0x08, 0x18, 0x22, 0x28] {
            assert_eq!(
                ScsiStatus::from_masked(ScsiStatus(s).masked()),
                ScsiStatus(s)
            );
        }
        assert_eq!(ScsiStatus::RESERVATION_CONFLICT.masked(), 0x0C);
    }

    #[test]
    fn both_formats_round_trip() {
        let s = Sense::new(7, 0x40, 0);
        for f in [SenseFormat::Descriptor, SenseFormat::Fixed] {
            assert_eq!(Sense::parse(s.to_buf(f).as_slice()), Some(s));
        }
        // Real fixed sense from a scsi_debug disk answering 0xF0: key 5, ASC 0x20.
        let fixed = [
            0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x20, 0x00, 0, 0, 0, 0,
        ];
        assert_eq!(Sense::parse(&fixed), Some(Sense::new(5, 0x20, 0)));
        // Deferred descriptor (0x73) and a short fixed one.
        assert_eq!(
            Sense::parse(&[0x73, 0x07, 0x41, 0x00]),
            Some(Sense::new(7, 0x41, 0))
        );
        assert_eq!(Sense::parse(&[0xF0, 0, 0x07]), Some(Sense::new(7, 0, 0)));
        assert_eq!(Sense::parse(&[]), None);
        assert_eq!(Sense::parse(&[0x72, 1]), None);
        assert_eq!(Sense::parse(&[0x12, 1, 2, 3]), None);
    }
}
