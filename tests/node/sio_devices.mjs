// Devices over Socket.IO (seed 003): register → state → admin patch → command → response,
// retries with the same commandId, timeouts, offline devices, queued commands, snapshots,
// presence by heartbeat, over polling-then-upgrade and over WebSocket-only.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  connect, errorCode, get, mergePatch, nextEvent, request, run, sleep, token, within,
} from './lib.mjs';

const TENANT = 'acme';
const adminToken = token({ tenant: TENANT, role: 'admin', sub: 'alice' });
let admin;
const adminView = new Map(); // deviceId → {rev, state}, kept by applying patches

function applyUpdate(u) {
  const mine = adminView.get(u.deviceId) ?? { rev: 0, state: {} };
  assert.equal(u.baseRev, mine.rev, `patch for ${u.deviceId} applies to rev ${mine.rev}`);
  adminView.set(u.deviceId, { rev: u.rev, state: mergePatch(mine.state, u.patch) });
}

// What the server stores: RFC 7396 cannot carry null members, so they are dropped.
const stripNulls = (v) => (v && typeof v === 'object' && !Array.isArray(v)
  ? Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null).map(([k, x]) => [k, stripNulls(x)]))
  : v);

function stateOf(n) {
  return stripNulls(rawStateOf(n));
}

function rawStateOf(n) {
  return {
    timestamp: new Date(1700000000000 + n * 1000).toISOString(),
    system: { cpu: 10 + n, memory: { used: 512, total: 2048 } },
    storage: { free: 1000 - n },
    vlc: { state: n % 2 ? 'playing' : 'paused', time: n, volume: 80 },
    app: { version: '1.2.3' },
    activePlaylist: { id: 'p1', items: 12 },
    defaultPlaylist: { id: 'p0' },
    snapshot: { at: null },
  };
}

async function device(id, transports) {
  const t = token({ tenant: TENANT, role: 'player', sub: id });
  const opts = { auth: { token: t } };
  if (transports) opts.transports = transports;
  const s = await connect('/players', opts);
  s.commands = [];
  s.on('player:command', (c) => s.commands.push(c));
  return s;
}

async function flow(id, transports) {
  const dev = await device(id, transports);
  if (!transports) {
    if (dev.io.engine.transport.name !== 'websocket') await new Promise((r) => dev.io.engine.once('upgrade', r));
  }
  assert.equal(dev.io.engine.transport.name, 'websocket');

  // register → player:registered, and admins see device:online
  const reg = await request(dev, 'player:register', { deviceId: id, name: `Kiosk ${id}`, os: 'linux' });
  assert.equal(reg.deviceId, id);
  // Registering twice on one connection keeps it (seed clients re-send on reconnect logic).
  await request(dev, 'player:register', { deviceId: id, name: `Kiosk ${id}`, os: 'linux' });
  assert.equal(dev.connected, true);
  assert.equal((await nextEvent(dev, 'player:registered')).deviceId, id);
  assert.equal((await nextEvent(admin, 'device:online', (d) => d.deviceId === id)).name, `Kiosk ${id}`);
  await sleep(50);
  assert.equal(dev.connected, true, 'still connected after registering twice');
  assert.equal((admin.events.get('device:online') ?? []).filter((d) => d.deviceId === id).length, 0, 'one device:online');

  // state → admin gets a merge patch that reproduces it
  const r1 = await request(dev, 'player:state', rawStateOf(1));
  assert.equal(r1.rev, 1);
  applyUpdate(await nextEvent(admin, 'state:updated', (u) => u.deviceId === id));
  assert.deepEqual(adminView.get(id).state, stateOf(1));
  await request(dev, 'player:state', stateOf(2));
  const u2 = await nextEvent(admin, 'state:updated', (u) => u.deviceId === id);
  assert.deepEqual(Object.keys(u2.patch).sort(), ['storage', 'system', 'timestamp', 'vlc'], 'only what changed');
  assert.equal(u2.patch.app, undefined);
  applyUpdate(u2);
  assert.deepEqual(adminView.get(id).state, stateOf(2));

  // command → device answers → the admin's ack resolves with the result, plus command:response
  const pending = request(admin, 'command', { deviceId: id, command: 'vlc:play', params: { playlistId: 'p1' } });
  const cmd = await within(3000, (async () => { while (!dev.commands.length) await sleep(5); return dev.commands.shift(); })(), 'player:command');
  assert.equal(cmd.command, 'vlc:play');
  assert.deepEqual(cmd.params, { playlistId: 'p1' });
  assert.match(cmd.commandId, /^[0-9a-f]{16}$/);
  await request(dev, 'player:command:response', { commandId: cmd.commandId, status: 'success', result: { playing: true } });
  const out = await pending;
  assert.equal(out.status, 'success');
  assert.deepEqual(out.result, { playing: true });
  assert.equal(out.commandId, cmd.commandId);
  assert.equal(out.attempts, 1);
  assert.equal((await nextEvent(admin, 'command:response', (c) => c.commandId === cmd.commandId)).status, 'success');
  return dev;
}

