//! The watchdog's arithmetic, sans-IO: from `now`, the earliest validity end of
//! any held lock and the margins, decide whether to arm, pet, shorten, leave or
//! disarm the watchdog, and with what timeout (whole seconds: the granularity of
//! `WDIOC_SETTIMEOUT` and of wdmd's clock). The argument is in the crate docs
//! (DESIGN NOTE, "Watchdog").
//!
//! All times are host monotonic [`Nanos`] on one origin (the watchdog thread's).

use crate::time::Nanos;

/// One second, the granularity of every watchdog timeout.
pub const SECOND: Nanos = Nanos::from_secs(1);

/// The arming parameters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WatchdogPlan {
    /// The host must be reset at least this long before the earliest validity
    /// end (validity already has the drift margin taken off).
    pub margin: Nanos,
    /// Allowance for the arming call itself and the timer's lateness: a timeout
    /// `T` armed at `t` is trusted to fire by `t + T + slack`.
    pub slack: Nanos,
    /// Longest timeout the device takes, seconds (at least 1).
    pub max_timeout_s: u32,
    /// Re-arm (pet) when that moves the fire time at least this much later.
    pub min_gain: Nanos,
    /// Re-arm (with the shorter timeout the deadline then allows) once the
    /// device would fire within this long while the process is alive: a live
    /// engine whose renewals fail keeps the host up until just before the
    /// deadline, so the lease fence (kill path) runs first.
    pub rearm_ahead: Nanos,
    /// The device is petted once more when its file is closed without the
    /// magic character (Linux's `watchdog_release` does: a holder that dies,
    /// even while stopped, restarts the countdown once). A timeout `T` armed at
    /// `a` then fires as late as `a + 2T`, so timeouts are halved. True for
    /// `/dev/watchdog`.
    pub close_pets: bool,
}

/// What the device is doing, as the watchdog thread last left it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Armed {
    /// Latest time it fires unless petted, even if the process dies now (a
    /// close pets once more): the time the arming call returned plus twice its
    /// timeout when [`WatchdogPlan::close_pets`], else once.
    pub fires_by: Nanos,
    /// When it fires unless petted while the file stays open: the time the
    /// arming call returned plus its timeout.
    pub alive_by: Nanos,
    /// Its current timeout, seconds.
    pub timeout_s: u32,
}

/// What to do now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Nothing (unarmed and nothing held, or armed and still good).
    Nothing,
    /// Open the device if needed and set this timeout (which pets it).
    Arm {
        /// Seconds.
        timeout_s: u32,
    },
    /// Pet with the current timeout.
    Pet,
    /// Nothing held any more: disarm (magic close).
    Disarm,
    /// The reset deadline is too close for any timeout: leave the device alone
    /// (if armed, it fires by itself at `fires_by`); `late` when even that is
    /// after the deadline (the deadline moved earlier than the armed timeout and
    /// cannot be caught up: a validity that shrank within a second of its end).
    TooLate {
        /// The armed fire time is after the deadline (or nothing is armed).
        late: bool,
    },
}

impl WatchdogPlan {
    /// The defaults: 2 s margin, 250 ms slack, 60 s cap, re-arm on a 1 s gain.
    pub fn new() -> WatchdogPlan {
        WatchdogPlan {
            margin: Nanos::from_secs(2),
            slack: Nanos::from_millis(250),
            max_timeout_s: 60,
            min_gain: SECOND,
            rearm_ahead: SECOND,
            close_pets: true,
        }
    }

    /// How many timeouts after an arming the device fires at the latest.
    fn factor(&self) -> u64 {
        if self.close_pets {
            2
        } else {
            1
        }
    }

    /// The time by which the host must be reset: `validity - margin`.
    pub fn reset_deadline(&self, validity: Nanos) -> Nanos {
        validity.saturating_sub(self.margin)
    }

    /// The longest timeout (whole seconds, capped) that, armed at `now`, fires by
    /// `deadline` including the slack (and a close's extra pet); 0 when not
    /// even one second fits.
    pub fn timeout_for(&self, now: Nanos, deadline: Nanos) -> u32 {
        let room = deadline.saturating_sub(now).saturating_sub(self.slack);
        let s = room.0 / (SECOND.0 * self.factor());
        s.min(u64::from(self.max_timeout_s.max(1))) as u32
    }

