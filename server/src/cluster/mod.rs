//! The cluster: several Unisono processes acting as one service, through Redis and a shared
//! PostgreSQL (`--redis-url`, docs/cluster.md).
//!
//! Redis carries what the three seams of the engine need from other nodes, and nothing a single
//! node keeps to itself:
//! - the **bus** ([`crate::bus::redis`]): one Redis channel per topic (a room's broadcasts, one
//!   session's messages), subscribed by a node only while it has a subscriber of that topic, so
//!   a node gets a room's traffic only while it has members of that room;
//! - the **directory** ([`directory`]): who owns each room, as a lease (a key with a TTL that
//!   the owner renews); the store's fencing epoch is what makes a lost lease harmless;
//! - **requests to another node**: each node reads its own channel; a room request reaching a
//!   node that does not own the room is sent to the owner there and answered back the same way;
//!   a device or admin reaches its tenant's device hub ([`hubs`]: a lease per tenant) the same
//!   way, and the hub's pushes to it come back as one-way messages (tells);
//! - the **node registry**: each node's key, renewed every heartbeat, is what the cluster status
//!   lists; a dead node's key expires by itself, so no query ever waits for it.
//!
//! One connection carries it all: a `redis` `ConnectionManager` speaking RESP3, which reconnects
//! by itself and resubscribes every channel after a reconnect (why this crate:
//! docs/ARCHITECTURE.md). Its pushes (messages of subscribed channels) are routed here, without a
//! task hop, to the bus or to this node's request handler.

pub mod directory;
pub mod hubs;
pub mod liveness;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{AsyncCommands, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{engine::Engine, metrics::METRICS};

/// Cluster settings, from configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub redis_url: String,
    /// Prefix of every Redis key and channel of this deployment (tests use one each).
    pub prefix: String,
    pub node_id: Arc<str>,
    /// How long a room's owner holds it without renewing; a dead owner's rooms are taken over
    /// after at most this long.
    pub lease: Duration,
    /// How long a request to another node may take before `CLUSTER_UNAVAILABLE`.
    pub request_timeout: Duration,
    /// This node's public address, shown in the cluster status.
    pub advertise: String,
}

/// Why the cluster could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer from node {0} within the request timeout")]
    Timeout(String),
    #[error("a cluster message could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Something that takes this node's requests (the engine): called for each request another
/// node sends here; returns the answer, serialized.
pub trait RequestHandler: Send + Sync + 'static {
    /// Called inline, in arrival order (what must keep that order happens before it returns);
    /// the answer of a `tell` is not sent.
    fn handle(
        &self,
        from: String,
        request: Box<serde_json::value::RawValue>,
        tell: bool,
    ) -> futures_util::future::BoxFuture<'static, Box<serde_json::value::RawValue>>;
}

/// Something that takes the messages of subscribed topics (the bus).
pub trait TopicSink: Send + Sync + 'static {
    /// A message published on `topic` by another node.
    fn message(&self, topic: &str, payload: &[u8]);
}

/// What one node asks another.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeRequest {
    /// A command for a room the receiver owns.
    Room(directory::Forward),
    /// An operation on the receiver's connections of one tenant; answered with how many it
    /// reached (`{"reached": N}`).
    Connections { tenant: String, op: crate::engine::connections::ConnectionOp },
    /// A call to the tenant's device hub, which the receiver runs.
    Device(crate::engine::hubs::DeviceCall),
    /// A push (or close) from a device hub for one of the receiver's connections; a tell.
    ToConn(crate::engine::hubs::ToConn),
}

/// The answer to [`NodeRequest::Connections`].
#[derive(Serialize, Deserialize)]
pub struct Reached {
    pub reached: usize,
}

/// A request to another node, or its answer, on that node's channel.
#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The sender.
    from: String,
    /// The request's number at its sender.
    id: u64,
    /// Whether this is an answer (to request `id` of the receiver).
    #[serde(default)]
    answer: bool,
    /// A request that wants no answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    tell: bool,
    body: Box<serde_json::value::RawValue>,
}

type Waiting = HashMap<u64, (Arc<str>, oneshot::Sender<Box<serde_json::value::RawValue>>)>;

