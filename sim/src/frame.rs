//! The simulator's framed wire protocol: encode and decode, safe on any input.
//!
//! # Byte layout
//!
//! Every frame is a 5-byte header followed by a payload. All integers are
//! **little-endian**.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | `len`: u32, bytes after this field (type byte + payload), `1..=MAX_BODY` |
//! | 4 | 1 | `type` |
//! | 5 | `len - 1` | payload |
//!
//! [`MAX_BODY`] is 4 MiB + 64 ([`MAX_DATA`] says why). A header announcing `len == 0` or `len > MAX_BODY` is
//! rejected as soon as its 4 bytes arrive. A *string* is a u16 length then that
//! many bytes of UTF-8. Payloads by type (each must be consumed exactly: trailing
//! bytes are an error):
//!
//! | type | name | direction | payload |
//! | --- | --- | --- | --- |
//! | `0x01` | HELLO | client → server | string client name (what faults like "cut" match) |
//! | `0x02` | HELLO_OK | server → client | u16 count, then `count` strings: the drive names, id = position |
//! | `0x03` | ATTACH | client → server | string drive name |
//! | `0x04` | ATTACHED | server → client | u32 drive id |
//! | `0x05` | ERROR | server → client | string message (answer to ATTACH or CONTROL) |
//! | `0x10` | COMMAND | client → server | u64 tag, u32 drive id, u8 cdb length (1..=16), cdb, u32 data-in length wanted (≤ 4 MiB), u32 data-out length (≤ 4 MiB), data-out |
//! | `0x11` | REPLY | server → client | u64 tag, u8 status, u8 sense length (≤ 252), sense, u32 data-in length (≤ 4 MiB), data-in |
//! | `0x20` | CONTROL | client → server | UTF-8 JSON of a `ControlRequest` (rest of the frame) |
//! | `0x21` | CONTROL_OK | server → client | UTF-8 JSON of a `ControlResponse` (rest of the frame) |
//!
//! A REPLY's status is the SCSI status byte, except [`STATUS_TRANSPORT_ERROR`]
//! (`0xFF`, not a SCSI status): the simulated transport failed (injected I/O
//! error, unknown drive id); the client reports it as `DriveError::Io(EIO)`.
//!
//! Commands are pipelined: a client may send any number of COMMANDs without
//! waiting; REPLYs come in completion order (not send order) and carry the tag.
//! A command that is never answered (stopped drive, dropped reply, cut client)
//! simply gets no REPLY: the client's timeout handles it.

use std::str;

/// Largest data-in or data-out of one command: 4 MiB.
///
/// A full table read must fit in one REPLY: the default table (3950 records of
/// 512 bytes) is 1.93 MiB, so 1 MiB (the first plan) was too small; 4 MiB takes
/// 8192 records and still bounds what one peer can make the other buffer.
pub const MAX_DATA: usize = 4 << 20;
/// Largest `len` field: a command or reply with [`MAX_DATA`] plus its fields.
pub const MAX_BODY: usize = MAX_DATA + 64;
/// Header size: the u32 length and the type byte.
pub const HEADER_LEN: usize = 5;
/// Longest CDB a COMMAND carries.
pub const MAX_CDB: usize = 16;
/// Longest sense a REPLY carries.
pub const MAX_SENSE: usize = 252;
/// REPLY status meaning "the transport failed"; the client maps it to EIO.
pub const STATUS_TRANSPORT_ERROR: u8 = 0xFF;

/// Frame type bytes.
pub mod kind {
    /// HELLO.
    pub const HELLO: u8 = 0x01;
    /// HELLO_OK.
    pub const HELLO_OK: u8 = 0x02;
    /// ATTACH.
    pub const ATTACH: u8 = 0x03;
    /// ATTACHED.
    pub const ATTACHED: u8 = 0x04;
    /// ERROR.
    pub const ERROR: u8 = 0x05;
    /// COMMAND.
    pub const COMMAND: u8 = 0x10;
    /// REPLY.
    pub const REPLY: u8 = 0x11;
    /// CONTROL.
    pub const CONTROL: u8 = 0x20;
    /// CONTROL_OK.
    pub const CONTROL_OK: u8 = 0x21;
}

