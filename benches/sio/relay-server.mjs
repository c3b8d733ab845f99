// The baseline of the Socket.IO device benchmark: a plain Node `socket.io` server speaking the
// same device events as Unisono with the least logic that works. Nothing is persisted.
// - HS256 JWT check (node:crypto) on CONNECT: `player` tokens on /players, `admin` on /admin.
// - `player:register` {deviceId} (must equal the token's sub) → ack {deviceId, …} and the
//   `player:registered` event; admins get `device:online` / `device:offline`.
// - `player:state`: kept as the device's current state in memory, relayed to subscribed
//   admins as `state:updated` {deviceId, rev, baseRev, patch} where the patch is a *shallow*
//   RFC 7396 merge patch: every top-level member whose JSON changed, whole (Unisono's patch is
//   the minimal deep diff). One broadcast per state (no coalescing), serialized once.
// - `devices:subscribe` (all devices) → ack {devices: full states}; `devices:resync`.
// - `command` {deviceId, command, params} → `player:command` {command, params, commandId} to
//   the device; its `player:command:response` resolves the admin's ack (and `command:response`
//   is emitted to that admin, as Unisono does). Timeout only, no retries.
// Acks use Unisono's shape: {ok: true, data} | {ok: false, error: {code, message}}.
//
//   node benches/sio/relay-server.mjs --secret S [--port 0] [--ping-secs 20]

import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Server } from 'socket.io';
import { parseArgs, verifyJwt } from './common.mjs';

const o = parseArgs(process.argv.slice(2), { secret: '', port: 0, host: '127.0.0.1', pingSecs: 20, commandTimeoutMs: 5000 });
if (!o.secret) throw new Error('--secret is required');

const COMMANDS = new Set(['vlc:play', 'vlc:pause', 'vlc:stop', 'vlc:fullscreen', 'vlc:snapshot']);
const ok = (data) => ({ ok: true, data });
const fail = (code, message) => ({ ok: false, error: { code, message } });

const http = createServer();
const io = new Server(http, {
  pingInterval: o.pingSecs * 1000,
  pingTimeout: o.pingSecs * 1000,
  maxHttpBufferSize: 8 * 1024 * 1024,
  serveClient: false,
});

/** tenant → Map(deviceId → {name, state, rev, socket, lastSeen}) */
const tenants = new Map();
const devicesOf = (t) => tenants.get(t) ?? tenants.set(t, new Map()).get(t);
/** commandId → {resolve, timer, deviceId} */
const pending = new Map();

const view = (id, d) => ({ deviceId: id, name: d.name, online: !!d.socket, lastSeen: d.lastSeen, rev: d.rev, state: d.state });

function auth(role) {
  return (socket, next) => {
    const claims = verifyJwt(socket.handshake.auth?.token, o.secret);
    if (!claims || claims.role !== role || !claims.tenant) return next(new Error('UNAUTHORIZED: bad token or role'));
    socket.data.claims = claims;
    next();
  };
}

function shallowPatch(prev, next) {
  const patch = {};
  for (const k of Object.keys(next)) {
    if (JSON.stringify(prev[k]) !== JSON.stringify(next[k])) patch[k] = next[k];
  }
  for (const k of Object.keys(prev)) if (!(k in next)) patch[k] = null;
  return patch;
}

const admins = io.of('/admin');
const players = io.of('/players');

