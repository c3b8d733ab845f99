//! The outbound side of a `/ws` connection: frames written straight into the socket.
//!
//! A push writes its frame with a non-blocking `write` from whichever task published it (a
//! room actor, the connection's reader) when nothing is waiting, so a delivery is one system
//! call and no task wake-up. Only what the socket does not take at once waits here, in order,
//! for [`run`] to finish when the socket is writable again. At most `capacity` frames wait;
//! one more and the session is closed as a slow consumer (4008), as with the queue of other
//! edges (`bus::outbox`).
//!
//! Frames are encoded by tungstenite (`Frame::format`), once per broadcast: server frames are
//! not masked, so every member gets the same bytes ([`crate::bus::Outgoing::encoded`]). The read
//! side stays tungstenite's; what it writes itself (pongs, the close reply) comes through
//! [`ReadSide`]'s `AsyncWrite` into the same ordered stream.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::tcp::{OwnedReadHalf, OwnedWriteHalf},
    sync::Notify,
};
use tokio_tungstenite::tungstenite::{
    Utf8Bytes,
    protocol::{
        CloseFrame,
        frame::{
            Frame as WsFrame,
            coding::{CloseCode, Data, OpCode},
        },
    },
};

use crate::{
    bus::{
        Outgoing,
        outbox::{FrameWriter, drop_slow_consumer},
    },
    metrics::METRICS,
};

/// Most buffers handed to one `writev`.
const MAX_IOV: usize = 64;

/// The writing half of one `/ws` connection, shared by everyone who pushes to it.
pub struct SocketWriter {
    io: OwnedWriteHalf,
    state: Mutex<State>,
    /// Frames waiting, readable without the lock.
    waiting: AtomicUsize,
    capacity: usize,
    /// Wakes [`run`]: something waits, or the connection must close.
    wake: Notify,
    drained: Notify,
}

