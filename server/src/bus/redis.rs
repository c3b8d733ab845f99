//! The cluster bus: a [`LocalBus`] for this node's sessions, and one Redis channel per topic
//! between nodes.
//!
//! - A node subscribes a topic's channel when its first local session subscribes the topic, and
//!   unsubscribes when its last one leaves: a node receives a room's broadcasts only while it has
//!   members of that room (`unisono_cluster_subscriptions` counts them; Socket.IO's classic Redis
//!   adapter sends every message to every node instead). `subscribe` resolves once the channel
//!   is subscribed, so a member joining through this node misses nothing published after.
//! - A publish is delivered to local subscribers at once and sent on the topic's channel as the
//!   `/ws` text itself (the event and its data as serialized by the publisher: every node
//!   delivers the same bytes), with the origin node and the session to skip. A message to one
//!   session that this node delivered locally is not sent to Redis.
//! - Publishes leave in publish order through the cluster's one ordered sender, which pipelines
//!   whatever is waiting (Redis keeps one connection's order), so each node sees a room's pushes
//!   in `rev` order. Its queue is bounded; a full queue drops the message (counted, logged): a
//!   member that misses a playback push is right again with the next, which carries the whole
//!   vector.
//! - Channel names carry the topic, and topics carry the tenant (`room:TENANT:CODE`,
//!   `session:TENANT:ID`): nothing of one tenant travels on another's channel.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures_util::future::BoxFuture;

use super::{Bus, LocalBus, Outbox, Outgoing, Topic};
use crate::{
    cluster::{Cluster, TopicSink},
    metrics::METRICS,
};

/// The bus of a cluster node.
pub struct RedisBus {
    local: LocalBus,
    cluster: Cluster,
    /// Local subscribers per topic (a channel is subscribed while this is above zero).
    counts: Mutex<HashMap<String, usize>>,
}

impl RedisBus {
    /// The bus of `cluster`'s node; it takes the messages of the channels it subscribes.
    pub fn start(cluster: Cluster) -> Arc<RedisBus> {
        let bus = Arc::new(RedisBus { local: LocalBus::new(), cluster: cluster.clone(), counts: Mutex::default() });
        cluster.set_sink(bus.clone());
        bus
    }

    fn lock_counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `origin\nexcept\ntext`.
    fn encode(&self, msg: &Outgoing, except: Option<&str>) -> Vec<u8> {
        let origin = self.cluster.node_id();
        let text = msg.as_text().as_str();
        let mut payload = Vec::with_capacity(origin.len() + text.len() + 34);
        payload.extend_from_slice(origin.as_bytes());
        payload.push(b'\n');
        payload.extend_from_slice(except.unwrap_or_default().as_bytes());
        payload.push(b'\n');
        payload.extend_from_slice(text.as_bytes());
        payload
    }
}

impl Bus for RedisBus {
    fn subscribe(&self, topic: &Topic, session: &str, outbox: Outbox) -> BoxFuture<'static, ()> {
        self.local.subscribe_now(topic, session, outbox);
        let first = {
            let mut counts = self.lock_counts();
            let n = counts.entry(topic.to_owned()).or_default();
            *n += 1;
            *n == 1
        };
        if !first {
            return Box::pin(std::future::ready(()));
        }
        METRICS.cluster_subscriptions.inc();
        self.cluster.subscribe(self.cluster.topic_channel(topic))
    }

    fn unsubscribe(&self, topic: &Topic, session: &str) {
        if !self.local.unsubscribe_now(topic, session) {
            return;
        }
        let last = {
            let mut counts = self.lock_counts();
            match counts.get_mut(topic) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    counts.remove(topic);
                    true
                }
                None => false,
            }
        };
        if last {
            METRICS.cluster_subscriptions.dec();
            self.cluster.unsubscribe(self.cluster.topic_channel(topic));
        }
    }

    fn subscribe_session(&self, topic: &Topic, session: &str, outbox: Outbox) -> BoxFuture<'static, ()> {
        self.subscribe(topic, session, outbox)
    }

    fn unsubscribe_session(&self, topic: &Topic, session: &str) {
        self.unsubscribe(topic, session);
    }

    fn publish(&self, topic: &Topic, msg: &Outgoing, except: Option<&str>) {
        let delivered = self.local.publish_counted(topic, msg, except);
        // One session lives on one node: delivered here, it needs no other.
        if delivered > 0 && topic.starts_with("session:") {
            return;
        }
        self.cluster.publish(self.cluster.topic_channel(topic), self.encode(msg, except));
    }

    fn remove_topic(&self, topic: &Topic) {
        for s in self.local.subscribers(topic) {
            self.unsubscribe(topic, &s);
        }
    }
}

impl TopicSink for RedisBus {
    fn message(&self, topic: &str, payload: &[u8]) {
        let mut parts = payload.splitn(3, |b| *b == b'\n');
        let (Some(origin), Some(except), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
            METRICS.cluster_bad_messages.inc();
            return;
        };
        // Our own publish, already delivered here.
        if origin == self.cluster.node_id().as_bytes() {
            return;
        }
        let Ok(text) = std::str::from_utf8(text) else {
            METRICS.cluster_bad_messages.inc();
            return;
        };
        let except = std::str::from_utf8(except).ok().filter(|e| !e.is_empty());
        match Outgoing::from_text(text.to_owned()) {
            Ok(msg) => {
                self.local.publish_counted(topic, &msg, except);
            }
            Err(e) => {
                METRICS.cluster_bad_messages.inc();
                tracing::warn!(error = %e, topic, "a bus message that does not decode");
            }
        }
    }
}
