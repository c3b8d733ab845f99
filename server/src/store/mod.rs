//! Durable room storage: SQLite by default, PostgreSQL by URL, one schema (`migrations/`).
//!
//! Every accepted change is written before it is acknowledged or broadcast (the room actor
//! awaits [`Store::save`]). Positions are derived from the stored anchor, so nothing is written
//! while time passes. Writes go through one writer task that batches whatever is waiting into a
//! single transaction (group commit), after a short window (`--commit-delay-ms`, default 2 ms)
//! that lets concurrent changes share one commit and one fsync: in the 2,000-room benchmark it
//! halved the server's CPU per change for +5 ms p99.
//!
//! Rooms are owned (`owner`, `epoch`: the ownership record, `migrations/0003_room_owner.sql`).
//! A code is taken by a plain insert, so two nodes can never create the same room; a write
//! carries the [`Lease`] it was made under and is refused ([`StoreError::Fenced`]) when the
//! row's owner or epoch has moved on. A node restores the rooms it owns ([`Store::claim_rooms`]).

mod devices;
mod postgres;
mod sqlite;

pub(crate) use devices::DeviceRow;
pub use devices::{HistoryEntry, Snapshot};

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use sqlx::{AnyPool, Row, any::AnyRow};
use tokio::sync::{mpsc, oneshot};
use unisono_core::{
    Millis, PlaybackClock,
    protocol::{QueueItem, RoomSettings},
    room::RoomRecord,
    song::Song,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row {code} is corrupt: {reason}")]
    Corrupt { code: String, reason: String },
    #[error("the store is shut down")]
    Closed,
    #[error("unsupported database URL {0:?} (use sqlite:PATH or postgres://…)")]
    UnsupportedUrl(String),
    /// The batch this write was committed with failed (every write in it failed).
    #[error("database error: {0}")]
    Batch(Arc<sqlx::Error>),
    /// The room is owned by another node, or under a newer epoch: this write was refused.
    #[error("room {code} is no longer owned by this node under epoch {epoch}")]
    Fenced { code: String, epoch: u64 },
    /// A room code is already taken (creation retries with another code).
    #[error("room code {0} is taken")]
    CodeTaken(String),
    /// A value could not be serialized for storage (a bug; nothing was written).
    #[error("encoding {what} for storage: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The right to write a room: its owner node and the epoch it holds ([`Store::create_room`],
/// [`Store::claim_rooms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: Arc<str>,
    pub epoch: u64,
}

/// JSON text of a value about to be stored.
pub(crate) fn encode(what: &'static str, v: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|source| StoreError::Encode { what, source })
}

/// Most records written in one transaction.
const MAX_BATCH: usize = 512;
/// Below this many waiting changes, the writer waits the commit delay for more.
const SMALL_BATCH: usize = 16;

/// One durable write, committed by the writer task together with whatever else is waiting.
pub(crate) enum Write {
    Room(Box<RoomRow>),
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

/// A room as the writer binds it: its record, the lease it was written under, and its JSON
/// columns already encoded (so an encoding failure is the submitter's error, never a silently
/// empty column).
pub(crate) struct RoomRow {
    record: RoomRecord,
    lease: Lease,
    now: Millis,
    song: Option<String>,
    queue: String,
    settings: String,
}

impl RoomRow {
    fn new(record: RoomRecord, lease: Lease, now: Millis) -> Result<RoomRow, StoreError> {
        Ok(RoomRow {
            song: record.clock.song.as_ref().map(|s| encode("a song", s)).transpose()?,
            queue: encode("a queue", &record.queue)?,
            settings: encode("room settings", &record.settings)?,
            record,
            lease,
            now,
        })
    }
}

struct WriteJob {
    write: Write,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// A submitted write; [`Committed::wait`] resolves once it is committed.
pub struct Committed(oneshot::Receiver<Result<(), StoreError>>);

impl Committed {
    pub async fn wait(self) -> Result<(), StoreError> {
        self.await
    }
}

/// Awaiting a `Committed` (also through `&mut`, it is `Unpin`) waits for its commit.
impl std::future::Future for Committed {
    type Output = Result<(), StoreError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    writer: mpsc::Sender<WriteJob>,
    /// Tells the writer to let go of its connection (shutdown: the pool waits for it).
    release: std::sync::Arc<tokio::sync::Notify>,
    /// The writer task, awaited at shutdown.
    writer_task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
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
        let task = tokio::spawn(writer_loop(pool.clone(), backend, rx, release.clone(), commit_delay));
        Ok(Store { pool, writer: tx, release, writer_task: Arc::new(std::sync::Mutex::new(Some(task))), backend })
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

