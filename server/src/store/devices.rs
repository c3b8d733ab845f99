//! Durable devices: registry rows, the latest state, a bounded state history and snapshots.
//!
//! Device writes go through the same group-committing writer as rooms: a `player:state` is
//! acknowledged only after its row and history entry are committed, and history beyond the
//! configured length or age is trimmed every few states in the same transactions.

use serde_json::Value;
use sqlx::Row;
use unisono_core::{Millis, device::DeviceRecord};

use super::{Committed, Store, StoreError, Write, encode};

/// A device row as the writer binds it: the record of one tenant's device, its JSON columns
/// already encoded.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRow {
    pub tenant: String,
    pub device_id: String,
    name: String,
    info: String,
    state: String,
    pub rev: u64,
    last_seen: Millis,
}

impl DeviceRow {
    fn new(tenant: &str, d: &DeviceRecord) -> Result<DeviceRow, StoreError> {
        Ok(DeviceRow {
            tenant: tenant.to_owned(),
            device_id: d.device_id.clone(),
            name: d.name.clone(),
            info: encode("device info", &d.info)?,
            state: encode("a device state", &d.state)?,
            rev: d.rev,
            last_seen: d.last_seen,
        })
    }
}

/// One history entry.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub rev: u64,
    pub at: Millis,
    pub state: Value,
}

/// A stored snapshot image (gzip-compressed).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub device_id: String,
    pub at: Millis,
    pub mime: String,
    pub bytes: u64,
    pub gzip: Vec<u8>,
}

const UPSERT_DEVICE: &str = "INSERT INTO devices (tenant, device_id, name, info, state, rev, last_seen) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant, device_id) DO UPDATE SET \
    name = excluded.name, info = excluded.info, state = excluded.state, rev = excluded.rev, \
    last_seen = excluded.last_seen";

const UPSERT_DEVICE_INFO: &str = "INSERT INTO devices (tenant, device_id, name, info, state, rev, last_seen) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant, device_id) DO UPDATE SET \
    name = excluded.name, info = excluded.info, last_seen = excluded.last_seen";

use super::Query;

/// The registry row upsert, bound to `d`.
pub(super) fn upsert(d: &DeviceRow) -> Query {
    bind_row(UPSERT_DEVICE, d)
}

/// The registry fields upsert (state and rev only for a new row).
pub(super) fn upsert_info(d: &DeviceRow) -> Query {
    bind_row(UPSERT_DEVICE_INFO, d)
}

/// `sql` (one of the device upserts) with the row's seven columns bound in table order.
fn bind_row(sql: &'static str, d: &DeviceRow) -> Query {
    sqlx::query(sql)
        .bind(d.tenant.clone())
        .bind(d.device_id.clone())
        .bind(d.name.clone())
        .bind(d.info.clone())
        .bind(d.state.clone())
        .bind(d.rev as i64)
        .bind(d.last_seen)
}

/// The history entry of `d`'s current state.
pub(super) fn insert_history(d: &DeviceRow) -> Query {
    sqlx::query("INSERT INTO device_history (tenant, device_id, rev, at, state) VALUES ($1, $2, $3, $4, $5)")
        .bind(d.tenant.clone())
        .bind(d.device_id.clone())
        .bind(d.rev as i64)
        .bind(d.last_seen)
        .bind(d.state.clone())
}

/// Drops `d`'s history beyond `keep` entries or older than `max_age_ms`.
pub(super) fn trim_history(d: &DeviceRow, keep: usize, max_age_ms: f64) -> Query {
    sqlx::query("DELETE FROM device_history WHERE tenant = $1 AND device_id = $2 AND (rev <= $3 OR at < $4)")
        .bind(d.tenant.clone())
        .bind(d.device_id.clone())
        .bind(d.rev as i64 - keep as i64)
        .bind(d.last_seen - max_age_ms)
}

/// Reads a stored JSON column; a value that does not parse is a corrupt row, not `null`.
fn decode(what: &str, id: &str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { code: id.to_owned(), reason: format!("{what}: {e}") })
}

impl Store {
    /// Queues a write of a device's registry fields (register, presence changes; a new device's
    /// row is created with the state and rev given). Await the returned [`Committed`].
    pub async fn submit_device_info(&self, tenant: &str, d: &DeviceRecord) -> Result<Committed, StoreError> {
        self.submit(Write::DeviceInfo { row: DeviceRow::new(tenant, d)? }).await
    }

