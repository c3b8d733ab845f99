//! One peer link's state machine: HELLO both ways, then messages; the heartbeat where both ends
//! announce it. Sans-IO: the driver hands it each line read and the time, sends what it says to
//! send, and closes the link when it says so.
//!
//! Lifecycle (seed 001): each side sends HELLO `{serverId}` when the socket opens; once it has
//! the other's, the link is up ([`LinkOutput::Up`]) and the driver sends SYNC_STATE with its
//! sessions. A HELLO without the configured secret closes the link. A second HELLO on a link
//! that is up is announced as up again (the driver replaces the peer's state). Anything but
//! HELLO before HELLO is ignored and reported. With the heartbeat (both ends announced
//! [`CAP_HEARTBEAT`]) the link sends a PING after a second without sending, and is dead after
//! three seconds without receiving anything.

use crate::prelude::*;

use super::wire::{CAP_HEARTBEAT, CAP_UNISONO, Hello, PeerError, PeerMessage, decode_line};
use crate::Millis;

/// What a link is configured with.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// This server's id (`origin`, `serverId`).
    pub me: String,
    /// The shared secret a peer's HELLO must carry (and this side's HELLO carries).
    pub secret: Option<String>,
    /// Longest line taken (bytes).
    pub max_line: usize,
    /// Idle time after which a PING is sent (ms).
    pub heartbeat_ms: Millis,
    /// Silence after which a heartbeat link is dead (ms).
    pub dead_after_ms: Millis,
}

