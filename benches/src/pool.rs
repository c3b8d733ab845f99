//! The coordinator's side of the worker processes: spawn `unisono-bench worker …` children,
//! send them commands, and gather their [`Report`]s (printing setup progress on stderr).

use std::{process::Stdio, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::mpsc,
    time::Instant,
};

use crate::{
    Target,
    worker::{Report, RunResult},
};

enum Event {
    Report(Report),
    Exited(String),
}

/// A setup outcome summed over workers.
#[derive(Debug, Default, Clone)]
pub struct Ready {
    pub connected: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    /// Resident memory of all workers, KiB.
    pub rss_kib: u64,
    pub secs: f64,
}

impl Ready {
    /// Fails when any client failed to set up: the figures of a scenario run with part of its
    /// clients would be of another scenario (a server limit in the way reads as a result).
    pub fn require_all(&self, what: &str) -> Result<()> {
        if self.failed > 0 {
            bail!(
                "{} of {} {what} failed to set up (errors above); raise the server limit in the way \
                 (benches/src/server.rs, BENCH_FLAGS) rather than report this run",
                self.failed,
                self.failed + self.connected
            );
        }
        Ok(())
    }
}

/// Running worker processes.
pub struct Pool {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
}

/// Splits `total` into `parts` near-equal shares.
pub fn split(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts).map(|i| total / parts + usize::from(i < total % parts)).collect()
}

impl Pool {
    /// Starts one worker per entry of `modes` (each the worker subcommand's arguments).
    pub fn spawn(target: &Target, url: &str, t0_us: u64, modes: Vec<Vec<String>>) -> Result<Pool> {
        let exe = std::env::current_exe().context("own executable")?;
        let concurrency = (target.connect_concurrency / modes.len().max(1)).max(1);
        let (tx, events) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for (i, mode) in modes.into_iter().enumerate() {
            let mut child = Command::new(&exe)
                .args(["--url", url, "--connect-concurrency", &concurrency.to_string()])
                .args(["worker", "--t0-us", &t0_us.to_string()])
                .args(&mode)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("start a worker process")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            stdins.push(child.stdin.take().context("worker stdin")?);
            children.push(child);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                loop {
                    match lines.next_line().await {
                        Ok(Some(line)) => match serde_json::from_str::<Report>(&line) {
                            Ok(r) => {
                                let _ = tx.send((i, Event::Report(r)));
                            }
                            Err(_) => eprintln!("worker {i}: {line}"),
                        },
                        Ok(None) => {
                            let _ = tx.send((i, Event::Exited("exited".into())));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send((i, Event::Exited(format!("unreadable output: {e}"))));
                            return;
                        }
                    }
                }
            });
        }
        Ok(Pool { children, stdins, events })
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Waits until every worker finished its setup (`total` connections in all).
    pub async fn wait_ready(&mut self, total: u64, timeout: Duration) -> Result<Ready> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut progress = vec![0u64; self.len()];
        let mut ready: Vec<Option<Ready>> = vec![None; self.len()];
        let mut last_print = Instant::now();
        while ready.iter().any(Option::is_none) {
            let (i, ev) = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "setup did not finish within {timeout:?} ({} of {total} connected)",
                        progress.iter().sum::<u64>()
                    )
                })?
                .context("workers gone")?;
            match ev {
                Event::Report(Report::Progress { connected }) => {
                    progress[i] = connected;
                    if last_print.elapsed() >= Duration::from_secs(2) {
                        last_print = Instant::now();
                        eprintln!(
                            "  setup: {}/{total} connected ({:.0} s)",
                            progress.iter().sum::<u64>(),
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                Event::Report(Report::Ready { connected, failed, errors, rss_kib }) => {
                    progress[i] = connected;
                    let errors = errors.into_iter().map(|(e, n)| format!("{n}× {e}")).collect();
                    ready[i] = Some(Ready { connected, failed, errors, rss_kib, secs: 0.0 });
                }
                Event::Report(Report::Result(_)) => bail!("worker {i} sent a result during setup"),
                Event::Exited(why) => bail!("worker {i} {why} during setup"),
            }
        }
        let mut sum = Ready { secs: started.elapsed().as_secs_f64(), ..Ready::default() };
        for r in ready.into_iter().flatten() {
            sum.connected += r.connected;
            sum.failed += r.failed;
            sum.rss_kib += r.rss_kib;
            sum.errors.extend(r.errors);
        }
        Ok(sum)
    }

    /// Sends a command line to every worker.
    pub async fn command(&mut self, cmd: &str) -> Result<()> {
        for (i, stdin) in self.stdins.iter_mut().enumerate() {
            stdin.write_all(format!("{cmd}\n").as_bytes()).await.with_context(|| format!("command worker {i}"))?;
            stdin.flush().await?;
        }
        Ok(())
    }

    /// Waits for one result per worker.
    pub async fn wait_results(&mut self, timeout: Duration) -> Result<Vec<RunResult>> {
        let deadline = Instant::now() + timeout;
        let mut results: Vec<Option<RunResult>> = (0..self.len()).map(|_| None).collect();
        while results.iter().any(Option::is_none) {
            let (i, ev) = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| anyhow!("workers did not report within {timeout:?}"))?
                .context("workers gone")?;
            match ev {
                Event::Report(Report::Result(r)) => results[i] = Some(*r),
                Event::Report(_) => {}
                Event::Exited(why) => bail!("worker {i} {why} before reporting"),
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Tells the workers to exit and waits for them (killing any that hang).
    pub async fn shutdown(mut self) {
        let _ = self.command("exit").await;
        self.stdins.clear();
        for c in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(10), c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }
}
