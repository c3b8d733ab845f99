#!/usr/bin/env bash
# A/B of two server builds on the load-test scenarios, runs interleaved so that the machine's
# drift over time hits both alike (docs/benchmarks.md, "Summary").
#
#   benches/ab.sh OLD_BIN NEW_BIN [RUNS] [OUT_DIR]
#
# Build the old server with e.g. `git worktree add /tmp/old REV && (cd /tmp/old &&
# CARGO_TARGET_DIR=$PWD/target-old cargo build --release -p unisono-server)`, the new one and
# the load generator with `cargo build --release -p unisono-server -p unisono-bench`. Each run's
# JSON summary lands in OUT_DIR (default /tmp/unisono-ab) as SCENARIO-{old,new}-N.json.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?old server binary}
new=${2:?new server binary}
runs=${3:-3}
out=${4:-/tmp/unisono-ab}
mkdir -p "$out"
ulimit -n 20000
bench=target/release/unisono-bench
for i in $(seq 1 "$runs"); do
  for side in old new; do
    bin=$old; [ "$side" = new ] && bin=$new
    "$bench" --server-bin "$bin" rooms --rooms 2000 --members 5 --seconds 10 | grep '^{' >"$out/rooms-$side-$i.json"
    "$bench" --server-bin "$bin" rooms --rooms 2000 --members 5 --seconds 10 --max | grep '^{' >"$out/max-$side-$i.json"
    "$bench" --server-bin "$bin" fanout --members 10000 --rate 10 --seconds 10 | grep '^{' >"$out/fanout-$side-$i.json"
    echo "run $i $side done" >&2
  done
done
# One line per run: the figure each scenario's target is about.
for f in "$out"/*.json; do
  node -e '
    const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const name = require("path").basename(process.argv[1], ".json");
    const fig = d.scenario === "fanout"
      ? `last member p50 ${d.last_member.p50_ms.toFixed(1)} p99 ${d.last_member.p99_ms.toFixed(1)} ms, floor ${(d.last_member_floor_ms ?? NaN).toFixed(1)} ms`
      : `p99 ${d.latency.p99_ms.toFixed(1)} ms`;
    console.log(`${name.padEnd(14)} ${Math.round(d.deliveries_per_server_cpu_sec)} deliveries per server CPU-second, ${fig}, missed ${d.deliveries_missed}`);
  ' "$f"
done
