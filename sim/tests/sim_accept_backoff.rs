//! Defect 2 of issue 15: at the file-descriptor limit accept failed and was
//! re-armed at once (95% CPU, 265,000 log lines a second). Now a failed accept
//! backs the listener off, is logged once per episode, and the connections already
//! open are served meanwhile.
//!
//! Alone in its test binary: it lowers the process's RLIMIT_NOFILE, which would
//! starve any test running beside it.

// Test code: helpers outside #[test] functions (which clippy.toml already
// covers) may unwrap and expect too; a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use idm_sim::frame::{self, Frame};
use idm_sim::{
    Control, ControlRequest, ControlResponse, ListenAddr, ServerLimits, SimConfig, SimHandle,
    SimStats,
};
use nix::libc;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use tracing::field::{Field, Visit};

/// Bound of every wait (generous: the machine is shared).
const T: Duration = Duration::from_secs(20);

static ACCEPT_FAILED: AtomicU64 = AtomicU64::new(0);
static ACCEPTING_AGAIN: AtomicU64 = AtomicU64::new(0);

/// A subscriber that only counts the two log lines this test is about.
struct Count;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        if f.name() == "message" {
            self.0 = format!("{v:?}");
        }
    }
}

impl tracing::Subscriber for Count {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut m = Message(String::new());
        e.record(&mut m);
        if m.0.starts_with("accept failed") {
            ACCEPT_FAILED.fetch_add(1, Ordering::SeqCst);
        }
        if m.0.starts_with("accepting again") {
            ACCEPTING_AGAIN.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn stats(c: &mut Control) -> SimStats {
    match c.request(&ControlRequest::Stats).unwrap() {
        ControlResponse::Stats(s) => s,
        other => panic!("{other:?}"),
    }
}

fn nofile() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `r`.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r
}

fn set_nofile(r: &libc::rlimit) {
    // SAFETY: setrlimit reads one rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, r) }, 0);
}

#[test]
fn accept_errors_back_off_are_logged_once_and_others_are_served() {
    tracing::subscriber::set_global_default(Count).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backoff = Duration::from_millis(50);
    let cfg = SimConfig {
        limits: ServerLimits {
            accept_backoff: backoff,
            ..ServerLimits::default()
        },
        ..SimConfig::with_drives(1)
    };
    let addrs = [
        ListenAddr::Unix(dir.path().join("sim.sock")),
        "tcp:127.0.0.1:0".parse().unwrap(),
    ];
    let h = SimHandle::start(cfg, &addrs).unwrap();
    let ListenAddr::Tcp(tcp) = h.addrs()[1] else {
        panic!()
    };
    // Opened before the limit bites: it must be served all along.
    let mut control = Control::connect(&h.addrs()[0]).unwrap();
    let first = stats(&mut control);

    // A socket made while descriptors are free, connected once they are not.
    let pending = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    // Fill the descriptor table.
    let saved = nofile();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    set_nofile(&libc::rlimit {
        rlim_cur: open + 16,
        rlim_max: saved.rlim_max,
    });
    let stdin = std::io::stdin();
    let mut filler: Vec<OwnedFd> = Vec::new();
    loop {
        // SAFETY: dup of a valid fd; a new fd we own on success.
        let fd = unsafe { libc::dup(stdin.as_raw_fd()) };
        if fd < 0 {
            break;
        }
        // SAFETY: fd was just returned by dup.
        filler.push(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
        assert!(filler.len() < 10_000, "the limit did not apply");
    }
    connect(
        pending.as_raw_fd(),
        &SockaddrIn::from(match tcp {
            std::net::SocketAddr::V4(a) => a,
            std::net::SocketAddr::V6(_) => unreachable!(),
        }),
    )
    .unwrap();
    let mut late = TcpStream::from(pending);
    late.set_read_timeout(Some(T)).unwrap();
    let mut hello = Vec::new();
    Frame::Hello { client: "late" }.encode(&mut hello).unwrap();
    late.write_all(&hello).unwrap();

    // The server cannot accept it: it backs off, and keeps serving `control`.
    let t0 = Instant::now();
    let until = t0 + T;
    let mut s = stats(&mut control);
    while s.accept_errors < first.accept_errors + 3 {
        assert!(Instant::now() < until, "no accept error seen: {s:?}");
        std::thread::yield_now();
        s = stats(&mut control);
    }
    let elapsed = t0.elapsed();
    // One ACCEPT per backoff at most (a spinning listener fails ~10^5 times a
    // second); a slow machine only makes the count smaller.
    let most = 2 * (elapsed.as_millis() / backoff.as_millis()) as u64 + 10;
    assert!(
        s.accept_errors <= most,
        "{} accept errors in {elapsed:?}",
        s.accept_errors
    );
    assert_eq!(ACCEPT_FAILED.load(Ordering::SeqCst), 1, "logged once");

    // Descriptors back: the waiting client and a new one are accepted and served.
    drop(filler);
    set_nofile(&saved);
    hello_ok(&mut late);
    let mut after = TcpStream::connect(tcp).unwrap();
    after.set_read_timeout(Some(T)).unwrap();
    after.write_all(&hello).unwrap();
    hello_ok(&mut after);
    assert_eq!(ACCEPT_FAILED.load(Ordering::SeqCst), 1, "still once");
    assert_eq!(
        ACCEPTING_AGAIN.load(Ordering::SeqCst),
        1,
        "recovery logged once"
    );
    let s = stats(&mut control);
    assert_eq!(s.connections, 3);
}

fn hello_ok(s: &mut TcpStream) {
    let mut buf = vec![0u8; 4];
    s.read_exact(&mut buf).unwrap();
    let n = frame::frame_len(&buf).unwrap().unwrap();
    buf.resize(n, 0);
    s.read_exact(&mut buf[4..]).unwrap();
    assert!(matches!(
        frame::decode(&buf).unwrap().unwrap().0,
        Frame::HelloOk { .. }
    ));
}
