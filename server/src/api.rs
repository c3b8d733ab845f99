//! The REST API under `/api` (seed 004's forced disconnect, device queries and commands,
//! rooms, and server-side publishing), described by the OpenAPI document at
//! `/api/openapi.json`.
//!
//! Every call is authenticated with `Authorization: Bearer TOKEN` (an `admin` JWT; `staff` for
//! `/api/staff/stats`) and scoped to the token's tenant: another tenant's device, room or
//! connection answers **404**, exactly like one that does not exist. `POST /api/publish` takes
//! a server API key instead (`--api-key TENANT=KEY`), scoped to that key's tenant. Errors are
//! JSON `{"error": {"code", "message"}}` with the stable codes of `docs/protocol.md`.
//!
//! Routing is one `match` on (method, path segments) rather than a tree of warp filters: the
//! whole API reads in one screen, and the OpenAPI test walks the same list.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use unisono_core::protocol::{ErrorBody, ErrorCode, REQUEST_EVENTS};
use warp::{
    Filter, Reply,
    http::{HeaderMap, Method, StatusCode},
    reply::Response,
};

use unisono_core::protocol::CommandRequest;

use crate::{
    auth::Role,
    edge::{PeerAddr, bearer},
    engine::{Engine, connections::ConnectionOp, peers::PeerTarget},
};

/// Server API keys: key → tenant.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(HashMap<String, String>);

impl ApiKeys {
    /// Parses `TENANT=KEY` entries.
    pub fn parse(entries: &[String]) -> Result<ApiKeys, String> {
        let mut map = HashMap::new();
        for e in entries.iter().flat_map(|e| e.split(',')).map(str::trim).filter(|e| !e.is_empty()) {
            let (tenant, key) = e.split_once('=').ok_or_else(|| format!("--api-key {e:?}: expected TENANT=KEY"))?;
            if tenant.is_empty() || key.len() < 16 {
                return Err(format!("--api-key for {tenant:?}: a tenant and a key of 16+ characters are required"));
            }
            map.insert(key.to_owned(), tenant.to_owned());
        }
        Ok(ApiKeys(map))
    }

    /// The tenant of `key`, compared in constant time per stored key.
    fn tenant(&self, key: &str) -> Option<&str> {
        let mut found = None;
        for (k, t) in &self.0 {
            let same = k.len() == key.len() && k.bytes().zip(key.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if same {
                found = Some(t.as_str());
            }
        }
        found
    }
}

/// The `/api` routes.
pub fn routes(
    engine: Engine,
    keys: Arc<ApiKeys>,
    max_body: u64,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::path("api")
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::body::stream())
        .then(
            move |tail: warp::path::Tail,
                  method: Method,
                  headers: HeaderMap,
                  query: String,
                  peer: Option<PeerAddr>,
                  stream| {
                let (engine, keys) = (engine.clone(), keys.clone());
                async move {
                    let body = match read_body(stream, max_body).await {
                        Ok(b) => b,
                        Err(e) => return error_response(e),
                    };
                    let segments: Vec<String> = tail
                        .as_str()
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
                        .collect();
                    let req = ApiRequest { method, segments, headers, query, peer: peer.map(|p| p.0), body };
                    match handle(&engine, &keys, req).await {
                        Ok(r) => r,
                        Err(e) => error_response(e),
                    }
                }
            },
        )
}

