//! Storage faults: the database going away under a running server. A PostgreSQL of the test's
//! own is crashed (`pg_ctl stop -m immediate`) while a room is being changed: requests during
//! the outage get `STORAGE_UNAVAILABLE` (nothing is acknowledged that is not committed), the
//! server reconnects by itself once the database is back, and every acknowledged change is in
//! the database.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use unisono_e2e::{Client, PgServer, Server, eventually, song, temp_dir};

/// Seeks until the store takes it again (`STORAGE_UNAVAILABLE` meanwhile); the acknowledged rev.
async fn seek_once_stored(host: &mut Client, position_ms: f64) -> Result<u64> {
    eventually("a write once the database answers again", Duration::from_secs(15), async || {
        match host.request("seek-playback", json!({ "positionMs": position_ms })).await? {
            Ok(r) => Ok(r["playback"]["rev"].as_u64()),
            Err(e) if e["code"] == "STORAGE_UNAVAILABLE" => Ok(None),
            Err(e) => anyhow::bail!("unexpected: {e}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_postgresql_crash_refuses_requests_then_heals_and_loses_nothing_acknowledged() -> Result<()> {
    let pg = PgServer::start()?;
    let s = Server::start_with(&pg.url(), &[], temp_dir("pgfault"))?;
    let mut host = Client::connect(&s).await?;
    let code =
        host.ok("create-room", json!({ "memberName": "host" })).await?["code"].as_str().unwrap_or_default().to_owned();
    host.ok("load-song", json!({ "song": song("s1", 3_600_000.0), "autoplay": true })).await?;
    let mut acked = Vec::new();
    for i in 0..5 {
        let r = host.ok("seek-playback", json!({ "positionMs": 1000.0 * f64::from(i) })).await?;
        acked.push(r["playback"]["rev"].as_u64().context("rev")?);
    }

    pg.crash()?;
    // During the outage: refused, quickly, with the storage error; nothing acknowledged.
    let started = Instant::now();
    let code_of = host.err_code("seek-playback", json!({ "positionMs": 99_000.0 })).await?;
    assert_eq!(code_of, "STORAGE_UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(5), "refused after {:?}", started.elapsed());
    // Reads that need no write still answer.
    let state = host.ok("get-playback-state", json!({})).await?;
    assert_eq!(state["playback"]["rev"].as_u64(), acked.last().copied(), "the refused seek changed nothing");

    pg.start_again()?;
    // The server reconnects by itself: a write works again within seconds.
    let rev = seek_once_stored(&mut host, 7_000.0).await?;
    acked.push(rev);
    // Everything acknowledged is stored: the room's row holds the last acknowledged rev.
    let rows = pg.query(&format!("SELECT rev, position_ms FROM rooms WHERE code = '{code}'"))?;
    let fields: Vec<&str> = rows.first().context("the room's row")?.split('|').collect();
    assert_eq!(fields[0].parse::<u64>()?, rev, "stored rev is the last acknowledged one");
    assert_eq!(fields[1].parse::<f64>()?, 7_000.0);
    assert!(acked.windows(2).all(|w| w[0] < w[1]), "acknowledged revs: {acked:?}");
    Ok(())
}

#[tokio::test]
async fn a_database_that_stops_answering_gets_storage_unavailable_within_the_write_bound() -> Result<()> {
    let pg = PgServer::start()?;
    let s = Server::start_with(&pg.url(), &[], temp_dir("pgstall"))?;
    let mut host = Client::connect(&s).await?;
    host.ok("create-room", json!({ "memberName": "host" })).await?;
    let before = host.ok("load-song", json!({ "song": song("s1", 3_600_000.0), "autoplay": true })).await?;
    let before = before["playback"]["rev"].as_u64().context("rev")?;
    pg.signal_all("STOP")?;
    let _resume = Resumed(&pg);
    // The write hangs on its connection; it fails at the store's 4 s bound, not never.
    let started = Instant::now();
    let mut other = Client::connect(&s).await?;
    let refused = host.request("seek-playback", json!({ "positionMs": 5_000.0 })).await;
    let elapsed = started.elapsed();
    match refused {
        Ok(Err(e)) => assert_eq!(e["code"], "STORAGE_UNAVAILABLE", "{e}"),
        other => anyhow::bail!("expected STORAGE_UNAVAILABLE, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "refused after {elapsed:?}");
    // Meanwhile the server answers what needs no write.
    other.ok("time-sync", json!({ "t0": 1.0 })).await?;
    pg.signal_all("CONT")?;
    let rev = seek_once_stored(&mut host, 6_000.0).await?;
    assert!(rev > before);
    Ok(())
}

/// Resumes a paused database when dropped (also when the test fails).
struct Resumed<'a>(&'a PgServer);

impl Drop for Resumed<'_> {
    fn drop(&mut self) {
        let _ = self.0.signal_all("CONT");
    }
}
