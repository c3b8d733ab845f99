//! # unisono-core
//!
//! The sans-IO heart of Unisono. Everything here is a pure value or a pure function of its
//! inputs: no sockets, no async runtime, no system clock. Time is always a parameter, expressed
//! as [`Millis`] (milliseconds as `f64`) on the *server* clock. The same code compiles natively
//! into the server and to `wasm32-unknown-unknown` for the browser, so both sides run identical
//! position math.
//!
//! ## Layout
//! - [`song`]: what can be played (`Song`, `Provider`).
//! - [`clock`]: the playback clock, a timing vector `position = anchor + (now - t) * rate`.
//! - [`room`]: the room state machine: members, host, permissions, queue, ready barrier,
//!   host hand-over. `Room::apply(RoomCommand, now) -> Result<Vec<RoomEffect>, RoomError>`.
//! - [`device`]: one tenant's devices, admins and commands as a state machine
//!   (`DeviceHub::apply(DeviceInput, now) -> Vec<DeviceEffect>`), and the command catalog.
//! - [`estimator`]: NTP-style clock-offset estimation from four timestamps.
//! - [`drift`]: the drift controller that decides between nothing, a rate nudge and a seek.
//! - [`merge_patch`]: JSON Merge Patch (RFC 7396) diff and apply (device states to admins).
//! - [`peer`]: seed 001's server-to-server protocol: its line messages and a link's state
//!   machine (HELLO, sync, heartbeat).
//! - [`protocol`]: the wire types (serde) of rooms and devices: requests, typed replies, pushes,
//!   and stable error codes.
//! - [`tree`]: the same shapes over any parsed JSON tree without serde (the wasm client's codec,
//!   held to serde's by tests).
//! - [`code`]: room-code alphabet and validation (generation takes randomness as a parameter).
//! - [`vectors`]: cross-platform test vectors (inputs and bit-exact outputs of the math above).
//!
//! ## `no_std`
//! The crate needs only `alloc` (and `libm` for `floor`/`round`, exact operations that give the
//! same results as std's). The npm package builds without std, so it carries none of std's
//! panic and formatting machinery; the server links it with std as usual.
//!
//! ## Determinism
//! Only IEEE-754 basic operations (`+ - * /`, comparisons, `min`/`max`) are used on `f64` in the
//! clock and estimator paths. These are exactly specified and give bit-identical results natively
//! and in WebAssembly; no transcendental functions, no fused multiply-add.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod clock;
pub mod code;
pub mod device;

pub mod drift;
pub mod estimator;
pub mod merge_patch;
pub mod peer;
pub mod protocol;
pub mod room;
pub mod song;
pub mod tree;
pub mod vectors;

/// What `std`'s prelude would bring, for the `no_std` build.
mod prelude {
    pub(crate) use alloc::{
        borrow::ToOwned,
        boxed::Box,
        format,
        string::{String, ToString},
        vec,
        vec::Vec,
    };
}

/// Milliseconds on the server's clock (Unix epoch based), or a duration in milliseconds.
pub type Millis = f64;

pub use clock::PlaybackClock;
pub use room::{Room, RoomCommand, RoomEffect, RoomError};
pub use song::{Provider, Song};
