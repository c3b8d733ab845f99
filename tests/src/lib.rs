//! Test harness for the end-to-end suite: starts the real `unisono` binary on an ephemeral port
//! and talks to it with real WebSocket clients.
//!
//! - [`Server`]: a running server process (SQLite file in a temp dir, or a given database URL);
//!   `kill9` and `restart` for durability tests.
//! - [`Client`]: a WebSocket client that sends requests with ids, awaits their replies, and
//!   buffers pushes for `expect_push`.
//! - [`eventually`]: polls a condition until it holds or a deadline passes (instead of sleeping).
//! - [`PgDatabase`]: a fresh database on the local PostgreSQL, dropped again afterwards.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::mpsc};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// Path of the `unisono` binary built by cargo (`UNISONO_BIN` overrides).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("UNISONO_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/unisono
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(format!("unisono{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} not found: run `cargo build -p unisono-server` (cargo xtask test does)", bin.display());
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest =
        ["server/src", "core/src", "server/migrations"].iter().filter_map(|d| newest_mtime(&root.join(d))).max();
    if let (Some(built), Some(newest)) = (built, newest) {
        assert!(
            newest <= built,
            "{} is older than its sources: run `cargo build -p unisono-server` (cargo xtask test does)",
            bin.display()
        );
    }
    bin
}

fn newest_mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() { newest_mtime(&path) } else { entry.metadata().and_then(|m| m.modified()).ok() };
        newest = newest.max(t);
    }
    newest
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh, unique temp directory for one test.
/// A port that was free a moment ago on 127.0.0.1 (for a process started with it).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("unisono-e2e-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A running `unisono serve`.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub database_url: String,
    pub extra: Vec<String>,
    pub dir: PathBuf,
}

impl Server {
    /// Starts a server on a fresh SQLite file.
    pub fn start(extra: &[&str]) -> Result<Server> {
        let dir = temp_dir("srv");
        let url = format!("sqlite:{}", dir.join("unisono.db").display());
        Server::start_with(&url, extra, dir)
    }

    /// Starts a server on `database_url`.
    pub fn start_with(database_url: &str, extra: &[&str], dir: PathBuf) -> Result<Server> {
        let mut s = Server {
            child: None,
            addr: String::new(),
            database_url: database_url.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut child = Command::new(binary())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--database-url", &self.database_url])
            .arg("--web-dir")
            .arg(self.dir.join("no-web"))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.extra)
            .env("UNISONO_LOG", std::env::var("UNISONO_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn unisono")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("unisono listening on http://") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr =
            rx.recv_timeout(Duration::from_secs(30)).map_err(|_| anyhow!("server did not report its address"))?;
        self.addr = addr;
        self.child = Some(child);
        Ok(())
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same database.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let c = self.child.as_mut().context("not running")?;
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let started = Instant::now();
        loop {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("server did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the server process in KiB (Linux `/proc/<pid>/status`); an error
    /// says why it could not be read.
    pub fn rss_kib(&self) -> Result<u64> {
        if self.child.is_none() {
            bail!("cannot read the server's RSS: the server is not running");
        }
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the server's RSS: reading {path} failed (Linux procfs needed)"))?;
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .with_context(|| format!("cannot read the server's RSS: no VmRSS line in {path}"))?;
        line.trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("cannot read the server's RSS: bad VmRSS line {line:?} in {path}"))
    }

    /// The value of the sample `name` (with its labels, e.g. `unisono_rooms` or
    /// `unisono_errors_total{code="BAD_FRAME"}`) on `/metrics`; an error if it is not there.
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let (status, body) = self.get("/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        let value = body
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .with_context(|| format!("no sample {name} on /metrics:\n{body}"))?;
        value.trim().parse().with_context(|| format!("sample {name} has the value {value:?}"))
    }

    /// GET a path, returning status and body (plain HTTP/1.1 on a TCP socket).
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        self.get_with(path, None).await
    }

    /// GET `path` with `Authorization: Bearer TOKEN`.
    pub async fn get_as(&self, path: &str, token: &str) -> Result<(u16, String)> {
        self.get_with(path, Some(token)).await
    }

    async fn get_with(&self, path: &str, token: Option<&str>) -> Result<(u16, String)> {
        self.http("GET", path, token, None).await
    }

    /// POST `body` (JSON) to `path` with `Authorization: Bearer TOKEN`.
    pub async fn post_as(&self, path: &str, token: &str, body: &Value) -> Result<(u16, String)> {
        self.http("POST", path, Some(token), Some(body)).await
    }

    async fn http(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(&self.addr).await?;
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let body = body.map(Value::to_string).unwrap_or_default();
        let content = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())
        };
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}{content}Connection: close\r\n\r\n{body}",
                self.addr
            )
            .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("status")?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client received.
