// Helpers for the Socket.IO compatibility tests: real `socket.io-client` and `ws` clients from
// the npm registry against the real `unisono` binary. No hand-written Socket.IO framing.
//
// Each test script receives the server's base URL in UNISONO_URL and the path of the binary in
// UNISONO_BIN (to mint tokens with `unisono token`, using the secret in UNISONO_JWT_SECRET).

import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { execFileSync } from 'node:child_process';

export const URL = process.env.UNISONO_URL ?? 'http://127.0.0.1:8080';

/** Rejects after `ms` with a message naming what was awaited. */
export function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Mints a token with the binary under test (same secret as the server). */
export function token({ tenant, role, sub = 'test', ttl = '1h' }) {
  const out = execFileSync(
    process.env.UNISONO_BIN,
    ['token', '--tenant', tenant, '--role', role, '--sub', sub, '--ttl', ttl],
    { env: process.env, encoding: 'utf8' },
  );
  const lines = out.trim().split('\n');
  return lines[lines.length - 1].trim();
}

/**
 * Connects a Socket.IO client to `namespace` (of `opts.url`, default UNISONO_URL) and resolves once connected, with every event
 * recorded in `socket.events` (name → array of payloads) for later assertions.
 */
export function connect(namespace = '/', opts = {}) {
  // `opts.url`: another server than UNISONO_URL (a cluster's other nodes).
  const { url = URL, ...rest } = opts;
  const socket = io(url + namespace, { reconnection: false, forceNew: true, timeout: 5000, ...rest });
  socket.events = new Map();
  socket.onAny((event, data) => {
    if (!socket.events.has(event)) socket.events.set(event, []);
    socket.events.get(event).push(data);
  });
  return within(
    8000,
    new Promise((resolve, reject) => {
      socket.once('connect', () => resolve(socket));
      socket.once('connect_error', (err) => {
        socket.close();
        reject(err);
      });
    }),
    `connect to ${namespace}`,
  );
}

/** Resolves with the `connect_error` a refused connection gets. */
export function refused(namespace, opts = {}) {
  const socket = io(URL + namespace, { reconnection: false, forceNew: true, timeout: 5000, ...opts });
  return within(
    8000,
    new Promise((resolve, reject) => {
      socket.once('connect', () => {
        socket.close();
        reject(new Error(`connection to ${namespace} was accepted`));
      });
      socket.once('connect_error', (err) => {
        socket.close();
        resolve(err);
      });
    }),
    `connect_error on ${namespace}`,
  );
}

/** A request with an ack; resolves with `data` or rejects with an Error carrying `code`. */
export async function request(socket, event, data = {}, ms = 5000) {
  const reply = await within(ms, socket.emitWithAck(event, data), `reply to ${event}`);
  if (reply && reply.ok === true) return reply.data;
  const err = new Error(`${event}: ${reply?.error?.code}: ${reply?.error?.message}`);
  err.code = reply?.error?.code;
  err.reply = reply;
  throw err;
}

/** The error code a request fails with (fails the test if it succeeds). */
export async function errorCode(socket, event, data = {}) {
  try {
    await request(socket, event, data);
  } catch (e) {
    if (e.code) return e.code;
    throw e;
  }
  throw new Error(`${event} succeeded but was expected to fail`);
}

/** Waits for the next `event` (after those already recorded, unless `pred` matches one). */
export function nextEvent(socket, event, pred = () => true, ms = 5000) {
  const seen = socket.events.get(event) ?? [];
  const hit = seen.find(pred);
  if (hit !== undefined) {
    seen.splice(seen.indexOf(hit), 1);
    return Promise.resolve(hit);
  }
  return within(
    ms,
    new Promise((resolve) => {
      const on = (data) => {
        if (pred(data)) {
          socket.off(event, on);
          const list = socket.events.get(event) ?? [];
          const i = list.indexOf(data);
          if (i >= 0) list.splice(i, 1);
          resolve(data);
        }
      };
      socket.on(event, on);
    }),
    `event ${event}`,
  );
}

/** A native `/ws` client (JSON frames with ids) with the same helpers. */
export async function connectNative(query = '') {
  const url = URL.replace(/^http/, 'ws') + '/ws' + query;
  const ws = new WebSocket(url);
  const client = { ws, events: new Map(), pending: new Map(), nextId: 1, waiters: [] };
  ws.on('message', (raw) => {
    const msg = JSON.parse(raw.toString());
    if (msg.id !== undefined && client.pending.has(msg.id)) {
      client.pending.get(msg.id)(msg);
      client.pending.delete(msg.id);
      return;
    }
    if (!client.events.has(msg.event)) client.events.set(msg.event, []);
    client.events.get(msg.event).push(msg.data);
    for (const w of [...client.waiters]) w();
  });
  await within(5000, new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  }), 'native websocket open');
  client.request = (event, data = {}) => {
    const id = client.nextId++;
    ws.send(JSON.stringify({ event, data, id }));
    return within(5000, new Promise((resolve, reject) => {
      client.pending.set(id, (msg) => {
        if (msg.ok) resolve(msg.data);
        else {
          const err = new Error(`${event}: ${msg.error.code}`);
          err.code = msg.error.code;
          reject(err);
        }
      });
    }), `native reply to ${event}`);
  };
  client.nextEvent = (event, pred = () => true, ms = 5000) => within(ms, new Promise((resolve) => {
    const check = () => {
      const list = client.events.get(event) ?? [];
      const hit = list.find(pred);
      if (hit !== undefined) {
        list.splice(list.indexOf(hit), 1);
        client.waiters = client.waiters.filter((w) => w !== check);
        resolve(hit);
        return true;
      }
      return false;
    };
    if (!check()) client.waiters.push(check);
  }), `native event ${event}`);
  client.close = () => ws.close();
  return client;
}

export const song = (id, durationMs = 180000) => ({
  id,
  title: `Song ${id}`,
  provider: 'url',
  url: `https://example.com/${id}.mp3`,
  durationMs,
});

/** Runs named test steps in order, printing each; exits non-zero on the first failure. */
export async function run(name, steps) {
  const started = Date.now();
  for (const [label, fn] of steps) {
    const t = Date.now();
    try {
      await fn();
      console.log(`ok   ${name} :: ${label} (${Date.now() - t} ms)`);
    } catch (e) {
      console.error(`FAIL ${name} :: ${label}\n${e.stack ?? e}`);
      process.exit(1);
    }
  }
  console.log(`all ${steps.length} steps of ${name} passed in ${Date.now() - started} ms`);
  process.exit(0);
}

/** Signs an HS256 JWT with node:crypto (for tokens the CLI will not mint, e.g. expired ones). */
export async function signJwt(claims, secret = process.env.UNISONO_JWT_SECRET) {
  const { createHmac } = await import('node:crypto');
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64(claims);
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Applies an RFC 7396 merge patch (what admins do with `state:updated`). */
export function mergePatch(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** GET a path of the server; resolves with {status, body}. */
export async function get(path, headers = {}) {
  const res = await fetch(URL + path, { headers });
  return { status: res.status, body: await res.text(), headers: res.headers };
}
