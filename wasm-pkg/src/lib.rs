//! # unisono (npm) and the shared browser client
//!
//! The server's exact position math and a complete client, for JavaScript (npm package
//! `unisono`) and for Rust front ends (the Yew app in `web/` depends on this crate with
//! `default-features = false`, so it runs the same client without the JS bindings).
//!
//! - [`client`]: `Client`, the WebSocket client (time sync, room state, requests, reconnect);
//!   its sans-IO half is `client::state`.
//! - [`player`]: `PlayerSync` and the media adapters (HTML5, YouTube, Spotify, custom; the
//!   built-in ones are JavaScript, `js/adapters.js`).
//! - `bindings` (feature `js`): `positionAt`, `PlaybackClock`, `Estimator`, `Drift`,
//!   `encodeRequest`, `decodeServerFrame`.
//! - `js_client` (feature `js`): `UnisonoClient` and `PlayerSync` for JavaScript.
//! - `sys`: the JavaScript APIs used (declared here, no js-sys/web-sys); `cell`: a `RefCell`
//!   whose failed borrow traps.
//!
//! `no_std` (+ `alloc`). Feature `std` (default) links std for ordinary builds; the npm build
//! (`cargo xtask npm-pack`) turns it off and sets `panic-handler`, so the package's wasm carries
//! none of std's panic and formatting code (docs/benchmarks.md, "npm package size").

#![cfg_attr(not(test), no_std)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod cell;
pub mod client;
pub mod player;
mod sys;

#[cfg(feature = "js")]
mod bindings;
#[cfg(feature = "js")]
mod js_client;
#[cfg(feature = "js")]
mod types;

#[cfg(feature = "js")]
pub use bindings::*;
#[cfg(feature = "js")]
pub use js_client::{JsPlayerSync, UnisonoClient};

/// What `std`'s prelude would bring, for the `no_std` build.
mod prelude {
    pub(crate) use alloc::{borrow::ToOwned, boxed::Box, string::String, vec, vec::Vec};
}

/// The npm build (feature `panic-handler`) links no std, so it brings the panic handler: trap at
/// once. A panic ends the same way with std's handler under `panic = "abort"` (wasm has no
/// stderr to print to), without std's formatting and hook machinery in the package.
#[cfg(all(target_arch = "wasm32", feature = "panic-handler", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// Talc instead of the standard library's dlmalloc on wasm32: the same job (growing the wasm
/// memory on demand) in a fraction of the code, which counts against the package's size budget.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

pub use sys::{Js, now as performance_now, object as js_object};
