//! Simulator cost per command: server CPU time per command and commands/s with
//! one client keeping 1000 commands in flight over a Unix socket.
//!
//! Run: `cargo bench -p idm-sim --bench sim_cost` (release). The command is a
//! mutex refresh of a held lock (512 bytes of data-out, GOOD answer). The server
//! runs on its own thread; its CPU time comes from `CLOCK_THREAD_CPUTIME_ID`
//! read on that thread (the simulator's `stats` control request). Baseline from
//! the same run: the CPU cost of an io_uring NOP (submitted in batches of 1000).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use idm_sim::transport::sim::SimTransport;
use idm_sim::{ControlRequest, ControlResponse, ListenAddr, SimConfig, SimHandle, SimStats};
use io_uring::{opcode, IoUring};
use uring_sg::codec::{Class, HostId, LockId, MutexOp, Record};
use uring_sg::driver::Driver;
use uring_sg::transport::Request;

const IN_FLIGHT: usize = 1000;
const WARMUP: u64 = 50_000;
const MEASURE: u64 = 500_000;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Any error ends the run with its message.
type R<T> = Result<T, Box<dyn std::error::Error>>;

fn stats(h: &SimHandle) -> R<SimStats> {
    match h.control(ControlRequest::Stats)? {
        ControlResponse::Stats(s) => Ok(s),
        other => Err(format!("stats: {other:?}").into()),
    }
}

fn thread_cpu_ns() -> R<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// CPU ns per io_uring NOP on this thread, in batches of 1000.
fn nop_baseline() -> R<f64> {
    let mut ring = IoUring::new(1024)?;
    let batches = 500;
    let t0 = thread_cpu_ns()?;
    for _ in 0..batches {
        for _ in 0..1000 {
            // SAFETY: a NOP points at no memory.
            unsafe { ring.submission().push(&opcode::Nop::new().build())? };
        }
        ring.submit_and_wait(1000)?;
        ring.completion().for_each(drop);
    }
    Ok((thread_cpu_ns()? - t0) as f64 / (batches * 1000) as f64)
}

/// Runs `n` commands with IN_FLIGHT outstanding; records round trips in `hist`.
fn run(d: &mut Driver, req: &Request, n: u64, hist: &mut Histogram<u64>) -> R<()> {
    let mut sent_at = vec![Instant::now(); IN_FLIGHT];
    let mut issued = 0u64;
    let mut done = 0u64;
    for (slot, t) in sent_at.iter_mut().enumerate() {
        *t = Instant::now();
        d.enqueue(0, slot as u64, req, TIMEOUT)?;
        issued += 1;
    }
    let mut free = Vec::with_capacity(IN_FLIGHT);
    while done < n {
        d.turn(TIMEOUT, &mut |_, c| {
            assert!(c.reply.result.is_ok(), "{:?}", c.reply.result);
            let slot = c.tag as usize;
            let _ = hist.record(sent_at[slot].elapsed().as_nanos() as u64);
            free.push(slot);
            done += 1;
        })?;
        for slot in free.drain(..) {
            if issued < n {
                sent_at[slot] = Instant::now();
                d.enqueue(0, slot as u64, req, TIMEOUT)?;
                issued += 1;
            }
        }
    }
    Ok(())
}

fn main() -> R<()> {
    let dir = tempfile::tempdir()?;
    let addr = ListenAddr::Unix(dir.path().join("bench.sock"));
    let sim = SimHandle::start(SimConfig::with_drives(1), std::slice::from_ref(&addr))?;
    let mut d = Driver::new(256)?;
    d.add(Box::new(SimTransport::connect(&addr, "bench", "sim0")?));

    let lock: LockId = "bench-lock".parse()?;
    let host: HostId = "bench-host".parse()?;
    let mut record = Record::new(lock, host, Class::Exclusive);
    record.countdown_ms = 600_000;
    let trylock = Request::Mutex {
        op: MutexOp::Trylock,
        record,
    };
    d.call(0, &trylock, TIMEOUT)?.result?;
    let refresh = Request::Mutex {
        op: MutexOp::Refresh,
        record,
    };

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    run(&mut d, &refresh, WARMUP, &mut hist)?;
    hist.reset();

    let s0 = stats(&sim)?;
    let t0 = Instant::now();
    run(&mut d, &refresh, MEASURE, &mut hist)?;
    let wall = t0.elapsed();
    let s1 = stats(&sim)?;

    let cmds = s1.commands - s0.commands;
    let cpu_per_cmd = (s1.cpu_ns - s0.cpu_ns) as f64 / cmds as f64;
    let nop = nop_baseline()?;
    println!(
        "simulator cost per command (1 drive, Unix socket, {IN_FLIGHT} in flight, mutex refresh)"
    );
    println!("  commands measured      {cmds}");
    println!("  wall time              {:.3} s", wall.as_secs_f64());
    println!(
        "  commands/s             {:.0}",
        cmds as f64 / wall.as_secs_f64()
    );
    println!("  server CPU per command {:.0} ns", cpu_per_cmd);
    println!(
        "  round trip p50/p99/p99.9 {:.1} / {:.1} / {:.1} µs (1000 queued: mostly queueing)",
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.value_at_quantile(0.999) as f64 / 1e3
    );
    println!(
        "  baseline: io_uring NOP {nop:.0} ns CPU; server cost = {:.1} NOPs",
        cpu_per_cmd / nop
    );
    sim.stop()?;
    Ok(())
}
