//! The seeded fault schedule.
//!
//! A [`FaultProfile`] says how often each fault happens. While the workload runs,
//! a fault tick every [`FaultProfile::tick`] of true time draws from the run's
//! seeded generator whether a fault starts and which: drive power cycle (table
//! lost, drive down for a while), drive stall, link partition, host crash (all
//! state lost, restart later with the same host ID), host pause (SIGSTOP-like, often
//! past the lease). Message loss and late replies are per message ([`crate::net`]);
//! clock drift and a small firmware table are fixed at the start of a run.
//!
//! When the workload is done, faults **stop**: partitions heal, stalls end, drives
//! come back, paused hosts resume, crashed hosts restart, and the liveness check
//! (invariant 4) starts counting.
//!
//! **Drive restarts take longer than a lease.** A power-cycled drive stays down at
//! least `drive_down_min`, which profiles set above the lease (plus drift). A drive
//! that forgets its table and is back *within* a lease can grant a lock that a host
//! still validly holds on the strength of that drive's lost membership: the quorum
//! intersection argument needs every drive of the intersection to remember. That is
//! a limit of the IDM protocol itself (nothing the host can do: the drive answers a
//! refresh "not found" only when asked), shown by the `fast_drive_restart` test.

use idm_engine::Nanos;
use rand::rngs::SmallRng;
use rand::Rng;

use crate::net::NetConfig;

/// How faulty a run is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultProfile {
    /// Name for reports.
    pub name: &'static str,
    /// Interval between fault draws.
    pub tick: Nanos,
    /// Probability that a tick starts a fault.
    pub p_fault: f64,
    /// Relative weights: drive power cycle, drive stall, partition, host crash, host pause.
    pub weights: [u32; 5],
    /// Shortest time a power-cycled drive stays down.
    pub drive_down_min: Nanos,
    /// Longest time a power-cycled drive stays down.
    pub drive_down_max: Nanos,
    /// Longest drive stall.
    pub stall_max: Nanos,
    /// Longest partition.
    pub partition_max: Nanos,
    /// Longest host crash (down time before restart).
    pub crash_max: Nanos,
    /// Longest host pause.
    pub pause_max: Nanos,
    /// Largest clock rate error of hosts and drives, ppm (each side; the engine's
    /// drift margin covers 1% relative).
    pub drift_ppm: i64,
    /// Probability that a run's drives have a near-full table.
    pub p_small_table: f64,
    /// Message loss and delay.
    pub net: NetConfig,
    /// Faults touch only a fixed minority of the drives (drives `0..(n-1)/2`):
    /// stalls past the lease, power cycles, hosts cut off from them; no host pauses.
    /// A fence, or a release / LVB read / host count slower than the majority's
    /// replies plus a bound, is then a violation.
    pub minority: bool,
}

impl FaultProfile {
    /// No faults at all: contention, latency and renewals only.
    pub fn none() -> FaultProfile {
        FaultProfile {
            name: "none",
            tick: Nanos::from_millis(50),
            p_fault: 0.0,
            weights: [0; 5],
            drive_down_min: Nanos::from_millis(1100),
            drive_down_max: Nanos::from_millis(2000),
            stall_max: Nanos::ZERO,
            partition_max: Nanos::ZERO,
            crash_max: Nanos::ZERO,
            pause_max: Nanos::ZERO,
            drift_ppm: 0,
            p_small_table: 0.0,
            net: NetConfig::healthy(),
            minority: false,
        }
    }

    /// A minority of the drives misbehaves, often and for long (see
    /// [`FaultProfile::minority`]); the rest and the hosts are healthy.
    pub fn minority() -> FaultProfile {
        FaultProfile {
            name: "minority",
            p_fault: 0.3,
            weights: [2, 4, 3, 1, 0],
            stall_max: Nanos::from_millis(3000),
            partition_max: Nanos::from_millis(3000),
            crash_max: Nanos::from_millis(1500),
            drift_ppm: 2000,
            minority: true,
            ..FaultProfile::none()
        }
    }

    /// Occasional faults.
    pub fn light() -> FaultProfile {
        let mut net = NetConfig::healthy();
        net.lose_cmd_p = 0.001;
        net.lose_reply_p = 0.001;
        net.late_p = 0.001;
        FaultProfile {
            name: "light",
            p_fault: 0.04,
            weights: [1, 3, 2, 1, 2],
            stall_max: Nanos::from_millis(150),
            partition_max: Nanos::from_millis(800),
            crash_max: Nanos::from_millis(1500),
            pause_max: Nanos::from_millis(1500),
            drift_ppm: 2000,
            p_small_table: 0.2,
            net,
            ..FaultProfile::none()
        }
    }

