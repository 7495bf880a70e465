//! Coarse deadlines for KMS operations, fired by one ticking thread.
//!
//! Every KMS call runs under a deadline (the kmsID's `timeout`), and every
//! outbound request under a connect and a first-byte timeout. These almost
//! never fire. With the runtime's timer wheel, arming one costs more than it
//! should: a new timer earlier than anything the parked runtime is waiting
//! for makes tokio wake a worker thread to re-arm its sleep (an eventfd write,
//! an `epoll_wait` return and a context switch per call, measured in
//! `docs/performance.md`), on a node where the CPU also runs the workloads.
//!
//! Here arming a deadline is a map insert under an uncontended lock, with no
//! system call and no thread woken. One process-wide thread ticks every
//! [`TICK`] and wakes the tasks whose deadline has passed; it also runs the
//! [`on_tick`] hooks (the sandbox advances its engine's epoch there), so the
//! process has one periodic thread, not one per concern.
//!
//! The price is precision: a deadline fires up to one tick (plus scheduling)
//! late. The limits this serves are in seconds.
//!
//! What it pays, measured (session 6, the vault bench, this module against
//! the same build with `tokio::time::timeout`, four alternating runs of
//! 2000 rounds each): the plugin's median difference to reqwest went from
//! about 0 µs to about +10 µs for a KV get and from about −1 µs to about
//! +17 µs for a Transit wrap (median pair ratio 1.00 → 1.03 and 1.00 →
//! 1.04); the sandbox's own share from about 48 µs to 55 µs. Session 4's
//! `perf stat` over 4000 calls showed why: one eventfd `write` and one
//! `epoll_wait` return fewer per call. The ticking thread is needed anyway
//! for the engine's epoch.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often the ticking thread runs: the granularity of deadlines and of
/// the sandbox's epoch.
pub const TICK: Duration = Duration::from_millis(5);

/// A deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

type Hook = Box<dyn FnMut() -> bool + Send>;

/// Locks `m`; a panic elsewhere while it was held leaves nothing here
/// half-updated (inserts and removals of whole entries), so go on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Registry {
    /// Armed deadlines, earliest first; the id keeps keys unique.
    armed: Mutex<BTreeMap<(Instant, u64), Waker>>,
    hooks: Mutex<Vec<Hook>>,
    next_id: AtomicU64,
}

impl Registry {
    fn tick(&self) {
        let now = Instant::now();
        let due: Vec<Waker> = {
            let mut armed = lock(&self.armed);
            let later = armed.split_off(&(now, u64::MAX));
            std::mem::replace(&mut *armed, later)
                .into_values()
                .collect()
        };
        for w in due {
            w.wake();
        }
        lock(&self.hooks).retain_mut(|h| h());
    }
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<&'static Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let r: &'static Registry = Box::leak(Box::new(Registry {
            armed: Mutex::new(BTreeMap::new()),
            hooks: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
        }));
        std::thread::Builder::new()
            .name("kmshost-tick".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    r.tick();
                }
            })
            .expect("spawning the deadline thread");
        r
    })
}

/// Runs `hook` on every tick until it returns `false`.
pub fn on_tick(hook: impl FnMut() -> bool + Send + 'static) {
    lock(&registry().hooks).push(Box::new(hook));
}

/// Requires `future` to finish within `limit`; like `tokio::time::timeout`
/// (the future is polled first, so a ready result wins over an elapsed
/// deadline), but armed without waking anything.
pub fn timeout<F: Future>(limit: Duration, future: F) -> Timeout<F> {
    let now = Instant::now();
    Timeout {
        future,
        at: now
            .checked_add(limit)
            .unwrap_or(now + Duration::from_secs(86400 * 365)),
        armed: None,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`].
    pub struct Timeout<F> {
        #[pin]
        future: F,
        at: Instant,
        armed: Option<(u64, Waker)>,
    }

    impl<F> PinnedDrop for Timeout<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some((id, _)) = this.armed.take() {
                lock(&registry().armed)
                    .remove(&(*this.at, id));
            }
        }
    }
}

impl<F> std::fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeout")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if Instant::now() >= *this.at {
            return Poll::Ready(Err(Elapsed));
        }
        match this.armed {
            Some((_, w)) if w.will_wake(cx.waker()) => {}
            armed => {
                let r = registry();
                let id = match armed {
                    Some((id, _)) => *id,
                    None => r.next_id.fetch_add(1, Ordering::Relaxed),
                };
                lock(&r.armed).insert((*this.at, id), cx.waker().clone());
                *armed = Some((id, cx.waker().clone()));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_ready_future_wins() {
        assert_eq!(timeout(Duration::ZERO, async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn a_pending_future_times_out_within_a_few_ticks() {
        let t = Instant::now();
        // The runtime's own timer only guards the test against a ticking
        // thread that never fires.
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            timeout(Duration::from_millis(30), std::future::pending::<()>()),
        )
        .await
        .expect("the ticking thread fires the deadline");
        assert_eq!(r, Err(Elapsed));
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn finishing_first_disarms_the_deadline() {
        let r = timeout(Duration::from_secs(60), async {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            "done"
        });
        // Armed while pending (polled here with another waker than the
        // await below uses, so the entry is also re-armed), gone once it
        // finished.
        let mut r = Box::pin(r);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(r.as_mut().poll(&mut cx).is_pending());
        let id = r
            .armed
            .as_ref()
            .map(|(id, _)| *id)
            .expect("armed while pending");
        let key = (r.at, id);
        assert!(registry().armed.lock().unwrap().contains_key(&key));
        assert_eq!(r.as_mut().await, Ok("done"));
        drop(r);
        assert!(!registry().armed.lock().unwrap().contains_key(&key));
    }

    #[tokio::test]
    async fn dropping_a_pending_timeout_disarms_it() {
        let mut r = Box::pin(timeout(
            Duration::from_secs(60),
            std::future::pending::<()>(),
        ));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(r.as_mut().poll(&mut cx).is_pending());
        let key = (r.at, r.armed.as_ref().unwrap().0);
        drop(r);
        assert!(!registry().armed.lock().unwrap().contains_key(&key));
    }

    #[test]
    fn hooks_run_until_they_decline() {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        on_tick(move || m.fetch_add(1, Ordering::SeqCst) < 2);
        let t = Instant::now();
        while n.load(Ordering::SeqCst) < 3 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(TICK);
        }
        std::thread::sleep(TICK * 4);
        assert_eq!(
            n.load(Ordering::SeqCst),
            3,
            "ran three times, then unregistered"
        );
    }
}
