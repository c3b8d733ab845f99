// The reconnect storm (docs/reliability.md, "Reconnect storm"): `/ws` clients (the npm
// package's UnisonoClient) and Socket.IO clients (socket.io-client) in rooms with playback
// running; every host seeks once and is acknowledged; the server is stopped (SIGTERM, or
// `kill -9`) and started again at once on the same port and database; the clients come back with
// their own reconnection. Measured per stop: the share of clients back in their room with the
// same session id, the acknowledged `rev` (or later) and the position of the acknowledged clock
// (within --position-tolerance-ms), the time until the last one is back, hosts still host, and
// the restarted server's peak RSS and CPU during the storm.
//
//   node benches/storm/storm.mjs [--ws 10000] [--sio 5000] [--rooms 1000] [--signal both|term|kill]
//        [--server-bin target/release/unisono] [--pkg target/npm/unisono] [--timeout-secs 60] [--assert]
//        [--hosts ws|sio] [--server unisono|node]
//
// `--hosts sio` makes every room's host a Socket.IO client (`--ws 0` is then allowed).
// `--server node` is the anchor: the same storm against a plain Node socket.io server keeping its
// rooms in memory (benches/storm/node-server.mjs; Socket.IO clients only, hosts included). Every
// run also reports when the clients were *connected* again at all, whatever they found.
//
// With --assert (the CI version, a few hundred clients) it exits 1 unless every client is back
// within the timeout with nothing lost. Clients are held by worker processes (benches/storm/
// worker.mjs, at most --per-worker each: the open-file limit is per process).

import { fork, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { cpuSeconds, listeningPort, memMiB, onLines, parseArgs, sleep } from '../sio/common.mjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const o = parseArgs(process.argv.slice(2), {
  ws: 10000,
  sio: 5000,
  rooms: 1000,
  signal: 'both',
  serverBin: join(ROOT, 'target/release/unisono'),
  pkg: join(ROOT, 'target/npm/unisono'),
  perWorker: 4000,
  concurrency: 64,
  timeoutSecs: 60,
  positionToleranceMs: 50,
  dataRoot: existsSync('/dev/shm') ? '/dev/shm' : '/tmp',
  assert: false,
  hosts: 'ws',
  server: 'unisono',
});
if (o.server === 'node') o.hosts = 'sio';
o.serverBin = resolve(o.serverBin);
o.pkg = resolve(o.pkg);
if (!['unisono', 'node'].includes(o.server) || !['ws', 'sio'].includes(o.hosts)) throw new Error('--server is unisono or node, --hosts ws or sio');
if (o.server === 'node' && o.ws) throw new Error('--server node speaks Socket.IO only: pass --ws 0');
if (o.server === 'unisono' && !existsSync(o.serverBin)) throw new Error(`${o.serverBin} not found: cargo build --release -p unisono-server`);
if (o.ws && !existsSync(join(o.pkg, 'package.json'))) throw new Error(`${o.pkg} not found: cargo xtask npm-pack`);
const hostCount = o.hosts === 'ws' ? o.ws : o.sio;
if (o.ws % o.rooms || o.sio % o.rooms || hostCount < o.rooms) throw new Error(`--ws and --sio must be multiples of --rooms (a --hosts ${o.hosts} host in every room)`);
const wsPerRoom = o.ws / o.rooms;
const sioPerRoom = o.sio / o.rooms;
const signals = o.signal === 'both' ? ['SIGTERM', 'SIGKILL'] : [o.signal === 'term' ? 'SIGTERM' : 'SIGKILL'];
const secret = randomBytes(24).toString('hex');

