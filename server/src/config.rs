//! Server configuration: every flag has an environment variable and a documented default.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};
use unisono_core::room::RoomLimits;

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
    /// `sqlite:PATH` or `postgres://user@host/db`. Default: a SQLite file in the data folder.
    #[arg(long, env = "UNISONO_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Folder for the default SQLite file.
    #[arg(long, env = "UNISONO_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Folder with the built web app (served at `/`).
    #[arg(long, env = "UNISONO_WEB_DIR", default_value = "dist")]
    pub web_dir: PathBuf,
    #[arg(long, env = "UNISONO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Group-commit window in milliseconds: a change waits this long for others to share its
    /// database commit (0 commits at once). Replies and broadcasts wait for the commit.
    #[arg(long, env = "UNISONO_COMMIT_DELAY_MS", default_value_t = 2.0)]
    pub commit_delay_ms: f64,
    /// Largest accepted WebSocket message, in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "UNISONO_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
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
    /// Most open rooms on this server.
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
    /// Seconds between server pings; a connection silent for two intervals is closed.
    #[arg(long, env = "UNISONO_PING_SECS", default_value_t = 20.0)]
    pub ping_secs: f64,
}

impl Config {
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
}
