//! Seed 001's server-to-server protocol, sans-IO: the wire messages ([`wire`]) and one link's
//! state machine ([`link`]: HELLO both ways, then the session sync and the messages; Unisono's
//! heartbeat where both ends announce it). The server's `peers` module owns the sockets and
//! feeds lines and the time in.

pub mod link;
pub mod wire;

pub use link::{Link, LinkConfig, LinkOutput};
pub use wire::{Hello, PeerError, PeerMessage, PeerSession, channel_name, decode_line, encode_line};
