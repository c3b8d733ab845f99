//! Unisono's web app: a Yew front end over the shared client in the `unisono` crate (the same
//! code as the npm package), built by trunk from the top-level `index.html` and served by the
//! `unisono` binary at `/`, `/r/CODE` and `/admin`.
//!
//! - `app.rs`: the rooms app's one stateful component: client, player sync, routing, requests.
//! - `views.rs`: the room pages and panels as plain functions of the current state.
//! - `admin/`: the device dashboard at `/admin` (its own page and connection, admin token).
//! - `chart.rs`: time-series charts (inline SVG): drift, usage.
//! - `links.rs`: pasted links → songs.
//! - `youtube.rs`: the YouTube IFrame player for YouTube songs.

mod admin;
mod app;
mod chart;
mod links;
mod script;
mod spotify;
mod views;
mod youtube;

fn main() {
    // The dashboard is a separate page with its own (admin) connection, chosen at load.
    let path = web_sys::window().and_then(|w| w.location().pathname().ok()).unwrap_or_default();
    if path.trim_end_matches('/') == "/admin" {
        yew::Renderer::<admin::Dashboard>::new().render();
    } else {
        yew::Renderer::<app::App>::new().render();
    }
}
