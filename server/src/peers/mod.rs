//! Seed 001's peer links (`docs/peers.md`): TCP, one JSON object per line, to and from other
//! servers of an existing mesh. This module owns the sockets: it accepts links on
//! `--peer-listen`, dials `--peers` (again, with capped and jittered backoff, when a link
//! drops), and drives each link's state machine (`unisono_core::peer::Link`) with the lines read
//! and the time.
//!
//! What crosses a link:
//! - out: this node's sessions of the peer tenant (`--peer-tenant`): SYNC_STATE once a link is
//!   up, then CLIENT_CONNECTED / CHANNEL_MEMBERSHIP / CLIENT_DISCONNECTED as they come, join
//!   rooms and go (the engine's [`SessionWatcher`]);
//! - in: the peer's sessions, kept per link (and dropped with it), listed by `GET /api/peers`;
//!   and its DIRECT_MESSAGE, CHANNEL_MESSAGE, SESSION_MESSAGE and BROADCAST, delivered to this
//!   node's sessions of the peer tenant as the push `peer-message` (or as the push a message
//!   `{event, data}` names).
//!
//! Robustness: a line over `--peer-max-line-bytes`, invalid JSON, an unknown type or a payload
//! without its fields is counted (`unisono_peer_lines_total{result}`) and logged, and the link
//! stays up. Each link's outbound queue holds `PEER_QUEUE` lines; a peer that does not read
//! them is cut off (the link closes and is dialed again), so a slow peer holds no memory and
//! delays nobody. A peer sending more than `PEER_LINES_PER_SEC` lines a second is slowed down
//! (its lines wait: TCP pushes back). A second link from the same server id replaces the first.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use unisono_core::peer::{Link, LinkConfig, LinkOutput, PeerMessage, PeerSession, channel_name, encode_line, wire};

use crate::{
    bus::Outgoing,
    engine::{
        Engine,
        peers::{PeerTarget, SeenSession, SessionWatcher},
    },
    metrics::METRICS,
    time::now_ms,
};

mod lines;

use lines::{Line, LineReader};

/// Lines waiting for a slow peer before its link is cut.
pub const PEER_QUEUE: usize = 4096;
/// Lines a second one peer may send before its reads wait.
pub const PEER_LINES_PER_SEC: u32 = 10_000;
/// Longest wait between dials of a peer that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Peer link settings, from configuration.
#[derive(Debug, Clone)]
pub struct PeersConfig {
    pub listen: Option<SocketAddr>,
    pub dial: Vec<String>,
    pub secret: Option<String>,
    /// The tenant whose sessions peers see and reach (the seed has no tenants).
    pub tenant: String,
    pub max_line: usize,
}

struct LinkEntry {
    id: u64,
    addr: SocketAddr,
    tx: mpsc::Sender<String>,
    sessions: HashMap<String, PeerSession>,
    /// Ends the link (a newer one from the same server replaced it).
    end: tokio_util::sync::CancellationToken,
}

struct Inner {
    cfg: PeersConfig,
    me: Arc<str>,
    engine: Engine,
    links: Mutex<HashMap<String, LinkEntry>>,
    next_link: AtomicU64,
}

/// This node's peer links; cheap to clone.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

