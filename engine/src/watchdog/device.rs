//! `/dev/watchdog` directly: open (which starts the timer), `WDIOC_SETTIMEOUT`
//! (which pets), `WDIOC_KEEPALIVE`, and the magic close (`'V'`, then close) that
//! stops it. Thin: every decision is [`super::plan`]'s.
//!
//! A device is only opened when it is inactive and can be stopped again: its
//! sysfs `state` must not say `active` (a running timer is someone else's, or a
//! crashed previous holder's, whose deadline we do not know: re-opening would pet
//! it past that deadline) and `nowayout` must be off (else disarming is
//! impossible and releasing every lock would still reset the host).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `struct watchdog_info` (`<linux/watchdog.h>`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchdogInfo {
    /// `WDIOF_*` flags the driver supports.
    pub options: u32,
    /// Firmware version.
    pub firmware_version: u32,
    /// The driver's name.
    pub identity: [u8; 32],
}

/// `WDIOF_SETTIMEOUT`: the timeout can be set.
pub const WDIOF_SETTIMEOUT: u32 = 0x0080;
/// `WDIOF_MAGICCLOSE`: writing `'V'` before close stops the timer.
pub const WDIOF_MAGICCLOSE: u32 = 0x0100;
/// `WDIOF_KEEPALIVEPING`: `WDIOC_KEEPALIVE` is supported.
pub const WDIOF_KEEPALIVEPING: u32 = 0x8000;

mod ioctl {
    use super::WatchdogInfo;
    // SAFETY (all three): the request numbers and argument types are those of
    // <linux/watchdog.h> (`_IOR('W', 0, struct watchdog_info)`,
    // `_IOR('W', 5, int)`, `_IOWR('W', 6, int)`); the generated functions are
    // only called with a valid fd and a pointer to a live value of that type.
    nix::ioctl_read!(getsupport, b'W', 0, WatchdogInfo);
    nix::ioctl_read!(keepalive, b'W', 5, libc_int);
    nix::ioctl_readwrite!(settimeout, b'W', 6, libc_int);
    #[allow(non_camel_case_types)]
    pub type libc_int = std::os::raw::c_int;
}

/// The sysfs directory of the watchdog behind `dev` (`/sys/class/watchdog/<name>`),
/// for `/dev/watchdog` the first one (`watchdog0`).
fn sysfs_dir(sys: &Path, dev: &Path) -> PathBuf {
    let name = dev
        .file_name()
        .and_then(|n| n.to_str())
        .map_or("watchdog0".to_string(), |n| {
            if n == "watchdog" {
                "watchdog0".to_string()
            } else {
                n.to_string()
            }
        });
    sys.join("class/watchdog").join(name)
}

/// What sysfs says about a watchdog device before it is opened.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// The driver's identity (`softdog`, `i6300ESB timer`...), when sysfs has it.
    pub identity: Option<String>,
    /// `active` / `inactive`, when sysfs has it.
    pub state: Option<String>,
    /// Whether the timer cannot be stopped once started.
    pub nowayout: Option<bool>,
    /// Longest timeout, seconds.
    pub max_timeout: Option<u32>,
    /// Shortest timeout, seconds.
    pub min_timeout: Option<u32>,
}

impl DeviceInfo {
    /// Reads `/sys/class/watchdog/<dev>/`; missing attributes stay `None`.
    pub fn read(sys: &Path, dev: &Path) -> DeviceInfo {
        let dir = sysfs_dir(sys, dev);
        let get = |a: &str| {
            std::fs::read_to_string(dir.join(a))
                .ok()
                .map(|s| s.trim().to_string())
        };
        DeviceInfo {
            identity: get("identity"),
            state: get("state"),
            nowayout: get("nowayout").map(|s| s == "1"),
            max_timeout: get("max_timeout").and_then(|s| s.parse().ok()),
            min_timeout: get("min_timeout").and_then(|s| s.parse().ok()),
        }
    }

    /// Why this device must not be opened, if it must not.
    pub fn refusal(&self) -> Option<String> {
        if self.state.as_deref() == Some("active") {
            return Some(
                "the watchdog is already running (another program, or a crashed previous \
                 holder whose deadline is unknown: re-opening it would pet it)"
                    .into(),
            );
        }
        if self.nowayout == Some(true) {
            return Some("the watchdog has nowayout set: it could never be disarmed".into());
        }
        None
    }
}

/// Whether `dev` exists and can be opened for writing (without opening it:
/// opening starts the timer).
pub fn accessible(dev: &Path) -> Result<(), String> {
    nix::unistd::access(dev, nix::unistd::AccessFlags::W_OK)
        .map_err(|e| format!("{}: {e}", dev.display()))
}

/// An open, running watchdog device.
pub struct Device {
    file: File,
    path: PathBuf,
    /// Its current timeout, seconds.
    pub timeout_s: u32,
}

