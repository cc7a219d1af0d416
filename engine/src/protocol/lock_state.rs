//! The per-lock state a reactor owns: what each drive granted us, and when.

use uring_sg::transport::Request;
use uring_sg::{Class, ControlByte, HostId, LockId, Lvb, Mode, MutexOp, Record};

use super::{quorum, Now};
use crate::time::Nanos;

/// What names a lock on its drives and how long a drive keeps our membership.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LockSpec {
    /// The mutex's ID on every drive.
    pub lock_id: LockId,
    /// This host's ID.
    pub host_id: HostId,
    /// How many drives the lock spans (1..=512); drives are numbered `0..n_drives`.
    pub n_drives: u16,
    /// The membership countdown sent with every trylock/refresh/break, in ms.
    pub countdown_ms: u64,
}

impl LockSpec {
    /// The countdown as a span.
    pub fn countdown(&self) -> Nanos {
        Nanos::from_millis(self.countdown_ms)
    }

    /// ⌊n/2⌋+1 for this lock.
    pub fn majority(&self) -> u16 {
        quorum::majority(self.n_drives)
    }
}

/// What this host knows about its membership on one drive.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DriveHold {
    /// The drive granted (or renewed) our membership and we have not given it up.
    pub held: bool,
    /// The class our membership has on that drive.
    pub class: Class,
    /// When the command behind the last grant/refresh on this drive was **sent**:
    /// the drive's countdown started after this, so the membership is trusted until
    /// `sent + countdown` (IDM.md §7).
    pub sent: Nanos,
    /// This drive's membership was obtained by break (a previous holder expired).
    pub by_break: bool,
}

impl DriveHold {
    /// A drive on which we hold nothing.
    pub const EMPTY: DriveHold = DriveHold {
        held: false,
        class: Class::Exclusive,
        sent: Nanos::ZERO,
        by_break: false,
    };
}

/// A small seeded xorshift64* generator: jitter that replays exactly for one seed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator from `seed` (zero is replaced by a fixed non-zero constant).
    pub fn new(seed: u64) -> XorShift64 {
        XorShift64(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next pseudo-random value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi` (`lo` if `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        match span.checked_add(1) {
            Some(m) => lo + self.next_u64() % m,
            None => self.next_u64(),
        }
    }
}

/// The state of one lock, owned by its reactor and lent to one operation at a time.
///
/// Operations on one lock are serialized (see [`super::Operation`]), so this is
/// the single source of truth for the lease: [`crate::lease::validity`] reads the
/// per-drive send times here.
#[derive(Clone, Debug)]
pub struct LockState {
    /// Names and countdown.
    pub spec: LockSpec,
    /// The mode we hold the lock in (`None`: not held).
    pub mode: Option<Mode>,
    /// One entry per drive, indexed by drive number.
    pub drives: Vec<DriveHold>,
    /// The LVB to store on the drives at release. Written by "write LVB"; sent with
    /// the unlock only when set. Byte 7 does not survive the drive (IDM.md §5): the
    /// wire overwrites it with the control byte, so it reads back as zero.
    pub lvb: Option<Lvb>,
    /// Some drive of this lock was obtained by break since the last acquire: the
    /// previous holder may not have stored its LVB (read LVB returns all-ones).
    pub broken: bool,
    /// Send time of the last renewal that reached a majority.
    pub last_renewal: Option<Nanos>,
    /// Backoff jitter; seeded by the caller so a run replays.
    pub rng: XorShift64,
    /// Records a table read asks for first (the lock table sets it from the
    /// table sizes it saw lately; 0: [`super::table::DEFAULT_TABLE_HINT`]).
    pub table_hint: u32,
}

impl LockState {
    /// A lock not held on any drive; `seed` seeds the backoff jitter.
    pub fn new(spec: LockSpec, seed: u64) -> LockState {
        LockState {
            spec,
            mode: None,
            drives: vec![DriveHold::EMPTY; spec.n_drives as usize],
            lvb: None,
            broken: false,
            last_renewal: None,
            rng: XorShift64::new(seed),
            table_hint: 0,
        }
    }

