//! Waking a reactor from another thread.
//!
//! A reactor blocks in one `io_uring_enter` waiting for drive replies and its
//! next timer. To wake it for new requests, it keeps a READ of an eventfd in
//! its ring at all times ([`WakeSource`], a pseudo-transport riding the same ring),
//! and callers write the eventfd after queueing a message ([`Wake::notify`]).
//!
//! The write is a syscall, so it is skipped unless the reactor said it is about
//! to sleep: the reactor sets `sleeping`, re-checks its channel, then blocks;
//! a caller queues its message, then swaps `sleeping` to false and writes only if
//! it was set. Either the reactor sees the message on its re-check, or the caller
//! sees the flag and writes (both use `SeqCst`).

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, types};
use nix::sys::eventfd::{EfdFlags, EventFd};
use uring_sg::transport::{Completion, Cqe, EnqueueError, Reply, Request, SqSink, Transport};

/// The tag of the wake-up pseudo-command's completion.
pub const WAKE_TAG: u64 = u64::MAX;

/// The cross-thread half: an eventfd plus the reactor's "about to sleep" flag.
#[derive(Debug)]
pub struct Wake {
    fd: EventFd,
    sleeping: AtomicBool,
}

impl Wake {
    /// A new wake-up channel.
    pub fn new() -> std::io::Result<Arc<Wake>> {
        let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Arc::new(Wake {
            fd,
            sleeping: AtomicBool::new(false),
        }))
    }

    /// Called by a sender after queueing a message: wakes the reactor if it sleeps.
    pub fn notify(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            // EAGAIN (counter saturated) still leaves the fd readable: ignore it.
            let _ = self.fd.write(1);
        }
    }

    /// Called by the reactor before it re-checks its channel and blocks.
    pub fn about_to_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// Called by the reactor when it does not block after all, or woke up.
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

/// The reactor's half: keeps one READ of the eventfd in the ring; its completion
/// comes out of the driver with [`WAKE_TAG`].
pub struct WakeSource {
    wake: Arc<Wake>,
    /// The 8-byte counter the kernel reads into; boxed so it never moves.
    buf: Box<[u8; 8]>,
    armed: bool,
    /// A READ completed: the next `prepare` re-arms it.
    fired: bool,
}

impl WakeSource {
    /// The reactor's half of `wake`.
    pub fn new(wake: Arc<Wake>) -> WakeSource {
        WakeSource {
            wake,
            buf: Box::new([0; 8]),
            armed: false,
            fired: false,
        }
    }
}

impl Transport for WakeSource {
    fn name(&self) -> &str {
        "wake"
    }

    fn enqueue(&mut self, _: u64, _: &Request, _: Instant) -> Result<(), EnqueueError> {
        Err(EnqueueError::Closed(22))
    }

    fn prepare(&mut self, sink: &mut dyn SqSink) {
        if self.armed {
            return;
        }
        let e = opcode::Read::new(
            types::Fd(self.wake.fd.as_fd().as_raw_fd()),
            self.buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(sink.token(0));
        // SAFETY: `buf` is boxed (stable address) and owned by self, and the fd by
        // `wake` (an Arc held by self); the driver reaps or cancels the READ before
        // dropping its transports.
        self.armed = unsafe { sink.push(&e) };
    }

    fn on_cqe(&mut self, _: u64, _: &Cqe, done: &mut dyn FnMut(Completion)) {
        self.armed = false;
        self.fired = true;
        done(Completion {
            tag: WAKE_TAG,
            reply: Reply {
                result: Ok(()),
                data: Vec::new(),
            },
        });
    }

    fn expire(&mut self, _: Instant, _: &mut dyn FnMut(Completion)) {}

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn in_flight(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use uring_sg::driver::Driver;

    #[test]
    fn notify_wakes_a_sleeping_ring_and_is_skipped_otherwise() {
        let wake = Wake::new().unwrap();
        let mut d = Driver::new(8).unwrap();
        d.add(Box::new(WakeSource::new(wake.clone())));
        // Not sleeping: notify does not write, the ring times out with nothing.
        wake.notify();
        let mut woke = 0;
        d.turn(Duration::from_millis(1), &mut |_, c| {
            assert_eq!(c.tag, WAKE_TAG);
            woke += 1;
        })
        .unwrap();
        assert_eq!(woke, 0);
        // Sleeping: a notify from another thread wakes the blocked turn.
        wake.about_to_sleep();
        let w = wake.clone();
        let t = std::thread::spawn(move || w.notify());
        while woke == 0 {
            d.turn(Duration::from_secs(10), &mut |_, _| woke += 1)
                .unwrap();
        }
        t.join().unwrap();
        assert_eq!(woke, 1);
    }
}