let devA, devB;
const bin = process.env.UNISONO_BIN;

await run('sio_devices', [
  ['admin connects and subscribes to all devices', async () => {
    admin = await connect('/admin', { auth: { token: adminToken } });
    const { devices } = await request(admin, 'devices:subscribe', {});
    for (const d of devices) adminView.set(d.deviceId, { rev: d.rev, state: d.state });
  }],
  ['register → state → patch → command → ack, over polling then upgrade', async () => {
    devA = await flow('kiosk-a');
  }],
  ['the same over WebSocket only', async () => {
    devB = await flow('kiosk-b', ['websocket']);
  }],
  ['a device may answer through the ack callback (acks both ways)', async () => {
    const t = token({ tenant: TENANT, role: 'player', sub: 'kiosk-ack' });
    const dev = await connect('/players', { auth: { token: t }, transports: ['websocket'] });
    dev.on('player:command', (c, ack) => ack({ status: 'success', result: { viaAck: true, command: c.command } }));
    await request(dev, 'player:register', {});
    const out = await request(admin, 'command', { deviceId: 'kiosk-ack', command: 'vlc:stop' });
    assert.deepEqual(out.result, { viaAck: true, command: 'vlc:stop' });
    assert.equal(out.attempts, 1);
    dev.close();
    await nextEvent(admin, 'device:offline', (d) => d.deviceId === 'kiosk-ack');
  }],
  ['a chatty device is coalesced: few patches, final state exact', async () => {
    const before = (admin.events.get('state:updated') ?? []).length;
    for (let n = 10; n < 40; n++) devA.emit('player:state', stateOf(n));
    await request(devA, 'player:state', stateOf(40));
    await sleep(1200);
    const updates = (admin.events.get('state:updated') ?? []).filter((u) => u.deviceId === 'kiosk-a');
    admin.events.set('state:updated', []);
    for (const u of updates) applyUpdate(u);
    assert.ok(updates.length <= 4, `31 states gave ${updates.length} admin updates (≤ 2/s)`);
    assert.deepEqual(adminView.get('kiosk-a').state, stateOf(40));
    assert.ok(before >= 0);
  }],
  ['a rev gap is repaired with devices:resync', async () => {
    const full = await request(admin, 'devices:resync', { deviceId: 'kiosk-a' });
    assert.deepEqual(full.state, adminView.get('kiosk-a').state);
    assert.equal(full.rev, adminView.get('kiosk-a').rev);
  }],
  ['a device that ignores the first delivery gets the retry with the same commandId', async () => {
    devA.commands.length = 0;
    const pending = request(admin, 'command', { deviceId: 'kiosk-a', command: 'vlc:pause', timeoutMs: 300, retries: 2 });
    await within(3000, (async () => { while (devA.commands.length < 2) await sleep(5); })(), 'the retry');
    const [first, second] = devA.commands;
    assert.equal(first.commandId, second.commandId);
    await request(devA, 'player:command:response', { commandId: second.commandId, status: 'success', result: {} });
    const out = await pending;
    assert.equal(out.attempts, 2);
    assert.equal(out.status, 'success');
  }],
  ['a device that never answers yields COMMAND_TIMEOUT after the retries', async () => {
    devB.commands.length = 0;
    const t0 = Date.now();
    const code = await errorCode(admin, 'command', { deviceId: 'kiosk-b', command: 'vlc:stop', timeoutMs: 200, retries: 1 });
    assert.equal(code, 'COMMAND_TIMEOUT');
    assert.equal(devB.commands.length, 2, 'delivered once plus one retry');
    assert.ok(Date.now() - t0 >= 400);
    const failed = await nextEvent(admin, 'command:response', (c) => c.command === 'vlc:stop' && c.status === 'failed');
    assert.equal(failed.error.code, 'COMMAND_TIMEOUT');
  }],
  ['invalid commands and params are refused before reaching the device', async () => {
    devA.commands.length = 0;
    assert.equal(await errorCode(admin, 'command', { deviceId: 'kiosk-a', command: 'vlc:explode' }), 'INVALID_COMMAND');
    assert.equal(await errorCode(admin, 'command', { deviceId: 'kiosk-a', command: 'vlc:play', params: { index: 'one' } }), 'INVALID_COMMAND');
    assert.equal(await errorCode(admin, 'command', { deviceId: 'nope', command: 'vlc:play' }), 'DEVICE_NOT_FOUND');
    await sleep(100);
    assert.equal(devA.commands.length, 0);
  }],
  ['a snapshot is stored compressed and reaches admins only as a reference', async () => {
    devA.commands.length = 0;
    const pending = request(admin, 'command', { deviceId: 'kiosk-a', command: 'vlc:snapshot' });
    const cmd = await within(3000, (async () => { while (!devA.commands.length) await sleep(5); return devA.commands.shift(); })(), 'snapshot command');
    const image = Buffer.alloc(50_000, 7); // compressible stand-in for an image
    await request(devA, 'player:command:response', {
      commandId: cmd.commandId, status: 'success', result: { image: image.toString('base64'), mime: 'image/png' },
    });
    const out = await pending;
    assert.equal(out.result.image, undefined, 'no blob to admins');
    assert.equal(out.result.snapshot.url, '/api/devices/kiosk-a/snapshot');
    assert.equal(out.result.snapshot.bytes, 50_000);
    assert.ok(out.result.snapshot.storedBytes < 5_000, 'stored compressed');
  }],
  ['an offline device: device:offline, then DEVICE_OFFLINE at once', async () => {
    devB.close();
    await nextEvent(admin, 'device:offline', (d) => d.deviceId === 'kiosk-b');
    const t0 = Date.now();
    assert.equal(await errorCode(admin, 'command', { deviceId: 'kiosk-b', command: 'vlc:play' }), 'DEVICE_OFFLINE');
    assert.ok(Date.now() - t0 < 500);
  }],
  ['a queued command waits for the device and is delivered when it returns', async () => {
    const pending = request(admin, 'command', { deviceId: 'kiosk-b', command: 'vlc:fullscreen', params: { enabled: true }, queue: true, ttlMs: 10_000 }, 15_000);
    await sleep(300);
    devB = await device('kiosk-b', ['websocket']);
    await request(devB, 'player:register', { deviceId: 'kiosk-b', name: 'Kiosk kiosk-b' });
    await nextEvent(admin, 'device:online', (d) => d.deviceId === 'kiosk-b');
    const cmd = await within(3000, (async () => { while (!devB.commands.length) await sleep(5); return devB.commands.shift(); })(), 'queued command');
    assert.equal(cmd.command, 'vlc:fullscreen');
    await request(devB, 'player:command:response', { commandId: cmd.commandId, status: 'success', result: { fullscreen: true } });
    assert.deepEqual((await pending).result, { fullscreen: true });
    const { devices } = await request(admin, 'devices:list');
    assert.equal(devices.filter((d) => d.deviceId === 'kiosk-b').length, 1, 'no duplicate entry');
    assert.equal(devices.find((d) => d.deviceId === 'kiosk-b').online, true);
    assert.deepEqual(devices.find((d) => d.deviceId === 'kiosk-b').state, stateOf(2), 'state kept across reconnects');
  }],
  ['a frozen device (no close, no pongs) goes offline within the heartbeat bound', async () => {
    const here = fileURLToPath(new URL('.', import.meta.url));
    const t = token({ tenant: TENANT, role: 'player', sub: 'kiosk-frozen' });
    const child = spawn(process.execPath, [here + 'frozen_device.mjs'], {
      env: { ...process.env, DEVICE_TOKEN: t, DEVICE_ID: 'kiosk-frozen' }, stdio: ['ignore', 'pipe', 'inherit'],
    });
    await within(8000, new Promise((resolve) => child.stdout.on('data', (d) => String(d).includes('registered') && resolve())), 'frozen device registers');
    await nextEvent(admin, 'device:online', (d) => d.deviceId === 'kiosk-frozen');
    child.kill('SIGSTOP');
    const t0 = Date.now();
    await nextEvent(admin, 'device:offline', (d) => d.deviceId === 'kiosk-frozen', 10_000);
    const took = Date.now() - t0;
    child.kill('SIGKILL');
    const bound = 2 * Number(process.env.PING_SECS ?? 1) * 1000 + 700; // pingInterval + pingTimeout, plus scheduling slack
    assert.ok(took <= bound, `offline after ${took} ms (bound ${bound} ms)`);
    console.log(`     frozen device marked offline after ${took} ms`);
  }],
  ['admin-side metrics count commands and devices without payloads', async () => {
    const m = await get('/metrics');
    assert.equal(m.status, 200);
    assert.ok(!m.body.includes('kiosk-a'), 'no device ids in metric labels');
    assert.ok(!m.body.includes(TENANT), 'no tenant names in public metrics');
    assert.match(m.body, /unisono_device_commands_total\{outcome="timeout"\} 1/);
    assert.match(m.body, /unisono_device_commands_total\{outcome="offline"\} 1/);
    assert.match(m.body, /unisono_devices_online 2/);
    const stats = await request(admin, 'devices:stats');
    assert.equal(stats.devices, 4);
    assert.equal(stats.online, 2);
    assert.ok(stats.states >= 35, `states counted: ${stats.states}`);
    // 8 commands passed validation (2 vlc:play, acked stop, retried pause, timed-out stop,
    // snapshot, offline play, queued fullscreen); the timeout and the offline one failed.
    assert.equal(stats.commands, 8, JSON.stringify(stats));
    assert.equal(stats.commandsFailed, 2, JSON.stringify(stats));
  }],
  ['commands in flight are bounded per tenant (--max-pending-commands 3)', async () => {
    const slow = [1, 2, 3].map(() => errorCode(admin, 'command', { deviceId: 'kiosk-b', command: 'vlc:stop', timeoutMs: 400, retries: 0 }));
    await sleep(50);
    assert.equal(await errorCode(admin, 'command', { deviceId: 'kiosk-b', command: 'vlc:stop' }), 'RATE_LIMITED');
    assert.deepEqual(await Promise.all(slow), ['COMMAND_TIMEOUT', 'COMMAND_TIMEOUT', 'COMMAND_TIMEOUT']);
    devB.commands.length = 0;
    const again = request(admin, 'command', { deviceId: 'kiosk-b', command: 'vlc:stop' });
    const c = await within(3000, (async () => { while (!devB.commands.length) await sleep(5); return devB.commands.shift(); })(), 'command after the limit cleared');
    await request(devB, 'player:command:response', { commandId: c.commandId, status: 'success' });
    assert.equal((await again).status, 'success');
  }],
  ['seed 003\'s admin never subscribes: it gets every device, a full state first, then patches', async () => {
    const plain = await connect('/admin', { auth: { token: adminToken }, transports: ['websocket'] });
    const mine = new Map();
    const take = (u) => {
      const have = mine.get(u.deviceId) ?? { rev: 0, state: {} };
      assert.equal(u.baseRev, have.rev, `patch for ${u.deviceId} applies to rev ${have.rev}`);
      mine.set(u.deviceId, { rev: u.rev, state: mergePatch(have.state, u.patch) });
    };
    await sleep(600); // past the patch interval
    const r1 = await request(devA, 'player:state', stateOf(50));
    const first = await nextEvent(plain, 'state:updated', (u) => u.deviceId === 'kiosk-a');
    assert.equal(first.baseRev, 0, 'no base yet: the full state');
    take(first);
    assert.deepEqual(mine.get('kiosk-a'), { rev: r1.rev, state: stateOf(50) });
    await sleep(600);
    const r2 = await request(devA, 'player:state', stateOf(51));
    const second = await nextEvent(plain, 'state:updated', (u) => u.deviceId === 'kiosk-a');
    assert.equal(second.baseRev, r1.rev, 'then patches from it');
    take(second);
    assert.deepEqual(mine.get('kiosk-a'), { rev: r2.rev, state: stateOf(51) });
    // devices:unsubscribe opts out; presence still comes.
    await request(plain, 'devices:unsubscribe');
    await sleep(600);
    await request(devA, 'player:state', stateOf(52));
    await sleep(800);
    assert.equal((plain.events.get('state:updated') ?? []).filter((u) => u.deviceId === 'kiosk-a').length, 0, 'nothing after opting out');
    plain.close();
    for (const u of admin.events.get('state:updated')?.splice(0) ?? []) applyUpdate(u);
  }],
  ['close', async () => {
    devA.close(); devB.close(); admin.close();
    assert.ok(bin);
  }],
]);
