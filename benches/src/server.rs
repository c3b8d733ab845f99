//! The servers under test: either `unisono serve` processes this run starts (release binary,
//! limits raised for benchmarks; one node on a fresh SQLite file, or with `--postgres` on a
//! fresh PostgreSQL database; `--nodes N` of them as a cluster over Redis and a fresh
//! PostgreSQL database, with a key prefix of the run's own) or a server already running at
//! `--url` (optionally with `--server-pid` so memory and CPU can still be read).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::{Target, sys::CpuMeter};

/// Flags that lift the per-connection, per-room and per-tenant limits out of the way of a
/// benchmark (every benchmark client is the anonymous tenant's).
pub const BENCH_FLAGS: &[&str] = &[
    "--max-members",
    "20000",
    "--frames-per-sec",
    "100000",
    "--joins-per-min",
    "1000000",
    "--session-queue",
    "1024",
    "--max-rooms-per-tenant",
    "100000",
];

/// The JWT secret of the servers a run starts (the cluster's nodes share it; the query probe
/// mints an admin token with it).
pub const BENCH_SECRET: &str = "unisono-bench-secret-0123456789abcdef";

/// The servers to run a scenario against.
pub struct Server {
    /// `ws://ADDR/ws` of the first node.
    pub ws_url: String,
    /// Every node's `ws://ADDR/ws`.
    pub ws_urls: Vec<String>,
    /// The first node's process, when known (needed for memory and CPU figures).
    pub pid: Option<u32>,
    /// Every node's process.
    pub pids: Vec<u32>,
    /// The cluster's Redis and key prefix (`--nodes` above 1).
    pub redis: Option<(String, String)>,
    children: Vec<Child>,
    dir: Option<PathBuf>,
    /// The PostgreSQL server and database this run created (dropped at the end).
    database: Option<(String, String)>,
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

impl Server {
    /// Starts fresh servers, or describes the one at `--url`.
    pub fn start(target: &Target) -> Result<Server> {
        if let Some(url) = &target.url {
            return Ok(Server {
                ws_url: url.clone(),
                ws_urls: vec![url.clone()],
                pid: target.server_pid,
                pids: target.server_pid.into_iter().collect(),
                redis: None,
                children: Vec::new(),
                dir: None,
                database: None,
            });
        }
        Server::spawn(target)
    }

    fn spawn(target: &Target) -> Result<Server> {
        let bin = &target.server_bin;
        if !bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p unisono-server` \
                 (`cargo xtask bench` does), pass --server-bin, or use --url",
                bin.display()
            );
        }
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}_{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("unisono-bench-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut server = Server {
            ws_url: String::new(),
            ws_urls: Vec::new(),
            pid: None,
            pids: Vec::new(),
            redis: None,
            children: Vec::new(),
            dir: Some(dir.clone()),
            database: None,
        };
        let nodes = target.nodes.max(1);
        let db = if nodes > 1 || target.postgres {
            let name = format!("unisono_bench_{tag}");
            psql(&target.pg_url, &format!("CREATE DATABASE {name}"))?;
            server.database = Some((target.pg_url.clone(), name.clone()));
            format!("{}/{name}", target.pg_url.trim_end_matches('/'))
        } else {
            format!("sqlite:{}", dir.join("unisono.db").display())
        };
        if nodes > 1 {
            server.redis = Some((target.redis_url.clone(), format!("unisono-bench-{tag}")));
        }
        for i in 0..nodes {
            let mut args: Vec<String> =
                vec!["--node-id".into(), format!("bench-{i}"), "--jwt-secret".into(), BENCH_SECRET.into()];
            if let Some((url, prefix)) = &server.redis {
                args.extend(["--redis-url".into(), url.clone(), "--redis-prefix".into(), prefix.clone()]);
            }
            let (child, addr) = spawn_one(bin, &db, &dir.join(format!("node-{i}")), &args)?;
            server.pids.push(child.id());
            server.children.push(child);
            server.ws_urls.push(format!("ws://{addr}/ws"));
        }
        server.ws_url = server.ws_urls[0].clone();
        server.pid = server.pids.first().copied();
        Ok(server)
    }

    /// Every node's URL, comma-separated (what the workers take).
    pub fn urls(&self) -> String {
        self.ws_urls.join(",")
    }

    /// The pid, or an error explaining how to get figures from an external server.
    pub fn require_pid(&self, what: &str) -> Result<u32> {
        self.pid.with_context(|| format!("{what} needs the server's process: pass --server-pid with --url"))
    }

    /// Measures the CPU time of every node, when their processes are known.
    pub fn cpu(&self) -> Result<Option<CpuMeter>> {
        if self.pids.is_empty() {
            return Ok(None);
        }
        CpuMeter::start_all(&self.pids).map(Some)
    }

    /// The nodes' resident memory together, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        (!self.pids.is_empty()).then(|| self.pids.iter().filter_map(|p| crate::sys::rss_kib(*p).ok()).sum())
    }

    /// Fails if a spawned node has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for c in &mut self.children {
            if let Some(status) = c.try_wait()? {
                bail!("a server exited during the run ({status})");
            }
        }
        Ok(())
    }
}

/// Starts one `unisono serve` on `db`; its process and the address it printed.
fn spawn_one(bin: &Path, db: &str, dir: &Path, extra: &[String]) -> Result<(Child, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut child = Command::new(bin)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--database-url", db])
        .arg("--data-dir")
        .arg(dir)
        .arg("--web-dir")
        .arg(dir.join("no-web"))
        .args(BENCH_FLAGS)
        .args(extra)
        .env("UNISONO_LOG", std::env::var("UNISONO_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps reading so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("unisono listening on http://") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => Ok((child, addr)),
        Err(_) => {
            let _ = child.kill();
            Err(anyhow!("the server did not print `unisono listening on http://…` within 30 s"))
        }
    }
}

/// Runs one statement on the `postgres` database of the server at `pg_url`.
fn psql(pg_url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .arg(format!("{}/postgres", pg_url.trim_end_matches('/')))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .context("running psql (needed for --postgres and clusters)")?;
    if !out.status.success() {
        bail!("psql -c {sql:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// `INFO` field `field` of the Redis at `url` (`redis-cli`).
pub fn redis_info(url: &str, field: &str) -> Result<u64> {
    let out = Command::new("redis-cli").args(["-u", url, "INFO"]).output().context("running redis-cli")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {field} in Redis INFO"))
}

/// Calls per command of the Redis at `url` (`INFO commandstats`).
pub fn redis_commandstats(url: &str) -> Result<std::collections::BTreeMap<String, u64>> {
    let out =
        Command::new("redis-cli").args(["-u", url, "INFO", "commandstats"]).output().context("running redis-cli")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect())
}

impl Drop for Server {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some((url, prefix)) = self.redis.take() {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("redis-cli -u '{url}' --scan --pattern '{prefix}:*' | xargs -r redis-cli -u '{url}' DEL"))
                .stdout(Stdio::null())
                .status();
        }
        if let Some((pg, db)) = self.database.take()
            && let Err(e) = psql(&pg, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        {
            eprintln!("could not drop the benchmark database {db}: {e:#}");
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
