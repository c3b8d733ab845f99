//! PostgreSQL connection setup. Commits are durable with the server's default
//! `synchronous_commit = on`. While the database is down a write fails at once
//! (`STORAGE_UNAVAILABLE`); while it does not answer at all (a partition) a write waits at most
//! [`ACQUIRE_TIMEOUT`] for a connection. The pool connects again by itself once it is back.

use sqlx::{AnyPool, any::AnyPoolOptions};

/// Longest wait for a connection (sqlx's default is 30 s, which every request would wait).
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) async fn connect(url: &str) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new().max_connections(8).acquire_timeout(ACQUIRE_TIMEOUT).connect(url).await
}