    /// Records a table read asks for first.
    pub fn table_hint(&self) -> u32 {
        if self.table_hint == 0 {
            super::table::DEFAULT_TABLE_HINT
        } else {
            self.table_hint
        }
    }

    /// Drives on which we hold membership now.
    pub fn held_count(&self) -> u16 {
        let n = self.drives.iter().filter(|d| d.held).count();
        u16::try_from(n).unwrap_or(u16::MAX)
    }

    /// Whether `drive` holds our membership.
    pub fn is_held(&self, drive: u16) -> bool {
        self.drives.get(drive as usize).is_some_and(|d| d.held)
    }

    /// Records a grant or refresh on `drive`, sent at `sent`, in `class`.
    pub fn grant(&mut self, drive: u16, class: Class, sent: Nanos, by_break: bool) {
        if let Some(d) = self.drives.get_mut(drive as usize) {
            d.held = true;
            d.class = class;
            d.sent = sent;
            d.by_break |= by_break;
        }
        self.broken |= by_break;
    }

    /// Records that `drive` no longer counts (given up, expired, refused).
    pub fn drop_drive(&mut self, drive: u16) {
        if let Some(d) = self.drives.get_mut(drive as usize) {
            d.held = false;
        }
    }

    /// Forgets every drive's membership and the mode (at release).
    pub fn clear(&mut self) {
        self.mode = None;
        for d in &mut self.drives {
            *d = DriveHold::EMPTY;
        }
    }

    /// The class our membership has on `drive`, or the class of `mode` when the
    /// drive holds nothing.
    pub fn class_on(&self, drive: u16, mode: Mode) -> Class {
        match self.drives.get(drive as usize) {
            Some(d) if d.held => d.class,
            _ => mode.class(),
        }
    }

    /// A mutex-write request for this lock.
    pub fn request(&self, op: MutexOp, class: Class, now: Now) -> Request {
        let mut record = Record::new(self.spec.lock_id, self.spec.host_id, class);
        record.time_ms = now.wall_ms;
        record.countdown_ms = self.spec.countdown_ms;
        Request::Mutex { op, record }
    }

    /// An unlock request for this lock, carrying `lvb` (control "update") when given.
    /// The control byte is then `1` (update), what the old host code sent with unlock.
    pub fn unlock_request(&self, class: Class, lvb: Option<Lvb>, now: Now) -> Request {
        let mut record = Record::new(self.spec.lock_id, self.spec.host_id, class);
        record.time_ms = now.wall_ms;
        record.countdown_ms = self.spec.countdown_ms;
        if let Some(lvb) = lvb {
            record.lvb = lvb;
            record.control = ControlByte::UpdateNotValid;
        }
        Request::Mutex {
            op: MutexOp::Unlock,
            record,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_replays_and_ranges() {
        let mut a = XorShift64::new(7);
        let mut b = XorShift64::new(7);
        for _ in 0..100 {
            let x = a.range(500_000, 1_000_000);
            assert_eq!(x, b.range(500_000, 1_000_000));
            assert!((500_000..=1_000_000).contains(&x));
        }
        assert_ne!(XorShift64::new(0).next_u64(), 0);
    }

    #[test]
    fn grant_and_drop() {
        let spec = LockSpec {
            lock_id: LockId::default(),
            host_id: HostId::default(),
            n_drives: 3,
            countdown_ms: 1000,
        };
        let mut s = LockState::new(spec, 1);
        s.grant(1, Class::Exclusive, Nanos(5), true);
        assert!(s.is_held(1) && s.broken && s.held_count() == 1);
        s.drop_drive(1);
        assert_eq!(s.held_count(), 0);
        s.grant(9, Class::Exclusive, Nanos(5), false); // out of range: ignored
        assert_eq!(s.held_count(), 0);
    }
}
