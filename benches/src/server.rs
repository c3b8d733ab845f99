//! The server under test: either a `unisono serve` process this run starts (release binary,
//! fresh SQLite file in a temp dir, limits raised for benchmarks) or a server already running
//! at `--url` (optionally with `--server-pid` so memory and CPU can still be read).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::Target;

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

/// A server to run a scenario against.
pub struct Server {
    /// `ws://ADDR/ws`.
    pub ws_url: String,
    /// The process, when known (needed for memory and CPU figures).
    pub pid: Option<u32>,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

impl Server {
    /// Starts a fresh server, or describes the one at `--url`.
    pub fn start(target: &Target) -> Result<Server> {
        if let Some(url) = &target.url {
            return Ok(Server { ws_url: url.clone(), pid: target.server_pid, child: None, dir: None });
        }
        Server::spawn(&target.server_bin)
    }

    fn spawn(bin: &Path) -> Result<Server> {
        if !bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p unisono-server` \
                 (`cargo xtask bench` does), pass --server-bin, or use --url",
                bin.display()
            );
        }
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("unisono-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let db = format!("sqlite:{}", dir.join("unisono.db").display());
        let mut child = Command::new(bin)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--database-url", &db])
            .arg("--web-dir")
            .arg(dir.join("no-web"))
            .args(BENCH_FLAGS)
            .env("UNISONO_LOG", std::env::var("UNISONO_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let pid = child.id();
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
        let mut server = Server { ws_url: String::new(), pid: Some(pid), child: Some(child), dir: Some(dir) };
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow!("the server did not print `unisono listening on http://…` within 30 s"))?;
        server.ws_url = format!("ws://{addr}/ws");
        Ok(server)
    }

    /// The pid, or an error explaining how to get figures from an external server.
    pub fn require_pid(&self, what: &str) -> Result<u32> {
        self.pid.with_context(|| format!("{what} needs the server's process: pass --server-pid with --url"))
    }

    /// Fails if the spawned server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = &mut self.child
            && let Some(status) = c.try_wait()?
        {
            bail!("the server exited during the run ({status})");
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
