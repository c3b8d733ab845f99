// Per-tenant limits hold for the whole cluster, not per node: with --max-devices-per-tenant 2
// and --max-pending-commands 1 on every node, devices registered through three nodes and
// commands sent through two count together.
//
// UNISONO_URLS: the nodes' base URLs, comma-separated.
import assert from 'node:assert/strict';
import { connect, errorCode, request, run, sleep, token, within } from './lib.mjs';

const [A, B, C] = process.env.UNISONO_URLS.split(',');
const TENANT = 'acme';
const ws = { transports: ['websocket'] };
const device = (url, id, tenant = TENANT) => connect('/players', { url, ...ws, auth: { token: token({ tenant, role: 'player', sub: id }) } });
const admin = (url) => connect('/admin', { url, ...ws, auth: { token: token({ tenant: TENANT, role: 'admin', sub: 'ops' }) } });

const open = [];

await run('sio_cluster_limits', [
  ['two devices through nodes A and B fill the tenant; a third through C is refused', async () => {
    const x = await device(A, 'x');
    const y = await device(B, 'y');
    open.push(x, y);
    await request(x, 'player:register', { deviceId: 'x' });
    await request(y, 'player:register', { deviceId: 'y' });
    const z = await device(C, 'z');
    open.push(z);
    assert.equal(await errorCode(z, 'player:register', { deviceId: 'z' }), 'FORBIDDEN');
    // Another tenant has its own allowance.
    const other = await device(C, 'z', 'globex');
    open.push(other);
    assert.equal((await request(other, 'player:register', { deviceId: 'z' })).deviceId, 'z');
  }],
  ['one pending command per tenant: a second one through another node is refused', async () => {
    const [x] = open;
    x.on('player:command', () => {}); // never answers
    const b = await admin(B);
    const c = await admin(C);
    open.push(b, c);
    const first = errorCode(c, 'command', { deviceId: 'x', command: 'vlc:stop', timeoutMs: 1500, retries: 0 });
    await sleep(200);
    assert.equal(await errorCode(b, 'command', { deviceId: 'x', command: 'vlc:stop' }), 'RATE_LIMITED');
    assert.equal(await within(5000, first, 'the first command'), 'COMMAND_TIMEOUT');
  }],
  ['close', async () => {
    for (const s of open) s.close();
  }],
]);
