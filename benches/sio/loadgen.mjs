// The Socket.IO device benchmark's load generator (coordinator): forks worker.mjs processes
// for devices and admins, runs the phases (setup → states → states + commands), reads the
// server's CPU and memory from /proc and returns/prints the figures. Works against Unisono or
// the Node relay (relay-server.mjs): both speak the same events.
//
//   node benches/sio/loadgen.mjs --url http://127.0.0.1:PORT --secret S --server-pid PID [--devices 10000]

import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Hist, cpuSeconds, memMiB, nowMs, parseArgs, sleep } from './common.mjs';

export const DEFAULTS = {
  url: 'http://127.0.0.1:8080',
  secret: '',
  serverPid: 0,
  devices: 10000,
  admins: 10,
  workers: 4, // device worker processes
  adminWorkers: 2,
  concurrency: 50, // handshakes in flight per device worker
  periodSecs: 5, // each device sends player:state this often
  warmupSecs: 5, // first states, not measured
  stateSecs: 20, // measured: states only
  commandRate: 1000, // commands/s in total, across the admins
  commandSecs: 20, // measured: states + commands
  commandTimeoutMs: 15000,
  label: '',
};

const WORKER = fileURLToPath(new URL('./worker.mjs', import.meta.url));

function spawnWorker() {
  const w = fork(WORKER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  w.waiters = [];
  w.on('message', (m) => {
    if (m.type === 'fatal') {
      console.error(`worker ${w.pid} failed: ${m.error}`);
      process.exitCode = 1;
    }
    const i = w.waiters.findIndex((x) => x.type === m.type);
    if (i >= 0) w.waiters.splice(i, 1)[0].resolve(m);
  });
  w.next = (type) => new Promise((resolve) => w.waiters.push({ type, resolve }));
  return w;
}

const log = (...a) => console.error(`[sio-bench ${new Date().toISOString().slice(11, 19)}]`, ...a);

function cpuWindow(pid) {
  const c0 = pid ? cpuSeconds(pid) : null;
  const t0 = nowMs();
  return () => {
    const secs = (nowMs() - t0) / 1000;
    if (!pid) return { secs };
    const c1 = cpuSeconds(pid);
    const user = c1.user - c0.user;
    const sys = c1.sys - c0.sys;
    return { secs, user, sys, pct: ((user + sys) / secs) * 100 };
  };
}

function gcd(a, b) {
  return b ? gcd(b, a % b) : a;
}

export async function runLoad(opts) {
  const o = { ...DEFAULTS, ...opts };
  if (!o.secret) throw new Error('--secret is required (the server\'s JWT secret)');
  const pid = o.serverPid || null;
  const out = { label: o.label, devices: o.devices, admins: o.admins, periodSecs: o.periodSecs };
  const mem0 = pid ? memMiB(pid) : null;
  out.rssBaselineMiB = mem0?.rss;

  // Admins first (subscribed to all devices), then the devices.
  const t0 = nowMs();
  const adminWorkers = Array.from({ length: Math.min(o.adminWorkers, o.admins) }, spawnWorker);
  const deviceWorkers = Array.from({ length: Math.min(o.workers, o.devices) }, spawnWorker);
  const all = [...adminWorkers, ...deviceWorkers];
  let first = 0;
  const aReady = adminWorkers.map((w, k) => {
    const count = Math.floor(o.admins / adminWorkers.length) + (k < o.admins % adminWorkers.length ? 1 : 0);
    const p = w.next('ready');
    w.send({ type: 'start', role: 'admins', url: o.url, secret: o.secret, count, first });
    first += count;
    return p;
  });
  await Promise.all(aReady);
  log(`${o.admins} admins subscribed`);
  const per = Math.ceil(o.devices / deviceWorkers.length);
  const dReady = deviceWorkers.map((w, k) => {
    const p = w.next('ready');
    w.send({
      type: 'start', role: 'devices', url: o.url, secret: o.secret,
      from: k * per, to: Math.min(o.devices, (k + 1) * per), concurrency: o.concurrency,
    });
    return p;
  });
  const ready = await Promise.all(dReady);
  out.devicesRegistered = ready.reduce((s, r) => s + r.connected, 0);
  out.setupSecs = (nowMs() - t0) / 1000;
  log(`${out.devicesRegistered}/${o.devices} devices registered in ${out.setupSecs.toFixed(1)} s`);
  await sleep(1000);
  out.rssAfterSetupMiB = pid ? memMiB(pid).rss : undefined;

  const broadcast = (m) => all.forEach((w) => w.send(m));
  const periodMs = o.periodSecs * 1000;
  broadcast({ type: 'states', startAt: Date.now() + 200, periodMs, total: o.devices });
  log(`states every ${o.periodSecs} s; warm-up ${o.warmupSecs} s`);
  await sleep(200 + o.warmupSecs * 1000);

  // Phase 1: states only.
  let start = nowMs();
  broadcast({ type: 'phase', name: 'states', start });
  let win = cpuWindow(pid);
  await sleep(o.stateSecs * 1000);
  out.statesPhase = win();
  out.statesPhase.rssMiB = pid ? memMiB(pid).rss : undefined;
  log(`states phase done: server CPU ${out.statesPhase.pct?.toFixed(1)} %`);

  // Phase 2: states continue, plus commands.
  start = nowMs();
  broadcast({ type: 'phase', name: 'commands', start });
  let stride = 7919;
  while (gcd(stride, o.devices) !== 1) stride += 2;
  adminWorkers.forEach((w, k) =>
    w.send({
      type: 'commands', rate: o.commandRate / adminWorkers.length, seconds: o.commandSecs,
      offset: k, workers: adminWorkers.length, stride, total: o.devices, timeoutMs: o.commandTimeoutMs,
    }),
  );
  win = cpuWindow(pid);
  await sleep(o.commandSecs * 1000);
  out.commandsPhase = win();
  out.commandsPhase.rssMiB = pid ? memMiB(pid).rss : undefined;
  log(`commands phase done: server CPU ${out.commandsPhase.pct?.toFixed(1)} %`);

  // Drain: stop states, let the last commands and updates arrive.
  broadcast({ type: 'stop-states' });
  await sleep(3000);
  broadcast({ type: 'phase', name: null });
  const reports = await Promise.all(all.map((w) => {
    const p = w.next('report');
    w.send({ type: 'report' });
    return p;
  }));
  const mem = pid ? memMiB(pid) : null;
  out.rssEndMiB = mem?.rss;
  out.rssPeakMiB = mem?.hwm;

  const aRep = reports.slice(0, adminWorkers.length);
  const dRep = reports.slice(adminWorkers.length);
  const sum = (rs, f) => rs.reduce((s, r) => s + f(r), 0);
  out.statesSent = sum(dRep, (r) => r.statesSent);
  out.updatesReceived = sum(aRep, (r) => r.updatesTotal);
  out.updatesExpected = out.statesSent * o.admins;
  out.revGaps = sum(aRep, (r) => r.gaps);
  for (const ph of ['states', 'commands']) {
    const h = new Hist();
    for (const r of aRep) if (r.lat[ph]) h.merge(r.lat[ph]);
    out[`${ph}Phase`].latency = { n: h.n, p50: h.q(0.5), p99: h.q(0.99), max: h.max };
  }
  const ack = new Hist();
  for (const r of aRep) ack.merge(r.ack);
  out.commands = {
    sent: sum(aRep, (r) => r.commandsSent),
    ok: sum(aRep, (r) => r.commandsOk),
    outstanding: sum(aRep, (r) => r.commandsOutstanding),
    answeredByDevices: sum(dRep, (r) => r.commandsAnswered),
    responsePushes: sum(aRep, (r) => r.commandPushes),
    rate: sum(aRep, (r) => r.commandsSent) / o.commandSecs,
    ack: { n: ack.n, p50: ack.q(0.5), p99: ack.q(0.99), max: ack.max },
  };
  const errorCodes = {};
  for (const r of reports) for (const [k, v] of Object.entries(r.counters.errorCodes)) errorCodes[k] = (errorCodes[k] ?? 0) + v;
  out.errors = errorCodes;
  out.clientCpuSecs = sum(reports, (r) => (r.cpu.user + r.cpu.system) / 1e6);
  out.clientRssMiB = sum(reports, (r) => r.rssMiB);
  out.workers = reports.map((r) => ({
    role: r.role, cpuSecs: (r.cpu.user + r.cpu.system) / 1e6, rssMiB: r.rssMiB,
    loopDelayMsP99: r.loopDelayMs.p99, loopDelayMsMax: r.loopDelayMs.max,
  }));

  await Promise.all(all.map((w) => new Promise((resolve) => {
    w.once('exit', resolve);
    w.send({ type: 'exit' });
  })));
  return out;
}

const f = (v, d = 1) => (v === undefined || Number.isNaN(v) ? '—' : v.toFixed(d));

/** A one-target table (the comparison table is in run.mjs). */
export function printOne(r) {
  const rows = [
    ['devices registered', `${r.devicesRegistered} / ${r.devices} (setup ${f(r.setupSecs)} s)`],
    ['states: device→admin p50 / p99 / max', `${f(r.statesPhase.latency.p50, 2)} / ${f(r.statesPhase.latency.p99, 2)} / ${f(r.statesPhase.latency.max, 1)} ms (${r.statesPhase.latency.n} samples)`],
    ['states: server CPU', `${f(r.statesPhase.pct)} % of one core (user ${f(r.statesPhase.user, 2)} s + sys ${f(r.statesPhase.sys, 2)} s over ${f(r.statesPhase.secs)} s)`],
    ['commands: ack p50 / p99 / max', `${f(r.commands.ack.p50, 2)} / ${f(r.commands.ack.p99, 2)} / ${f(r.commands.ack.max, 1)} ms (${r.commands.ok}/${r.commands.sent} ok, ${f(r.commands.rate, 0)}/s)`],
    ['commands: device→admin p50 / p99', `${f(r.commandsPhase.latency.p50, 2)} / ${f(r.commandsPhase.latency.p99, 2)} ms`],
    ['commands: server CPU', `${f(r.commandsPhase.pct)} % of one core (user ${f(r.commandsPhase.user, 2)} s + sys ${f(r.commandsPhase.sys, 2)} s over ${f(r.commandsPhase.secs)} s)`],
    ['server RSS: idle / after setup / end / peak', `${f(r.rssBaselineMiB)} / ${f(r.rssAfterSetupMiB)} / ${f(r.rssEndMiB)} / ${f(r.rssPeakMiB)} MiB`],
    ['updates received / expected (rev gaps)', `${r.updatesReceived} / ${r.updatesExpected} (${r.revGaps})`],
    ['errors', JSON.stringify(r.errors)],
    ['load generator CPU / RSS', `${f(r.clientCpuSecs)} s / ${f(r.clientRssMiB, 0)} MiB`],
    ['workers: CPU s, loop delay p99 / max ms', r.workers.map((w) => `${w.role[0]}:${f(w.cpuSecs)}s,${f(w.loopDelayMsP99, 0)}/${f(w.loopDelayMsMax, 0)}`).join(' ')],
  ];
  const w = Math.max(...rows.map((x) => x[0].length));
  console.log(`\n${r.label || 'target'}`);
  for (const [k, v] of rows) console.log(`  ${k.padEnd(w)}  ${v}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const o = parseArgs(process.argv.slice(2), DEFAULTS);
  const r = await runLoad(o);
  printOne(r);
  console.log(JSON.stringify(r));
}