impl Device {
    /// Opens `dev` (this starts its timer with the driver's current timeout) and
    /// sets `timeout_s` at once. Refused when sysfs says it is running or cannot
    /// be stopped, or the driver cannot set a timeout or stop on magic close.
    pub fn open(sys: &Path, dev: &Path, timeout_s: u32) -> Result<Device, String> {
        let info = DeviceInfo::read(sys, dev);
        if let Some(why) = info.refusal() {
            return Err(format!("{}: {why}", dev.display()));
        }
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(dev)
            .map_err(|e| format!("cannot open {}: {e}", dev.display()))?;
        let mut d = Device {
            file,
            path: dev.to_path_buf(),
            timeout_s: 0,
        };
        let mut wi = WatchdogInfo::default();
        // SAFETY: valid fd, `wi` is a live `watchdog_info`.
        let support = unsafe { ioctl::getsupport(d.file.as_raw_fd(), &mut wi) };
        let need = WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE;
        match support {
            Ok(_) if wi.options & need == need => {}
            Ok(_) => {
                let e = format!(
                    "{}: driver lacks settable timeout or magic close (options {:#x})",
                    dev.display(),
                    wi.options
                );
                // Cannot be stopped cleanly: say so loudly, try anyway.
                d.close_magic();
                return Err(e);
            }
            Err(e) => {
                d.close_magic();
                return Err(format!("{}: WDIOC_GETSUPPORT: {e}", dev.display()));
            }
        }
        if let Err(e) = d.set_timeout(timeout_s) {
            d.close_magic();
            return Err(e);
        }
        Ok(d)
    }

    /// `WDIOC_SETTIMEOUT` (pets too). The driver may round the timeout: the
    /// value it reports is kept, and one longer than asked is an error (the
    /// caller then shortens or gives up).
    pub fn set_timeout(&mut self, timeout_s: u32) -> Result<u32, String> {
        let mut t = timeout_s.min(i32::MAX as u32) as ioctl::libc_int;
        // SAFETY: valid fd, `t` is a live int the kernel reads and writes.
        unsafe { ioctl::settimeout(self.file.as_raw_fd(), &mut t) }
            .map_err(|e| format!("{}: WDIOC_SETTIMEOUT {timeout_s}: {e}", self.path.display()))?;
        let got = u32::try_from(t).unwrap_or(0);
        self.timeout_s = got;
        if got == 0 || got > timeout_s {
            return Err(format!(
                "{}: asked for a {timeout_s} s timeout, the driver set {got} s",
                self.path.display()
            ));
        }
        Ok(got)
    }

    /// `WDIOC_KEEPALIVE`.
    pub fn pet(&mut self) -> Result<(), String> {
        let mut unused: ioctl::libc_int = 0;
        // SAFETY: valid fd, `unused` is a live int.
        unsafe { ioctl::keepalive(self.file.as_raw_fd(), &mut unused) }
            .map(|_| ())
            .map_err(|e| format!("{}: WDIOC_KEEPALIVE: {e}", self.path.display()))
    }

    /// Stops the timer: the magic character, then close.
    pub fn close_magic(mut self) {
        if let Err(e) = self.file.write_all(b"V") {
            tracing::error!(device = %self.path.display(), error = %e, "watchdog magic close failed: the timer keeps running");
        }
        drop(self.file);
    }

    /// Closes without the magic character: the timer keeps running and resets
    /// the host when it expires (the engine stops while holding locks).
    pub fn close_running(self) {
        drop(self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(std::mem::size_of::<WatchdogInfo>(), 40);
    }

    #[test]
    fn sysfs_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("class/watchdog/watchdog0");
        std::fs::create_dir_all(&w).unwrap();
        let dev = Path::new("/dev/watchdog");
        assert_eq!(DeviceInfo::read(dir.path(), dev).refusal(), None);
        std::fs::write(w.join("identity"), "Software Watchdog\n").unwrap();
        std::fs::write(w.join("state"), "inactive\n").unwrap();
        std::fs::write(w.join("nowayout"), "0\n").unwrap();
        std::fs::write(w.join("max_timeout"), "65535\n").unwrap();
        let i = DeviceInfo::read(dir.path(), dev);
        assert_eq!(i.identity.as_deref(), Some("Software Watchdog"));
        assert_eq!(i.max_timeout, Some(65535));
        assert_eq!(i.refusal(), None);
        std::fs::write(w.join("state"), "active\n").unwrap();
        assert!(DeviceInfo::read(dir.path(), dev)
            .refusal()
            .unwrap()
            .contains("already running"));
        std::fs::write(w.join("state"), "inactive\n").unwrap();
        std::fs::write(w.join("nowayout"), "1\n").unwrap();
        assert!(DeviceInfo::read(dir.path(), dev)
            .refusal()
            .unwrap()
            .contains("nowayout"));
        // /dev/watchdog1 is watchdog1.
        assert_eq!(
            sysfs_dir(dir.path(), Path::new("/dev/watchdog1")),
            dir.path().join("class/watchdog/watchdog1")
        );
    }
}
