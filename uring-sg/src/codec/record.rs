//! The 512-byte mutex record, the table-count block and the version page (IDM.md §3, §5).
//!
//! Layout of a record (u64 fields big-endian, arrays byte-reversed on the wire):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | state (read) |
//! | 8 | 8 | host time now / last-modified time, ms |
//! | 16 | 8 | countdown, ms |
//! | 24 | 8 | class |
//! | 32 | 8 | resource version: reversed LVB, byte 32 overwritten by the control byte |
//! | 40 | 24 | reserved |
//! | 64 | 64 | lock ID (reversed) |
//! | 128 | 64 | metadata (reversed) |
//! | 192 | 32 | host ID (reversed) |
//! | 224 | 288 | reserved |

use super::ids::{HostId, LockId, Lvb};
use super::types::{Class, ControlByte, MutexState};

/// Size of one mutex record, and of every IDM data transfer unit.
pub const RECORD_LEN: usize = 512;

const OFF_STATE: usize = 0;
const OFF_TIME: usize = 8;
const OFF_COUNTDOWN: usize = 16;
const OFF_CLASS: usize = 24;
const OFF_RES_VER: usize = 32;
const OFF_LOCK_ID: usize = 64;
const OFF_METADATA: usize = 128;
const OFF_HOST_ID: usize = 192;
/// Byte of the version page holding the IDM major version.
pub const VERSION_MAJOR_OFFSET: usize = 96;

/// Why bytes from a drive could not be decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("short buffer: {got} bytes, need {need}")]
    Short {
        /// Bytes available.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The class field holds an unknown value.
    #[error("unknown class {0}")]
    BadClass(u64),
    /// The control byte holds an unknown value.
    #[error("unknown resource-version control byte {0}")]
    BadControl(u8),
}

/// One mutex record, as sent with a mutex write or returned by a mutex read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Record {
    /// State (only meaningful on read; ignored by the drive on write).
    pub state: MutexState,
    /// On write: the host's wall clock, ms since the epoch. On read: last-modified time.
    pub time_ms: u64,
    /// Membership countdown (lease) in ms.
    pub countdown_ms: u64,
    /// Class (EX = 0, SH = 2).
    pub class: Class,
    /// The lock value block; byte 7 is not carried (see [`Lvb`]).
    pub lvb: Lvb,
    /// Resource-version control byte.
    pub control: ControlByte,
    /// Lock (resource) ID.
    pub lock_id: LockId,
    /// Metadata (unused by hosts).
    pub metadata: [u8; 64],
    /// Host ID of the member this record is about.
    pub host_id: HostId,
}

fn put_reversed(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
        *d = *s;
    }
}

fn get_reversed<const N: usize>(src: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (d, s) in out.iter_mut().zip(src[..N].iter().rev()) {
        *d = *s;
    }
    out
}

fn get_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_be_bytes(b)
}

impl Record {
    /// A record for a mutex write from `host` on `lock`, with everything else zero.
    pub fn new(lock_id: LockId, host_id: HostId, class: Class) -> Record {
        Record {
            state: MutexState::Uninit,
            time_ms: 0,
            countdown_ms: 0,
            class,
            lvb: Lvb::default(),
            control: ControlByte::NoUpdate,
            lock_id,
            metadata: [0; 64],
            host_id,
        }
    }

    /// Writes the record's wire form into `out` (all 512 bytes are written).
    pub fn encode_into(&self, out: &mut [u8; RECORD_LEN]) {
        out.fill(0);
        out[OFF_STATE..OFF_STATE + 8].copy_from_slice(&self.state.to_u64().to_be_bytes());
        out[OFF_TIME..OFF_TIME + 8].copy_from_slice(&self.time_ms.to_be_bytes());
        out[OFF_COUNTDOWN..OFF_COUNTDOWN + 8].copy_from_slice(&self.countdown_ms.to_be_bytes());
        out[OFF_CLASS..OFF_CLASS + 8].copy_from_slice(&(self.class as u64).to_be_bytes());
        put_reversed(&mut out[OFF_RES_VER..OFF_RES_VER + 8], &self.lvb.0);
        out[OFF_RES_VER] = self.control as u8;
        put_reversed(&mut out[OFF_LOCK_ID..OFF_LOCK_ID + 64], &self.lock_id.0);
        put_reversed(&mut out[OFF_METADATA..OFF_METADATA + 64], &self.metadata);
        put_reversed(&mut out[OFF_HOST_ID..OFF_HOST_ID + 32], &self.host_id.0);
    }

