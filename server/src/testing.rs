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

/// An engine on a fresh SQLite file in a temp folder (removed when the returned guard drops).
pub(crate) async fn engine(tag: &str) -> (crate::engine::Engine, TempDir) {
    use std::sync::Arc;

    use crate::{
        auth::Auth,
        bus::LocalBus,
        engine::{Engine, EngineConfig, Parts, devices::DevicesConfig, directory::LocalDirectory},
        store::Store,
    };
    let dir = TempDir::new(tag);
    let url = format!("sqlite:{}", dir.0.join("db.sqlite").display());
    let store = Store::open(&url, std::time::Duration::from_millis(1)).await.expect("open the store");
    let config = EngineConfig {
        node_id: "test-node".into(),
        limits: Default::default(),
        max_rooms: 100,
        max_rooms_per_tenant: 10,
        resume_grace: std::time::Duration::from_millis(50),
        joins_per_min: 1000,
    };
    let engine = Engine::start(Parts {
        config,
        store,
        bus: Arc::new(LocalBus::new()),
        directory: Arc::new(LocalDirectory::default()),
        auth: Arc::new(Auth::new(b"test-secret", true, 100)),
        devices: DevicesConfig::default(),
        hubs: None,
    })
    .await
    .expect("start the engine");
    (engine, dir)
}

/// A temp folder, removed on drop.
pub(crate) struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("unisono-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` every 5 ms until it holds; panics naming `what` after `within`.
pub(crate) async fn eventually(what: &str, within: std::time::Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
