//! A simulated drive: the firmware model behind the real byte path, with its own
//! drifting clock, a serial command executor, stalls and power cycles.
//!
//! A command goes through the same bytes a real transport would move:
//! [`Request::scsi_cdb`] and [`Request::encode_data_out`] → [`Firmware::execute`]
//! → [`Condition::from_scsi`]`(..).into_result(kind)` → [`Reply`]. So every run
//! also exercises the codec in both directions.
//!
//! **Timing.** A command arriving at true time `t` executes at
//! `max(t, stalled_until, busy_until) + service`; the firmware sees the drive's
//! clock reading at that moment (its countdowns start then, after the host sent the
//! command, as on a real drive). A drive that is **down** (power-cycled, rebooting)
//! loses every command that arrives or would execute meanwhile.
//!
//! **Ground truth.** [`SimDrive::live_member`] answers "does this drive, right now,
//! count `host` as a live member of `lock`", which is what decides whether another
//! host could take the lock. While a drive is down after a power cycle, the
//! memberships it lost are kept as *ghosts* until their countdown would have run
//! out: no host can be granted anything on a down drive, so a ghost still protects
//! its holder; when the drive comes back empty the ghosts are gone.

use idm_engine::Nanos;
use idm_sim::firmware::{Firmware, FirmwareConfig};
use uring_sg::transport::{Reply, Request};
use uring_sg::{Condition, HostId, LockId, MutexState, RECORD_LEN};

use crate::world::Clock;

/// Time the firmware takes per command.
pub const SERVICE: Nanos = Nanos::from_micros(10);

/// One simulated drive.
pub struct SimDrive {
    fw: Firmware,
    clock: Clock,
    stalled_until: Nanos,
    busy_until: Nanos,
    down_until: Option<Nanos>,
    /// True time of the last power cycle (while down).
    down_since: Nanos,
    ghosts: Vec<(LockId, HostId, Nanos)>,
    out: [u8; RECORD_LEN],
    data_in: Vec<u8>,
    /// Commands executed.
    pub executed: u64,
    /// BUSY is never answered: the command times out at the host, as Linux's SCSI
    /// midlayer makes it (it requeues a BUSY status until the command's timeout).
    pub busy_as_timeout: bool,
}

impl SimDrive {
    /// A drive with an empty table and this clock.
    pub fn new(cfg: FirmwareConfig, clock: Clock) -> SimDrive {
        SimDrive {
            fw: Firmware::new(cfg),
            clock,
            stalled_until: Nanos::ZERO,
            busy_until: Nanos::ZERO,
            down_until: None,
            down_since: Nanos::ZERO,
            ghosts: Vec::new(),
            out: [0; RECORD_LEN],
            data_in: Vec::new(),
            executed: 0,
            busy_as_timeout: false,
        }
    }

    /// The firmware (for inspection and for pre-filling the table).
    pub fn firmware_mut(&mut self) -> &mut Firmware {
        &mut self.fw
    }

    /// The drive's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether the drive is down at `t`.
    pub fn is_down(&self, t: Nanos) -> bool {
        self.down_until.is_some_and(|u| t < u)
    }

    /// A command arrives at `t`: when it will execute, or `None` if the drive is down.
    pub fn arrive(&mut self, t: Nanos) -> Option<Nanos> {
        if self.is_down(t) {
            return None;
        }
        let at = t.max(self.stalled_until).max(self.busy_until) + SERVICE;
        self.busy_until = at;
        Some(at)
    }

    /// Executes `req` at true time `t` (`None`: the drive went down meanwhile).
    pub fn execute(&mut self, t: Nanos, req: &Request) -> Option<Reply> {
        if self.is_down(t) {
            return None;
        }
        if self.down_until.is_some() {
            // Back up: the lost memberships are gone for good.
            self.down_until = None;
            self.ghosts.clear();
        }
        let (cdb, len) = req.scsi_cdb();
        let data_out: &[u8] = if req.encode_data_out(&mut self.out) {
            &self.out
        } else {
            &[]
        };
        let now_ms = self.clock.local_ms(t);
        let ans = self
            .fw
            .execute(now_ms, &cdb[..len], data_out, &mut self.data_in);
        self.executed += 1;
        let result = Condition::from_scsi(ans.status, ans.sense.as_slice()).into_result(req.kind());
        if self.busy_as_timeout && result == Err(uring_sg::DriveError::Busy) {
            return None;
        }
        let data = if result.is_ok() {
            let mut d = std::mem::take(&mut self.data_in);
            d.truncate(req.data_in_len());
            d
        } else {
            Vec::new()
        };
        Some(Reply { result, data })
    }