    /// The record's wire form.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        self.encode_into(&mut out);
        out
    }

    /// Decodes one record from the first 512 bytes of `buf`. The LVB comes back with
    /// byte 7 = 0, since the wire carries the control byte there.
    pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
        if buf.len() < RECORD_LEN {
            return Err(DecodeError::Short {
                got: buf.len(),
                need: RECORD_LEN,
            });
        }
        let class_raw = get_u64(buf, OFF_CLASS);
        let class = Class::from_u64(class_raw).ok_or(DecodeError::BadClass(class_raw))?;
        let control = ControlByte::from_u8(buf[OFF_RES_VER])
            .ok_or(DecodeError::BadControl(buf[OFF_RES_VER]))?;
        let mut lvb: [u8; 8] = get_reversed(&buf[OFF_RES_VER..]);
        lvb[7] = 0;
        Ok(Record {
            state: MutexState::from_u64(get_u64(buf, OFF_STATE)),
            time_ms: get_u64(buf, OFF_TIME),
            countdown_ms: get_u64(buf, OFF_COUNTDOWN),
            class,
            lvb: Lvb(lvb),
            control,
            lock_id: LockId(get_reversed(&buf[OFF_LOCK_ID..])),
            metadata: get_reversed(&buf[OFF_METADATA..]),
            host_id: HostId(get_reversed(&buf[OFF_HOST_ID..])),
        })
    }

    /// Decodes the records of a table read, skipping all-zero blocks (a table shorter
    /// than the read returns zero-filled records past its end, IDM.md §3). Stops at
    /// the first record that does not decode and returns that error.
    pub fn decode_table(buf: &[u8]) -> Result<Vec<Record>, DecodeError> {
        Record::decode_table_matching(buf, None)
    }

    /// [`Record::decode_table`] keeping only the records of `only` (all when
    /// `None`): the other records' lock IDs are compared on the wire and never
    /// decoded (nor checked), which makes one lock's read of a large table cheap.
    pub fn decode_table_matching(
        buf: &[u8],
        only: Option<&LockId>,
    ) -> Result<Vec<Record>, DecodeError> {
        let wire = only.map(|id| {
            let mut w = [0u8; 64];
            put_reversed(&mut w, &id.0);
            w
        });
        let mut out = Vec::new();
        for block in buf.chunks_exact(RECORD_LEN) {
            if let Some(w) = &wire {
                if block[OFF_LOCK_ID..OFF_LOCK_ID + 64] != w[..] {
                    continue;
                }
            }
            if block.iter().all(|&b| b == 0) {
                continue;
            }
            out.push(Record::decode(block)?);
        }
        Ok(out)
    }
}

/// Decodes the block returned by a count read (group `0xFF`): the number of records
/// in the table, big-endian u16 in the first two bytes.
pub fn decode_table_count(buf: &[u8]) -> Result<u16, DecodeError> {
    match buf {
        [hi, lo, ..] => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(DecodeError::Short {
            got: buf.len(),
            need: 2,
        }),
    }
}

/// Writes a count block (the firmware side of [`decode_table_count`]).
pub fn encode_table_count(count: u16, out: &mut [u8; RECORD_LEN]) {
    out.fill(0);
    out[..2].copy_from_slice(&count.to_be_bytes());
}

/// Decodes the IDM version page (INQUIRY EVPD `0xC3`): `(major, minor)`. The major
/// version is byte 96; the minor is always 0 on SCSI (IDM.md §3).
pub fn decode_version_page(page: &[u8]) -> Result<(u8, u8), DecodeError> {
    page.get(VERSION_MAJOR_OFFSET)
        .map(|&major| (major, 0))
        .ok_or(DecodeError::Short {
            got: page.len(),
            need: VERSION_MAJOR_OFFSET + 1,
        })
}

