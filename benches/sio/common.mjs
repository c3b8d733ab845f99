// Shared pieces of the Socket.IO device benchmark (benches/sio/): HS256 tokens with node:crypto,
// the device state and its small changes, RFC 7396 merge patch, a log-linear latency histogram
// mergeable across processes, /proc readers for the server's CPU and memory, argument parsing.

import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';

export const TENANT = 'bench';

/** Signs an HS256 JWT (what `unisono token` mints) with the shared secret. */
export function signJwt(claims, secret) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** Checks an HS256 JWT; returns its claims or null. */
export function verifyJwt(token, secret) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const sig = createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest('base64url');
  if (sig !== parts[2]) return null;
  try {
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    if (typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now()) return null;
    return claims;
  } catch {
    return null;
  }
}

export const token = (secret, sub, role) =>
  signJwt({ sub, tenant: TENANT, role, exp: Math.floor(Date.now() / 1000) + 6 * 3600 }, secret);

export const deviceId = (i) => `dev-${String(i).padStart(6, '0')}`;

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
export const nowMs = () => performance.timeOrigin + performance.now();

/** Seed 003's state object; `n` (the device's send count) drives the small changes. */
export function deviceState(i, n) {
  return {
    timestamp: new Date().toISOString(),
    system: { cpu: (i + n * 7) % 100, memory: { used: 512 + (n % 16), total: 2048 }, uptime: 3600 + n * 5 },
    storage: { free: 100000 - (n % 1000), total: 128000 },
    vlc: { state: 'playing', time: n * 5, length: 3600, volume: 80, file: `clip-${i % 50}.mp4` },
    app: { version: '1.4.2', sentAt: nowMs() },
    activePlaylist: { id: `pl-${i % 20}`, index: n % 12, items: 12 },
    defaultPlaylist: { id: 'pl-default' },
    snapshot: { at: 0 },
  };
}

/** Applies an RFC 7396 merge patch (what admins do with `state:updated`). */
export function mergePatch(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target !== null && typeof target === 'object' && !Array.isArray(target) ? target : {};
  for (const k of Object.keys(patch)) {
    const v = patch[k];
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Log-linear histogram of latencies in ms (≤ 0.5 % relative error), mergeable via JSON. */
export class Hist {
  constructor() {
    this.b = new Map();
    this.n = 0;
    this.max = 0;
  }
  add(ms) {
    const v = Math.max(ms, 0.001);
    const k = Math.round(Math.log(v * 1000) / Math.log(1.01));
    this.b.set(k, (this.b.get(k) ?? 0) + 1);
    this.n++;
    if (v > this.max) this.max = v;
  }
  toJSON() {
    return { b: [...this.b], n: this.n, max: this.max };
  }
  static from(j) {
    const h = new Hist();
    h.merge(j);
    return h;
  }
  merge(j) {
    for (const [k, c] of j.b) this.b.set(k, (this.b.get(k) ?? 0) + c);
    this.n += j.n;
    this.max = Math.max(this.max, j.max);
  }
  q(p) {
    if (!this.n) return NaN;
    const keys = [...this.b.keys()].sort((a, b) => a - b);
    let seen = 0;
    const want = Math.ceil(p * this.n);
    for (const k of keys) {
      seen += this.b.get(k);
      if (seen >= want) return Math.pow(1.01, k) / 1000;
    }
    return this.max;
  }
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state); utime and stime are fields 14 and 15. CLK_TCK is 100 on Linux.
  return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 };
}

/** VmRSS and VmHWM of a process, in MiB. */
export function memMiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k) => Number((status.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm')) ?? [0, 0])[1]) / 1024;
  return { rss: get('VmRSS'), hwm: get('VmHWM') };
}

/** `--name value` and `--flag` arguments into an object (camelCase keys). */
export function parseArgs(argv, defaults) {
  const out = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in defaults)) throw new Error(`unknown option ${a}`);
    if (typeof defaults[key] === 'boolean') out[key] = true;
    else {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      out[key] = typeof defaults[key] === 'number' ? Number(v) : v;
    }
  }
  return out;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Calls `f` with every complete line a stream emits. */
export function onLines(stream, f) {
  let buf = '';
  stream.on('data', (chunk) => {
    buf += chunk;
    const lines = buf.split('\n');
    buf = lines.pop();
    for (const l of lines) f(l);
  });
}

/**
 * Resolves with the port a starting server prints (`listening on http://127.0.0.1:PORT`, as
 * `unisono serve` and the Node baselines do); rejects if it exits first or takes over 30 s.
 */
export function listeningPort(child, what, lastWords = () => '') {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not print its address within 30 s`)), 30000);
    const early = (code, sig) => { clearTimeout(timer); reject(new Error(`${what} exited (${code ?? sig}) before listening: ${lastWords()}`)); };
    child.once('exit', early);
    let buf = '';
    child.stdout.on('data', function seek(chunk) {
      buf += chunk;
      const m = buf.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (!m) return;
      clearTimeout(timer);
      child.removeListener('exit', early);
      child.stdout.removeListener('data', seek);
      resolve(Number(m[1]));
    });
  });
}
