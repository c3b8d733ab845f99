// Browser end-to-end for the admin dashboard (`/admin`): the real `unisono` binary serves the
// built web app (dist/); a fake device (socket.io-client on `/players`, player token) registers
// and reports its state; headless Chromium (Debian's /usr/bin/chromium via playwright-core)
// opens `/admin?token=ADMIN_JWT`. Checks: the device shows online with its VLC state and
// playlist; a state change arrives as a patch and shows; command buttons reach the device and
// their results show live (pending → ok, the device's own error code, a timeout for a command
// the device ignores); a snapshot result shows a thumbnail fetched over REST; the token is
// remembered; the usage charts get data; a disconnect gives an offline alert and an offline
// card. Saves tests/browser/out/admin.png. Exits 1 on the first failed check.
//
// Usage: node tests/browser/admin.mjs [--bin target/debug/unisono] [--dist dist] [--out tests/browser/out]

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { io } from 'socket.io-client';
import { CHROMIUM_ARGS, log, opt, sleep, startServer } from './lib.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.resolve(root, opt('bin', 'target/debug/unisono'));
const DIST = path.resolve(root, opt('dist', 'dist'));
const OUT = path.resolve(root, opt('out', 'tests/browser/out'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TENANT = 'acme';
const DEVICE = 'kiosk-1';
// Short, so the ignored command times out quickly; no retries.
const COMMAND_TIMEOUT_MS = 1000;


/** A small RGB PNG (a gradient), so the thumbnail is a real decodable image. */
function png(w = 160, h = 90) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4); crc.writeUInt32BE(zlib.crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 2;
  const raw = Buffer.alloc(h * (1 + w * 3));
  for (let y = 0; y < h; y++) {
    raw[y * (1 + w * 3)] = 0;
    for (let x = 0; x < w; x++) {
      const o = y * (1 + w * 3) + 1 + x * 3;
      raw[o] = (x * 255) / w; raw[o + 1] = 80; raw[o + 2] = (y * 255) / h;
    }
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

/** Mints a token with the binary under test (same secret file as the server's data dir). */
function token(dataDir, role, sub) {
  const out = execFileSync(BIN, ['token', '--tenant', TENANT, '--role', role, '--sub', sub, '--data-dir', dataDir],
    { encoding: 'utf8', env: process.env });
  return out.trim().split('\n').pop().trim();
}

/** Rejects after `ms` with a message naming what was awaited. */
function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]);
}

async function ack(socket, event, data) {
  const reply = await within(5000, socket.emitWithAck(event, data), `ack of ${event}`);
  if (!reply?.ok) throw new Error(`${event}: ${JSON.stringify(reply)}`);
  return reply.data;
}

const state = (vlcState, time) => ({
  timestamp: new Date().toISOString(),
  system: { cpu: 12, memory: { used: 512, total: 2048 } },
  storage: { free: 900 },
  vlc: { state: vlcState, time, length: 3600, volume: 80, file: 'welcome.mp4' },
  app: { version: '1.2.3' },
  activePlaylist: { id: 'p1', name: 'Lobby loop', index: 2, items: 12 },
  defaultPlaylist: { id: 'p0' },
  snapshot: { at: null },
});