    /// Durably writes a room under `lease`; returns once it is committed. A stale lease gets
    /// [`StoreError::Fenced`] and writes nothing.
    pub async fn save(&self, record: RoomRecord, lease: &Lease, now: Millis) -> Result<(), StoreError> {
        let row = RoomRow::new(record, lease.clone(), now)?;
        self.submit(Write::Room(Box::new(row))).await?.wait().await
    }

    /// Takes a new room's code by inserting its row, owned by `owner` under epoch 1: a code
    /// already in the table (open or closed, any node's) is [`StoreError::CodeTaken`].
    pub async fn create_room(&self, record: &RoomRecord, owner: &Arc<str>, now: Millis) -> Result<Lease, StoreError> {
        let lease = Lease { owner: owner.clone(), epoch: 1 };
        let row = RoomRow::new(record.clone(), lease.clone(), now)?;
        let sql = insert_room_sql(self.backend == "postgres");
        match bind_room(sqlx::query(sql), &row).execute(&self.pool).await {
            Ok(_) => Ok(lease),
            Err(e) if is_unique_violation(&e) => Err(StoreError::CodeTaken(record.code.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// The open rooms `owner` restores at start: those it owns and those nobody owns (stored
    /// before ownership existed), claimed under a new epoch each, so that no earlier writer of
    /// them (a previous run of this node) can write them again.
    pub async fn claim_rooms(&self, owner: &Arc<str>) -> Result<Vec<(RoomRecord, Lease)>, StoreError> {
        let claimed = sqlx::query(
            "UPDATE rooms SET owner = $1, epoch = epoch + 1 WHERE state = 'open' AND (owner = $2 OR owner IS NULL)",
        )
        .bind(owner.to_string())
        .bind(owner.to_string())
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(&format!("{SELECT_ROOM} WHERE state = 'open' AND owner = $1"))
            .bind(owner.to_string())
            .fetch_all(&self.pool)
            .await?;
        tracing::debug!(claimed = claimed.rows_affected(), "rooms claimed");
        rows.iter()
            .map(|r| {
                let epoch: i64 = r.try_get("epoch")?;
                Ok((record_from_row(r)?, Lease { owner: owner.clone(), epoch: epoch.max(0) as u64 }))
            })
            .collect()
    }

    /// Claims open room `code` for `owner` under a new epoch (a cluster node taking over a room
    /// whose owner is gone; the directory's lease says it may). `None` if no such open room.
    pub async fn claim_room(&self, code: &str, owner: &Arc<str>) -> Result<Option<(RoomRecord, Lease)>, StoreError> {
        let claimed = sqlx::query("UPDATE rooms SET owner = $1, epoch = epoch + 1 WHERE code = $2 AND state = 'open'")
            .bind(owner.to_string())
            .bind(code.to_owned())
            .execute(&self.pool)
            .await?;
        if claimed.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query(&format!("{SELECT_ROOM} WHERE code = $1 AND owner = $2 AND state = 'open'"))
            .bind(code.to_owned())
            .bind(owner.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let epoch: i64 = r.try_get("epoch")?;
        Ok(Some((record_from_row(&r)?, Lease { owner: owner.clone(), epoch: epoch.max(0) as u64 })))
    }

    /// Every open room, whoever owns it (tests and tools).
    pub async fn load_open_rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT_ROOM} WHERE state = 'open'")).fetch_all(&self.pool).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// How many open rooms `tenant` has, on every node (a cluster's per-tenant room limit).
    pub async fn open_rooms_of(&self, tenant: &str) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rooms WHERE tenant = $1 AND state = 'open'")
            .bind(tenant.to_owned())
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as usize)
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
        let task = self.writer_task.lock().ok().and_then(|mut t| t.take());
        // A writer stuck on an unreachable database does not hold up the exit for long.
        if let Some(task) = task
            && tokio::time::timeout(Duration::from_secs(5), task).await.is_err()
        {
            tracing::warn!("the store writer did not finish within 5 s of shutdown");
        }
        self.pool.close().await;
    }
}

/// A room row's columns as [`record_from_row`] reads them. `is_playing` is read as an integer:
/// the Any driver cannot decode SQLite's BOOLEAN.
const SELECT_ROOM: &str = "SELECT code, tenant, name, host, current_song, position_ms, anchor_time, \
    CAST(CASE WHEN is_playing THEN 1 ELSE 0 END AS BIGINT) AS is_playing, rate, rev, \
    state, queue, next_item, settings, created_at, epoch FROM rooms";

/// Columns of a room row, in bind order.
const ROOM_COLUMNS: usize = 19;

const ROOM_INSERT_HEAD: &str = "INSERT INTO rooms (code, name, host, current_song_id, current_song, position_ms, \
    anchor_time, is_playing, rate, rev, state, queue, next_item, settings, created_at, updated_at, tenant, owner, \
    epoch) VALUES ";

/// One row's placeholders, `($1, …)` or `(?, …)`, starting after `first` parameters.
fn placeholders(sql: &mut String, first: usize, numbered: bool) {
    sql.push('(');
    for c in 0..ROOM_COLUMNS {
        if c > 0 {
            sql.push_str(", ");
        }
        if numbered {
            sql.push_str(&format!("${}", first + c + 1));
        } else {
            sql.push('?');
        }
    }
    sql.push(')');
}

/// A plain insert of one room (creation: a taken code is a unique violation).
fn insert_room_sql(numbered: bool) -> &'static str {
    use std::sync::OnceLock;
    static NUMBERED: OnceLock<String> = OnceLock::new();
    static ANONYMOUS: OnceLock<String> = OnceLock::new();
    let cell = if numbered { &NUMBERED } else { &ANONYMOUS };
    cell.get_or_init(|| {
        let mut sql = String::from(ROOM_INSERT_HEAD);
        placeholders(&mut sql, 0, numbered);
        sql
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// `INSERT … VALUES (…), (…) … ON CONFLICT (code) DO UPDATE … WHERE owner and epoch match` for
/// `rows` rooms: one statement writes a whole batch's rooms (each room once), so a commit costs
/// one round trip to the database whatever the batch size. A room whose row has another owner
/// or epoch is left as it is (that write is fenced) and not counted in the rows affected: when
/// every row counts, every room was written, with no rows to read back ([`written_rooms`]).
///
/// Parameters are `$1, $2, …` for PostgreSQL and anonymous `?` for SQLite: sqlx binds a named
/// SQLite parameter by asking SQLite its name, a linear search, which made binding a 64-room
/// statement quadratic (21 % of server CPU in the unpaced `rooms` benchmark).
fn upsert_rooms_sql(rows: usize, numbered: bool) -> String {
    let mut sql = String::from(ROOM_INSERT_HEAD);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        placeholders(&mut sql, r * ROOM_COLUMNS, numbered);
    }
    sql.push_str(
        " ON CONFLICT (code) DO UPDATE SET name = excluded.name, tenant = excluded.tenant, host = excluded.host, \
         current_song_id = excluded.current_song_id, current_song = excluded.current_song, \
         position_ms = excluded.position_ms, anchor_time = excluded.anchor_time, \
         is_playing = excluded.is_playing, rate = excluded.rate, rev = excluded.rev, \
         state = excluded.state, queue = excluded.queue, next_item = excluded.next_item, \
         settings = excluded.settings, created_at = excluded.created_at, updated_at = excluded.updated_at \
         WHERE rooms.owner = excluded.owner AND rooms.epoch = excluded.epoch",
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

/// Writes one batch in one commit; returns the codes of the rooms written (a room missing from
/// it was fenced: its row has another owner or epoch).
async fn write_batch(
    conn: &mut sqlx::AnyConnection,
    backend: &str,
    jobs: &[WriteJob],
) -> Result<HashSet<String>, sqlx::Error> {
    // Only the last write of a room or device in a batch needs its row written (each carries
    // the whole row); every device state still gets its own history entry.
    let mut rooms: Vec<&RoomRow> = Vec::new();
    let mut room_at: HashMap<&str, usize> = HashMap::new();
    let mut last_device: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        match &job.write {
            Write::Room(row) => match room_at.get(row.record.code.as_str()) {
                Some(&k) => rooms[k] = row,
                None => {
                    room_at.insert(&row.record.code, rooms.len());
                    rooms.push(row);
                }
            },
            Write::DeviceState { row, .. } => {
                last_device.insert((&row.tenant, &row.device_id), i);
            }
            Write::DeviceInfo { .. } => {}
        }
    }
    let mut written = HashSet::with_capacity(rooms.len());
    let only_rooms = jobs.iter().all(|j| matches!(j.write, Write::Room(_)));
    // A single statement is atomic by itself: the common batch (room changes only, up to
    // `ROOMS_PER_STATEMENT` rooms) needs no BEGIN/COMMIT round trips.
    if only_rooms && rooms.len() <= ROOMS_PER_STATEMENT {
        let affected = upsert_rooms(backend, &rooms).execute(&mut *conn).await?.rows_affected();
        written_rooms(&mut *conn, backend, &rooms, affected, &mut written).await?;
        return Ok(written);
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for chunk in rooms.chunks(ROOMS_PER_STATEMENT) {
        let affected = upsert_rooms(backend, chunk).execute(&mut *tx).await?.rows_affected();
        written_rooms(&mut tx, backend, chunk, affected, &mut written).await?;
    }
    for (i, job) in jobs.iter().enumerate() {
        match &job.write {
            Write::Room(_) => {}
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
    tx.commit().await?;
    Ok(written)
}

/// Adds to `written` the codes of `rooms` that an upsert affecting `affected` rows wrote: all of
/// them when every row counts (the common case, nothing read); else those whose row has their
/// writer's owner and epoch now (the rest were fenced).
async fn written_rooms(
    conn: &mut sqlx::AnyConnection,
    backend: &str,
    rooms: &[&RoomRow],
    affected: u64,
    written: &mut HashSet<String>,
) -> Result<(), sqlx::Error> {
    if affected as usize == rooms.len() {
        written.extend(rooms.iter().map(|r| r.record.code.clone()));
        return Ok(());
    }
    let sql = if backend == "postgres" {
        "SELECT owner, epoch FROM rooms WHERE code = $1"
    } else {
        "SELECT owner, epoch FROM rooms WHERE code = ?"
    };
    for r in rooms {
        let row = sqlx::query(sql).bind(r.record.code.clone()).fetch_optional(&mut *conn).await?;
        let Some(row) = row else { continue };
        let (owner, epoch): (Option<String>, i64) = (row.try_get("owner")?, row.try_get("epoch")?);
        if owner.as_deref() == Some(&*r.lease.owner) && epoch == r.lease.epoch as i64 {
            written.insert(r.record.code.clone());
        }
    }
    Ok(())
}

/// A statement with its arguments bound, ready to run on the pool or in a transaction.
type Query = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>;

/// One statement writing `rooms` (at most `ROOMS_PER_STATEMENT`, each code once).
fn upsert_rooms(backend: &str, rooms: &[&RoomRow]) -> Query {
    let mut q = sqlx::query(upsert_rooms_text(backend, rooms.len()));
    for r in rooms {
        q = bind_room(q, r);
    }
    q
}

/// Binds one room row's columns, in [`ROOM_INSERT_HEAD`]'s order.
fn bind_room(q: Query, row: &RoomRow) -> Query {
    let r = &row.record;
    q.bind(r.code.clone())
        .bind(r.name.clone())
        .bind(r.host.clone())
        .bind(r.clock.song.as_ref().map(|s| s.id.clone()))
        .bind(row.song.clone())
        .bind(r.clock.position_ms)
        .bind(r.clock.server_time)
        .bind(r.clock.is_playing)
        .bind(r.clock.rate)
        .bind(r.clock.rev as i64)
        .bind(if r.closed { "closed" } else { "open" })
        .bind(row.queue.clone())
        .bind(r.next_item as i64)
        .bind(row.settings.clone())
        .bind(r.created_at)
        .bind(row.now)
        .bind(r.tenant.clone())
        .bind(row.lease.owner.to_string())
        .bind(row.lease.epoch as i64)
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
            // A database that stops answering (a partition, a stalled disk) must not hold every
            // writer behind it forever: past the bound the batch fails and its connection is
            // dropped. Its commit may still land later; nobody was told it did, and the next
            // write of the room stores the room's whole state again.
            Some(c) => match tokio::time::timeout(WRITE_TIMEOUT, write_batch(c, backend, &batch)).await {
                Ok(r) => r,
                Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the commit took over {} s", WRITE_TIMEOUT.as_secs()),
                ))),
            },
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
        let result = result.map_err(Arc::new);
        for job in batch.drain(..) {
            let outcome = match (&result, &job.write) {
                (Err(e), _) => Err(StoreError::Batch(e.clone())),
                (Ok(written), Write::Room(row)) if !written.contains(&row.record.code) => {
                    Err(StoreError::Fenced { code: row.record.code.clone(), epoch: row.lease.epoch })
                }
                (Ok(_), _) => Ok(()),
            };
            let _ = job.done.send(outcome);
        }
    }
}

/// Longest a batch's commit may take before it counts as failed (`STORAGE_UNAVAILABLE`).
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

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
    use unisono_core::{Room, protocol::RoomSettings, room::RoomLimits};

    fn record(code: &str, rev: u64) -> RoomRecord {
        let mut r = Room::new(code.into(), "r", RoomSettings::default(), RoomLimits::default(), 1_000.0).record();
        r.clock.rev = rev;
        r
    }

    fn node(name: &str) -> Arc<str> {
        name.into()
    }

    /// 150 rooms written twice each, all submitted before any commit: the batches hold more
    /// rooms than one statement takes (a transaction of several statements) and the same room
    /// twice (only its last write counts); what is read back is each room's last write.
    async fn many_rooms_in_one_batch(store: &Store) {
        let mut leases = Vec::new();
        for i in 0..150 {
            leases.push(store.create_room(&record(&format!("R{i:03}"), 0), &node("a"), 1_000.0).await.expect("create"));
        }
        let mut pending = Vec::new();
        for rev in [1, 2] {
            for (i, lease) in leases.iter().enumerate() {
                let row = RoomRow::new(record(&format!("R{i:03}"), rev), lease.clone(), 2_000.0).expect("encode");
                pending.push(store.submit(Write::Room(Box::new(row))).await.expect("submit"));
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
        store.save(record("R000", 3), &leases[0], 3_000.0).await.expect("save");
        let rooms = store.load_open_rooms().await.expect("load");
        assert_eq!(rooms.iter().find(|r| r.code == "R000").map(|r| r.clock.rev), Some(3));
    }

    /// Codes are unique by insert; a node claims its own and unowned rooms under a new epoch;
    /// a write under a stale lease is refused and changes nothing, while the batch's other
    /// rooms are written.
    async fn ownership_and_fencing(store: &Store) {
        let a = store.create_room(&record("OWN001", 0), &node("a"), 1.0).await.expect("create");
        assert_eq!(a.epoch, 1);
        let taken = store.create_room(&record("OWN001", 0), &node("b"), 2.0).await;
        assert!(matches!(&taken, Err(StoreError::CodeTaken(c)) if c == "OWN001"), "{taken:?}");
        let b_room = store.create_room(&record("OWN002", 0), &node("b"), 2.0).await.expect("create");
        // Node a restarts: it claims its room (epoch 2), not b's.
        let claimed = store.claim_rooms(&node("a")).await.expect("claim");
        let mine: Vec<(&str, u64)> = claimed.iter().map(|(r, l)| (r.code.as_str(), l.epoch)).collect();
        assert_eq!(mine, [("OWN001", 2)]);
        // The old lease (epoch 1) is fenced, together with another room written in the same batch.
        let stale =
            store.submit(Write::Room(Box::new(RoomRow::new(record("OWN001", 9), a.clone(), 3.0).expect("row"))));
        let other =
            store.submit(Write::Room(Box::new(RoomRow::new(record("OWN002", 5), b_room.clone(), 3.0).expect("row"))));
        let (stale, other) = (stale.await.expect("submit"), other.await.expect("submit"));
        assert!(matches!(stale.wait().await, Err(StoreError::Fenced { epoch: 1, .. })));
        other.wait().await.expect("b's own room is written");
        let rooms = store.load_open_rooms().await.expect("load");
        let rev = |code: &str| rooms.iter().find(|r| r.code == code).map(|r| r.clock.rev);
        assert_eq!((rev("OWN001"), rev("OWN002")), (Some(0), Some(5)));
        // The new lease writes.
        store.save(record("OWN001", 10), &claimed[0].1, 4.0).await.expect("new epoch writes");
        // Another node never writes a room it does not own.
        let foreign = Lease { owner: node("b"), epoch: 2 };
        assert!(matches!(store.save(record("OWN001", 11), &foreign, 5.0).await, Err(StoreError::Fenced { .. })));
    }

    fn sqlite_url(tag: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("unisono-store-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite:{}", dir.join("db.sqlite").display());
        (dir, url)
    }

    #[tokio::test]
    async fn sqlite_writes_a_batch_of_many_rooms() {
        let (dir, url) = sqlite_url("batch");
        many_rooms_in_one_batch(&Store::open(&url, Duration::from_millis(20)).await.expect("open")).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn sqlite_owns_and_fences_rooms() {
        let (dir, url) = sqlite_url("fence");
        ownership_and_fencing(&Store::open(&url, Duration::from_millis(5)).await.expect("open")).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at 127.0.0.1:5432 (cargo xtask test runs it)"]
    async fn postgres_writes_a_batch_of_many_rooms() {
        let db = crate::testing::PgDatabase::create("store_batch").await;
        many_rooms_in_one_batch(&Store::open(&db.url, Duration::from_millis(20)).await.expect("open")).await;
        db.drop().await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at 127.0.0.1:5432 (cargo xtask test runs it)"]
    async fn postgres_owns_and_fences_rooms() {
        let db = crate::testing::PgDatabase::create("store_fence").await;
        ownership_and_fencing(&Store::open(&db.url, Duration::from_millis(5)).await.expect("open")).await;
        db.drop().await;
    }
}
