//! Readiness fan-in for a worker: many sockets, one task. Every source (the
//! worker's UDP socket, each relay socket, each TCP client) gets a waker
//! that queues the source's key when the kernel has data for it, so the
//! worker's one event loop services exactly the sources that are ready and
//! owns all their state; no task per socket, no shared cells.
//!
//! A source is polled with its own waker (`poll_recv_ready(&mut
//! Context::from_waker(handle.waker()))`); once serviced it is re-armed, and
//! a source that used its budget queues itself again so the others get
//! their turn.

use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};
use turn::server::RelayId;

/// What a queued key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The worker's own UDP socket on the TURN port.
    Udp,
    Relay(RelayId),
    Tcp(u64),
    /// A TCP client's socket can take the bytes queued for it.
    TcpWrite(u64),
    /// The once-a-second timer.
    Tick,
    /// TCP connections handed over by the acceptor.
    Handoff,
    /// The shutdown signal.
    Shutdown,
}

struct Shared {
    queue: Mutex<Vec<Source>>,
    /// The event loop's task.
    event_loop: AtomicWaker,
}

struct SourceWaker {
    source: Source,
    /// Set while the key sits in the queue, so a burst of wakes queues it once.
    queued: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for SourceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push(self.source);
            drop(q);
            self.shared.event_loop.wake();
        }
    }
}

/// The queue of ready sources of one worker.
#[derive(Clone)]
pub(super) struct Ready {
    shared: Arc<Shared>,
}

/// One source's waker.
pub(super) struct Handle {
    inner: Arc<SourceWaker>,
    waker: Waker,
}

impl Handle {
    /// The waker to poll this source's readiness with.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Called as the source is taken off the queue: the next wake queues it
    /// again.
    pub fn rearm(&self) {
        self.inner.queued.store(false, Ordering::Release);
    }

    /// Queues the source again (it has more to do than its budget allowed).
    pub fn requeue(&self) {
        self.inner.wake_by_ref();
    }
}

impl Ready {
    pub fn new() -> Self {
        Ready {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::with_capacity(64)),
                event_loop: AtomicWaker::new(),
            }),
        }
    }

    /// A handle for a new source. It starts queued, so its first service
    /// registers its waker with the socket.
    pub fn register(&self, source: Source) -> Handle {
        let inner = Arc::new(SourceWaker {
            source,
            queued: AtomicBool::new(false),
            shared: self.shared.clone(),
        });
        let h = Handle {
            waker: Waker::from(inner.clone()),
            inner,
        };
        h.requeue();
        h
    }

    /// Waits until a source is queued, then moves the queue into `into`
    /// (whose old contents are dropped; both vectors keep their capacity).
    pub async fn wait(&self, into: &mut Vec<Source>) {
        std::future::poll_fn(|cx| {
            self.shared.event_loop.register(cx.waker());
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.is_empty() {
                return Poll::Pending;
            }
            into.clear();
            std::mem::swap(&mut *q, into);
            Poll::Ready(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_queue_each_source_once_until_rearmed() {
        let ready = Ready::new();
        let a = ready.register(Source::Udp);
        let b = ready.register(Source::Tcp(7));
        let mut got = Vec::new();
        ready.wait(&mut got).await;
        assert_eq!(got, [Source::Udp, Source::Tcp(7)]);
        // Not re-armed yet: further wakes do not queue it again.
        a.waker().wake_by_ref();
        b.rearm();
        b.waker().wake_by_ref();
        b.waker().wake_by_ref();
        ready.wait(&mut got).await;
        assert_eq!(got, [Source::Tcp(7)]);
        a.rearm();
        a.requeue();
        ready.wait(&mut got).await;
        assert_eq!(got, [Source::Udp]);
        // Nothing queued: wait stays pending.
        let idle = tokio::time::timeout(std::time::Duration::from_millis(20), ready.wait(&mut got));
        assert!(idle.await.is_err());
    }
}
