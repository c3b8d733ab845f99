// Device durability across kill -9 (driven by tests/tests/durability.rs): PHASE=write stores
// acknowledged states and a snapshot; PHASE=read, after the restart, finds all of it.
import assert from 'node:assert/strict';
import { URL, connect, request, run, sleep, token, within } from './lib.mjs';

const admin = token({ tenant: 'acme', role: 'admin', sub: 'alice' });
const image = Buffer.from(Array.from({ length: 2048 }, (_, i) => (i * 7) % 256));
const states = [1, 2, 3].map((n) => ({ vlc: { state: 'playing', time: n }, app: { version: '2.0' }, n }));

if (process.env.PHASE === 'write') {
  await run('devices_durable:write', [
    ['acknowledged states and a snapshot', async () => {
      const dev = await connect('/players', { auth: { token: token({ tenant: 'acme', role: 'player', sub: 'kiosk-d' }) } });
      dev.on('player:command', (c) => dev.emit('player:command:response', {
        commandId: c.commandId, status: 'success', result: { image: image.toString('base64'), mime: 'image/png' },
      }));
      await request(dev, 'player:register', { name: 'Durable kiosk', site: 'lobby' });
      for (const s of states) assert.ok((await request(dev, 'player:state', s)).rev);
      const a = await connect('/admin', { auth: { token: admin } });
      const out = await request(a, 'command', { deviceId: 'kiosk-d', command: 'vlc:snapshot' });
      assert.equal(out.result.snapshot.bytes, image.length);
    }],
  ]);
} else {
  await run('devices_durable:read', [
    ['the device, its state, history and snapshot survived', async () => {
      const a = await connect('/admin', { auth: { token: admin } });
      const { devices } = await request(a, 'devices:list');
      assert.equal(devices.length, 1);
      const d = devices[0];
      assert.equal(d.deviceId, 'kiosk-d');
      assert.equal(d.name, 'Durable kiosk');
      assert.equal(d.info.site, 'lobby');
      assert.equal(d.online, false);
      assert.equal(d.rev, 3);
      assert.deepEqual(d.state, states[2]);
      const auth = { authorization: `Bearer ${admin}` };
      const hist = await (await fetch(`${URL}/api/devices/kiosk-d/history`, { headers: auth })).json();
      assert.deepEqual(hist.history.map((h) => h.rev), [3, 2, 1]);
      const snap = await fetch(`${URL}/api/devices/kiosk-d/snapshot`, { headers: auth });
      assert.deepEqual(Buffer.from(await snap.arrayBuffer()), image);
      // It comes back online as the same entry, with its rev continuing.
      const dev = await connect('/players', { auth: { token: token({ tenant: 'acme', role: 'player', sub: 'kiosk-d' }) } });
      await request(dev, 'player:register', {});
      assert.equal((await request(dev, 'player:state', { n: 4 })).rev, 4);
      await within(2000, (async () => { while ((await request(a, 'devices:list')).devices[0].online !== true) await sleep(20); })(), 'online');
    }],
  ]);
}
