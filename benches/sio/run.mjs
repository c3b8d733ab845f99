// One-command runner of the Socket.IO device benchmark (`cargo xtask bench sio-devices …`):
// starts the server under test on a free port with a fresh data dir (Unisono: release binary,
// SQLite on /dev/shm; Node: relay-server.mjs), runs loadgen.mjs against it, stops it, and prints
// a table (and, with --target both, the Unisono / Node ratios), then one JSON line.
//
//   node benches/sio/run.mjs [--devices 10000] [--target unisono|node|both] [loadgen options]

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { DEFAULTS, printOne, runLoad } from './loadgen.mjs';
import { onLines, parseArgs, sleep } from './common.mjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const o = parseArgs(process.argv.slice(2), {
  ...DEFAULTS,
  target: 'both',
  serverBin: join(ROOT, 'target/release/unisono'),
  dataRoot: existsSync('/dev/shm') ? '/dev/shm' : '/tmp',
  pingSecs: 20,
  sessionQueue: 8192, // Unisono's --session-queue (its default is 256)
});
delete o.url;
const secret = randomBytes(24).toString('hex');

/** Starts a server and resolves with {url, pid, stop} once it prints its address. */
function start(target) {
  let dir = null;
  let child;
  if (target === 'unisono') {
    if (!existsSync(o.serverBin)) throw new Error(`${o.serverBin} not found: cargo build --release -p unisono-server`);
    dir = mkdtempSync(join(o.dataRoot, 'unisono-sio-'));
    child = spawn(o.serverBin, [
      'serve', '--listen', '127.0.0.1:0',
      '--database-url', `sqlite:${join(dir, 'unisono.db')}`,
      '--data-dir', dir, '--web-dir', join(dir, 'no-web'),
      '--jwt-secret', secret,
      // Out of the benchmark's way: 100 commands/s per admin, 2,000 pushes/s per admin.
      '--frames-per-sec', '100000', '--session-queue', String(o.sessionQueue),
      '--ping-secs', String(o.pingSecs),
    ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, UNISONO_LOG: process.env.UNISONO_LOG ?? 'warn', NO_COLOR: '1' } });
  } else {
    child = spawn(process.execPath, [
      fileURLToPath(new URL('./relay-server.mjs', import.meta.url)),
      '--secret', secret, '--ping-secs', String(o.pingSecs),
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
  }
  // The server's log: counted and summarised (first lines of each kind), not echoed.
  const logs = { lines: 0, kinds: new Map() };
  onLines(child.stderr, (raw) => {
    const l = raw.replace(/\x1b\[[0-9;]*m/g, '').replace(/^\S+Z\s+/, '');
    if (!l.trim()) return;
    logs.lines++;
    const kind = l.replace(/[0-9.]+/g, '#').slice(0, 110);
    logs.kinds.set(kind, (logs.kinds.get(kind) ?? 0) + 1);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${target} did not print its address within 30 s`)), 30000);
    child.once('exit', (code) => reject(new Error(`${target} exited (${code}) before listening`)));
    let buf = '';
    const stats = { loopDelayMsP99: 0, loopDelayMsMax: 0, windows: [] };
    let lineBuf = '';
    child.stdout.on('data', (chunk) => {
      buf += chunk;
      lineBuf += chunk;
      const lines = lineBuf.split('\n');
      lineBuf = lines.pop();
      for (const l of lines) {
        if (!l.startsWith('relay-stats ')) continue;
        const st = JSON.parse(l.slice(12));
        stats.loopDelayMsP99 = Math.max(stats.loopDelayMsP99, st.loopDelayMsP99);
        stats.loopDelayMsMax = Math.max(stats.loopDelayMsMax, st.loopDelayMsMax);
        stats.windows.push([new Date().toISOString().slice(11, 19), Math.round(st.loopDelayMsMax)]);
      }
      if (buf.length > 4096) buf = buf.slice(-1024);
      const m = buf.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m && timer) {
        clearTimeout(timer);
        resolve({
          url: m[1],
          pid: child.pid,
          child,
          stats,
          logs,
          dbBytes: () => (dir ? readdirSync(dir).reduce((s, f) => s + (statSync(join(dir, f)).isFile() ? statSync(join(dir, f)).size : 0), 0) : 0),
          stop: async () => {
            child.removeAllListeners('exit');
            child.kill('SIGTERM');
            await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
            if (child.exitCode === null) child.kill('SIGKILL');
            if (dir) rmSync(dir, { recursive: true, force: true });
          },
        });
      }
    });
  });
}

const targets = o.target === 'both' ? ['unisono', 'node'] : [o.target];
const results = {};
for (const t of targets) {
  console.error(`\n==> ${t}: ${o.devices} devices, ${o.admins} admins`);
  const srv = await start(t);
  let died = null;
  srv.child.once('exit', (code, sig) => { died = `${t} server exited during the run (${code ?? sig})`; });
  try {
    const load0 = loadavg()[0];
    const r = await runLoad({ ...o, url: srv.url, secret, serverPid: srv.pid, label: t });
    // Other work on the machine competes for the same cores: keep the 1-minute load with the figures.
    r.loadAvg1 = { start: load0, end: loadavg()[0] };
    if (died) r.serverDied = died;
    if (t === 'unisono') r.dbMiB = srv.dbBytes() / 1048576;
    else r.relayLoopDelay = { ...srv.stats }; // worst 5-s window of the run

    results[t] = r;
    printOne(r);
    console.log(`  1-min load average (2 cores): ${r.loadAvg1.start.toFixed(1)} at start, ${r.loadAvg1.end.toFixed(1)} at end`);
    if (r.relayLoopDelay) console.log(`  relay event-loop delay, worst 5-s window: p99 ${r.relayLoopDelay.loopDelayMsP99.toFixed(0)} ms, max ${r.relayLoopDelay.loopDelayMsMax.toFixed(0)} ms; max per window: ${r.relayLoopDelay.windows.map((w) => w.join(' ')).join(', ')}`);
    if (r.dbMiB !== undefined) console.log(`  SQLite files at end: ${r.dbMiB.toFixed(1)} MiB (tmpfs, not in RSS)`);
    if (died) console.log(`  !! ${died}`);
    const kinds = [...srv.logs.kinds].sort((a, b) => b[1] - a[1]).slice(0, 6);
    r.serverLog = { lines: srv.logs.lines, kinds: Object.fromEntries(kinds) };
    if (srv.logs.lines) {
      console.log(`  server log: ${srv.logs.lines} lines (warn and above), by kind:`);
      for (const [k, n] of kinds) console.log(`    ${String(n).padStart(6)}  ${k}`);
    }
  } finally {
    await srv.stop();
  }
  await sleep(2000);
}

if (results.unisono && results.node) {
  const u = results.unisono;
  const n = results.node;
  const f = (v, d = 1) => (v === undefined || Number.isNaN(v) ? '—' : v.toFixed(d));
  const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}×` : '—');
  const rows = [
    ['', 'Unisono', 'Node relay', 'Unisono / Node'],
    ['states: device→admin p50 (ms)', f(u.statesPhase.latency.p50, 2), f(n.statesPhase.latency.p50, 2), ratio(u.statesPhase.latency.p50, n.statesPhase.latency.p50)],
    ['states: device→admin p99 (ms)', f(u.statesPhase.latency.p99, 2), f(n.statesPhase.latency.p99, 2), ratio(u.statesPhase.latency.p99, n.statesPhase.latency.p99)],
    ['states: server CPU (% of a core)', f(u.statesPhase.pct), f(n.statesPhase.pct), ratio(u.statesPhase.pct, n.statesPhase.pct)],
    ['commands: ack p50 (ms)', f(u.commands.ack.p50, 2), f(n.commands.ack.p50, 2), ratio(u.commands.ack.p50, n.commands.ack.p50)],
    ['commands: ack p99 (ms)', f(u.commands.ack.p99, 2), f(n.commands.ack.p99, 2), ratio(u.commands.ack.p99, n.commands.ack.p99)],
    ['commands: device→admin p99 (ms)', f(u.commandsPhase.latency.p99, 2), f(n.commandsPhase.latency.p99, 2), ratio(u.commandsPhase.latency.p99, n.commandsPhase.latency.p99)],
    ['states + commands: server CPU (%)', f(u.commandsPhase.pct), f(n.commandsPhase.pct), ratio(u.commandsPhase.pct, n.commandsPhase.pct)],
    ['server RSS after setup (MiB)', f(u.rssAfterSetupMiB), f(n.rssAfterSetupMiB), ratio(u.rssAfterSetupMiB, n.rssAfterSetupMiB)],
    ['server RSS at end (MiB)', f(u.rssEndMiB), f(n.rssEndMiB), ratio(u.rssEndMiB, n.rssEndMiB)],
    ['server peak RSS (MiB)', f(u.rssPeakMiB), f(n.rssPeakMiB), ratio(u.rssPeakMiB, n.rssPeakMiB)],
  ];
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log(`\nUnisono vs Node socket.io relay (${o.devices} devices, ${o.admins} admins)`);
  for (const r of rows) console.log('  ' + r.map((x, c) => (c ? x.padStart(w[c]) : x.padEnd(w[c]))).join('  '));
}
console.log(JSON.stringify({ devices: o.devices, results }));
process.exit(0);
