//! No allocation per drive command: the allocations one lock+unlock costs do not
//! grow with the number of drives the lock spans (8 vs 64 drives: 8x the drive
//! commands, the same allocations). Counted with a global allocator wrapper over
//! every thread of this test binary (callers and reactors).

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idm_engine::api::{Engine, LockOptions, LockspaceConfig};
use idm_sim::engine::{SimArray, SimEngine};
use uring_sg::Mode;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per lock+unlock cycle on `n` drives, after warm-up.
fn allocs_per_cycle(n: usize) -> f64 {
    let array = SimArray::new(n);
    let engine = Engine::on_array(array.clone(), |c| c.reactors = 1).unwrap();
    let mut cfg = LockspaceConfig::new("alloc");
    cfg.host_id = "alloc-host".parse().unwrap();
    // Renewals would add work (and allocations) not tied to the cycles.
    cfg = cfg.with_lease(Duration::from_secs(3600));
    let ls = engine.lockspace(cfg).unwrap();
    let drives = array.names();
    let opts = LockOptions::default();
    let ids: Vec<_> = (0..50)
        .map(|i| format!("alloc-{i}").parse().unwrap())
        .collect();
    let cycle = || {
        for id in &ids {
            ls.lock(*id, Mode::Exclusive, &drives, opts).unwrap();
            ls.unlock(*id).unwrap();
        }
    };
    for _ in 0..4 {
        cycle(); // warm-up: slabs, queues and tables reach their size
    }
    let rounds = 10;
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..rounds {
        cycle();
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    (after - before) as f64 / (rounds * ids.len()) as f64
}

#[test]
fn allocations_per_lock_do_not_grow_with_the_drive_count() {
    let few = allocs_per_cycle(8);
    let many = allocs_per_cycle(64);
    // 64 drives send 8x the commands of 8 drives. Per-command allocations would
    // add at least (64 - 8) * 2 = 112 per cycle; the slack covers a slab or
    // queue growing once more on the bigger array.
    assert!(
        many < few + 2.0,
        "allocations per lock+unlock: {few:.1} on 8 drives, {many:.1} on 64"
    );
    eprintln!("allocations per lock+unlock: {few:.1} on 8 drives, {many:.1} on 64");
}
