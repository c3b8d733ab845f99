// The soak (docs/reliability.md, "Soak"): a moderate, steady mixed load on one `unisono serve`
// for --minutes, with connections dropped and rooms replaced all the time, while the server's
// RSS, open file descriptors, live tokio tasks (`unisono_tasks` on /metrics) and SQLite size are
// sampled. After the warm-up each series' slope is fitted (least squares, per hour) and the last
// quarter is compared with the first quarter of the measured part.
//
// The load, by default:
// - 40 rooms, each a `/ws` host (the npm package's UnisonoClient), 2 `/ws` members and 2
//   socket.io-client members; every host does a clock or queue operation every ~4 s (seek, pause,
//   resume, queue-add, play-next, set-rate); members report drift;
// - every 10 s a room is replaced: all its members leave and close, a new room with new clients
//   takes its place (the empty one closes after --empty-room-ttl-secs 5);
// - 100 devices on /players sending their state every ~5 s and answering commands;
// - 3 admins on /admin listing devices every ~10 s and sending `vlc:play` to an online device
//   every ~2 s;
// - every 2 s one connection is dropped at the transport: a Socket.IO member, device or admin
//   (socket.io-client reconnects, resumes or re-registers) or a `/ws` member (closed; a new
//   client joins the room in its place; the old session expires after its resume grace).
// Errors are every failed request, command or join, and every error push, except those the
// injected drops explain (a request on a connection being dropped); they must be 0.
//
//   node benches/soak/soak.mjs [--minutes 30] [--warmup-share 0.25] [--sample-secs 5]
//        [--server-bin target/release/unisono] [--pkg target/npm/unisono] [--assert]
//
// With --assert (the CI version: --minutes 2) it exits 1 on any error, a server ERROR log line,
// or a last-quarter median of tasks or file descriptors above the first quarter's by more than
// max(20, 10 %), or of RSS by more than 25 %.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { cpuSeconds, listeningPort, memMiB, onLines, parseArgs, signJwt, sleep } from '../sio/common.mjs';

globalThis.WebSocket ??= WebSocket;
const require = createRequire(import.meta.url);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const o = parseArgs(process.argv.slice(2), {
  minutes: 30,
  warmupShare: 0.25,
  sampleSecs: 5,
  rooms: 40,
  devices: 100,
  admins: 3,
  serverBin: join(ROOT, 'target/release/unisono'),
  pkg: join(ROOT, 'target/npm/unisono'),
  dataRoot: '/tmp',
  assert: false,
});
o.serverBin = resolve(o.serverBin);
o.pkg = resolve(o.pkg);
if (!existsSync(o.serverBin)) throw new Error(`${o.serverBin} not found: cargo build --release -p unisono-server`);
if (!existsSync(join(o.pkg, 'package.json'))) throw new Error(`${o.pkg} not found: cargo xtask npm-pack`);
const { UnisonoClient } = require(o.pkg);

const TENANT = 'soak';
const secret = randomBytes(24).toString('hex');
const token = (sub, role) => signJwt({ sub, tenant: TENANT, role, exp: Math.floor(Date.now() / 1000) + 86400 }, secret);
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)];
const jitter = (ms) => ms * (0.5 + Math.random());

// ---- counters ---------------------------------------------------------------------------------

const counts = { requests: 0, commands: 0, states: 0, drops: 0, roomsReplaced: 0, injected: 0 };
const errors = [];
function fail(what, e) {
  errors.push(`${what}: ${e?.code ?? ''} ${e?.message ?? JSON.stringify(e)}`.trim());
}
/**
 * Runs a request; a failure counts unless one of the connections it involves (`conns`: one, or
 * an admin and its command's device) was dropped meanwhile (injected).
 */
async function guarded(what, conns, f) {
  const all = Array.isArray(conns) ? conns : [conns];
  const epochs = all.map((c) => c.epoch);
  try {
    counts.requests++;
    return await f();
  } catch (e) {
    if (all.some((c, i) => c.epoch !== epochs[i] || c.dropping || c.gone)) counts.injected++;
    else fail(what, e);
    return undefined;
  }
}

