//! Where the members of a room this node owns are connected, when not here: the node each
//! joined (or was re-announced) through. A node's sessions cannot tell the owner they are gone
//! when the node dies, so the owner sweeps ([`MemberNodes::sweep`]): a member whose node is
//! dead is marked disconnected at once (`member-updated`), and leaves the room (`member-left`)
//! after the resume grace, unless its session came back through another node meanwhile (its
//! next join, forwarded from there, records that node).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use unisono_core::RoomCommand;

struct Remote {
    node: Arc<str>,
    /// Since when its node is dead (it was told `Disconnect` then).
    down_since: Option<Instant>,
}

/// The members of one room that are on other nodes.
#[derive(Default)]
pub struct MemberNodes {
    by_session: Mutex<HashMap<Box<str>, Remote>>,
}

impl MemberNodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Remote>> {
        self.by_session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `session` is in the room through `node` (`None`: through this node).
    pub fn present(&self, session: &str, node: Option<&Arc<str>>) {
        let mut map = self.lock();
        match node {
            Some(node) => {
                map.insert(session.into(), Remote { node: node.clone(), down_since: None });
            }
            None => {
                map.remove(session);
            }
        }
    }

    /// `session` left the room.
    pub fn gone(&self, session: &str) {
        self.lock().remove(session);
    }

    /// The commands that take the members of dead nodes out, at `now`: `Disconnect` when their
    /// node is first seen dead, `Leave` once it has been dead for `grace`.
    pub fn sweep(&self, is_dead: impl Fn(&str) -> bool, now: Instant, grace: Duration) -> Vec<RoomCommand> {
        let mut out = Vec::new();
        self.lock().retain(|session, r| {
            if !is_dead(&r.node) {
                r.down_since = None;
                return true;
            }
            let session = session.to_string();
            match r.down_since {
                None => {
                    r.down_since = Some(now);
                    out.push(RoomCommand::Disconnect { session });
                    true
                }
                Some(t) if now.saturating_duration_since(t) >= grace => {
                    out.push(RoomCommand::Leave { session });
                    false
                }
                Some(_) => true,
            }
        });
        out
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(cmds: &[RoomCommand]) -> Vec<String> {
        cmds.iter()
            .map(|c| match c {
                RoomCommand::Disconnect { session } => format!("disconnect {session}"),
                RoomCommand::Leave { session } => format!("leave {session}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn members_of_a_dead_node_are_disconnected_then_leave_after_the_grace() {
        let m = MemberNodes::default();
        let (b, c): (Arc<str>, Arc<str>) = ("node-b".into(), "node-c".into());
        m.present("s1", Some(&b));
        m.present("s2", Some(&c));
        m.present("s3", Some(&b));
        m.present("s3", None); // came here since
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        let dead = |n: &str| n == "node-b";
        assert_eq!(sessions(&m.sweep(dead, t0, grace)), ["disconnect s1"]);
        assert!(m.sweep(dead, t0 + Duration::from_secs(5), grace).is_empty(), "within the grace");
        assert_eq!(sessions(&m.sweep(dead, t0 + grace, grace)), ["leave s1"]);
        assert!(m.sweep(dead, t0 + grace * 2, grace).is_empty(), "told to leave once");
        assert_eq!(m.len(), 1, "s2 stays");
    }

    #[test]
    fn a_session_back_through_a_live_node_is_not_swept() {
        let m = MemberNodes::default();
        let (b, c): (Arc<str>, Arc<str>) = ("node-b".into(), "node-c".into());
        m.present("s1", Some(&b));
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        let dead = |n: &str| n == "node-b";
        assert_eq!(sessions(&m.sweep(dead, t0, grace)), ["disconnect s1"]);
        // Its client reconnected to node C and joined again (forwarded from C).
        m.present("s1", Some(&c));
        assert!(m.sweep(dead, t0 + grace, grace).is_empty());
        // A member that left is forgotten.
        m.gone("s1");
        assert!(m.is_empty());
    }
}
