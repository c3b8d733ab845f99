//! Durable room storage: SQLite by default, PostgreSQL by URL, one schema (`migrations/`).
//!
//! Every accepted change is written before it is acknowledged or broadcast (the room actor
//! awaits [`Store::save`]). Positions are derived from the stored anchor, so nothing is written
//! while time passes. Writes go through one writer task that batches whatever is waiting into a
//! single transaction (group commit), after a short window (`--commit-delay-ms`, default 2 ms)
//! that lets concurrent changes share one commit and one fsync: in the 2,000-room benchmark it
//! halved the server's CPU per change for +5 ms p99.

mod devices;
mod postgres;
mod sqlite;

pub use devices::{DeviceRow, HistoryEntry, Snapshot};

use std::{collections::HashMap, time::Duration};

use sqlx::{AnyPool, Row, any::AnyRow};
use tokio::sync::{mpsc, oneshot};
use unisono_core::{
    Millis, PlaybackClock,
    room::{QueueItem, RoomRecord, RoomSettings},
    song::Song,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored room {code} is corrupt: {reason}")]
    Corrupt { code: String, reason: String },
    #[error("the store is shut down")]
    Closed,
    #[error("unsupported database URL {0:?} (use sqlite:PATH or postgres://…)")]
    UnsupportedUrl(String),
}

/// Most records written in one transaction.
const MAX_BATCH: usize = 512;
/// Below this many waiting changes, the writer waits the commit delay for more.
const SMALL_BATCH: usize = 16;

/// One durable write, committed by the writer task together with whatever else is waiting.
pub(crate) enum Write {
    Room {
        record: RoomRecord,
        now: Millis,
    },
    /// A device's registry fields (name, info, last seen); never its state or rev, which only
    /// state writes change, so a presence write queued after a state cannot undo it.
    DeviceInfo {
        row: DeviceRow,
    },
    /// A device's new state and rev, with a history entry (entries beyond `keep` or older than
    /// `max_age_ms` are trimmed now and then).
    DeviceState {
        row: DeviceRow,
        keep: usize,
        max_age_ms: f64,
    },
}

struct WriteJob {
    write: Write,
    done: oneshot::Sender<Result<(), String>>,
}

/// A submitted write; [`Committed::wait`] resolves once it is committed.
pub struct Committed(oneshot::Receiver<Result<(), String>>);

impl Committed {
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(StoreError::Db(sqlx::Error::Protocol(msg))),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    writer: mpsc::Sender<WriteJob>,
    /// Tells the writer to let go of its connection (shutdown: the pool waits for it).
    release: std::sync::Arc<tokio::sync::Notify>,
    backend: &'static str,
}