// ---- the server -------------------------------------------------------------------------------

const dir = mkdtempSync(join(o.dataRoot, 'unisono-soak-'));
const dbFile = join(dir, 'unisono.db');
const serverLog = { warn: 0, error: 0, first: [] };
const server = spawn(o.serverBin, [
  'serve', '--listen', '127.0.0.1:0', '--database-url', `sqlite:${dbFile}`, '--data-dir', dir,
  '--web-dir', join(dir, 'no-web'), '--jwt-secret', secret, '--joins-per-min', '1000000',
  '--empty-room-ttl-secs', '5',
], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, UNISONO_LOG: 'warn', NO_COLOR: '1' } });
onLines(server.stderr, (l) => {
  if (/\bERROR\b/.test(l)) serverLog.error++;
  else if (/\bWARN\b/.test(l)) serverLog.warn++;
  else return;
  if (serverLog.first.length < 8) serverLog.first.push(l.slice(0, 240));
});
const port = await listeningPort(server, 'the server', () => serverLog.first.join(' | '));
server.stdout.resume();
server.once('exit', (c, s) => { if (!stopping) { console.error(`the server died (${c ?? s})`); process.exit(2); } });
let stopping = false;
const url = `http://127.0.0.1:${port}`;
const wsUrl = `ws://127.0.0.1:${port}/ws`;

// ---- rooms ------------------------------------------------------------------------------------

const song = (n) => ({ id: `soak-${n}`, title: `Soak ${n}`, provider: 'url', url: `https://example.com/${n}.mp3`, durationMs: 600_000 });
let songs = 0;

function wsConn() {
  const c = new UnisonoClient();
  const conn = { kind: 'ws', c, epoch: 0, dropping: false, gone: false };
  c.onError = (e) => { if (!conn.gone) fail('ws error push', e); };
  return conn;
}

function sioConn(ns, auth, name) {
  const s = io(url + ns, { transports: ['websocket'], forceNew: true, auth, reconnectionDelayMax: 2000 });
  const conn = { kind: 'sio', s, epoch: 0, dropping: false, gone: false, name };
  s.on('connect', () => { conn.dropping = false; });
  s.on('error', (e) => { if (!conn.gone) fail(`${name} error event`, e); });
  s.on('connect_error', (e) => { if (!conn.gone && !conn.dropping) fail(`${name} connect_error`, e); });
  return conn;
}

/** Socket.IO request with Unisono's ack shape. */
async function call(conn, event, data, ms = 15000) {
  const r = await conn.s.timeout(ms).emitWithAck(event, data);
  if (!r?.ok) throw Object.assign(new Error(r?.error?.message ?? 'failed'), { code: r?.error?.code ?? 'NO_ACK' });
  return r.data;
}

const rooms = [];

async function openRoom(n) {
  const host = wsConn();
  await host.c.connect(wsUrl);
  const { code } = await host.c.createRoom({ name: `soak-${n}`, memberName: 'host' });
  await host.c.loadSong(song(songs++), true);
  const room = { n, code, host, ws: [], sio: [] };
  for (let j = 0; j < 2; j++) room.ws.push(await wsMember(code, `w${j}`));
  for (let j = 0; j < 2; j++) room.sio.push(await sioMember(code, `s${j}`));
  rooms.push(room);
  return room;
}

async function wsMember(code, name) {
  const m = wsConn();
  await m.c.connect(wsUrl);
  await m.c.joinRoom(code, name);
  return m;
}

