//! Which drives answer: a drive whose command timed out is **unresponsive** until
//! it answers again. While it is, its commands get the probe's short timeout (no
//! operation waits a full command timeout for it), and it is probed with a
//! table-count read that has that short timeout
//! ([`super::TableConfig::probe_timeout`]), every
//! [`super::TableConfig::probe_every`], until any answer comes back. Any real
//! answer that is not a timeout (a straggler's late reply included) makes it
//! responsive again.
//!
//! I/O errors do not mark a drive: they come back at once and cost no waiting
//! (multipath failover is the reactor's business).

use uring_sg::transport::{Reply, Request};
use uring_sg::DriveError;

use super::timers::{Timer, TimerKind};
use super::{DriveId, Event, InFlight, LockTable, LockspaceCtl, Output, Owner};
use crate::protocol::Now;

/// One drive's responsiveness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriveHealth {
    /// A command timed out and no answer came since.
    pub unresponsive: bool,
    /// A probe is in flight.
    pub probing: bool,
    /// Probes sent since it became unresponsive.
    pub probes: u32,
    /// Times it became unresponsive.
    pub episodes: u64,
    /// Generation of its probe timer.
    generation: u64,
}

/// Every drive's responsiveness, by drive id.
#[derive(Clone, Debug, Default)]
pub struct Health {
    drives: Vec<DriveHealth>,
}

impl Health {
    /// Whether `drive` is unresponsive.
    pub fn is_unresponsive(&self, drive: DriveId) -> bool {
        self.drives.get(drive).is_some_and(|d| d.unresponsive)
    }

    /// The health of `drive`.
    pub fn get(&self, drive: DriveId) -> DriveHealth {
        self.drives.get(drive).copied().unwrap_or_default()
    }

    fn slot(&mut self, drive: DriveId) -> &mut DriveHealth {
        if self.drives.len() <= drive {
            self.drives.resize(drive + 1, DriveHealth::default());
        }
        &mut self.drives[drive]
    }
}

impl<C, L: LockspaceCtl> LockTable<C, L> {
    /// The health of `drive` as this table sees it.
    pub fn drive_health(&self, drive: DriveId) -> DriveHealth {
        self.health.get(drive)
    }

    /// A real (not made-up) answer from `drive`.
    pub(super) fn note_health(
        &mut self,
        now: Now,
        drive: DriveId,
        reply: &Reply,
        probe: bool,
        out: &mut Output<C>,
    ) {
        let timed_out = matches!(reply.result, Err(DriveError::Timeout));
        let io = matches!(reply.result, Err(DriveError::Io(_)));
        let next_gen = self.next_generation + 1;
        let h = self.health.slot(drive);
        if probe {
            h.probing = false;
        }
        if timed_out || (probe && io) {
            if !h.unresponsive {
                h.unresponsive = true;
                h.probes = 0;
                h.episodes += 1;
                out.events.push(Event::DriveUnresponsive(drive));
            }
            // Probe at once after a lock command timed out, else after a pause.
            let at = if probe {
                now.mono + self.cfg.probe_every
            } else {
                now.mono
            };
            if !h.probing {
                h.generation = next_gen;
                self.next_generation = next_gen;
                self.timers.arm(Timer {
                    at,
                    kind: TimerKind::Probe,
                    lock: drive,
                    generation: next_gen,
                });
            }
        } else if !io && h.unresponsive {
            h.unresponsive = false;
            out.events.push(Event::DriveResponsive(drive));
        }
    }

    /// The probe timer of `drive` fired.
    pub(super) fn probe_due(&mut self, now: Now, drive: DriveId, generation: u64) {
        let h = self.health.slot(drive);
        if !h.unresponsive || h.probing || h.generation != generation {
            return;
        }
        h.probing = true;
        h.probes += 1;
        let key = self.inflight.insert(InFlight {
            lock: usize::MAX,
            incarnation: 0,
            drive_no: 0,
            drive,
            owner: Owner::Probe,
            req: Request::ReadCount,
            sent: now.mono,
        });
        self.send(now, key);
    }
}