players.use(auth('player'));
players.on('connection', (socket) => {
  const { tenant, sub } = socket.data.claims;
  const devices = devicesOf(tenant);
  const subs = admins.to(`subs:${tenant}`);
  let id = null;
  socket.on('player:register', (reg, ack) => {
    const want = reg?.deviceId ?? sub;
    if (want !== sub) return ack?.(fail('FORBIDDEN', 'a player token may only register its own device'));
    id = want;
    let d = devices.get(id);
    if (!d) devices.set(id, (d = { name: '', state: {}, rev: 0, socket: null, lastSeen: Date.now() }));
    const cameOnline = !d.socket;
    if (d.socket && d.socket !== socket) d.socket.disconnect(true);
    d.socket = socket;
    d.name = reg?.name ?? d.name;
    d.lastSeen = Date.now();
    const data = { deviceId: id, name: d.name, registeredAt: d.lastSeen, rev: d.rev };
    socket.emit('player:registered', data);
    if (cameOnline) admins.to(`tenant:${tenant}`).emit('device:online', { deviceId: id, name: d.name, lastSeen: d.lastSeen });
    ack?.(ok(data));
  });
  socket.on('player:state', (state, ack) => {
    const d = id && devices.get(id);
    if (!d) return ack ? ack(fail('NOT_REGISTERED', 'send player:register first')) : socket.emit('error', { code: 'NOT_REGISTERED' });
    const patch = shallowPatch(d.state, state);
    const baseRev = d.rev;
    d.state = state;
    d.rev++;
    d.lastSeen = Date.now();
    subs.emit('state:updated', { deviceId: id, rev: d.rev, baseRev, patch });
    ack?.(ok({ rev: d.rev }));
  });
  socket.on('player:command:response', (resp, ack) => {
    const p = pending.get(resp?.commandId);
    if (!p || p.deviceId !== id) return ack?.(fail('INVALID_PAYLOAD', 'no command with this commandId is waiting'));
    p.resolve(resp);
    ack?.(ok(null));
  });
  socket.on('disconnect', () => {
    const d = id && devices.get(id);
    if (d && d.socket === socket) {
      d.socket = null;
      d.lastSeen = Date.now();
      admins.to(`tenant:${tenant}`).emit('device:offline', { deviceId: id, name: d.name, lastSeen: d.lastSeen });
    }
  });
});

admins.use(auth('admin'));
admins.on('connection', (socket) => {
  const { tenant } = socket.data.claims;
  const devices = devicesOf(tenant);
  socket.join(`tenant:${tenant}`);
  socket.on('devices:subscribe', (_req, ack) => {
    socket.join(`subs:${tenant}`);
    ack?.(ok({ devices: [...devices].map(([id, d]) => view(id, d)) }));
  });
  socket.on('devices:resync', (req, ack) => {
    const d = devices.get(req?.deviceId);
    ack?.(d ? ok(view(req.deviceId, d)) : fail('DEVICE_NOT_FOUND', 'no such device'));
  });
  socket.on('command', (req, ack) => {
    const reply = (r) => {
      ack?.(r);
    };
    if (!COMMANDS.has(req?.command)) return reply(fail('INVALID_COMMAND', 'unknown command'));
    const d = devices.get(req.deviceId);
    if (!d) return reply(fail('DEVICE_NOT_FOUND', 'no such device'));
    if (!d.socket) return reply(fail('DEVICE_OFFLINE', 'the device is offline'));
    const commandId = randomBytes(8).toString('hex');
    const base = { commandId, deviceId: req.deviceId, command: req.command };
    const timer = setTimeout(() => {
      pending.delete(commandId);
      const e = { ...base, status: 'failed', error: { code: 'COMMAND_TIMEOUT' }, attempts: 1 };
      socket.emit('command:response', e);
      reply(fail('COMMAND_TIMEOUT', 'no answer'));
    }, o.commandTimeoutMs);
    pending.set(commandId, {
      deviceId: req.deviceId,
      resolve: (resp) => {
        clearTimeout(timer);
        pending.delete(commandId);
        const out = { ...base, status: resp.status, result: resp.result, error: resp.error, attempts: 1 };
        socket.emit('command:response', out);
        reply(ok(out));
      },
    });
    d.socket.emit('player:command', { command: req.command, params: req.params ?? {}, commandId });
  });
});

// Event-loop delay, printed every 5 s (run.mjs keeps the worst): is the relay itself saturated?
const loop = monitorEventLoopDelay({ resolution: 10 });
loop.enable();
setInterval(() => {
  console.log(`relay-stats ${JSON.stringify({ loopDelayMsP99: loop.percentile(99) / 1e6, loopDelayMsMax: loop.max / 1e6 })}`);
  loop.reset();
}, 5000).unref();

http.listen(o.port, o.host, () => {
  const { address, port } = http.address();
  console.log(`relay listening on http://${address}:${port}`);
});
