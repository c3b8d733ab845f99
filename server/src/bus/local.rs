//! In-process bus: topic → subscribers, each with its outbox.

use std::{collections::HashMap, sync::RwLock};

use super::{Bus, Frame, Outbox, Topic};

#[derive(Default)]
pub struct LocalBus {
    topics: RwLock<HashMap<String, HashMap<String, Outbox>>>,
}

impl LocalBus {
    pub fn new() -> LocalBus {
        LocalBus::default()
    }
}

impl Bus for LocalBus {
    fn subscribe(&self, topic: &Topic, session: &str, outbox: Outbox) {
        if let Ok(mut t) = self.topics.write() {
            t.entry(topic.to_owned()).or_default().insert(session.to_owned(), outbox);
        }
    }

    fn unsubscribe(&self, topic: &Topic, session: &str) {
        if let Ok(mut t) = self.topics.write()
            && let Some(subs) = t.get_mut(topic)
        {
            subs.remove(session);
            if subs.is_empty() {
                t.remove(topic);
            }
        }
    }

    fn publish(&self, topic: &Topic, frame: &Frame, except: Option<&str>) -> usize {
        let Ok(t) = self.topics.read() else { return 0 };
        let Some(subs) = t.get(topic) else { return 0 };
        let mut n = 0;
        for (session, outbox) in subs {
            if except == Some(session.as_str()) {
                continue;
            }
            if outbox.push(frame.clone()) {
                n += 1;
            }
        }
        n
    }

    fn remove_topic(&self, topic: &Topic) {
        if let Ok(mut t) = self.topics.write() {
            t.remove(topic);
        }
    }
}