#[derive(Default)]
struct State {
    /// Encoded frames not yet (fully) written, oldest first; `offset` bytes of the first are.
    queue: VecDeque<Bytes>,
    offset: usize,
    /// Set once: close with this code and reason.
    close: Option<(u16, &'static str)>,
    /// A close frame went out (ours, or tungstenite's reply to the peer's).
    close_sent: bool,
    /// The socket failed: nothing more is written.
    broken: bool,
    /// The connection's own request is being handled: frames wait, to leave with its reply.
    corked: bool,
}

fn encode(frame: WsFrame) -> Bytes {
    let mut out = Vec::with_capacity(frame.len());
    // Writing into a Vec cannot fail.
    let _ = frame.format(&mut out);
    Bytes::from(out)
}

fn text_frame(text: &Utf8Bytes) -> Bytes {
    encode(WsFrame::message(Bytes::from(text.clone()), OpCode::Data(Data::Text), true))
}

impl SocketWriter {
    pub fn new(io: OwnedWriteHalf, capacity: usize) -> Arc<SocketWriter> {
        Arc::new(SocketWriter {
            io,
            state: Mutex::new(State::default()),
            waiting: AtomicUsize::new(0),
            capacity: capacity.max(1),
            wake: Notify::new(),
            drained: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `bytes` now if nothing waits before it, else queues it. Call with the lock held.
    /// Every frame written whole, here or in [`flush`](Self::flush), counts in `frames_out`.
    fn send(&self, st: &mut State, bytes: Bytes) {
        if st.queue.is_empty() && !st.corked {
            match self.io.try_write(&bytes) {
                Ok(n) if n == bytes.len() => {
                    METRICS.frames_out.inc();
                    return;
                }
                Ok(n) => {
                    st.queue.push_back(bytes);
                    st.offset = n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => st.queue.push_back(bytes),
                Err(_) => st.broken = true,
            }
            self.wake.notify_one();
        } else {
            st.queue.push_back(bytes);
        }
        self.waiting.store(st.queue.len(), Ordering::Relaxed);
    }

    /// Queues bytes that are already a whole encoded frame (a control frame).
    fn send_raw(&self, bytes: Bytes) {
        let mut st = self.state();
        if st.broken || st.close_sent {
            return;
        }
        // tungstenite writes control frames whole; opcode 8 is its reply to the peer's close.
        if bytes.first().is_some_and(|b| b & 0x0f == 0x8) {
            st.close_sent = true;
        }
        self.send(&mut st, bytes);
    }

    /// Writes what waits until done or the socket is full. Ok(true) when nothing waits.
    fn flush(&self) -> io::Result<bool> {
        let mut st = self.state();
        loop {
            if st.queue.is_empty() {
                return Ok(true);
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n_iov = 0;
            for (i, b) in st.queue.iter().take(MAX_IOV).enumerate() {
                iov[i] = IoSlice::new(if i == 0 { &b[st.offset..] } else { b });
                n_iov += 1;
            }
            let mut written = match self.io.try_write_vectored(&iov[..n_iov]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => {
                    st.broken = true;
                    return Err(e);
                }
            };
            while written > 0 {
                let Some(front) = st.queue.front() else { break };
                let left = front.len() - st.offset;
                if written >= left {
                    written -= left;
                    st.queue.pop_front();
                    st.offset = 0;
                    METRICS.frames_out.inc();
                } else {
                    st.offset += written;
                    written = 0;
                }
            }
            self.waiting.store(st.queue.len(), Ordering::Relaxed);
            self.drained.notify_waiters();
        }
    }

    /// True if the connection must close. The first call queues the close frame behind the
    /// frame being written (a frame started must end, or the stream is corrupt), dropping
    /// everything else that waits.
    fn take_close(&self) -> bool {
        let mut st = self.state();
        let Some((code, reason)) = st.close else { return false };
        if !st.close_sent && !st.broken {
            let keep = usize::from(st.offset > 0);
            st.queue.truncate(keep);
            st.close_sent = true;
            let frame = encode(WsFrame::close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })));
            self.send(&mut st, frame);
        }
        true
    }

    /// Holds frames back until [`uncork`](Self::uncork): the reader calls it while the
    /// connection's request is handled, so the pushes the request causes and its reply leave in
    /// one write (one system call, one segment) instead of one each.
    pub fn cork(&self) {
        self.state().corked = true;
    }

    /// Writes what was held back, at once if the socket takes it, else through the writer task.
    pub fn uncork(&self) {
        let mut st = self.state();
        st.corked = false;
        if st.queue.is_empty() {
            return;
        }
        drop(st);
        // The queue may already be waiting for writability: the task will finish it then.
        match self.flush() {
            Ok(true) => {}
            _ => self.wake.notify_one(),
        }
    }

    fn is_broken(&self) -> bool {
        self.state().broken
    }
}

impl FrameWriter for SocketWriter {
    fn push(&self, frame: &Outgoing) -> bool {
        let bytes = frame.encoded(text_frame).clone();
        let mut st = self.state();
        if st.close.is_some() || st.broken || st.close_sent {
            return false;
        }
        if st.queue.len() >= self.capacity {
            drop(st);
            drop_slow_consumer(|code, reason| self.close(code, reason));
            return false;
        }
        self.send(&mut st, bytes);
        true
    }

    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn drained(&self) -> &Notify {
        &self.drained
    }

    fn close(&self, code: u16, reason: &'static str) {
        let mut st = self.state();
        if st.close.is_none() {
            st.close = Some((code, reason));
        }
        drop(st);
        self.wake.notify_one();
    }
}

/// Runs the connection's writer until it closes: finishes queued writes when the socket is
/// writable, pings every `ping`, closes when told to or when the peer was silent for two pings.
/// `last_seen` is the milliseconds since `started` at which the reader last got a frame.
pub async fn run(w: Arc<SocketWriter>, ping: Duration, last_seen: Arc<AtomicU64>, started: Instant) {
    let mut tick = tokio::time::interval_at((Instant::now() + ping).into(), ping);
    loop {
        tokio::select! {
            biased;
            _ = w.wake.notified() => {}
            _ = tick.tick() => {
                let silent_ms = (started.elapsed().as_millis() as u64).saturating_sub(last_seen.load(Ordering::Relaxed));
                if silent_ms > 2 * ping.as_millis() as u64 {
                    w.close(1001, "ping timeout");
                } else {
                    w.send_raw(encode(WsFrame::ping(Bytes::new())));
                }
            }
        }
        let closing = w.take_close();
        // Wait for writability while frames wait; a closing connection whose peer does not
        // read gets half a second.
        let deadline = closing.then(|| tokio::time::Instant::now() + Duration::from_millis(500));
        while let Ok(false) = w.flush() {
            let writable = w.io.writable();
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, writable).await.is_err() {
                        break;
                    }
                }
                None => tokio::select! {
                    r = writable => if r.is_err() { break },
                    // Told to close while the peer is not reading: go round to close.
                    _ = w.wake.notified() => {
                        w.wake.notify_one();
                        break;
                    }
                },
            }
        }
        if closing || w.is_broken() {
            break;
        }
    }
    // Half-close, so the peer sees the end after the close frame even while others still hold
    // this writer (the socket itself closes when the last of them lets go).
    let _ = socket2::SockRef::from(w.io.as_ref()).shutdown(std::net::Shutdown::Write);
}

/// The reading half handed to tungstenite. Bytes hyper read past the upgrade request come
/// first; what tungstenite writes (pongs, its close reply) goes through the [`SocketWriter`].
pub struct ReadSide {
    prefix: Bytes,
    io: OwnedReadHalf,
    writer: Arc<SocketWriter>,
}

impl ReadSide {
    pub fn new(prefix: Bytes, io: OwnedReadHalf, writer: Arc<SocketWriter>) -> ReadSide {
        // `prefix` is a view of hyper's whole read buffer (8 KiB), which it would keep alive for
        // the life of the connection: copy the few bytes out, if any.
        ReadSide { prefix: Bytes::copy_from_slice(&prefix), io, writer }
    }
}