/// Why bytes are not a valid frame (or a frame cannot be encoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is zero.
    #[error("frame length 0")]
    Empty,
    /// The length field exceeds [`MAX_BODY`].
    #[error("frame length {0} over the limit")]
    Oversize(usize),
    /// The type byte is not one of [`kind`].
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The payload ends before its fields do.
    #[error("frame type {0:#04x}: payload too short")]
    Truncated(u8),
    /// The payload has bytes after its last field.
    #[error("frame type {0:#04x}: trailing bytes")]
    Trailing(u8),
    /// A string is not UTF-8.
    #[error("frame type {0:#04x}: string is not UTF-8")]
    BadUtf8(u8),
    /// A field is out of its range (CDB length, sense length, data length, string length).
    #[error("frame type {0:#04x}: field out of range")]
    BadField(u8),
}

/// A COMMAND frame's fields, borrowing the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandFrame<'a> {
    /// The client's tag, echoed in the REPLY.
    pub tag: u64,
    /// Drive id (from ATTACHED / HELLO_OK).
    pub drive: u32,
    /// The CDB, 1..=16 bytes.
    pub cdb: &'a [u8],
    /// Data-in bytes the client wants at most.
    pub data_in_len: u32,
    /// Data-out.
    pub data_out: &'a [u8],
}

/// A REPLY frame's fields, borrowing the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyFrame<'a> {
    /// The tag of the COMMAND this answers.
    pub tag: u64,
    /// SCSI status, or [`STATUS_TRANSPORT_ERROR`].
    pub status: u8,
    /// Sense bytes.
    pub sense: &'a [u8],
    /// Data-in.
    pub data: &'a [u8],
}

/// One decoded frame. See the module docs for the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// HELLO.
    Hello {
        /// The client's name.
        client: &'a str,
    },
    /// HELLO_OK.
    HelloOk {
        /// Drive names; a drive's id is its position.
        drives: Vec<&'a str>,
    },
    /// ATTACH.
    Attach {
        /// The drive's name.
        drive: &'a str,
    },
    /// ATTACHED.
    Attached {
        /// The drive's id.
        drive: u32,
    },
    /// ERROR.
    Error {
        /// What went wrong.
        message: &'a str,
    },
    /// COMMAND.
    Command(CommandFrame<'a>),
    /// REPLY.
    Reply(ReplyFrame<'a>),
    /// CONTROL.
    Control {
        /// JSON request.
        json: &'a str,
    },
    /// CONTROL_OK.
    ControlOk {
        /// JSON response.
        json: &'a str,
    },
}

/// A cursor over a payload that fails with [`FrameError::Truncated`].
struct Rd<'a> {
    buf: &'a [u8],
    ty: u8,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Truncated(self.ty));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str_rest(&mut self) -> Result<&'a str, FrameError> {
        let b = self.take(self.buf.len())?;
        str::from_utf8(b).map_err(|_| FrameError::BadUtf8(self.ty))
    }
    fn string(&mut self) -> Result<&'a str, FrameError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        str::from_utf8(b).map_err(|_| FrameError::BadUtf8(self.ty))
    }
    fn data(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.u32()? as usize;
        if n > MAX_DATA {
            return Err(FrameError::BadField(self.ty));
        }
        self.take(n)
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Trailing(self.ty))
        }
    }
}

/// The total size (header included) of the frame starting at `buf`, once its
/// length field is complete: `Ok(None)` if fewer than 4 bytes are there.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(h) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_BODY {
        return Err(FrameError::Oversize(len));
    }
    Ok(Some(4 + len))
}

