// Browser end-to-end: the real `unisono` binary serves the built web app (dist/) and a WAV file
// generated here; two headless Chromium pages (Debian's /usr/bin/chromium via playwright-core)
// join one room, the host plays the file, and both pages' <audio>.currentTime are sampled
// against one clock (performance.timeOrigin + performance.now()) for 20 s. Prints median, p95
// and max inter-page error, checks that pause, seek and speed reach the other page and that a
// reload is back in sync, and saves a screenshot of the room page.
//
// Usage: node tests/browser/sync.mjs [--bin target/debug/unisono] [--dist dist] [--seconds 20]
//        [--out tests/browser/out] [--strict] [--delay 50 --jitter 20]
// --delay/--jitter put a TCP proxy between the guest page and the server that holds every chunk,
// each way, for delay ± jitter ms (order kept), like a slow mobile link; targets then p95 <= 25.
// Exits 1 when a behaviour check fails (pause, seek, speed, reload). The precision targets
// (median <= 10 ms, p95 <= 20 ms) fail the run only with --strict: on a loaded 2-core CI box
// other builds steal the CPU the pages' media pipelines need, and the figure then measures
// the machine, not the sync.

import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, log, opt, quantile, sleep, startServer, wav, waitFor } from './lib.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.resolve(root, opt('bin', 'target/debug/unisono'));
const DIST = path.resolve(root, opt('dist', 'dist'));
const SECONDS = Number(opt('seconds', '20'));
const OUT = path.resolve(root, opt('out', 'tests/browser/out'));
const STRICT = process.argv.includes('--strict');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DELAY = Number(opt('delay', '0'));
const JITTER = Number(opt('jitter', '0'));

