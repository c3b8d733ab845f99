// Engine.IO / Socket.IO protocol details, with raw frames over a plain WebSocket (the `ws`
// package): what socket.io-client hides. The server runs with --ping-secs 1
// --ping-timeout-secs 3 --connect-timeout-secs 1.
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { URL, run, sleep, within } from './lib.mjs';

const EIO = URL.replace(/^http/, 'ws') + '/socket.io/?EIO=4&transport=websocket';

/** A raw Engine.IO WebSocket: every text frame recorded, answered pings. */
function open() {
  const ws = new WebSocket(EIO);
  ws.frames = [];
  ws.closedAt = null;
  ws.on('message', (m) => {
    const t = m.toString();
    ws.frames.push(t);
    if (t === '2') ws.send('3'); // pong
  });
  ws.on('close', () => { ws.closedAt = Date.now(); });
  return within(5000, new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  }), 'engine.io open');
}

const waitFor = (ws, pred, what, ms = 5000) => within(ms, (async () => {
  for (;;) {
    const hit = ws.frames.find(pred);
    if (hit !== undefined) return hit;
    await sleep(5);
  }
})(), what);

await run('sio_protocol', [
  ['the open packet carries pingInterval and a separate pingTimeout', async () => {
    const ws = await open();
    const openPacket = await waitFor(ws, (f) => f.startsWith('0'), 'the open packet');
    const o = JSON.parse(openPacket.slice(1));
    assert.equal(o.pingInterval, 1000);
    assert.equal(o.pingTimeout, 3000);
    ws.close();
  }],
  ['a client that never sends CONNECT is closed after the connect timeout', async () => {
    const ws = await open();
    const opened = Date.now();
    await within(4000, (async () => { while (ws.closedAt === null) await sleep(10); })(), 'the close');
    const after = ws.closedAt - opened;
    assert.ok(after >= 800 && after < 3000, `closed after ${after} ms (--connect-timeout-secs 1)`);
  }],
  ['after the client\'s DISCONNECT (41) the server sends no 41 back', async () => {
    const ws = await open();
    await waitFor(ws, (f) => f.startsWith('0'), 'the open packet');
    ws.send('40');
    await waitFor(ws, (f) => f.startsWith('40'), 'the CONNECT reply');
    await sleep(100);
    ws.frames.length = 0;
    ws.send('41');
    await sleep(700);
    assert.deepEqual(ws.frames.filter((f) => f.startsWith('41')), [], `frames after 41: ${JSON.stringify(ws.frames)}`);
    ws.close();
  }],
  ['a CONNECT to an unknown namespace gets CONNECT_ERROR (44)', async () => {
    const ws = await open();
    await waitFor(ws, (f) => f.startsWith('0'), 'the open packet');
    ws.send('40/nope,');
    await waitFor(ws, (f) => f.startsWith('44/nope,'), 'CONNECT_ERROR for an unknown namespace');
    ws.close();
  }],
]);
