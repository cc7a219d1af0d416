//! The interval checker of the chaos test: reads what every client process
//! logged (`ffi/tests/c/chaos_client.c` documents the lines) plus what the
//! orchestrator did to it (pauses, kills, exits) and judges the run.
//!
//! Rules (times are `CLOCK_MONOTONIC` ns, shared by all processes):
//!
//! - **Exclusion.** A critical section is `[enter, end]`, `end` being the
//!   `exit` line, the `fenced` line, or the death of a process killed inside
//!   it. Two sections of different slots must not overlap, except when one of
//!   them is *stale*: its process was paused (SIGSTOP) for longer than the
//!   lease between its `lock` line and its end, and was fenced within
//!   [`Rules::fence_window_ns`] after the pause ended (without a watchdog a
//!   resumed holder may act before its fence reaches it: issue 14). Excused
//!   overlaps are counted by where the pause hit: inside the section, or inside
//!   `ilm_lock` (before `enter`).
//! - **No false fence.** A `fenced` line must follow the end of a pause of that
//!   process by at most [`Rules::fence_window_ns`]; a fence anywhere else (minority
//!   drive faults, kills of others) is a violation.
//! - **No lost update.** In `enter` order, each section reads the counter the
//!   previous section wrote (or the one before it plus one, when the previous
//!   section died between its read-modify-write and its log line). After
//!   sections involved in excused overlaps the expectation is resynchronised
//!   (counted).
//! - **LVB never goes back.** A value read (not all ones) is at least every value
//!   stored by an `ilm_unlock` that returned 0 before the read began, unless a
//!   drive was power cycled between that store and the read (the LVB lives in
//!   the drives' tables: a documented limit, counted).
//! - **A killed holder's restart takes its lock back**: when a process was
//!   killed inside a section, the next section of any slot is its restarted
//!   process's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A SIGSTOP .. SIGCONT of one process, ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pause {
    /// When SIGSTOP was sent.
    pub stop: u64,
    /// When SIGCONT was sent.
    pub cont: u64,
}

/// How a client process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Still running when the logs were read (not expected).
    Running,
    /// Killed by the orchestrator (SIGKILL), reaped at this time.
    Killed(u64),
    /// Exited by itself (status), reaped at this time.
    Exited(i32, u64),
    /// Killed by a signal the orchestrator did not send, reaped at this time.
    Signalled(i32, u64),
}

/// One process of one client slot, as the orchestrator saw it.
#[derive(Clone, Debug)]
pub struct Incarnation {
    /// The slot (host ID `chaos-host-<slot>`).
    pub slot: usize,
    /// 0 for the first process of the slot, then 1, 2, ...
    pub number: u32,
    /// The process's log.
    pub log: String,
    /// Pauses, in order.
    pub pauses: Vec<Pause>,
    /// How it ended.
    pub end: End,
}

/// The judging parameters.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// The lease, ns.
    pub lease_ns: u64,
    /// How long after a pause's end its fence may come, ns.
    pub fence_window_ns: u64,
    /// A killed holder whose restarted process is not the next to enter is a
    /// violation (else only counted in [`Verdict::taken_first_by_other`]).
    pub strict_take_back: bool,
}

/// One critical section.
#[derive(Clone, Debug, Default)]
pub struct Section {
    /// Slot of its process.
    pub slot: usize,
    /// Index of its process in the incarnation list.
    pub inc: usize,
    /// The `lock` line before it.
    pub lock: u64,
    /// The `enter` line.
    pub enter: u64,
    /// Its end (exit, fence or death).
    pub end: u64,
    /// Ended by a fence.
    pub fenced: bool,
    /// Ended by the death of the process (no exit line).
    pub died: bool,
    /// `(read at, value)` of its LVB read.
    pub lvb: Option<(u64, u64)>,
    /// `(read, wrote)` of its counter update.
    pub counter: Option<(i64, i64)>,
    /// The LVB value it wrote.
    pub wrote_lvb: Option<u64>,
    /// `(returned at, rc)` of its first `ilm_unlock`.
    pub unlock: Option<(u64, i32)>,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// All critical sections, in `enter` order.
    pub sections: Vec<Section>,
    /// Critical sections per slot.
    pub sections_by_slot: BTreeMap<usize, usize>,
    /// Stale sections (see the module docs) that overlapped others: paused in
    /// the section.
    pub excused_in_section: usize,
    /// Stale sections that overlapped others: paused inside `ilm_lock`.
    pub excused_in_lock: usize,
    /// Sections of others that overlapped a stale section (excused).
    pub excused_overlapped: usize,
    /// Of those, the ones still running when the stale holder resumed (it
    /// could act before its fence arrived: issue 14).
    pub excused_after_resume: usize,
    /// Fences, all of them.
    pub fences: usize,
    /// Pauses that hit a process inside a critical section.
    pub pauses_in_section: usize,
    /// Kills of a process inside a critical section.
    pub kills_in_section: usize,
    /// Of those, restarted processes that took the lock back before anyone else.
    pub taken_back: usize,
    /// Of those, locks another host entered first (the restarted process's
    /// acquire unlocks its leftover before it trylocks again).
    pub taken_first_by_other: Vec<String>,
    /// Counter expectations resynchronised after excused overlaps.
    pub counter_resyncs: usize,
    /// LVB reads below an earlier store, excused by a power cycle in between.
    pub lvb_back_after_power_cycle: usize,
    /// LVB reads of all ones.
    pub lvb_all_ones: usize,
    /// Error returns by `(call, errno)`.
    pub errors: BTreeMap<(String, i32), usize>,
    /// Every violation, one line each.
    pub violations: Vec<String>,
}

