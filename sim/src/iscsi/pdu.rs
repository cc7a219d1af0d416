//! iSCSI PDUs (RFC 7143 §11): the 48-byte basic header segment (BHS), optional
//! additional header segments (AHS), the data segment padded to 4 bytes, and the
//! `key=value\0` text format of login and text PDUs.
//!
//! Digests are never negotiated by this target (login answers
//! `HeaderDigest=None`, `DataDigest=None`), so a PDU carries none.
//!
//! [`Pdu`] keeps the BHS as bytes and offers typed accessors for the fields this
//! target reads and writes; every multi-byte field is big-endian.

use std::io::{self, Read};

/// Length of the basic header segment.
pub const BHS_LEN: usize = 48;
/// Largest data segment length expressible (24 bits).
pub const MAX_DSL: usize = 0xFF_FFFF;
/// The "reserved" tag value (`0xffffffff`): no task / no target transfer tag.
pub const RESERVED_TAG: u32 = 0xFFFF_FFFF;

/// Initiator opcodes (byte 0, low 6 bits).
pub mod op {
    /// NOP-Out.
    pub const NOP_OUT: u8 = 0x00;
    /// SCSI Command.
    pub const SCSI_CMD: u8 = 0x01;
    /// SCSI Task Management Function Request.
    pub const TASK_MGMT_REQ: u8 = 0x02;
    /// Login Request.
    pub const LOGIN_REQ: u8 = 0x03;
    /// Text Request.
    pub const TEXT_REQ: u8 = 0x04;
    /// SCSI Data-Out.
    pub const DATA_OUT: u8 = 0x05;
    /// Logout Request.
    pub const LOGOUT_REQ: u8 = 0x06;
    /// SNACK Request.
    pub const SNACK_REQ: u8 = 0x10;
    /// NOP-In.
    pub const NOP_IN: u8 = 0x20;
    /// SCSI Response.
    pub const SCSI_RESP: u8 = 0x21;
    /// SCSI Task Management Function Response.
    pub const TASK_MGMT_RESP: u8 = 0x22;
    /// Login Response.
    pub const LOGIN_RESP: u8 = 0x23;
    /// Text Response.
    pub const TEXT_RESP: u8 = 0x24;
    /// SCSI Data-In.
    pub const DATA_IN: u8 = 0x25;
    /// Logout Response.
    pub const LOGOUT_RESP: u8 = 0x26;
    /// Ready To Transfer.
    pub const R2T: u8 = 0x31;
    /// Reject.
    pub const REJECT: u8 = 0x3F;
}

/// Why a PDU could not be read or decoded. Any of these closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    /// The socket failed (or closed in the middle of a PDU).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The data segment is longer than this side accepts.
    #[error("data segment of {len} bytes exceeds the limit of {max}")]
    DataTooLong {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The opcode is not one an initiator sends.
    #[error("opcode {0:#04x} is not an initiator opcode")]
    BadOpcode(u8),
    /// A text segment is not `key=value\0` pairs of UTF-8.
    #[error("malformed text segment: {0}")]
    BadText(String),
}

/// One PDU: header, AHS and data (without padding).
#[derive(Clone, PartialEq, Eq)]
pub struct Pdu {
    /// The basic header segment.
    pub bhs: [u8; BHS_LEN],
    /// Additional header segments (TotalAHSLength × 4 bytes), as received.
    pub ahs: Vec<u8>,
    /// The data segment (its length is written to the BHS on encode).
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Pdu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pdu(op={:#04x} flags={:#04x} itt={:#x} dsl={})",
            self.opcode(),
            self.flags(),
            self.itt(),
            self.data.len()
        )
    }
}

impl Pdu {
    /// A PDU with `opcode`, every other header byte zero and no data.
    pub fn new(opcode: u8) -> Pdu {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = opcode & 0x3F;
        Pdu {
            bhs,
            ahs: Vec::new(),
            data: Vec::new(),
        }
    }

