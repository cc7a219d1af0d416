//! Host-wide fault injection: one percentage that every process on the host that
//! opted in ([`enable`]; the C library does, at start) applies to its drive
//! commands, on top of each lockspace's own.
//!
//! LVM2's IDM tests inject faults from a helper process (`ilm_inject_fault(pct)`)
//! and expect lvmlockd's drive I/O to fail; the old lock manager was one daemon,
//! so its knob was global. Here every process links its own engine, so the knob is
//! a small file: **`/run/idm-engine/inject-fault`** (`IDM_FAULT_FILE` overrides the
//! path), holding the percentage as decimal text. `ilm_inject_fault` writes it;
//! engines read it at most every [`REFRESH`] (one `pread` per refresh, not per
//! command), so a change takes effect within that time. A missing or unreadable
//! file means 0. Writing 0 (or deleting the file) ends the injection.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// How often an engine re-reads the file.
pub const REFRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// The default path of the file.
pub const DEFAULT_PATH: &str = "/run/idm-engine/inject-fault";

/// The file's path: `IDM_FAULT_FILE`, else [`DEFAULT_PATH`].
pub fn path() -> PathBuf {
    std::env::var_os("IDM_FAULT_FILE")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PATH), PathBuf::from)
}

/// Sets the host-wide percentage (0..=100); creates the file's directory if
/// needed.
pub fn set_percent(pct: u32) -> std::io::Result<()> {
    if pct > 100 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("fault percentage {pct} is over 100"),
        ));
    }
    let p = path();
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written in place (one small write): readers see the old or the new text.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&p)?;
    f.write_all(format!("{pct:<3}\n").as_bytes())?;
    cache().store(pct);
    Ok(())
}

/// Parses the file's text (a decimal percentage, clamped to 100; anything else 0).
pub fn parse(text: &[u8]) -> u32 {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| {
            s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .parse::<u32>()
                .ok()
        })
        .map_or(0, |v| v.min(100))
}

struct Cache {
    origin: Instant,
    value: AtomicU32,
    /// Nanoseconds since `origin` at which to read the file again.
    next: AtomicU64,
}

impl Cache {
    fn store(&self, v: u32) {
        self.value.store(v, Ordering::Relaxed);
    }
}

fn cache() -> &'static Cache {
    static C: OnceLock<Cache> = OnceLock::new();
    C.get_or_init(|| Cache {
        origin: Instant::now(),
        value: AtomicU32::new(0),
        next: AtomicU64::new(0),
    })
}

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes this process's engines follow the host-wide percentage.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The host-wide percentage now (cached; re-read at most every [`REFRESH`]); 0
/// unless [`enable`] was called.
pub fn percent() -> u32 {
    if !ENABLED.load(Ordering::Relaxed) {
        return 0;
    }
    let c = cache();
    let now = c.origin.elapsed().as_nanos() as u64;
    let next = c.next.load(Ordering::Relaxed);
    if now >= next
        && c.next
            .compare_exchange(
                next,
                now + REFRESH.as_nanos() as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    {
        let mut buf = [0u8; 8];
        let v = std::fs::File::open(path())
            .and_then(|f| f.read_at(&mut buf, 0))
            .map_or(0, |n| parse(&buf[..n]));
        c.store(v);
    }
    c.value.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_set_writes_and_refuses_nonsense() {
        assert_eq!(parse(b"25 \n"), 25);
        assert_eq!(parse(b"100\n"), 100);
        assert_eq!(parse(b"250"), 100);
        assert_eq!(parse(b"x"), 0);
        assert_eq!(parse(b""), 0);
        assert_eq!(parse(b"7\0\0"), 7);
    }
}
