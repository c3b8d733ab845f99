// Shared by the browser end-to-end scripts (sync.mjs, youtube.mjs, spotify.mjs, admin.mjs): a
// generated WAV file, the real `unisono` binary serving a copy of the built web app, quantiles,
// logging and waiting, and the run-and-clean-up frame of a script (`runAppScript`).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const log = (...a) => console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...a);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A mono 16-bit WAV: a quiet sine with a click every second (so drift would be audible). */
export function wav(seconds, rate = 22050) {
  const n = seconds * rate;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write('WAVE', 8);
  buf.write('fmt ', 12); buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28); buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34);
  buf.write('data', 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    const click = i % rate < 40 ? 0.6 : 0;
    const v = 0.2 * Math.sin((2 * Math.PI * 440 * i) / rate) + click;
    buf.writeInt16LE(Math.round(Math.max(-1, Math.min(1, v)) * 32767), 44 + i * 2);
  }
  return buf;
}

export function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))];
}

/** `--name value` from the command line, or `dflt`. */
export function opt(name, dflt) {
  const args = process.argv.slice(2);
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
}

/**
 * Starts `bin serve` on an ephemeral port serving `webDir`, with `extra` flags; resolves
 * `{child, url}`.
 */
export async function startServer(bin, webDir, dataDir, extra = []) {
  const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--web-dir', webDir, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', RUST_LOG: 'warn' },
  });
  const url = await new Promise((resolve, reject) => {
    let seen = '';
    const onData = (d) => {
      seen += d.toString();
      const m = seen.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) resolve(m[1]);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (c) => reject(new Error(`server exited (${c}): ${seen}`)));
    setTimeout(() => reject(new Error(`server did not start: ${seen}`)), 15000);
  });
  return { child, url };
}

/** Headless Debian chromium (never a downloaded browser) with the flags these machines need. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required'];

export async function waitFor(page, fn, arg, timeout = 10000) {
  return page.waitForFunction(fn, arg, { timeout, polling: 50 });
}

/**
 * How far apart two pages' players are, against one clock: after `settleMs`, for `forMs`,
 * every 100 ms each page's `probe` returns [wall clock ms, player position ms, paused]; while
 * both play, the sample is |(posA − wallA) − (posB − wallB)|. Returns the samples (ms).
 */
export async function inStepErrors(a, b, probe, { settleMs, forMs }) {
  await sleep(settleMs);
  const errors = [];
  const end = Date.now() + forMs;
  while (Date.now() < end) {
    const [x, y] = await Promise.all([a.evaluate(probe), b.evaluate(probe)]);
    if (!x[2] && !y[2]) errors.push(Math.abs((x[1] - x[0]) - (y[1] - y[0])));
    await sleep(100);
  }
  return errors;
}

/**
 * Checks that two pages' players of `what` stay within `toleranceMs` of each other (p95 of
 * [`inStepErrors`], more than 20 samples), logging median, p95 and sample count.
 */
export async function checkInStep(check, what, toleranceMs, a, b, probe, timing) {
  const errors = await inStepErrors(a, b, probe, timing);
  const p95 = quantile(errors, 0.95);
  check(`${what} players within ${toleranceMs} ms of each other (p95)`, errors.length > 20 && p95 <= toleranceMs,
    `median ${quantile(errors, 0.5).toFixed(1)} ms, p95 ${p95.toFixed(1)} ms, ${errors.length} samples`);
}

/** In the web app at `url`: `host` creates a room, `guest` opens its `/r/CODE` link. Resolves to the code. */
export async function openRoom(host, guest, url) {
  await host.goto(url);
  await host.fill('#name', 'Host');
  await host.click('#create');
  await host.waitForSelector('#room-code');
  const code = (await host.textContent('#room-code')).trim();
  await guest.goto(`${url}/r/${code}`);
  await guest.waitForSelector('#room-code');
  return code;
}

/**
 * Runs a browser script against the built app in `dist`: a temp copy of it (with `media`, a map
 * of file name to contents, under `/media/`) served by the binary at `bin`, one headless
 * Chromium, and a `check(name, pass, detail)` that logs and counts failures. `body` gets
 * `{ url, browser, check }`. Cleans up, then exits 0 only if every check passed (1 on an
 * exception).
 */
export function runAppScript({ name, bin, dist, out, media = {} }, body) {
  const run = async () => {
    if (!fs.existsSync(path.join(dist, 'index.html'))) throw new Error(`no built app in ${dist} (cargo xtask web)`);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `unisono-${name}-`));
    const webDir = path.join(tmp, 'web');
    fs.cpSync(dist, webDir, { recursive: true });
    const files = Object.entries(media);
    if (files.length) fs.mkdirSync(path.join(webDir, 'media'));
    for (const [file, contents] of files) fs.writeFileSync(path.join(webDir, 'media', file), contents);
    fs.mkdirSync(out, { recursive: true });
    const { child, url } = await startServer(bin, webDir, path.join(tmp, 'data'));
    log('server', url);
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
    let ok = true;
    const check = (what, pass, detail = '') => {
      if (!pass) ok = false;
      log(pass ? 'PASS' : 'FAIL', what, detail);
    };
    try {
      await body({ url, browser, check });
    } finally {
      await browser.close().catch(() => {});
      child.kill('SIGTERM');
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    process.exit(ok ? 0 : 1);
  };
  run().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