    /// The opcode (byte 0, low 6 bits).
    pub fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3F
    }

    /// The immediate-delivery bit (byte 0, bit 6).
    pub fn immediate(&self) -> bool {
        self.bhs[0] & 0x40 != 0
    }

    /// Byte 1 (the final bit and opcode-specific flags).
    pub fn flags(&self) -> u8 {
        self.bhs[1]
    }

    /// Sets byte 1.
    pub fn set_flags(&mut self, f: u8) {
        self.bhs[1] = f;
    }

    /// The final bit (byte 1, bit 7).
    pub fn is_final(&self) -> bool {
        self.bhs[1] & 0x80 != 0
    }

    /// A big-endian u32 at `off` (0..=44).
    pub fn u32_at(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bhs[off..off + 4]);
        u32::from_be_bytes(b)
    }

    /// Writes a big-endian u32 at `off` (0..=44).
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.bhs[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// A big-endian u16 at `off`.
    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.bhs[off], self.bhs[off + 1]])
    }

    /// Writes a big-endian u16 at `off`.
    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.bhs[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// The LUN field (bytes 8..16) as raw bytes.
    pub fn lun(&self) -> [u8; 8] {
        let mut l = [0u8; 8];
        l.copy_from_slice(&self.bhs[8..16]);
        l
    }

    /// Writes the LUN field.
    pub fn set_lun(&mut self, lun: [u8; 8]) {
        self.bhs[8..16].copy_from_slice(&lun);
    }

    /// Initiator task tag (bytes 16..20).
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }

    /// Sets the initiator task tag.
    pub fn set_itt(&mut self, v: u32) {
        self.set_u32(16, v);
    }

    /// Target transfer tag (bytes 20..24; in most PDUs that carry one).
    pub fn ttt(&self) -> u32 {
        self.u32_at(20)
    }

    /// CmdSN (bytes 24..28 of initiator PDUs).
    pub fn cmd_sn(&self) -> u32 {
        self.u32_at(24)
    }

    /// ExpStatSN (bytes 28..32 of initiator PDUs).
    pub fn exp_stat_sn(&self) -> u32 {
        self.u32_at(28)
    }

    /// Sets StatSN, ExpCmdSN and MaxCmdSN (bytes 24..36 of target PDUs).
    pub fn set_sns(&mut self, stat_sn: u32, exp_cmd_sn: u32, max_cmd_sn: u32) {
        self.set_u32(24, stat_sn);
        self.set_u32(28, exp_cmd_sn);
        self.set_u32(32, max_cmd_sn);
    }

    /// The data segment length announced by the header (bytes 5..8).
    pub fn header_dsl(&self) -> usize {
        (usize::from(self.bhs[5]) << 16)
            | (usize::from(self.bhs[6]) << 8)
            | usize::from(self.bhs[7])
    }

    /// Appends the wire form (BHS with TotalAHSLength and DataSegmentLength
    /// filled in from `ahs` and `data`, AHS, data, zero padding) to `out`.
    /// AHS and data longer than the header can express are truncated (this side
    /// never builds such a PDU).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let ahs = &self.ahs[..self.ahs.len().min(255 * 4) / 4 * 4];
        let data = &self.data[..self.data.len().min(MAX_DSL)];
        let mut bhs = self.bhs;
        bhs[4] = (ahs.len() / 4) as u8;
        let dsl = data.len() as u32;
        bhs[5..8].copy_from_slice(&dsl.to_be_bytes()[1..]);
        out.extend_from_slice(&bhs);
        out.extend_from_slice(ahs);
        out.extend_from_slice(data);
        out.resize(out.len() + pad(data.len()), 0);
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(BHS_LEN + self.data.len() + 3);
        self.encode(&mut v);
        v
    }
}

