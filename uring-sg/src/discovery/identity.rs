//! Drive identity from sysfs: the world-wide name and serial number that make
//! several paths to one drive (multipath) group as one drive.
//!
//! SCSI: `device/wwid` (the kernel's choice of designator, e.g. `naa.5000c500…`),
//! else the best designator of VPD page 0x83 (`device/vpd_pg83`); the serial from
//! VPD page 0x80 (`device/vpd_pg80`). NVMe: the namespace's `wwid`, else its
//! `nguid` or `eui`, else the subsystem NQN; the serial from the controller.

use std::fs;
use std::path::Path;

/// Who a drive is, independent of the path used to reach it.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Identity {
    /// World-wide identifier (`naa.…`, `eui.…`, `t10.…`, `nqn:…`).
    pub wwid: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
}

impl Identity {
    /// The key paths to one drive share: the WWID, else the serial; `None` if the
    /// drive says neither (then it is never grouped with another path).
    pub fn key(&self) -> Option<String> {
        self.wwid
            .clone()
            .or_else(|| self.serial.as_ref().map(|s| format!("serial:{s}")))
    }
}

/// A sysfs text attribute, trimmed; `None` if absent or empty.
pub(crate) fn attr(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The best logical-unit designator of a VPD page 0x83: NAA, then EUI-64, then
/// SCSI name string, then T10 vendor id. Never panics on short input.
pub fn wwid_from_vpd83(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x83 {
        return None;
    }
    let end = (4 + u16::from_be_bytes([page[2], page[3]]) as usize).min(page.len());
    let mut best: Option<(u8, String)> = None;
    let mut off = 4;
    while off + 4 <= end {
        let code_set = page[off] & 0x0F;
        let assoc = (page[off + 1] >> 4) & 0x3;
        let kind = page[off + 1] & 0x0F;
        let len = page[off + 3] as usize;
        let Some(id) = page.get(off + 4..off + 4 + len) else {
            break;
        };
        off += 4 + len;
        if assoc != 0 {
            continue;
        }
        let text = || {
            String::from_utf8_lossy(id)
                .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string()
        };
        let cand = match kind {
            3 => Some((0, format!("naa.{}", hex(id)))),
            2 => Some((1, format!("eui.{}", hex(id)))),
            8 if code_set == 3 => Some((2, text())),
            1 if code_set == 2 => Some((3, format!("t10.{}", text()))),
            _ => None,
        };
        if let Some(c) = cand {
            if best.as_ref().is_none_or(|b| c.0 < b.0) {
                best = Some(c);
            }
        }
    }
    best.map(|b| b.1)
}

/// The product serial number of a VPD page 0x80.
pub fn serial_from_vpd80(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let end = (4 + page[3] as usize).min(page.len());
    let s = String::from_utf8_lossy(&page[4..end])
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// Identity of a SCSI device from its sysfs directory.
pub fn scsi_identity(dev_dir: &Path) -> Identity {
    let wwid = attr(&dev_dir.join("wwid")).or_else(|| {
        fs::read(dev_dir.join("vpd_pg83"))
            .ok()
            .and_then(|p| wwid_from_vpd83(&p))
    });
    let serial = fs::read(dev_dir.join("vpd_pg80"))
        .ok()
        .and_then(|p| serial_from_vpd80(&p));
    Identity { wwid, serial }
}

/// Identity of an NVMe drive from its controller's sysfs directory and, if it
/// has one, its namespace's block directory.
pub fn nvme_identity(ctrl_dir: &Path, ns_dir: Option<&Path>) -> Identity {
    let ns_id = ns_dir.and_then(|d| {
        attr(&d.join("wwid"))
            .or_else(|| attr(&d.join("nguid")).map(|n| format!("eui.{}", n.replace('-', ""))))
            .or_else(|| attr(&d.join("eui")).map(|n| format!("eui.{}", n.replace([' ', '-'], ""))))
    });
    let wwid = ns_id.or_else(|| attr(&ctrl_dir.join("subsysnqn")).map(|n| format!("nqn:{n}")));
    Identity {
        wwid,
        serial: attr(&ctrl_dir.join("serial")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desig(code_set: u8, assoc: u8, kind: u8, id: &[u8]) -> Vec<u8> {
        let mut v = vec![code_set, (assoc << 4) | kind, 0, id.len() as u8];
        v.extend_from_slice(id);
        v
    }

    fn page83(ds: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = ds.concat();
        let mut p = vec![0, 0x83];
        p.extend_from_slice(&(body.len() as u16).to_be_bytes());
        p.extend(body);
        p
    }

    #[test]
    fn vpd83_prefers_naa_of_the_logical_unit() {
        let t10 = desig(2, 0, 1, b"Linux   scsi_debug      2000");
        let naa = desig(1, 0, 3, &[0x53, 0x33, 0x33, 0x30, 0, 0, 0, 1]);
        let port = desig(1, 1, 3, &[0x52, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(
            wwid_from_vpd83(&page83(&[t10.clone(), port.clone(), naa])),
            Some("naa.5333333000000001".into())
        );
        assert_eq!(
            wwid_from_vpd83(&page83(&[t10, port])),
            Some("t10.Linux   scsi_debug      2000".into())
        );
        // Truncated or foreign pages give nothing, never a panic.
        let mut p = page83(&[desig(1, 0, 3, &[1, 2, 3, 4, 5, 6, 7, 8])]);
        p.truncate(9);
        assert_eq!(wwid_from_vpd83(&p), None);
        assert_eq!(wwid_from_vpd83(&[0, 0x80, 0, 0]), None);
        assert_eq!(wwid_from_vpd83(&[]), None);
    }

    #[test]
    fn vpd80_serial() {
        assert_eq!(
            serial_from_vpd80(&[0, 0x80, 0, 6, b' ', b'Z', b'A', b'1', b'2', 0]),
            Some("ZA12".into())
        );
        assert_eq!(serial_from_vpd80(&[0, 0x80, 0, 0]), None);
        assert_eq!(serial_from_vpd80(&[0, 0x83]), None);
    }

    #[test]
    fn keys() {
        let a = Identity {
            wwid: Some("naa.1".into()),
            serial: Some("S".into()),
        };
        assert_eq!(a.key().as_deref(), Some("naa.1"));
        let b = Identity {
            wwid: None,
            serial: Some("S".into()),
        };
        assert_eq!(b.key().as_deref(), Some("serial:S"));
        assert_eq!(Identity::default().key(), None);
    }
}