/// A request sent to another node, waiting for its answer.
pub struct Pending {
    cluster: Cluster,
    node: Arc<str>,
    id: u64,
    rx: Option<oneshot::Receiver<Box<serde_json::value::RawValue>>>,
}

impl Pending {
    /// The answer, within `wait` (and only while the node lives: a dead node's requests fail
    /// at once).
    pub async fn wait(mut self, wait: Duration) -> Result<Box<serde_json::value::RawValue>, ClusterError> {
        let Some(rx) = self.rx.take() else { return Err(ClusterError::Timeout(self.node.to_string())) };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(ClusterError::Timeout(self.node.to_string())),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.cluster.lock_waiting().remove(&self.id);
    }
}

/// A node as the cluster status shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub node_id: String,
    pub address: String,
    /// Server time (epoch ms) the node started.
    pub started_at: f64,
    pub rooms: usize,
    pub connections: usize,
    /// Tenants whose device hub runs on the node.
    #[serde(default)]
    pub device_hubs: usize,
}

struct Inner {
    cfg: ClusterConfig,
    conn: ConnectionManager,
    /// Everything this node sends on channels, in order (see [`send_loop`]).
    out: mpsc::Sender<Out>,
    started_at: f64,
    next_request: AtomicU64,
    waiting: Mutex<Waiting>,
    handler: OnceLock<Arc<dyn RequestHandler>>,
    sink: OnceLock<Arc<dyn TopicSink>>,
    liveness: liveness::Liveness,
}

/// This node's link to the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// Where pushes go before the `Cluster` exists (the connection is made first).
#[derive(Default)]
struct Router {
    cluster: OnceLock<std::sync::Weak<Inner>>,
}