#[derive(Debug, Clone)]
pub enum Incoming {
    Json(Value),
    Closed(Option<u16>),
}

/// A WebSocket client with a background reader.
pub struct Client {
    sink: futures_util::stream::SplitSink<Ws, Message>,
    rx: mpsc::UnboundedReceiver<(Instant, Incoming)>,
    buffered: VecDeque<(Instant, Incoming)>,
    next_id: u64,
    reader: tokio::task::JoinHandle<()>,
    pub session_id: String,
    pub resume_token: String,
    pub connected: Value,
}

impl Drop for Client {
    /// Dropping a client drops its socket (both halves), like a vanished peer.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Default wait for a reply or push.
pub const WAIT: Duration = Duration::from_secs(5);

impl Client {
    /// Connects to `/ws` (or `/ws?resume=`) and waits for `connected`.
    pub async fn connect(server: &Server) -> Result<Client> {
        Client::connect_url(&server.ws_url()).await
    }

    pub async fn resume(server: &Server, token: &str) -> Result<Client> {
        Client::connect_url(&format!("{}?resume={token}", server.ws_url())).await
    }

    pub async fn connect_url(url: &str) -> Result<Client> {
        Client::connect_with_headers(url, &[]).await
    }

    /// Connects with extra handshake headers (e.g. `X-Forwarded-For` behind a proxy).
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<Client> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url.into_client_request().context("websocket request")?;
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).context("header name")?,
                v.parse().context("header value")?,
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await.context("websocket connect")?;
        let (sink, mut stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let at = Instant::now();
                match msg {
                    Ok(Message::Text(t)) => {
                        let v = serde_json::from_str(&t).unwrap_or(Value::String(t.to_string()));
                        if tx.send((at, Incoming::Json(v))).is_err() {
                            return;
                        }
                    }
                    Ok(Message::Close(f)) => {
                        let _ = tx.send((at, Incoming::Closed(f.map(|f| u16::from(f.code)))));
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = tx.send((at, Incoming::Closed(None)));
                        return;
                    }
                }
            }
            let _ = tx.send((Instant::now(), Incoming::Closed(None)));
        });
        let mut c = Client {
            sink,
            rx,
            reader,
            buffered: VecDeque::new(),
            next_id: 1,
            session_id: String::new(),
            resume_token: String::new(),
            connected: Value::Null,
        };
        let hello = c.expect_push("connected").await?;
        c.session_id = hello["sessionId"].as_str().unwrap_or_default().to_owned();
        c.resume_token = hello["resumeToken"].as_str().unwrap_or_default().to_owned();
        c.connected = hello;
        Ok(c)
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.sink.send(Message::text(text.into())).await?;
        Ok(())
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.sink.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// Sends `{event, data, id}` and returns the reply's `data` (Ok) or `error` (Err value).
    pub async fn request(&mut self, event: &str, data: Value) -> Result<std::result::Result<Value, Value>> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({ "event": event, "data": data, "id": id });
        self.send_text(frame.to_string()).await?;
        self.reply(id).await
    }

    /// Like [`request`](Self::request) but fails unless the reply is ok.
    pub async fn ok(&mut self, event: &str, data: Value) -> Result<Value> {
        match self.request(event, data).await? {
            Ok(v) => Ok(v),
            Err(e) => bail!("{event} failed: {e}"),
        }
    }

    /// Like [`request`](Self::request) but returns the error code, failing if the reply is ok.
    pub async fn err_code(&mut self, event: &str, data: Value) -> Result<String> {
        match self.request(event, data).await? {
            Ok(v) => bail!("{event} unexpectedly succeeded: {v}"),
            Err(e) => Ok(e["code"].as_str().unwrap_or_default().to_owned()),
        }
    }

    /// Waits for the reply with `id`, buffering pushes that arrive first.
    pub async fn reply(&mut self, id: u64) -> Result<std::result::Result<Value, Value>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let (at, item) = self.recv_raw(deadline).await?;
            if let Incoming::Json(v) = &item
                && v.get("id").and_then(Value::as_u64) == Some(id)
                && v.get("ok").is_some()
            {
                return Ok(if v["ok"] == json!(true) { Ok(v["data"].clone()) } else { Err(v["error"].clone()) });
            }
            if let Incoming::Closed(code) = item {
                bail!("connection closed ({code:?}) while waiting for reply {id}");
            }
            self.buffered.push_back((at, item));
        }
    }

    async fn recv_raw(&mut self, deadline: Instant) -> Result<(Instant, Incoming)> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.rx.recv()).await {
            Ok(Some(x)) => Ok(x),
            Ok(None) => bail!("reader ended"),
            Err(_) => bail!("timed out"),
        }
    }

    /// Waits for the next push named `event` (earlier other pushes stay buffered), returns its data.
    pub async fn expect_push(&mut self, event: &str) -> Result<Value> {
        self.expect_push_within(event, WAIT).await.map(|(_, v)| v)
    }

    /// Like [`expect_push`](Self::expect_push), also returning when it arrived.
    pub async fn expect_push_within(&mut self, event: &str, wait: Duration) -> Result<(Instant, Value)> {
        if let Some(i) = self
            .buffered
            .iter()
            .position(|(_, x)| matches!(x, Incoming::Json(v) if v["event"] == event && v.get("id").is_none()))
            && let Some((at, Incoming::Json(v))) = self.buffered.remove(i)
        {
            return Ok((at, v["data"].clone()));
        }
        let deadline = Instant::now() + wait;
        loop {
            let (at, item) = self.recv_raw(deadline).await.with_context(|| format!("waiting for push {event}"))?;
            match &item {
                Incoming::Json(v) if v["event"] == event && v.get("id").is_none() => {
                    return Ok((at, v["data"].clone()));
                }
                Incoming::Closed(code) => bail!("connection closed ({code:?}) while waiting for {event}"),
                _ => self.buffered.push_back((at, item)),
            }
        }
    }

    /// Waits until the server closes the connection; returns the close code.
    pub async fn expect_close(&mut self, wait: Duration) -> Result<Option<u16>> {
        if let Some(i) = self.buffered.iter().position(|(_, x)| matches!(x, Incoming::Closed(_)))
            && let Some((_, Incoming::Closed(c))) = self.buffered.remove(i)
        {
            return Ok(c);
        }
        let deadline = Instant::now() + wait;
        loop {
            let (_, item) = self.recv_raw(deadline).await.context("waiting for close")?;
            if let Incoming::Closed(c) = item {
                return Ok(c);
            }
        }
    }

    /// Drops every buffered push.
    pub fn clear(&mut self) {
        self.buffered.clear();
        while self.rx.try_recv().is_ok() {}
    }

    /// All replies received so far (frames with an `id` and `ok`, whole), oldest first, drained
    /// from the buffer: also those [`reply`](Self::reply) buffered while waiting for another id.
    pub fn drain_replies(&mut self) -> Vec<(u64, Value)> {
        while let Ok(x) = self.rx.try_recv() {
            self.buffered.push_back(x);
        }
        let mut out = Vec::new();
        self.buffered.retain(|(_, x)| match x {
            Incoming::Json(v) if v.get("ok").is_some() && v.get("id").and_then(Value::as_u64).is_some() => {
                out.push((v["id"].as_u64().unwrap_or_default(), v.clone()));
                false
            }
            _ => true,
        });
        out
    }

    /// Every push received so far (`{event, data}` frames, without the replies), in arrival
    /// order, drained from the buffer; and whether the connection has closed.
    pub fn drain_all(&mut self) -> (Vec<Value>, bool) {
        while let Ok(x) = self.rx.try_recv() {
            self.buffered.push_back(x);
        }
        let mut out = Vec::new();
        let mut closed = false;
        self.buffered.retain(|(_, x)| match x {
            Incoming::Json(v) if v.get("id").is_none() && v.get("event").is_some() => {
                out.push(v.clone());
                false
            }
            Incoming::Closed(_) => {
                closed = true;
                true
            }
            _ => true,
        });
        (out, closed)
    }

    /// All pushes received so far named `event` (drains them from the buffer).
    pub fn drain_pushes(&mut self, event: &str) -> Vec<Value> {
        while let Ok(x) = self.rx.try_recv() {
            self.buffered.push_back(x);
        }
        let mut out = Vec::new();
        self.buffered.retain(|(_, x)| match x {
            Incoming::Json(v) if v["event"] == event => {
                out.push(v["data"].clone());
                false
            }
            _ => true,
        });
        out
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
    }
}

