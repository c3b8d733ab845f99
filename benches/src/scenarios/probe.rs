//! The cluster query probe: while a scenario runs on several nodes, how long queries that need
//! shared state take. A member on node 1 of a room owned by node 0 asks `get-members` (answered
//! by the owner, through Redis) every 20 ms, and `GET /api/cluster` (the registry in Redis) is
//! asked of the last node every 50 ms. Target: p99 ≤ 50 ms for both.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    task::JoinHandle,
};

use crate::{
    proto,
    server::{BENCH_SECRET, Server},
    stats::{Histogram, Summary},
};

/// Target p99 of a cluster query.
pub const TARGET_P99_MS: f64 = 50.0;

/// Latencies of the two probes, and their failures.
pub struct Probed {
    pub members: Summary,
    pub status: Summary,
    pub failures: u64,
}

/// A running probe; [`Probe::stop`] ends it and returns its figures.
pub struct Probe {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<(Histogram, u64)>>,
}

impl Probe {
    /// Starts probing a cluster of at least two nodes.
    pub async fn start(server: &Server, bin: &Path) -> Result<Probe> {
        if server.ws_urls.len() < 2 {
            bail!("the probe needs a cluster");
        }
        let (stop, stopped) = watch::channel(false);
        let mut host = proto::connect(&server.ws_urls[0]).await.context("probe host")?;
        let code = proto::create_room(&mut host, "probe").await?;
        let mut member = proto::connect(&server.ws_urls[1]).await.context("probe member")?;
        proto::request(&mut member, 1, "join-room", json!({ "code": code, "name": "probe" })).await?;
        let members = {
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let _host = host;
                let (mut hist, mut failures, mut id) = (Histogram::default(), 0, 2);
                while !*stopped.borrow() {
                    let t = std::time::Instant::now();
                    match proto::request(&mut member, id, "get-members", json!({})).await {
                        Ok(_) => hist.record(t.elapsed().as_micros() as u64),
                        Err(_) => failures += 1,
                    }
                    id += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (hist, failures)
            })
        };
        let token = admin_token(bin)?;
        let addr =
            server.ws_urls[server.ws_urls.len() - 1].trim_start_matches("ws://").trim_end_matches("/ws").to_owned();
        let status = tokio::spawn(async move {
            let (mut hist, mut failures) = (Histogram::default(), 0);
            while !*stopped.borrow() {
                let t = std::time::Instant::now();
                match http_get(&addr, "/api/cluster", &token).await {
                    Ok(200) => hist.record(t.elapsed().as_micros() as u64),
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (hist, failures)
        });
        Ok(Probe { stop, tasks: vec![members, status] })
    }

    pub async fn stop(self) -> Result<Probed> {
        let _ = self.stop.send(true);
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await?);
        }
        let failures = out.iter().map(|(_, f)| f).sum();
        Ok(Probed { members: out[0].0.summary_ms(), status: out[1].0.summary_ms(), failures })
    }
}

/// An admin token for the servers a run starts (`unisono token` with the bench secret).
fn admin_token(bin: &Path) -> Result<String> {
    let out = std::process::Command::new(bin)
        .args(["token", "--jwt-secret", BENCH_SECRET, "--tenant", "default", "--role", "admin", "--sub", "bench"])
        .output()
        .context("unisono token")?;
    String::from_utf8_lossy(&out.stdout).lines().last().map(str::to_owned).context("no token printed")
}

/// A plain HTTP/1.1 GET; the status code.
async fn http_get(addr: &str, path: &str, token: &str) -> Result<u16> {
    let mut s = TcpStream::connect(addr).await?;
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(32)]).into_owned();
    head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")
}