/** Starts `unisono serve` (or the Node anchor) on `port` (0: any) over `dir`; resolves with {child, port}. */
function startServer(dir, port) {
  const child = o.server === 'node'
    ? spawn(process.execPath, [fileURLToPath(new URL('./node-server.mjs', import.meta.url)), '--listen', `127.0.0.1:${port}`],
      { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(o.serverBin, [
        'serve', '--listen', `127.0.0.1:${port}`,
        '--database-url', `sqlite:${join(dir, 'unisono.db')}`,
        '--data-dir', dir, '--web-dir', join(dir, 'no-web'), '--jwt-secret', secret,
        // Every client here comes from 127.0.0.1: the per-address join limit is for real networks.
        '--joins-per-min', '1000000',
      ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, UNISONO_LOG: process.env.UNISONO_LOG ?? 'warn', NO_COLOR: '1' } });
  const log = { lines: 0, first: [] };
  onLines(child.stderr, (l) => {
    if (!l.trim()) return;
    log.lines++;
    if (log.first.length < 5) log.first.push(l.slice(0, 200));
  });
  return listeningPort(child, 'the server', () => log.first.join(' | ')).then((port) => {
    child.stdout.resume();
    return { child, port, log };
  });
}

/** A worker process and a way to wait for its next message of a type. */
function startWorker() {
  const w = fork(fileURLToPath(new URL('./worker.mjs', import.meta.url)), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  w.waiters = new Map();
  w.back = 0;
  w.on('message', (m) => {
    if (m.type === 'progress') { w.back = m.back; return; }
    if (m.type === 'error') {
      console.error(`worker ${w.pid}: ${m.message}`);
      for (const f of w.waiters.values()) f.reject(new Error(m.message));
      w.waiters.clear();
      return;
    }
    w.waiters.get(m.type)?.resolve(m);
    w.waiters.delete(m.type);
  });
  w.next = (type) => new Promise((resolve, reject) => w.waiters.set(type, { resolve, reject }));
  return w;
}

async function storm(signal) {
  const dir = mkdtempSync(join(o.dataRoot, 'unisono-storm-'));
  let server = await startServer(dir, 0);
  const url = `http://127.0.0.1:${server.port}`;
  const perRoom = wsPerRoom + sioPerRoom;
  const roomsPerWorker = Math.max(1, Math.floor(o.perWorker / perRoom));
  const workers = [];
  try {
    const t0 = performance.now();
    for (let first = 0; first < o.rooms; first += roomsPerWorker) {
      const w = startWorker();
      const indices = Array.from({ length: Math.min(roomsPerWorker, o.rooms - first) }, (_, k) => first + k);
      w.send({ type: 'setup', url, pkg: o.ws ? o.pkg : null, hosts: o.hosts, rooms: indices, ws: wsPerRoom, sio: sioPerRoom, concurrency: Math.ceil(o.concurrency / Math.ceil(o.rooms / roomsPerWorker)) });
      workers.push(w);
    }
    const ready = await Promise.all(workers.map((w) => w.next('ready')));
    const total = ready.reduce((s, r) => s + r.clients, 0);
    console.error(`  ${total} clients in ${o.rooms} rooms after ${((performance.now() - t0) / 1000).toFixed(1)} s (${workers.length} worker processes)`);
    await Promise.all(workers.map((w) => { const p = w.next('seeked'); w.send({ type: 'seek' }); return p; }));
    await sleep(1000); // the seeks' pushes reach the members
    const before = memMiB(server.child.pid);

    // Stop, and start again at once on the same port and database.
    const stoppedAt = performance.timeOrigin + performance.now();
    for (const w of workers) w.send({ type: 'arm', stoppedAt });
    const exited = new Promise((r) => server.child.once('exit', r));
    server.child.kill(signal);
    await exited;
    const downMs = performance.timeOrigin + performance.now() - stoppedAt;
    server = await startServer(dir, server.port);
    const upMs = performance.timeOrigin + performance.now() - stoppedAt;
    const pid = server.child.pid;
    const cpu0 = cpuSeconds(pid);
    let peakCpu = 0;
    let last = cpu0;
    let lastAt = performance.now();
    const deadline = performance.now() + o.timeoutSecs * 1000;
    let back = 0;
    while (performance.now() < deadline) {
      await sleep(250);
      const c = cpuSeconds(pid);
      const now = performance.now();
      if (now - lastAt >= 1000) {
        peakCpu = Math.max(peakCpu, (c.user + c.sys - last.user - last.sys) / ((now - lastAt) / 1000));
        last = c;
        lastAt = now;
      }
      back = workers.reduce((s, w) => s + w.back, 0);
      if (back === total) break;
    }
    const stormCpu = cpuSeconds(pid);
    const mem = memMiB(pid);
    await sleep(1000); // late pushes settle before the positions are read
    const results = (await Promise.all(workers.map((w) => { const p = w.next('result'); w.send({ type: 'report' }); return p; })))
      .flatMap((r) => r.clients);
    return summarize(signal, { results, total, downMs, upMs, before, mem, cpuSecs: stormCpu.user + stormCpu.sys - cpu0.user - cpu0.sys, peakCpu, log: server.log });
  } finally {
    for (const w of workers) w.kill('SIGKILL');
    server.child.kill('SIGKILL');
    await sleep(300);
    rmSync(dir, { recursive: true, force: true });
  }
}

const q = (xs, p) => (xs.length ? xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(p * xs.length) - 1)] : NaN);

