//! `cargo xtask fuzz`: builds the libFuzzer targets of `fuzz/` on stable Rust and runs them.
//!
//! cargo-fuzz needs a nightly compiler for `-Zsanitizer`; the same flags work on the stable one
//! with `RUSTC_BOOTSTRAP=1` (the sanitizer runtimes ship with every toolchain), so this builds
//! `fuzz/` (its own workspace, target dir `target/fuzz`) with cargo-fuzz's instrumentation:
//! SanitizerCoverage (8-bit counters, PC table, compare tracing) and AddressSanitizer with its
//! leak checker. Each target then runs for `--secs` on three corpus folders: its working corpus
//! (`target/fuzz/corpus/T`, where libFuzzer adds what it finds), the seeds from the protocol
//! docs (`fuzz/seeds/T`) and past crashes (`fuzz/regressions/T`, which must keep passing). A
//! crash, leak or timeout fails the run and leaves its input in `target/fuzz/artifacts/T/`.
//!
//! `cargo xtask fuzz [--secs N] [--jobs J] [TARGET…]` (defaults: 60 s, 1 job, every target).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run};

/// Every fuzz target (`fuzz/fuzz_targets/T.rs`).
pub const TARGETS: &[&str] = &[
    "ws_frame",
    "sio_events",
    "push_decode",
    "tree_codec",
    "merge_patch",
    "auth_tokens",
    "room_code",
    "rest_bodies",
    "peer_line",
];

/// cargo-fuzz's instrumentation flags (`cargo fuzz build`, address sanitizer).
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Zsanitizer=address",
];

pub struct Options {
    pub secs: u64,
    pub jobs: usize,
    pub targets: Vec<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options { secs: 60, jobs: 1, targets: Vec::new() };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--secs" => o.secs = value()?.parse().context("--secs")?,
                "--jobs" => o.jobs = value()?.parse::<usize>().context("--jobs")?.max(1),
                t if TARGETS.contains(&t) => o.targets.push(t.to_owned()),
                other => bail!("unknown fuzz target or flag {other:?} (targets: {})", TARGETS.join(", ")),
            }
        }
        if o.targets.is_empty() {
            o.targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
        }
        Ok(o)
    }
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host")
}

/// Builds every target; returns the folder holding the binaries.
fn build() -> Result<PathBuf> {
    let root = root();
    let host = host_triple()?;
    let target_dir = root.join("target/fuzz");
    let mut c = cargo();
    // `--target`: build scripts and proc macros stay uninstrumented (ASan cannot load into rustc).
    c.current_dir(root.join("fuzz"))
        .args(["build", "--release", "--bins", "--target", &host])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS.join("\u{1f}"))
        .env_remove("RUSTFLAGS");
    run("build the fuzz targets (libFuzzer, SanitizerCoverage, AddressSanitizer)", c)?;
    Ok(target_dir.join(host).join("release"))
}

fn dir(p: PathBuf) -> Result<PathBuf> {
    std::fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
    Ok(p)
}

fn start(bin: &Path, target: &str, secs: u64) -> Result<Child> {
    let root = root();
    let corpus = dir(root.join("target/fuzz/corpus").join(target))?;
    let artifacts = dir(root.join("target/fuzz/artifacts").join(target))?;
    let log = std::fs::File::create(root.join("target/fuzz").join(format!("{target}.log")))?;
    let mut c = Command::new(bin.join(target));
    c.arg(format!("-max_total_time={secs}"))
        .args(["-timeout=10", "-rss_limit_mb=2048", "-max_len=65536", "-print_final_stats=1"])
        .arg(format!("-dict={}", root.join("fuzz/json.dict").display()))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(corpus);
    for extra in ["fuzz/seeds", "fuzz/regressions"] {
        let d = root.join(extra).join(target);
        if d.is_dir() {
            c.arg(d);
        }
    }
    c.stdout(Stdio::null()).stderr(log);
    c.spawn().with_context(|| format!("start fuzz target {target}"))
}

/// The figures of a finished run, from libFuzzer's log: runs, runs per second, coverage
/// (edges), features, corpus size, peak RSS.
fn summary(target: &str) -> String {
    let log = std::fs::read_to_string(root().join("target/fuzz").join(format!("{target}.log"))).unwrap_or_default();
    let stat =
        |name: &str| log.lines().find_map(|l| l.strip_prefix(&format!("stat::{name}:")).map(|v| v.trim().to_owned()));
    let last = log.lines().rev().find(|l| l.starts_with('#') && l.contains("cov:")).unwrap_or("");
    let field = |name: &str| {
        let mut words = last.split_whitespace();
        words.find(|w| *w == name).and_then(|_| words.next()).unwrap_or("?").to_owned()
    };
    format!(
        "{target:<12} runs {:>10}  exec/s {:>7}  cov {:>5}  ft {:>6}  corpus {:>5}  peak RSS {:>5} MB",
        stat("number_of_executed_units").unwrap_or_else(|| "?".into()),
        stat("average_exec_per_sec").unwrap_or_else(|| "?".into()),
        field("cov:"),
        field("ft:"),
        field("corp:").split('/').next().unwrap_or("?"),
        stat("peak_rss_mb").unwrap_or_else(|| "?".into()),
    )
}

pub fn fuzz(o: &Options) -> Result<()> {
    let bin = build()?;
    let mut failed = Vec::new();
    for batch in o.targets.chunks(o.jobs) {
        let children: Vec<(String, Child)> =
            batch.iter().map(|t| Ok((t.clone(), start(&bin, t, o.secs)?))).collect::<Result<_>>()?;
        for (t, mut child) in children {
            let status = child.wait()?;
            eprintln!("{}", summary(&t));
            if !status.success() {
                failed.push(t);
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (logs in target/fuzz/T.log, inputs in target/fuzz/artifacts/T/; \
             once fixed, copy the input into fuzz/regressions/T/)",
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// [`super::TARGETS`] lists exactly the binaries of `fuzz/Cargo.toml`, so `cargo xtask test`
    /// runs every target there is.
    #[test]
    fn every_fuzz_target_is_run() {
        let manifest = std::fs::read_to_string(crate::root().join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
        let mut bins: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
            .filter(|n| *n != "unisono-fuzz")
            .collect();
        let mut targets = super::TARGETS.to_vec();
        bins.sort_unstable();
        targets.sort_unstable();
        assert_eq!(bins, targets);
        for t in targets {
            assert!(crate::root().join(format!("fuzz/fuzz_targets/{t}.rs")).is_file(), "{t}");
        }
    }
}
