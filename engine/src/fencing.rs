//! Renewal and fencing decisions for held locks (ARCHITECTURE.md principle 6).
//!
//! A [`LeasePolicy`] says how often a held lock is renewed and how long before its
//! validity ends the holder is fenced. Fencing happens **strictly before** validity
//! ends: [`LeasePolicy::should_fence`] is true once `now + fence_margin >= validity`,
//! so the fence (kill path, signal, callback) has `fence_margin` to take effect.
//!
//! Defaults ([`LeasePolicy::for_lease`]) for a lease (countdown) `L`: renew every
//! `L/10`, fence `L/6` before validity ends (the old manager fenced after 50 s
//! without renewal on a 60 s lease), drift margin `L/100 + 1 ms`.

use crate::lease::validity;
use crate::protocol::LockState;
use crate::time::Nanos;

/// How a lockspace renews and fences its locks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LeasePolicy {
    /// The membership countdown sent to the drives.
    pub lease: Nanos,
    /// Renew a held lock this long after its last successful renewal.
    pub renew_every: Nanos,
    /// Fence this long before validity ends.
    pub fence_margin: Nanos,
    /// Bound on host/drive clock rate drift over one lease (see the crate docs).
    pub drift_margin: Nanos,
}

/// What a lockspace should do now, over all its held locks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LockspacePlan {
    /// Some held lock is about to lose (or has no) validity: fence the lockspace.
    pub fence: bool,
    /// Locks due for renewal now (their indices are pushed to the caller's Vec).
    pub renew_due: usize,
    /// When to look again: the earliest future renewal or fence time.
    pub next_wake: Option<Nanos>,
}

impl LeasePolicy {
    /// The default policy for a lease of `lease` (see the module docs).
    pub fn for_lease(lease: Nanos) -> LeasePolicy {
        LeasePolicy {
            lease,
            renew_every: Nanos((lease.0 / 10).max(1)),
            fence_margin: Nanos(lease.0 / 6),
            drift_margin: Nanos(lease.0 / 100) + Nanos::from_millis(1),
        }
    }

    /// The lock's validity under this policy's drift margin (its own countdown).
    pub fn validity(&self, state: &LockState) -> Option<Nanos> {
        validity(state, state.spec.countdown(), self.drift_margin)
    }

    /// When the lock should next be renewed: `renew_every` after the last successful
    /// renewal (or the acquire's earliest held send time when never renewed).
    pub fn next_renewal(&self, state: &LockState) -> Nanos {
        let base = state.last_renewal.unwrap_or_else(|| {
            state
                .drives
                .iter()
                .filter(|d| d.held)
                .map(|d| d.sent)
                .min()
                .unwrap_or(Nanos::ZERO)
        });
        base + self.renew_every
    }

    /// True when the holder must be fenced now: no validity at all, or
    /// `now + fence_margin >= validity` (strictly before validity ends; a zero
    /// margin is treated as 1 ns so that "before" stays strict).
    pub fn should_fence(&self, now: Nanos, validity: Option<Nanos>) -> bool {
        match validity {
            None => true,
            Some(v) => now + self.margin() >= v,
        }
    }

    fn margin(&self) -> Nanos {
        self.fence_margin.max(Nanos(1))
    }

    /// The time at which [`LeasePolicy::should_fence`] becomes true.
    pub fn fence_at(&self, validity: Option<Nanos>) -> Nanos {
        validity.map_or(Nanos::ZERO, |v| v - self.margin())
    }

    /// Decides for a whole lockspace: every held lock (`mode` set) is checked;
    /// indices (in `locks` order) of those due for renewal are pushed to `renew`.
    /// One lock to fence fences the lockspace (that is what a kill path does).
    pub fn plan<'a>(
        &self,
        now: Nanos,
        locks: impl IntoIterator<Item = &'a LockState>,
        renew: &mut Vec<usize>,
    ) -> LockspacePlan {
        let mut plan = LockspacePlan::default();
        let mut wake = |t: Nanos| {
            plan.next_wake = Some(plan.next_wake.map_or(t, |w: Nanos| w.min(t)));
        };
        let mut fence = false;
        let mut due = 0;
        for (i, st) in locks.into_iter().enumerate() {
            if st.mode.is_none() {
                continue;
            }
            let v = self.validity(st);
            if self.should_fence(now, v) {
                fence = true;
            } else {
                wake(self.fence_at(v));
            }
            let r = self.next_renewal(st);
            if now >= r {
                renew.push(i);
                due += 1;
            } else {
                wake(r);
            }
        }
        plan.fence = fence;
        plan.renew_due = due;
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testutil::spec;
    use uring_sg::{Class, Mode};

    fn held(sends_ms: &[u64]) -> LockState {
        let mut st = LockState::new(spec(sends_ms.len() as u16), 1);
        st.mode = Some(Mode::Exclusive);
        for (d, s) in sends_ms.iter().enumerate() {
            st.grant(d as u16, Class::Exclusive, Nanos::from_millis(*s), false);
        }
        st
    }

    #[test]
    fn fence_strictly_before_validity() {
        let p = LeasePolicy {
            lease: Nanos::from_millis(1000),
            renew_every: Nanos::from_millis(100),
            fence_margin: Nanos::from_millis(50),
            drift_margin: Nanos::from_millis(10),
        };
        let st = held(&[0, 0, 0]);
        let v = p.validity(&st).unwrap();
        assert_eq!(v, Nanos::from_millis(990));
        assert!(!p.should_fence(Nanos::from_millis(939), Some(v)));
        assert!(p.should_fence(Nanos::from_millis(940), Some(v)));
        assert!(p.fence_at(Some(v)) < v);
        assert!(p.should_fence(Nanos::ZERO, None));
        let zero = LeasePolicy {
            fence_margin: Nanos::ZERO,
            ..p
        };
        assert!(
            zero.should_fence(Nanos(v.0 - 1), Some(v)),
            "still strictly before"
        );
        assert!(!zero.should_fence(Nanos(v.0 - 2), Some(v)));
    }

    #[test]
    fn next_renewal_from_last_success_or_grant() {
        let p = LeasePolicy::for_lease(Nanos::from_millis(1000));
        let mut st = held(&[5, 3, 9]);
        assert_eq!(p.next_renewal(&st), Nanos::from_millis(103));
        st.last_renewal = Some(Nanos::from_millis(400));
        assert_eq!(p.next_renewal(&st), Nanos::from_millis(500));
    }

    #[test]
    fn lockspace_plan() {
        let p = LeasePolicy {
            lease: Nanos::from_millis(1000),
            renew_every: Nanos::from_millis(100),
            fence_margin: Nanos::from_millis(50),
            drift_margin: Nanos::ZERO,
        };
        let fresh = held(&[200, 200, 200]);
        let old = held(&[0, 0, 0]);
        let unheld = LockState::new(spec(3), 1);
        let mut renew = Vec::new();
        let plan = p.plan(Nanos::from_millis(150), [&fresh, &old, &unheld], &mut renew);
        assert_eq!(renew, vec![1]);
        assert_eq!(plan.renew_due, 1);
        assert!(!plan.fence);
        assert_eq!(plan.next_wake, Some(Nanos::from_millis(300)));
        renew.clear();
        let plan = p.plan(Nanos::from_millis(950), [&fresh, &old], &mut renew);
        assert!(plan.fence);
        assert_eq!(renew, vec![0, 1]);
    }
}
