//! # unisono-server
//!
//! The Unisono server: a thin tokio driver around `unisono-core`'s state machines.
//!
//! ## Layout
//! - [`api`]: the REST API under `/api` and its OpenAPI document.
//! - [`auth`]: who a connection is: JWT principals (subject, tenant, role), anonymous use.
//! - [`cluster`]: several nodes as one service over Redis: the node registry, requests between
//!   nodes, the room directory's leases (the cluster bus is [`bus::redis`]).
//! - [`config`]: `unisono serve` flags and environment variables, with defaults.
//! - [`server`]: process wiring: store, engine, listener, graceful shutdown.
//! - [`http`]: routes: `/healthz`, `/metrics`, the web app (and `/api` through [`api`]).
//! - [`edge`]: what every edge needs: bearer tokens, query parameters, the peer address, the
//!   per-connection rate limiter.
//! - [`sio`]: the Socket.IO edge (socketioxide): namespaces, acks, CONNECT auth.
//! - [`ws`]: the native WebSocket edge at `/ws`: JSON frames ↔ engine requests.
//! - [`engine`]: rooms (one actor per room, found through the room directory), sessions,
//!   devices (one actor per tenant around core's device hub), connections and their one
//!   lifecycle; knows no wire protocol.
//! - [`bus`]: topics (a room's broadcasts, one session's messages) to subscribed sessions;
//!   messages serialized once; bounded outboxes.
//! - [`store`]: durable rooms (with their owner and fencing epoch) and devices in SQLite or
//!   PostgreSQL, group-committed.
//! - [`metrics`]: Prometheus counters, gauges and histograms.
//! - [`time`]: the server clock (epoch milliseconds from a monotonic source).

pub mod api;
pub mod auth;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod edge;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod peers;
pub mod server;
pub mod sio;
pub mod store;
pub mod time;
pub mod ws;

#[cfg(test)]
pub(crate) mod testing;