impl Peers {
    /// Binds `--peer-listen`, starts dialing `--peers`, and watches the engine's sessions.
    /// Returns the address listened on.
    pub async fn start(engine: Engine, cfg: PeersConfig) -> anyhow::Result<(Peers, Option<SocketAddr>)> {
        let me = engine.node_id().clone();
        let peers = Peers {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                me,
                engine: engine.clone(),
                links: Mutex::new(HashMap::new()),
                next_link: AtomicU64::new(1),
            }),
        };
        engine.set_watcher(Arc::new(peers.clone()));
        let mut bound = None;
        if let Some(addr) = cfg.listen {
            let listener = TcpListener::bind(addr).await.with_context(|| format!("binding --peer-listen {addr}"))?;
            bound = Some(listener.local_addr()?);
            let (p, stopping) = (peers.clone(), engine.stopping().clone());
            engine.tasks().spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = stopping.cancelled() => break,
                    };
                    match accepted {
                        Ok((stream, addr)) => {
                            let p = p.clone();
                            tokio::spawn(async move { p.run_link(stream, addr).await });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accepting a peer link failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        for target in cfg.dial {
            let (p, stopping) = (peers.clone(), engine.stopping().clone());
            engine.tasks().spawn(async move {
                let mut backoff = Duration::from_millis(100);
                loop {
                    if stopping.is_cancelled() {
                        break;
                    }
                    match TcpStream::connect(&target).await {
                        Ok(stream) => {
                            backoff = Duration::from_millis(100);
                            let addr = stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                            tokio::select! {
                                _ = p.run_link(stream, addr) => {}
                                _ = stopping.cancelled() => break,
                            }
                        }
                        Err(e) => tracing::debug!(peer = %target, error = %e, "dialing a peer failed"),
                    }
                    let jitter = Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff + jitter) => {}
                        _ = stopping.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            });
        }
        Ok((peers, bound))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LinkEntry>> {
        self.inner.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `msg` on every link that is up.
    fn to_all(&self, msg: &PeerMessage) {
        let line = encode_line(&self.inner.me, msg);
        for l in self.lock().values() {
            if l.tx.try_send(line.clone()).is_err() {
                METRICS.peer_dropped.inc();
            }
        }
    }

    fn gauges(links: &HashMap<String, LinkEntry>) {
        METRICS.peer_links.set(links.len() as i64);
        METRICS.peer_sessions.set(links.values().map(|l| l.sessions.len()).sum::<usize>() as i64);
    }

    /// One link, until it closes.
    async fn run_link(&self, stream: TcpStream, addr: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let id = self.inner.next_link.fetch_add(1, Ordering::Relaxed);
        let (rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<String>(PEER_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(mut line) = rx.recv().await {
                line.push('\n');
                if wr.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        let cfg = LinkConfig {
            secret: self.inner.cfg.secret.clone(),
            max_line: self.inner.cfg.max_line,
            ..LinkConfig::new(self.inner.me.to_string())
        };
        let mut lines = LineReader::new(rd, self.inner.cfg.max_line);
        let (mut link, first) = Link::open(cfg, now_ms());
        let limiter = governor::RateLimiter::direct(governor::Quota::per_second(
            std::num::NonZeroU32::new(PEER_LINES_PER_SEC).unwrap_or(std::num::NonZeroU32::MIN),
        ));
        let mut peer: Option<String> = None;
        let end = tokio_util::sync::CancellationToken::new();
        let mut outputs = first;
        let why = 'link: loop {
            for o in std::mem::take(&mut outputs) {
                match o {
                    LinkOutput::Send(m) => {
                        if link.may_send(&m) {
                            if tx.try_send(encode_line(&self.inner.me, &m)).is_err() {
                                break 'link "its outbound queue is full (slow peer)".to_owned();
                            }
                            link.sent(now_ms());
                        }
                    }
                    LinkOutput::Up { peer: p, .. } => {
                        self.up(&p, id, addr, tx.clone(), end.clone());
                        peer = Some(p);
                        let sessions = self.local_sessions();
                        let _ = tx.try_send(encode_line(&self.inner.me, &PeerMessage::SyncState { sessions }));
                        link.sent(now_ms());
                    }
                    LinkOutput::Message(m) => {
                        METRICS.peer_lines.with_label_values(&["ok"]).inc();
                        if let Some(p) = &peer {
                            self.apply(p, id, m);
                        }
                    }
                    LinkOutput::Ignored(e) => {
                        METRICS.peer_lines.with_label_values(&[e.label()]).inc();
                        tracing::debug!(%addr, error = %e, "a peer line was not taken");
                    }
                    LinkOutput::Early(what) => {
                        METRICS.peer_lines.with_label_values(&["early"]).inc();
                        tracing::debug!(%addr, what, "a peer line out of order");
                    }
                    LinkOutput::Close(reason) => break 'link reason,
                }
            }
            let deadline = link.next_deadline().map(crate::time::instant_at);
            tokio::select! {
                line = lines.next() => match line {
                    Ok(Line::Text(l)) => {
                        limiter.until_ready().await;
                        outputs = link.on_line(&l, now_ms());
                    }
                    Ok(Line::TooLong(n)) => {
                        METRICS.peer_lines.with_label_values(&["too_long"]).inc();
                        tracing::debug!(%addr, bytes = n, "a peer line over the limit was dropped");
                    }
                    Ok(Line::NotUtf8) => {
                        METRICS.peer_lines.with_label_values(&["bad_json"]).inc();
                        tracing::debug!(%addr, "a peer line that is not UTF-8 was dropped");
                    }
                    Ok(Line::End) => break "closed by the peer".to_owned(),
                    Err(e) => break format!("read failed: {e}"),
                },
                _ = sleep_until(deadline), if deadline.is_some() => outputs = link.tick(now_ms()),
                _ = self.inner.engine.stopping().cancelled() => break "shutting down".to_owned(),
                _ = end.cancelled() => break "replaced by a newer link from the same server".to_owned(),
            }
        };
        writer.abort();
        if let Some(p) = &peer {
            let mut links = self.lock();
            if links.get(p).is_some_and(|l| l.id == id) {
                links.remove(p);
                Self::gauges(&links);
            }
        }
        tracing::info!(%addr, peer = ?peer, reason = %why, "peer link closed");
    }

    /// Link `id` is up with `peer`: it replaces any earlier link of the same server.
    fn up(
        &self,
        peer: &str,
        id: u64,
        addr: SocketAddr,
        tx: mpsc::Sender<String>,
        end: tokio_util::sync::CancellationToken,
    ) {
        let mut links = self.lock();
        let entry = LinkEntry { id, addr, tx, sessions: HashMap::new(), end };
        if let Some(old) = links.insert(peer.to_owned(), entry)
            && old.id != id
        {
            tracing::info!(%peer, "a second link from the same server replaces the first");
            old.end.cancel();
        }
        Self::gauges(&links);
        tracing::info!(%peer, %addr, "peer link up");
    }

    /// This node's sessions of the peer tenant, as peers see them.
    fn local_sessions(&self) -> Vec<PeerSession> {
        self.inner.engine.seen_sessions(&self.inner.cfg.tenant).into_iter().map(|s| self.session_of(&s)).collect()
    }

    fn session_of(&self, s: &SeenSession) -> PeerSession {
        PeerSession {
            server_id: self.inner.me.to_string(),
            session_id: s.session.clone(),
            cliente_id: wire::user_id(&s.sub),
            usuario: s.sub.clone(),
            ip: s.ip.map(|i| i.to_string()).unwrap_or_default(),
            canales: s.room.iter().map(|c| Value::String(c.clone())).collect(),
        }
    }

    /// A message from `peer` on link `id`.
    fn apply(&self, peer: &str, id: u64, m: PeerMessage) {
        let engine = &self.inner.engine;
        let tenant = self.inner.cfg.tenant.as_str();
        match m {
            PeerMessage::SyncState { sessions } => self.with_sessions(peer, id, |s| {
                *s = sessions.into_iter().map(|x| (x.session_id.clone(), x)).collect();
            }),
            PeerMessage::ClientConnected(x) => self.with_sessions(peer, id, |s| {
                s.insert(x.session_id.clone(), x);
            }),
            PeerMessage::ClientDisconnected { session_id, .. } => self.with_sessions(peer, id, |s| {
                s.remove(&session_id);
            }),
            PeerMessage::ChannelMembership { session_id, canal_id, .. } => self.with_sessions(peer, id, |s| {
                if let Some(x) = s.get_mut(&session_id)
                    && !x.canales.contains(&canal_id)
                {
                    x.canales.push(canal_id);
                }
            }),
            PeerMessage::DirectMessage { user_id, message } => {
                let sub = match &user_id {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if let Some(push) = push_of(&message) {
                    engine.deliver_to_user(tenant, &sub, &push);
                }
            }
            PeerMessage::ChannelMessage { canal_id, message } => {
                if let (Some(code), Some(push)) = (channel_name(&canal_id), push_of(&message)) {
                    engine.deliver_to_room(tenant, &code, &push);
                }
            }
            PeerMessage::SessionMessage { session_id, message } => {
                if let Some(push) = push_of(&message) {
                    engine.deliver_to_session(tenant, &session_id, &push);
                }
            }
            PeerMessage::Broadcast { message } => {
                if let Some(push) = push_of(&message) {
                    engine.deliver_to_tenant(tenant, &push);
                }
            }
            PeerMessage::Hello(_) | PeerMessage::Ping => {}
        }
    }

    fn with_sessions(&self, peer: &str, id: u64, f: impl FnOnce(&mut HashMap<String, PeerSession>)) {
        let mut links = self.lock();
        if let Some(l) = links.get_mut(peer).filter(|l| l.id == id) {
            f(&mut l.sessions);
        }
        Self::gauges(&links);
    }
}

/// The push a peer's `message` is delivered as: the push it names when it is `{event, data}`,
/// else `peer-message` with it unchanged.
fn push_of(message: &Value) -> Option<Outgoing> {
    let named = message.as_object().filter(|o| o.len() == 2 && o.contains_key("data")).and_then(|o| {
        let event = o.get("event")?.as_str()?.to_owned();
        Some((event, o.get("data")?.clone()))
    });
    let made = match named {
        Some((event, data)) => Outgoing::serialize(event, &data),
        None => Outgoing::serialize("peer-message", message),
    };
    made.map_err(|e| tracing::warn!(error = %e, "a peer message did not serialize")).ok()
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

impl SessionWatcher for Peers {
    fn connected(&self, tenant: &str, s: &SeenSession) {
        if tenant == self.inner.cfg.tenant {
            self.to_all(&PeerMessage::ClientConnected(self.session_of(s)));
        }
    }

    fn disconnected(&self, tenant: &str, session: &str, sub: &str) {
        if tenant == self.inner.cfg.tenant {
            self.to_all(&PeerMessage::ClientDisconnected {
                session_id: session.to_owned(),
                cliente_id: wire::user_id(sub),
            });
        }
    }

    fn joined(&self, tenant: &str, session: &str, sub: &str, code: &str) {
        if tenant == self.inner.cfg.tenant {
            self.to_all(&PeerMessage::ChannelMembership {
                session_id: session.to_owned(),
                cliente_id: wire::user_id(sub),
                canal_id: Value::String(code.to_owned()),
                action: "JOIN".into(),
            });
        }
    }

    fn publish(&self, tenant: &str, to: PeerTarget<'_>, message: &Value) -> usize {
        if tenant != self.inner.cfg.tenant {
            return 0;
        }
        let message = message.clone();
        let msg = match to {
            PeerTarget::All => PeerMessage::Broadcast { message },
            PeerTarget::Channel(code) => PeerMessage::ChannelMessage { canal_id: Value::String(code.into()), message },
            PeerTarget::User(sub) => PeerMessage::DirectMessage { user_id: wire::user_id(sub), message },
            PeerTarget::Session(id) => {
                let line =
                    encode_line(&self.inner.me, &PeerMessage::SessionMessage { session_id: id.to_owned(), message });
                let links = self.lock();
                let Some(l) = links.values().find(|l| l.sessions.contains_key(id)) else { return 0 };
                return usize::from(l.tx.try_send(line).is_ok());
            }
        };
        let n = self.lock().len();
        self.to_all(&msg);
        n
    }

    fn status(&self) -> Value {
        let links = self.lock();
        let mut peers: Vec<Value> = links
            .iter()
            .map(|(id, l)| {
                let mut sessions: Vec<&PeerSession> = l.sessions.values().collect();
                sessions.sort_by(|a, b| a.session_id.cmp(&b.session_id));
                json!({ "serverId": id, "address": l.addr.to_string(), "sessions": sessions })
            })
            .collect();
        peers.sort_by(|a, b| a["serverId"].as_str().cmp(&b["serverId"].as_str()));
        json!({ "self": self.inner.me.as_ref(), "tenant": self.inner.cfg.tenant, "peers": peers })
    }
}
