// The npm package's JavaScript API from plain Node, against the real binary: UnisonoClient
// connects, syncs its clock, creates and joins a room, loads a song, follows the timing vector,
// rejects with the server's error code, reconnects with the resume token after a drop, and a
// PlayerSync with a custom adapter is driven onto the clock.
//
// `runSession(unisono, { bin })` takes the package's exports, so a consumer project can load
// `unisono` by package name (`require` or `import`) and hand it over: `tests/npm/run.mjs` does
// that with the packed tarball installed into a temp project. Run directly, it loads a
// `wasm-bindgen --target nodejs` output dir (handy while working on the bindings):
//
// Usage: node tests/browser/npm_client.mjs --pkg <nodejs build dir> [--bin target/debug/unisono]
// Node 20 has no global WebSocket: the `ws` package stands in (browsers and Node >= 22 have one).

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { WebSocket } from 'ws';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
globalThis.WebSocket ??= WebSocket;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs the whole session with the package's exports; resolves to the number of failed checks. */
export async function runSession({ UnisonoClient, PlayerSync }, { bin = 'target/debug/unisono', label = '' } = {}) {
  let failures = 0;
  const check = (name, ok, detail = '') => {
    console.log(`${ok ? 'PASS' : 'FAIL'}${label && ` [${label}]`} ${name} ${detail}`);
    if (!ok) failures++;
  };

  const BIN = path.resolve(root, bin);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'unisono-npm-'));
  function startServer(extra) {
    const child = spawn(BIN, ['serve', '--data-dir', tmp, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.ready = new Promise((resolve, reject) => {
      let seen = '';
      const on = (d) => { seen += d; const m = seen.match(/listening on http:\/\/([0-9.:]+)/); if (m) resolve(m[1]); };
      child.stdout.on('data', on); child.stderr.on('data', on);
      setTimeout(() => reject(new Error(`no server: ${seen}`)), 15000);
    });
    return child;
  }
  const API_KEY = 'npm-test-key-0123456789';
  let server = startServer(['--listen', '127.0.0.1:0', '--api-key', `default=${API_KEY}`]);
  const base = await server.ready;
  try {
    const a = new UnisonoClient();
    const states = [];
    a.onConnection = (s) => states.push(s);
    let lastPlayback = null;
    a.onPlayback = (pb, why) => { lastPlayback = [pb, why]; };
    await a.connect(`ws://${base}/ws`);
    check('connects', a.connectionState === 'open' && typeof a.sessionId === 'string', a.sessionId);
    await sleep(300);
    const s = a.syncStats();
    check('clock burst on connect', s.samples >= 5 && s.errorBound < 5, JSON.stringify(s));
    check('serverNow is epoch ms', Math.abs(a.serverNow() - Date.now()) < 1000);

    const { code } = await a.createRoom({ name: 'npm', memberName: 'A' });
    check('createRoom', /^[0-9A-Z]{6}$/.test(code) && a.isHost, code);
    await a.loadSong({ id: 'x', title: 'X', provider: 'url', url: 'http://example.invalid/x.mp3', durationMs: 60000 }, true);
    await sleep(500);
    const p = a.positionNow();
    check('position advances from the vector', p > 300 && p < 1000, `${p?.toFixed(1)} ms`);
    check('onPlayback fired', lastPlayback && lastPlayback[0].isPlaying, lastPlayback && lastPlayback[1]);

    const b = new UnisonoClient();
    await b.connect(`ws://${base}/ws`);
    await b.joinRoom(code.toLowerCase(), 'B');
    await sleep(300);
    check('joiner sees the same position', Math.abs(b.positionNow() - a.positionNow()) < 20,
      `${(b.positionNow() - a.positionNow()).toFixed(2)} ms apart`);
    try {
      await b.pause();
      check('non-host pause rejects', false);
    } catch (e) {
      check('non-host pause rejects with the server code', e.code === 'NOT_HOST', e.code);
    }
    try {
      await b.joinRoom('ZZZZZZ');
      check('unknown room rejects', false);
    } catch (e) {
      check('unknown room rejects with ROOM_NOT_FOUND', e.code === 'ROOM_NOT_FOUND', e.code);
    }
    await b.joinRoom(code);
    // NaN is written as null (JSON) and refused by the server; a BigInt has no JSON form at all
    // and is refused by the client before anything is sent.
    const payloads = [
      ['seek(NaN)', () => a.seek(NaN)],
      ['loadSong without an id', () => a.loadSong({ title: 'x' })],
      ['a BigInt payload', () => a.request('seek-playback', { positionMs: 10n })],
    ];
    for (const [what, call] of payloads) {
      try {
        await call();
        check(`${what} rejects`, false);
      } catch (e) {
        check(`${what} rejects with INVALID_PAYLOAD`, e.code === 'INVALID_PAYLOAD', `${e.code}: ${e.message}`);
      }
    }

    // Beyond the room protocol: pushes from `POST /api/publish` reach `onPush`, and `request`
    // carries the device admin protocol on a connection opened with an admin token.
    const pushed = [];
    b.onPush = (event, data) => pushed.push([event, data]);
    const res = await fetch(`http://${base}/api/publish`, {
      method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ target: 'room', id: code, event: 'device-update', data: { deviceId: 'plug-7', online: true } }),
    });
    await sleep(200);
    check('a published event reaches onPush', res.status === 200 && pushed.some(([e, d]) => e === 'device-update' && d.deviceId === 'plug-7'),
      `${res.status} ${JSON.stringify(pushed)}`);
    const adminToken = execFileSync(BIN, ['token', '--tenant', 'default', '--role', 'admin', '--sub', 'npm-admin', '--data-dir', tmp],
      { encoding: 'utf8' }).trim().split('\n').pop().trim();
    const admin = new UnisonoClient();
    await admin.connect(`ws://${base}/ws?token=${adminToken}`);
    const listed = await admin.request('devices:list', {});
    check('request carries the admin protocol (devices:list)', Array.isArray(listed?.devices), JSON.stringify(listed));
    try {
      await b.request('devices:list', {});
      check('admin events need an admin token', false);
    } catch (e) {
      check('admin events need an admin token (FORBIDDEN)', e.code === 'FORBIDDEN', e.code);
    }
    admin.close();

    // A custom adapter: an ideal player that follows what PlayerSync tells it.
    let pos = 0, playing = false, at = performance.now(), rate = 1;
    const now = () => (playing ? pos + (performance.now() - at) * rate : pos);
    const adapter = {
      load: () => true, positionMs: () => now(), isPlaying: () => playing,
      play: () => { pos = now(); at = performance.now(); playing = true; },
      pause: () => { pos = now(); playing = false; },
      seek: (ms) => { pos = ms; at = performance.now(); },
      setRate: (r) => { pos = now(); at = performance.now(); rate = r; },
    };
    const sync = PlayerSync.custom(b, adapter, { canSetRate: true, rateStep: null, seekLatencyMs: 0, positionGranularityMs: 0 });
    sync.start();
    await sleep(1500);
    const st = sync.stats();
    check('PlayerSync keeps a custom player on the clock', playing && Math.abs(st.driftMs) < 15, JSON.stringify({ driftMs: st.driftMs, mode: st.mode }));
    await a.pause();
    await sleep(300);
    check('pause reaches the synced player', !playing);
    sync.stop();

    // Restart the server on the same port: rooms survive, and so does the session identity (its
    // resume token is signed with the server secret in the data dir). The client must reconnect
    // with backoff, get its session id back and re-join its room by code on its own.
    const before = b.sessionId;
    const states2 = [];
    b.onConnection = (st2) => states2.push(st2);
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    server = startServer(['--listen', base]);
    await server.ready;
    let t = Date.now();
    while (Date.now() - t < 5000 && !(b.connectionState === 'open' && b.room?.room?.code === code)) await sleep(20);
    check('after a server restart: reconnects, same session id, back in the room by code',
      b.connectionState === 'open' && b.sessionId === before && b.room?.room?.code === code,
      `${states2.join(' → ')} in ${Date.now() - t} ms`);
    a.close();
    b.close();
  } finally {
    server.kill('SIGTERM');
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return failures;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const args = process.argv.slice(2);
  const opt = (n, d) => (args.indexOf(`--${n}`) >= 0 ? args[args.indexOf(`--${n}`) + 1] : d);
  const pkg = createRequire(import.meta.url)(path.join(path.resolve(opt('pkg', 'wasm-pkg/pkg')), 'unisono.js'));
  const failures = await runSession(pkg, { bin: opt('bin', 'target/debug/unisono') });
  console.log(failures ? `${failures} failed` : 'all passed');
  process.exit(failures ? 1 : 0);
}