/// Bytes of a COMMAND frame's `len` besides its data-out, at most: the type byte,
/// tag, drive id, CDB length, the longest CDB and the two data lengths. A server
/// bounds a COMMAND's `len` by this plus the data-out it accepts.
pub const COMMAND_FIXED_MAX: usize = 1 + 8 + 4 + 1 + MAX_CDB + 4 + 4;

/// The `len` field and type byte of the frame starting at `buf`, once its 5-byte
/// header is there (`None` before): what a receiver checks against its own limits
/// before making room for the rest of the frame. Not validated.
pub fn peek_header(buf: &[u8]) -> Option<(usize, u8)> {
    let h = buf.get(..HEADER_LEN)?;
    Some((u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize, h[4]))
}

/// Decodes the frame at the start of `buf`: `Ok(None)` if it is not complete yet,
/// else the frame and the bytes it took. Never panics.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(total) = frame_len(buf)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(4..total) else {
        return Ok(None);
    };
    let ty = body[0];
    let mut r = Rd {
        buf: &body[1..],
        ty,
    };
    let f = match ty {
        kind::HELLO => Frame::Hello {
            client: r.string()?,
        },
        kind::HELLO_OK => {
            let n = r.u16()? as usize;
            // Each name takes at least 2 bytes: bound the allocation by the payload.
            if n > r.buf.len() / 2 {
                return Err(FrameError::Truncated(ty));
            }
            let mut drives = Vec::with_capacity(n);
            for _ in 0..n {
                drives.push(r.string()?);
            }
            Frame::HelloOk { drives }
        }
        kind::ATTACH => Frame::Attach { drive: r.string()? },
        kind::ATTACHED => Frame::Attached { drive: r.u32()? },
        kind::ERROR => Frame::Error {
            message: r.string()?,
        },
        kind::COMMAND => {
            let tag = r.u64()?;
            let drive = r.u32()?;
            let cdb_len = r.u8()? as usize;
            if cdb_len == 0 || cdb_len > MAX_CDB {
                return Err(FrameError::BadField(ty));
            }
            let cdb = r.take(cdb_len)?;
            let data_in_len = r.u32()?;
            if data_in_len as usize > MAX_DATA {
                return Err(FrameError::BadField(ty));
            }
            let data_out = r.data()?;
            Frame::Command(CommandFrame {
                tag,
                drive,
                cdb,
                data_in_len,
                data_out,
            })
        }
        kind::REPLY => {
            let tag = r.u64()?;
            let status = r.u8()?;
            let sense_len = r.u8()? as usize;
            if sense_len > MAX_SENSE {
                return Err(FrameError::BadField(ty));
            }
            let sense = r.take(sense_len)?;
            let data = r.data()?;
            Frame::Reply(ReplyFrame {
                tag,
                status,
                sense,
                data,
            })
        }
        kind::CONTROL => Frame::Control {
            json: r.str_rest()?,
        },
        kind::CONTROL_OK => Frame::ControlOk {
            json: r.str_rest()?,
        },
        other => return Err(FrameError::UnknownType(other)),
    };
    r.end()?;
    Ok(Some((f, total)))
}

/// Starts a frame of type `ty` in `out`; returns where its length field is.
fn begin(out: &mut Vec<u8>, ty: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, ty]);
    at
}