impl AsyncRead for ReadSide {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            if self.prefix.is_empty() {
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.writer.send_raw(Bytes::copy_from_slice(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::{
        WebSocketStream,
        tungstenite::{Message, protocol::Role},
    };

    /// A writer on the server end of a loopback connection, its task running, and the client
    /// end as a WebSocket that is read only when the test says so. (The server's read half is
    /// returned too: dropping it would not close the socket, but it belongs to the pair.)
    async fn pair(capacity: usize) -> (Arc<SocketWriter>, WebSocketStream<TcpStream>, OwnedReadHalf) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (rd, wr) = server.into_split();
        let w = SocketWriter::new(wr, capacity);
        tokio::spawn(run(w.clone(), Duration::from_secs(3600), Arc::new(AtomicU64::new(0)), Instant::now()));
        (w, WebSocketStream::from_raw_socket(client, Role::Client, None).await, rd)
    }

    async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> String {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_arrive_whole_and_in_order_when_the_socket_fills_up() {
        // 300 frames of 20 KB do not fit in the socket buffers of an unread connection: the
        // first go straight to the socket, the rest wait (some after a partial write).
        let (w, mut client, _rd) = pair(1000).await;
        let body = "x".repeat(20_000);
        for i in 0..300 {
            assert!(w.push(&Outgoing::ws_text(format!("{i:04}{body}"))), "frame {i} refused");
        }
        assert!(w.waiting() > 0, "the test needs frames to wait for writability");
        for i in 0..300 {
            let t = next_text(&mut client).await;
            assert_eq!(&t[..4], format!("{i:04}"), "frame order");
            assert_eq!(t.len(), 20_004, "frame {i} whole");
        }
        assert_eq!(w.waiting(), 0);
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_closed_as_a_slow_consumer() {
        let (w, mut client, _rd) = pair(8).await;
        let big = "y".repeat(64 * 1024);
        let mut pushed = 0;
        while w.push(&Outgoing::ws_text(big.clone())) {
            pushed += 1;
            assert!(pushed < 10_000, "the queue never filled");
            assert!(w.waiting() <= 8, "more frames wait than the capacity");
        }
        assert!(!w.push(&Outgoing::ws_text("after")), "a closing connection takes no more frames");
        // The client sees whole frames, then the close with the slow-consumer code.
        let mut texts = 0;
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(5), client.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    assert_eq!(t.len(), big.len());
                    texts += 1;
                }
                Ok(Some(Ok(Message::Close(Some(c))))) => break u16::from(c.code),
                other => panic!("expected frames then a close, got {other:?}"),
            }
        };
        assert_eq!(code, crate::bus::outbox::CLOSE_SLOW_CONSUMER);
        assert!(texts < pushed, "queued frames are skipped on close ({texts} of {pushed} arrived)");
    }

    #[tokio::test]
    async fn room_for_waits_until_waiting_frames_are_written() {
        let (w, mut client, _rd) = pair(8).await;
        let out = crate::bus::Outbox::writer(w.clone());
        let big = "z".repeat(64 * 1024);
        // Fill the socket's buffers, then six frames wait: two of eight slots are free.
        let mut pushed = 0;
        while w.waiting() < 6 {
            assert!(w.push(&Outgoing::ws_text(big.clone())));
            pushed += 1;
            assert!(pushed < 10_000, "the socket never filled");
        }
        tokio::time::timeout(Duration::from_millis(50), out.room_for(2)).await.expect("two slots are free");
        assert!(tokio::time::timeout(Duration::from_millis(50), out.room_for(4)).await.is_err(), "four are not");
        // The client reads: waiting frames are written and room comes back.
        let waiter = tokio::spawn(async move { out.room_for(4).await });
        let reader = tokio::spawn(async move {
            for _ in 0..pushed {
                next_text(&mut client).await;
            }
        });
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("room after the client read").expect("task");
        reader.await.expect("every frame arrives");
    }

    #[tokio::test]
    async fn corked_frames_leave_together_on_uncork() {
        let (w, mut client, _rd) = pair(16).await;
        w.cork();
        for t in ["push", "reply"] {
            assert!(w.push(&Outgoing::ws_text(t)));
        }
        assert_eq!(w.waiting(), 2, "corked frames wait");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), client.next()).await.is_err(),
            "nothing is sent while corked"
        );
        w.uncork();
        assert_eq!(w.waiting(), 0, "uncork writes at once when the socket takes it");
        assert_eq!(next_text(&mut client).await, "push");
        assert_eq!(next_text(&mut client).await, "reply");
    }

    #[tokio::test]
    async fn a_broadcast_is_encoded_once_for_every_member() {
        let (a, mut ca, _ra) = pair(4).await;
        let (b, mut cb, _rb) = pair(4).await;
        let frame = Outgoing::ws_text("same");
        assert!(a.push(&frame) && b.push(&frame));
        let first = frame.encoded(|_| unreachable!("encoded by the first push")).clone();
        assert_eq!(first.as_ptr(), frame.encoded(|_| unreachable!()).as_ptr());
        assert_eq!(next_text(&mut ca).await, "same");
        assert_eq!(next_text(&mut cb).await, "same");
    }
}