/// Reads a request body of at most `max` bytes (GETs have none; a missing Content-Length is
/// fine, an oversized body is 413).
async fn read_body<S, B>(stream: S, max: u64) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    let mut stream = std::pin::pin!(stream);
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| api_err(StatusCode::BAD_REQUEST, "BAD_BODY", e.to_string()))?;
        if out.len() as u64 + chunk.remaining() as u64 > max {
            return Err(api_err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("bodies are limited to {max} bytes"),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

struct ApiRequest {
    method: Method,
    segments: Vec<String>,
    headers: HeaderMap,
    query: String,
    peer: Option<std::net::IpAddr>,
    body: Bytes,
}

/// A failed call: HTTP status plus the JSON error body. Codes are the protocol's
/// ([`ErrorCode`]) or, for what only HTTP has (auth, routing), their own stable strings.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl From<ErrorBody> for ApiError {
    fn from(e: ErrorBody) -> Self {
        let status = match e.code {
            ErrorCode::DeviceNotFound | ErrorCode::RoomNotFound => StatusCode::NOT_FOUND,
            ErrorCode::DeviceOffline => StatusCode::CONFLICT,
            ErrorCode::CommandTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::InvalidCommand | ErrorCode::InvalidPayload | ErrorCode::BadFrame => StatusCode::BAD_REQUEST,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::StorageUnavailable | ErrorCode::ClusterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, code: e.code.as_str().to_owned(), message: e.message }
    }
}

fn api_err(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError { status, code: code.to_owned(), message: message.into() }
}

fn error_response(e: ApiError) -> Response {
    let body = json!({ "error": { "code": e.code, "message": e.message } });
    warp::reply::with_status(warp::reply::json(&body), e.status).into_response()
}

fn ok(v: Value) -> Result<Response, ApiError> {
    Ok(warp::reply::json(&v).into_response())
}

fn not_found(what: &str) -> ApiError {
    api_err(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no such {what}"))
}

fn invalid_payload(e: impl ToString) -> ApiError {
    api_err(StatusCode::BAD_REQUEST, "INVALID_PAYLOAD", e.to_string())
}

/// A body as a JSON object (an empty one is `{}`). Never an array: serde reads a struct from one
/// too, so `["kiosk-2","vlc:stop"]` would name another device than the path's (found by the
/// rest_bodies fuzz target). No member is `null` but those in `nullable`: serde reads a null
/// as an absent `Option`, so `{"target":"tenant","id":null}` passed although the OpenAPI
/// document says `id` is a string (found by schemathesis).
fn object(body: &[u8], nullable: &[&str]) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(serde_json::Map::new());
    }
    let Value::Object(o) = serde_json::from_slice(body).map_err(invalid_payload)? else {
        return Err(invalid_payload("the body must be a JSON object"));
    };
    if let Some((name, _)) = o.iter().find(|(k, v)| v.is_null() && !nullable.contains(&k.as_str())) {
        return Err(invalid_payload(format!("`{}` must not be null", name.chars().take(64).collect::<String>())));
    }
    Ok(o)
}

/// Decodes the body of `POST /api/devices/{id}/commands`: a command for device `id` (the path's
/// id wins over one in the body).
pub fn parse_command(id: &str, bytes: &[u8]) -> Result<CommandRequest, ApiError> {
    let mut cmd = object(bytes, &[])?;
    cmd.insert("deviceId".into(), json!(id));
    serde_json::from_value(Value::Object(cmd)).map_err(invalid_payload)
}

/// Decodes and checks the body of `POST /api/publish`: an event name a client could not take
/// for the engine's own (1-64 of `[A-Za-z0-9-_:.]`, not reserved).
pub fn parse_publish(bytes: &[u8]) -> Result<Publish, ApiError> {
    let p: Publish = serde_json::from_value(Value::Object(object(bytes, &["data"])?)).map_err(invalid_payload)?;
    let valid_name = !p.event.is_empty()
        && p.event.len() <= 64
        && p.event.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
    if !valid_name || reserved(&p.event) {
        return Err(api_err(
            StatusCode::BAD_REQUEST,
            "INVALID_EVENT",
            "event must be 1-64 of [A-Za-z0-9-_:.], not a reserved name",
        ));
    }
    Ok(p)
}

fn query_usize(query: &str, name: &str) -> Option<usize> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// Every route under `/api`: method and path (`{}` is a parameter). [`handle`]'s `match` serves
/// them, a known path with another method answers 405 from this list, and [`openapi`]
/// documents each (the unit test below holds the three together).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "devices"),
    ("GET", "devices/{}"),
    ("GET", "devices/{}/history"),
    ("GET", "devices/{}/snapshot"),
    ("POST", "devices/{}/commands"),
    ("POST", "connections/{}/disconnect"),
    ("GET", "rooms"),
    ("GET", "rooms/{}"),
    ("GET", "peers"),
    ("GET", "cluster"),
    ("GET", "staff/stats"),
    ("POST", "publish"),
    ("GET", "openapi.json"),
];

