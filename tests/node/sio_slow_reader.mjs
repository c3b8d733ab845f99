// A Socket.IO client that stops reading (its TCP socket paused: the kernel's window closes, the
// server's writes back up) while it keeps sending requests, and another that stops reading while
// its room keeps playing. Each must cost the server bounded memory and be disconnected as a slow
// consumer, while the rest of its room keeps receiving every push and getting prompt replies.
//
// Env: UNISONO_URL, UNISONO_PID (the server's pid, for its RSS).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { URL, connect, connectNative, request, within } from './lib.mjs';

const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${process.env.UNISONO_PID}/status`, 'utf8'))[1]);

async function metric(name) {
  const text = await (await fetch(`${URL}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line ? Number(line.split(' ')[1]) : 0;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Pauses the client's TCP socket: nothing more is read from the server. */
function stopReading(socket) {
  const tcp = socket.io.engine.transport.ws._socket;
  assert.ok(tcp, 'the client is on the WebSocket transport');
  tcp.pause();
}

const host = await connectNative();
const code = (await host.request('create-room', {})).code;
const member = await connect('/', { transports: ['websocket'] });
await request(member, 'join-room', { code });
const baseline = rssKiB();
let peak = baseline;

// Waits until the slow-consumer counter passes `above`, sampling RSS; the host keeps seeking
// (every push must still reach the member) and times its own replies.
async function untilDisconnected(above, what, sendMore) {
  const started = Date.now();
  const replyMs = [];
  let seeks = 0;
  while ((await metric('unisono_slow_consumer_disconnects_total')) <= above) {
    assert.ok(Date.now() - started < 30_000, `${what} was not disconnected within 30 s`);
    sendMore();
    const t = Date.now();
    await host.request('seek-playback', { positionMs: 1000 + seeks });
    replyMs.push(Date.now() - t);
    seeks += 1;
    peak = Math.max(peak, rssKiB());
    await sleep(20);
  }
  replyMs.sort((a, b) => a - b);
  const p99 = replyMs[Math.floor(replyMs.length * 0.99)] ?? 0;
  console.log(
    `${what}: disconnected after ${Date.now() - started} ms; ${seeks} host seeks, reply p99 ${p99} ms; ` +
      `server RSS ${baseline} → peak ${peak} KiB`,
  );
  assert.ok(p99 < 1000, `the host's replies waited ${p99} ms (p99) behind ${what}`);
  return seeks;
}

await host.request('load-song', { song: { id: 's', title: 's', provider: 'url', url: 'http://x/s', durationMs: 600000 } });
let pushesBefore = 0;
const seen = () => (member.events.get('playback-seeked') ?? []).length;

// 1. Sends requests and never reads their replies (in no room: only its acks back up).
{
  const slow = await connect('/', { transports: ['websocket'] });
  stopReading(slow);
  const before = await metric('unisono_slow_consumer_disconnects_total');
  const burst = () => {
    for (let i = 0; i < 500; i += 1) slow.emit('get-playback-state', {}, () => {});
  };
  pushesBefore = seen();
  const seeks = await untilDisconnected(before, 'a client sending requests without reading', burst);
  await within(5000, (async () => { while (seen() < pushesBefore + seeks) await sleep(20); })(), 'the member to get every push');
  slow.close();
}

// 2. In the room, reads nothing while the room plays (its pushes back up).
{
  const slow = await connect('/', { transports: ['websocket'] });
  await request(slow, 'join-room', { code });
  stopReading(slow);
  const before = await metric('unisono_slow_consumer_disconnects_total');
  pushesBefore = seen();
  const seeks = await untilDisconnected(before, 'a room member that stopped reading', () => {
    // Bigger pushes fill the buffers sooner: the queue carries the room's whole state.
    for (let i = 0; i < 20; i += 1) host.request('queue-add', { song: { id: `q${i}`, title: 'x'.repeat(200), provider: 'url', url: 'http://x/q', durationMs: 1000 } }).catch(() => {});
  });
  await within(5000, (async () => { while (seen() < pushesBefore + seeks) await sleep(20); })(), 'the member to get every push');
  slow.close();
}

const growthMiB = (peak - baseline) / 1024;
assert.ok(growthMiB < 64, `the server grew by ${growthMiB.toFixed(1)} MiB while clients stopped reading`);
console.log(`server RSS growth at most ${growthMiB.toFixed(1)} MiB`);
member.close();
host.ws.close();
process.exit(0);
