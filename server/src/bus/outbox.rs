//! A session's bounded outbound queue, and the slow-consumer policy.
//!
//! An [`Outbox`] is either a channel drained by a task (Socket.IO's pump) or a connection that
//! takes frames itself ([`FrameWriter`]: the `/ws` writer, which writes into the socket at once
//! and queues only what the socket does not take). The policy below is the same for both.
//!
//! Policy: enqueueing never waits. When a session's queue is full, the session is a slow
//! consumer: it is disconnected (close code 4008) instead of buffering more, so one stalled
//! client can neither grow server memory nor delay anyone else. The client resumes with its
//! token and receives a fresh `room-joined` snapshot, which replaces everything it missed.
//!
//! A client's own requests are different: its connection reads the next request only when the
//! queue has room for a batch of replies ([`Outbox::room_for`]), so a client that sends a burst
//! of requests and reads the replies meets TCP backpressure, not the slow-consumer policy.

use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use super::Outgoing;

#[cfg(test)]
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Close code for a session dropped by the slow-consumer policy.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// Applies the slow-consumer policy to a session whose queue is full: counted once, closed.
pub(crate) fn drop_slow_consumer(close: impl FnOnce(u16, &'static str)) {
    crate::metrics::METRICS.slow_consumers.inc();
    close(CLOSE_SLOW_CONSUMER, "slow consumer: outbound queue full");
}

#[derive(Debug, Default)]
struct Kill {
    notify: Notify,
    reason: OnceLock<(u16, &'static str)>,
}

/// A connection that takes frames itself, without a queue task in between: the `/ws` edge
/// writes a frame straight into the socket when nothing is waiting (`ws::writer`). It keeps
/// the same policy as the queue: at most `capacity` frames wait, then the session is closed
/// with [`CLOSE_SLOW_CONSUMER`].
pub trait FrameWriter: Send + Sync + 'static {
    /// Delivers or queues `frame` without waiting; false if the connection is closing or the
    /// queue was full (then the connection is being closed).
    fn push(&self, frame: &Outgoing) -> bool;
    /// Frames waiting to be written.
    fn waiting(&self) -> usize;
    /// Most frames that may wait.
    fn capacity(&self) -> usize;
    /// Notified (`notify_waiters`) whenever waiting frames were written.
    fn drained(&self) -> &Notify;
    /// Closes the connection with `code` now, skipping queued frames.
    fn close(&self, code: u16, reason: &'static str);
}

/// Sending half of a session's queue; cheap to clone.
#[derive(Clone)]
pub struct Outbox(Sink);

#[derive(Clone)]
enum Sink {
    /// A bounded channel drained by a task (Socket.IO's pump).
    Queue { tx: mpsc::Sender<Outgoing>, kill: Arc<Kill> },
    /// A connection that writes frames itself (`/ws`).
    Writer(Arc<dyn FrameWriter>),
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Sink::Queue { tx, .. } => f.debug_struct("Outbox::Queue").field("free", &tx.capacity()).finish(),
            Sink::Writer(w) => f.debug_struct("Outbox::Writer").field("waiting", &w.waiting()).finish(),
        }
    }
}

/// Receiving half, owned by the connection's writer task.
#[derive(Debug)]
pub struct Inbox {
    pub rx: mpsc::Receiver<Outgoing>,
    pub kill: KillWatch,
}

/// Tells the writer when the connection must be closed.
#[derive(Debug, Clone)]
pub struct KillWatch(Arc<Kill>);

impl Outbox {
    /// A queue holding at most `capacity` frames, drained through the [`Inbox`].
    pub fn new(capacity: usize) -> (Outbox, Inbox) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let kill = Arc::new(Kill::default());
        (Outbox(Sink::Queue { tx, kill: kill.clone() }), Inbox { rx, kill: KillWatch(kill) })
    }

    /// The outbox of a connection that writes frames itself.
    pub fn writer(w: Arc<dyn FrameWriter>) -> Outbox {
        Outbox(Sink::Writer(w))
    }

    /// Enqueues (or writes) without waiting. A full queue trips the slow-consumer policy.
    pub fn push(&self, frame: Outgoing) -> bool {
        match &self.0 {
            Sink::Writer(w) => w.push(&frame),
            Sink::Queue { tx, kill } => match tx.try_send(frame) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if kill.reason.get().is_none() {
                        drop_slow_consumer(|code, reason| self.close(code, reason));
                    }
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        }
    }

    /// Waits until `n` more frames fit (at most the queue's capacity). The connection's reader
    /// calls it before taking the next request.
    pub async fn room_for(&self, n: usize) {
        match &self.0 {
            Sink::Queue { tx, .. } => {
                let n = n.clamp(1, tx.max_capacity());
                // The usual case, without touching the channel's semaphore.
                if tx.capacity() >= n {
                    return;
                }
                if let Ok(permits) = tx.reserve_many(n).await {
                    drop(permits);
                }
            }
            Sink::Writer(w) => {
                let n = n.clamp(1, w.capacity());
                loop {
                    let drained = w.drained().notified();
                    if w.capacity().saturating_sub(w.waiting()) >= n {
                        return;
                    }
                    drained.await;
                }
            }
        }
    }

    /// Asks the writer to close the connection with `code` now, skipping queued frames.
    pub fn close(&self, code: u16, reason: &'static str) {
        match &self.0 {
            Sink::Queue { kill, .. } => {
                let _ = kill.reason.set((code, reason));
                kill.notify.notify_one();
            }
            Sink::Writer(w) => w.close(code, reason),
        }
    }
}

impl KillWatch {
    /// Resolves when the connection must be closed; gives the close code and reason.
    pub async fn killed(&self) -> (u16, &'static str) {
        loop {
            let notified = self.0.notify.notified();
            if let Some(r) = self.0.reason.get() {
                return *r;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_closes_instead_of_growing() {
        let (out, inbox) = Outbox::new(2);
        assert!(out.push(Outgoing::ws_text("a")));
        assert!(out.push(Outgoing::ws_text("b")));
        assert!(!out.push(Outgoing::ws_text("c")));
        assert_eq!(inbox.kill.killed().await.0, CLOSE_SLOW_CONSUMER);
        assert_eq!(inbox.rx.len(), 2);
    }

    #[tokio::test]
    async fn room_for_waits_until_the_writer_drains() {
        let (out, mut inbox) = Outbox::new(4);
        for f in ["a", "b", "c"] {
            assert!(out.push(Outgoing::ws_text(f)));
        }
        // One slot is free; two are not until the writer takes a frame.
        tokio::time::timeout(Duration::from_millis(50), out.room_for(1)).await.expect("one slot is free");
        assert!(tokio::time::timeout(Duration::from_millis(50), out.room_for(2)).await.is_err());
        let waiter = tokio::spawn({
            let out = out.clone();
            async move { out.room_for(2).await }
        });
        assert!(inbox.rx.recv().await.is_some());
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("room after a drain").expect("task");
        // Asking for more than the capacity waits for an empty queue, not forever.
        while inbox.rx.try_recv().is_ok() {}
        tokio::time::timeout(Duration::from_millis(50), out.room_for(100))
            .await
            .expect("an empty queue is room enough");
    }
}
