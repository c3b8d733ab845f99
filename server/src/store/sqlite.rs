//! SQLite connection setup: WAL journal with `synchronous = FULL`, so a committed change
//! survives a crash of the process and of the machine.

use std::str::FromStr;

use sqlx::{AnyPool, any::AnyPoolOptions, sqlite::SqliteConnectOptions};

pub(super) async fn connect(url: &str) -> Result<AnyPool, sqlx::Error> {
    // Create the file (and its folder) on first start.
    let opts = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
    if let Some(dir) = opts.get_filename().parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
    }
    // A file the server may not write (a read-only mount, permissions) is refused now, with
    // the reason, not at the first write (SQLite's own message says only "unable to open").
    let path = opts.get_filename();
    if path.exists()
        && let Err(e) = std::fs::OpenOptions::new().write(true).open(path)
    {
        let msg =
            format!("{} cannot be written ({e}): the server needs a writable database (read-only?)", path.display());
        return Err(sqlx::Error::Io(std::io::Error::new(e.kind(), msg)));
    }
    // Open once through the native driver so the file exists with WAL enabled.
    {
        use sqlx::ConnectOptions;
        let mut conn = opts.clone().journal_mode(sqlx::sqlite::SqliteJournalMode::Wal).connect().await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
    }
    let url = if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") };
    AnyPoolOptions::new()
        // One writer at a time is what SQLite does anyway; readers are rare (start-up).
        .max_connections(2)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
}
