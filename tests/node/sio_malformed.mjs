// 1,000 malformed Engine.IO / Socket.IO packets from one raw client (bad packet types, bad
// JSON, wrong attachment counts, huge ack ids, binary where text is expected, events that are
// not arrays), while a host seeks and a member of the same room and namespace listens: the bad
// client is closed or answered as the protocol says, the server stays up, and the member gets
// every push, in order.
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { URL, connect, get, request, run, sleep, song, within } from './lib.mjs';

const EIO = URL.replace(/^http/, 'ws') + '/socket.io/?EIO=4&transport=websocket';

const BAD = [
  '9', // no such Engine.IO packet type
  '4', // an empty Socket.IO packet
  '49', // no such Socket.IO packet type
  '42["seek-playback"', // JSON cut short
  '42{"not":"an array"}',
  '42[]', // no event name
  '42[1,2]', // an event name that is not a string
  '451-["seek-playback",{"_placeholder":true,"num":7}]', // an attachment that never comes
  '452-["seek-playback"]', // attachments announced for an event without placeholders
  '4299999999999999999999999999["time-sync",{"t0":1}]', // an ack id no integer holds
  '42-1["time-sync",{"t0":1}]',
  '43["no-such-ack"]', // an ack of nothing
  '40/nope,', // CONNECT to an unknown namespace
  '42/nope,["seek-playback"]', // an event to a namespace it never joined
  Buffer.from([0x04, 0x02, 0xff, 0x00]), // binary where text is expected
];

/** A raw Engine.IO client that joins `/` and then sends `n` bad packets; how it ended. */
async function attack(n) {
  const ws = new WebSocket(EIO);
  const out = { sent: 0, closed: false, frames: [] };
  ws.on('message', (m, binary) => {
    const t = binary ? '<binary>' : m.toString();
    out.frames.push(t);
    if (t === '2') ws.send('3');
  });
  ws.on('close', () => { out.closed = true; });
  ws.on('error', () => { out.closed = true; });
  await within(5000, new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 'open');
  ws.send('40');
  await within(5000, (async () => { while (!out.frames.some((f) => f.startsWith('40'))) await sleep(5); })(), 'CONNECT reply');
  for (let i = 0; i < n && !out.closed; i++) {
    ws.send(BAD[i % BAD.length]);
    out.sent++;
    if (i % 50 === 0) await sleep(1);
  }
  await sleep(200);
  ws.close();
  return out;
}

let host, member, code;

await run('sio_malformed', [
  ['a room with a host and a member on /', async () => {
    host = await connect('/', { transports: ['websocket'] });
    code = (await request(host, 'create-room', { memberName: 'host' })).code;
    member = await connect('/', { transports: ['websocket'] });
    await request(member, 'join-room', { code, name: 'member' });
    await request(host, 'load-song', { song: song('a', 3_600_000), autoplay: true });
  }],
  ['1,000 malformed packets while the host seeks: the member misses nothing', async () => {
    const seeks = [];
    member.events.set('playback-seeked', []);
    const seeking = (async () => {
      for (let i = 0; i < 40; i++) {
        seeks.push((await request(host, 'seek-playback', { positionMs: 1000 * i })).playback.rev);
        await sleep(20);
      }
    })();
    let sent = 0;
    let closes = 0;
    while (sent < 1000) {
      const r = await attack(1000 - sent);
      sent += r.sent;
      if (r.sent < 1000) closes++;
    }
    await seeking;
    await within(5000, (async () => {
      while ((member.events.get('playback-seeked') ?? []).length < seeks.length) await sleep(10);
    })(), 'every seek at the member');
    const revs = member.events.get('playback-seeked').map((p) => p.rev);
    assert.deepEqual(revs, seeks, 'every push once, in order');
    console.log(`  ${sent} bad packets sent over ${closes + 1} connections (the server closed ${closes})`);
  }],
  ['the server is up and both clients still work', async () => {
    assert.equal((await get('/healthz')).status, 200);
    assert.equal(host.connected && member.connected, true);
    const r = await request(member, 'time-sync', { t0: 1 });
    assert.equal(r.t0, 1);
    host.close(); member.close();
  }],
]);
