//! The scenarios. Each starts (or targets) a server, spreads its connections over worker
//! processes, measures, prints a table and a final JSON line.

pub mod fanout;
pub mod idle_rss;
pub mod probe;
pub mod rooms;

use crate::{
    Target,
    report::print_pairs,
    server::{Server, redis_commandstats, redis_info},
    stats::fmt_ms,
    sys::CpuMeter,
};

/// What a cluster run adds: Redis's commands and CPU over the run, the query probe.
pub struct ClusterMeter {
    url: String,
    commands: u64,
    by_command: std::collections::BTreeMap<String, u64>,
    cpu: Option<CpuMeter>,
    probe: probe::Probe,
}

/// [`ClusterMeter`]'s figures.
pub struct ClusterFigures {
    pub nodes: usize,
    pub redis_commands: u64,
    /// Calls per Redis command over the run (the busiest first).
    pub by_command: Vec<(String, u64)>,
    pub redis_cpu_secs: Option<f64>,
    pub probe: probe::Probed,
}

impl ClusterMeter {
    /// Starts measuring when `server` is a cluster (else `None`).
    pub async fn start(server: &Server, target: &Target) -> anyhow::Result<Option<ClusterMeter>> {
        let Some((url, _)) = &server.redis else { return Ok(None) };
        let pid = redis_info(url, "process_id").ok().map(|p| p as u32);
        let cpu = pid.and_then(|p| CpuMeter::start(p).ok());
        let probe = probe::Probe::start(server, &target.server_bin).await?;
        Ok(Some(ClusterMeter {
            url: url.clone(),
            commands: redis_info(url, "total_commands_processed")?,
            by_command: redis_commandstats(url)?,
            cpu,
            probe,
        }))
    }

    pub async fn finish(self, nodes: usize) -> anyhow::Result<ClusterFigures> {
        let probe = self.probe.stop().await?;
        let commands = redis_info(&self.url, "total_commands_processed")?.saturating_sub(self.commands);
        let cpu = self.cpu.and_then(|c| c.elapsed().ok()).map(|t| t.total());
        let mut by_command: Vec<(String, u64)> = redis_commandstats(&self.url)?
            .into_iter()
            .map(|(k, v)| {
                let before = self.by_command.get(&k).copied().unwrap_or(0);
                (k, v.saturating_sub(before))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        by_command.sort_by_key(|c| std::cmp::Reverse(c.1));
        Ok(ClusterFigures { nodes, redis_commands: commands, by_command, redis_cpu_secs: cpu, probe })
    }
}

impl ClusterFigures {
    /// The cluster's rows of a report, `deliveries` and `pushes` being the run's.
    pub fn print(&self, deliveries: u64, pushes: u64) {
        let per = |n: u64| if n > 0 { format!("{:.3}", self.redis_commands as f64 / n as f64) } else { "-".into() };
        print_pairs(&[
            ("nodes (Redis + PostgreSQL)", self.nodes.to_string()),
            ("Redis commands (incl. the probe's)", self.redis_commands.to_string()),
            (
                "  by command",
                self.by_command.iter().take(6).map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "),
            ),
            ("Redis commands per push / per delivery", format!("{} / {}", per(pushes), per(deliveries))),
            ("Redis CPU", self.redis_cpu_secs.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "-".into())),
            (
                "get-members through another node p50 / p99",
                format!("{} / {}", fmt_ms(self.probe.members.p50_ms), fmt_ms(self.probe.members.p99_ms)),
            ),
            (
                "GET /api/cluster p50 / p99",
                format!("{} / {}", fmt_ms(self.probe.status.p50_ms), fmt_ms(self.probe.status.p99_ms)),
            ),
            ("probe failures", self.probe.failures.to_string()),
        ]);
    }

    pub fn json(&self, deliveries: u64, pushes: u64) -> serde_json::Value {
        serde_json::json!({
            "nodes": self.nodes,
            "redis_commands": self.redis_commands,
            "redis_commands_by_name": self.by_command.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "redis_commands_per_push": (pushes > 0).then(|| self.redis_commands as f64 / pushes as f64),
            "redis_commands_per_delivery": (deliveries > 0).then(|| self.redis_commands as f64 / deliveries as f64),
            "redis_cpu_secs": self.redis_cpu_secs,
            "get_members_ms": self.probe.members,
            "cluster_status_ms": self.probe.status,
            "probe_failures": self.probe.failures,
            "target_query_p99_ms": probe::TARGET_P99_MS,
        })
    }
}

/// How many workers `clients` connections need, at most `--per-worker` each.
fn workers_for(target: &Target, clients: usize) -> usize {
    clients.div_ceil(target.per_worker as usize).max(1)
}

/// CPU cores of this machine (shared by the server and the load generator).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The note printed under every result: the load generator shares the machine.
fn print_machine_note(latency: bool) {
    let cores = cores();
    println!("  note: {cores} CPU cores, shared by the server and the load generator (same machine, loopback).");
    if latency {
        println!(
            "  Client CPU time competes with the server's, and a client busy reading other sockets reads a\n  \
             push later: latencies include that."
        );
    }
}