/// How often [`eventually`] polls.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `f` every [`POLL`] until it returns `Ok(Some(t))` and returns `t`; an `Err` from `f`
/// fails at once. After `deadline` (`f` is tried once more at the deadline) it fails with a
/// message naming `what`. For waiting on something that happens after an unknown delay (a room
/// closing after its TTL, a disconnect being noticed) instead of sleeping for a guessed time.
pub async fn eventually<F, T>(what: &str, deadline: Duration, mut f: F) -> Result<T>
where
    F: AsyncFnMut() -> Result<Option<T>>,
{
    let started = Instant::now();
    loop {
        let done = started.elapsed() >= deadline;
        if let Some(t) = f().await.with_context(|| format!("while waiting for {what}"))? {
            return Ok(t);
        }
        if done {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL.min(deadline.saturating_sub(started.elapsed()))).await;
    }
}

/// Server time now as seen through `time-sync` (offset-corrected local clock), in ms.
pub async fn server_now(c: &mut Client) -> Result<f64> {
    let t0 = local_ms();
    let r = c.ok("time-sync", json!({ "t0": t0 })).await?;
    let t3 = local_ms();
    let t1 = r["t1"].as_f64().context("t1")?;
    let t2 = r["t2"].as_f64().context("t2")?;
    let offset = ((t1 - t0) + (t2 - t3)) / 2.0;
    Ok(local_ms() + offset)
}