async function sioMember(code, name) {
  const m = sioConn('', {}, `member ${name}`);
  m.s.on('connected', (hello) => {
    m.s.auth = { resume: hello.resumeToken };
    // A resume into the room needs nothing; a session that was lost re-joins by code.
    if (m.joined && !hello.resumed) guarded('sio re-join', m, () => call(m, 'join-room', { code, name }));
  });
  await new Promise((res, rej) => { m.s.once('connected', res); m.s.once('connect_error', rej); });
  await call(m, 'join-room', { code, name });
  m.joined = true;
  return m;
}

function close(conn) {
  conn.gone = true;
  if (conn.kind === 'ws') conn.c.close();
  else conn.s.disconnect();
}

async function replaceRoom() {
  const old = rooms.shift();
  for (const m of [...old.ws, ...old.sio]) close(m);
  await guarded('host leave', old.host, () => old.host.c.leaveRoom());
  close(old.host);
  await openRoom(old.n + o.rooms);
  counts.roomsReplaced++;
}

const hostOps = [
  (c) => c.seek(Math.random() * 500_000),
  (c) => c.pause(),
  (c) => c.resume(),
  (c) => c.queueAdd(song(songs++)),
  // Only with something queued: with an empty queue it unloads the song, after which pause and
  // seek would (rightly) answer NO_SONG.
  (c) => ((c.queue?.length ?? 0) > 0 ? c.playNext() : c.queueAdd(song(songs++))),
  (c) => c.setRate(pick([0.75, 1, 1.25])),
];

// ---- devices and admins -----------------------------------------------------------------------

const devices = [];
function device(i) {
  const id = `soak-dev-${i}`;
  const d = sioConn('/players', { token: token(id, 'player') }, `device ${id}`);
  d.id = id;
  d.sends = 0;
  d.registered = false;
  d.s.on('connect', () => {
    d.registered = false;
    guarded('player:register', d, () => call(d, 'player:register', { deviceId: id, name: `Kiosk ${i}` }))
      .then((r) => { if (r) d.registered = true; });
  });
  d.s.on('disconnect', () => { d.registered = false; d.lastDrop = Date.now(); });
  d.s.on('player:command', (c, ack) => {
    const answer = { status: 'success', result: { at: Date.now() } };
    if (typeof ack === 'function') ack(answer);
    else d.s.emit('player:command:response', { commandId: c.commandId, ...answer });
  });
  return d;
}

function deviceState(d) {
  d.sends++;
  return {
    timestamp: new Date().toISOString(),
    system: { cpu: (d.sends * 7) % 100, memory: { used: 512 + (d.sends % 16), total: 2048 }, uptime: d.sends * 5 },
    vlc: { state: 'playing', time: d.sends * 5, length: 3600, volume: 80 },
    app: { version: '1.4.2' },
  };
}

const admins = [];
function admin(i) {
  const a = sioConn('/admin', { token: token(`admin-${i}`, 'admin') }, `admin ${i}`);
  return a;
}

// ---- sampling ---------------------------------------------------------------------------------

const samples = [];
async function metrics() {
  const page = await (await fetch(`${url}/metrics`)).text();
  const get = (name) => Number((page.match(new RegExp(`^${name} (\\S+)$`, 'm')) ?? [0, NaN])[1]);
  return { tasks: get('unisono_tasks'), sessions: get('unisono_sessions'), rooms: get('unisono_rooms'), connections: get('unisono_connections') };
}
const fileSize = (f) => { try { return statSync(f).size; } catch { return 0; } };
async function sample(t0) {
  const m = await metrics();
  samples.push({
    t: (performance.now() - t0) / 1000,
    rssMiB: memMiB(server.pid).rss,
    fds: readdirSync(`/proc/${server.pid}/fd`).length,
    tasks: m.tasks,
    dbKiB: (fileSize(dbFile) + fileSize(`${dbFile}-wal`)) / 1024,
    sessions: m.sessions,
    rooms: m.rooms,
    cpuSecs: (({ user, sys }) => user + sys)(cpuSeconds(server.pid)),
  });
}