#[derive(Default)]
struct Parsed {
    sections: Vec<Section>,
    fences: Vec<u64>,
}

fn field<T: std::str::FromStr>(it: &mut std::str::SplitWhitespace<'_>) -> Option<T> {
    it.next()?.parse().ok()
}

/// Parses one process's log into sections (ends not yet known for a section
/// the process died in) and fences.
fn parse(inc_index: usize, inc: &Incarnation, v: &mut Verdict) -> Parsed {
    let mut p = Parsed::default();
    let mut open: Option<Section> = None;
    let mut last_lock = 0u64;
    // Only whole lines: the process writes each line with one write(2).
    let text = match inc.log.rfind('\n') {
        Some(i) => &inc.log[..=i],
        None => "",
    };
    for (n, line) in text.lines().enumerate() {
        let mut it = line.split_whitespace();
        let kind = it.next().unwrap_or("");
        let bad = |v: &mut Verdict| {
            v.violations.push(format!(
                "slot {} process {}: unreadable log line {}: {line:?}",
                inc.slot,
                inc.number,
                n + 1
            ))
        };
        match kind {
            "start" | "stop" => {}
            "lock" => match field(&mut it) {
                Some(t) => last_lock = t,
                None => bad(v),
            },
            "err" => {
                let call: Option<String> = field(&mut it);
                let errno: Option<i32> = field(&mut it);
                match (call, errno) {
                    (Some(c), Some(e)) => *v.errors.entry((c, e)).or_default() += 1,
                    _ => bad(v),
                }
            }
            "enter" => match field(&mut it) {
                Some(t) => {
                    if let Some(s) = open.take() {
                        v.violations.push(format!(
                            "slot {} process {}: enter at {t} inside the section entered at {}",
                            inc.slot, inc.number, s.enter
                        ));
                    }
                    open = Some(Section {
                        slot: inc.slot,
                        inc: inc_index,
                        lock: last_lock,
                        enter: t,
                        ..Section::default()
                    });
                }
                None => bad(v),
            },
            "lvb" => {
                let t: Option<u64> = field(&mut it);
                let val = it.next().and_then(|h| u64::from_str_radix(h, 16).ok());
                match (t, val, open.as_mut()) {
                    (Some(t), Some(val), Some(s)) => s.lvb = Some((t, val)),
                    _ => bad(v),
                }
            }
            "counter" => {
                let r: Option<i64> = field(&mut it);
                let w: Option<i64> = field(&mut it);
                match (r, w, open.as_mut()) {
                    (Some(r), Some(w), Some(s)) => s.counter = Some((r, w)),
                    _ => bad(v),
                }
            }
            "wrote_lvb" => match (field(&mut it), open.as_mut()) {
                (Some(val), Some(s)) => s.wrote_lvb = Some(val),
                _ => bad(v),
            },
            "exit" => match (field(&mut it), open.take()) {
                (Some(t), Some(mut s)) => {
                    s.end = t;
                    p.sections.push(s);
                }
                _ => bad(v),
            },
            "unlock" => {
                let t: Option<u64> = field(&mut it);
                let rc: Option<i32> = field(&mut it);
                match (t, rc, p.sections.last_mut()) {
                    (Some(t), Some(rc), Some(s)) if s.unlock.is_none() && open.is_none() => {
                        s.unlock = Some((t, rc))
                    }
                    _ => bad(v),
                }
            }
            "fenced" => match field(&mut it) {
                Some(t) => {
                    p.fences.push(t);
                    if let Some(mut s) = open.take() {
                        s.end = t;
                        s.fenced = true;
                        p.sections.push(s);
                    }
                }
                None => bad(v),
            },
            _ => bad(v),
        }
    }
    if let Some(mut s) = open {
        match inc.end {
            End::Killed(t) | End::Exited(_, t) | End::Signalled(_, t) => {
                s.end = t;
                s.died = true;
                p.sections.push(s);
            }
            End::Running => v.violations.push(format!(
                "slot {} process {}: still running with an open section",
                inc.slot, inc.number
            )),
        }
    }
    p
}