impl Cluster {
    /// Connects to Redis (RESP3, reconnecting and resubscribing by itself), subscribes this
    /// node's own channel and announces the node.
    pub async fn connect(cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        let info = cfg.redis_url.as_str().into_connection_info()?;
        let redis = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(redis))?;
        let router = Arc::new(Router::default());
        let pushes = router.clone();
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_push_sender(move |push: PushInfo| {
                pushes.route(push);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription()
            // Reconnect attempts stay frequent, so the node heals within seconds of Redis
            // coming back; the heartbeat's commands keep asking.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(4)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let (out, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_loop(rx, conn.clone()));
        let inner = Arc::new(Inner {
            cfg,
            conn,
            out,
            started_at: crate::time::now_ms(),
            next_request: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            handler: OnceLock::new(),
            sink: OnceLock::new(),
            liveness: liveness::Liveness::default(),
        });
        let _ = router.cluster.set(Arc::downgrade(&inner));
        let cluster = Cluster { inner };
        let mut conn = cluster.conn();
        conn.subscribe(cluster.node_channel(&cluster.inner.cfg.node_id)).await?;
        Ok(cluster)
    }

    /// Queues a publish (sent in order with every other message of this node). A full queue
    /// drops it: counted and logged.
    pub fn publish(&self, channel: String, payload: Vec<u8>) {
        METRICS.cluster_messages_out.inc();
        self.send(Out::Publish { channel, payload });
    }

    /// Queues a write to shared state (in order with this node's publishes and other writes).
    pub fn write(&self, cmd: redis::Cmd) {
        self.send(Out::Write(cmd));
    }

    /// Subscribes `channel`; resolves once subscribed (or after 2 s without Redis: the
    /// subscription is then restored with the connection).
    pub fn subscribe(&self, channel: String) -> futures_util::future::BoxFuture<'static, ()> {
        let (done, subscribed) = oneshot::channel();
        self.send(Out::Subscribe { channel, done });
        Box::pin(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), subscribed).await;
        })
    }

    pub fn unsubscribe(&self, channel: String) {
        self.send(Out::Unsubscribe { channel });
    }

    fn send(&self, out: Out) {
        if let Err(e) = self.inner.out.try_send(out) {
            METRICS.cluster_dropped.inc();
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                tracing::warn!("cluster send queue full: a message was dropped");
            }
        }
    }

    /// The engine takes the requests other nodes send here.
    pub fn set_handler(&self, handler: Arc<dyn RequestHandler>) {
        let _ = self.inner.handler.set(handler);
    }

    /// The bus takes the messages of the topics it subscribes.
    pub fn set_sink(&self, sink: Arc<dyn TopicSink>) {
        let _ = self.inner.sink.set(sink);
    }

    pub fn node_id(&self) -> &Arc<str> {
        &self.inner.cfg.node_id
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.inner.cfg
    }

    /// A handle on the shared connection (commands are multiplexed on it).
    pub fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// A key of this deployment.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.inner.cfg.prefix)
    }

    /// The channel of a bus topic.
    pub fn topic_channel(&self, topic: &str) -> String {
        format!("{}:t:{topic}", self.inner.cfg.prefix)
    }

    fn node_channel(&self, node: &str) -> String {
        format!("{}:n:{node}", self.inner.cfg.prefix)
    }

    /// Sends `body` to node `node`'s handler and waits for the answer (at most the request
    /// timeout).
    pub async fn request(
        &self,
        node: &str,
        body: Box<serde_json::value::RawValue>,
    ) -> Result<Box<serde_json::value::RawValue>, ClusterError> {
        self.start_request(node, body).wait(self.inner.cfg.request_timeout).await
    }

    /// Sends `body` to node `node`'s handler now (in order with everything else this node
    /// sends); the returned [`Pending`] waits for the answer.
    pub fn start_request(&self, node: &str, body: Box<serde_json::value::RawValue>) -> Pending {
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let node: Arc<str> = node.into();
        let (tx, rx) = oneshot::channel();
        self.lock_waiting().insert(id, (node.clone(), tx));
        let envelope = Envelope { from: self.inner.cfg.node_id.to_string(), id, answer: false, tell: false, body };
        let rx = match serde_json::to_vec(&envelope) {
            Ok(text) => {
                self.publish(self.node_channel(&node), text);
                METRICS.cluster_forwarded.inc();
                Some(rx)
            }
            Err(e) => {
                tracing::error!(error = %e, "a cluster request did not encode");
                None
            }
        };
        Pending { cluster: self.clone(), node, id, rx }
    }

    /// Sends `body` to node `node`'s handler without waiting for an answer (in order with
    /// everything else this node sends).
    pub fn tell(&self, node: &str, body: Box<serde_json::value::RawValue>) {
        let envelope = Envelope { from: self.inner.cfg.node_id.to_string(), id: 0, answer: false, tell: true, body };
        match serde_json::to_vec(&envelope) {
            Ok(text) => self.publish(self.node_channel(node), text),
            Err(e) => tracing::error!(error = %e, "a cluster message did not encode"),
        }
    }

    /// Requests waiting for a node that died fail now, not at their timeout.
    pub fn fail_dead(&self, is_dead: impl Fn(&str) -> bool) {
        self.lock_waiting().retain(|_, (node, _)| !is_dead(node));
    }

    /// Sends `request` to every other live node at once; each one's answer (or why there is
    /// none, within the request timeout). Fails only when the registry cannot be read.
    pub async fn ask_others(
        &self,
        request: &NodeRequest,
    ) -> Result<Vec<Result<Box<serde_json::value::RawValue>, ClusterError>>, ClusterError> {
        let body = serde_json::value::to_raw_value(request)?;
        let nodes = self.nodes().await?;
        let me = self.node_id();
        let asks = nodes.iter().filter(|n| *n.node_id != **me).map(|n| self.request(&n.node_id, body.clone()));
        Ok(futures_util::future::join_all(asks).await)
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renews this node's registry entry (`info`), expiring after three heartbeats.
    pub async fn heartbeat(&self, info: &NodeInfo, ttl: Duration) -> Result<(), ClusterError> {
        let mut conn = self.conn();
        let text = serde_json::to_string(info)?;
        let started = Instant::now();
        let _: () = redis::pipe()
            .set_options(
                self.key(&format!("node:{}", info.node_id)),
                text,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64)),
            )
            .ignore()
            .sadd(self.key("nodes"), &info.node_id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        METRICS.cluster_redis_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The live nodes (from their registry entries; a dead node's has expired).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        list_nodes(&mut self.conn(), &self.inner.cfg.prefix).await
    }

    /// Which nodes are dead, as the registry showed them.
    pub fn liveness(&self) -> &liveness::Liveness {
        &self.inner.liveness
    }

    pub fn started_at(&self) -> f64 {
        self.inner.started_at
    }

    /// A request from another node: taken inline (in arrival order), completed off the
    /// connection's task, answered on the sender's channel unless it is a tell.
    fn on_request(&self, env: Envelope) {
        let Some(handler) = self.inner.handler.get().cloned() else { return };
        let from = env.from.clone();
        let answer = handler.handle(from.clone(), env.body, env.tell);
        if env.tell {
            tokio::spawn(answer);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let answer = answer.await;
            let reply = Envelope {
                from: me.inner.cfg.node_id.to_string(),
                id: env.id,
                answer: true,
                tell: false,
                body: answer,
            };
            // Through the ordered queue: the answer leaves after every push the request
            // caused, so it reaches the requesting node after them too.
            match serde_json::to_vec(&reply) {
                Ok(text) => me.publish(me.node_channel(&from), text),
                Err(e) => tracing::error!(error = %e, "a cluster answer did not encode"),
            }
        });
    }

    fn on_answer(&self, env: Envelope) {
        if let Some((_, tx)) = self.lock_waiting().remove(&env.id) {
            let _ = tx.send(env.body);
        }
    }
}