impl LinkConfig {
    pub fn new(me: impl Into<String>) -> LinkConfig {
        LinkConfig {
            me: me.into(),
            secret: None,
            max_line: super::wire::MAX_LINE,
            heartbeat_ms: 1_000.0,
            dead_after_ms: 3_000.0,
        }
    }
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkOutput {
    /// Write this message.
    Send(PeerMessage),
    /// The link is up with peer `peer` (again, after a second HELLO): send SYNC_STATE now.
    /// `unisono`: the peer takes Unisono's extensions.
    Up { peer: String, unisono: bool },
    /// A message from the peer, for the driver to act on.
    Message(PeerMessage),
    /// A line that was not taken (counted and logged; the link stays up).
    Ignored(PeerError),
    /// A message out of order (before HELLO): ignored.
    Early(&'static str),
    /// Close the link, for this reason.
    Close(String),
}

/// One link.
#[derive(Debug)]
pub struct Link {
    cfg: LinkConfig,
    peer: Option<Hello>,
    last_in: Millis,
    last_out: Millis,
    closed: bool,
}

impl Link {
    /// A link whose socket just opened at `now`; the HELLO to send first.
    pub fn open(cfg: LinkConfig, now: Millis) -> (Link, Vec<LinkOutput>) {
        let hello = Hello {
            server_id: cfg.me.clone(),
            secret: cfg.secret.clone(),
            capabilities: vec![CAP_HEARTBEAT.into(), CAP_UNISONO.into()],
        };
        let link = Link { cfg, peer: None, last_in: now, last_out: now, closed: false };
        (link, vec![LinkOutput::Send(PeerMessage::Hello(hello))])
    }

    /// The peer's id, once it said HELLO.
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_ref().map(|h| h.server_id.as_str())
    }

    /// Whether the peer announced capability `cap`.
    pub fn peer_has(&self, cap: &str) -> bool {
        self.peer.as_ref().is_some_and(|h| h.capabilities.iter().any(|c| c == cap))
    }

    fn heartbeat(&self) -> bool {
        self.peer_has(CAP_HEARTBEAT)
    }

    /// The driver wrote something at `now` (a heartbeat is due only after a second of silence).
    pub fn sent(&mut self, now: Millis) {
        self.last_out = now;
    }

    /// A line (without its newline) read at `now`.
    pub fn on_line(&mut self, line: &str, now: Millis) -> Vec<LinkOutput> {
        if self.closed {
            return Vec::new();
        }
        self.last_in = now;
        let msg = match decode_line(line, self.cfg.max_line) {
            Ok((_, msg)) => msg,
            Err(e) => return vec![LinkOutput::Ignored(e)],
        };
        match (msg, self.peer.is_some()) {
            (PeerMessage::Hello(h), _) => {
                if self.cfg.secret.is_some() && h.secret != self.cfg.secret {
                    self.closed = true;
                    return vec![LinkOutput::Close("HELLO without the shared secret".into())];
                }
                if h.server_id.is_empty() || h.server_id == self.cfg.me {
                    self.closed = true;
                    return vec![LinkOutput::Close(format!("HELLO with server id {:?}", h.server_id))];
                }
                let up = LinkOutput::Up {
                    peer: h.server_id.clone(),
                    unisono: h.capabilities.iter().any(|c| c == CAP_UNISONO),
                };
                self.peer = Some(h);
                vec![up]
            }
            (_, false) => vec![LinkOutput::Early("a message before HELLO")],
            (PeerMessage::Ping, true) => Vec::new(),
            (m, true) => vec![LinkOutput::Message(m)],
        }
    }

    /// Whether `msg` may be sent on this link (an extension only to a peer that announced it).
    pub fn may_send(&self, msg: &PeerMessage) -> bool {
        match msg {
            PeerMessage::Ping => self.heartbeat(),
            m => !m.is_extension() || self.peer_has(CAP_UNISONO),
        }
    }

    /// The time is `now`: a PING when the link has been quiet, or its end when the peer has.
    pub fn tick(&mut self, now: Millis) -> Vec<LinkOutput> {
        if self.closed || !self.heartbeat() {
            return Vec::new();
        }
        if now - self.last_in >= self.cfg.dead_after_ms {
            self.closed = true;
            return vec![LinkOutput::Close(format!("no line from the peer for {} ms", now - self.last_in))];
        }
        if now - self.last_out >= self.cfg.heartbeat_ms {
            self.last_out = now;
            return vec![LinkOutput::Send(PeerMessage::Ping)];
        }
        Vec::new()
    }

    /// When [`Link::tick`] has something to do next (`None`: never, without the heartbeat).
    pub fn next_deadline(&self) -> Option<Millis> {
        (!self.closed && self.heartbeat())
            .then(|| (self.last_out + self.cfg.heartbeat_ms).min(self.last_in + self.cfg.dead_after_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::wire::encode_line;
    use serde_json::json;

    fn hello(id: &str, caps: &[&str], secret: Option<&str>) -> String {
        let h = Hello {
            server_id: id.into(),
            secret: secret.map(Into::into),
            capabilities: caps.iter().map(|c| (*c).into()).collect(),
        };
        encode_line(id, &PeerMessage::Hello(h))
    }

    #[test]
    fn hello_both_ways_then_messages() {
        let (mut l, out) = Link::open(LinkConfig::new("uni-1"), 0.0);
        assert!(matches!(&out[..], [LinkOutput::Send(PeerMessage::Hello(h))] if h.server_id == "uni-1"));
        let bcast = encode_line("srv-a", &PeerMessage::Broadcast { message: json!({ "x": 1 }) });
        assert_eq!(l.on_line(&bcast, 1.0), [LinkOutput::Early("a message before HELLO")]);
        assert_eq!(
            l.on_line(&hello("srv-a", &[], None), 2.0),
            [LinkOutput::Up { peer: "srv-a".into(), unisono: false }]
        );
        assert!(matches!(&l.on_line(&bcast, 3.0)[..], [LinkOutput::Message(PeerMessage::Broadcast { .. })]));
        assert!(matches!(&l.on_line("{oops", 4.0)[..], [LinkOutput::Ignored(PeerError::BadJson(_))]));
        // A plain seed peer: no heartbeat, no extensions.
        assert_eq!(l.tick(100_000.0), []);
        assert_eq!(l.next_deadline(), None);
        assert!(!l.may_send(&PeerMessage::Ping));
    }

    #[test]
    fn the_secret_is_required_when_configured() {
        let cfg = LinkConfig { secret: Some("s3cret".into()), ..LinkConfig::new("uni-1") };
        let (mut l, out) = Link::open(cfg.clone(), 0.0);
        assert!(matches!(&out[..], [LinkOutput::Send(PeerMessage::Hello(h))] if h.secret.as_deref() == Some("s3cret")));
        assert!(matches!(&l.on_line(&hello("srv-a", &[], None), 1.0)[..], [LinkOutput::Close(_)]));
        let (mut l, _) = Link::open(cfg, 0.0);
        assert!(matches!(&l.on_line(&hello("srv-a", &[], Some("s3cret")), 1.0)[..], [LinkOutput::Up { .. }]));
    }

    #[test]
    fn a_heartbeat_link_pings_when_quiet_and_dies_after_three_silent_seconds() {
        let (mut l, _) = Link::open(LinkConfig::new("uni-1"), 0.0);
        l.on_line(&hello("uni-2", &[CAP_HEARTBEAT, CAP_UNISONO], None), 0.0);
        assert_eq!(l.next_deadline(), Some(1_000.0));
        assert_eq!(l.tick(1_000.0), [LinkOutput::Send(PeerMessage::Ping)]);
        // Its PINGs keep it alive.
        assert_eq!(l.on_line(&encode_line("uni-2", &PeerMessage::Ping), 1_500.0), []);
        assert_eq!(l.tick(2_000.0), [LinkOutput::Send(PeerMessage::Ping)]);
        assert!(matches!(&l.tick(4_500.0)[..], [LinkOutput::Close(_)]), "half-open: dead 3 s after its last line");
        assert_eq!(l.on_line(&encode_line("uni-2", &PeerMessage::Ping), 4_600.0), [], "closed");
    }
}
