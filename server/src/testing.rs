//! Test support: a fresh PostgreSQL database per test (the local server at 127.0.0.1:5432,
//! trust auth), dropped at the end. PostgreSQL tests are `#[ignore]`d so that a plain
//! `cargo test` does not report them as passed without running them; `cargo xtask test` runs
//! them (`--include-ignored`) and, without PostgreSQL, they fail.

/// A database made for one test.
pub(crate) struct PgDatabase {
    pub url: String,
    name: String,
}

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl PgDatabase {
    /// Creates `unisono_TAG_PID_N`; panics (the test fails) when PostgreSQL is unreachable.
    pub(crate) async fn create(tag: &str) -> PgDatabase {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("unisono_{tag}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let pool = sqlx::PgPool::connect(ADMIN_URL)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at 127.0.0.1:5432 is needed for this test: {e}"));
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&pool).await.expect("drop");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create");
        PgDatabase { url: format!("postgres://postgres@127.0.0.1:5432/{name}"), name }
    }

    /// Drops the database (closing whatever still uses it).
    pub(crate) async fn drop(self) {
        if let Ok(pool) = sqlx::PgPool::connect(ADMIN_URL).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&pool).await;
        }
    }
}
