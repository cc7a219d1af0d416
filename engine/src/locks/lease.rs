//! Leases of held locks: renewal and fencing timers, validity, the fence itself.

use uring_sg::LockId;

use super::timers::{Timer, TimerKind};
use super::{
    Answer, FenceOrder, Lock, LockTable, LockspaceCtl, OpOutput, Output, PlantedBug, Work,
    RENEWAL_GRID,
};
use crate::lease::validity;
use crate::protocol::Now;
use crate::time::Nanos;

/// `at` rounded down to the renewal grid.
pub(super) fn renewal_slot(at: Nanos) -> Nanos {
    Nanos(at.0 - at.0 % RENEWAL_GRID.0)
}

impl<C, L: LockspaceCtl> LockTable<C, L> {
    /// The validity of lock `e` under its lockspace's drift margin.
    pub(super) fn validity_of(&self, e: &Lock<C>) -> Option<Nanos> {
        let l = self.lockspaces.get(&e.ls)?;
        let drift = l.info.policy.drift_margin;
        if self.cfg.planted_bug == PlantedBug::MinorityQuorum {
            let n = e.state.spec.n_drives as usize;
            let k = (n / 2).max(1);
            let c = e.state.spec.countdown();
            let mut ends: Vec<Nanos> = e
                .state
                .drives
                .iter()
                .filter(|d| d.held)
                .map(|d| d.sent + c)
                .collect();
            if ends.len() < k {
                return None;
            }
            ends.sort_unstable_by(|a, b| b.cmp(a));
            return Some(ends[k - 1] - drift);
        }
        validity(&e.state, e.state.spec.countdown(), drift)
    }

    /// Re-arms lock `k`'s renewal and fencing timers from its state, and fences at
    /// once if the lease is already too close to its end. After a failed renewal
    /// the next try comes a quarter cadence later (not at once, which would spin).
    pub(super) fn arm_lease(&mut self, now: Now, k: usize, failed: bool, out: &mut Output<C>) {
        let generation = self.new_generation();
        let e = &self.locks[k];
        let Some(lse) = self.lockspaces.get(&e.ls) else {
            return;
        };
        let policy = lse.info.policy;
        let v = self.validity_of(e);
        let e = &mut self.locks[k];
        e.lease_gen = generation;
        if policy.should_fence(now.mono, v) {
            self.fence_lock(k, out);
        } else {
            self.timers.arm(Timer {
                at: policy.fence_at(v),
                kind: TimerKind::Fence,
                lock: k,
                generation,
            });
        }
        let e = &self.locks[k];
        let mut at = policy.next_renewal(&e.state);
        if e.state.last_renewal.is_none() {
            at = at - e.renew_early;
        }
        if failed {
            at = at.max(now.mono + Nanos(policy.renew_every.0 / 4));
        }
        self.timers.arm(Timer {
            at: renewal_slot(at),
            kind: TimerKind::Renew,
            lock: k,
            generation,
        });
    }

    /// Fences lock `k`'s lockspace (once): its lease is about to lapse.
    pub(super) fn fence_lock(&mut self, k: usize, out: &mut Output<C>) {
        let e = &self.locks[k];
        let (ls, lock): (_, LockId) = (e.ls, e.id);
        if let Some(l) = self.lockspaces.get(&ls) {
            if l.ctl.mark_fenced() {
                out.fences.push(FenceOrder { ls, lock });
            }
        }
    }

    /// Runs every timer due at `now`.
    pub(super) fn fire_timers(&mut self, now: Now, out: &mut Output<C>) {
        while let Some(t) = self.timers.pop_due(now.mono) {
            if t.kind == TimerKind::Probe {
                self.probe_due(now, t.lock, t.generation);
                continue;
            }
            let Some(e) = self.locks.get_mut(t.lock) else {
                continue;
            };
            match t.kind {
                TimerKind::Op if t.generation == e.op_gen => {
                    if let Some(r) = e.running.as_mut() {
                        let serial = r.serial;
                        self.actions.clear();
                        r.op.on_timer(now, &mut e.state, &mut self.actions);
                        self.apply_actions(now, t.lock, serial);
                        self.after_step(now, t.lock, out);
                    }
                }
                TimerKind::Renew if t.generation == e.lease_gen && e.held => {
                    let Some(lse) = self.lockspaces.get(&e.ls) else {
                        continue;
                    };
                    if lse.ctl.renew_paused() {
                        // As if renewals failed: the fence timer fires before the
                        // lease ends. Look again one cadence later.
                        let every = lse.info.policy.renew_every;
                        self.timers.arm(Timer {
                            at: now.mono + every,
                            ..t
                        });
                    } else if e.running.is_some() {
                        // Starts as soon as the running operation reports, before
                        // anything queued.
                        e.renew_due.get_or_insert(t.at);
                    } else {
                        self.start(now, t.lock, Work::Renew, None, t.at, out);
                    }
                }
                TimerKind::Fence if t.generation == e.lease_gen && e.held => {
                    let Some(lse) = self.lockspaces.get(&e.ls) else {
                        continue;
                    };
                    let policy = lse.info.policy;
                    let v = self.validity_of(&self.locks[t.lock]);
                    if policy.should_fence(now.mono, v) {
                        self.fence_lock(t.lock, out);
                    } else {
                        self.timers.arm(Timer {
                            at: policy.fence_at(v),
                            ..t
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Planted bug [`PlantedBug::MinorityQuorum`]: the caller of an acquire is told
    /// "acquired" once ⌊N/2⌋ drives granted.
    pub(super) fn planted_minority_grant(&mut self, now: Now, k: usize, out: &mut Output<C>) {
        if self.cfg.planted_bug != PlantedBug::MinorityQuorum {
            return;
        }
        let e = &mut self.locks[k];
        let n = e.state.spec.n_drives;
        let Some(r) = e.running.as_mut() else {
            return;
        };
        if r.kind != super::OpKind::Acquire || r.caller.is_none() {
            return;
        }
        if e.state.held_count() >= (n / 2).max(1) {
            e.held = true;
            if let Some(c) = r.caller.take() {
                out.answers.push(Answer {
                    caller: c,
                    kind: Some(super::OpKind::Acquire),
                    result: Ok(OpOutput::Done),
                    latency: now.mono - r.started,
                });
            }
        }
    }
}