/// How a section is stale (see the module docs), if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stale {
    InSection,
    InLock,
}

fn stale(s: &Section, inc: &Incarnation, fences: &[u64], r: &Rules) -> Option<(Stale, Pause)> {
    inc.pauses
        .iter()
        .filter(|p| p.stop >= s.lock && p.stop < s.end && p.cont - p.stop > r.lease_ns)
        .find(|p| {
            fences
                .iter()
                .any(|&f| f >= p.cont && f <= p.cont + r.fence_window_ns)
        })
        .map(|p| {
            let kind = if p.stop >= s.enter {
                Stale::InSection
            } else {
                Stale::InLock
            };
            (kind, *p)
        })
}

/// Judges a run: `incs` are every process of every slot; `power_cycles` the
/// times drives lost their tables.
pub fn check(incs: &[Incarnation], power_cycles: &[u64], rules: &Rules) -> Verdict {
    let mut v = Verdict::default();
    let mut fences: Vec<Vec<u64>> = Vec::new();
    let mut sections = Vec::new();
    for (i, inc) in incs.iter().enumerate() {
        let p = parse(i, inc, &mut v);
        sections.extend(p.sections);
        fences.push(p.fences);
    }
    sections.sort_by_key(|s| (s.enter, s.slot));
    for s in &sections {
        *v.sections_by_slot.entry(s.slot).or_default() += 1;
    }

    // False fences.
    for (i, inc) in incs.iter().enumerate() {
        for &f in &fences[i] {
            v.fences += 1;
            let after_pause = inc
                .pauses
                .iter()
                .any(|p| f >= p.cont && f <= p.cont + rules.fence_window_ns);
            if !after_pause {
                v.violations.push(format!(
                    "false fence: slot {} process {} fenced at {f} with no pause just before",
                    inc.slot, inc.number
                ));
            }
        }
    }

    // Pauses and kills that hit a section.
    for s in &sections {
        let inc = &incs[s.inc];
        v.pauses_in_section += inc
            .pauses
            .iter()
            .filter(|p| p.stop >= s.enter && p.stop < s.end)
            .count();
        if s.died && matches!(inc.end, End::Killed(_)) {
            v.kills_in_section += 1;
        }
    }

    // Exclusion.
    let stale_of: Vec<Option<(Stale, Pause)>> = sections
        .iter()
        .map(|s| stale(s, &incs[s.inc], &fences[s.inc], rules))
        .collect();
    let mut excused = vec![false; sections.len()];
    for i in 0..sections.len() {
        for j in i + 1..sections.len() {
            let (a, b) = (&sections[i], &sections[j]);
            if b.enter > a.end {
                // Sorted by enter: no later section can start inside `a`... unless
                // `a` is long; keep scanning only while starts are inside it.
                break;
            }
            if a.slot == b.slot {
                continue;
            }
            let stale_one = match (stale_of[i], stale_of[j]) {
                (Some(k), _) => Some((i, j, k)),
                (None, Some(k)) => Some((j, i, k)),
                _ => None,
            };
            match stale_one {
                Some((st, other, (kind, pause))) => {
                    if !excused[st] {
                        match kind {
                            Stale::InSection => v.excused_in_section += 1,
                            Stale::InLock => v.excused_in_lock += 1,
                        }
                    }
                    excused[st] = true;
                    excused[other] = true;
                    v.excused_overlapped += 1;
                    if sections[other].end > pause.cont {
                        v.excused_after_resume += 1;
                    }
                }
                None => v.violations.push(format!(
                    "overlap: slot {} [{}, {}] and slot {} [{}, {}] ({} us)",
                    a.slot,
                    a.enter,
                    a.end,
                    b.slot,
                    b.enter,
                    b.end,
                    (a.end.min(b.end) - b.enter) / 1000
                )),
            }
        }
    }

    // Lost updates.
    let mut expect: Option<i64> = Some(0);
    let mut maybe_plus_one = false;
    let mut tainted = false;
    for (i, s) in sections.iter().enumerate() {
        match s.counter {
            Some((r, w)) => {
                let ok = match expect {
                    Some(e) => r == e || (maybe_plus_one && r == e + 1),
                    None => true,
                };
                if !ok {
                    if tainted || excused[i] {
                        v.counter_resyncs += 1;
                    } else {
                        v.violations.push(format!(
                            "lost update: slot {} entered at {} read counter {r}, expected {}{}",
                            s.slot,
                            s.enter,
                            expect.unwrap_or(0),
                            if maybe_plus_one { " or one more" } else { "" }
                        ));
                    }
                }
                expect = Some(w);
                maybe_plus_one = false;
            }
            None => {
                // Died or was fenced before the line: its write may have landed.
                if s.died || s.fenced {
                    maybe_plus_one = true;
                }
            }
        }
        tainted = excused[i];
    }

    // LVB.
    let mut stores: Vec<(u64, u64)> = sections
        .iter()
        .filter_map(|s| match (s.unlock, s.wrote_lvb) {
            (Some((t, 0)), Some(val)) => Some((t, val)),
            _ => None,
        })
        .collect();
    stores.sort();
    for s in &sections {
        let Some((t, val)) = s.lvb else { continue };
        if val == u64::MAX {
            v.lvb_all_ones += 1;
            continue;
        }
        let Some(&(st, max)) = stores
            .iter()
            .take_while(|(st, _)| *st < t)
            .max_by_key(|(_, val)| *val)
        else {
            continue;
        };
        if val < max {
            if power_cycles.iter().any(|&p| p > st && p < t) {
                v.lvb_back_after_power_cycle += 1;
            } else {
                v.violations.push(format!(
                    "LVB went back: slot {} read {val:#x} at {t}, but {max:#x} was stored at {st}",
                    s.slot
                ));
            }
        }
    }

    // Killed holders take their lock back.
    for (i, s) in sections.iter().enumerate() {
        let inc = &incs[s.inc];
        if !(s.died && matches!(inc.end, End::Killed(_))) {
            continue;
        }
        let next_inc = incs
            .iter()
            .position(|x| x.slot == inc.slot && x.number == inc.number + 1);
        match sections.get(i + 1) {
            Some(n) if Some(n.inc) == next_inc => v.taken_back += 1,
            Some(n) => v.taken_first_by_other.push(format!(
                "slot {} killed holding the lock (section entered at {}): slot {} process {} entered next at {} before the restarted process took it back",
                s.slot, s.enter, n.slot, incs[n.inc].number, n.enter
            )),
            None => {}
        }
    }

    if rules.strict_take_back {
        v.violations.extend(v.taken_first_by_other.iter().cloned());
    }
    v.sections = sections;
    v
}

