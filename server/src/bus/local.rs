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
    topics: RwLock<HashMap<Box<str>, Subscribers>>,
}

/// A topic's subscribers. Most topics have one (every session's own topic), which is kept
/// without a map of its own: a map per session would cost every connection a few hundred bytes.
enum Subscribers {
    One(Box<str>, Outbox),
    Many(HashMap<Box<str>, Outbox>),
}

impl Subscribers {
    fn insert(&mut self, session: &str, outbox: Outbox) {
        match self {
            Subscribers::One(s, o) if **s == *session => *o = outbox,
            Subscribers::One(s, o) => {
                let mut many = HashMap::with_capacity(2);
                many.insert(std::mem::take(s), o.clone());
                many.insert(session.into(), outbox);
                *self = Subscribers::Many(many);
            }
            Subscribers::Many(m) => {
                m.insert(session.into(), outbox);
            }
        }
    }

    /// Removes `session`; true if it was there. Leaves `Many` empty rather than `One`.
    fn remove(&mut self, session: &str) -> bool {
        match self {
            Subscribers::One(s, _) if **s == *session => {
                *self = Subscribers::Many(HashMap::new());
                true
            }
            Subscribers::One(..) => false,
            Subscribers::Many(m) => m.remove(session).is_some(),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Subscribers::Many(m) if m.is_empty())
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, &Outbox)> + '_> {
        match self {
            Subscribers::One(s, o) => Box::new(std::iter::once((&**s, o))),
            Subscribers::Many(m) => Box::new(m.iter().map(|(s, o)| (&**s, o))),
        }
    }
}

impl LocalBus {
    pub fn new() -> LocalBus {
        LocalBus::default()
    }

    /// [`Bus::subscribe`], done at once.
    pub fn subscribe_now(&self, topic: &Topic, session: &str, outbox: Outbox) {
        if let Ok(mut t) = self.topics.write() {
            match t.get_mut(topic) {
                Some(subs) => subs.insert(session, outbox),
                None => {
                    t.insert(topic.into(), Subscribers::One(session.into(), outbox));
                }
            }
        }
    }

    /// [`Bus::unsubscribe`]; true if the session was subscribed.
    pub fn unsubscribe_now(&self, topic: &Topic, session: &str) -> bool {
        let Ok(mut t) = self.topics.write() else { return false };
        let Some(subs) = t.get_mut(topic) else { return false };
        let was = subs.remove(session);
        if subs.is_empty() {
            t.remove(topic);
        }
        was
    }

    /// The sessions subscribed to `topic`.
    pub fn subscribers(&self, topic: &Topic) -> Vec<String> {
        self.topics
            .read()
            .map(|t| t.get(topic).map(|s| s.iter().map(|(s, _)| s.to_owned()).collect()).unwrap_or_default())
            .unwrap_or_default()
    }

    /// [`Bus::publish`], returning how many subscribers took the message.
    pub fn publish_counted(&self, topic: &Topic, msg: &Outgoing, except: Option<&str>) -> usize {
        let to: Vec<Outbox> = {
            let Ok(t) = self.topics.read() else { return 0 };
            match t.get(topic) {
                None => return 0,
                Some(Subscribers::One(s, o)) => {
                    if except == Some(&**s) {
                        return 0;
                    }
                    let o = o.clone();
                    drop(t);
                    return usize::from(o.push(msg.clone()));
                }
                Some(Subscribers::Many(m)) => {
                    m.iter().filter(|(s, _)| except != Some(&***s)).map(|(_, o)| o.clone()).collect()
                }
            }
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

    #[test]
    fn one_subscriber_grows_to_many_and_back_to_none() {
        let bus = LocalBus::new();
        let (a, mut ra) = Outbox::new(8);
        let (b, mut rb) = Outbox::new(8);
        bus.subscribe_now("t", "a", a.clone());
        assert_eq!(bus.publish_counted("t", &Outgoing::ws_text("1"), None), 1);
        assert_eq!(bus.publish_counted("t", &Outgoing::ws_text("x"), Some("a")), 0, "the sender is skipped");
        bus.subscribe_now("t", "b", b);
        bus.subscribe_now("t", "a", a);
        assert_eq!(bus.publish_counted("t", &Outgoing::ws_text("2"), None), 2);
        assert!(bus.unsubscribe_now("t", "a"));
        assert!(!bus.unsubscribe_now("t", "a"), "already gone");
        assert_eq!(bus.publish_counted("t", &Outgoing::ws_text("3"), None), 1);
        assert!(bus.unsubscribe_now("t", "b"));
        assert!(bus.subscribers("t").is_empty());
        let got = |r: &mut super::super::outbox::Inbox| {
            std::iter::from_fn(|| r.rx.try_recv().ok()).map(|f| f.as_text().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(got(&mut ra), ["1", "2"]);
        assert_eq!(got(&mut rb), ["2", "3"]);
    }

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