impl Router {
    /// One push from Redis: a message of a subscribed channel goes to the bus or to this node's
    /// request handler; the rest (subscribe confirmations, disconnects) is counted only.
    fn route(&self, push: PushInfo) {
        let Some(inner) = self.cluster.get().and_then(std::sync::Weak::upgrade) else { return };
        let cluster = Cluster { inner };
        match push.kind {
            PushKind::Message => {}
            PushKind::Disconnection => {
                METRICS.cluster_disconnects.inc();
                tracing::warn!("redis connection lost; reconnecting");
                return;
            }
            _ => return,
        }
        let mut data = push.data.into_iter();
        let (Some(channel), Some(payload)) = (data.next(), data.next()) else { return };
        let (Ok(channel), Ok(payload)) =
            (redis::from_redis_value::<String>(channel), redis::from_redis_value::<Vec<u8>>(payload))
        else {
            return;
        };
        METRICS.cluster_messages_in.inc();
        let prefix = &cluster.inner.cfg.prefix;
        let Some(rest) = channel.strip_prefix(prefix.as_str()).and_then(|r| r.strip_prefix(':')) else { return };
        if let Some(topic) = rest.strip_prefix("t:") {
            if let Some(sink) = cluster.inner.sink.get() {
                sink.message(topic, &payload);
            }
        } else if rest.strip_prefix("n:").is_some() {
            match serde_json::from_slice::<Envelope>(&payload) {
                Ok(env) if env.answer => cluster.on_answer(env),
                Ok(env) => cluster.on_request(env),
                Err(e) => {
                    METRICS.cluster_bad_messages.inc();
                    tracing::warn!(error = %e, "a cluster message that does not decode");
                }
            }
        }
    }
}

/// The live nodes of the deployment with key prefix `prefix`, from their registry entries (a
/// dead node's has expired; its id is taken out of the set here).
pub async fn list_nodes(
    conn: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
) -> Result<Vec<NodeInfo>, ClusterError> {
    let set = format!("{prefix}:nodes");
    let ids: Vec<String> = redis::cmd("SMEMBERS").arg(&set).query_async(conn).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|id| format!("{prefix}:node:{id}")).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    let mut live = Vec::new();
    for (id, v) in ids.iter().zip(values) {
        match v.and_then(|v| serde_json::from_str::<NodeInfo>(&v).ok()) {
            Some(info) => live.push(info),
            None => {
                let _: Result<(), _> = redis::cmd("SREM").arg(&set).arg(id).query_async(conn).await;
            }
        }
    }
    live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(live)
}

/// `unisono cluster status`: the registry of the deployment at `redis_url` (prefix `prefix`),
/// read from Redis (no node is asked).
pub async fn status(redis_url: &str, prefix: &str) -> Result<Vec<NodeInfo>, ClusterError> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    list_nodes(&mut conn, prefix).await
}