/// The methods [`ROUTES`] serves at these path segments (none: no such path).
fn methods_at(seg: &[&str]) -> Vec<&'static str> {
    let matches = |pattern: &str| {
        let parts: Vec<&str> = pattern.split('/').collect();
        parts.len() == seg.len() && parts.iter().zip(seg).all(|(p, s)| *p == "{}" || p == s)
    };
    ROUTES.iter().filter(|(_, path)| matches(path)).map(|(m, _)| *m).collect()
}

async fn handle(engine: &Engine, keys: &ApiKeys, req: ApiRequest) -> Result<Response, ApiError> {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let method = req.method.clone();
    // A known path with a method it does not take: 405 and the ones it does, before any auth.
    let allowed = methods_at(&seg);
    if !allowed.is_empty() && !allowed.contains(&method.as_str()) {
        let mut r = error_response(api_err(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            format!("{method} is not allowed here; use {}", allowed.join(", ")),
        ));
        if let Ok(v) = allowed.join(", ").parse() {
            r.headers_mut().insert("allow", v);
        }
        return Ok(r);
    }
    if method == Method::GET && seg == ["openapi.json"] {
        return ok(openapi(engine.devices().commands()));
    }
    if method == Method::POST && seg == ["publish"] {
        return publish(engine, keys, &req).await;
    }
    let token = bearer(&req.headers);
    let roles: &[Role] = if seg.first() == Some(&"staff") { &[Role::Staff] } else { &[Role::Admin] };
    let principal = engine.auth().authenticate(token, roles, req.peer, "rest").map_err(|e| {
        let status = match e {
            crate::auth::AuthError::WrongRole => StatusCode::FORBIDDEN,
            crate::auth::AuthError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::UNAUTHORIZED,
        };
        api_err(status, e.code(), e.to_string())
    })?;
    let tenant = principal.tenant.as_str();
    let devices = engine.devices();
    match (method, seg.as_slice()) {
        (Method::GET, ["devices"]) => ok(json!({ "devices": devices.list(tenant).await })),
        (Method::GET, ["devices", id]) => {
            devices.get(tenant, id).await.map(|d| json!(d)).ok_or_else(|| not_found("device")).and_then(ok)
        }
        (Method::GET, ["devices", id, "history"]) => {
            let limit = query_usize(&req.query, "limit").unwrap_or(100);
            let h = devices.history(tenant, id, limit).await?;
            ok(json!({ "deviceId": id, "history": h }))
        }
        (Method::GET, ["devices", id, "snapshot"]) => {
            let snap = devices.snapshot(tenant, id).await?.ok_or_else(|| not_found("snapshot"))?;
            let mut raw = Vec::with_capacity(snap.bytes as usize);
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&snap.gzip[..]), &mut raw)
                .map_err(|e| api_err(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
            let mut r = Response::new(raw.into());
            if let Ok(v) = snap.mime.parse() {
                r.headers_mut().insert("content-type", v);
            }
            if let Ok(v) = format!("{}", snap.at).parse() {
                r.headers_mut().insert("x-snapshot-at", v);
            }
            Ok(r)
        }
        (Method::POST, ["devices", id, "commands"]) => {
            let cmd = parse_command(id, &req.body)?;
            let outcome = devices.command(tenant, cmd, None).await?;
            ok(json!(outcome))
        }
        (Method::POST, ["connections", id, "disconnect"]) => {
            let op = ConnectionOp::Disconnect { id: (*id).to_owned() };
            if engine.connections_everywhere(tenant, op).await? > 0 {
                ok(json!({ "disconnected": id }))
            } else {
                Err(not_found("connection"))
            }
        }
        (Method::GET, ["rooms"]) => ok(json!({ "rooms": engine.describe_rooms(tenant).await })),
        (Method::GET, ["rooms", code]) => {
            engine.describe_room(tenant, code).await?.map(|d| json!(d)).ok_or_else(|| not_found("room")).and_then(ok)
        }
        (Method::GET, ["peers"]) => match engine.peer_status() {
            // The peer tenant's admins only: peers' sessions are that tenant's.
            Some(v) if v["tenant"].as_str() == Some(tenant) => ok(v),
            Some(_) => Err(not_found("peer links of this tenant")),
            None => ok(json!({ "self": engine.node_id().as_ref(), "peers": [] })),
        },
        (Method::GET, ["cluster"]) => {
            let nodes = engine.cluster_status().await?;
            ok(json!({ "clustered": engine.cluster().is_some(), "self": engine.node_id().as_ref(), "nodes": nodes }))
        }
        (Method::GET, ["staff", "stats"]) => {
            // Counts only: never a device id, state or payload.
            let connections: Vec<Value> = engine
                .connections()
                .counts()
                .into_iter()
                .map(|(t, kind, n)| json!({ "tenant": t, "kind": kind, "connections": n }))
                .collect();
            let devices: Vec<Value> = devices
                .counts()
                .await
                .into_iter()
                .map(|(t, total, online, admins)| json!({ "tenant": t, "devices": total, "online": online, "admins": admins }))
                .collect();
            ok(json!({ "rooms": engine.room_count(), "connections": connections, "devices": devices }))
        }
        _ => Err(not_found("route")),
    }
}