/// Local wall clock in ms.
pub fn local_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// Position at server time `now` from a playback object (the protocol's formula).
pub fn position_at(playback: &Value, now: f64) -> f64 {
    let pos = playback["positionMs"].as_f64().unwrap_or(0.0);
    let at = playback["serverTime"].as_f64().unwrap_or(0.0);
    let rate = playback["rate"].as_f64().unwrap_or(1.0);
    let dur = playback["song"]["durationMs"].as_f64().unwrap_or(0.0);
    let mut p = if playback["isPlaying"] == json!(true) && now > at { pos + (now - at) * rate } else { pos };
    if p < 0.0 {
        p = 0.0;
    }
    if dur > 0.0 && p > dur {
        p = dur;
    }
    p
}

/// A song payload.
pub fn song(id: &str, duration_ms: f64) -> Value {
    json!({ "id": id, "title": format!("Song {id}"), "provider": "url", "url": format!("https://example.invalid/{id}.mp3"), "durationMs": duration_ms })
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".."))
}

/// Runs `tests/node/<script>` with Node against `server` (real npm clients: socket.io-client,
/// ws). The script gets `UNISONO_URL`, `UNISONO_BIN` and `extra_env`; its output is shown, and a
/// non-zero exit fails the test. Needs `npm ci` at the repository root (`cargo xtask test`
/// runs it).
pub fn run_node(script: &str, server: &Server, extra_env: &[(&str, &str)]) -> Result<()> {
    let root = repo_root();
    if !root.join("node_modules/socket.io-client").exists() {
        bail!("node_modules is missing: run `npm ci` in {} (cargo xtask test does)", root.display());
    }
    let out = Command::new("node")
        .arg(root.join("tests/node").join(script))
        .env("UNISONO_URL", format!("http://{}", server.addr))
        .env("UNISONO_BIN", binary())
        .envs(extra_env.iter().copied())
        .current_dir(&root)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .context("starting node (Node.js 18+ is required)")?;
    if !out.success() {
        bail!("{script} failed ({out})");
    }
    Ok(())
}

