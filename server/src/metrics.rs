//! Prometheus metrics, served as text at `/metrics`.
//!
//! Labels never carry payload data (room codes, session ids, names): only bounded enums such as
//! error codes.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    pub registry: Registry,
    pub connections: IntGauge,
    pub sessions: IntGauge,
    pub rooms: IntGauge,
    pub frames_in: IntCounter,
    pub frames_out: IntCounter,
    pub errors: IntCounterVec,
    pub fanout_seconds: Histogram,
    pub slow_consumers: IntCounter,
    pub oversized_frames: IntCounter,
    pub store_write_seconds: Histogram,
    pub store_batch_size: Histogram,
    pub auth_failures: IntCounterVec,
    pub device_commands: IntCounterVec,
    pub device_states: IntCounter,
    pub devices_online: IntGauge,
    pub cluster_nodes: IntGauge,
    pub cluster_subscriptions: IntGauge,
    pub cluster_messages_in: IntCounter,
    pub cluster_messages_out: IntCounter,
    pub cluster_forwarded: IntCounter,
    pub cluster_dropped: IntCounter,
    pub cluster_bad_messages: IntCounter,
    pub cluster_disconnects: IntCounter,
    pub cluster_takeovers: IntCounter,
    pub cluster_members_swept: IntCounter,
    pub cluster_redis_seconds: Histogram,
    pub peer_links: IntGauge,
    pub peer_sessions: IntGauge,
    pub peer_lines: IntCounterVec,
    pub peer_dropped: IntCounter,
    /// Read from the runtime when the page is rendered (a leak of connections or timers shows
    /// as a count that keeps growing).
    pub tasks: IntGauge,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid histogram")
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            connections: IntGauge::new("unisono_connections", "Open WebSocket connections").expect("metric"),
            sessions: IntGauge::new(
                "unisono_sessions",
                "Sessions, including disconnected ones inside their resume grace",
            )
            .expect("metric"),
            rooms: IntGauge::new("unisono_rooms", "Open rooms").expect("metric"),
            frames_in: IntCounter::new("unisono_frames_in_total", "Frames received from clients").expect("metric"),
            frames_out: IntCounter::new("unisono_frames_out_total", "Frames written to clients").expect("metric"),
            errors: IntCounterVec::new(
                Opts::new("unisono_errors_total", "Error replies and pushes by code"),
                &["code"],
            )
            .expect("metric"),
            fanout_seconds: histogram(
                "unisono_fanout_seconds",
                "Time from applying a room command to having its broadcast written to (or queued for) every member's socket",
                vec![0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5],
            ),
            slow_consumers: IntCounter::new(
                "unisono_slow_consumer_disconnects_total",
                "Sessions disconnected because their outbound queue was full",
            )
            .expect("metric"),
            oversized_frames: IntCounter::new(
                "unisono_oversized_frames_total",
                "Connections closed with 1009 for a frame over the limit",
            )
            .expect("metric"),
            store_write_seconds: histogram(
                "unisono_store_write_seconds",
                "Time to commit one batch of room writes",
                vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0],
            ),
            store_batch_size: histogram(
                "unisono_store_batch_size",
                "Rooms written per commit",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 512.0],
            ),
            auth_failures: IntCounterVec::new(
                Opts::new("unisono_auth_failures_total", "Refused authentications by edge and reason"),
                &["edge", "reason"],
            )
            .expect("metric"),
            device_commands: IntCounterVec::new(
                Opts::new("unisono_device_commands_total", "Device commands by outcome"),
                &["outcome"],
            )
            .expect("metric"),
            device_states: IntCounter::new("unisono_device_states_total", "Device states stored").expect("metric"),
            devices_online: IntGauge::new("unisono_devices_online", "Devices connected and registered")
                .expect("metric"),
            cluster_nodes: IntGauge::new("unisono_cluster_nodes", "Live nodes of the cluster (1 without one)")
                .expect("metric"),
            cluster_subscriptions: IntGauge::new(
                "unisono_cluster_subscriptions",
                "Redis channels this node subscribes (topics with a subscriber here)",
            )
            .expect("metric"),
            cluster_messages_in: IntCounter::new(
                "unisono_cluster_messages_in_total",
                "Messages this node received from the cluster (bus and requests)",
            )
            .expect("metric"),
            cluster_messages_out: IntCounter::new(
                "unisono_cluster_messages_out_total",
                "Messages this node sent to the cluster (bus and requests)",
            )
            .expect("metric"),
            cluster_forwarded: IntCounter::new(
                "unisono_cluster_forwarded_total",
                "Room requests forwarded to the room's owner on another node",
            )
            .expect("metric"),
            cluster_dropped: IntCounter::new(
                "unisono_cluster_dropped_total",
                "Cluster messages dropped (send queue full, or Redis unreachable)",
            )
            .expect("metric"),
            cluster_bad_messages: IntCounter::new(
                "unisono_cluster_bad_messages_total",
                "Cluster messages that did not decode",
            )
            .expect("metric"),
            cluster_disconnects: IntCounter::new(
                "unisono_cluster_disconnects_total",
                "Times the Redis connection was lost",
            )
            .expect("metric"),
            cluster_takeovers: IntCounter::new(
                "unisono_cluster_takeovers_total",
                "Rooms this node took over from a node that no longer holds them",
            )
            .expect("metric"),
            cluster_members_swept: IntCounter::new(
                "unisono_cluster_members_swept_total",
                "Disconnects and leaves of room members whose node died, at the room's owner",
            )
            .expect("metric"),
            cluster_redis_seconds: histogram(
                "unisono_cluster_redis_seconds",
                "Redis round trips (commands and pipelines)",
                vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0],
            ),
            peer_links: IntGauge::new("unisono_peer_links", "Peer links (seed 001) that are up").expect("metric"),
            peer_sessions: IntGauge::new("unisono_peer_sessions", "Sessions the linked peers announced")
                .expect("metric"),
            peer_lines: IntCounterVec::new(
                Opts::new(
                    "unisono_peer_lines_total",
                    "Lines read from peers: taken (ok) or not (too_long, bad_json, unknown_type, bad_payload, early)",
                ),
                &["result"],
            )
            .expect("metric"),
            peer_dropped: IntCounter::new(
                "unisono_peer_dropped_total",
                "Lines for peers dropped because their link's queue was full",
            )
            .expect("metric"),
            tasks: IntGauge::new("unisono_tasks", "Tokio tasks alive in the server's runtime").expect("metric"),
        };
        let r = &m.registry;
        for c in [
            Box::new(m.connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.sessions.clone()),
            Box::new(m.rooms.clone()),
            Box::new(m.frames_in.clone()),
            Box::new(m.frames_out.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.fanout_seconds.clone()),
            Box::new(m.slow_consumers.clone()),
            Box::new(m.oversized_frames.clone()),
            Box::new(m.store_write_seconds.clone()),
            Box::new(m.store_batch_size.clone()),
            Box::new(m.auth_failures.clone()),
            Box::new(m.device_commands.clone()),
            Box::new(m.device_states.clone()),
            Box::new(m.devices_online.clone()),
            Box::new(m.cluster_nodes.clone()),
            Box::new(m.cluster_subscriptions.clone()),
            Box::new(m.cluster_messages_in.clone()),
            Box::new(m.cluster_messages_out.clone()),
            Box::new(m.cluster_forwarded.clone()),
            Box::new(m.cluster_dropped.clone()),
            Box::new(m.cluster_bad_messages.clone()),
            Box::new(m.cluster_disconnects.clone()),
            Box::new(m.cluster_takeovers.clone()),
            Box::new(m.cluster_members_swept.clone()),
            Box::new(m.cluster_redis_seconds.clone()),
            Box::new(m.peer_links.clone()),
            Box::new(m.peer_sessions.clone()),
            Box::new(m.peer_lines.clone()),
            Box::new(m.peer_dropped.clone()),
            Box::new(m.tasks.clone()),
        ] {
            r.register(c).expect("unique metric names");
        }
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tasks.set(i64::try_from(runtime.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        // `encode_utf8` writes into a String: nothing to convert, and an error is logged, not
        // turned into an empty page that looks like "no metrics".
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "rendering metrics failed");
        }
        out
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

#[cfg(test)]
mod tests {
    use super::METRICS;

    fn tasks_on_page() -> i64 {
        let page = METRICS.render();
        let line = page.lines().find(|l| l.starts_with("unisono_tasks ")).expect("unisono_tasks on the page");
        line["unisono_tasks ".len()..].trim().parse().expect("a count")
    }

    #[tokio::test]
    async fn the_page_counts_the_runtime_s_live_tasks() {
        let before = tasks_on_page();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let parked: Vec<_> = (0..3).map(|_| tokio::spawn(async {})).collect();
        let held = tokio::spawn(async move {
            let _ = stopped.await;
        });
        for t in parked {
            t.await.expect("task");
        }
        assert_eq!(tasks_on_page(), before + 1, "one task still alive");
        let _ = stop.send(());
        held.await.expect("task");
        assert_eq!(tasks_on_page(), before);
    }
}
