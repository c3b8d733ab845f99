//! Unisono's web app: a Yew front end over the shared client in the `unisono` crate (the same
//! code as the npm package), built by trunk from the top-level `index.html` and served by the
//! `unisono` binary at `/` and `/r/CODE`.
//!
//! - `app.rs`: the one stateful component: client, player sync, routing, requests.
//! - `views.rs`: the pages and panels as plain functions of the current state.
//! - `chart.rs`: the drift chart (inline SVG).
//! - `links.rs`: pasted links → songs.

mod app;
mod chart;
mod links;
mod views;

fn main() {
    yew::Renderer::<app::App>::new().render();
}
