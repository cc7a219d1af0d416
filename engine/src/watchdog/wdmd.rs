//! A client of sanlock's watchdog multiplexer `wdmd` (Debian package `sanlock`),
//! written from its documented client protocol: a stream socket
//! (`/run/wdmd/wdmd.sock`), fixed-size native-endian headers of 176 bytes
//! (six u32: magic, cmd, len, flags, test_interval, fire_timeout; three u64:
//! last_keepalive, renewal_time, expire_time; a 128-byte name). Commands:
//! register (1, with the name), refcount set (2) / clear (3), test live (4: the
//! client's renewal and expiry times, whole seconds of `CLOCK_MONOTONIC`; expiry
//! 0 means "do not test me"), status (5: wdmd answers with its test interval,
//! fire timeout and last keepalive).
//!
//! wdmd tests its clients every `test_interval` seconds and pets `/dev/watchdog`
//! only when no client's expiry has been reached; the device then resets the
//! host `fire_timeout` after the last pet. A client that dies with an expiry set
//! keeps being tested, so a killed holder still resets the host. The arithmetic
//! is [`super::plan::WatchdogPlan::wdmd_expire`].

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default socket.
pub const DEFAULT_SOCKET: &str = "/run/wdmd/wdmd.sock";
/// Size of the name field.
pub const NAME_SIZE: usize = 128;
/// Size of one header.
pub const HEADER_SIZE: usize = 24 + 24 + NAME_SIZE;

/// Register the connection under a name.
pub const CMD_REGISTER: u32 = 1;
/// The client has something to protect (wdmd will not exit while set).
pub const CMD_REFCOUNT_SET: u32 = 2;
/// It has nothing to protect any more.
pub const CMD_REFCOUNT_CLEAR: u32 = 3;
/// The client's renewal and expiry times.
pub const CMD_TEST_LIVE: u32 = 4;
/// Ask for wdmd's test interval, fire timeout and last keepalive.
pub const CMD_STATUS: u32 = 5;

/// One protocol header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The command.
    pub cmd: u32,
    /// Seconds between wdmd's tests (status answer).
    pub test_interval: u32,
    /// Seconds from the last pet to the reset (status answer).
    pub fire_timeout: u32,
    /// When wdmd last petted, monotonic seconds (status answer).
    pub last_keepalive: u64,
    /// The client's last renewal, monotonic seconds.
    pub renewal_time: u64,
    /// The client's expiry, monotonic seconds (0: not tested).
    pub expire_time: u64,
    /// The client's name (register).
    pub name: String,
}

impl Header {
    /// A header for `cmd` with everything else zero.
    pub fn new(cmd: u32) -> Header {
        Header {
            cmd,
            test_interval: 0,
            fire_timeout: 0,
            last_keepalive: 0,
            renewal_time: 0,
            expire_time: 0,
            name: String::new(),
        }
    }

    /// The wire bytes (native endianness, as wdmd reads a C struct).
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let u32s = [0, self.cmd, 0, 0, self.test_interval, self.fire_timeout];
        for (i, v) in u32s.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        let u64s = [self.last_keepalive, self.renewal_time, self.expire_time];
        for (i, v) in u64s.iter().enumerate() {
            b[24 + i * 8..32 + i * 8].copy_from_slice(&v.to_ne_bytes());
        }
        let n = self.name.as_bytes();
        let len = n.len().min(NAME_SIZE - 1);
        b[48..48 + len].copy_from_slice(&n[..len]);
        b
    }

    /// Parses wire bytes.
    pub fn decode(b: &[u8; HEADER_SIZE]) -> Header {
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_ne_bytes(a)
        };
        let name = &b[48..];
        let end = name.iter().position(|&c| c == 0).unwrap_or(NAME_SIZE);
        Header {
            cmd: u32_at(4),
            test_interval: u32_at(16),
            fire_timeout: u32_at(20),
            last_keepalive: u64_at(24),
            renewal_time: u64_at(32),
            expire_time: u64_at(40),
            name: String::from_utf8_lossy(&name[..end]).into_owned(),
        }
    }
}

/// wdmd's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Seconds between tests.
    pub test_interval: u32,
    /// Seconds from the last pet to the reset.
    pub fire_timeout: u32,
    /// Last pet, monotonic seconds.
    pub last_keepalive: u64,
}

/// A registered connection to wdmd.
pub struct Wdmd {
    sock: UnixStream,
    path: PathBuf,
}

