//! `idm dump`: print drives' mutex tables, read through the drives' own
//! table-read commands as a host would, from real devices (`/dev/sgN`,
//! `/dev/sdX`, `/dev/disk/by-id/...`, `/dev/mapper/...`, `/dev/nvmeXnY`) or, with
//! `--sim`, simulated drives. With several drives a summary follows: for each
//! lock, which hosts are live members on how many of the drives, and whether that
//! is a majority (a lock over N drives is held on ⌊N/2⌋+1 of them).
//!
//! Two names of one physical drive (same WWN or serial) are read once and count
//! once. Exit codes: 0 every drive was read; 2 a drive could not be opened or
//! read (not a device, not an IDM drive, permission denied, I/O error, timeout;
//! one line on stderr naming it): the others are still printed.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};
use uring_sg::codec::{MutexState, Record};
use uring_sg::LockId;

use crate::common::{entries, fail, print_table, EXIT_ERROR};
use crate::drives::{Drives, Target};

/// Arguments of `idm dump`.
#[derive(clap::Args)]
pub struct Args {
    /// Drives to read: device paths (`/dev/sgN`, `/dev/sdX`, `/dev/disk/by-id/...`,
    /// `/dev/mapper/...` on one drive, `/dev/nvmeXnY`), or drive names on the
    /// simulator with `--sim`. With several, a summary of which hosts hold which
    /// lock on how many of them follows.
    #[arg(required = true, value_name = "DRIVE")]
    drives: Vec<String>,
    /// Read drives on the simulator at this address (`unix:PATH` or
    /// `tcp:HOST:PORT`); without it (and without `IDM_SIM`), real devices.
    #[arg(long, env = "IDM_SIM", value_name = "ADDR")]
    sim: Option<String>,
    /// Show only the records of this lock (its ID as the LOCK ID column prints
    /// it: text up to 64 bytes, or `hex:` followed by hex digits).
    #[arg(long, value_name = "ID")]
    lock: Option<LockId>,
    /// Print one JSON object: `drives` (per drive: `drive`, `node`, `identity`,
    /// `records`, or `error`, or `same_as`) and `summary` (per lock and host:
    /// `live_on`, `expired_on`, `majority`).
    #[arg(long)]
    json: bool,
    /// Time one drive command may take, ms.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    timeout: u64,
}

/// What became of one named drive.
enum Read {
    /// Its records (filtered by `--lock`).
    Records(Target, Vec<Record>),
    /// Another name of a drive read before (same identity).
    SameAs(String),
    /// It could not be opened or read.
    Failed(String),
}

/// One host's standing on one lock across the drives read.
#[derive(Default)]
struct Standing {
    /// Drives on which the host is a live member (locked / multiple-locked).
    live: usize,
    /// Drives on which its membership expired (timeout).
    expired: usize,
    /// Classes of its live records, counted.
    ex: usize,
    sh: usize,
}