    /// The decision at `now`, given the earliest validity end over every held
    /// lock (`None`: nothing held) and what is armed.
    pub fn decide(&self, now: Nanos, earliest: Option<Nanos>, armed: Option<Armed>) -> Action {
        let Some(v) = earliest else {
            return if armed.is_some() {
                Action::Disarm
            } else {
                Action::Nothing
            };
        };
        let deadline = self.reset_deadline(v);
        let t = self.timeout_for(now, deadline);
        match armed {
            None if t == 0 => Action::TooLate { late: true },
            None => Action::Arm { timeout_s: t },
            Some(a) => {
                let late = a.fires_by + self.slack > deadline;
                if t == 0 {
                    return Action::TooLate { late };
                }
                if late {
                    // The deadline moved earlier: shorten at once.
                    return Action::Arm { timeout_s: t };
                }
                let new_fire = now + Nanos::from_secs(u64::from(t) * self.factor());
                let gains = new_fire >= a.fires_by + self.min_gain;
                let due = a.alive_by <= now + self.rearm_ahead;
                if !gains && !due {
                    return Action::Nothing;
                }
                if t == a.timeout_s {
                    Action::Pet
                } else {
                    Action::Arm { timeout_s: t }
                }
            }
        }
    }

    /// After arming or petting with `timeout_s`, the call having returned at
    /// `returned`: what is armed (`fires_by` counts a close's extra pet).
    pub fn armed(&self, returned: Nanos, timeout_s: u32) -> Armed {
        Armed {
            fires_by: returned + Nanos::from_secs(u64::from(timeout_s) * self.factor()),
            alive_by: returned + Nanos::from_secs(u64::from(timeout_s)),
            timeout_s,
        }
    }

    /// wdmd's expiry for a reset deadline: wdmd pets its device only while every
    /// client's expiry (whole seconds of `CLOCK_MONOTONIC`) is in the future, so
    /// the host resets at the latest `fire_timeout` after a pet made before
    /// `max(expire, now)`. `now_s` and the result are `CLOCK_MONOTONIC` seconds,
    /// `deadline_s` is the reset deadline on that clock in nanoseconds. `None`
    /// when `now + fire_timeout + slack` is already past the deadline (wdmd
    /// cannot protect it).
    pub fn wdmd_expire(&self, now_ns: u64, deadline_ns: u64, fire_timeout_s: u32) -> Option<u64> {
        let latest_pet = deadline_ns
            .checked_sub(u64::from(fire_timeout_s) * SECOND.0)?
            .checked_sub(self.slack.0)?;
        if latest_pet < now_ns {
            return None;
        }
        // A test at whole second `t` passes while `t < expire`, and `t` is the
        // monotonic time truncated: a pet happens before `expire` seconds.
        Some(latest_pet / SECOND.0)
    }
}