/// Finishes the frame begun at `at`: writes its length, or removes it and fails
/// if it is too long.
fn finish(out: &mut Vec<u8>, at: usize, ty: u8) -> Result<(), FrameError> {
    let len = out.len() - at - 4;
    if len > MAX_BODY {
        out.truncate(at);
        return Err(FrameError::BadField(ty));
    }
    out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str, ty: u8) -> Result<(), FrameError> {
    let n = u16::try_from(s.len()).map_err(|_| FrameError::BadField(ty))?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_data(out: &mut Vec<u8>, d: &[u8], ty: u8) -> Result<(), FrameError> {
    if d.len() > MAX_DATA {
        return Err(FrameError::BadField(ty));
    }
    out.extend_from_slice(&(d.len() as u32).to_le_bytes());
    out.extend_from_slice(d);
    Ok(())
}

/// Appends a COMMAND frame to `out` (no allocation once `out` has capacity).
pub fn encode_command(out: &mut Vec<u8>, c: &CommandFrame<'_>) -> Result<(), FrameError> {
    let ty = kind::COMMAND;
    if c.cdb.is_empty()
        || c.cdb.len() > MAX_CDB
        || c.data_in_len as usize > MAX_DATA
        || c.data_out.len() > MAX_DATA
    {
        return Err(FrameError::BadField(ty));
    }
    let at = begin(out, ty);
    out.extend_from_slice(&c.tag.to_le_bytes());
    out.extend_from_slice(&c.drive.to_le_bytes());
    out.push(c.cdb.len() as u8);
    out.extend_from_slice(c.cdb);
    out.extend_from_slice(&c.data_in_len.to_le_bytes());
    put_data(out, c.data_out, ty)?;
    finish(out, at, ty)
}

/// Appends a REPLY frame to `out` (no allocation once `out` has capacity).
pub fn encode_reply(out: &mut Vec<u8>, r: &ReplyFrame<'_>) -> Result<(), FrameError> {
    encode_reply_head(out, r.tag, r.status, r.sense, r.data.len())?;
    out.extend_from_slice(r.data);
    Ok(())
}

/// Appends everything of a REPLY frame up to its data-in, announcing `data_len`
/// bytes of it: the caller sends those next (appended to `out`, or from elsewhere,
/// such as a shared buffer of zeros). On error `out` is left as it was.
pub fn encode_reply_head(
    out: &mut Vec<u8>,
    tag: u64,
    status: u8,
    sense: &[u8],
    data_len: usize,
) -> Result<(), FrameError> {
    let ty = kind::REPLY;
    if sense.len() > MAX_SENSE || data_len > MAX_DATA {
        return Err(FrameError::BadField(ty));
    }
    let len = 1 + 8 + 1 + 1 + sense.len() + 4 + data_len;
    if len > MAX_BODY {
        return Err(FrameError::BadField(ty));
    }
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(ty);
    out.extend_from_slice(&tag.to_le_bytes());
    out.push(status);
    out.push(sense.len() as u8);
    out.extend_from_slice(sense);
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    Ok(())
}

impl Frame<'_> {
    /// The frame's type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => kind::HELLO,
            Frame::HelloOk { .. } => kind::HELLO_OK,
            Frame::Attach { .. } => kind::ATTACH,
            Frame::Attached { .. } => kind::ATTACHED,
            Frame::Error { .. } => kind::ERROR,
            Frame::Command(_) => kind::COMMAND,
            Frame::Reply(_) => kind::REPLY,
            Frame::Control { .. } => kind::CONTROL,
            Frame::ControlOk { .. } => kind::CONTROL_OK,
        }
    }

    /// Appends this frame to `out`; on error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let ty = self.kind();
        match self {
            Frame::Command(c) => return encode_command(out, c),
            Frame::Reply(r) => return encode_reply(out, r),
            _ => {}
        }
        let at = begin(out, ty);
        let r = match self {
            Frame::Hello { client: s }
            | Frame::Attach { drive: s }
            | Frame::Error { message: s } => put_str(out, s, ty),
            Frame::HelloOk { drives } => match u16::try_from(drives.len()) {
                Ok(n) => {
                    out.extend_from_slice(&n.to_le_bytes());
                    drives.iter().try_for_each(|d| put_str(out, d, ty))
                }
                Err(_) => Err(FrameError::BadField(ty)),
            },
            Frame::Attached { drive } => {
                out.extend_from_slice(&drive.to_le_bytes());
                Ok(())
            }
            Frame::Control { json } | Frame::ControlOk { json } => {
                out.extend_from_slice(json.as_bytes());
                Ok(())
            }
            Frame::Command(_) | Frame::Reply(_) => Ok(()),
        };
        match r {
            Ok(()) => finish(out, at, ty),
            Err(e) => {
                out.truncate(at);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn command_bytes_are_as_documented() {
        let mut out = Vec::new();
        encode_command(
            &mut out,
            &CommandFrame {
                tag: 0x0102030405060708,
                drive: 3,
                cdb: &[0xF0, 0x20],
                data_in_len: 512,
                data_out: &[0xAA],
            },
        )
        .unwrap();
        let want: Vec<u8> = [
            &[25, 0, 0, 0, 0x10][..],
            &[8, 7, 6, 5, 4, 3, 2, 1],
            &[3, 0, 0, 0],
            &[2, 0xF0, 0x20],
            &[0, 2, 0, 0],
            &[1, 0, 0, 0, 0xAA],
        ]
        .concat();
        assert_eq!(out, want);
        let (f, n) = decode(&out).unwrap().unwrap();
        assert_eq!(n, out.len());
        assert!(matches!(f, Frame::Command(c) if c.tag == 0x0102030405060708 && c.drive == 3));
    }

    #[test]
    fn bad_headers_are_rejected_early() {
        assert_eq!(decode(&[0, 0, 0, 0]), Err(FrameError::Empty));
        let big = ((MAX_BODY + 1) as u32).to_le_bytes();
        assert_eq!(decode(&big), Err(FrameError::Oversize(MAX_BODY + 1)));
        assert_eq!(
            decode(&[1, 0, 0, 0, 0x99]),
            Err(FrameError::UnknownType(0x99))
        );
        assert_eq!(decode(&[1, 0, 0]), Ok(None));
        assert_eq!(decode(&[9, 0, 0, 0, 0x10, 1]), Ok(None));
        // A COMMAND with a zero-length CDB.
        let mut b = vec![0u8; 0];
        b.extend_from_slice(&[22, 0, 0, 0, 0x10]);
        b.extend_from_slice(&[0; 12]);
        b.push(0);
        b.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&b), Err(FrameError::BadField(0x10)));
    }

    fn any_frame() -> impl Strategy<Value = (u8, Vec<String>, Vec<u8>, Vec<u8>, u64, u32)> {
        (
            0u8..9,
            proptest::collection::vec("[a-z0-9é]{0,12}", 0..5),
            proptest::collection::vec(any::<u8>(), 1..17),
            proptest::collection::vec(any::<u8>(), 0..600),
            any::<u64>(),
            any::<u32>(),
        )
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            // Also with a plausible header in front.
            let mut b = ((bytes.len() as u32) + 1).to_le_bytes().to_vec();
            b.push(bytes.first().copied().unwrap_or(0x10) & 0x31);
            b.extend_from_slice(&bytes);
            let _ = decode(&b);
        }

        #[test]
        fn round_trip((k, strs, cdb, data, tag, n) in any_frame()) {
            let s0 = strs.first().map(String::as_str).unwrap_or("");
            let f = match k {
                0 => Frame::Hello { client: s0 },
                1 => Frame::HelloOk { drives: strs.iter().map(String::as_str).collect() },
                2 => Frame::Attach { drive: s0 },
                3 => Frame::Attached { drive: n },
                4 => Frame::Error { message: s0 },
                5 => Frame::Command(CommandFrame { tag, drive: n, cdb: &cdb, data_in_len: n % 4096, data_out: &data }),
                6 => Frame::Reply(ReplyFrame { tag, status: n as u8, sense: &cdb, data: &data }),
                7 => Frame::Control { json: s0 },
                _ => Frame::ControlOk { json: s0 },
            };
            let mut out = vec![7u8];
            f.encode(&mut out).unwrap();
            let (g, used) = decode(&out[1..]).unwrap().unwrap();
            prop_assert_eq!(used, out.len() - 1);
            prop_assert_eq!(g, f);
            // Every strict prefix is incomplete, never an error or a frame.
            for cut in 0..used {
                prop_assert_eq!(decode(&out[1..1 + cut]), Ok(None));
            }
        }
    }
}
