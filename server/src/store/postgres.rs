//! PostgreSQL connection setup. Commits are durable with the server's default
//! `synchronous_commit = on`.

use sqlx::{AnyPool, any::AnyPoolOptions};

pub(super) async fn connect(url: &str) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new().max_connections(8).connect(url).await
}
