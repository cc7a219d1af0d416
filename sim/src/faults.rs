//! Per-drive fault state: what a simulated drive does with a command instead of
//! (or besides) executing it.
//!
//! | fault | effect on commands received while it holds |
//! | --- | --- |
//! | `stop` | not executed, never answered (the client times out) |
//! | `io_error` | not executed, answered with the transport-error status (client: `Io(EIO)`) |
//! | `stall {ms}` | held, not executed; when the stall ends they are executed and answered |
//! | `power_cycle` | one-shot: the firmware loses its table now |
//! | `drop {percent}` | executed, but that share of replies (seeded) is never sent: a lost reply |
//! | `cut {client}` | commands from the client that said this name in HELLO are not executed and never answered |
//! | `resume` | ends `stop` and any stall |
//! | `heal` | ends every fault above (`stop`, `io_error`, stall, drop, all cuts) |
//!
//! Precedence when several hold: cut, stop, stall, io_error, drop. A command
//! released from a stall is judged again at release time.
//!
//! The faults are a property of the drive, not of a front end: [`DriveFaults`]
//! is shared (behind an `Arc`) by the native server and the iSCSI target
//! ([`super::iscsi`]), so one `idm fault` reaches commands whichever way they
//! came in. What each verdict looks like on the wire of each front end is
//! described by the front end (the native server: [`super::server`]; iSCSI:
//! [`super::iscsi::session`]). For `cut`, a client's name is its HELLO name on
//! the native protocol and its `InitiatorName` on iSCSI.

use std::sync::{Mutex, MutexGuard};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::latency::Latency;

/// A fault command for one drive (the `fault` of a control request).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum FaultCmd {
    /// Stop answering (and executing).
    Stop,
    /// End `stop` and any stall.
    Resume,
    /// Answer every command with an I/O error.
    IoError,
    /// Hold commands for `ms` milliseconds from now.
    Stall {
        /// Duration of the stall, ms.
        ms: u64,
    },
    /// Lose the table now.
    PowerCycle,
    /// Drop this percentage (0..=100) of replies.
    Drop {
        /// Percentage of replies dropped.
        percent: f64,
    },
    /// Cut the client with this HELLO name off this drive.
    Cut {
        /// The client's name.
        client: String,
    },
    /// End every fault.
    Heal,
}

/// What to do with one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Execute and answer.
    Execute,
    /// Execute, send no reply.
    ExecuteAndDrop,
    /// Do not execute; answer with the transport-error status.
    IoError,
    /// Do not execute, do not answer.
    Ignore,
    /// Hold until the stall ends.
    Hold,
}

/// The faults in force on one drive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultState {
    /// `stop` in force.
    pub stopped: bool,
    /// `io_error` in force.
    pub io_error: bool,
    /// Drive time (ms) the current stall ends at.
    pub stall_until_ms: Option<u64>,
    /// Share of replies dropped, percent.
    pub drop_percent: f64,
    /// Clients cut off this drive.
    pub cut: Vec<String>,
}

impl FaultState {
    /// Applies a command at drive time `now_ms`; returns `true` when the caller must
    /// power-cycle the firmware.
    pub fn apply(&mut self, cmd: &FaultCmd, now_ms: u64) -> bool {
        match cmd {
            FaultCmd::Stop => self.stopped = true,
            FaultCmd::Resume => {
                self.stopped = false;
                self.stall_until_ms = None;
            }
            FaultCmd::IoError => self.io_error = true,
            FaultCmd::Stall { ms } => self.stall_until_ms = Some(now_ms.saturating_add(*ms)),
            FaultCmd::PowerCycle => return true,
            FaultCmd::Drop { percent } => self.drop_percent = percent.clamp(0.0, 100.0),
            FaultCmd::Cut { client } => {
                if !self.cut.contains(client) {
                    self.cut.push(client.clone());
                }
            }
            FaultCmd::Heal => *self = FaultState::default(),
        }
        false
    }

    /// Whether a stall is in force at `now_ms`.
    pub fn stalled(&self, now_ms: u64) -> bool {
        self.stall_until_ms.is_some_and(|t| now_ms < t)
    }

    /// Decides what happens to a command from `client` received at `now_ms`.
    pub fn judge(&self, client: &str, now_ms: u64, rng: &mut SmallRng) -> Verdict {
        if self.cut.iter().any(|c| c == client) || self.stopped {
            Verdict::Ignore
        } else if self.stalled(now_ms) {
            Verdict::Hold
        } else if self.io_error {
            Verdict::IoError
        } else if self.drop_percent > 0.0 && rng.gen::<f64>() * 100.0 < self.drop_percent {
            Verdict::ExecuteAndDrop
        } else {
            Verdict::Execute
        }
    }
}

/// Called after every fault change of a drive (see [`DriveFaults::watch`]); must
/// not block (it runs with the drive's fault state locked).
pub type Watcher = Box<dyn Fn() + Send>;

/// The faults of one simulated drive, shared by every front end serving it.
///
/// Locked for one judgement or one change (a few instructions); a front end that
/// holds commands (a stall) registers a [`Watcher`] to learn that a change may
/// have ended it early (`resume`, `heal`).
pub struct DriveFaults {
    inner: Mutex<Inner>,
}

struct Inner {
    state: FaultState,
    /// The drive's reply latency, for front ends that delay answers themselves
    /// (the native server keeps its own copy, set together with this one).
    latency: Latency,
    /// Draws the `drop` verdicts of front ends without a generator of their own.
    rng: SmallRng,
    watchers: Vec<(u64, Watcher)>,
    next_watcher: u64,
}

