//! `idm demo`: the engine end to end on the embedded default, an array of
//! in-process simulated IDM drives. No hardware, no server, no configuration.
//!
//! It walks through what the engine does (quorum acquire, contention, LVB
//! hand-over, a minority of dead drives, renewal), then runs a contention race
//! and a throughput run, and prints the engine's own statistics.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idm_engine::api::{Engine, EngineError, LockOptions, Lockspace, LockspaceConfig, SimArray};
use uring_sg::{HostId, LockId, Lvb, Mode};

/// Options of `idm demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Simulated drives every lock spans (1..=512).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=512))]
    drives: u16,
    /// Hosts (lockspaces with their own host IDs) in the contention race.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=64))]
    hosts: u16,
    /// Lock+unlock cycles per host in the contention race.
    #[arg(long, default_value_t = 200)]
    rounds: u32,
    /// Distinct locks in the throughput run.
    #[arg(long, default_value_t = 2_000)]
    locks: u32,
    /// Reactor threads (default: one per core, at most 4).
    #[arg(long)]
    reactors: Option<usize>,
}

fn host(i: usize) -> HostId {
    let mut id = [0u8; 32];
    let name = format!("demo-host-{i}");
    id[..name.len()].copy_from_slice(name.as_bytes());
    HostId(id)
}

fn lock_id(name: &str) -> LockId {
    let mut id = [0u8; 64];
    let n = name.len().min(64);
    id[..n].copy_from_slice(&name.as_bytes()[..n]);
    LockId(id)
}

fn space(engine: &Engine, i: usize) -> Result<Lockspace, EngineError> {
    let mut cfg = LockspaceConfig::new(&format!("demo-vg-{i}")).with_lease(Duration::from_secs(6));
    cfg.host_id = host(i);
    engine.lockspace(cfg)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Runs the demo.
pub fn run(args: Args) -> ExitCode {
    match demo(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idm demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &Args) -> Result<(), EngineError> {
    let n = usize::from(args.drives);
    let array = SimArray::new(n);
    let engine = Engine::on_array(array.clone(), |c| {
        if let Some(r) = args.reactors {
            c.reactors = r;
        }
        c.command_timeout = Duration::from_millis(200);
    })?;
    let drives = engine.simulated_drives();
    let majority = n / 2 + 1;
    println!(
        "engine: {} reactor(s), {n} in-process simulated IDM drives ({} .. {}), majority {majority}",
        engine.reactors(),
        drives[0],
        drives[n - 1]
    );
    let no_wait = LockOptions {
        timeout: Duration::from_secs(2),
        no_wait: true,
    };

    println!("\n1. quorum acquire and contention");
    let a = space(&engine, 0)?;
    let b = space(&engine, 1)?;
    let lv = lock_id("demo/lv0");
    let t = Instant::now();
    a.lock(lv, Mode::Exclusive, &drives, no_wait)?;
    println!(
        "   host 0 locks demo/lv0 EX on {n} drives: granted in {}",
        us(t.elapsed())
    );
    match b.lock(lv, Mode::Exclusive, &drives, no_wait) {
        Err(e) => println!("   host 1 tries EX, no wait: {e} (errno {})", e.errno()),
        Ok(()) => return Err(EngineError::InvalidArgument("two exclusive holders".into())),
    }

    println!("\n2. lock value block handed over at release");
    let stamp = 0x0000_0600_dead_beef;
    a.write_lvb(lv, Lvb::from_u64(stamp))?;
    a.unlock(lv)?;
    b.lock(lv, Mode::Shared, &drives, no_wait)?;
    let got = b.read_lvb(lv)?;
    println!(
        "   host 0 wrote {stamp:#x} and unlocked; host 1 locked SH and read {:#x}",
        got.to_u64()
    );
    b.unlock(lv)?;

    println!("\n3. a minority of drives dead: the lock completes at quorum");
    let dead = n - majority;
    for d in &array.drives()[..dead] {
        d.set_down(true);
    }
    let t = Instant::now();
    let r = a.lock(lock_id("demo/lv1"), Mode::Exclusive, &drives, no_wait);
    println!(
        "   {dead} of {n} drives not answering; host 0 locks demo/lv1: {} in {} (no wait for the dead drives)",
        if r.is_ok() { "granted" } else { "FAILED" },
        us(t.elapsed())
    );
    r?;
    for d in array.drives() {
        d.set_down(false);
    }
    a.unlock(lock_id("demo/lv1"))?;

    println!(
        "\n4. contention: {} hosts race for one lock, {} rounds each",
        args.hosts, args.rounds
    );
    let holders = Arc::new(AtomicU64::new(0));
    let violated = Arc::new(AtomicBool::new(false));
    let hot = lock_id("demo/hot");
    let t = Instant::now();
    let threads: Vec<_> = (0..usize::from(args.hosts))
        .map(|h| {
            let engine = engine.clone();
            let drives = drives.clone();
            let holders = holders.clone();
            let violated = violated.clone();
            let rounds = args.rounds;
            std::thread::spawn(move || -> Result<u32, EngineError> {
                let ls = space(&engine, 100 + h)?;
                let mut won = 0;
                for _ in 0..rounds {
                    ls.lock(hot, Mode::Exclusive, &drives, LockOptions::default())?;
                    if holders.fetch_add(1, Ordering::SeqCst) != 0 {
                        violated.store(true, Ordering::SeqCst);
                    }
                    won += 1;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    ls.unlock(hot)?;
                }
                Ok(won)
            })
        })
        .collect();
    let mut wins = Vec::new();
    for t in threads {
        wins.push(t.join().map_err(|_| EngineError::Stopped)??);
    }
    let total: u32 = wins.iter().sum();
    println!(
        "   {total} hand-offs in {:.2} s, wins per host {wins:?}, two holders at once: {}",
        t.elapsed().as_secs_f64(),
        if violated.load(Ordering::SeqCst) {
            "YES (bug)"
        } else {
            "never"
        }
    );

    println!(
        "\n5. throughput: {} distinct locks, lock+unlock, all submitted at once",
        args.locks
    );
    let t = Instant::now();
    let pending: Vec<_> = (0..args.locks)
        .map(|i| {
            let id = lock_id(&format!("demo/many/{i}"));
            (id, a.lock_async(id, Mode::Exclusive, &drives, no_wait))
        })
        .collect();
    let mut ids = Vec::with_capacity(pending.len());
    for (id, p) in pending {
        p.wait()?;
        ids.push(id);
    }
    let held = t.elapsed();
    let releases: Vec<_> = ids.iter().map(|id| a.unlock_async(*id)).collect();
    for r in releases {
        r.wait()?;
    }
    let all = t.elapsed();
    let cmds = u64::from(args.locks) * 2 * n as u64;
    println!(
        "   {} locks held in {:.3} s, all released after {:.3} s: {:.0} lock+unlock/s, {:.0} drive commands/s",
        args.locks,
        held.as_secs_f64(),
        all.as_secs_f64(),
        f64::from(args.locks) / all.as_secs_f64(),
        cmds as f64 / all.as_secs_f64()
    );

    println!("\nengine statistics (latency from request to outcome):");
    println!("{}", engine.stats()?);
    if violated.load(Ordering::SeqCst) {
        return Err(EngineError::InvalidArgument(
            "mutual exclusion was violated".into(),
        ));
    }
    Ok(())
}