/// The body of `POST /api/publish`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Publish {
    /// `tenant`, `room`, `user`, `device` or `session`.
    pub target: String,
    /// The room code, user id, device id or connection id (not for `tenant`).
    pub id: Option<String>,
    pub event: String,
    #[serde(default)]
    pub data: Value,
}

/// Socket.IO's reserved event names, and every event the engine itself sends or takes: a
/// publisher must not be able to forge room or device state.
pub fn reserved_events() -> impl Iterator<Item = &'static str> {
    const SOCKET_IO: &[&str] =
        &["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"];
    const ENGINE: &[&str] = &[
        "connected",
        "room-joined",
        "member-joined",
        "member-left",
        "member-updated",
        "host-changed",
        "playback-state-update",
        "playback-paused",
        "playback-resumed",
        "playback-seeked",
        "song-changed",
        "queue-updated",
        "settings-updated",
        "room-closed",
        "error",
        "player:command",
        "player:registered",
        "state:updated",
        "device:online",
        "device:offline",
        "command:response",
    ];
    SOCKET_IO.iter().chain(ENGINE).chain(REQUEST_EVENTS).copied()
}

/// Whether a publisher may not use `event` ([`reserved_events`]).
pub fn reserved(event: &str) -> bool {
    reserved_events().any(|r| r == event)
}

/// What [`parse_publish`] accepts as an event name, as a regular expression.
const EVENT_PATTERN: &str = "^[A-Za-z0-9_:.-]{1,64}$";

