//! Server configuration: every flag has an environment variable and a documented default.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use std::collections::BTreeMap;

use clap::{Args, ValueEnum};
use unisono_core::{
    device::{CommandCatalog, ParamsSchema},
    room::RoomLimits,
};

use unisono_core::device::HubConfig;

use crate::engine::devices::DevicesConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `unisono serve` options.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port, printed at start).
    #[arg(long, env = "UNISONO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Connections the kernel queues before the server accepts them (capped by the kernel's
    /// `net.core.somaxconn`). A reconnect storm overflows a short queue: the dropped SYNs are
    /// retried by the clients' kernels only after 1 s, then 3 s.
    #[arg(long, env = "UNISONO_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,
    /// `sqlite:PATH` or `postgres://user@host/db`. Default: a SQLite file in the data folder.
    #[arg(long, env = "UNISONO_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Folder for the default SQLite file.
    #[arg(long, env = "UNISONO_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Folder with the built web app (served at `/`).
    #[arg(long, env = "UNISONO_WEB_DIR", default_value = "dist")]
    pub web_dir: PathBuf,
    /// Log lines as text or as JSON objects (one per line), on stderr; `UNISONO_LOG` filters them
    /// (e.g. `info`, `unisono_server=debug`).
    #[arg(long, env = "UNISONO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// This node's id: the owner recorded on the rooms it creates, and the rooms it restores at
    /// start. Default: generated once and kept in `DATA_DIR/node-id` (printed at start).
    #[arg(long, env = "UNISONO_NODE_ID")]
    pub node_id: Option<String>,

    /// Joins a cluster through this Redis (`redis://HOST:PORT`): rooms, presence and messages
    /// are shared with every node using the same Redis, prefix and PostgreSQL database
    /// (docs/cluster.md). Without it the node is on its own. A cluster needs PostgreSQL.
    #[arg(long, env = "UNISONO_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of this deployment's Redis keys and channels (several deployments may share one
    /// Redis).
    #[arg(long, env = "UNISONO_REDIS_PREFIX", default_value = "unisono")]
    pub redis_prefix: String,
    /// Milliseconds a room's owner holds it without renewing: a dead (or paused) node's rooms
    /// are taken over after at most this long.
    #[arg(long, env = "UNISONO_ROOM_LEASE_MS", default_value_t = 3_000)]
    pub room_lease_ms: u64,
    /// Accept seed 001 peer links (docs/peers.md) on this address.
    #[arg(long, env = "UNISONO_PEER_LISTEN")]
    pub peer_listen: Option<std::net::SocketAddr>,
    /// Peers to dial (`HOST:PORT,…`); a link that drops is dialed again with backoff.
    #[arg(long, env = "UNISONO_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Shared secret of the peer links: sent in HELLO, required in every peer's HELLO.
    #[arg(long, env = "UNISONO_PEER_SECRET")]
    pub peer_secret: Option<String>,
    /// The tenant whose sessions peers see and reach (the seed has no tenants).
    #[arg(long, env = "UNISONO_PEER_TENANT", default_value = "default")]
    pub peer_tenant: String,
    /// Longest line taken from a peer, in bytes; a longer one is dropped and counted.
    #[arg(long, env = "UNISONO_PEER_MAX_LINE_BYTES", default_value_t = 1024 * 1024)]
    pub peer_max_line_bytes: usize,
    /// Milliseconds a request forwarded to another node may take before `CLUSTER_UNAVAILABLE`.
    #[arg(long, env = "UNISONO_CLUSTER_TIMEOUT_MS", default_value_t = 2_000)]
    pub cluster_timeout_ms: u64,

    /// Group-commit window in milliseconds: a change waits this long for others to share its
    /// database commit (0 commits at once). Replies and broadcasts wait for the commit.
    #[arg(long, env = "UNISONO_COMMIT_DELAY_MS", default_value_t = 2.0)]
    pub commit_delay_ms: f64,
    /// Seconds a client may take to send a request's headers (the HTTP request line and headers,
    /// the WebSocket or Socket.IO handshake included); slower ones (slow-loris, connections that
    /// never send) are closed.
    #[arg(long, env = "UNISONO_HEADER_TIMEOUT_SECS", default_value_t = 10.0)]
    pub header_timeout_secs: f64,
    /// Largest HTTP request head (request line and headers) in bytes, and so the most a
    /// connection still sending its headers holds; larger ones get 431. At least 8192.
    #[arg(long, env = "UNISONO_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Largest accepted WebSocket message, in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "UNISONO_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Largest Socket.IO event a device may send on `/players` (snapshot images), in bytes;
    /// other namespaces use `--max-frame-bytes`. Larger events close the connection.
    #[arg(long, env = "UNISONO_MAX_DEVICE_EVENT_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_device_event_bytes: usize,
    /// Frames buffered per session before it counts as a slow consumer and is disconnected.
    #[arg(long, env = "UNISONO_SESSION_QUEUE", default_value_t = 256)]
    pub session_queue: usize,
    /// Frames per second a connection may send (sustained); bursts up to twice this.
    #[arg(long, env = "UNISONO_FRAMES_PER_SEC", default_value_t = 50)]
    pub frames_per_sec: u32,
    /// `join-room` attempts per peer address per minute (room codes are not enumerable).
    #[arg(long, env = "UNISONO_JOINS_PER_MIN", default_value_t = 60)]
    pub joins_per_min: u32,
    /// Seconds a disconnected session can be resumed with its token.
    #[arg(long, env = "UNISONO_RESUME_GRACE_SECS", default_value_t = 30.0)]
    pub resume_grace_secs: f64,
    /// Seconds a disconnected host keeps the role before it passes on.
    #[arg(long, env = "UNISONO_HOST_GRACE_SECS", default_value_t = 10.0)]
    pub host_grace_secs: f64,
    /// Seconds an empty room stays open.
    #[arg(long, env = "UNISONO_EMPTY_ROOM_TTL_SECS", default_value_t = 600.0)]
    pub empty_room_ttl_secs: f64,
    /// Most open rooms on this server (in a cluster: on this node; a memory bound).
    #[arg(long, env = "UNISONO_MAX_ROOMS", default_value_t = 100_000)]
    pub max_rooms: usize,
    /// Most members per room.
    #[arg(long, env = "UNISONO_MAX_MEMBERS", default_value_t = 20_000)]
    pub max_members: usize,
    /// Members listed in a `room-joined` snapshot (the rest through `get-members`).
    #[arg(long, env = "UNISONO_SNAPSHOT_MEMBERS", default_value_t = 200)]
    pub snapshot_members: usize,
    /// Rooms larger than this send member-joined/left/updated to the host only.
    #[arg(long, env = "UNISONO_PRESENCE_MAX_MEMBERS", default_value_t = 1000)]
    pub presence_max_members: usize,
    /// Most queued songs per room.
    #[arg(long, env = "UNISONO_MAX_QUEUE", default_value_t = 500)]
    pub max_queue: usize,
    /// Seconds between server pings; a `/ws` connection silent for two intervals is closed.
    /// Socket.IO uses it as `pingInterval`.
    #[arg(long, env = "UNISONO_PING_SECS", default_value_t = 20.0)]
    pub ping_secs: f64,
    /// Socket.IO `pingTimeout`: seconds a client may take to answer a ping before it is
    /// closed. Default: the same as `--ping-secs`.
    #[arg(long, env = "UNISONO_PING_TIMEOUT_SECS")]
    pub ping_timeout_secs: Option<f64>,
    /// Seconds a Socket.IO client may stay connected to Engine.IO without joining a namespace
    /// (sending CONNECT) before it is closed.
    #[arg(long, env = "UNISONO_CONNECT_TIMEOUT_SECS", default_value_t = 5.0)]
    pub connect_timeout_secs: f64,
    /// Most open rooms per tenant (in a cluster: on all nodes together).
    #[arg(long, env = "UNISONO_MAX_ROOMS_PER_TENANT", default_value_t = 1_000)]
    pub max_rooms_per_tenant: usize,

    /// Device state history kept per device (entries).
    #[arg(long, env = "UNISONO_DEVICE_HISTORY_LEN", default_value_t = 100)]
    pub device_history_len: usize,
    /// Device state history kept per device (hours).
    #[arg(long, env = "UNISONO_DEVICE_HISTORY_HOURS", default_value_t = 24.0)]
    pub device_history_hours: f64,
    /// Most `state:updated` pushes per device per second to admins (latest state wins).
    #[arg(long, env = "UNISONO_ADMIN_UPDATES_PER_SEC", default_value_t = 2.0)]
    pub admin_updates_per_sec: f64,
    /// Command timeout when the admin gives none (ms).
    #[arg(long, env = "UNISONO_COMMAND_TIMEOUT_MS", default_value_t = 5_000)]
    pub command_timeout_ms: u64,
    /// Command retries when the admin gives none.
    #[arg(long, env = "UNISONO_COMMAND_RETRIES", default_value_t = 2)]
    pub command_retries: u32,
    /// JSON file of extra device commands: `{"name": {"properties": {…}, "required": […]}}`.
    #[arg(long, env = "UNISONO_COMMANDS_FILE")]
    pub commands_file: Option<PathBuf>,
    /// Most devices per tenant (in a cluster too: a tenant's devices meet on one node).
    #[arg(long, env = "UNISONO_MAX_DEVICES_PER_TENANT", default_value_t = 100_000)]
    pub max_devices_per_tenant: usize,
    /// Most device commands of one tenant waiting for their devices at once (cluster-wide,
    /// as above).
    #[arg(long, env = "UNISONO_MAX_PENDING_COMMANDS", default_value_t = 10_000)]
    pub max_pending_commands: usize,

    /// Take the client address from the last `X-Forwarded-For` entry (set this only behind a
    /// reverse proxy that appends it): per-address limits then apply to real clients, not to
    /// the proxy.
    #[arg(long, env = "UNISONO_TRUST_PROXY", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_proxy: bool,
    /// Server API keys for `POST /api/publish`, as `TENANT=KEY` (repeat the flag, or separate
    /// with commas in the variable). Keys need 16+ characters.
    #[arg(long = "api-key", env = "UNISONO_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,

    #[command(flatten)]
    pub auth: AuthConfig,
}