/// Builds a version page of `len` bytes for `major` (the firmware side).
pub fn encode_version_page(major: u8, len: usize) -> Vec<u8> {
    let full = (super::cdb::VERSION_PAGE_LEN as usize).max(VERSION_MAJOR_OFFSET + 1);
    let mut page = vec![0u8; full];
    page[1] = super::cdb::VERSION_PAGE;
    page[2..4].copy_from_slice(&((full - 4) as u16).to_be_bytes());
    page[VERSION_MAJOR_OFFSET] = major;
    page.truncate(len);
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Record {
        let mut lock = [0u8; 64];
        for (i, b) in lock.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let mut host = [0u8; 32];
        for (i, b) in host.iter_mut().enumerate() {
            *b = 0x80 + i as u8;
        }
        Record {
            state: MutexState::Locked,
            time_ms: 0x0102_0304_0506_0708,
            countdown_ms: 60_000,
            class: Class::SharedProtectedRead,
            lvb: Lvb([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x00]),
            control: ControlByte::UpdateNotValid,
            lock_id: LockId(lock),
            metadata: [0; 64],
            host_id: HostId(host),
        }
    }

    /// Every row of the record table in IDM.md §5, byte by byte.
    #[test]
    fn record_byte_table() {
        let w = sample().encode();
        assert_eq!(&w[0..8], &[0, 0, 0, 0, 0, 0, 0x01, 0x01]);
        assert_eq!(&w[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&w[16..24], &60_000u64.to_be_bytes());
        assert_eq!(&w[24..32], &[0, 0, 0, 0, 0, 0, 0, 2]);
        // Reversed LVB, then byte 32 overwritten by the control byte.
        assert_eq!(
            &w[32..40],
            &[0x01, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        );
        assert!(w[40..64].iter().all(|&b| b == 0));
        assert_eq!(w[64], 64);
        assert_eq!(w[127], 1);
        assert!(w[128..192].iter().all(|&b| b == 0));
        assert_eq!(w[192], 0x80 + 31);
        assert_eq!(w[223], 0x80);
        assert!(w[224..512].iter().all(|&b| b == 0));
        assert_eq!(Record::decode(&w).unwrap(), sample());
    }

    #[test]
    fn lvb_byte_7_is_lost() {
        let mut r = sample();
        r.lvb = Lvb([1, 2, 3, 4, 5, 6, 7, 8]);
        r.control = ControlByte::NoUpdate;
        let back = Record::decode(&r.encode()).unwrap();
        assert_eq!(back.lvb, Lvb([1, 2, 3, 4, 5, 6, 7, 0]));
    }

    #[test]
    fn count_and_version() {
        let mut b = [0u8; RECORD_LEN];
        encode_table_count(3950, &mut b);
        assert_eq!(&b[..2], &[0x0F, 0x6E]);
        assert_eq!(decode_table_count(&b), Ok(3950));
        assert!(decode_table_count(&[1]).is_err());
        let page = encode_version_page(3, 0x70);
        assert_eq!(page.len(), 0x70);
        assert_eq!(page[96], 3);
        assert_eq!(decode_version_page(&page), Ok((3, 0)));
        assert_eq!(
            decode_version_page(&page[..96]),
            Err(DecodeError::Short { got: 96, need: 97 })
        );
    }

    #[test]
    fn table_skips_zero_blocks() {
        let mut buf = vec![0u8; 3 * RECORD_LEN];
        buf[..RECORD_LEN].copy_from_slice(&sample().encode());
        assert_eq!(Record::decode_table(&buf).unwrap(), vec![sample()]);
    }

    #[test]
    fn table_of_one_lock_skips_the_others_undecoded() {
        let mut other = sample();
        other.lock_id = LockId::from_slice(b"other").unwrap();
        let mut buf = vec![0u8; 4 * RECORD_LEN];
        buf[..RECORD_LEN].copy_from_slice(&other.encode());
        buf[RECORD_LEN..2 * RECORD_LEN].copy_from_slice(&sample().encode());
        // A block that would not decode (class 7), of neither lock.
        buf[2 * RECORD_LEN..3 * RECORD_LEN].fill(7);
        let mine = sample().lock_id;
        let got = Record::decode_table_matching(&buf, Some(&mine)).unwrap();
        assert_eq!(got, vec![sample()]);
        let none = LockId::from_slice(b"none").unwrap();
        assert!(Record::decode_table_matching(&buf, Some(&none))
            .unwrap()
            .is_empty());
        assert!(Record::decode_table(&buf).is_err());
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            0u64..3,
            any::<[u8; 7]>(),
            0u8..4,
            proptest::collection::vec(any::<u8>(), 64),
            proptest::collection::vec(any::<u8>(), 64),
            any::<[u8; 32]>(),
        )
            .prop_map(|(st, t, c, cl, lvb7, ctl, lock, meta, host)| {
                let mut lvb = [0u8; 8];
                lvb[..7].copy_from_slice(&lvb7);
                Record {
                    state: MutexState::from_u64(st as u64),
                    time_ms: t,
                    countdown_ms: c,
                    class: Class::from_u64(cl).unwrap(),
                    lvb: Lvb(lvb),
                    control: ControlByte::from_u8(ctl).unwrap(),
                    lock_id: LockId(lock.try_into().unwrap()),
                    metadata: meta.try_into().unwrap(),
                    host_id: HostId(host),
                }
            })
    }

    proptest! {
        #[test]
        fn record_round_trip(r in arb_record()) {
            prop_assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = Record::decode(&bytes);
            let _ = Record::decode_table(&bytes);
            let _ = decode_table_count(&bytes);
            let _ = decode_version_page(&bytes);
            let _ = super::super::cdb::parse_cdb(&bytes);
        }
    }
}