    /// Queues a new state with its history entry (history beyond `keep` entries or older than
    /// `max_age_ms` is trimmed as it goes). Group-committed with other writes, in submission
    /// order; await the returned [`Committed`] before acknowledging.
    pub async fn submit_device_state(
        &self,
        tenant: &str,
        d: &DeviceRecord,
        keep: usize,
        max_age_ms: f64,
    ) -> Result<Committed, StoreError> {
        self.submit(Write::DeviceState { row: DeviceRow::new(tenant, d)?, keep, max_age_ms }).await
    }

    /// Every device of every tenant, as (tenant, record) (start-up).
    pub async fn load_devices(&self) -> Result<Vec<(String, DeviceRecord)>, StoreError> {
        let rows = sqlx::query("SELECT tenant, device_id, name, info, state, rev, last_seen FROM devices")
            .fetch_all(self.pool())
            .await?;
        Self::device_records(&rows)
    }

    /// Every device of one tenant (a cluster node taking that tenant's hub).
    pub async fn load_devices_of(&self, tenant: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT tenant, device_id, name, info, state, rev, last_seen FROM devices WHERE tenant = $1")
                .bind(tenant.to_owned())
                .fetch_all(self.pool())
                .await?;
        Ok(Self::device_records(&rows)?.into_iter().map(|(_, r)| r).collect())
    }

    fn device_records(rows: &[sqlx::any::AnyRow]) -> Result<Vec<(String, DeviceRecord)>, StoreError> {
        rows.iter()
            .map(|r| {
                let info: String = r.try_get("info")?;
                let state: String = r.try_get("state")?;
                let rev: i64 = r.try_get("rev")?;
                let device_id: String = r.try_get("device_id")?;
                let record = DeviceRecord {
                    info: decode("info", &device_id, &info)?,
                    state: decode("state", &device_id, &state)?,
                    name: r.try_get("name")?,
                    rev: rev.max(0) as u64,
                    last_seen: r.try_get("last_seen")?,
                    device_id,
                };
                Ok((r.try_get("tenant")?, record))
            })
            .collect()
    }

    /// A device's history, newest first, at most `limit` entries.
    pub async fn device_history(
        &self,
        tenant: &str,
        device_id: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT rev, at, state FROM device_history WHERE tenant = $1 AND device_id = $2 \
             ORDER BY rev DESC LIMIT $3",
        )
        .bind(tenant.to_owned())
        .bind(device_id.to_owned())
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let rev: i64 = r.try_get("rev")?;
                let state: String = r.try_get("state")?;
                Ok(HistoryEntry {
                    rev: rev.max(0) as u64,
                    at: r.try_get("at")?,
                    state: decode("history state", device_id, &state)?,
                })
            })
            .collect()
    }

    /// Stores a snapshot image.
    pub async fn save_snapshot(&self, tenant: &str, s: &Snapshot) -> Result<(), StoreError> {
        use base64::Engine as _;
        sqlx::query(
            "INSERT INTO snapshots (id, tenant, device_id, at, mime, bytes, data) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(s.id.clone())
        .bind(tenant.to_owned())
        .bind(s.device_id.clone())
        .bind(s.at)
        .bind(s.mime.clone())
        .bind(s.bytes as i64)
        .bind(base64::engine::general_purpose::STANDARD.encode(&s.gzip))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The latest snapshot of a device, if any.
    pub async fn latest_snapshot(&self, tenant: &str, device_id: &str) -> Result<Option<Snapshot>, StoreError> {
        use base64::Engine as _;
        let row = sqlx::query(
            "SELECT id, at, mime, bytes, data FROM snapshots WHERE tenant = $1 AND device_id = $2 \
             ORDER BY at DESC LIMIT 1",
        )
        .bind(tenant.to_owned())
        .bind(device_id.to_owned())
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        let data: String = r.try_get("data")?;
        let bytes: i64 = r.try_get("bytes")?;
        Ok(Some(Snapshot {
            id: r.try_get("id")?,
            device_id: device_id.to_owned(),
            at: r.try_get("at")?,
            mime: r.try_get("mime")?,
            bytes: bytes.max(0) as u64,
            gzip: base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| StoreError::Corrupt { code: device_id.to_owned(), reason: format!("snapshot: {e}") })?,
        }))
    }
}
