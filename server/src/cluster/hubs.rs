//! The cluster's device hub directory: which node runs each tenant's device hub, as a lease
//! in Redis (`PREFIX:hub:TENANT`, the node id with a TTL of one lease), taken and renewed with
//! the same scripts as the rooms' leases (`directory.rs`).
//!
//! A node that needs a tenant's hub and finds nobody holding it takes the lease and starts the
//! hub from the store; a node that finds another holder sends its calls there
//! ([`HubDirectory::call`]). Every third of a lease [`RedisHubs::check`] renews the hubs this
//! node runs (one whose lease is gone to another node is given up at once) and looks up the
//! holder of every tenant this node has connections of: a connection attached to a hub that
//! moved is attached to the new one, and a hub whose holder died is taken over once its lease
//! has expired. Device writes are not fenced as room writes are: a paused holder that wakes up
//! may store a device's state it received before it notices the lost lease at its next check
//! (at most a third of a lease later); states are the device's own reports, last one wins.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use unisono_core::protocol::{ErrorBody, ErrorCode};

use super::{Cluster, directory};
use crate::engine::{
    devices::Devices,
    hubs::{DeviceCall, HubDirectory, HubPlace, ToConn, unavailable},
};

/// [`super::NodeRequest`]'s device variants, serialized from borrowed values (the same JSON).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
enum Out<'a> {
    Device(&'a DeviceCall),
    ToConn(&'a ToConn),
}

/// The tenants' hub leases in Redis, and the holders this node last saw.
pub struct RedisHubs {
    cluster: Cluster,
    holders: std::sync::Mutex<HashMap<String, Arc<str>>>,
}

impl RedisHubs {
    pub fn new(cluster: Cluster) -> Arc<RedisHubs> {
        Arc::new(RedisHubs { cluster, holders: Default::default() })
    }

    fn key(&self, tenant: &str) -> String {
        self.cluster.key(&format!("hub:{tenant}"))
    }

    fn lock_holders(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<str>>> {
        self.holders.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, node: &str, request: &impl serde::Serialize, tell: bool) -> Option<super::Pending> {
        let body = match serde_json::value::to_raw_value(request) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "a device call did not encode");
                return None;
            }
        };
        match tell {
            true => {
                self.cluster.tell(node, body);
                None
            }
            false => Some(self.cluster.start_request(node, body)),
        }
    }

    /// Renews the hubs this node runs and attaches this node's connections to hubs that moved
    /// (taking a dead holder's hub once its lease expired). Run every third of a lease.
    pub async fn check(&self, devices: &Devices) {
        let me = self.cluster.node_id().clone();
        let here = devices.hubs_here();
        let keys: Vec<String> = here.iter().map(|t| self.key(t)).collect();
        match directory::renew_keys(&self.cluster, &keys).await {
            Ok(results) => {
                for (tenant, ok) in here.iter().zip(results) {
                    if !ok && !self.acquire(tenant).await.unwrap_or(false) {
                        devices.abandon(tenant).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing device hub leases failed"),
        }
        let linked = devices.linked();
        if linked.is_empty() {
            return;
        }
        let mut tenants: Vec<Arc<str>> = linked.iter().map(|(t, _)| t.clone()).collect();
        tenants.dedup();
        let mut pipe = redis::pipe();
        for t in &tenants {
            pipe.get(self.key(t));
        }
        let holders: Result<Vec<Option<String>>, _> = pipe.query_async(&mut self.cluster.conn()).await;
        let Ok(holders) = holders else { return };
        let now = std::time::Instant::now();
        let mut moved = Vec::new();
        {
            let mut cached = self.lock_holders();
            for (tenant, holder) in tenants.iter().zip(holders) {
                let place = match holder {
                    Some(h) if *h == *me => Some(HubPlace::Here),
                    Some(h) => {
                        let h: Arc<str> = h.into();
                        cached.insert(tenant.to_string(), h.clone());
                        Some(HubPlace::Node(h))
                    }
                    None => {
                        cached.remove(&**tenant);
                        None
                    }
                };
                // A holder that died keeps its lease until it expires: wait for that.
                if matches!(&place, Some(HubPlace::Node(n)) if self.cluster.liveness().is_dead(n, now)) {
                    continue;
                }
                // Nobody holds it (this node takes it), or a connection is attached elsewhere.
                if place.is_none() || linked.iter().any(|(t, at)| t == tenant && at.as_ref() != place.as_ref()) {
                    moved.push(tenant.clone());
                }
            }
        }
        for tenant in moved {
            devices.relink(&tenant).await;
        }
    }

    /// The live holder this node last saw (no Redis round trip).
    fn cached(&self, tenant: &str) -> Option<HubPlace> {
        let h = self.lock_holders().get(tenant).cloned()?;
        (!self.cluster.liveness().is_dead(&h, std::time::Instant::now())).then_some(HubPlace::Node(h))
    }

    async fn acquire(&self, tenant: &str) -> Result<bool, redis::RedisError> {
        directory::acquire_key(&self.cluster, self.key(tenant)).await
    }
}

impl HubDirectory for RedisHubs {
    fn locate<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<HubPlace, ErrorBody>> {
        Box::pin(async move {
            if let Some(p) = self.cached(tenant) {
                return Ok(p);
            }
            let me = self.cluster.node_id().clone();
            let mut conn = self.cluster.conn();
            for _ in 0..2 {
                let holder: Option<String> =
                    redis::AsyncCommands::get(&mut conn, self.key(tenant)).await.map_err(unavailable)?;
                match holder {
                    Some(h) if *h == *me => return Ok(HubPlace::Here),
                    Some(h) => {
                        let h: Arc<str> = h.into();
                        self.lock_holders().insert(tenant.to_owned(), h.clone());
                        return Ok(HubPlace::Node(h));
                    }
                    None => {
                        if self.acquire(tenant).await.map_err(unavailable)? {
                            return Ok(HubPlace::Here);
                        }
                    }
                }
            }
            Err(ErrorBody::new(ErrorCode::ClusterUnavailable, "the tenant's device hub is moving; try again"))
        })
    }

    fn forget(&self, tenant: &str) {
        self.lock_holders().remove(tenant);
    }

    fn call(
        &self,
        node: &str,
        call: &DeviceCall,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Box<RawValue>, ErrorBody>> {
        let pending = self.send(node, &Out::Device(call), false);
        Box::pin(async move {
            match pending {
                Some(p) => p.wait(wait).await.map_err(unavailable),
                None => Err(unavailable("the call did not encode")),
            }
        })
    }

    fn tell(&self, node: &str, call: &DeviceCall) {
        self.send(node, &Out::Device(call), true);
    }

    fn to_conn(&self, node: &str, msg: &ToConn) {
        let _ = self.send(node, &Out::ToConn(msg), true);
    }

    fn release(&self, tenant: &str) {
        let (key, me, mut conn) = (self.key(tenant), self.cluster.node_id().to_string(), self.cluster.conn());
        tokio::spawn(async move {
            let released: Result<i64, _> =
                redis::Script::new(directory::RELEASE).key(key).arg(me).invoke_async(&mut conn).await;
            if let Err(e) = released {
                tracing::debug!(error = %e, "releasing a device hub lease failed (it expires by itself)");
            }
        });
    }

    fn timeout(&self) -> Duration {
        self.cluster.config().request_timeout
    }
}