    /// Stalls the drive: nothing executes before `until`.
    pub fn stall(&mut self, until: Nanos) {
        self.stalled_until = self.stalled_until.max(until);
    }

    /// Power-cycles the drive at `t`: the table is lost and the drive is down until
    /// `until`. Live memberships become ghosts (see the module docs).
    pub fn power_cycle(&mut self, t: Nanos, until: Nanos) {
        let now_ms = self.clock.local_ms(t);
        for r in self.fw.snapshot(now_ms) {
            if matches!(r.state, MutexState::Locked | MutexState::MultipleLocked) {
                let end_ms = r.time_ms.saturating_add(r.countdown_ms);
                let end = self.clock.true_at(Nanos::from_millis(end_ms));
                self.ghosts.push((r.lock_id, r.host_id, end));
            }
        }
        self.fw.power_cycle();
        self.down_since = t;
        self.down_until = Some(self.down_until.map_or(until, |u| u.max(until)));
        self.busy_until = self.busy_until.max(until);
    }

    /// Ends a stall and brings a down drive back (faults are over): at `t`, but not
    /// before `min_down` after its last power cycle.
    ///
    /// A drive that lost its table must stay away for at least one lease (the
    /// engine's documented assumption, see the DESIGN NOTE in `idm-engine`): bringing
    /// it back at once would let a host's lost membership on it be granted to
    /// another host while the first still validly holds the lock on a bare
    /// majority. (Healing at `t` unconditionally was a harness bug: it broke that
    /// assumption at the end of every run with a drive down, and the checker
    /// reported `UsedWithoutMajority`.)
    pub fn heal(&mut self, t: Nanos, min_down: Nanos) {
        self.stalled_until = self.stalled_until.min(t);
        if self.is_down(t) {
            let back = t.max(self.down_since + min_down);
            self.down_until = Some(self.down_until.map_or(back, |u| u.min(back)));
        }
    }

    /// Ground truth: the LVB the drive stores for `lock` (`None`: no entry).
    pub fn stored_lvb(&self, lock: &LockId) -> Option<u64> {
        self.fw.table().get(lock).map(|e| e.lvb.to_u64())
    }

    /// Ground truth: whether the drive counts `host` as a live member of `lock` at `t`.
    pub fn live_member(&self, lock: &LockId, host: &HostId, t: Nanos) -> bool {
        if self.is_down(t) {
            return self
                .ghosts
                .iter()
                .any(|(l, h, end)| l == lock && h == host && t < *end);
        }
        let now_ms = self.clock.local_ms(t);
        self.fw
            .table()
            .get(lock)
            .and_then(|e| e.members.get(host))
            .is_some_and(|m| m.is_live(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uring_sg::{Class, MutexOp, Record};

    fn ms(x: u64) -> Nanos {
        Nanos::from_millis(x)
    }

    #[test]
    fn heal_keeps_a_power_cycled_drive_down_for_min_down() {
        let mut d = SimDrive::new(FirmwareConfig::default(), Clock::new(Nanos::ZERO, ms(0), 0));
        let lock: LockId = "l".parse().unwrap();
        let host: HostId = "h".parse().unwrap();
        let mut rec = Record::new(lock, host, Class::Exclusive);
        rec.countdown_ms = 1000;
        d.firmware_mut().apply(0, MutexOp::Trylock, &rec);
        assert!(d.live_member(&lock, &host, ms(10)));
        d.power_cycle(ms(100), ms(2100));
        // Down: the lost membership protects its holder as a ghost until it expires.
        assert!(d.live_member(&lock, &host, ms(500)));
        // Faults stop at 300: the drive comes back only 1100 ms after the cycle.
        d.heal(ms(300), ms(1100));
        assert!(d.is_down(ms(1199)));
        assert!(!d.is_down(ms(1200)));
        assert!(d.arrive(ms(1150)).is_none());
        assert!(d.arrive(ms(1200)).is_some());
        // A drive whose own down time is shorter comes back at that time.
        let mut d = SimDrive::new(FirmwareConfig::default(), Clock::new(Nanos::ZERO, ms(0), 0));
        d.power_cycle(ms(0), ms(500));
        d.heal(ms(100), ms(1100));
        assert!(!d.is_down(ms(500)));
        // A drive that is up is not touched.
        d.heal(ms(600), ms(1100));
        assert!(!d.is_down(ms(600)));
    }
}
