//! Deterministic simulation: fixed seeds with and without faults, replay, planted bugs.

use idm_tests::{run, run_with, Bug, FaultProfile, RunOptions, ViolationKind};

const OPS: u64 = 200;

fn assert_clean(profile: FaultProfile, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let r = run(seed, OPS, profile);
        assert!(r.ops_done >= OPS, "seed {seed}: only {} ops", r.ops_done);
        assert!(
            r.violations.is_empty(),
            "seed {seed} ({}): {} violation(s), first: {}\nreplay: {}",
            profile.name,
            r.violation_count,
            r.violations[0],
            r.replay
        );
    }
}

#[test]
fn no_faults_no_violations() {
    assert_clean(FaultProfile::none(), 0..4);
}

#[test]
fn light_faults_no_violations() {
    assert_clean(FaultProfile::light(), 100..104);
}

/// Only a minority of drives misbehaves (stalls past the lease, power cycles,
/// hosts cut off from them): no fence, no slow release / LVB read / host count,
/// no success on a lapsed lease, no starved renewal (issue #12's invariants).
#[test]
fn minority_faults_never_fence_nor_slow_down() {
    assert_clean(FaultProfile::minority(), 200..204);
    let r = run(201, OPS, FaultProfile::minority());
    assert!(r.stats.faults.iter().sum::<u64>() > 0, "{:?}", r.stats);
    assert_eq!(r.stats.fences, 0);
}

#[test]
fn faults_are_injected_and_survived() {
    let r = run(7, OPS, FaultProfile::heavy());
    let injected: u64 = r.stats.faults.iter().sum();
    assert!(injected > 0, "heavy profile injected no fault");
    assert!(
        r.stats.timeouts > 0,
        "no command ever timed out under heavy faults"
    );
    assert!(r.stats.acquired > 0 && r.stats.released > 0);
}

#[test]
fn same_seed_same_trace() {
    for profile in [FaultProfile::none(), FaultProfile::heavy()] {
        let a = run(42, OPS, profile);
        let b = run(42, OPS, profile);
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a, b);
        let c = run(43, OPS, profile);
        assert_ne!(a.trace_hash, c.trace_hash, "different seeds, same trace");
    }
}

/// Runs `bug` on seeds from 0 until the checker finds a violation; at most `max`.
fn finds(bug: Bug, profile: FaultProfile, ops: u64, max: u64) -> (u64, Vec<ViolationKind>) {
    for seed in 0..max {
        let opts = RunOptions { bug, drives: None };
        let r = run_with(seed, ops, profile, opts);
        if r.violation_count > 0 {
            return (seed, r.violations.iter().map(|v| v.kind).collect());
        }
    }
    panic!("{bug:?}: no violation found in {max} seeds");
}

#[test]
fn planted_minority_quorum_is_caught() {
    let (seed, kinds) = finds(Bug::MinorityQuorum, FaultProfile::none(), OPS, 10);
    assert!(
        kinds.contains(&ViolationKind::UsedWithoutMajority),
        "seed {seed}: {kinds:?}"
    );
}

#[test]

fn planted_trust_reply_time_is_caught() {
    // Pauses only: a reply processed after a pause is trusted from the resume.
    let mut p = FaultProfile::none();
    p.name = "pauses";
    p.p_fault = 0.5;
    p.weights = [0, 0, 0, 0, 1];
    p.pause_max = FaultProfile::heavy().pause_max;
    // Slow replies (within the command timeout) make pauses land between a
    // command and its reply.
    p.net.spike_p = 0.3;
    p.net.spike_max = idm_engine::Nanos::from_millis(35);
    let clean = run(0, OPS, p);
    assert!(clean.violations.is_empty(), "{:?}", clean.violations);
    let (seed, kinds) = finds(Bug::TrustReplyTime, p, 2000, 200);
    // Over-trusted grants show first as a use without a majority, an overlap, or
    // the LVB of a holder that overlapped another going back (or not stored).
    assert!(
        kinds.iter().any(|k| matches!(
            k,
            ViolationKind::UsedWithoutMajority
                | ViolationKind::Exclusion
                | ViolationKind::UsedPastValidity
                | ViolationKind::LvbWentBack
                | ViolationKind::LvbNotStored
        )),
        "seed {seed}: {kinds:?}"
    );
}

/// Regression (fixed in `Release`): a release counted a drive that answered "not
/// held" towards its majority although that drive did not store the LVB, and a
/// later `ReadLvb` over another majority returned an older value. Heavy seed 4
/// (500 ops): "read 7 after a release of 8 completed", with no drive power cycle
/// and no table clean-up in the run.
#[test]
fn lvb_never_goes_back_under_heavy_faults() {
    let r = run(4, 500, FaultProfile::heavy());
    assert!(
        !r.violations.iter().any(|v| matches!(
            v.kind,
            ViolationKind::LvbWentBack | ViolationKind::LvbNotStored
        )),
        "{:?}\nreplay: {}",
        r.violations,
        r.replay
    );
}

/// Regression (harness): when the workload ends, drives that are down after a
/// power cycle stay down until a lease after it, as the engine's DESIGN NOTE
/// requires; bringing them back at once made hosts use locks whose majority a
/// forgetful drive had just broken (light seed 55: `UsedWithoutMajority` at the
/// instant faults stopped). Power cycles only, frequent, so drives are down at the
/// end of most runs.
#[test]
fn drives_down_when_faults_stop_stay_down_a_lease() {
    let mut p = FaultProfile::none();
    p.name = "power-cycles";
    p.p_fault = 0.3;
    p.weights = [1, 0, 0, 0, 0];
    assert_clean(p, 0..6);
}

/// PROTOCOL LIMIT (documented, kept failing on purpose): a drive that loses its
/// table and answers again within a lease can grant a lock whose holder still
/// counts that drive's lost membership; a holder with a bare majority of an odd
/// number of drives then loses exclusion when one of its drives forgets. The
/// engine's DESIGN NOTE ("Drive state loss") states the deployment assumption this
/// test violates: a drive that loses its table stays unavailable for at least one
/// countdown plus the drift margin, or its table is durable. Drives here come back
/// 1–5 ms after a power cycle.
#[test]
#[ignore = "protocol limit, documented in the idm-engine DESIGN NOTE: a drive that \
            loses its table must stay unavailable for one lease (or keep its table); \
            this test breaks that assumption and fails"]
fn fast_drive_restart_keeps_exclusion() {
    let mut p = FaultProfile::none();
    p.name = "fast-restart";
    p.p_fault = 0.3;
    p.weights = [1, 0, 1, 0, 0];
    p.stall_max = idm_engine::Nanos::from_millis(100);
    p.drive_down_min = idm_engine::Nanos::from_millis(1);
    p.drive_down_max = idm_engine::Nanos::from_millis(5);
    for seed in 0..20 {
        let r = run(seed, 500, p);
        assert!(
            r.violations.is_empty(),
            "seed {seed}: {}\nreplay: {}",
            r.violations[0],
            r.replay
        );
    }
}
