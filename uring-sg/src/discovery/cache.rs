//! A cache of resolved paths that re-verifies a drive's identity before reuse:
//! a device node name can be taken over by another drive after a hot-plug, so a
//! cached answer is used only while every drive in it still has the identity it
//! was resolved with and its nodes still exist; otherwise the path is resolved
//! again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{resolve, DiscoveryError, Drive, Roots};

/// Resolved paths, re-verified on every use. See the module docs.
#[derive(Debug)]
pub struct DriveCache {
    roots: Roots,
    entries: HashMap<PathBuf, Vec<Drive>>,
}

impl DriveCache {
    /// An empty cache over these roots.
    pub fn new(roots: Roots) -> DriveCache {
        DriveCache {
            roots,
            entries: HashMap::new(),
        }
    }

    /// The drives behind `path`: the cached answer if it still holds, else a
    /// fresh [`resolve`] (which replaces the cached one).
    pub fn resolve(&mut self, path: &Path) -> Result<Vec<Drive>, DiscoveryError> {
        if let Some(cached) = self.entries.get(path) {
            if cached.iter().all(|d| d.still_valid(&self.roots)) {
                return Ok(cached.clone());
            }
        }
        self.entries.remove(path);
        let fresh = resolve(&self.roots, path)?;
        self.entries.insert(path.to_path_buf(), fresh.clone());
        Ok(fresh)
    }

    /// Forgets every cached answer.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many paths are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