/// Runs `idm dump`.
pub fn run(a: Args) -> ExitCode {
    let timeout = Duration::from_millis(a.timeout.max(1));
    let mut drives = match Drives::new(a.sim.as_deref()) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let mut reads: Vec<(String, Read)> = Vec::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    for name in &a.drives {
        let read = match drives.open(name, "idm-dump") {
            Err(e) => Read::Failed(e),
            Ok(t) => match t
                .identity
                .as_ref()
                .and_then(|id| seen.iter().find(|(k, _)| k == id))
            {
                Some((_, first)) => Read::SameAs(first.clone()),
                None => {
                    if let Some(id) = &t.identity {
                        seen.push((id.clone(), name.clone()));
                    }
                    match drives.read_table(&t, timeout) {
                        Ok(mut recs) => {
                            if let Some(l) = &a.lock {
                                recs.retain(|r| r.lock_id == *l);
                            }
                            Read::Records(t, recs)
                        }
                        Err(e) => Read::Failed(e),
                    }
                }
            },
        };
        if let Read::Failed(e) = &read {
            errln!("idm: {e}");
        }
        reads.push((name.clone(), read));
    }
    let counted = reads
        .iter()
        .filter(|(_, r)| !matches!(r, Read::SameAs(_)))
        .count();
    let summary = summarize(&reads);
    let several = counted > 1;
    if a.json {
        let v = json!({
            "drives": reads.iter().map(|(n, r)| drive_json(n, r)).collect::<Vec<_>>(),
            "summary": summary_json(&summary, counted),
        });
        match serde_json::to_string_pretty(&v) {
            Ok(s) => outln!("{s}"),
            Err(e) => return fail(e),
        }
    } else {
        let headings = several || drives.real();
        for (name, r) in &reads {
            match r {
                Read::Records(t, recs) => {
                    if headings {
                        outln!("== {}", heading(t));
                    }
                    print_table(recs);
                }
                Read::SameAs(first) => {
                    outln!("== {name}: the same drive as {first}, read and counted once")
                }
                // Said on stderr; in the listing too when there are several.
                Read::Failed(e) if several => outln!("== {name}: not read: {e}"),
                Read::Failed(_) => {}
            }
        }
        if several {
            print_summary(&summary, counted, a.lock.as_ref(), &reads);
        }
    }
    if reads.iter().any(|(_, r)| matches!(r, Read::Failed(_))) {
        ExitCode::from(EXIT_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}

/// "/dev/sdb: /dev/sg1, naa.600..., 2 paths".
fn heading(t: &Target) -> String {
    let mut s = t.name.clone();
    let mut parts = Vec::new();
    if let Some(n) = &t.node {
        if n.as_os_str() != t.name.as_str() {
            parts.push(n.display().to_string());
        }
    }
    if let Some(id) = &t.identity {
        parts.push(id.clone());
    }
    if t.path_count > 1 {
        parts.push(format!("{} paths", t.path_count));
    }
    if !parts.is_empty() {
        s.push_str(" (");
        s.push_str(&parts.join(", "));
        s.push(')');
    }
    s
}

/// Per lock (in the order locks are first seen), per host: their standing.
/// Hosts are in the order first seen; a lock whose entries have no member
/// (only "unlocked" records) has no host.
fn summarize(reads: &[(String, Read)]) -> Vec<(String, Vec<(String, Standing)>)> {
    let mut order: Vec<String> = Vec::new();
    let mut locks: BTreeMap<String, Vec<(String, Standing)>> = BTreeMap::new();
    for (_, r) in reads {
        let Read::Records(_, recs) = r else { continue };
        for rec in recs {
            let lock = rec.lock_id.to_string();
            if !locks.contains_key(&lock) {
                order.push(lock.clone());
            }
            let hosts = locks.entry(lock).or_default();
            let live = matches!(rec.state, MutexState::Locked | MutexState::MultipleLocked);
            let expired = matches!(rec.state, MutexState::Timeout);
            if !live && !expired {
                continue;
            }
            let host = rec.host_id.to_string();
            let i = match hosts.iter().position(|(h, _)| *h == host) {
                Some(i) => i,
                None => {
                    hosts.push((host, Standing::default()));
                    hosts.len() - 1
                }
            };
            let s = &mut hosts[i].1;
            if live {
                s.live += 1;
                if rec.class.is_shared() {
                    s.sh += 1;
                } else {
                    s.ex += 1;
                }
            } else {
                s.expired += 1;
            }
        }
    }
    order
        .into_iter()
        .map(|l| {
            let h = locks.remove(&l).unwrap_or_default();
            (l, h)
        })
        .collect()
}

fn majority(n: usize) -> usize {
    n / 2 + 1
}

fn mode(s: &Standing) -> &'static str {
    match (s.ex, s.sh) {
        (0, 0) => "-",
        (_, 0) => "EX",
        (0, _) => "SH",
        _ => "mixed",
    }
}

/// What the host's standing amounts to over `n` drives.
fn verdict(s: &Standing, n: usize) -> &'static str {
    if s.live >= majority(n) {
        "holds it (majority)"
    } else if s.live > 0 {
        "live on a minority"
    } else {
        "expired, live nowhere (breakable)"
    }
}