/// Address of the local PostgreSQL the PostgreSQL tests use (trust auth, user `postgres`).
pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: &str = "5432";

/// Runs one SQL statement on the local PostgreSQL's `postgres` database.
pub fn psql(sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args(["-h", PG_HOST, "-p", PG_PORT, "-U", "postgres", "-d", "postgres", "-X", "-q"])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .context("running psql (the PostgreSQL client is needed for the PostgreSQL tests)")?;
    if !out.status.success() {
        bail!("psql -c {sql:?} against {PG_HOST}:{PG_PORT}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A fresh database on the local PostgreSQL, for one test: tests run in parallel, each on its
/// own database. Dropped (`WITH (FORCE)`, so leftover connections do not keep it) when this
/// guard drops, also when the test fails. Creating it fails, with the reason, when PostgreSQL
/// is unreachable: a PostgreSQL test must fail then, not pass as skipped.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create(tag: &str) -> Result<PgDatabase> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase();
        let name = format!("unisono_e2e_{tag}_{}_{n}", std::process::id());
        psql(&format!("CREATE DATABASE {name}")).with_context(|| {
            format!(
                "PostgreSQL at {PG_HOST}:{PG_PORT} is needed (user postgres, trust auth; cargo xtask test runs it): \
                 cannot create database {name}"
            )
        })?;
        let url = format!("postgres://postgres@{PG_HOST}:{PG_PORT}/{name}");
        Ok(PgDatabase { name, url })
    }
}

impl PgDatabase {
    /// Runs one query on this database; its rows, each as its fields separated by `|`.
    pub fn query(&self, sql: &str) -> Result<Vec<String>> {
        let out = Command::new("psql")
            .args(["-h", PG_HOST, "-p", PG_PORT, "-U", "postgres", "-d", &self.name, "-X", "-q", "-A", "-t"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql -c {sql:?} on {}: {}", self.name, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(e) = psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("could not drop test database {}: {e:#}", self.name);
        }
    }
}

/// A JWT signed with `secret` (the `unisono token` command of the binary under test).
pub fn token(secret: &str, tenant: &str, role: &str, sub: &str) -> Result<String> {
    let out = Command::new(binary())
        .args(["token", "--jwt-secret", secret, "--tenant", tenant, "--role", role, "--sub", sub])
        .output()
        .context("running unisono token")?;
    if !out.status.success() {
        bail!("unisono token: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).lines().last().map(str::to_owned).context("no token printed")
}

/// The JWT secret every node of a test cluster shares (tokens and resume tokens of one node are
/// valid on all).
pub const CLUSTER_SECRET: &str = "unisono-e2e-cluster-secret-0123456789";

/// Address of the local Redis the cluster tests use.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Several real `unisono` processes forming one cluster: one PostgreSQL database and one Redis
/// key prefix of their own (so tests run in parallel), both removed when this drops.
pub struct Cluster {
    pub nodes: Vec<Server>,
    pub prefix: String,
    /// Dropped after the nodes (fields drop in order).
    _db: PgDatabase,
    /// One cluster at a time per test binary: each node's pool may open several PostgreSQL
    /// connections, and the local server allows 100 in all.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static CLUSTERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cluster {
    /// Starts `n` nodes (each with its own data folder, so its own node id) with `extra` flags.
    /// Fails when PostgreSQL or Redis is unreachable.
    pub fn start(n: usize, extra: &[&str]) -> Result<Cluster> {
        Cluster::start_on(REDIS_URL, n, extra)
    }

    /// [`Cluster::start`] against the Redis at `redis_url`.
    pub fn start_on(redis_url: &str, n: usize, extra: &[&str]) -> Result<Cluster> {
        // A test that failed while holding it poisons the lock; the next one goes on.
        let one_at_a_time = CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
        let db = PgDatabase::create("cluster")?;
        redis_cli(&["PING"]).context("Redis at 127.0.0.1:6379 is needed for the cluster tests")?;
        let prefix = format!("unisono-e2e-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let node_id = format!("node-{}", (b'a' + i as u8) as char);
            let mut args: Vec<&str> = vec![
                "--redis-url",
                redis_url,
                "--redis-prefix",
                &prefix,
                "--node-id",
                &node_id,
                "--jwt-secret",
                CLUSTER_SECRET,
            ];
            args.extend_from_slice(extra);
            nodes.push(Server::start_with(&db.url, &args, temp_dir("node"))?);
        }
        Ok(Cluster { nodes, prefix, _db: db, _one_at_a_time: one_at_a_time })
    }

    /// The cluster's shared database.
    pub fn database(&self) -> &PgDatabase {
        &self._db
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
        // Everything the test left in Redis under its prefix.
        if let Ok(keys) = redis_cli(&["--scan", "--pattern", &format!("{}:*", self.prefix)]) {
            for key in keys.lines().filter(|k| !k.is_empty()) {
                let _ = redis_cli(&["DEL", key]);
            }
        }
    }
}

/// A Redis server of a test's own (on a free port, keeping nothing on disk), to stop and start
/// again: the local one is shared by every test.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub fn start() -> Result<RedisServer> {
        let port = free_port()?;
        let mut r = RedisServer { port, child: None };
        r.restart()?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port, empty); returns once it answers.
    pub fn restart(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server (Debian's redis-server package) is needed")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = Command::new("redis-cli").args(["-p", &self.port.to_string(), "PING"]).output()?;
            if String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {} did not start", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`: gone at once, with everything it held.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `redis-cli ARGS` against the local Redis; its output.
pub fn redis_cli(args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .args(["-u", REDIS_URL])
        .args(args)
        .output()
        .context("running redis-cli (the Redis client is needed for the cluster tests)")?;
    if !out.status.success() {
        bail!("redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A PostgreSQL server of a test's own (a fresh cluster in a temp folder, on a free port, trust
/// auth), to stop and start again under load: the machine's one is shared by every test. Made
/// with Debian's `initdb` and `pg_ctl`, run as the `postgres` user when the tests run as root
/// (PostgreSQL refuses to run as root). Removed when dropped.
pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PgServer {
    pub fn start() -> Result<PgServer> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) are needed")?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("initdb").is_file())
            .context("no initdb under /usr/lib/postgresql")?;
        let port = free_port()?;
        let dir = temp_dir("pg");
        let pg = PgServer { port, dir, bin };
        let _ = Command::new("chown").arg("-R").arg("postgres:postgres").arg(&pg.dir).status();
        pg.run("initdb", &["-D", &pg.data(), "-A", "trust", "-U", "postgres", "--no-sync"])?;
        pg.ctl(&["start", "-w"])?;
        Ok(pg)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(tool);
        let mut c = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = c.args(args).output().with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!("{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    fn ctl(&self, args: &[&str]) -> Result<()> {
        let opts = format!("-p {} -h 127.0.0.1 -k {} -c fsync=off", self.port, self.dir.display());
        let (log, data) = (self.dir.join("log").display().to_string(), self.data());
        let mut all: Vec<&str> = vec!["-D", &data, "-l", &log, "-o", &opts];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// `postgres://…` of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn crash(&self) -> Result<()> {
        self.ctl(&["stop", "-m", "immediate", "-w"])
    }

    /// Pauses (`SIGSTOP`) or resumes (`SIGCONT`) every process of it: a database that stops
    /// answering with its sockets open, as behind a partition or a stalled disk.
    pub fn signal_all(&self, signal: &str) -> Result<()> {
        let pidfile = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).context("postmaster.pid")?;
        let main = pidfile.lines().next().context("postmaster pid")?.trim().to_owned();
        let children = Command::new("pgrep").args(["-P", &main]).output().context("pgrep")?;
        let mut pids = vec![main];
        pids.extend(String::from_utf8_lossy(&children.stdout).lines().map(str::to_owned));
        let status = Command::new("kill").arg(format!("-{signal}")).args(&pids).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pids:?}");
        Ok(())
    }

    /// Starts it again (crash recovery replays what was committed).
    pub fn start_again(&self) -> Result<()> {
        self.ctl(&["start", "-w"])
    }

    /// Rows of `sql` on its `postgres` database, fields separated by `|`.
    pub fn query(&self, sql: &str) -> Result<Vec<String>> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql -c {sql:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop", "-m", "immediate", "-w"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this process runs as root (then PostgreSQL's tools run as `postgres`).
fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}