impl Default for WatchdogPlan {
    fn default() -> Self {
        WatchdogPlan::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Nanos {
        Nanos::from_secs(x)
    }
    fn ms(x: u64) -> Nanos {
        Nanos::from_millis(x)
    }

    #[test]
    fn nothing_held_means_unarmed() {
        let p = WatchdogPlan::new();
        assert_eq!(p.decide(s(10), None, None), Action::Nothing);
        let a = p.armed(s(10), 5);
        assert_eq!(p.decide(s(11), None, Some(a)), Action::Disarm);
    }

    #[test]
    fn arms_with_whole_seconds_that_fire_before_the_deadline() {
        let p = WatchdogPlan::new();
        // Validity at 60.61 s: deadline 58.61; from 1 s, 57.36 s of room after
        // the slack: 57 s.
        let v = ms(60_610);
        assert_eq!(p.decide(s(1), Some(v), None), Action::Arm { timeout_s: 28 });
        let a = p.armed(ms(1_001), 28);
        // A holder killed just before it fires: closing pets once more.
        assert_eq!(a.fires_by, ms(57_001));
        assert!(a.fires_by + p.slack <= p.reset_deadline(v));
        // Capped at the device's maximum.
        let far = s(1000);
        assert_eq!(
            p.decide(s(1), Some(far), None),
            Action::Arm { timeout_s: 60 }
        );
    }

    #[test]
    fn every_decision_fires_strictly_before_validity() {
        // Exhaustive over a grid: whatever is armed, an Arm decision fires by
        // the deadline, and the deadline is before validity.
        let p = WatchdogPlan {
            margin: ms(1500),
            slack: ms(100),
            max_timeout_s: 30,
            min_gain: SECOND,
            rearm_ahead: SECOND,
            close_pets: true,
        };
        for v_ms in (0..20_000).step_by(137) {
            let v = ms(v_ms);
            for now_ms in (0..20_000).step_by(211) {
                let now = ms(now_ms);
                for armed in [None, Some(p.armed(now.saturating_sub(ms(300)), 3))] {
                    match p.decide(now, Some(v), armed) {
                        Action::Arm { timeout_s } => {
                            assert!(timeout_s >= 1);
                            let fire = now + s(2 * u64::from(timeout_s)) + p.slack;
                            assert!(fire <= p.reset_deadline(v), "{now:?} {v:?}");
                            assert!(p.reset_deadline(v) < v);
                        }
                        Action::Pet => {
                            let a = armed.unwrap();
                            let fire = now + s(2 * u64::from(a.timeout_s)) + p.slack;
                            assert!(fire <= p.reset_deadline(v));
                        }
                        Action::Nothing => {
                            let a = armed.unwrap();
                            assert!(a.fires_by + p.slack <= p.reset_deadline(v));
                        }
                        Action::TooLate { .. } => {
                            assert_eq!(p.timeout_for(now, p.reset_deadline(v)), 0);
                        }
                        Action::Disarm => panic!("something is held"),
                    }
                }
            }
        }
    }

    #[test]
    fn pets_as_validity_moves_and_shortens_when_it_shrinks() {
        let p = WatchdogPlan {
            close_pets: false,
            ..WatchdogPlan::new()
        };
        let a = p.armed(s(0), 20);
        // Validity unchanged (renewal not yet): fire time would not move 1 s.
        assert_eq!(
            p.decide(ms(500), Some(ms(22_400)), Some(a)),
            Action::Nothing
        );
        // Renewed: the same timeout, later.
        assert_eq!(p.decide(s(5), Some(ms(27_300)), Some(a)), Action::Pet);
        // Renewed more: a longer timeout.
        assert_eq!(
            p.decide(s(5), Some(s(40)), Some(a)),
            Action::Arm { timeout_s: 32 }
        );
        // A drive dropped and validity shrank below the armed fire time.
        assert_eq!(
            p.decide(s(5), Some(s(15)), Some(a)),
            Action::Arm { timeout_s: 7 }
        );
    }

    #[test]
    fn a_live_engine_keeps_the_host_up_until_just_before_the_deadline() {
        // Renewals fail (validity frozen at 59.39 s) but the process lives: the
        // thread re-arms with shrinking timeouts. Simulate its 500 ms ticks and
        // find when the device would fire.
        let p = WatchdogPlan::new();
        let v = ms(59_390);
        let deadline = p.reset_deadline(v);
        let mut armed: Option<Armed> = None;
        let mut now = ms(50);
        let fired = loop {
            if let Some(a) = armed {
                if a.alive_by <= now {
                    break a.alive_by;
                }
            }
            match p.decide(now, Some(v), armed) {
                Action::Arm { timeout_s } => armed = Some(p.armed(now, timeout_s)),
                Action::Pet => armed = Some(p.armed(now, armed.unwrap().timeout_s)),
                Action::Nothing | Action::TooLate { .. } => {}
                Action::Disarm => unreachable!(),
            }
            // At every moment a death (close pet) still fires by the deadline.
            assert!(armed.unwrap().fires_by + p.slack <= deadline);
            now = now + ms(500);
        };
        // After the lease fence (validity - 10 s = 49.39 s), in the last
        // seconds before the deadline (56.05 s with these numbers).
        assert!(fired > ms(49_390), "{fired:?}");
        assert!(fired >= ms(55_000), "{fired:?}");
        assert!(fired <= deadline);
    }

    /// A seeded simulation of the watchdog thread against a lock whose renewals
    /// come and go: ticks every 400-600 ms, renewals at random intervals, drives
    /// dropped now and then (validity shrinks), the holder dying at a random
    /// moment. Checked at every tick: a death now still fires by the deadline;
    /// while renewals keep validity far enough ahead, the device never fires.
    #[test]
    fn simulated_renewals_pauses_and_deaths() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        let mut fired = 0;
        for lease_s in [10u64, 60] {
            let p = WatchdogPlan::new();
            let lease = s(lease_s);
            let drift = ms(lease_s * 10 + 10);
            let renew_every = Nanos(lease.0 / 6);
            for _run in 0..200 {
                let mut now = ms(rnd(1000));
                let mut v = now + lease - drift;
                let mut next_renewal = now + renew_every;
                let mut armed: Option<Armed> = None;
                let mut renewing = true;
                let stop_at = now + s(rnd(3 * lease_s) + 1);
                let mut shrunk = false;
                while now < stop_at + lease {
                    if now >= stop_at {
                        renewing = false;
                    }
                    if renewing && now >= next_renewal {
                        // Sent a little before now, acknowledged now.
                        v = now.saturating_sub(ms(rnd(50))) + lease - drift;
                        next_renewal = now + renew_every;
                        if rnd(20) == 0 {
                            // A drive dropped: the majority-th send is older.
                            v = v.saturating_sub(ms(rnd(renew_every.as_millis())));
                            shrunk = true;
                        }
                    }
                    if let Some(a) = armed {
                        if a.alive_by <= now {
                            // Fired while alive: only once validity stopped
                            // moving (renewals stopped or a shrink).
                            assert!(!renewing || shrunk, "fired while renewing at {now:?}");
                            assert!(a.alive_by + p.slack <= p.reset_deadline(v) || shrunk);
                            assert!(a.alive_by < v, "fired after validity");
                            fired += 1;
                            break;
                        }
                    }
                    match p.decide(now, Some(v), armed) {
                        Action::Arm { timeout_s } => armed = Some(p.armed(now, timeout_s)),
                        Action::Pet => armed = Some(p.armed(now, armed.unwrap().timeout_s)),
                        Action::Nothing | Action::TooLate { .. } => {}
                        Action::Disarm => unreachable!(),
                    }
                    if let Some(a) = armed {
                        // Dying now (the close pets once more) still resets by
                        // the deadline, unless a shrink left it late.
                        let late = a.fires_by + p.slack > p.reset_deadline(v);
                        assert!(!late || shrunk, "late at {now:?}: {a:?} {v:?}");
                    }
                    now = now + ms(400 + rnd(200));
                }
            }
        }
        // Once renewals stopped, every run's host was reset before validity.
        assert_eq!(fired, 400);
    }

