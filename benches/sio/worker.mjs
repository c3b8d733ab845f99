// A worker process of the Socket.IO device benchmark, forked by loadgen.mjs: either a slice of
// the simulated devices (`/players`) or some of the admins (`/admin`). Real socket.io-client,
// WebSocket transport only. Talks to the coordinator over the fork IPC channel:
// in: start, states, phase, commands, stop-states, report, exit; out: ready, report, fatal.

import { io } from 'socket.io-client';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Hist, deviceId, deviceState, mergePatch, nowMs, sleep, token } from './common.mjs';

const send = (m) => process.send(m);
// Event-loop delay: how late this process runs its callbacks (client-side saturation).
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
process.on('uncaughtException', (e) => {
  send({ type: 'fatal', error: String(e?.stack ?? e) });
  process.exit(1);
});

function open(url, ns, tok) {
  const s = io(url + ns, {
    transports: ['websocket'],
    reconnection: false,
    forceNew: true,
    timeout: 30000,
    auth: { token: tok },
  });
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('connect_error', (e) => {
      s.close();
      reject(e);
    });
  });
}

/** Runs `fn` over `items`, at most `limit` at a time. */
async function pool(items, limit, fn) {
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  });
  await Promise.all(runners);
}

const counters = { errors: 0, errorCodes: {}, disconnects: 0, connectFailures: 0 };
function countError(code) {
  counters.errors++;
  counters.errorCodes[code] = (counters.errorCodes[code] ?? 0) + 1;
}

// ---------------------------------------------------------------- devices

const devices = []; // {i, id, s, n}
let statesSent = 0;
let commandsAnswered = 0;
let stateTimers = [];

async function startDevices(m) {
  const idx = [];
  for (let i = m.from; i < m.to; i++) idx.push(i);
  await pool(idx, m.concurrency, async (i) => {
    const id = deviceId(i);
    let s;
    for (let attempt = 0; ; attempt++) {
      try {
        s = await open(m.url, '/players', token(m.secret, id, 'player'));
        break;
      } catch (e) {
        if (attempt >= 3) {
          counters.connectFailures++;
          countError(`connect: ${e.message}`);
          return;
        }
        await sleep(200 * (attempt + 1));
      }
    }
    const d = { i, id, s, n: 0 };
    s.on('disconnect', (reason) => {
      if (!stopping) {
        counters.disconnects++;
        countError(`disconnect: ${reason}`);
      }
    });
    s.on('error', (e) => countError(`error event: ${e?.code ?? JSON.stringify(e)}`));
    s.on('player:command', (c) => {
      s.emit('player:command:response', { commandId: c.commandId, status: 'success', result: {} });
      commandsAnswered++;
    });
    const reply = await s.timeout(30000).emitWithAck('player:register', { deviceId: id, name: `Kiosk ${i}`, os: 'linux' });
    if (!reply?.ok) {
      countError(`register: ${reply?.error?.code}`);
      return;
    }
    devices.push(d);
  });
  send({ type: 'ready', connected: devices.length, counters });
}

function startStates(m) {
  // Device i first reports at startAt + (i / total) × period, then every period.
  for (const d of devices) {
    const first = m.startAt + (d.i / m.total) * m.periodMs - Date.now();
    const tick = () => {
      d.n++;
      d.s.emit('player:state', deviceState(d.i, d.n));
      statesSent++;
    };
    stateTimers.push(
      setTimeout(() => {
        tick();
        stateTimers.push(setInterval(tick, m.periodMs));
      }, Math.max(0, first)),
    );
  }
}

function stopStates() {
  for (const t of stateTimers) {
    clearTimeout(t);
    clearInterval(t);
  }
  stateTimers = [];
}

// ---------------------------------------------------------------- admins

const admins = []; // {s, view: Map(deviceId → {rev, state})}
let phase = null; // {name, start}
const lat = {}; // phase → Hist of device→admin latency
const received = {}; // phase → state:updated received
let updatesTotal = 0;
let gaps = 0;
const ack = new Hist();
let commandsSent = 0;
let commandsOk = 0;
let commandsOutstanding = 0;
let commandPushes = 0;