function summarize(signal, r) {
  const back = r.results.filter((c) => c.back);
  const times = back.map((c) => c.backAt);
  const linked = r.results.filter((c) => c.reconnectedAt !== null);
  const linkTimes = linked.map((c) => c.reconnectedAt);
  // Every back client of a room shows the room's current rev: the highest any of them has.
  const roomRev = new Map();
  for (const c of back) roomRev.set(c.code, Math.max(roomRev.get(c.code) ?? -1, c.rev));
  const staleRev = back.filter((c) => c.rev !== roomRev.get(c.code)).length;
  // Clients in their room again but behind the acknowledged seek (being back needs its rev, so
  // count these among all clients, not the back ones).
  const lostAck = r.results.filter((c) => c.ackedRev !== null && c.inRoom && c.rev < c.ackedRev).length;
  const errs = back.map((c) => Math.abs(c.positionErrMs ?? Infinity));
  const offPosition = errs.filter((e) => !(e <= o.positionToleranceMs)).length;
  const hosts = r.results.filter((c) => c.isHost);
  const byKind = (k) => { const all = r.results.filter((c) => c.kind === k); return `${all.filter((c) => c.back).length}/${all.length}`; };
  // Per kind: p50 of connected-again and of back, to tell the transport's part from the re-join's.
  const gaps = (k) => {
    const all = r.results.filter((c) => c.kind === k);
    const p50 = (xs) => (xs.length ? (q(xs, 0.5) / 1000).toFixed(2) : '—');
    return `${p50(all.filter((c) => c.reconnectedAt !== null).map((c) => c.reconnectedAt))} s → ${p50(all.filter((c) => c.back).map((c) => c.backAt))} s`;
  };
  const s = {
    signal, clients: r.total, back: back.length, backShare: back.length / r.total,
    wsBack: byKind('ws'), sioBack: byKind('sio'), wsP50: gaps('ws'), sioP50: gaps('sio'),
    reconnected: linked.length, lastReconnectSecs: linkTimes.length ? Math.max(...linkTimes) / 1000 : NaN,
    p50ReconnectSecs: q(linkTimes, 0.5) / 1000, p99ReconnectSecs: q(linkTimes, 0.99) / 1000,
    lastBackSecs: times.length ? Math.max(...times) / 1000 : NaN, p50BackSecs: q(times, 0.5) / 1000, p99BackSecs: q(times, 0.99) / 1000,
    serverDownMs: Math.round(r.downMs), serverUpMs: Math.round(r.upMs),
    staleRev, lostAck, offPosition, positionErrP99Ms: q(errs.filter(Number.isFinite), 0.99),
    hostsStillHost: `${hosts.filter((c) => c.hostNow).length}/${hosts.length}`,
    rssBeforeMiB: r.before.rss, peakRssMiB: r.mem.hwm, stormCpuSecs: r.cpuSecs, peakCpuCores: r.peakCpu,
    serverWarnLines: r.log.lines, firstWarnings: r.log.first,
    notBack: r.results.filter((c) => !c.back).slice(0, 5),
  };
  const ok = s.back === s.clients && !s.staleRev && !s.lostAck && !s.offPosition;
  console.log(`\n${signal === 'SIGKILL' ? 'kill -9' : 'SIGTERM'}: ${s.back}/${s.clients} back (${(100 * s.backShare).toFixed(1)} %; /ws ${s.wsBack}, Socket.IO ${s.sioBack})`);
  console.log(`  server exited after ${s.serverDownMs} ms, listening again after ${s.serverUpMs} ms`);
  console.log(`  connected again (whatever they found): ${s.reconnected}/${s.clients}, p50 ${s.p50ReconnectSecs.toFixed(2)} s, p99 ${s.p99ReconnectSecs.toFixed(2)} s, last ${s.lastReconnectSecs.toFixed(2)} s`);
  console.log(`  p50 connected again → back: /ws ${s.wsP50}, Socket.IO ${s.sioP50}`);
  console.log(`  back after: p50 ${s.p50BackSecs.toFixed(2)} s, p99 ${s.p99BackSecs.toFixed(2)} s, last ${s.lastBackSecs.toFixed(2)} s (from the stop)`);
  console.log(`  acknowledged seeks lost: ${s.lostAck}; clients not at the room's current rev: ${s.staleRev}; position off by > ${o.positionToleranceMs} ms: ${s.offPosition} (p99 |error| ${s.positionErrP99Ms.toFixed(1)} ms)`);
  console.log(`  hosts still host: ${s.hostsStillHost}`);
  console.log(`  server RSS ${s.rssBeforeMiB.toFixed(0)} MiB before the stop; restarted server: peak RSS ${s.peakRssMiB.toFixed(0)} MiB, ${s.stormCpuSecs.toFixed(1)} CPU-s during the storm, peak ${s.peakCpuCores.toFixed(2)} cores (1-s window)`);
  if (s.serverWarnLines) console.log(`  restarted server logged ${s.serverWarnLines} warnings, first: ${s.firstWarnings.join(' | ')}`);
  if (s.notBack.length) console.log(`  not back, e.g.: ${JSON.stringify(s.notBack)}`);
  s.ok = ok;
  return s;
}

console.error(`reconnect storm against ${o.server === 'node' ? 'a Node socket.io server (the anchor)' : 'unisono'}: ${o.ws} /ws + ${o.sio} Socket.IO clients in ${o.rooms} rooms (${o.hosts} hosts); ${cpus().length} cores, load ${loadavg()[0].toFixed(1)}`);
const all = [];
for (const sig of signals) all.push(await storm(sig));
console.log(JSON.stringify({ scenario: 'storm', server: o.server, hosts: o.hosts, ws: o.ws, sio: o.sio, rooms: o.rooms, runs: all.map(({ notBack, firstWarnings, ...s }) => s) }));
process.exit(o.assert && !all.every((s) => s.ok) ? 1 : 0);
