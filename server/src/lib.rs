//! # unisono-server
//!
//! The Unisono server: a thin tokio driver around `unisono-core`'s state machines.
//!
//! ## Layout
//! - [`api`]: the REST API under `/api` and its OpenAPI document.
//! - [`auth`]: who a connection is: JWT principals (subject, tenant, role), anonymous use.
//! - [`config`]: `unisono serve` flags and environment variables, with defaults.
//! - [`server`]: process wiring: store, engine, listener, graceful shutdown.
//! - [`http`]: routes: `/ws`, `/healthz`, `/metrics`, the web app.
//! - [`sio`]: the Socket.IO edge (socketioxide): namespaces, acks, CONNECT auth.
//! - [`ws`]: the native WebSocket edge: JSON frames ↔ engine calls.
//! - [`engine`]: rooms (one actor per room) and sessions; knows no wire protocol.
//! - [`bus`]: fan-out of pre-serialized frames to subscribed sessions; bounded outboxes.
//! - [`store`]: durable rooms in SQLite or PostgreSQL, group-committed.
//! - [`metrics`]: Prometheus counters, gauges and histograms.
//! - [`time`]: the server clock (epoch milliseconds from a monotonic source).

pub mod api;
pub mod auth;
pub mod bus;
pub mod config;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod server;
pub mod sio;
pub mod store;
pub mod time;
pub mod ws;
