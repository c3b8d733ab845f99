// Tenants and auth across every edge: Socket.IO namespaces, /ws and REST. Nothing of one
// tenant reaches another; cross-tenant REST answers 404 (no existence leak); bad, expired and
// wrong-role tokens get CONNECT_ERROR and are counted; forced disconnect; server publishing;
// per-connection rate limits.
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import {
  URL, connect, connectNative, errorCode, get, nextEvent, refused, request, run, signJwt, sleep, song, token, within,
} from './lib.mjs';

const KEYS = { acme: 'acme-key-0123456789abcdef', globex: 'globex-key-0123456789abcdef' };
const tok = {
  acmeAdmin: token({ tenant: 'acme', role: 'admin', sub: 'alice' }),
  globexAdmin: token({ tenant: 'globex', role: 'admin', sub: 'gina' }),
  acmeUser: token({ tenant: 'acme', role: 'user', sub: 'ann' }),
  globexUser: token({ tenant: 'globex', role: 'user', sub: 'gus' }),
  acmeDevice: token({ tenant: 'acme', role: 'player', sub: 'acme-kiosk' }),
  staff: token({ tenant: 'ops', role: 'staff', sub: 'sam' }),
};
const api = async (method, path, tokenOrKey, body) => {
  const res = await fetch(URL + path, {
    method,
    headers: { ...(tokenOrKey ? { authorization: `Bearer ${tokenOrKey}` } : {}), 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: res.status, json, text, headers: res.headers };
};
const waitCommand = (dev) => within(3000, (async () => { while (!dev.commands.length) await sleep(5); return dev.commands.shift(); })(), 'player:command');

let acmeAdmin, globexAdmin, acmeDev, acmeBrowser, globexBrowser, acmeNative, code;

await run('sio_tenants', [
  ['bad, expired and wrong-role tokens are refused with CONNECT_ERROR', async () => {
    assert.match((await refused('/admin', { auth: { token: 'not-a-jwt' } })).message, /^INVALID_TOKEN/);
    const expired = await signJwt({ sub: 'x', tenant: 'acme', role: 'admin', exp: Math.floor(Date.now() / 1000) - 600 });
    assert.match((await refused('/admin', { auth: { token: expired } })).message, /^TOKEN_EXPIRED/);
    const forged = await signJwt({ sub: 'x', tenant: 'acme', role: 'admin', exp: 9999999999 }, 'wrong-secret');
    assert.match((await refused('/admin', { auth: { token: forged } })).message, /^INVALID_TOKEN/);
    assert.match((await refused('/admin', { auth: { token: tok.acmeDevice } })).message, /^FORBIDDEN_ROLE/);
    assert.match((await refused('/players', { auth: { token: tok.acmeUser } })).message, /^FORBIDDEN_ROLE/);
    assert.match((await refused('/players', {})).message, /^AUTH_REQUIRED/);
  }],
  ['refusals are counted in metrics by edge and reason', async () => {
    const m = (await get('/metrics')).body;
    assert.match(m, /unisono_auth_failures_total\{edge="socketio:\/admin",reason="INVALID_TOKEN"\} 2/);
    assert.match(m, /unisono_auth_failures_total\{edge="socketio:\/admin",reason="TOKEN_EXPIRED"\} 1/);
    assert.match(m, /unisono_auth_failures_total\{edge="socketio:\/players",reason="FORBIDDEN_ROLE"\} 1/);
  }],
  ['/ws refuses a bad token with 401 before upgrading', async () => {
    const ws = new WebSocket(URL.replace(/^http/, 'ws') + '/ws?token=junk');
    const status = await within(3000, new Promise((resolve) => ws.on('unexpected-response', (_req, res) => resolve(res.statusCode))), '401');
    assert.equal(status, 401);
  }],
  ['two tenants: admins and a device', async () => {
    acmeAdmin = await connect('/admin', { auth: { token: tok.acmeAdmin } });
    globexAdmin = await connect('/admin', { auth: { token: tok.globexAdmin } });
    await request(acmeAdmin, 'devices:subscribe', {});
    await request(globexAdmin, 'devices:subscribe', {});
    acmeDev = await connect('/players', { auth: { token: tok.acmeDevice } });
    acmeDev.commands = [];
    acmeDev.on('player:command', (c) => acmeDev.commands.push(c));
    await request(acmeDev, 'player:register', { name: 'Acme kiosk' });
    await request(acmeDev, 'player:state', { vlc: { state: 'playing' }, app: { v: 1 } });
    await nextEvent(acmeAdmin, 'state:updated', (u) => u.deviceId === 'acme-kiosk');
  }],
  ['a player token registers only its own device', async () => {
    assert.equal(await errorCode(acmeDev, 'player:register', { deviceId: 'someone-else' }), 'FORBIDDEN');
  }],
  ['the other tenant sees nothing and cannot reach the device', async () => {
    assert.deepEqual((await request(globexAdmin, 'devices:list')).devices, []);
    assert.equal(await errorCode(globexAdmin, 'command', { deviceId: 'acme-kiosk', command: 'vlc:play' }), 'DEVICE_NOT_FOUND');
    assert.equal(await errorCode(globexAdmin, 'devices:resync', { deviceId: 'acme-kiosk' }), 'DEVICE_NOT_FOUND');
    const p = request(acmeAdmin, 'command', { deviceId: 'acme-kiosk', command: 'vlc:pause' });
    const c = await waitCommand(acmeDev);
    await request(acmeDev, 'player:command:response', { commandId: c.commandId, status: 'success' });
    await p;
    await sleep(200);
    for (const ev of ['device:online', 'state:updated', 'command:response', 'device:offline']) {
      assert.equal((globexAdmin.events.get(ev) ?? []).length, 0, `globex got ${ev}`);
    }
  }],
  ['rooms are tenant-scoped on both edges', async () => {
    acmeBrowser = await connect('/', { auth: { token: tok.acmeUser } });
    acmeBrowser.status = await nextEvent(acmeBrowser, 'connection-status');
    code = (await request(acmeBrowser, 'create-room', { name: 'acme room' })).code;
    globexBrowser = await connect('/', { auth: { token: tok.globexUser } });
    assert.equal(await errorCode(globexBrowser, 'join-room', { code }), 'ROOM_NOT_FOUND');
    const anon = await connect('/');
    assert.equal(await errorCode(anon, 'join-room', { code }), 'ROOM_NOT_FOUND');
    anon.close();
    acmeNative = await connectNative(`?token=${tok.acmeUser}`);
    acmeNative.hello = await acmeNative.nextEvent('connected');
    await acmeNative.request('join-room', { code });
    const globexNative = await connectNative(`?token=${tok.globexUser}`);
    await assert.rejects(globexNative.request('join-room', { code }), (e) => e.code === 'ROOM_NOT_FOUND');
    globexNative.close();
  }],
  ['join-system: own tenant yes, another no', async () => {
    assert.deepEqual(await request(acmeBrowser, 'join-system', { systemId: 'acme' }), { systemId: 'acme' });
    assert.equal(await errorCode(acmeBrowser, 'join-system', { systemId: 'globex' }), 'FORBIDDEN');
    assert.equal(await errorCode(acmeBrowser, 'join-system', { systemId: 'admin-dashboard' }), 'FORBIDDEN');
    const staff = await connect('/', { auth: { token: tok.staff } });
    assert.deepEqual(await request(staff, 'join-system', { systemId: 'admin-dashboard' }), { systemId: 'admin-dashboard' });
    staff.close();
  }],
  ['REST: own tenant 200, other tenant 404 (not 403), no token 401, wrong role 403', async () => {
    const mine = await api('GET', '/api/devices', tok.acmeAdmin);
    assert.equal(mine.status, 200);
    assert.deepEqual(mine.json.devices.map((d) => d.deviceId), ['acme-kiosk']);
    assert.deepEqual((await api('GET', '/api/devices', tok.globexAdmin)).json.devices, []);
    assert.equal((await api('GET', '/api/devices/acme-kiosk', tok.acmeAdmin)).json.state.vlc.state, 'playing');
    for (const path of ['/api/devices/acme-kiosk', '/api/devices/acme-kiosk/history', '/api/devices/acme-kiosk/snapshot', `/api/rooms/${code}`]) {
      const r = await api('GET', path, tok.globexAdmin);
      assert.equal(r.status, 404, path);
      assert.ok(!r.text.includes('acme'), `${path} leaks nothing`);
    }
    assert.equal((await api('POST', '/api/devices/acme-kiosk/commands', tok.globexAdmin, { command: 'vlc:play' })).status, 404);
    assert.equal((await api('GET', '/api/devices', null)).status, 401);
    assert.equal((await api('GET', '/api/devices', tok.acmeUser)).status, 403);
    const room = await api('GET', `/api/rooms/${code}`, tok.acmeAdmin);
    assert.equal(room.status, 200);
    assert.equal(room.json.memberCount, 2);
    assert.deepEqual((await api('GET', '/api/rooms', tok.globexAdmin)).json.rooms, []);
    const hist = await api('GET', '/api/devices/acme-kiosk/history?limit=5', tok.acmeAdmin);
    assert.equal(hist.json.history[0].state.vlc.state, 'playing');
  }],
  ['REST commands: answered, 504 on timeout, snapshot served from storage', async () => {
    const p = api('POST', '/api/devices/acme-kiosk/commands', tok.acmeAdmin, { command: 'vlc:snapshot' });
    const c = await waitCommand(acmeDev);
    const image = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
    await request(acmeDev, 'player:command:response', { commandId: c.commandId, status: 'success', result: { image: `data:image/png;base64,${image.toString('base64')}` } });
    const r = await p;
    assert.equal(r.status, 200);
    assert.equal(r.json.result.snapshot.bytes, 3000);
    const snap = await fetch(URL + '/api/devices/acme-kiosk/snapshot', { headers: { authorization: `Bearer ${tok.acmeAdmin}` } });
    assert.equal(snap.status, 200);
    assert.equal(snap.headers.get('content-type'), 'image/png');
    assert.deepEqual(Buffer.from(await snap.arrayBuffer()), image);
    const slow = api('POST', '/api/devices/acme-kiosk/commands', tok.acmeAdmin, { command: 'vlc:stop', timeoutMs: 200, retries: 0 });
    await waitCommand(acmeDev);
    const t = await slow;
    assert.equal(t.status, 504);
    assert.equal(t.json.error.code, 'COMMAND_TIMEOUT');
    assert.equal((await api('POST', '/api/devices/acme-kiosk/commands', tok.acmeAdmin, { command: 'nope' })).status, 400);
  }],
  ['the admin protocol also works over /ws with an admin token', async () => {
    const nat = await connectNative(`?token=${tok.acmeAdmin}`);
    const { devices } = await nat.request('devices:subscribe', {});
    assert.deepEqual(devices.map((d) => d.deviceId), ['acme-kiosk']);
    await request(acmeDev, 'player:state', { vlc: { state: 'paused' }, app: { v: 1 } });
    const u = await nat.nextEvent('state:updated', (x) => x.deviceId === 'acme-kiosk');
    assert.deepEqual(u.patch, { vlc: { state: 'paused' } });
    const p = nat.request('command', { deviceId: 'acme-kiosk', command: 'vlc:play' });
    const c = await waitCommand(acmeDev);
    await request(acmeDev, 'player:command:response', { commandId: c.commandId, status: 'success', result: { via: 'ws' } });
    assert.deepEqual((await p).result, { via: 'ws' });
    assert.equal((await nat.nextEvent('command:response')).commandId, c.commandId);
    nat.close();
    const user = await connectNative(`?token=${tok.acmeUser}`);
    await assert.rejects(user.request('devices:list'), (e) => e.code === 'FORBIDDEN');
    user.close();
    const globexNat = await connectNative(`?token=${tok.globexAdmin}`);
    assert.deepEqual((await globexNat.request('devices:list')).devices, []);
    globexNat.close();
  }],
  ['staff see counts across tenants, never payloads', async () => {
    const r = await api('GET', '/api/staff/stats', tok.staff);
    assert.equal(r.status, 200);
    assert.ok(r.json.connections.some((c) => c.tenant === 'acme'));
    assert.ok(!r.text.includes('acme-kiosk') && !r.text.includes('playing'), 'no ids or states');
    assert.equal((await api('GET', '/api/staff/stats', tok.acmeAdmin)).status, 403);
  }],
  ['POST /api/publish reaches the tenant on both edges and no other tenant; bad keys get 401', async () => {
    const evt = { target: 'tenant', event: 'device-update', data: { deviceId: 'plug-1', online: true, relayOn: false } };
    assert.equal((await api('POST', '/api/publish', 'wrong-key-0123456789', evt)).status, 401);
    assert.equal((await api('POST', '/api/publish', null, evt)).status, 401);
    const r = await api('POST', '/api/publish', KEYS.acme, evt);
    assert.equal(r.status, 200);
    assert.deepEqual(await nextEvent(acmeBrowser, 'device-update'), evt.data);
    assert.deepEqual(await acmeNative.nextEvent('device-update'), evt.data);
    assert.deepEqual(await nextEvent(acmeAdmin, 'device-update'), evt.data);
    await sleep(200);
    assert.equal((globexBrowser.events.get('device-update') ?? []).length, 0);
    assert.equal((globexAdmin.events.get('device-update') ?? []).length, 0);
    assert.equal((await api('POST', '/api/publish', KEYS.acme, { target: 'tenant', event: 'playback-paused', data: {} })).status, 400);
    const toRoom = await api('POST', '/api/publish', KEYS.acme, { target: 'room', id: code, event: 'smart-plug-assignment-updated', data: { deviceId: 'p', equipmentId: 'e' } });
    assert.equal(toRoom.status, 200);
    assert.equal((await nextEvent(acmeBrowser, 'smart-plug-assignment-updated')).equipmentId, 'e');
    assert.equal((await api('POST', '/api/publish', KEYS.globex, { target: 'room', id: code, event: 'x', data: {} })).status, 404);
  }],
  ['forced disconnect through REST closes the target within 1 s; not across tenants', async () => {
    const sid = acmeBrowser.status.socketId;
    assert.equal((await api('POST', `/api/connections/${sid}/disconnect`, tok.globexAdmin)).status, 404);
    const closed = new Promise((resolve) => acmeBrowser.once('disconnect', resolve));
    const t0 = Date.now();
    assert.equal((await api('POST', `/api/connections/${sid}/disconnect`, tok.acmeAdmin)).status, 200);
    await within(1000, closed, 'socket.io disconnect');
    const nativeClosed = new Promise((resolve) => acmeNative.ws.once('close', (code) => resolve(code)));
    assert.equal((await api('POST', `/api/connections/${acmeNative.hello.sessionId}/disconnect`, tok.acmeAdmin)).status, 200);
    assert.equal(await within(1000, nativeClosed, 'native close'), 4009);
    const devSid = acmeDev.id;
    assert.equal((await api('POST', `/api/connections/${devSid}/disconnect`, tok.acmeAdmin)).status, 200);
    await nextEvent(acmeAdmin, 'device:offline', (d) => d.deviceId === 'acme-kiosk', 2000);
    console.log(`     forced disconnects done in ${Date.now() - t0} ms`);
  }],
  ['flooding trips the rate limit for that connection only', async () => {
    const flood = Array.from({ length: 300 }, () => acmeAdmin.emitWithAck('devices:list', {}));
    const t0 = Date.now();
    const other = await request(globexAdmin, 'devices:list');
    assert.deepEqual(other.devices, []);
    const otherMs = Date.now() - t0;
    const replies = await within(10_000, Promise.all(flood), 'flood replies');
    const limited = replies.filter((r) => r.ok === false && r.error.code === 'RATE_LIMITED').length;
    assert.ok(limited > 0, 'some events were rate limited');
    assert.ok(replies.filter((r) => r.ok).length >= 50, 'the burst allowance was served');
    assert.ok(otherMs < 1000, `the other connection answered in ${otherMs} ms`);
    assert.ok((await request(globexAdmin, 'devices:list')).devices);
  }],
  ['every path of /api/openapi.json is routed', async () => {
    const doc = (await api('GET', '/api/openapi.json', null)).json;
    assert.equal(doc.openapi, '3.1.0');
    const paths = Object.entries(doc.paths);
    assert.ok(paths.length >= 11);
    for (const [path, ops] of paths) {
      for (const method of Object.keys(ops)) {
        const concrete = path.replace('{id}', 'acme-kiosk').replace('{code}', code);
        const auth = path === '/api/publish' ? KEYS.acme : path.startsWith('/api/staff') ? tok.staff : tok.acmeAdmin;
        const r = await api(method.toUpperCase(), concrete, auth, method === 'post' ? {} : undefined);
        assert.ok(!(r.status === 404 && r.json?.error?.message === 'no such route'), `${method} ${path} is routed`);
      }
    }
    assert.equal((await api('GET', '/api/nope', tok.acmeAdmin)).status, 404);
  }],
  ['close', async () => {
    for (const s of [acmeAdmin, globexAdmin, globexBrowser]) s.close();
  }],
]);
