//! The cluster's room directory: which node owns each room, as a lease in Redis.
//!
//! The owner of room X holds the key `PREFIX:owner:X` (its node id, with a TTL of one lease,
//! renewed every third of it by [`RedisDirectory::renew`]). A node that finds no owner for an
//! open room takes it ([`Directory::acquire`]: set only if nobody, or itself, holds it) and then
//! claims it in the store under a new epoch, so the previous owner, if it is only paused, can no
//! longer write it (the store refuses its lease: fencing). A node whose renewal finds the key
//! gone to another node gives the room up at once.
//!
//! Requests for a room another node owns are sent there ([`Directory::forward`]) and answered
//! back through the same ordered channel as the pushes they cause.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use unisono_core::{
    RoomCommand,
    protocol::{ErrorBody, ErrorCode, MemberInfo, RoomReply},
};

use super::Cluster;
use crate::{
    engine::{
        Engine,
        directory::{Directory, DirectoryError, LocalDirectory, Location},
        rooms::{RoomHandle, RoomResult},
    },
    metrics::METRICS,
};

/// Sets the owner key to this node if nobody (or this node) holds it; 1 if it did.
pub(super) const ACQUIRE: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Extends this node's leases on the keys given (a batch of rooms or hubs); per key, 1 if
/// renewed, 0 if another node (or nobody) holds it now.
const RENEW_MANY: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out";

/// Keys renewed per script call (a call runs alone in Redis: kept short).
const RENEW_BATCH: usize = 1000;

/// Renews this node's leases on `keys`, [`RENEW_BATCH`] to a script call, in one pipeline;
/// per key, whether it is still this node's.
pub(super) async fn renew_keys(cluster: &Cluster, keys: &[String]) -> redis::RedisResult<Vec<bool>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let lease_ms = cluster.config().lease.as_millis() as u64;
    // EVAL, not EVALSHA: a pipeline does not load a script Redis lost (after a restart it has
    // none), and Redis caches the compiled script by its text anyway.
    let mut pipe = redis::pipe();
    for batch in keys.chunks(RENEW_BATCH) {
        pipe.cmd("EVAL").arg(RENEW_MANY).arg(batch.len()).arg(batch).arg(cluster.node_id().as_ref()).arg(lease_ms);
    }
    let started = std::time::Instant::now();
    let renewed: Vec<Vec<i64>> = pipe.query_async(&mut cluster.conn()).await?;
    METRICS.cluster_redis_seconds.observe(started.elapsed().as_secs_f64());
    Ok(renewed.into_iter().flatten().map(|ok| ok == 1).collect())
}

/// Takes the lease `key` (a room's or a device hub's) for this node if nobody, or this node,
/// holds it; whether this node holds it now.
pub(super) async fn acquire_key(cluster: &Cluster, key: String) -> redis::RedisResult<bool> {
    let lease_ms = cluster.config().lease.as_millis() as u64;
    let won: i64 = redis::Script::new(ACQUIRE)
        .key(key)
        .arg(cluster.node_id().as_ref())
        .arg(lease_ms)
        .invoke_async(&mut cluster.conn())
        .await?;
    Ok(won == 1)
}

/// Deletes this node's lease on a room (closed).
pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// A room request sent to the room's owner.
#[derive(Serialize, Deserialize)]
pub struct Forward {
    pub tenant: String,
    pub code: String,
    pub cmd: RoomCommand,
}

/// The owner's answer.
#[derive(Serialize, Deserialize)]
pub enum Answer {
    Ok { kind: String, data: Box<RawValue> },
    Err(ErrorBody),
}

impl Answer {
    pub fn of(result: &RoomResult) -> Answer {
        match result {
            Ok(reply) => match serde_json::value::to_raw_value(reply) {
                Ok(data) => Answer::Ok { kind: reply.kind().to_owned(), data },
                Err(e) => Answer::Err(ErrorBody::new(ErrorCode::Internal, format!("encoding a reply: {e}"))),
            },
            Err(e) => Answer::Err(e.clone()),
        }
    }

    /// The answer as sent. One that does not encode (a bug) is sent as `null`, which the
    /// requester reads as `CLUSTER_UNAVAILABLE`: it is never left without an answer.
    pub fn encode(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "a forwarded answer did not encode");
            RawValue::NULL.to_owned()
        })
    }

    fn into_result(self) -> RoomResult {
        match self {
            Answer::Ok { kind, data } => RoomReply::decode(&kind, data.get()).map_err(|e| {
                ErrorBody::new(ErrorCode::Internal, format!("a forwarded reply that does not decode: {e}"))
            }),
            Answer::Err(e) => Err(e),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::ClusterUnavailable, format!("the cluster cannot be reached: {e}"))
}