/** A TCP proxy to `target` ("host:port") delaying each chunk by DELAY ± JITTER ms, in order. */
function delayProxy(target) {
  const [host, port] = target.split(':');
  // One queue per direction, drained by one timer, so chunks never overtake each other.
  const pipe = (from, to) => {
    const queue = [];
    let last = 0, timer = null, ended = false;
    const drain = () => {
      timer = null;
      while (queue.length && queue[0][0] <= Date.now()) to.write(queue.shift()[1]);
      if (queue.length) timer = setTimeout(drain, queue[0][0] - Date.now());
      else if (ended) to.destroy();
    };
    from.on('data', (chunk) => {
      last = Math.max(last, Date.now() + DELAY + (Math.random() * 2 - 1) * JITTER);
      queue.push([last, chunk]);
      if (!timer) timer = setTimeout(drain, queue[0][0] - Date.now());
    });
    from.on('close', () => { ended = true; if (!timer) drain(); });
    from.on('error', () => {});
    to.on('error', () => {});
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), host);
    pipe(client, upstream);
    pipe(upstream, client);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}` })));
}

/** One sample of a page: [wall clock ms, audio position ms, paused, playbackRate]. */
const probe = () => {
  const a = document.querySelector('audio');
  return [performance.timeOrigin + performance.now(), a ? a.currentTime * 1000 : NaN, a ? a.paused : true, a ? a.playbackRate : 0];
};

/**
 * Milliseconds from `since` until the two pages stay within `within` ms of each other for
 * `hold` consecutive samples (50 ms apart), or null after `timeout` ms.
 */
async function converge(host, guest, since, within = 10, hold = 5, timeout = 10000) {
  let run = 0, first = null;
  while (Date.now() - since < timeout) {
    const [a, b] = await Promise.all([host.evaluate(probe), guest.evaluate(probe)]);
    const ok = !a[2] && !b[2] && Number.isFinite(a[1]) && Number.isFinite(b[1]) && Math.abs((a[1] - a[0]) - (b[1] - b[0])) <= within;
    if (ok) {
      if (run++ === 0) first = Date.now();
      if (run >= hold) return first - since;
    } else {
      run = 0;
    }
    await sleep(50);
  }
  return null;
}

async function main() {
  if (!fs.existsSync(path.join(DIST, 'index.html'))) throw new Error(`no built app in ${DIST} (trunk build --release)`);
  if (!fs.existsSync(BIN)) throw new Error(`no server binary at ${BIN}`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'unisono-browser-'));
  const webDir = path.join(tmp, 'web');
  fs.cpSync(DIST, webDir, { recursive: true });
  fs.mkdirSync(path.join(webDir, 'media'));
  const SONG_S = 120;
  fs.writeFileSync(path.join(webDir, 'media', 'tone.wav'), wav(SONG_S));
  fs.mkdirSync(OUT, { recursive: true });

  const { child, url } = await startServer(BIN, webDir, path.join(tmp, 'data'));
  log('server', url);
  const proxy = DELAY > 0 ? await delayProxy(url.replace('http://', '')) : null;
  const guestUrl = proxy ? proxy.url : url;
  if (proxy) log(`guest goes through a ${DELAY} ± ${JITTER} ms proxy: ${guestUrl}`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    // playwright gives every launch a fresh temporary --user-data-dir.
  });
  const results = { ok: true, checks: [] };
  const check = (name, pass, detail, precision = false) => {
    results.checks.push({ name, pass, detail, precision });
    if (!pass && (!precision || STRICT)) results.ok = false;
    log(pass ? 'PASS' : 'FAIL', name, detail ?? '');
  };
  try {
    const host = await (await browser.newContext({ viewport: { width: 1000, height: 1100 } })).newPage();
    const guest = await (await browser.newContext({ viewport: { width: 1000, height: 1100 } })).newPage();
    for (const [n, p] of [['host', host], ['guest', guest]]) {
      p.on('pageerror', (e) => log(`${n} page error:`, e.message));
      p.on('console', (m) => m.type() === 'error' && log(`${n} console:`, m.text()));
    }
    await host.goto(url);
    await host.fill('#name', 'Host');
    await host.click('#create');
    await host.waitForSelector('#room-code');
    const code = (await host.textContent('#room-code')).trim();
    log('room', code);
    await guest.goto(`${guestUrl}/r/${code}`);
    await guest.waitForSelector('#room-code');
    await waitFor(host, () => document.querySelectorAll('#members li').length === 2);

    await host.fill('#link', `${url}/media/tone.wav`);
    await host.click('#add');
    await waitFor(host, () => document.querySelectorAll('#queue li').length === 1);
    const t0 = Date.now();
    await host.click('#play');
    const playing = () => { const a = document.querySelector('audio'); return a && !a.paused && a.currentTime > 0.3; };
    await Promise.all([waitFor(host, playing), waitFor(guest, playing)]);
    log(`both playing after ${Date.now() - t0} ms`);
    // Time from Play until the pages are within 10 ms of each other (and stay, 5 samples).
    results.convergeMs = { start: await converge(host, guest, t0) };

    // Steady state: sample both pages together, 10 per second.
    const settle = 3000;
    await sleep(settle);
    const errors = [];
    const end = Date.now() + SECONDS * 1000;
    const count = () => {
      window.__rates = 0; window.__seeks = 0; const a = document.querySelector('audio');
      a.addEventListener('ratechange', () => window.__rates++); a.addEventListener('seeking', () => window.__seeks++);
    };
    await Promise.all([host.evaluate(count), guest.evaluate(count)]);
    // Each page's own PlayerSync drift (its player against its clock), from the sync panel.
    const ownDrift = () => parseFloat(document.querySelector('#drift')?.textContent ?? 'NaN');
    const own = [];
    while (Date.now() < end) {
      const [a, b] = await Promise.all([host.evaluate(probe), guest.evaluate(probe)]);
      if (!a[2] && !b[2]) errors.push((a[1] - a[0]) - (b[1] - b[0]));
      own.push(...(await Promise.all([host.evaluate(ownDrift), guest.evaluate(ownDrift)])).filter(Number.isFinite).map(Math.abs));
      await sleep(100);
    }
    const abs = errors.map(Math.abs);
    const fig = {
      samples: errors.length,
      medianMs: +quantile(abs, 0.5).toFixed(2),
      p95Ms: +quantile(abs, 0.95).toFixed(2),
      maxMs: +Math.max(...abs).toFixed(2),
      meanSignedMs: +(errors.reduce((s, x) => s + x, 0) / errors.length).toFixed(2),
    };
    const churnOf = () => ({ rateChanges: window.__rates, seeks: window.__seeks });
    const [hc, gc] = await Promise.all([host.evaluate(churnOf), guest.evaluate(churnOf)]);
    const perMin = (c) => ({ rateChangesPerMin: +(c.rateChanges * 60 / SECONDS).toFixed(1), seeksPerMin: +(c.seeks * 60 / SECONDS).toFixed(1) });
    results.steady = {
      ...fig, seconds: SECONDS, hostChurn: { ...hc, ...perMin(hc) }, guestChurn: { ...gc, ...perMin(gc) },
      ownDriftP95Ms: +quantile(own, 0.95).toFixed(2), loadAvg: os.loadavg()[0],
    };
    log('steady state', JSON.stringify(results.steady));
    check('median inter-page error <= 10 ms', fig.medianMs <= 10, `${fig.medianMs} ms`, true);
    const p95Target = DELAY > 0 ? 25 : 20;
    check(`p95 inter-page error <= ${p95Target} ms`, fig.p95Ms <= p95Target, `${fig.p95Ms} ms`, true);
    results.network = DELAY > 0 ? { delayMs: DELAY, jitterMs: JITTER } : null;
    await host.screenshot({ path: path.join(OUT, 'room.png'), fullPage: true });
    await guest.screenshot({ path: path.join(OUT, 'room-guest.png'), fullPage: true });

    // Pause on the host reaches the guest.
    await host.click('#play');
    await waitFor(guest, () => document.querySelector('audio').paused, undefined, 3000).then(
      () => check('pause reaches the guest', true), () => check('pause reaches the guest', false));
    // Seek while paused, then resume: the guest lands at the new position.
    await host.evaluate(() => {
      const s = document.querySelector('#seek');
      const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
      set.call(s, '60000'); s.dispatchEvent(new Event('input', { bubbles: true })); s.dispatchEvent(new Event('change', { bubbles: true }));
    });
    await waitFor(guest, () => Math.abs(document.querySelector('audio').currentTime - 60) < 0.1, undefined, 3000).then(
      () => check('seek reaches the guest', true), () => check('seek reaches the guest', false));
    await host.click('#play');
    await Promise.all([waitFor(host, playing), waitFor(guest, playing)]);
    // Speed change.
    await host.selectOption('#rate', '1.25');
    await waitFor(guest, () => Math.abs(document.querySelector('audio').playbackRate - 1.25) < 0.06, undefined, 3000).then(
      () => check('speed reaches the guest', true), () => check('speed reaches the guest', false));
    await host.selectOption('#rate', '1');
    await sleep(2000);
    // A seek while playing: time until the pages are within 10 ms again.
    const ts = Date.now();
    await host.evaluate(() => {
      const s = document.querySelector('#seek');
      const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
      set.call(s, '30000'); s.dispatchEvent(new Event('input', { bubbles: true })); s.dispatchEvent(new Event('change', { bubbles: true }));
    });
    await waitFor(guest, () => document.querySelector('audio').currentTime < 40, undefined, 3000).catch(() => {});
    results.convergeMs.seek = await converge(host, guest, ts);
    check('converges within 10 ms after a seek while playing', results.convergeMs.seek !== null,
      results.convergeMs.seek === null ? 'never' : `${results.convergeMs.seek} ms`);
    await sleep(1000);

    // Reload the guest: back within 25 ms in under 3 s.
    const tr = Date.now();
    await guest.reload();
    await guest.waitForSelector('#room-code');
    let back = null;
    while (Date.now() - tr < 6000) {
      const [a, b] = await Promise.all([host.evaluate(probe), guest.evaluate(probe)]);
      if (!b[2] && Number.isFinite(b[1]) && Math.abs((a[1] - a[0]) - (b[1] - b[0])) <= 25) {
        back = Date.now() - tr;
        break;
      }
      await sleep(50);
    }
    results.reloadBackMs = back;
    results.convergeMs.rejoin = back === null ? null : await converge(host, guest, tr);
    log("converged within 10 ms (ms after the action)", JSON.stringify(results.convergeMs));
    check('reload is back within 25 ms in under 3 s', back !== null && back < 3000, back === null ? 'never' : `${back} ms`);
  } finally {
    await browser.close().catch(() => {});
    child.kill('SIGTERM');
    proxy?.server.close();
    fs.writeFileSync(path.join(OUT, 'result.json'), JSON.stringify(results, null, 2));
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  log(`screenshot: ${path.join(OUT, 'room.png')}`);
  console.log(JSON.stringify(results));
  process.exit(results.ok ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