/// Authentication options, shared by `unisono serve` and `unisono token`.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// HS256 secret for JWTs. Default: a random secret kept in `DATA_DIR/jwt-secret`.
    #[arg(long, env = "UNISONO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Whether connections without a token may use rooms (as tenant `default`, role `user`).
    /// On for local use; turn it off in production.
    #[arg(long, env = "UNISONO_ANONYMOUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub anonymous: bool,
    /// Failed authentications an address may make per minute before it is refused outright.
    #[arg(long, env = "UNISONO_AUTH_FAILURES_PER_MIN", default_value_t = 20)]
    pub auth_failures_per_min: u32,
}

impl Config {
    /// Device registry settings, with any configured commands added to the built-in ones.
    pub fn devices_config(&self) -> anyhow::Result<DevicesConfig> {
        let mut commands = CommandCatalog::builtin();
        if let Some(path) = &self.commands_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading --commands-file {}: {e}", path.display()))?;
            let extra: BTreeMap<String, ParamsSchema> = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("parsing --commands-file {}: {e}", path.display()))?;
            commands.extend(extra);
        }
        Ok(DevicesConfig {
            hub: HubConfig {
                admin_updates_per_sec: self.admin_updates_per_sec.max(0.01),
                default_timeout_ms: self.command_timeout_ms.max(1),
                default_retries: self.command_retries,
                max_devices: self.max_devices_per_tenant,
                max_pending: self.max_pending_commands.max(1),
                commands,
                ..HubConfig::default()
            },
            history_len: self.device_history_len.max(1),
            history_age_ms: self.device_history_hours.max(0.0) * 3_600_000.0,
            ..DevicesConfig::default()
        })
    }

    /// The node id in effect: `--node-id`, else the one kept in the data folder (created on
    /// first start).
    pub fn node_id(&self) -> std::io::Result<String> {
        if let Some(id) = self.node_id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            return Ok(id.to_owned());
        }
        let path = self.data_dir.join("node-id");
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&self.data_dir)?;
        let id: String = {
            use rand::Rng;
            let mut rng = rand::rng();
            let hex: String = (0..6).map(|_| format!("{:02x}", rng.random::<u8>())).collect();
            format!("node-{hex}")
        };
        std::fs::write(&path, &id)?;
        Ok(id)
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite:{}", self.data_dir.join("unisono.db").display()),
        }
    }

    pub fn room_limits(&self) -> RoomLimits {
        RoomLimits {
            max_members: self.max_members,
            max_queue: self.max_queue,
            host_grace_ms: self.host_grace_secs * 1000.0,
            empty_ttl_ms: self.empty_room_ttl_secs * 1000.0,
            snapshot_members: self.snapshot_members,
            presence_broadcast_max: self.presence_max_members,
            ..RoomLimits::default()
        }
    }

    pub fn resume_grace(&self) -> Duration {
        Duration::from_secs_f64(self.resume_grace_secs.max(0.0))
    }

    pub fn commit_delay(&self) -> Duration {
        Duration::from_secs_f64((self.commit_delay_ms / 1000.0).clamp(0.0, 1.0))
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs_f64(self.ping_secs.max(0.05))
    }

    pub fn ping_timeout(&self) -> Duration {
        self.ping_timeout_secs.map(|s| Duration::from_secs_f64(s.max(0.05))).unwrap_or_else(|| self.ping_interval())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_secs.max(0.05))
    }
}
