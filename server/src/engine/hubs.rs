//! Where each tenant's device hub runs, and the device and admin connections whose hub runs on
//! another node.
//!
//! A tenant's devices, admins and commands meet in one [`DeviceHub`](unisono_core::device::DeviceHub)
//! (the actor in `devices.rs`), so a tenant's limits, its command routing and its devices'
//! presence are the service's, not a node's. On one node the hub is always here. In a cluster
//! the [`HubDirectory`] (`cluster/hubs.rs`: a lease in Redis per tenant) says which node runs
//! it, and:
//! - a connection on another node reaches the hub by [`DeviceCall`]s sent to that node, all of
//!   one node's in the order it sent them ([`Devices::serve`](super::devices::Devices::serve)
//!   takes them in that order);
//! - what the hub sends such a connection goes back to the connection's node as [`ToConn`]
//!   messages ([`RemoteWriter`] is the hub's outbox for it), in order with the answers;
//! - each node remembers what its own connections told a hub ([`Link`]: attached as admin or
//!   device, registered as, subscribed to), so when the hub moves (its node died or lost its
//!   lease) they tell the new one again, and the hub's node drops the connections of a node that
//!   died.

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};
use tokio::sync::Notify;
use unisono_core::{
    device::ConnId,
    protocol::{CommandRequest, CommandResponse, ErrorBody, Register},
};

use crate::bus::{FrameWriter, Outbox, Outgoing};

/// Where a tenant's hub runs.
#[derive(Debug, Clone, PartialEq)]
pub enum HubPlace {
    /// On this node (which holds the lease in a cluster).
    Here,
    Node(Arc<str>),
}

/// Which node runs each tenant's hub (a cluster's; one node needs none).
pub trait HubDirectory: Send + Sync + 'static {
    /// Where the tenant's hub runs; `Here` once this node holds its lease (taken now when
    /// nobody holds it).
    fn locate<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<HubPlace, ErrorBody>>;
    /// The tenant's hub was not where this node thought: look it up again next time.
    fn forget(&self, tenant: &str);
    /// Sends `call` to `node` and waits at most `wait` for its answer.
    fn call(
        &self,
        node: &str,
        call: &DeviceCall,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Box<RawValue>, ErrorBody>>;
    /// Sends `call` to `node` without waiting (in order with this node's other messages there).
    fn tell(&self, node: &str, call: &DeviceCall);
    /// Sends what a hub here has for a connection on `node`.
    fn to_conn(&self, node: &str, msg: &ToConn);
    /// This node no longer runs the tenant's hub.
    fn release(&self, tenant: &str);
    /// The default wait for an answer.
    fn timeout(&self) -> Duration;
}

/// A request to the node running a tenant's hub, from a connection on another node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCall {
    pub tenant: String,
    pub op: DeviceOp,
}

/// What a [`DeviceCall`] asks (the [`Devices`](super::devices::Devices) method of that name).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum DeviceOp {
    Attach { conn: ConnId, admin: bool },
    Detach { conn: ConnId },
    Register { conn: ConnId, sub: String, register: Register },
    State { conn: ConnId, state: Value },
    CommandResponse { conn: ConnId, response: CommandResponse },
    CommandAck { conn: ConnId, response: CommandResponse },
    Subscribe { conn: ConnId, device_ids: Option<Vec<String>> },
    Unsubscribe { conn: ConnId },
    Command { request: CommandRequest, admin: Option<ConnId> },
    List,
    Get { device_id: String },
    Resync { device_id: String },
    Stats,
}

/// What a hub sends a connection on another node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "to")]
pub enum ToConn {
    /// A push, as its `/ws` text (`{"event", "data"}`).
    Deliver { conn: ConnId, text: String },
    /// Close it with `code` (4001: the device connected again elsewhere).
    Close { conn: ConnId, code: u16 },
}

/// The answer to a [`DeviceCall`]: the method's result, serialized.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceAnswer {
    Ok(Box<RawValue>),
    Err(ErrorBody),
}

impl DeviceAnswer {
    pub fn of<T: Serialize>(result: Result<T, ErrorBody>) -> DeviceAnswer {
        match result.and_then(|v| serde_json::value::to_raw_value(&v).map_err(internal)) {
            Ok(raw) => DeviceAnswer::Ok(raw),
            Err(e) => DeviceAnswer::Err(e),
        }
    }

    /// As sent; one that does not encode (a bug) is sent as `null`, read as unavailable.
    pub fn encode(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(self).unwrap_or_else(|_| RawValue::NULL.to_owned())
    }

    /// The answer `raw` as the method's result.
    pub fn decode<T: serde::de::DeserializeOwned>(raw: &RawValue) -> Result<T, ErrorBody> {
        match serde_json::from_str::<DeviceAnswer>(raw.get()).map_err(unavailable)? {
            DeviceAnswer::Ok(v) => serde_json::from_str(v.get()).map_err(unavailable),
            DeviceAnswer::Err(e) => Err(e),
        }
    }
}

fn internal(e: serde_json::Error) -> ErrorBody {
    ErrorBody::new(unisono_core::protocol::ErrorCode::Internal, format!("encoding a device answer: {e}"))
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(unisono_core::protocol::ErrorCode::ClusterUnavailable, format!("the device hub's node: {e}"))
}

/// Message of the error a node answers when it does not run the tenant's hub (any more).
pub(crate) const NOT_HERE: &str = "the tenant's device hub is not on this node";

/// What one of this node's connections told its tenant's hub, to tell a new hub again.
#[derive(Clone)]
pub struct Link {
    pub tenant: Arc<str>,
    pub outbox: Outbox,
    pub admin: bool,
    /// Where it is attached (`None`: not yet, or the hub it was attached to is gone).
    pub at: Option<HubPlace>,
    /// `player:register` as (subject, request), once it succeeded.
    pub registered: Option<(String, Register)>,
    /// `devices:subscribe`'s device ids, while subscribed.
    pub subscribed: Option<Option<Vec<String>>>,
}

/// A hub's outbox for a connection on another node: each push becomes a [`ToConn`] message
/// to that node (whose own outbox for the connection applies the slow-consumer policy).
pub struct RemoteWriter {
    pub route: Arc<dyn HubDirectory>,
    pub node: Arc<str>,
    pub conn: ConnId,
    pub drained: Notify,
}

impl RemoteWriter {
    pub fn outbox(route: Arc<dyn HubDirectory>, node: Arc<str>, conn: ConnId) -> Outbox {
        Outbox::writer(Arc::new(RemoteWriter { route, node, conn, drained: Notify::new() }))
    }
}

impl FrameWriter for RemoteWriter {
    fn push(&self, frame: &Outgoing) -> bool {
        let text = frame.as_text().as_str().to_owned();
        self.route.to_conn(&self.node, &ToConn::Deliver { conn: self.conn, text });
        true
    }
    fn waiting(&self) -> usize {
        0
    }
    fn capacity(&self) -> usize {
        usize::MAX
    }
    fn drained(&self) -> &Notify {
        &self.drained
    }
    fn close(&self, code: u16, _reason: &'static str) {
        self.route.to_conn(&self.node, &ToConn::Close { conn: self.conn, code });
    }
}

/// The reason shown for a close code a remote hub sent.
pub(crate) fn close_reason(code: u16) -> &'static str {
    match code {
        unisono_core::device::CLOSE_REPLACED => "device registered on another connection",
        _ => "closed by the device hub",
    }
}