/// The directory of a cluster node: this node's rooms, and the leases in Redis.
pub struct RedisDirectory {
    local: LocalDirectory,
    cluster: Cluster,
    /// The owner this node last saw (and told about its members) per room it has members of.
    announced: std::sync::Mutex<HashMap<String, Arc<str>>>,
    /// The owner each room had when this node last looked it up (rooms it has members of).
    last_owners: std::sync::Mutex<HashMap<String, Arc<str>>>,
}

impl RedisDirectory {
    pub fn new(cluster: Cluster) -> Arc<RedisDirectory> {
        Arc::new(RedisDirectory {
            local: LocalDirectory::default(),
            cluster,
            announced: Default::default(),
            last_owners: Default::default(),
        })
    }

    /// For every room this node has members of and does not own: takes it over when its lease
    /// is gone and its owner is dead (died, stopped, or paused past its registry entry), and
    /// tells a new owner which members are here. Run after every renewal, so a dead owner's
    /// rooms move within a lease and a third. A lease gone while its owner is alive (Redis lost
    /// every key in a restart) is left to the owner, which takes it again at its next renewal.
    pub async fn adopt(&self, engine: &Engine) {
        let rooms = engine.members_by_room();
        if rooms.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let is_dead = |node: &str| self.cluster.liveness().is_dead(node, now);
        let me = self.cluster.node_id().clone();
        // Only rooms whose owner may have changed are looked up: one this node owns is its own,
        // and an owner that lives keeps its lease (it renews it; one that loses it has stopped
        // heartbeating, so it is dead here first). The rest is the cost of a room: nothing in
        // Redis per room and second on the nodes that only have members of it.
        let mut owners: HashMap<String, Option<Arc<str>>> = HashMap::new();
        let mut codes: Vec<String> = Vec::new();
        for (_, code) in rooms.keys() {
            if self.local.owns(code) {
                owners.insert(code.clone(), Some(me.clone()));
            } else {
                match self.last_owner(code).filter(|o| **o != *me && !is_dead(o)) {
                    Some(o) => {
                        owners.insert(code.clone(), Some(o));
                    }
                    None => codes.push(code.clone()),
                }
            }
        }
        if !codes.is_empty() {
            let mut pipe = redis::pipe();
            for code in &codes {
                pipe.get(self.owner_key(code));
            }
            let looked: Result<Vec<Option<String>>, _> = pipe.query_async(&mut self.cluster.conn()).await;
            let Ok(looked) = looked else { return };
            owners.extend(codes.into_iter().zip(looked).map(|(c, o)| (c, o.map(Arc::from))));
        }
        if let Ok(mut last) = self.last_owners.lock() {
            last.retain(|code, _| owners.contains_key(code));
            for (code, owner) in &owners {
                if let Some(o) = owner {
                    last.insert(code.clone(), o.clone());
                }
            }
        }
        let announced = self.announced.lock().map(|a| a.clone()).unwrap_or_default();
        let seen = engine.adopt(rooms, &owners, &announced, is_dead, |code| self.last_owner(code)).await;
        if let Ok(mut a) = self.announced.lock() {
            *a = seen;
        }
    }

    /// Whether the owner of a room this node has members of is dead (then [`Self::adopt`] is
    /// worth running before its next turn: the room is taken over sooner).
    pub fn an_owner_is_dead(&self) -> bool {
        let now = std::time::Instant::now();
        let Ok(last) = self.last_owners.lock() else { return false };
        last.values().any(|o| self.cluster.liveness().is_dead(o, now))
    }

    /// The owner this node last saw for room `code` (rooms it has members of).
    fn last_owner(&self, code: &str) -> Option<Arc<str>> {
        self.last_owners.lock().ok()?.get(code).cloned()
    }

    fn owner_key(&self, code: &str) -> String {
        self.cluster.key(&format!("owner:{code}"))
    }

    /// The room's members, session → `NODE\nMEMBER-JSON`.
    fn members_key(&self, code: &str) -> String {
        self.cluster.key(&format!("members:{code}"))
    }

    /// Renews the lease of every room this node owns; the rooms whose lease another node holds
    /// now are given up. Run every third of a lease.
    pub async fn renew(&self) {
        let owned = self.local.owned();
        if owned.is_empty() {
            return;
        }
        let keys: Vec<String> = owned.iter().map(|h| self.owner_key(&h.code)).collect();
        match renew_keys(&self.cluster, &keys).await {
            Ok(results) => {
                for (h, ok) in owned.iter().zip(results) {
                    if !ok {
                        // Expired while this node could not renew it (paused, cut off), or taken.
                        // Retake it if nobody has, else give it up.
                        if !self.try_acquire(&h.code).await.unwrap_or(false) {
                            tracing::warn!(room = %h.code, "lost the room's lease; giving it up");
                            h.abandon();
                        }
                    }
                }
            }
            // Redis unreachable: keep the rooms; a node that takes one over fences this one.
            Err(e) => tracing::warn!(error = %e, "renewing room leases failed"),
        }
    }