impl Verdict {
    /// Errors by call and errno, as `lock EBUSY 12, unlock EIO 1`.
    pub fn errors_line(&self) -> String {
        let mut out = String::new();
        for ((call, errno), n) in &self.errors {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(out, "{call} {} {n}", errno_name(*errno));
        }
        if out.is_empty() {
            out.push_str("none");
        }
        out
    }
}

/// The symbolic name of the errno values the library returns.
pub fn errno_name(e: i32) -> String {
    match e {
        1 => "EPERM".into(),
        2 => "ENOENT".into(),
        5 => "EIO".into(),
        11 => "EAGAIN".into(),
        12 => "ENOMEM".into(),
        16 => "EBUSY".into(),
        19 => "ENODEV".into(),
        22 => "EINVAL".into(),
        28 => "ENOSPC".into(),
        62 => "ETIME".into(),
        110 => "ETIMEDOUT".into(),
        125 => "ECANCELED".into(),
        e => format!("errno{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        lease_ns: 2_000,
        fence_window_ns: 5_000,
        strict_take_back: true,
    };

    fn inc(slot: usize, number: u32, log: &str, pauses: Vec<Pause>, end: End) -> Incarnation {
        Incarnation {
            slot,
            number,
            log: log.to_string(),
            pauses,
            end,
        }
    }

    fn section(lock: u64, enter: u64, read: i64, lvb_in: u64, exit: u64, rc: i32) -> String {
        format!(
            "lock {lock}\nenter {enter}\nlvb {enter} {lvb_in:016x}\ncounter {read} {}\nwrote_lvb {enter}\nexit {exit}\nunlock {} {rc}\n",
            read + 1,
            exit + 1
        )
    }

    #[test]
    fn clean_handover_passes() {
        let a = inc(
            0,
            0,
            &section(0, 10, 0, 0, 20, 0),
            vec![],
            End::Exited(0, 100),
        );
        let b = inc(
            1,
            0,
            &section(5, 30, 1, 10, 40, 0),
            vec![],
            End::Exited(0, 100),
        );
        let v = check(&[a, b], &[], &RULES);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!(v.sections.len(), 2);
    }

    #[test]
    fn an_overlap_is_a_violation() {
        let a = inc(
            0,
            0,
            &section(0, 10, 0, 0, 40, 0),
            vec![],
            End::Exited(0, 100),
        );
        let b = inc(
            1,
            0,
            &section(5, 30, 1, 10, 50, 0),
            vec![],
            End::Exited(0, 100),
        );
        let v = check(&[a, b], &[], &RULES);
        assert!(
            v.violations.iter().any(|x| x.starts_with("overlap")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn a_paused_then_fenced_holder_is_excused_and_counted() {
        // A enters at 10, is paused 20..3000 (past the 2000 lease), B takes the
        // lock at 2500, A resumes, acts, and is fenced at 3010.
        let a = inc(
            0,
            0,
            "lock 0\nenter 10\nlvb 10 0000000000000000\ncounter 0 1\nfenced 3010\n",
            vec![Pause {
                stop: 20,
                cont: 3000,
            }],
            End::Exited(3, 3020),
        );
        let b = inc(
            1,
            0,
            &section(100, 2500, 1, 0, 3005, 0),
            vec![],
            End::Exited(0, 9000),
        );
        let v = check(&[a, b], &[], &RULES);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!(v.excused_in_section, 1);
        assert_eq!(v.fences, 1);
    }

    #[test]
    fn a_paused_holder_that_is_not_fenced_is_not_excused() {
        let a = inc(
            0,
            0,
            &section(0, 10, 0, 0, 3010, 0),
            vec![Pause {
                stop: 20,
                cont: 3000,
            }],
            End::Exited(0, 9000),
        );
        let b = inc(
            1,
            0,
            &section(100, 2500, 1, 0, 3005, 0),
            vec![],
            End::Exited(0, 9000),
        );
        let v = check(&[a, b], &[], &RULES);
        assert!(
            v.violations.iter().any(|x| x.starts_with("overlap")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn a_fence_without_a_pause_is_false() {
        let a = inc(
            0,
            0,
            "lock 0\nenter 10\nfenced 50\n",
            vec![],
            End::Exited(3, 60),
        );
        let v = check(&[a], &[], &RULES);
        assert!(
            v.violations.iter().any(|x| x.starts_with("false fence")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn a_lost_update_is_a_violation() {
        let a = inc(
            0,
            0,
            &section(0, 10, 0, 0, 20, 0),
            vec![],
            End::Exited(0, 100),
        );
        let b = inc(
            1,
            0,
            &section(5, 30, 0, 10, 40, 0),
            vec![],
            End::Exited(0, 100),
        );
        let v = check(&[a, b], &[], &RULES);
        assert!(
            v.violations.iter().any(|x| x.starts_with("lost update")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn lvb_going_back_is_a_violation_unless_a_drive_was_power_cycled() {
        let a = inc(
            0,
            0,
            &section(0, 10, 0, 0, 20, 0),
            vec![],
            End::Exited(0, 100),
        );
        let b = inc(
            1,
            0,
            &section(5, 30, 1, 0, 40, 0),
            vec![],
            End::Exited(0, 100),
        );
        let v = check(&[a.clone(), b.clone()], &[], &RULES);
        assert!(
            v.violations.iter().any(|x| x.starts_with("LVB went back")),
            "{:?}",
            v.violations
        );
        let v = check(&[a, b], &[25], &RULES);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!(v.lvb_back_after_power_cycle, 1);
    }

    #[test]
    fn a_killed_holder_must_be_the_next_to_enter() {
        let a0 = inc(
            0,
            0,
            "lock 0\nenter 10\ncounter 0 1\n",
            vec![],
            End::Killed(20),
        );
        let a1 = inc(
            0,
            1,
            &section(25, 30, 1, 0, 40, 0),
            vec![],
            End::Exited(0, 100),
        );
        let b = inc(
            1,
            0,
            &section(5, 50, 2, 30, 60, 0),
            vec![],
            End::Exited(0, 100),
        );
        let v = check(&[a0.clone(), a1, b.clone()], &[], &RULES);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!((v.kills_in_section, v.taken_back), (1, 1));
        let b_first = inc(
            1,
            0,
            &section(5, 25, 1, 0, 28, 0),
            vec![],
            End::Exited(0, 100),
        );
        let v = check(&[a0, b_first], &[], &RULES);
        assert!(
            v.violations.iter().any(|x| x.contains("took it back")),
            "{:?}",
            v.violations
        );
    }
}