impl std::fmt::Debug for DriveFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveFaults")
            .field("state", &self.lock().state)
            .finish_non_exhaustive()
    }
}

impl DriveFaults {
    /// No fault in force; `seed` seeds the generator of [`DriveFaults::judge_seeded`].
    pub fn new(seed: u64) -> DriveFaults {
        DriveFaults {
            inner: Mutex::new(Inner {
                state: FaultState::default(),
                latency: Latency::None,
                rng: SmallRng::seed_from_u64(seed),
                watchers: Vec::new(),
                next_watcher: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock still holds a
        // consistent state.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a command at drive time `now_ms` and tells every watcher; returns
    /// `true` when the caller must power-cycle the firmware.
    pub fn apply(&self, cmd: &FaultCmd, now_ms: u64) -> bool {
        let mut g = self.lock();
        let power_cycle = g.state.apply(cmd, now_ms);
        for (_, w) in &g.watchers {
            w();
        }
        power_cycle
    }

    /// The faults in force now.
    pub fn snapshot(&self) -> FaultState {
        self.lock().state.clone()
    }

    /// Whether a stall is in force at `now_ms`.
    pub fn stalled(&self, now_ms: u64) -> bool {
        self.lock().state.stalled(now_ms)
    }

    /// Drive time the current stall ends at, if one was set.
    pub fn stall_until_ms(&self) -> Option<u64> {
        self.lock().state.stall_until_ms
    }

    /// [`FaultState::judge`] with the caller's generator (the native server keeps
    /// its own seeded one, so its drop pattern does not depend on other traffic).
    pub fn judge(&self, client: &str, now_ms: u64, rng: &mut SmallRng) -> Verdict {
        self.lock().state.judge(client, now_ms, rng)
    }

    /// [`FaultState::judge`] with this drive's own seeded generator.
    pub fn judge_seeded(&self, client: &str, now_ms: u64) -> Verdict {
        let mut g = self.lock();
        let Inner { state, rng, .. } = &mut *g;
        state.judge(client, now_ms, rng)
    }

    /// Sets the drive's reply latency.
    pub fn set_latency(&self, latency: Latency) {
        self.lock().latency = latency;
    }

    /// One reply's latency, drawn from this drive's own generator (zero when the
    /// drive has none).
    pub fn sample_latency(&self) -> std::time::Duration {
        let mut g = self.lock();
        let Inner { latency, rng, .. } = &mut *g;
        if latency.is_none() {
            return std::time::Duration::ZERO;
        }
        latency.sample(rng)
    }

    /// Registers `w`, called after every change until [`DriveFaults::unwatch`]
    /// with the returned id.
    pub fn watch(&self, w: Watcher) -> u64 {
        let mut g = self.lock();
        let id = g.next_watcher;
        g.next_watcher += 1;
        g.watchers.push((id, w));
        id
    }

    /// Removes a watcher registered by [`DriveFaults::watch`].
    pub fn unwatch(&self, id: u64) {
        self.lock().watchers.retain(|(i, _)| *i != id);
    }

    /// Watchers registered now (a front end that forgot one leaks it).
    pub fn watchers(&self) -> usize {
        self.lock().watchers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn verdicts_and_precedence() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut f = FaultState::default();
        assert_eq!(f.judge("a", 0, &mut rng), Verdict::Execute);
        f.apply(&FaultCmd::IoError, 0);
        assert_eq!(f.judge("a", 0, &mut rng), Verdict::IoError);
        f.apply(&FaultCmd::Stall { ms: 10 }, 5);
        assert_eq!(f.judge("a", 14, &mut rng), Verdict::Hold);
        assert_eq!(f.judge("a", 15, &mut rng), Verdict::IoError);
        f.apply(&FaultCmd::Cut { client: "b".into() }, 0);
        assert_eq!(f.judge("b", 20, &mut rng), Verdict::Ignore);
        f.apply(&FaultCmd::Stop, 0);
        assert_eq!(f.judge("a", 20, &mut rng), Verdict::Ignore);
        f.apply(&FaultCmd::Resume, 0);
        assert_eq!(f.judge("a", 20, &mut rng), Verdict::IoError);
        assert!(f.apply(&FaultCmd::PowerCycle, 0));
        f.apply(&FaultCmd::Heal, 0);
        assert_eq!(f, FaultState::default());
    }

    #[test]
    fn drop_share_is_roughly_right_and_seeded() {
        let mut f = FaultState::default();
        f.apply(&FaultCmd::Drop { percent: 30.0 }, 0);
        let run = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..10_000)
                .filter(|_| f.judge("a", 0, &mut rng) == Verdict::ExecuteAndDrop)
                .count()
        };
        let n = run(3);
        assert_eq!(n, run(3));
        assert!((2500..3500).contains(&n), "{n}");
    }

    #[test]
    fn shared_faults_tell_their_watchers() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let f = DriveFaults::new(1);
        let n = Arc::new(AtomicUsize::new(0));
        let id = {
            let n = Arc::clone(&n);
            f.watch(Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            }))
        };
        assert!(!f.apply(&FaultCmd::Stall { ms: 10 }, 5));
        assert!(f.stalled(14) && !f.stalled(15));
        assert_eq!(f.stall_until_ms(), Some(15));
        assert_eq!(f.judge_seeded("a", 0), Verdict::Hold);
        assert!(f.apply(&FaultCmd::PowerCycle, 0));
        assert_eq!(n.load(Ordering::SeqCst), 2);
        f.unwatch(id);
        assert_eq!(f.watchers(), 0);
        f.apply(&FaultCmd::Heal, 0);
        assert_eq!(n.load(Ordering::SeqCst), 2);
        assert_eq!(f.snapshot(), FaultState::default());
    }
}