    /// Frequent faults of every kind, pauses well past the lease.
    pub fn heavy() -> FaultProfile {
        let mut net = NetConfig::healthy();
        net.lose_cmd_p = 0.01;
        net.lose_reply_p = 0.01;
        net.late_p = 0.01;
        net.spike_p = 0.01;
        net.spike_max = Nanos::from_millis(20);
        FaultProfile {
            name: "heavy",
            p_fault: 0.25,
            weights: [2, 3, 3, 2, 3],
            stall_max: Nanos::from_millis(400),
            partition_max: Nanos::from_millis(1500),
            crash_max: Nanos::from_millis(2500),
            pause_max: Nanos::from_millis(2500),
            drift_ppm: 3000,
            p_small_table: 0.4,
            net,
            ..FaultProfile::none()
        }
    }

    /// The profile called `name` (`none`, `light`, `heavy`).
    pub fn by_name(name: &str) -> Option<FaultProfile> {
        match name {
            "none" => Some(FaultProfile::none()),
            "light" => Some(FaultProfile::light()),
            "heavy" => Some(FaultProfile::heavy()),
            "minority" => Some(FaultProfile::minority()),
            _ => None,
        }
    }

    /// Whether this profile ever injects a fault.
    pub fn any(&self) -> bool {
        self.p_fault > 0.0
    }
}

/// One fault to start now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// Power-cycle drive `drive`; it is down for `down`.
    DriveCrash {
        /// The drive.
        drive: usize,
        /// How long it stays down.
        down: Nanos,
    },
    /// Drive `drive` executes nothing for `dur`.
    DriveStall {
        /// The drive.
        drive: usize,
        /// How long.
        dur: Nanos,
    },
    /// The links between `host` and the drives in `drives` (bit mask) are cut for `dur`.
    Partition {
        /// The host.
        host: usize,
        /// Bit mask of drives.
        drives: u64,
        /// How long.
        dur: Nanos,
    },
    /// Host `host` crashes and restarts after `down`.
    HostCrash {
        /// The host.
        host: usize,
        /// How long it stays down.
        down: Nanos,
    },
    /// Host `host` stops processing anything for `dur`.
    HostPause {
        /// The host.
        host: usize,
        /// How long.
        dur: Nanos,
    },
}

fn span(rng: &mut SmallRng, lo: Nanos, hi: Nanos) -> Nanos {
    Nanos(rng.gen_range(lo.0..=hi.0.max(lo.0)))
}

/// Draws the fault of one tick (or none).
pub fn draw(p: &FaultProfile, rng: &mut SmallRng, hosts: usize, drives: usize) -> Option<Fault> {
    if !rng.gen_bool(p.p_fault) {
        return None;
    }
    let total: u32 = p.weights.iter().sum();
    if total == 0 {
        return None;
    }
    let mut pick = rng.gen_range(0..total);
    let mut kind = 0;
    for (i, w) in p.weights.iter().enumerate() {
        if pick < *w {
            kind = i;
            break;
        }
        pick -= w;
    }
    let ms1 = Nanos::from_millis(1);
    // The drives faults may touch: all, or the fixed minority.
    let faulty = if p.minority {
        (drives.saturating_sub(1) / 2).max(1).min(drives)
    } else {
        drives
    };
    if p.minority && drives < 3 {
        return None;
    }
    Some(match kind {
        0 => Fault::DriveCrash {
            drive: rng.gen_range(0..faulty),
            down: span(rng, p.drive_down_min, p.drive_down_max),
        },
        1 => Fault::DriveStall {
            drive: rng.gen_range(0..faulty),
            dur: span(rng, ms1, p.stall_max),
        },
        2 => Fault::Partition {
            host: rng.gen_range(0..hosts),
            drives: rng.gen_range(1..(1u64 << faulty.min(63)).max(2)),
            dur: span(rng, ms1, p.partition_max),
        },
        3 => Fault::HostCrash {
            host: rng.gen_range(0..hosts),
            down: span(rng, ms1, p.crash_max),
        },
        _ => Fault::HostPause {
            host: rng.gen_range(0..hosts),
            dur: span(rng, ms1, p.pause_max),
        },
    })
}