/// Padding after a data segment of `len` bytes.
pub fn pad(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Reads one PDU from `r`. Returns `Ok(None)` on a clean end of stream before
/// the first header byte. A data segment longer than `max_data` is an error
/// (nothing more is read). Opcodes a target never receives are rejected.
pub fn read_pdu(r: &mut impl Read, max_data: usize) -> Result<Option<Pdu>, PduError> {
    let mut bhs = [0u8; BHS_LEN];
    let mut got = 0;
    while got < BHS_LEN {
        match r.read(&mut bhs[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(PduError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut p = Pdu {
        bhs,
        ahs: Vec::new(),
        data: Vec::new(),
    };
    let opc = p.opcode();
    if !matches!(
        opc,
        op::NOP_OUT
            | op::SCSI_CMD
            | op::TASK_MGMT_REQ
            | op::LOGIN_REQ
            | op::TEXT_REQ
            | op::DATA_OUT
            | op::LOGOUT_REQ
            | op::SNACK_REQ
    ) {
        return Err(PduError::BadOpcode(opc));
    }
    let dsl = p.header_dsl();
    if dsl > max_data {
        return Err(PduError::DataTooLong {
            len: dsl,
            max: max_data,
        });
    }
    let ahs_len = usize::from(bhs[4]) * 4;
    p.ahs = vec![0; ahs_len];
    r.read_exact(&mut p.ahs)?;
    p.data = vec![0; dsl + pad(dsl)];
    r.read_exact(&mut p.data)?;
    p.data.truncate(dsl);
    Ok(Some(p))
}

/// Parses a text segment: `key=value` pairs, each terminated by a NUL (a
/// missing last NUL is tolerated). Keys keep their order; empty entries (runs of
/// NULs, padding) are skipped.
pub fn parse_text(data: &[u8]) -> Result<Vec<(String, String)>, PduError> {
    let mut out = Vec::new();
    for part in data.split(|&b| b == 0) {
        if part.is_empty() {
            continue;
        }
        let s = std::str::from_utf8(part).map_err(|_| PduError::BadText("not UTF-8".into()))?;
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| PduError::BadText(format!("`{s}` has no `=`")))?;
        if k.is_empty() || k.len() > 63 {
            return Err(PduError::BadText(format!("bad key `{k}`")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Encodes `key=value\0` pairs.
pub fn encode_text<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref().as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_ref().as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(p: &Pdu) -> Pdu {
        let bytes = p.to_bytes();
        assert_eq!(bytes.len() % 4, 0);
        let mut r = &bytes[..];
        let q = read_pdu(&mut r, 1 << 20).unwrap().unwrap();
        assert!(r.is_empty(), "{} bytes left over", r.len());
        q
    }

    #[test]
    fn header_fields_and_padding_roundtrip() {
        let mut p = Pdu::new(op::SCSI_CMD);
        p.bhs[0] |= 0x40;
        p.set_flags(0xA0);
        p.set_itt(0x1234_5678);
        p.set_u32(20, 4096);
        p.set_u32(24, 7);
        p.set_u32(28, 9);
        p.set_lun([0, 1, 0, 0, 0, 0, 0, 0]);
        p.bhs[32] = 0x28;
        p.data = vec![1, 2, 3, 4, 5];
        let q = roundtrip(&p);
        assert_eq!(q.opcode(), op::SCSI_CMD);
        assert!(q.immediate());
        assert!(q.is_final());
        assert_eq!(q.flags(), 0xA0);
        assert_eq!(q.itt(), 0x1234_5678);
        assert_eq!(q.ttt(), 4096);
        assert_eq!(q.cmd_sn(), 7);
        assert_eq!(q.exp_stat_sn(), 9);
        assert_eq!(q.lun(), [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(q.header_dsl(), 5);
        assert_eq!(q.data, vec![1, 2, 3, 4, 5]);
        assert_eq!(q.bhs[32], 0x28);
        assert_eq!(p.to_bytes().len(), BHS_LEN + 8);
    }

    #[test]
    fn ahs_is_read_and_skipped_over() {
        let mut p = Pdu::new(op::SCSI_CMD);
        p.ahs = vec![0, 5, 1, 0, 9, 9, 9, 9];
        p.data = vec![7; 4];
        let q = roundtrip(&p);
        assert_eq!(q.bhs[4], 2);
        assert_eq!(q.ahs, p.ahs);
        assert_eq!(q.data, vec![7; 4]);
    }

    #[test]
    fn clean_eof_is_none_and_truncation_is_an_error() {
        let mut empty: &[u8] = &[];
        assert!(read_pdu(&mut empty, 100).unwrap().is_none());
        let mut p = Pdu::new(op::NOP_OUT);
        p.data = vec![1; 10];
        let bytes = p.to_bytes();
        for cut in [1, 47, 48, 50] {
            let mut r = &bytes[..cut];
            assert!(
                matches!(read_pdu(&mut r, 100), Err(PduError::Io(_))),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn oversize_data_and_target_opcodes_are_rejected() {
        let mut p = Pdu::new(op::NOP_OUT);
        p.data = vec![0; 300];
        let bytes = p.to_bytes();
        let mut r = &bytes[..];
        assert!(matches!(
            read_pdu(&mut r, 256),
            Err(PduError::DataTooLong { len: 300, max: 256 })
        ));
        let bytes = Pdu::new(op::DATA_IN).to_bytes();
        let mut r = &bytes[..];
        assert!(matches!(
            read_pdu(&mut r, 256),
            Err(PduError::BadOpcode(0x25))
        ));
    }

    #[test]
    fn text_roundtrip_and_errors() {
        let t = encode_text(&[("InitiatorName", "iqn.x:y"), ("SessionType", "Normal")]);
        assert_eq!(t, b"InitiatorName=iqn.x:y\0SessionType=Normal\0");
        let kv = parse_text(&t).unwrap();
        assert_eq!(kv[0], ("InitiatorName".into(), "iqn.x:y".into()));
        assert_eq!(kv[1], ("SessionType".into(), "Normal".into()));
        assert_eq!(parse_text(b"A=1\0\0\0B=\0").unwrap().len(), 2);
        assert_eq!(parse_text(b"A=1").unwrap(), vec![("A".into(), "1".into())]);
        assert!(parse_text(b"novalue\0").is_err());
        assert!(parse_text(b"=x\0").is_err());
        assert!(parse_text(&[0xFF, b'=', b'1', 0]).is_err());
    }
}
