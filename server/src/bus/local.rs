//! In-process bus: topic → subscribers, each with its outbox.
//!
//! Publishing copies the recipients out of the lock, then delivers: a delivery to a `/ws`
//! session is a socket write, and no lock is held across them. A topic of at least
//! [`PARALLEL_MIN`] recipients is delivered by several threads at once (the publisher and
//! scoped helpers, one per further core), and `publish` returns when every part is done, so
//! each session still gets a topic's frames in publish order. From [`OFFLOAD_MIN`] recipients,
//! a publish on a runtime worker is run with `block_in_place`, so the worker's other tasks
//! (other rooms' requests) move to another thread instead of waiting for those writes.

use std::{
    collections::HashMap,
    sync::{OnceLock, RwLock},
    thread,
};

use futures_util::future::BoxFuture;

use super::{Bus, Outbox, Outgoing, Topic};

#[derive(Default)]
pub struct LocalBus {
    topics: RwLock<HashMap<String, HashMap<String, Outbox>>>,
}

impl LocalBus {
    pub fn new() -> LocalBus {
        LocalBus::default()
    }

    /// [`Bus::subscribe`], done at once.
    pub fn subscribe_now(&self, topic: &Topic, session: &str, outbox: Outbox) {
        if let Ok(mut t) = self.topics.write() {
            t.entry(topic.to_owned()).or_default().insert(session.to_owned(), outbox);
        }
    }

    /// [`Bus::unsubscribe`]; true if the session was subscribed.
    pub fn unsubscribe_now(&self, topic: &Topic, session: &str) -> bool {
        let Ok(mut t) = self.topics.write() else { return false };
        let Some(subs) = t.get_mut(topic) else { return false };
        let was = subs.remove(session).is_some();
        if subs.is_empty() {
            t.remove(topic);
        }
        was
    }

    /// The sessions subscribed to `topic`.
    pub fn subscribers(&self, topic: &Topic) -> Vec<String> {
        self.topics
            .read()
            .map(|t| t.get(topic).map(|s| s.keys().cloned().collect()).unwrap_or_default())
            .unwrap_or_default()
    }

    /// [`Bus::publish`], returning how many subscribers took the message.
    pub fn publish_counted(&self, topic: &Topic, msg: &Outgoing, except: Option<&str>) -> usize {
        let to: Vec<Outbox> = {
            let Ok(t) = self.topics.read() else { return 0 };
            let Some(subs) = t.get(topic) else { return 0 };
            subs.iter().filter(|(s, _)| except != Some(s.as_str())).map(|(_, o)| o.clone()).collect()
        };
        deliver(&to, msg)
    }
}

impl Bus for LocalBus {
    fn subscribe(&self, topic: &Topic, session: &str, outbox: Outbox) -> BoxFuture<'static, ()> {
        self.subscribe_now(topic, session, outbox);
        Box::pin(std::future::ready(()))
    }

    fn unsubscribe(&self, topic: &Topic, session: &str) {
        self.unsubscribe_now(topic, session);
    }

    fn publish(&self, topic: &Topic, msg: &Outgoing, except: Option<&str>) {
        self.publish_counted(topic, msg, except);
    }

    fn remove_topic(&self, topic: &Topic) {
        if let Ok(mut t) = self.topics.write() {
            t.remove(topic);
        }
    }
}

/// Recipients from which a publish is split over the cores. Below it, a thread's start-up
/// costs more than the writes it would take over.
pub const PARALLEL_MIN: usize = 2048;

/// Recipients from which a publish leaves the runtime worker to its other tasks (~1 ms of
/// writes on the benchmark machine).
pub const OFFLOAD_MIN: usize = 256;

/// Pushes `frame` to every outbox; returns how many took it.
fn deliver(to: &[Outbox], frame: &Outgoing) -> usize {
    use tokio::runtime::{Handle, RuntimeFlavor};
    // `block_in_place` exists only on the multi-threaded runtime (tests may run on the other).
    let on_worker = || Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if to.len() >= OFFLOAD_MIN && on_worker() {
        tokio::task::block_in_place(|| deliver_here(to, frame))
    } else {
        deliver_here(to, frame)
    }
}

/// [`deliver`] on this thread, with scoped helpers for big topics.
fn deliver_here(to: &[Outbox], frame: &Outgoing) -> usize {
    let push_all = |part: &[Outbox]| part.iter().filter(|o| o.push(frame.clone())).count();
    if to.len() < PARALLEL_MIN {
        return push_all(to);
    }
    // Read once: it opens files under /proc and /sys on every call.
    static THREADS: OnceLock<usize> = OnceLock::new();
    let threads = *THREADS.get_or_init(|| thread::available_parallelism().map_or(1, |n| n.get()));
    if threads < 2 {
        return push_all(to);
    }
    let part = to.len().div_ceil(threads);
    let mut parts = to.chunks(part);
    let mine = parts.next().unwrap_or_default();
    thread::scope(|s| {
        let helpers: Vec<_> = parts.map(|p| s.spawn(move || push_all(p))).collect();
        let n = push_all(mine);
        // A helper that panicked delivered nothing that can be counted.
        n + helpers.into_iter().map(|h| h.join().unwrap_or(0)).sum::<usize>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_big_topic_gets_every_frame_in_publish_order() {
        big_topic_in_order();
    }

    /// The same on the server's runtime, where a big publish runs in `block_in_place`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_big_topic_gets_every_frame_in_publish_order_on_a_worker() {
        big_topic_in_order();
    }

    fn big_topic_in_order() {
        let bus = LocalBus::new();
        let n = PARALLEL_MIN * 2 + 3;
        let mut inboxes = Vec::new();
        for i in 0..n {
            let (out, inbox) = Outbox::new(8);
            bus.subscribe_now("room:BIG", &format!("s{i}"), out);
            inboxes.push(inbox);
        }
        for k in 0..5 {
            let delivered = bus.publish_counted("room:BIG", &Outgoing::ws_text(format!("{k}")), Some("s7"));
            assert_eq!(delivered, n - 1, "publish {k} reaches everyone but the sender");
        }
        for (i, inbox) in inboxes.iter_mut().enumerate() {
            let got: Vec<String> =
                std::iter::from_fn(|| inbox.rx.try_recv().ok()).map(|f| f.as_text().to_string()).collect();
            let want: Vec<String> = if i == 7 { vec![] } else { (0..5).map(|k| k.to_string()).collect() };
            assert_eq!(got, want, "subscriber {i}");
        }
    }
}