impl Wdmd {
    /// Connects to wdmd at `path` (a short timeout: it answers at once or not
    /// at all).
    pub fn connect(path: &Path) -> Result<Wdmd, String> {
        let sock =
            UnixStream::connect(path).map_err(|e| format!("wdmd at {}: {e}", path.display()))?;
        let t = Some(Duration::from_secs(2));
        let _ = sock.set_read_timeout(t);
        let _ = sock.set_write_timeout(t);
        Ok(Wdmd {
            sock,
            path: path.to_path_buf(),
        })
    }

    fn send(&mut self, h: &Header) -> Result<(), String> {
        self.sock
            .write_all(&h.encode())
            .map_err(|e| format!("wdmd at {}: {e}", self.path.display()))
    }

    /// Asks for wdmd's timing.
    pub fn status(&mut self) -> Result<Status, String> {
        self.send(&Header::new(CMD_STATUS))?;
        let mut b = [0u8; HEADER_SIZE];
        self.sock
            .read_exact(&mut b)
            .map_err(|e| format!("wdmd at {}: status: {e}", self.path.display()))?;
        let h = Header::decode(&b);
        Ok(Status {
            test_interval: h.test_interval,
            fire_timeout: h.fire_timeout,
            last_keepalive: h.last_keepalive,
        })
    }

    /// Registers as `name` and takes a reference (wdmd then will not exit).
    pub fn register(&mut self, name: &str) -> Result<(), String> {
        let mut h = Header::new(CMD_REGISTER);
        h.name = name.to_string();
        self.send(&h)?;
        self.send(&Header::new(CMD_REFCOUNT_SET))
    }

    /// Sets this client's renewal and expiry (monotonic seconds; expiry 0: stop
    /// testing this client, i.e. disarm).
    pub fn test_live(&mut self, renewal: u64, expire: u64) -> Result<(), String> {
        let mut h = Header::new(CMD_TEST_LIVE);
        h.renewal_time = renewal;
        h.expire_time = expire;
        self.send(&h)
    }

    /// Disarms and drops the reference; the connection closes on drop.
    pub fn disarm(mut self) -> Result<(), String> {
        self.test_live(0, 0)?;
        self.send(&Header::new(CMD_REFCOUNT_CLEAR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_round_trips() {
        assert_eq!(HEADER_SIZE, 176);
        let mut h = Header::new(CMD_TEST_LIVE);
        h.renewal_time = 1234;
        h.expire_time = 5678;
        h.name = "idm-engine".into();
        let b = h.encode();
        assert_eq!(&b[4..8], &CMD_TEST_LIVE.to_ne_bytes());
        assert_eq!(&b[32..40], &1234u64.to_ne_bytes());
        assert_eq!(&b[40..48], &5678u64.to_ne_bytes());
        assert_eq!(&b[48..58], b"idm-engine");
        assert_eq!(Header::decode(&b), h);
    }

    #[test]
    fn talks_to_a_fake_wdmd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wdmd.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; HEADER_SIZE];
            while s.read_exact(&mut b).is_ok() {
                let h = Header::decode(&b);
                if h.cmd == CMD_STATUS {
                    let mut r = h.clone();
                    r.test_interval = 10;
                    r.fire_timeout = 60;
                    r.last_keepalive = 99;
                    s.write_all(&r.encode()).unwrap();
                }
                got.push(h);
            }
            got
        });
        let mut w = Wdmd::connect(&path).unwrap();
        assert_eq!(
            w.status().unwrap(),
            Status {
                test_interval: 10,
                fire_timeout: 60,
                last_keepalive: 99
            }
        );
        w.register("idm-1").unwrap();
        w.test_live(5, 40).unwrap();
        w.disarm().unwrap();
        let got = server.join().unwrap();
        let cmds: Vec<u32> = got.iter().map(|h| h.cmd).collect();
        assert_eq!(
            cmds,
            vec![
                CMD_STATUS,
                CMD_REGISTER,
                CMD_REFCOUNT_SET,
                CMD_TEST_LIVE,
                CMD_TEST_LIVE,
                CMD_REFCOUNT_CLEAR
            ]
        );
        assert_eq!(got[1].name, "idm-1");
        assert_eq!((got[3].renewal_time, got[3].expire_time), (5, 40));
        assert_eq!(got[4].expire_time, 0);
    }
}