/// Runs this node's part of the cluster, as engine tasks until shutdown: it takes requests
/// other nodes send it (commands for the rooms it owns), renews its rooms' leases, and renews
/// its registry entry (with its room and connection counts) every second.
pub fn run(engine: Engine, cluster: Cluster, directory: Arc<directory::RedisDirectory>, hubs: Arc<hubs::RedisHubs>) {
    cluster.set_handler(Arc::new(EngineRequests(engine.clone())));
    engine.set_cluster(cluster.clone());
    let stopping = engine.stopping().clone();
    let tasks = engine.tasks().clone();
    {
        let (engine, lease, directory) = (engine.clone(), cluster.config().lease, directory.clone());
        tasks.spawn(every(stopping.clone(), directory::renew_every(lease), move || {
            let (directory, engine) = (directory.clone(), engine.clone());
            async move {
                directory.renew().await;
                directory.adopt(&engine).await;
            }
        }));
    }
    {
        // A room whose owner died is taken over as soon as its lease is gone, not at the next
        // renewal turn.
        let engine = engine.clone();
        tasks.spawn(every(stopping.clone(), SWEEP_EVERY, move || {
            let (directory, engine) = (directory.clone(), engine.clone());
            async move {
                if directory.an_owner_is_dead() {
                    directory.adopt(&engine).await;
                }
            }
        }));
    }
    {
        // Device hubs: renew the ones here, follow the ones that moved.
        let (engine, lease) = (engine.clone(), cluster.config().lease);
        tasks.spawn(every(stopping.clone(), directory::renew_every(lease), move || {
            let (hubs, engine) = (hubs.clone(), engine.clone());
            async move { hubs.check(engine.devices()).await }
        }));
    }
    {
        // The members of the rooms this node owns whose node died leave, and so do the
        // connections of hubs here on such a node; requests to it fail (from memory: the
        // registry listing is the heartbeat's).
        let (engine, cluster) = (engine.clone(), cluster.clone());
        tasks.spawn(every(stopping.clone(), SWEEP_EVERY, move || {
            let (engine, cluster) = (engine.clone(), cluster.clone());
            async move {
                let now = Instant::now();
                let is_dead = |node: &str| cluster.liveness().is_dead(node, now);
                cluster.fail_dead(is_dead);
                engine.devices().sweep_nodes(is_dead).await;
                engine.sweep_members(is_dead).await
            }
        }));
    }
    tasks.spawn(async move {
        every(stopping, HEARTBEAT, || heartbeat(engine.clone(), cluster.clone())).await;
        // Leave the registry at once rather than when the entry expires.
        let mut conn = cluster.conn();
        let _: Result<(), _> = conn.del(cluster.key(&format!("node:{}", cluster.node_id()))).await;
    });
}

/// Runs `tick` every `period` until `stopping` (a late tick is skipped, not bunched).
async fn every<F: Future<Output = ()>>(
    stopping: tokio_util::sync::CancellationToken,
    period: Duration,
    mut tick: impl FnMut() -> F,
) {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.cancelled() => break,
        }
        tick().await;
    }
}

/// Renews this node's registry entry, then lists the live nodes (what [`liveness`] learns).
async fn heartbeat(engine: Engine, cluster: Cluster) {
    let info = NodeInfo {
        node_id: cluster.node_id().to_string(),
        address: cluster.config().advertise.clone(),
        started_at: cluster.started_at(),
        rooms: engine.room_count(),
        connections: METRICS.connections.get().max(0) as usize,
        device_hubs: engine.devices().hub_count(),
    };
    if let Err(e) = cluster.heartbeat(&info, HEARTBEAT * 3).await {
        tracing::warn!(error = %e, "cluster heartbeat failed");
        cluster.liveness().failed();
        return;
    }
    match cluster.nodes().await {
        Ok(nodes) => {
            METRICS.cluster_nodes.set(nodes.len() as i64);
            cluster.liveness().listed(nodes.iter().map(|n| n.node_id.as_str()), Instant::now());
        }
        Err(e) => {
            tracing::debug!(error = %e, "listing the cluster's nodes failed");
            cluster.liveness().failed();
        }
    }
}

/// How often a node renews its registry entry (which lives three times as long).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How often a node looks for members of its rooms whose node died.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// The engine, taking the room commands other nodes forward to the rooms it owns.
struct EngineRequests(Engine);