    async fn try_acquire(&self, code: &str) -> Result<bool, redis::RedisError> {
        acquire_key(&self.cluster, self.owner_key(code)).await
    }
}

impl Directory for RedisDirectory {
    fn locate<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Result<Option<Location>, DirectoryError>> {
        Box::pin(async move {
            if let Some(Location::Here(h)) = self.local.locate(code).await? {
                return Ok(Some(Location::Here(h)));
            }
            let started = std::time::Instant::now();
            let owner: Option<String> = redis::AsyncCommands::get(&mut self.cluster.conn(), self.owner_key(code))
                .await
                .map_err(|e| DirectoryError(e.to_string()))?;
            METRICS.cluster_redis_seconds.observe(started.elapsed().as_secs_f64());
            let me = self.cluster.node_id();
            match owner {
                Some(o) if *o == **me => Ok(None),
                Some(o) => {
                    let o: Arc<str> = o.into();
                    if let Ok(mut last) = self.last_owners.lock()
                        && last.get(code) != Some(&o)
                    {
                        last.insert(code.to_owned(), o.clone());
                    }
                    Ok(Some(Location::Node(o)))
                }
                // No lease, but the owner this node last saw lives (Redis lost its keys): the
                // room is still there, and its owner takes the lease again at its next renewal.
                None => Ok(self
                    .last_owner(code)
                    .filter(|o| **o != **me && !self.cluster.liveness().is_dead(o, std::time::Instant::now()))
                    .map(Location::Node)),
            }
        })
    }

    fn acquire<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Result<bool, DirectoryError>> {
        Box::pin(async move { self.try_acquire(code).await.map_err(|e| DirectoryError(e.to_string())) })
    }

    fn insert(&self, handle: RoomHandle) {
        self.local.insert(handle);
    }

    fn remove(&self, code: &str) {
        self.local.remove(code);
        let (key, me, mut conn) = (self.owner_key(code), self.cluster.node_id().to_string(), self.cluster.conn());
        tokio::spawn(async move {
            let released: Result<i64, _> = redis::Script::new(RELEASE).key(key).arg(me).invoke_async(&mut conn).await;
            if let Err(e) = released {
                tracing::debug!(error = %e, "releasing a room lease failed (it expires by itself)");
            }
        });
    }

    fn owned(&self) -> Vec<RoomHandle> {
        self.local.owned()
    }

    fn count(&self) -> usize {
        self.local.count()
    }

    fn count_of(&self, tenant: &str) -> usize {
        self.local.count_of(tenant)
    }

    fn takes_over(&self) -> bool {
        true
    }

    fn member_here(&self, code: &str, node: &str, member: &MemberInfo) {
        let Ok(json) = serde_json::to_string(member) else { return };
        let key = self.members_key(code);
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&key).arg(&member.session_id).arg(format!("{node}\n{json}"));
        self.cluster.write(cmd);
        // A room every node lost without closing it leaves no key behind for long.
        let mut expire = redis::cmd("PEXPIRE");
        expire.arg(&key).arg(MEMBERS_TTL_MS);
        self.cluster.write(expire);
    }

    fn member_gone(&self, code: &str, session: &str) {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(self.members_key(code)).arg(session);
        self.cluster.write(cmd);
    }

    fn forget_members(&self, code: &str) {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.members_key(code));
        self.cluster.write(cmd);
    }

    fn members<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Vec<(String, MemberInfo)>> {
        Box::pin(async move {
            let all: Result<HashMap<String, String>, _> =
                redis::AsyncCommands::hgetall(&mut self.cluster.conn(), self.members_key(code)).await;
            let all = all.unwrap_or_else(|e| {
                tracing::warn!(room = code, error = %e, "reading a room's recorded members failed");
                HashMap::new()
            });
            all.into_values()
                .filter_map(|v| {
                    let (node, json) = v.split_once('\n')?;
                    Some((node.to_owned(), serde_json::from_str(json).ok()?))
                })
                .collect()
        })
    }

    fn forward<'a>(
        &'a self,
        node: &'a str,
        tenant: &'a str,
        code: &'a str,
        cmd: RoomCommand,
    ) -> BoxFuture<'a, RoomResult> {
        Box::pin(async move {
            let req = super::NodeRequest::Room(Forward { tenant: tenant.to_owned(), code: code.to_owned(), cmd });
            let body = serde_json::value::to_raw_value(&req).map_err(unavailable)?;
            let answer = self.cluster.request(node, body).await.map_err(unavailable)?;
            serde_json::from_str::<Answer>(answer.get()).map_err(unavailable)?.into_result()
        })
    }
}

/// How long a room's recorded members outlive their last change (a day).
const MEMBERS_TTL_MS: u64 = 24 * 3600 * 1000;

/// How often leases are renewed, for a lease of `lease`.
pub fn renew_every(lease: Duration) -> Duration {
    lease / 3
}
