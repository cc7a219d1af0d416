//! The reactor's drive registry: every drive opened once per reactor and shared by
//! all its locks, with its paths (multipath) and its health.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uring_sg::DriveError;

use crate::shared::{DriveHealth, DriveOpener, EngineError};

/// One drive: its name, its open paths (transport indices in the reactor's
/// driver), the path in use, and its health.
#[derive(Debug)]
pub struct DriveSlot {
    /// The name the caller used (a device path, or a simulator drive name).
    pub name: Arc<str>,
    /// Transport indices, one per path.
    pub paths: Vec<usize>,
    /// Index into `paths` of the path commands go to now.
    pub current: usize,
    /// What happened on it.
    pub health: DriveHealth,
    /// Why it could not be opened (it then has no path and answers EIO).
    pub open_error: Option<EngineError>,
    /// When to try opening it again.
    pub retry_at: Instant,
}

/// How long a drive that could not be opened is left alone before another try.
pub const REOPEN_EVERY: Duration = Duration::from_secs(1);

impl DriveSlot {
    /// The transport index commands go to now.
    pub fn path(&self) -> usize {
        self.paths[self.current % self.paths.len()]
    }

    /// Switches to the next path after an I/O error; `false` with a single path.
    pub fn fail_over(&mut self) -> bool {
        if self.paths.len() < 2 {
            return false;
        }
        self.current = (self.current + 1) % self.paths.len();
        self.health.failovers += 1;
        true
    }

    /// Records an answer (`Ok`, or the drive's error) for health.
    pub fn record(&mut self, result: &Result<(), DriveError>) {
        match result {
            Err(e) if e.is_io() => {
                self.health.consecutive_errors = self.health.consecutive_errors.saturating_add(1);
                self.health.last_error = Some(*e);
            }
            Err(e) => {
                self.health.consecutive_errors = 0;
                self.health.last_error = Some(*e);
            }
            Ok(()) => {
                self.health.consecutive_errors = 0;
                self.health.last_error = None;
            }
        }
    }
}

/// Name → drive, opening each drive on first use.
pub struct DriveRegistry {
    opener: Arc<dyn DriveOpener>,
    client: String,
    by_name: HashMap<Arc<str>, usize>,
    /// The drives, indexed by drive id.
    pub slots: Vec<DriveSlot>,
}

impl DriveRegistry {
    /// A registry that opens drives with `opener`, as client `client` (a name for
    /// this reactor that the simulator shows in its logs and faults).
    pub fn new(opener: Arc<dyn DriveOpener>, client: String) -> DriveRegistry {
        DriveRegistry {
            opener,
            client,
            by_name: HashMap::new(),
            slots: Vec::new(),
        }
    }

    /// The drive id of `name`, opening it (all its paths) through `add` if new.
    /// A drive that cannot be opened gets an id too, with no path and its
    /// [`DriveSlot::open_error`]; [`DriveRegistry::reopen`] tries again later.
    pub fn resolve(
        &mut self,
        name: &str,
        add: &mut dyn FnMut(Box<dyn uring_sg::transport::Transport>) -> usize,
    ) -> usize {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = self.slots.len();
        self.slots.push(DriveSlot {
            name: name.clone(),
            paths: Vec::new(),
            current: 0,
            health: DriveHealth::default(),
            open_error: None,
            retry_at: Instant::now(),
        });
        self.by_name.insert(name, id);
        self.open(id, add);
        id
    }

    /// Opens drive `id` if it has no path and its retry time came; `true` when it
    /// has a path now.
    pub fn reopen(
        &mut self,
        id: usize,
        add: &mut dyn FnMut(Box<dyn uring_sg::transport::Transport>) -> usize,
    ) -> bool {
        let Some(slot) = self.slots.get(id) else {
            return false;
        };
        if !slot.paths.is_empty() {
            return true;
        }
        if Instant::now() < slot.retry_at {
            return false;
        }
        self.open(id, add);
        !self.slots[id].paths.is_empty()
    }

    fn open(
        &mut self,
        id: usize,
        add: &mut dyn FnMut(Box<dyn uring_sg::transport::Transport>) -> usize,
    ) {
        let name = self.slots[id].name.clone();
        let result = match self.opener.open(&name, &self.client) {
            Ok(t) if t.is_empty() => Err(EngineError::Drive {
                drive: name.to_string(),
                reason: "no path to this drive".into(),
            }),
            r => r,
        };
        let slot = &mut self.slots[id];
        match result {
            Ok(transports) => {
                slot.paths = transports.into_iter().map(add).collect();
                if slot.open_error.take().is_some() {
                    tracing::info!(drive = %name, "drive opened");
                }
            }
            Err(e) => {
                if slot.open_error.is_none() {
                    tracing::warn!(drive = %name, error = %e, "drive cannot be opened: it counts as failed");
                }
                slot.open_error = Some(e);
                slot.retry_at = Instant::now() + REOPEN_EVERY;
            }
        }
    }
}