impl RequestHandler for EngineRequests {
    fn handle(
        &self,
        from: String,
        request: Box<serde_json::value::RawValue>,
        tell: bool,
    ) -> futures_util::future::BoxFuture<'static, Box<serde_json::value::RawValue>> {
        let engine = self.0.clone();
        let request = match serde_json::from_str::<NodeRequest>(request.get()) {
            // Device calls keep their arrival order: queued now.
            Ok(NodeRequest::Device(call)) => {
                let answer = engine.devices().serve(from.into(), call, !tell);
                return Box::pin(async move {
                    answer.await.unwrap_or_else(|| serde_json::value::RawValue::NULL.to_owned())
                });
            }
            Ok(NodeRequest::ToConn(msg)) => {
                engine.devices().to_conn(msg);
                return Box::pin(std::future::ready(serde_json::value::RawValue::NULL.to_owned()));
            }
            other => other,
        };
        Box::pin(async move {
            let result = match request {
                Ok(NodeRequest::Room(f)) => engine.serve_forwarded(&f.tenant, &f.code, f.cmd, from.into()).await,
                // Taken above, before this future.
                Ok(NodeRequest::Device(_) | NodeRequest::ToConn(_)) => Err(unisono_core::protocol::ErrorBody::new(
                    unisono_core::protocol::ErrorCode::Internal,
                    "a device call reached the room handler",
                )),
                Ok(NodeRequest::Connections { tenant, op }) => {
                    let reached = Reached { reached: engine.connections().apply(&tenant, &op) };
                    return serde_json::value::to_raw_value(&reached)
                        .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned());
                }
                Err(e) => Err(unisono_core::protocol::ErrorBody::new(
                    unisono_core::protocol::ErrorCode::BadFrame,
                    format!("a forwarded request that does not decode: {e}"),
                )),
            };
            directory::Answer::of(&result).encode()
        })
    }
}

/// Messages waiting for Redis before new ones are dropped.
const QUEUE: usize = 65_536;
/// Most publishes sent in one pipeline.
const PIPELINE: usize = 256;

enum Out {
    Publish {
        channel: String,
        payload: Vec<u8>,
    },
    /// A write to shared state, in order with the publishes (a member's join before its leave).
    Write(redis::Cmd),
    Subscribe {
        channel: String,
        done: oneshot::Sender<()>,
    },
    Unsubscribe {
        channel: String,
    },
}

/// Sends this node's channel commands in order, consecutive publishes as one pipeline. Redis
/// keeps one connection's order, and a subscriber gets the messages of all its channels in the
/// order they were published: a room's pushes arrive in `rev` order, and the answer to a
/// forwarded request after the pushes it caused.
async fn send_loop(mut rx: mpsc::Receiver<Out>, mut conn: ConnectionManager) {
    let mut next: Option<Out> = None;
    loop {
        let first = match next.take() {
            Some(o) => o,
            None => match rx.recv().await {
                Some(o) => o,
                None => break,
            },
        };
        match first {
            first @ (Out::Publish { .. } | Out::Write(_)) => {
                let mut pipe = redis::pipe();
                let add = |pipe: &mut redis::Pipeline, out: Out| match out {
                    Out::Publish { channel, payload } => {
                        pipe.publish(channel, payload).ignore();
                    }
                    Out::Write(cmd) => {
                        pipe.add_command(cmd).ignore();
                    }
                    Out::Subscribe { .. } | Out::Unsubscribe { .. } => {}
                };
                add(&mut pipe, first);
                let mut n = 1;
                while n < PIPELINE {
                    match rx.try_recv() {
                        Ok(out @ (Out::Publish { .. } | Out::Write(_))) => {
                            add(&mut pipe, out);
                            n += 1;
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let started = Instant::now();
                let sent: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
                METRICS.cluster_redis_seconds.observe(started.elapsed().as_secs_f64());
                if let Err(e) = sent {
                    METRICS.cluster_dropped.inc_by(n as u64);
                    tracing::warn!(error = %e, messages = n, "cluster publish failed");
                }
            }
            Out::Subscribe { channel, done } => {
                if let Err(e) = conn.subscribe(&channel).await {
                    tracing::warn!(error = %e, channel, "subscribe failed (restored on reconnect)");
                }
                let _ = done.send(());
            }
            Out::Unsubscribe { channel } => {
                if let Err(e) = conn.unsubscribe(&channel).await {
                    tracing::warn!(error = %e, channel, "unsubscribe failed");
                }
            }
        }
    }
}
