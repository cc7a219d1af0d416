//! One-shot completions: how a result travels from a reactor back to its caller.
//!
//! [`pair`] makes a [`Completer`] (kept by the reactor with the operation) and a
//! [`Pending`] (kept by the caller). The caller may block on it ([`Pending::wait`],
//! [`Pending::wait_until`]), `.await` it (it is a [`Future`], runtime-agnostic), or
//! turn it into a callback ([`Pending::on_complete`]). A [`Completer`] dropped
//! without completing (the reactor stopped) completes with the value its
//! `on_drop` function makes, so no caller ever waits forever.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// How long [`Pending::wait`] polls before it sleeps.
const SPIN: std::time::Duration = std::time::Duration::from_micros(20);

/// What is waiting for the value.
enum Waiter<T> {
    /// Nobody yet (or a blocking waiter on the condvar).
    None,
    /// An async task.
    Task(Waker),
    /// A callback to run with the value, on the completing thread.
    Callback(Box<dyn FnOnce(T) + Send>),
}

/// The shared slot.
struct Slot<T> {
    value: Option<T>,
    done: bool,
    waiter: Waiter<T>,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    cond: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A poisoned slot still holds a consistent Option: keep going.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The reactor's half: completes the operation once.
pub struct Completer<T: Send + 'static> {
    shared: Option<Arc<Shared<T>>>,
    on_drop: fn() -> T,
}

/// The caller's half: the result, once it is there.
pub struct Pending<T: Send + 'static> {
    shared: Arc<Shared<T>>,
}

/// A new completion pair; `on_drop` makes the value delivered if the completer is
/// dropped without [`Completer::complete`] (e.g. "engine stopped").
pub fn pair<T: Send + 'static>(on_drop: fn() -> T) -> (Completer<T>, Pending<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            value: None,
            done: false,
            waiter: Waiter::None,
        }),
        cond: Condvar::new(),
    });
    (
        Completer {
            shared: Some(shared.clone()),
            on_drop,
        },
        Pending { shared },
    )
}

impl<T: Send + 'static> Completer<T> {
    /// Delivers the value: wakes a blocked or async waiter, or runs the callback
    /// on this thread.
    pub fn complete(mut self, value: T) {
        if let Some(shared) = self.shared.take() {
            deliver(&shared, value);
        }
    }
}

fn deliver<T: Send + 'static>(shared: &Shared<T>, value: T) {
    let mut slot = shared.lock();
    match std::mem::replace(&mut slot.waiter, Waiter::None) {
        Waiter::Callback(f) => {
            slot.done = true;
            drop(slot);
            f(value);
        }
        Waiter::Task(w) => {
            slot.value = Some(value);
            slot.done = true;
            drop(slot);
            w.wake();
        }
        Waiter::None => {
            slot.value = Some(value);
            slot.done = true;
            drop(slot);
            shared.cond.notify_all();
        }
    }
}

impl<T: Send + 'static> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            deliver(&shared, (self.on_drop)());
        }
    }
}

impl<T: Send + 'static> Pending<T> {
    /// Blocks until the value is there.
    pub fn wait(self) -> T {
        // Poll briefly first: an operation on fast drives finishes in a few tens
        // of µs, about what putting this thread to sleep and waking it costs.
        let spin_until = Instant::now() + SPIN;
        while Instant::now() < spin_until {
            if let Some(v) = self.shared.lock().value.take() {
                return v;
            }
            std::hint::spin_loop();
        }
        let mut slot = self.shared.lock();
        loop {
            if let Some(v) = slot.value.take() {
                return v;
            }
            slot = self
                .shared
                .cond
                .wait(slot)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks until the value is there or `deadline` passes; gives `self` back on
    /// timeout so the caller can wait again.
    pub fn wait_until(self, deadline: Instant) -> Result<T, Pending<T>> {
        {
            let mut slot = self.shared.lock();
            loop {
                if let Some(v) = slot.value.take() {
                    return Ok(v);
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                slot = self
                    .shared
                    .cond
                    .wait_timeout(slot, deadline - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
        Err(self)
    }

    /// The value if it is already there, without blocking.
    pub fn try_take(&self) -> Option<T> {
        self.shared.lock().value.take()
    }

    /// Runs `f` with the value when it arrives (at once if it is already there),
    /// on the thread that completes it (a reactor: keep `f` short and non-blocking).
    pub fn on_complete(self, f: impl FnOnce(T) + Send + 'static) {
        let mut slot = self.shared.lock();
        if let Some(v) = slot.value.take() {
            drop(slot);
            f(v);
            return;
        }
        slot.waiter = Waiter::Callback(Box::new(f));
    }
}

impl<T: Send + 'static> Future for Pending<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.shared.lock();
        if let Some(v) = slot.value.take() {
            return Poll::Ready(v);
        }
        slot.waiter = Waiter::Task(cx.waker().clone());
        Poll::Pending
    }
}

impl<T: Send + 'static> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("done", &self.shared.lock().done)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::Duration;

    fn dropped() -> Result<u32, &'static str> {
        Err("dropped")
    }

    #[test]
    fn blocking_wait_gets_the_value_from_another_thread() {
        let (c, p) = pair(dropped);
        let t = std::thread::spawn(move || c.complete(Ok(7)));
        assert_eq!(p.wait(), Ok(7));
        t.join().unwrap();
    }

    #[test]
    fn dropping_the_completer_delivers_the_drop_value() {
        let (c, p) = pair(dropped);
        drop(c);
        assert_eq!(p.wait(), Err("dropped"));
    }

    #[test]
    fn wait_until_times_out_and_can_wait_again() {
        let (c, p) = pair(dropped);
        let p = p.wait_until(Instant::now()).unwrap_err();
        c.complete(Ok(1));
        let got = p.wait_until(Instant::now() + Duration::from_secs(5));
        assert!(matches!(got, Ok(Ok(1))));
    }

    #[test]
    fn callback_runs_once_whether_registered_before_or_after() {
        let hits = Arc::new(AtomicUsize::new(0));
        let (c, p) = pair(dropped);
        let h = hits.clone();
        p.on_complete(move |v| {
            assert_eq!(v, Ok(3));
            h.fetch_add(1, Ordering::SeqCst);
        });
        c.complete(Ok(3));
        let (c, p) = pair(dropped);
        c.complete(Ok(3));
        let h = hits.clone();
        p.on_complete(move |_| {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    struct CountWake(AtomicUsize);
    impl Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn future_is_woken_and_then_ready() {
        let (c, mut p) = pair(dropped);
        let w = Arc::new(CountWake(AtomicUsize::new(0)));
        let waker = Waker::from(w.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut p).poll(&mut cx).is_pending());
        c.complete(Ok(9));
        assert_eq!(w.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut p).poll(&mut cx), Poll::Ready(Ok(9)));
    }
}