impl Store {
    /// Connects, runs migrations and starts the writer task. A write waits up to `commit_delay`
    /// for others to share its commit: fewer fsyncs and wake-ups for a little latency.
    pub async fn open(url: &str, commit_delay: Duration) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (pool, backend) = if url.starts_with("sqlite:") {
            (sqlite::connect(url).await?, "sqlite")
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (postgres::connect(url).await?, "postgres")
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        sqlx::migrate!("./migrations").run(&pool).await?;
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        tokio::spawn(writer_loop(pool.clone(), backend, rx, release.clone(), commit_delay));
        Ok(Store { pool, writer: tx, release, backend })
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Queues a write for the writer task (waiting only while its queue is full). Writes are
    /// committed in the order submitted.
    pub(crate) async fn submit(&self, write: Write) -> Result<Committed, StoreError> {
        let (done, wait) = oneshot::channel();
        self.writer.send(WriteJob { write, done }).await.map_err(|_| StoreError::Closed)?;
        Ok(Committed(wait))
    }

    /// Durably writes a room; returns once it is committed.
    pub async fn save(&self, record: RoomRecord, now: Millis) -> Result<(), StoreError> {
        self.submit(Write::Room { record, now }).await?.wait().await
    }

    /// All rooms whose state is `open`.
    pub async fn load_open_rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
        let rows = sqlx::query(
            // `is_playing` is read as an integer: the Any driver cannot decode SQLite's BOOLEAN.
            "SELECT code, tenant, name, host, current_song, position_ms, anchor_time, \
             CAST(CASE WHEN is_playing THEN 1 ELSE 0 END AS BIGINT) AS is_playing, rate, rev, \
             state, queue, next_item, settings, created_at FROM rooms WHERE state = 'open'",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Liveness probe for `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Waits for queued writes and closes the pool.
    pub async fn close(&self) {
        // Queued jobs are drained by the writer before it sees the channel close; give it a
        // moment, then close the pool.
        for _ in 0..50 {
            if self.writer.capacity() == self.writer.max_capacity() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The writer finishes the batch in hand, then returns its connection.
        self.release.notify_one();
        self.pool.close().await;
    }
}

/// Columns of a room row, in bind order.
const ROOM_COLUMNS: usize = 17;

/// `INSERT … VALUES (…), (…) … ON CONFLICT (code) DO UPDATE …` for `rows` rooms: one statement
/// writes a whole batch's rooms (each room once), so a commit costs one round trip to the
/// database whatever the batch size.
///
/// Parameters are `$1, $2, …` for PostgreSQL and anonymous `?` for SQLite: sqlx binds a named
/// SQLite parameter by asking SQLite its name, a linear search, which made binding a 64-room
/// statement quadratic (21 % of server CPU in the unpaced `rooms` benchmark).
fn upsert_rooms_sql(rows: usize, numbered: bool) -> String {
    let mut sql = String::from(
        "INSERT INTO rooms (code, name, host, current_song_id, current_song, position_ms, \
         anchor_time, is_playing, rate, rev, state, queue, next_item, settings, created_at, updated_at, tenant) VALUES ",
    );
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..ROOM_COLUMNS {
            if c > 0 {
                sql.push_str(", ");
            }
            if numbered {
                sql.push_str(&format!("${}", r * ROOM_COLUMNS + c + 1));
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql.push_str(
        " ON CONFLICT (code) DO UPDATE SET name = excluded.name, tenant = excluded.tenant, host = excluded.host, \
         current_song_id = excluded.current_song_id, current_song = excluded.current_song, \
         position_ms = excluded.position_ms, anchor_time = excluded.anchor_time, \
         is_playing = excluded.is_playing, rate = excluded.rate, rev = excluded.rev, \
         state = excluded.state, queue = excluded.queue, next_item = excluded.next_item, \
         settings = excluded.settings, created_at = excluded.created_at, updated_at = excluded.updated_at",
    );
    sql
}

/// Most rooms per upsert statement; a batch's rooms go in statements of this many and one of
/// the rest, so at most this many statement texts are prepared and cached.
const ROOMS_PER_STATEMENT: usize = 64;

/// The statement texts, by backend and row count, built once.
fn upsert_rooms_text(backend: &str, rows: usize) -> &'static str {
    use std::sync::OnceLock;
    static NUMBERED: OnceLock<Vec<String>> = OnceLock::new();
    static ANONYMOUS: OnceLock<Vec<String>> = OnceLock::new();
    let (cell, numbered) = if backend == "postgres" { (&NUMBERED, true) } else { (&ANONYMOUS, false) };
    let texts = cell.get_or_init(|| (0..=ROOMS_PER_STATEMENT).map(|n| upsert_rooms_sql(n, numbered)).collect());
    &texts[rows.clamp(1, ROOMS_PER_STATEMENT)]
}

/// History is trimmed on every this-many-th state of a device (so a device keeps at most
/// `keep + TRIM_EVERY - 1` entries), which keeps the common write to two statements.
const TRIM_EVERY: u64 = 8;

async fn write_batch(conn: &mut sqlx::AnyConnection, backend: &str, jobs: &[WriteJob]) -> Result<(), sqlx::Error> {
    // Only the last write of a room or device in a batch needs its row written (each carries
    // the whole row); every device state still gets its own history entry.
    let mut rooms: Vec<(&RoomRecord, Millis)> = Vec::new();
    let mut room_at: HashMap<&str, usize> = HashMap::new();
    let mut last_device: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        match &job.write {
            Write::Room { record, now } => match room_at.get(record.code.as_str()) {
                Some(&k) => rooms[k] = (record, *now),
                None => {
                    room_at.insert(&record.code, rooms.len());
                    rooms.push((record, *now));
                }
            },
            Write::DeviceState { row, .. } => {
                last_device.insert((&row.tenant, &row.device_id), i);
            }
            Write::DeviceInfo { .. } => {}
        }
    }
    let only_rooms = jobs.iter().all(|j| matches!(j.write, Write::Room { .. }));
    // A single statement is atomic by itself: the common batch (room changes only, up to
    // `ROOMS_PER_STATEMENT` rooms) needs no BEGIN/COMMIT round trips.
    if only_rooms && rooms.len() <= ROOMS_PER_STATEMENT {
        return upsert_rooms(backend, &rooms).execute(&mut *conn).await.map(|_| ());
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for chunk in rooms.chunks(ROOMS_PER_STATEMENT) {
        upsert_rooms(backend, chunk).execute(&mut *tx).await?;
    }
    for (i, job) in jobs.iter().enumerate() {
        match &job.write {
            Write::Room { .. } => {}
            Write::DeviceInfo { row } => {
                devices::upsert_info(row).execute(&mut *tx).await?;
            }
            Write::DeviceState { row, keep, max_age_ms } => {
                if last_device.get(&(row.tenant.as_str(), row.device_id.as_str())) == Some(&i) {
                    devices::upsert(row).execute(&mut *tx).await?;
                }
                devices::insert_history(row).execute(&mut *tx).await?;
                if row.rev % TRIM_EVERY == 0 {
                    devices::trim_history(row, *keep, *max_age_ms).execute(&mut *tx).await?;
                }
            }
        }
    }
    tx.commit().await
}

/// A statement with its arguments bound, ready to run on the pool or in a transaction.
type Query = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>;

/// One statement writing `rooms` (at most `ROOMS_PER_STATEMENT`, each code once).
fn upsert_rooms(backend: &str, rooms: &[(&RoomRecord, Millis)]) -> Query {
    let mut q = sqlx::query(upsert_rooms_text(backend, rooms.len()));
    for (r, now) in rooms {
        let song_json = r.clock.song.as_ref().map(|s| serde_json::to_string(s).unwrap_or_default());
        q = q
            .bind(r.code.clone())
            .bind(r.name.clone())
            .bind(r.host.clone())
            .bind(r.clock.song.as_ref().map(|s| s.id.clone()))
            .bind(song_json)
            .bind(r.clock.position_ms)
            .bind(r.clock.server_time)
            .bind(r.clock.is_playing)
            .bind(r.clock.rate)
            .bind(r.clock.rev as i64)
            .bind(if r.closed { "closed" } else { "open" })
            .bind(serde_json::to_string(&r.queue).unwrap_or_else(|_| "[]".into()))
            .bind(r.next_item as i64)
            .bind(serde_json::to_string(&r.settings).unwrap_or_else(|_| "{}".into()))
            .bind(r.created_at)
            .bind(*now)
            .bind(r.tenant.clone());
    }
    q
}

async fn writer_loop(
    pool: AnyPool,
    backend: &'static str,
    mut rx: mpsc::Receiver<WriteJob>,
    release: std::sync::Arc<tokio::sync::Notify>,
    commit_delay: Duration,
) {
    let mut batch: Vec<WriteJob> = Vec::with_capacity(MAX_BATCH);
    let drain = |rx: &mut mpsc::Receiver<WriteJob>, batch: &mut Vec<WriteJob>| {
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
    };
    let mut conn: Option<sqlx::pool::PoolConnection<sqlx::Any>> = None;
    loop {
        let first = tokio::select! {
            biased;
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
            _ = release.notified() => break,
        };
        batch.push(first);
        drain(&mut rx, &mut batch);
        // Group-commit window, only when few changes are waiting: under load the batch is
        // already large and waiting would only idle the writer.
        if batch.len() < SMALL_BATCH && !commit_delay.is_zero() {
            tokio::time::sleep(commit_delay).await;
            drain(&mut rx, &mut batch);
        }
        let started = std::time::Instant::now();
        // The writer keeps one connection: taking one from the pool per batch cost a ping
        // (sqlx's `test_before_acquire`), a round trip to SQLite's thread or PostgreSQL, per commit.
        // A failed batch drops it, so the next one starts on a fresh connection.
        if conn.is_none() {
            conn = pool.acquire().await.map_err(|e| tracing::error!(error = %e, "store: no connection")).ok();
        }
        let result = match conn.as_mut() {
            Some(c) => write_batch(c, backend, &batch).await,
            None => Err(sqlx::Error::PoolClosed),
        };
        if result.is_err() {
            conn = None;
        }
        crate::metrics::METRICS.store_write_seconds.observe(started.elapsed().as_secs_f64());
        crate::metrics::METRICS.store_batch_size.observe(batch.len() as f64);
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = batch.len(), "store write failed");
        }
        for job in batch.drain(..) {
            let _ = job.done.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
    }
}

fn record_from_row(row: &AnyRow) -> Result<RoomRecord, StoreError> {
    let code: String = row.try_get("code")?;
    let corrupt = |reason: String| StoreError::Corrupt { code: code.clone(), reason };
    let song: Option<String> = row.try_get("current_song")?;
    let song: Option<Song> = match song {
        Some(s) => Some(serde_json::from_str(&s).map_err(|e| corrupt(format!("song: {e}")))?),
        None => None,
    };
    let queue: String = row.try_get("queue")?;
    let queue: Vec<QueueItem> = serde_json::from_str(&queue).map_err(|e| corrupt(format!("queue: {e}")))?;
    let settings: String = row.try_get("settings")?;
    let settings: RoomSettings = serde_json::from_str(&settings).map_err(|e| corrupt(format!("settings: {e}")))?;
    let state: String = row.try_get("state")?;
    let rev: i64 = row.try_get("rev")?;
    let next_item: i64 = row.try_get("next_item")?;
    Ok(RoomRecord {
        code: code.clone(),
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        host: row.try_get("host")?,
        settings,
        queue,
        next_item: next_item.max(1) as u64,
        clock: PlaybackClock {
            song,
            position_ms: row.try_get("position_ms")?,
            server_time: row.try_get("anchor_time")?,
            is_playing: row.try_get::<i64, _>("is_playing")? != 0,
            rate: row.try_get("rate")?,
            rev: rev.max(0) as u64,
        },
        closed: state == "closed",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use unisono_core::{Room, room::RoomLimits};

    fn record(code: &str, rev: u64) -> RoomRecord {
        let mut r = Room::new(code.into(), "r", RoomSettings::default(), RoomLimits::default(), 1_000.0).record();
        r.clock.rev = rev;
        r
    }

    /// 150 rooms written twice each, all submitted before any commit: the batches hold more
    /// rooms than one statement takes (a transaction of several statements) and the same room
    /// twice (only its last write counts); what is read back is each room's last write.
    async fn many_rooms_in_one_batch(url: &str) {
        let store = Store::open(url, Duration::from_millis(20)).await.expect("open");
        let mut pending = Vec::new();
        for rev in [1, 2] {
            for i in 0..150 {
                let w = Write::Room { record: record(&format!("R{i:03}"), rev), now: 2_000.0 };
                pending.push(store.submit(w).await.expect("submit"));
            }
        }
        for p in pending {
            p.wait().await.expect("committed");
        }
        let mut rooms = store.load_open_rooms().await.expect("load");
        rooms.sort_by(|a, b| a.code.cmp(&b.code));
        assert_eq!(rooms.len(), 150);
        for (i, r) in rooms.iter().enumerate() {
            assert_eq!(r.code, format!("R{i:03}"));
            assert_eq!(r.clock.rev, 2, "{} holds its last write", r.code);
        }
        // A batch of one room: the single-statement path.
        store.save(record("R000", 3), 3_000.0).await.expect("save");
        let rooms = store.load_open_rooms().await.expect("load");
        assert_eq!(rooms.iter().find(|r| r.code == "R000").map(|r| r.clock.rev), Some(3));
    }

    #[tokio::test]
    async fn sqlite_writes_a_batch_of_many_rooms() {
        let dir = std::env::temp_dir().join(format!("unisono-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        many_rooms_in_one_batch(&format!("sqlite:{}", dir.join("db.sqlite").display())).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn postgres_writes_a_batch_of_many_rooms() {
        let admin = "postgres://postgres@127.0.0.1:5432/postgres";
        let name = format!("unisono_store_{}", std::process::id());
        let created = async {
            let pool = sqlx::PgPool::connect(admin).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&pool).await?;
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if let Err(e) = created {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "PostgreSQL is required under CI: {e}");
            eprintln!("SKIPPED postgres_writes_a_batch_of_many_rooms: PostgreSQL at 127.0.0.1:5432 unavailable ({e})");
            return;
        }
        many_rooms_in_one_batch(&format!("postgres://postgres@127.0.0.1:5432/{name}")).await;
    }
}