async fn publish(engine: &Engine, keys: &ApiKeys, req: &ApiRequest) -> Result<Response, ApiError> {
    let key = bearer(&req.headers).or_else(|| req.headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(tenant) = key.and_then(|k| keys.tenant(k)) else {
        crate::metrics::METRICS.auth_failures.with_label_values(&["rest:publish", "INVALID_API_KEY"]).inc();
        if let Some(ip) = req.peer {
            tracing::warn!(%ip, "publish refused: missing or wrong API key");
        }
        return Err(api_err(StatusCode::UNAUTHORIZED, "INVALID_API_KEY", "a valid server API key is required"));
    };
    let p = parse_publish(&req.body)?;
    let frame = crate::bus::Outgoing::serialize(p.event.clone(), &p.data)
        .map_err(|e| api_err(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    let id = || p.id.as_deref().ok_or_else(|| invalid_payload("this target needs an id"));
    let text = || frame.as_text().to_string();
    // Peer links (seed 001) pass it on to the peers' sessions too.
    let to_peers = |to: PeerTarget<'_>| engine.publish_to_peers(tenant, to, &p.event, &p.data);
    let delivered = match p.target.as_str() {
        "tenant" => {
            let peers = to_peers(PeerTarget::All);
            let here = engine.connections_everywhere(tenant, ConnectionOp::ToTenant { text: text() }).await?;
            return ok(json!({ "delivered": here, "peers": peers }));
        }
        "room" => {
            let peers = to_peers(PeerTarget::Channel(id()?));
            if !engine.publish_room(tenant, id()?, frame).await? && peers == 0 {
                return Err(not_found("room"));
            }
            return ok(json!({ "delivered": "room", "peers": peers }));
        }
        "user" => {
            let peers = to_peers(PeerTarget::User(id()?));
            let here = engine.deliver_to_user(tenant, id()?, &frame);
            return ok(json!({ "delivered": here, "peers": peers }));
        }
        "device" => {
            let op = ConnectionOp::ToDevice { id: id()?.to_owned(), text: text() };
            engine.connections_everywhere(tenant, op).await?
        }
        "session" => {
            let op = ConnectionOp::ToConnection { id: id()?.to_owned(), text: text() };
            match engine.connections_everywhere(tenant, op).await? {
                0 => {
                    let peers = to_peers(PeerTarget::Session(id()?));
                    return ok(json!({ "delivered": 0, "peers": peers }));
                }
                n => n,
            }
        }
        _ => {
            return Err(api_err(
                StatusCode::BAD_REQUEST,
                "INVALID_PAYLOAD",
                "target is tenant, room, user, device or session",
            ));
        }
    };
    ok(json!({ "delivered": delivered }))
}

/// The OpenAPI 3.1 document of this API (`commands`: what the command endpoint accepts).
pub fn openapi(commands: &unisono_core::device::CommandCatalog) -> Value {
    let err = json!({ "$ref": "#/components/responses/Error" });
    let id = |name: &str, what: &str| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" }, "description": what });
    let op = |summary: &str, params: Vec<Value>, body: Option<Value>, ok: &str| {
        let mut o = json!({
            "summary": summary,
            "parameters": params,
            // 429: too many failed authentications from the address (`--auth-failures-per-min`);
            // 503: the store or the cluster did not answer.
            "responses": {
                "200": { "description": ok, "content": { "application/json": { "schema": { "type": "object" } } } },
                "401": err, "403": err, "404": err, "405": err, "429": err, "503": err,
            },
        });
        if let Some(b) = body {
            o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": b } } });
            o["responses"]["400"] = err.clone();
            o["responses"]["413"] = err.clone();
        }
        o
    };
    let mut command_op = op(
        "Send a command and wait for the device's answer (504 on timeout, 409 if offline)",
        vec![id("id", "device id")],
        Some(json!({ "type": "object", "required": ["command"], "additionalProperties": false,
            "properties": {
                "command": { "type": "string" }, "params": { "type": "object" },
                "deviceId": { "type": "string", "description": "ignored: the path's id is used" },
                "timeoutMs": { "type": "integer", "minimum": 0, "maximum": u64::MAX }, "retries": { "type": "integer", "minimum": 0, "maximum": u32::MAX },
                "queue": { "type": "boolean" }, "ttlMs": { "type": "integer", "minimum": 0, "maximum": u64::MAX } },
            "allOf": [commands.json_schema()] })),
        "the command's outcome",
    );
    command_op["responses"]["409"] = err.clone();
    command_op["responses"]["504"] = err.clone();
    let mut publish_op = op(
        "Push an event to browsers without holding a socket (server API key)",
        vec![],
        Some(json!({ "type": "object", "required": ["target", "event"], "additionalProperties": false,
            "properties": {
                "target": { "enum": ["tenant", "room", "user", "device", "session"] },
                "id": { "type": "string" },
                "event": { "type": "string", "pattern": EVENT_PATTERN,
                           "not": { "enum": reserved_events().collect::<Vec<_>>() } },
                "data": {} },
            // Every target but the tenant names one: a room code, user, device or connection id.
            "if": { "properties": { "target": { "const": "tenant" } } },
            "else": { "required": ["id"] } })),
        "{delivered}",
    );
    publish_op["security"] = json!([{ "apiKey": [] }]);
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Unisono REST API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Tenant-scoped: another tenant's resources answer 404, like missing ones." },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "apiKey": { "type": "http", "scheme": "bearer", "description": "a server API key (--api-key TENANT=KEY)" }
            },
            "responses": {
                "Error": { "description": "error", "content": { "application/json": { "schema": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "message"],
                        "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } }
                } } } }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/api/devices": { "get": op("List the tenant's devices with their current state", vec![], None, "{devices}") },
            "/api/devices/{id}": { "get": op("One device", vec![id("id", "device id")], None, "the device") },
            "/api/devices/{id}/history": { "get": op("A device's stored states, newest first",
                vec![id("id", "device id"), json!({ "name": "limit", "in": "query", "schema": { "type": "integer" } })], None, "{deviceId, history}") },
            "/api/devices/{id}/snapshot": { "get": {
                "summary": "The device's latest snapshot image",
                "parameters": [id("id", "device id")],
                "responses": { "200": { "description": "the image", "content": { "image/*": {} } },
                    "401": err, "403": err, "404": err, "405": err, "429": err, "503": err }
            } },
            "/api/devices/{id}/commands": { "post": command_op },
            "/api/connections/{id}/disconnect": { "post": op("Close a connection (session id or Socket.IO socket id)",
                vec![id("id", "session or socket id")], None, "{disconnected}") },
            "/api/rooms": { "get": op("The tenant's open rooms", vec![], None, "{rooms}") },
            "/api/rooms/{code}": { "get": op("One open room", vec![id("code", "room code")], None, "the room") },
            "/api/peers": { "get": op("Seed 001 peer links (docs/peers.md): the linked servers and the sessions they announced (admins of the peer tenant)", vec![], None, "{self, tenant, peers}") },
            "/api/cluster": { "get": op("The nodes of the cluster (this node alone without one): id, address, start time, rooms owned, connections, device hubs run", vec![], None, "{clustered, self, nodes}") },
            "/api/staff/stats": { "get": op("Staff only: rooms, connections and devices per tenant (counts, no payloads)", vec![], None, "counts") },
            "/api/publish": { "post": publish_op },
            "/api/openapi.json": { "get": { "summary": "This document", "security": [],
                "responses": { "200": { "description": "OpenAPI 3.1" }, "405": err } } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openapi()` documents exactly [`ROUTES`], and each path answers its own methods only.
    #[test]
    fn the_document_the_routes_and_the_405s_agree() {
        let doc = openapi(&unisono_core::device::CommandCatalog::builtin());
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(path, ops)| {
                let path = path.trim_start_matches("/api/").to_owned();
                let generic: String =
                    path.split('/').map(|p| if p.starts_with('{') { "{}" } else { p }).collect::<Vec<_>>().join("/");
                ops.as_object().into_iter().flatten().map(move |(m, _)| (m.to_uppercase(), generic.clone()))
            })
            .collect();
        let mut routes: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).into(), (*p).into())).collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
        assert_eq!(methods_at(&["devices", "kiosk-1", "commands"]), ["POST"]);
        assert_eq!(methods_at(&["rooms"]), ["GET"]);
        assert!(methods_at(&["rooms", "a", "b"]).is_empty());
    }

    /// A command is for the device of its path, whatever the body says (an array body named
    /// another device: found by the rest_bodies fuzz target, `fuzz/regressions/rest_bodies/`).
    #[test]
    fn a_command_body_names_no_other_device() {
        assert_eq!(
            parse_command("kiosk-1", br#"["kiosk-2","vlc:stop"]"#).map_err(|e| e.status),
            Err(StatusCode::BAD_REQUEST)
        );
        assert!(parse_publish(br#"["tenant",null,"hello",{}]"#).is_err(), "a publish body is an object");
        let cmd = parse_command("kiosk-1", br#"{"deviceId":"kiosk-2","command":"vlc:stop"}"#).map_err(|e| e.message);
        assert_eq!(cmd.map(|c| c.device_id), Ok("kiosk-1".to_owned()));
    }

    /// The OpenAPI document never allows `null` but for publish's `data`; serde would read one
    /// as an absent field (found by schemathesis: a tenant publish with `"id": null` was sent).
    #[test]
    fn a_null_member_is_refused_where_the_schema_takes_none() {
        let publish = |b: &[u8]| parse_publish(b).map(|_| ()).map_err(|e| e.status);
        assert_eq!(publish(br#"{"target":"tenant","event":"hi","id":null}"#), Err(StatusCode::BAD_REQUEST));
        assert_eq!(publish(br#"{"target":"tenant","event":"hi","data":null}"#), Ok(()));
        for body in [&br#"{"command":"vlc:stop","params":null}"#[..], br#"{"command":"vlc:stop","timeoutMs":null}"#] {
            assert_eq!(parse_command("kiosk-1", body).map(|_| ()).map_err(|e| e.status), Err(StatusCode::BAD_REQUEST));
        }
    }
}
