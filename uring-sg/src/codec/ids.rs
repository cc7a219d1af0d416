//! Typed identifiers: lock ID (64 bytes), host ID (32 bytes), lock value block (8 bytes).
//!
//! Text form (for command lines and logs): an ID whose bytes are printable ASCII
//! followed only by zero bytes prints as that text; anything else prints as
//! `hex:` followed by the whole array in hex. Parsing accepts both forms; text
//! shorter than the array is zero-padded (so `lvm_global` and the all-zero global
//! lock ID `hex:00` are both easy to type).

use std::fmt;
use std::str::FromStr;

/// Why a textual ID could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// The text is longer than the identifier.
    #[error("{what} is at most {max} bytes, got {got}")]
    TooLong {
        /// Which identifier.
        what: &'static str,
        /// Its size in bytes.
        max: usize,
        /// The length given.
        got: usize,
    },
    /// `hex:` form with a character that is not a hex digit or an odd count of digits.
    #[error("{what}: invalid hex after `hex:`")]
    BadHex {
        /// Which identifier.
        what: &'static str,
    },
}

fn parse_fixed<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], ParseIdError> {
    let mut out = [0u8; N];
    if let Some(hex) = s.strip_prefix("hex:") {
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseIdError::BadHex { what });
        }
        let n = hex.len() / 2;
        if n > N {
            return Err(ParseIdError::TooLong {
                what,
                max: N,
                got: n,
            });
        }
        for (i, byte) in out.iter_mut().take(n).enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| ParseIdError::BadHex { what })?;
        }
    } else {
        let b = s.as_bytes();
        if b.len() > N {
            return Err(ParseIdError::TooLong {
                what,
                max: N,
                got: b.len(),
            });
        }
        out[..b.len()].copy_from_slice(b);
    }
    Ok(out)
}

fn fmt_fixed(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let text_len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let printable = text_len > 0
        && bytes[..text_len]
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ')
        && bytes[text_len..].iter().all(|&b| b == 0)
        && !bytes.starts_with(b"hex:");
    if printable {
        // Safe: every byte checked to be ASCII above.
        f.write_str(std::str::from_utf8(&bytes[..text_len]).map_err(|_| fmt::Error)?)
    } else {
        // Trailing zero bytes are dropped; parsing pads them back.
        let end = bytes.iter().rposition(|&b| b != 0).map_or(1, |p| p + 1);
        f.write_str("hex:")?;
        for b in &bytes[..end] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

macro_rules! fixed_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Size of the identifier in bytes.
            pub const LEN: usize = $len;

            /// The identifier as its raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Builds an identifier from a byte slice, zero-padded; `None` if longer than [`Self::LEN`].
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                if b.len() > $len {
                    return None;
                }
                let mut out = [0u8; $len];
                out[..b.len()].copy_from_slice(b);
                Some(Self(out))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self([0u8; $len])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_fixed(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_fixed::<$len>($what, s).map(Self)
            }
        }
    };
}

fixed_id!(
    /// A lock (resource) ID: 64 opaque bytes. lvmlockd uses 32 ASCII chars of the VG
    /// UUID then 32 of the LV UUID; the global lock is all zeros (IDM.md §2).
    LockId,
    64,
    "lock ID"
);

fixed_id!(
    /// A host ID: 32 opaque bytes, stable and unique per host (IDM.md §2).
    HostId,
    32,
    "host ID"
);

/// A lock value block: 8 bytes a holder publishes with unlock.
///
/// **Byte 7 is not carried by the drive** (IDM.md §5): the wire overwrites it with
/// the resource-version control byte, so every LVB read back from a drive has
/// byte 7 = 0. lvmlockd stores a little-endian microsecond timestamp, whose top
/// byte stays zero for about two thousand years.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, Debug)]
pub struct Lvb(pub [u8; 8]);

impl Lvb {
    /// The value the engine returns when a drive of the lock was taken by break:
    /// the previous holder may not have stored its value (IDM.md §7).
    pub const INVALID: Lvb = Lvb([0xFF; 8]);

    /// The LVB as a little-endian u64 (how lvmlockd reads it).
    pub fn to_u64(self) -> u64 {
        u64::from_le_bytes(self.0)
    }

    /// An LVB from a little-endian u64.
    pub fn from_u64(v: u64) -> Self {
        Lvb(v.to_le_bytes())
    }

    /// This LVB as the drive will return it: byte 7 cleared.
    pub fn as_stored(self) -> Self {
        let mut b = self.0;
        b[7] = 0;
        Lvb(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let id: LockId = "lvm_global".parse().unwrap();
        assert_eq!(&id.0[..10], b"lvm_global");
        assert!(id.0[10..].iter().all(|&b| b == 0));
        assert_eq!(id.to_string(), "lvm_global");
        assert_eq!(id.to_string().parse::<LockId>().unwrap(), id);
    }

    #[test]
    fn hex_round_trip_and_zero_id() {
        let zero = LockId::default();
        assert_eq!(zero.to_string(), "hex:00");
        assert_eq!("hex:00".parse::<LockId>().unwrap(), zero);
        let h = HostId([0xAB; 32]);
        assert_eq!(h.to_string().parse::<HostId>().unwrap(), h);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            "x".repeat(33).parse::<HostId>(),
            Err(ParseIdError::TooLong {
                max: 32,
                got: 33,
                ..
            })
        ));
        assert!(matches!(
            "hex:zz".parse::<HostId>(),
            Err(ParseIdError::BadHex { .. })
        ));
        assert!(matches!(
            "hex:abc".parse::<HostId>(),
            Err(ParseIdError::BadHex { .. })
        ));
        // A text that itself begins with hex: can't be shown as text.
        let tricky = HostId::from_slice(b"hex:").unwrap();
        assert_eq!(tricky.to_string().parse::<HostId>().unwrap(), tricky);
    }

    #[test]
    fn lvb_u64() {
        let l = Lvb::from_u64(0x0102_0304_0506_0708);
        assert_eq!(l.0, [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(l.to_u64(), 0x0102_0304_0506_0708);
        assert_eq!(l.as_stored().0[7], 0);
    }
}