    #[test]
    fn too_late_leaves_the_device_alone() {
        let p = WatchdogPlan {
            close_pets: false,
            ..WatchdogPlan::new()
        };
        // 1.2 s to the deadline: no whole second fits after the slack.
        assert_eq!(
            p.decide(s(10), Some(ms(13_200)), None),
            Action::TooLate { late: true }
        );
        // Armed earlier to fire by 12 s (deadline 11.2 + ... no: deadline 11.2).
        let a = p.armed(s(9), 2);
        assert_eq!(
            p.decide(s(10), Some(ms(13_200)), Some(a)),
            Action::TooLate { late: true }
        );
        let a = p.armed(s(9), 1);
        assert_eq!(
            p.decide(s(10), Some(ms(13_200)), Some(a)),
            Action::TooLate { late: false }
        );
    }

    #[test]
    fn lvmlockd_numbers() {
        // 60 s lease, drift 610 ms, renew every 10 s: right after a renewal sent
        // at 0 the validity is 59.39 s, the deadline 57.39 s.
        let p = WatchdogPlan::new();
        let v = ms(59_390);
        assert_eq!(p.reset_deadline(v), ms(57_390));
        assert_eq!(
            p.decide(ms(50), Some(v), None),
            Action::Arm { timeout_s: 28 }
        );
        // Renewals stop (paused process): nobody pets; the arming fires by
        // 28.05 s. Killed instead (even while paused): the close pets once
        // more, so by 56.05 s + slack, still before the deadline; another host
        // can break in only after 60 s of drive time.
        assert!(p.armed(ms(50), 28).fires_by + p.slack <= p.reset_deadline(v));
    }

    #[test]
    fn wdmd_expiry() {
        let p = WatchdogPlan::new();
        // Deadline 100 s, fire timeout 60 s: the last pet must come by 39.75 s.
        assert_eq!(p.wdmd_expire(s(10).0, s(100).0, 60), Some(39));
        assert_eq!(p.wdmd_expire(s(40).0, s(100).0, 60), None);
        // lvmlockd's lease with wdmd's default 60 s fire timeout: never enough.
        assert_eq!(p.wdmd_expire(0, ms(57_390).0, 60), None);
        assert_eq!(p.wdmd_expire(0, ms(57_390).0, 10), Some(47));
    }
}