fn print_summary(
    summary: &[(String, Vec<(String, Standing)>)],
    n: usize,
    lock: Option<&LockId>,
    reads: &[(String, Read)],
) {
    let failed = reads
        .iter()
        .filter(|(_, r)| matches!(r, Read::Failed(_)))
        .count();
    outln!();
    out!(
        "== summary over {n} drive(s) (a majority is {})",
        majority(n)
    );
    if failed > 0 {
        out!("; {failed} could not be read");
    }
    outln!();
    if summary.is_empty() {
        match lock {
            Some(l) => outln!("lock {l}: on none of the drives read"),
            None => outln!("no locks on the drives read"),
        }
        return;
    }
    outln!(
        "{:<40} {:<24} {:<5} {:>7} {:>10}  STANDING",
        "LOCK ID",
        "HOST ID",
        "MODE",
        "LIVE ON",
        "EXPIRED ON"
    );
    for (l, hosts) in summary {
        if hosts.is_empty() {
            outln!(
                "{l:<40} {:<24} {:<5} {:>7} {:>10}  free (entries left, no member)",
                "-",
                "-",
                0,
                0
            );
        }
        for (h, s) in hosts {
            outln!(
                "{:<40} {:<24} {:<5} {:>7} {:>10}  {}",
                l,
                h,
                mode(s),
                format!("{}/{n}", s.live),
                format!("{}/{n}", s.expired),
                verdict(s, n)
            );
        }
    }
}

fn drive_json(name: &str, r: &Read) -> Value {
    match r {
        Read::Records(t, recs) => json!({
            "drive": name,
            "node": t.node.as_ref().map(|n| n.display().to_string()),
            "identity": t.identity,
            "paths": t.path_count,
            "records": entries(recs),
        }),
        Read::SameAs(first) => json!({"drive": name, "same_as": first}),
        Read::Failed(e) => json!({"drive": name, "error": e}),
    }
}

fn summary_json(summary: &[(String, Vec<(String, Standing)>)], n: usize) -> Value {
    let rows: Vec<Value> = summary
        .iter()
        .map(|(l, hosts)| {
            json!({
                "lock_id": l,
                "hosts": hosts.iter().map(|(h, s)| json!({
                    "host_id": h,
                    "mode": mode(s),
                    "live_on": s.live,
                    "expired_on": s.expired,
                    "majority": s.live >= majority(n),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"drives": n, "majority": majority(n), "locks": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use uring_sg::codec::Class;

    fn rec(lock: &str, host: &str, state: MutexState, class: Class) -> Record {
        let mut r = Record::new(lock.parse().unwrap(), host.parse().unwrap(), class);
        r.state = state;
        r
    }

    fn target(name: &str) -> Target {
        Target::for_test(name)
    }

    /// Live and expired members are counted per drive; an entry without members
    /// is a lock with no host; a majority is over every drive named, unreadable
    /// ones included.
    #[test]
    fn summary_counts_members_per_drive() {
        use MutexState::*;
        let reads = vec![
            (
                "d0".to_string(),
                Read::Records(
                    target("d0"),
                    vec![
                        rec("vg", "A", Locked, Class::Exclusive),
                        rec("lv", "B", MultipleLocked, Class::SharedProtectedRead),
                        rec("lv", "C", Timeout, Class::SharedProtectedRead),
                        rec("old", "D", Unlocked, Class::Exclusive),
                    ],
                ),
            ),
            (
                "d1".to_string(),
                Read::Records(
                    target("d1"),
                    vec![
                        rec("vg", "A", Locked, Class::Exclusive),
                        rec("lv", "B", Locked, Class::Exclusive),
                    ],
                ),
            ),
            ("d2".to_string(), Read::Failed("no".into())),
            ("d1b".to_string(), Read::SameAs("d1".into())),
        ];
        let s = summarize(&reads);
        let names: Vec<&str> = s.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(names, ["vg", "lv", "old"]);
        let (_, vg) = &s[0];
        assert_eq!(
            (vg[0].0.as_str(), vg[0].1.live, mode(&vg[0].1)),
            ("A", 2, "EX")
        );
        assert_eq!(verdict(&vg[0].1, 3), "holds it (majority)");
        let (_, lv) = &s[1];
        assert_eq!((lv[0].1.live, mode(&lv[0].1)), (2, "mixed"));
        assert_eq!(
            (lv[1].0.as_str(), lv[1].1.live, lv[1].1.expired),
            ("C", 0, 1)
        );
        assert!(verdict(&lv[1].1, 3).contains("breakable"));
        assert!(s[2].1.is_empty());
        // One live drive of three is a minority.
        let one = Standing {
            live: 1,
            ex: 1,
            ..Standing::default()
        };
        assert_eq!(verdict(&one, 3), "live on a minority");
        assert_eq!(majority(4), 3);
    }
}