async function main() {
  if (!fs.existsSync(path.join(DIST, 'index.html'))) throw new Error(`no built app in ${DIST} (cargo xtask web)`);
  if (!fs.existsSync(BIN)) throw new Error(`no server binary at ${BIN}`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'unisono-admin-'));
  const dataDir = path.join(tmp, 'data');
  fs.mkdirSync(OUT, { recursive: true });
  const { child, url } = await startServer(BIN, DIST, dataDir, ['--command-timeout-ms', String(COMMAND_TIMEOUT_MS),
    '--command-retries', '0', '--admin-updates-per-sec', '20']);
  log('server', url);
  const adminToken = token(dataDir, 'admin', 'alice');
  const playerToken = token(dataDir, 'player', DEVICE);

  // The fake device: records every command; answers as `answer(cmd)` says (null: ignore).
  const commands = [];
  let answer = () => null;
  const dev = io(`${url}/players`, { auth: { token: playerToken }, transports: ['websocket'], reconnection: false, forceNew: true });
  dev.on('player:command', async (c) => {
    commands.push(c);
    const a = await answer(c);
    if (a) dev.emit('player:command:response', { commandId: c.commandId, ...a });
  });
  await within(8000, new Promise((resolve, reject) => { dev.once('connect', resolve); dev.once('connect_error', reject); }), 'device connects');
  await ack(dev, 'player:register', { deviceId: DEVICE, name: 'Lobby screen', os: 'linux' });
  await ack(dev, 'player:state', state('paused', 12));

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    // playwright gives every launch a fresh temporary --user-data-dir.
  });
  let failed = 0;
  const check = async (name, fn) => {
    const t = Date.now();
    try {
      const detail = await fn();
      log('PASS', name, `(${Date.now() - t} ms)`, detail ?? '');
    } catch (e) {
      failed++;
      log('FAIL', name, e.message.split('\n')[0]);
      throw e;
    }
  };
  const card = `.device[data-id="${DEVICE}"]`;
  let page;
  try {
    page = await (await browser.newContext({ viewport: { width: 1200, height: 1300 } })).newPage();
    page.on('pageerror', (e) => log('page error:', e.message));
    page.on('console', (m) => m.type() === 'error' && !m.text().includes('404') && log('console:', m.text()));
    const waitFor = (fn, arg, timeout = 8000) => page.waitForFunction(fn, arg, { timeout, polling: 50 });
    const text = async (sel) => (await page.textContent(sel))?.trim();

    await check('the device shows online with its VLC state and playlist', async () => {
      await page.goto(`${url}/admin?token=${adminToken}`);
      await page.waitForSelector(`${card}[data-online="true"]`, { timeout: 8000 });
      const vlc = await text(`${card} .vlc`);
      const playlist = await text(`${card} .playlist`);
      if (!/paused/.test(vlc) || !/0:12/.test(vlc)) throw new Error(`vlc: ${vlc}`);
      if (!/Lobby loop/.test(playlist) || !/3\/12/.test(playlist)) throw new Error(`playlist: ${playlist}`);
      const stored = await page.evaluate(() => localStorage.getItem('unisono.adminToken'));
      if (stored !== adminToken) throw new Error('token not remembered');
      if (new URL(page.url()).search.includes('token')) throw new Error('token left in the address bar');
      return `${vlc} | ${playlist}`;
    });

    await check('a state change from the device arrives as a patch and shows', async () => {
      const rev0 = Number(await text(`${card} .rev`));
      await ack(dev, 'player:state', state('playing', 75));
      await waitFor((sel) => /playing · 1:15/.test(document.querySelector(sel)?.textContent ?? ''), `${card} .vlc`);
      const rev1 = Number(await text(`${card} .rev`));
      if (!(rev1 > rev0)) throw new Error(`rev ${rev0} → ${rev1}`);
      return `rev ${rev0} → ${rev1}: ${await text(`${card} .vlc`)}`;
    });

    await check('a command button reaches the device; its result goes pending → ok', async () => {
      let release;
      const gate = new Promise((r) => { release = r; });
      answer = async () => { await gate; return { status: 'success', result: { playing: true } }; };
      await page.click(`${card} button[data-command="vlc:play"]`);
      await waitFor(() => document.querySelector('#runs li')?.dataset.kind === 'pending');
      await within(3000, (async () => { while (!commands.some((c) => c.command === 'vlc:play')) await sleep(20); })(), 'player:command vlc:play');
      release();
      await waitFor(() => {
        const li = document.querySelector('#runs li');
        return li?.dataset.kind === 'ok' && li.dataset.command === 'vlc:play';
      });
      return await text('#runs li');
    });

    await check("the device's own error shows with its code", async () => {
      answer = async () => ({ status: 'error', error: { code: 'VLC_NOT_RUNNING', message: 'vlc is down' } });
      await page.click(`${card} button[data-command="vlc:pause"]`);
      await waitFor(() => {
        const li = document.querySelector('#runs li');
        return li?.dataset.kind === 'error' && li.dataset.command === 'vlc:pause' && /VLC_NOT_RUNNING/.test(li.textContent);
      });
      return await text('#runs li');
    });

    await check('a command the device ignores shows a timeout and a failed-command alert', async () => {
      answer = () => null;
      await page.click(`${card} button[data-command="vlc:stop"]`);
      await waitFor(() => {
        const li = document.querySelector('#runs li');
        return li?.dataset.kind === 'timeout' && li.dataset.command === 'vlc:stop' && /COMMAND_TIMEOUT/.test(li.textContent);
      }, undefined, COMMAND_TIMEOUT_MS + 5000);
      await waitFor(() => [...document.querySelectorAll('#alerts li[data-kind="command"]')].some((a) => /vlc:stop.*COMMAND_TIMEOUT/.test(a.textContent)));
      return await text('#runs li');
    });

    await check('a snapshot result shows a thumbnail fetched over REST', async () => {
      answer = async (c) => (c.command === 'vlc:snapshot' ? { status: 'success', result: { image: png().toString('base64'), mime: 'image/png' } } : null);
      await page.click(`${card} button[data-command="vlc:snapshot"]`);
      await waitFor((sel) => {
        const img = document.querySelector(sel);
        return img && img.src.startsWith('blob:') && img.complete && img.naturalWidth === 160;
      }, `${card} img.thumb`);
      const status = await page.getAttribute('#runs li', 'data-kind');
      if (status !== 'ok') throw new Error(`snapshot run: ${status}`);
      return 'img 160×90 from a blob: URL';
    });

    await check('the usage charts render with data', async () => {
      // At least two polls of devices:stats (every 2 s) give a rate.
      await waitFor(() => {
        const pts = (id) => (document.querySelector(`#${id} polyline`)?.getAttribute('points') ?? '').trim().split(/\s+/).filter(Boolean).length;
        return pts('chart-commands') >= 2 && pts('chart-states') >= 2 && pts('chart-online') >= 2;
      }, undefined, 10000);
      // The commands sent above show as a rate: the chart's top label (1.25 × its maximum).
      const top = parseFloat(await text('#chart-commands text'));
      if (!(top > 1)) throw new Error(`commands chart maximum ${top}/min`);
      const online = await text('#stats .stat-online');
      if (online !== '1') throw new Error(`online: ${online}`);
      return `commands/min ${await text('#stats .stat-commands')}, states/min ${await text('#stats .stat-states')}, online ${online}`;
    });

    await page.screenshot({ path: path.join(OUT, 'admin.png'), fullPage: true });

    await check('the token is remembered: /admin without ?token= shows the device', async () => {
      await page.goto(`${url}/admin`);
      await page.waitForSelector(`${card}[data-online="true"]`, { timeout: 8000 });
      // Thumbnails are fetched on load too.
      await waitFor((sel) => document.querySelector(sel)?.naturalWidth === 160, `${card} img.thumb`);
    });

    await check('a disconnect gives an offline alert and an offline card', async () => {
      dev.close();
      await waitFor((id) => [...document.querySelectorAll('#alerts li[data-kind="offline"]')].some((a) => a.dataset.device === id), DEVICE);
      await page.waitForSelector(`${card}[data-online="false"]`, { timeout: 5000 });
      const disabled = await page.$eval(`${card} button[data-command="vlc:play"]`, (b) => b.disabled);
      if (!disabled) throw new Error('commands still enabled for an offline device');
      return await text('#alerts li');
    });
    await page.screenshot({ path: path.join(OUT, 'admin-offline.png'), fullPage: true });
  } catch (e) {
    if (!failed) log('FAIL', e.message);
    failed = failed || 1;
    if (page) await page.screenshot({ path: path.join(OUT, 'admin-failure.png'), fullPage: true }).catch(() => {});
  } finally {
    dev.close();
    await browser.close().catch(() => {});
    child.kill('SIGTERM');
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  if (failed) process.exit(1);
  log(`all checks passed; screenshot: ${path.join(OUT, 'admin.png')}`);
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