async function startAdmins(m) {
  for (let k = 0; k < m.count; k++) {
    const s = await open(m.url, '/admin', token(m.secret, `admin-${m.first + k}`, 'admin'));
    const a = { s, view: new Map() };
    s.on('disconnect', (reason) => {
      if (!stopping) {
        counters.disconnects++;
        countError(`admin disconnect: ${reason}`);
      }
    });
    s.on('error', (e) => countError(`admin error event: ${e?.code ?? JSON.stringify(e)}`));
    s.on('command:response', () => commandPushes++);
    s.on('state:updated', (u) => {
      const now = nowMs();
      updatesTotal++;
      let v = a.view.get(u.deviceId);
      if (!v) {
        v = { rev: 0, state: {} };
        a.view.set(u.deviceId, v);
      }
      if (u.baseRev !== undefined && u.baseRev !== v.rev) gaps++;
      v.state = mergePatch(v.state, u.patch);
      v.rev = u.rev;
      const sentAt = v.state.app?.sentAt;
      if (phase && typeof sentAt === 'number' && sentAt >= phase.start) {
        (lat[phase.name] ??= new Hist()).add(now - sentAt);
        received[phase.name] = (received[phase.name] ?? 0) + 1;
      }
    });
    const reply = await s.timeout(60000).emitWithAck('devices:subscribe', {});
    if (!reply?.ok) throw new Error(`devices:subscribe failed: ${JSON.stringify(reply?.error)}`);
    for (const d of reply.data.devices) a.view.set(d.deviceId, { rev: d.rev, state: d.state });
    admins.push(a);
  }
  send({ type: 'ready', connected: admins.length, counters });
}

let commandStop = false;
async function runCommands(m) {
  // `rate` commands/s from this worker's admins, round-robin; devices picked with a stride
  // coprime to the fleet size so consecutive commands land on different workers.
  const t0 = nowMs();
  const end = t0 + m.seconds * 1000;
  let k = m.offset;
  let adminTurn = 0;
  while (!commandStop) {
    const now = nowMs();
    if (now >= end) break;
    const due = Math.floor(((now - t0) / 1000) * m.rate) - commandsSent;
    for (let j = 0; j < due; j++) {
      const a = admins[adminTurn++ % admins.length];
      const dev = deviceId((k * m.stride) % m.total);
      k += m.workers;
      const sentAt = nowMs();
      commandsSent++;
      commandsOutstanding++;
      a.s
        .timeout(m.timeoutMs)
        .emitWithAck('command', { deviceId: dev, command: 'vlc:play', params: {} })
        .then(
          (reply) => {
            commandsOutstanding--;
            if (reply?.ok && reply.data?.status === 'success') {
              commandsOk++;
              ack.add(nowMs() - sentAt);
            } else countError(`command: ${reply?.error?.code ?? reply?.data?.status}`);
          },
          () => {
            commandsOutstanding--;
            countError('command: no ack (client timeout)');
          },
        );
    }
    await sleep(5);
  }
}

// ---------------------------------------------------------------- control

let stopping = false;
process.on('message', async (m) => {
  switch (m.type) {
    case 'start':
      if (m.role === 'devices') await startDevices(m);
      else await startAdmins(m);
      break;
    case 'states':
      startStates(m);
      break;
    case 'stop-states':
      stopStates();
      break;
    case 'phase':
      phase = m.name ? { name: m.name, start: m.start } : null;
      if (m.name) {
        loopDelay.reset();
        loopDelay.enable();
      }
      break;
    case 'commands':
      runCommands(m);
      break;
    case 'report':
      send({
        type: 'report',
        role: devices.length ? 'devices' : 'admins',
        loopDelayMs: { p50: loopDelay.percentile(50) / 1e6, p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
        counters,
        statesSent,
        commandsAnswered,
        updatesTotal,
        gaps,
        lat: Object.fromEntries(Object.entries(lat).map(([k, h]) => [k, h.toJSON()])),
        received,
        ack: ack.toJSON(),
        commandsSent,
        commandsOk,
        commandsOutstanding,
        commandPushes,
        cpu: process.cpuUsage(),
        rssMiB: process.memoryUsage().rss / 1048576,
      });
      break;
    case 'exit':
      stopping = true;
      commandStop = true;
      stopStates();
      for (const d of devices) d.s.close();
      for (const a of admins) a.s.close();
      setTimeout(() => process.exit(0), 200);
      break;
  }
});
send({ type: 'up' });