/** Least-squares slope of `key` against time, per hour. */
function slopePerHour(xs, key) {
  const n = xs.length;
  const mt = xs.reduce((s, x) => s + x.t, 0) / n;
  const my = xs.reduce((s, x) => s + x[key], 0) / n;
  let num = 0;
  let den = 0;
  for (const x of xs) { num += (x.t - mt) * (x[key] - my); den += (x.t - mt) ** 2; }
  return den ? (num / den) * 3600 : 0;
}
const median = (xs) => { const s = xs.slice().sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

// ---- the run ----------------------------------------------------------------------------------

console.error(`soak: ${o.minutes} min, ${o.rooms} rooms × 5 clients, ${o.devices} devices, ${o.admins} admins, on ${url}`);
for (let n = 0; n < o.rooms; n++) await openRoom(n);
for (let i = 0; i < o.devices; i++) devices.push(device(i));
for (let i = 0; i < o.admins; i++) admins.push(admin(i));
await sleep(1000);

const timers = [];
const every = (ms, f) => {
  let busy = false;
  const run = async () => {
    if (!busy) {
      busy = true;
      try { await f(); } catch (e) { fail('driver', e); }
      busy = false;
    }
    timers.push(setTimeout(run, jitter(ms)));
  };
  timers.push(setTimeout(run, jitter(ms)));
};

// Hosts: one operation every ~4 s each; members: drift reports.
every(4000 / o.rooms, () => {
  const r = pick(rooms);
  return guarded('host operation', r.host, () => pick(hostOps)(r.host.c));
});
every(10000 / o.rooms, () => {
  const r = pick(rooms);
  const m = pick(r.ws);
  return guarded('report-drift', m, () => m.c.reportDrift(Math.random() * 20 - 10));
});
every(10000, replaceRoom);
// Devices: a state every ~5 s each.
every(5000 / o.devices, () => {
  const d = pick(devices);
  if (!d.registered) return undefined;
  counts.states++;
  return guarded('player:state', d, () => call(d, 'player:state', deviceState(d)));
});
// Admins: lists and commands to devices that are registered and were not dropped lately.
every(10000 / o.admins, () => {
  const a = pick(admins);
  if (!a.s.connected) return undefined;
  return guarded('devices:list', a, () => call(a, 'devices:list', {}));
});
every(2000, () => {
  const a = pick(admins);
  const d = pick(devices);
  if (!a.s.connected || !d.registered || Date.now() - (d.lastDrop ?? 0) < 15000) return undefined;
  counts.commands++;
  return guarded('command', [a, d], () => call(a, 'command', { deviceId: d.id, command: 'vlc:play', params: {} }, 30000));
});
// Drops: every 2 s one connection at the transport.
every(2000, async () => {
  counts.drops++;
  const kind = pick(['sio-member', 'device', 'device', 'admin', 'ws-member']);
  if (kind === 'ws-member') {
    const r = pick(rooms);
    const k = Math.floor(Math.random() * r.ws.length);
    const old = r.ws[k];
    old.epoch++;
    close(old);
    r.ws[k] = await wsMember(r.code, `w${k}`);
    return;
  }
  const conn = kind === 'device' ? pick(devices) : kind === 'admin' ? pick(admins) : pick(pick(rooms).sio);
  if (!conn.s.connected) return;
  conn.epoch++;
  conn.dropping = true;
  conn.s.io.engine.close(); // the transport only: socket.io-client reconnects by itself
});

const t0 = performance.now();
const end = t0 + o.minutes * 60_000;
await sample(t0);
let lastPrint = 0;
while (performance.now() < end) {
  await sleep(o.sampleSecs * 1000);
  await sample(t0);
  const s = samples.at(-1);
  if (s.t - lastPrint >= 60 || performance.now() >= end) {
    lastPrint = s.t;
    console.error(`  ${(s.t / 60).toFixed(1)} min: RSS ${s.rssMiB.toFixed(1)} MiB, ${s.fds} fds, ${s.tasks} tasks, db ${s.dbKiB.toFixed(0)} KiB, ${s.sessions} sessions, ${s.rooms} rooms; ${counts.requests} requests, ${counts.drops} drops, ${errors.length} errors`);
  }
}

// ---- report -----------------------------------------------------------------------------------

stopping = true;
for (const t of timers) clearTimeout(t);
const measured = samples.filter((s) => s.t >= o.minutes * 60 * o.warmupShare);
const quarter = Math.max(1, Math.floor(measured.length / 4));
const first = measured.slice(0, quarter);
const last = measured.slice(-quarter);
const series = ['rssMiB', 'fds', 'tasks', 'dbKiB', 'sessions', 'rooms'];
const report = {};
for (const k of series) {
  report[k] = {
    start: samples[0][k], warm: measured[0][k], end: samples.at(-1)[k], max: Math.max(...measured.map((s) => s[k])),
    slopePerHour: slopePerHour(measured, k), firstQuarterMedian: median(first.map((s) => s[k])), lastQuarterMedian: median(last.map((s) => s[k])),
  };
}
const cpu = (samples.at(-1).cpuSecs - measured[0].cpuSecs) / (samples.at(-1).t - measured[0].t);
const grew = (k, abs, rel) => report[k].lastQuarterMedian - report[k].firstQuarterMedian > Math.max(abs, rel * report[k].firstQuarterMedian);
const problems = [];
if (errors.length) problems.push(`${errors.length} errors`);
if (serverLog.error) problems.push(`${serverLog.error} server ERROR lines`);
if (grew('tasks', 20, 0.1)) problems.push('tasks grew');
if (grew('fds', 20, 0.1)) problems.push('file descriptors grew');
if (grew('rssMiB', 0, 0.25)) problems.push('RSS grew');

const units = { rssMiB: 'MiB', fds: '', tasks: '', dbKiB: 'KiB', sessions: '', rooms: '' };
console.log(`\nsoak over ${o.minutes} min (warm-up ${(o.minutes * o.warmupShare).toFixed(1)} min excluded from the slopes):`);
for (const k of series) {
  const r = report[k];
  console.log(`  ${k.padEnd(8)} start ${r.start.toFixed(1)}, after warm-up ${r.warm.toFixed(1)}, end ${r.end.toFixed(1)}, max ${r.max.toFixed(1)} ${units[k]}; slope ${r.slopePerHour >= 0 ? '+' : ''}${r.slopePerHour.toFixed(2)} ${units[k]}/h; medians first/last quarter ${r.firstQuarterMedian.toFixed(1)} / ${r.lastQuarterMedian.toFixed(1)}`);
}
console.log(`  load: ${counts.requests} requests, ${counts.states} device states, ${counts.commands} commands, ${counts.drops} injected drops, ${counts.roomsReplaced} rooms replaced; server ${cpu.toFixed(3)} cores after warm-up`);
console.log(`  errors: ${errors.length} (+ ${counts.injected} explained by injected drops); server log: ${serverLog.warn} WARN, ${serverLog.error} ERROR lines`);
for (const e of errors.slice(0, 10)) console.log(`    ${e}`);
for (const l of serverLog.first) console.log(`    server: ${l}`);
console.log(problems.length ? `  PROBLEMS: ${problems.join(', ')}` : '  flat: no errors, tasks, fds and RSS within bounds');
console.log(JSON.stringify({ scenario: 'soak', minutes: o.minutes, counts, errors: errors.length, injected: counts.injected, serverLog: { warn: serverLog.warn, error: serverLog.error }, cpuCores: cpu, report, problems }));

for (const r of rooms) for (const m of [r.host, ...r.ws, ...r.sio]) close(m);
for (const c of [...devices, ...admins]) close(c);
server.kill('SIGTERM');
await new Promise((r) => { server.once('exit', r); setTimeout(r, 5000); });
rmSync(dir, { recursive: true, force: true });
process.exit(o.assert && problems.length ? 1 : 0);
