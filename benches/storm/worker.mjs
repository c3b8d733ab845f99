// A worker process of the reconnect storm (benches/storm/storm.mjs): holds a share of the
// rooms' clients and reports, over the IPC channel, when each one is back in its room.
//
// - `/ws` clients are the npm package's `UnisonoClient` (target/npm/unisono, Node build): its
//   own reconnection (backoff 100 ms … 5 s, ±25 % jitter), resume token and re-join by code;
// - Socket.IO clients are socket.io-client with its default reconnection (1 s … 5 s, ±50 %
//   jitter); the app part a seed client has is here: `auth.resume` is the latest
//   `resumeToken`, and a `connected` with `resumed: false` is followed by `join-room`.
//
// A client is *back* once, after the stop dropped it, it is connected with its session id from
// before the stop, in its room, with a playback `rev` at least the one the host's last seek was
// acknowledged with. Its position is then compared with that seek's clock (position + elapsed
// wall time). Separately, `reconnectedAt` is when it was connected again at all.
//
// Messages: in `{type:'setup', …}`, `{type:'seek'}`, `{type:'arm'}`, `{type:'report'}`;
// out `{type:'ready'}`, `{type:'seeked', acked}`, `{type:'progress', back}`, `{type:'result', …}`.

import { createRequire } from 'node:module';
import { io } from 'socket.io-client';
import WebSocket from 'ws';

globalThis.WebSocket ??= WebSocket;
const require = createRequire(import.meta.url);

const nowMs = () => performance.timeOrigin + performance.now();
const send = (m) => process.send(m);
const song = (i) => ({ id: `s${i}`, title: `Song ${i}`, provider: 'url', url: `https://example.com/${i}.mp3`, durationMs: 3_600_000 });

/** Runs `f` over `items` with at most `n` at once. */
async function pool(items, n, f) {
  let next = 0;
  const run = async () => {
    while (next < items.length) {
      const i = next++;
      await f(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, run));
}

const within = (ms, p, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms).unref())]);

/** Marks when a client, dropped by the stop, is connected again (whatever it then finds). */
function watchLink(m) {
  m.dropped = false;
  m.reconnectedAt = null;
  m.link = (open) => {
    if (!stoppedAt) return;
    if (!open) m.dropped = true;
    else if (m.dropped && m.reconnectedAt === null) m.reconnectedAt = nowMs() - stoppedAt;
  };
}

/**
 * A Socket.IO client: connects, joins `code` (or, with `code` null, creates a room, loads a song
 * playing and is its host), and after any reconnect resumes and re-joins.
 */
function sioMember(url, code, name, index) {
  const s = io(url, { transports: ['websocket'], forceNew: true, auth: {} });
  const m = { kind: 'sio', s, code, sid: null, sid0: null, resumed: null, inRoom: false, playback: null, hostId: null, errors: [] };
  watchLink(m);
  s.on('connect', () => m.link(true));
  s.on('disconnect', () => { m.inRoom = false; m.link(false); });
  s.on('connected', (hello) => {
    m.sid = hello.sessionId;
    m.resumed = hello.resumed;
    s.auth = { resume: hello.resumeToken };
    if (m.sid0 !== null && !hello.resumed) {
      m.inRoom = false;
      s.emitWithAck('join-room', { code: m.code, name }).then((r) => {
        if (r?.ok) m.inRoom = true;
        else m.errors.push(r?.error?.code ?? 'join failed');
      }, (e) => m.errors.push(String(e)));
    }
  });
  const track = (p) => { if (p && typeof p.rev === 'number' && (!m.playback || p.rev >= m.playback.rev)) m.playback = p; };
  s.on('room-joined', (snap) => {
    track(snap?.playback);
    if ('host' in (snap ?? {})) m.hostId = snap.host;
    if (snap?.room?.code === m.code) m.inRoom = true;
  });
  s.on('host-changed', (h) => { m.hostId = h?.host ?? null; });
  for (const ev of ['playback-state-update', 'playback-paused', 'playback-resumed', 'playback-seeked', 'song-changed']) s.on(ev, track);
  const call = async (event, data) => {
    const r = await s.emitWithAck(event, data);
    if (!r?.ok) throw new Error(`${event}: ${r?.error?.code ?? JSON.stringify(r)}`);
    return r.data;
  };
  m.call = call;
  m.joined = within(15000, new Promise((resolve, reject) => {
    s.once('connected', () => {
      const go = code !== null
        ? call('join-room', { code, name })
        : call('create-room', { name: `storm-${index}`, memberName: name }).then(async (d) => {
          m.code = d.code;
          await call('load-song', { song: song(index), autoplay: true });
        });
      go.then(resolve, reject);
    });
    s.once('connect_error', reject);
  }), `Socket.IO member of ${code}`).then(() => { m.inRoom = true; m.sid0 = m.sid; });
  m.state = () => ({ sid: s.connected ? m.sid : null, inRoom: s.connected && m.inRoom, rev: m.playback?.rev ?? -1,
    position: m.playback ? positionAt(m.playback, nowMs()) : null, host: s.connected && m.sid !== null && m.hostId === m.sid });
  return m;
}

/** The protocol's clock: where a playback state is at server time `t` (same machine: wall clock). */
function positionAt(p, t) {
  if (!p.isPlaying) return p.positionMs;
  return p.positionMs + Math.max(0, t - p.serverTime) * p.rate;
}

function wsClient(UnisonoClient, code) {
  const c = new UnisonoClient();
  const m = { kind: 'ws', c, code, sid0: null };
  watchLink(m);
  c.onConnection = (state) => m.link(state === 'open');
  m.state = () => {
    const open = c.connectionState === 'open';
    const room = open ? c.room : null;
    const p = open ? c.playback : null;
    return { sid: open ? c.sessionId : null, inRoom: room?.room?.code === m.code, rev: p?.rev ?? -1,
      position: room ? c.positionNow() ?? null : null, serverNow: c.serverNow(), host: c.isHost };
  };
  return m;
}

let clients = [];
let rooms = [];
let stoppedAt = 0;

process.on('message', async (msg) => {
  try {
    if (msg.type === 'setup') await setup(msg);
    else if (msg.type === 'seek') await seek();
    else if (msg.type === 'arm') arm(msg);
    else if (msg.type === 'report') report();
    else if (msg.type === 'exit') process.exit(0);
  } catch (e) {
    send({ type: 'error', message: `${e?.code ?? ''} ${e?.message ?? e}`.trim() });
  }
});

async function setup({ url, pkg, rooms: indices, ws, sio, hosts, concurrency }) {
  const { UnisonoClient } = pkg ? require(pkg) : {};
  const wsUrl = `${url.replace(/^http/, 'ws')}/ws`;
  // Hosts first (a room per host: a /ws client, or with `hosts: 'sio'` a Socket.IO one), then
  // the members of every room.
  await pool(indices, concurrency, async (i) => {
    let host;
    if (hosts === 'sio') {
      host = sioMember(url, null, 'host', i);
      await host.joined;
    } else {
      host = wsClient(UnisonoClient, null);
      await within(15000, host.c.connect(wsUrl), 'host connect');
      const { code } = await host.c.createRoom({ name: `storm-${i}`, memberName: 'host' });
      host.code = code;
      await host.c.loadSong(song(i), true);
    }
    rooms.push({ index: i, code: host.code, host, acked: null });
    clients.push(host);
  });
  const wsMembers = hosts === 'sio' ? ws : ws - 1;
  const sioMembers = hosts === 'sio' ? sio - 1 : sio;
  const members = [];
  for (const r of rooms) {
    for (let j = 1; j <= wsMembers; j++) members.push(() => {
      const m = wsClient(UnisonoClient, r.code);
      clients.push(m);
      return within(15000, m.c.connect(wsUrl), 'member connect').then(() => m.c.joinRoom(r.code, `w${j}`));
    });
    for (let j = 0; j < sioMembers; j++) members.push(() => {
      const m = sioMember(url, r.code, `s${j}`);
      clients.push(m);
      return m.joined;
    });
  }
  await pool(members, concurrency, (f) => f());
  send({ type: 'ready', clients: clients.length });
}

/** Every host seeks once; the acknowledged state is what must survive the stop. */
async function seek() {
  await pool(rooms, 50, async (r) => {
    let p;
    if (r.host.kind === 'sio') {
      p = (await r.host.call('seek-playback', { positionMs: 60_000 + r.index })).playback;
    } else {
      await r.host.c.seek(60_000 + r.index);
      p = r.host.c.playback;
    }
    r.acked = { rev: p.rev, positionMs: p.positionMs, serverTime: p.serverTime, rate: p.rate, isPlaying: p.isPlaying };
  });
  send({ type: 'seeked', rooms: rooms.length });
}

function arm({ stoppedAt: t }) {
  for (const m of clients) m.sid0 = m.kind === 'ws' ? m.c.sessionId : m.sid0;
  for (const m of clients) m.backAt = null;
  stoppedAt = t;
  const byCode = new Map(rooms.map((r) => [r.code, r]));
  const tick = () => {
    let back = 0;
    for (const m of clients) {
      if (m.backAt !== null) { back++; continue; }
      const s = m.state();
      const code = m.code;
      const acked = byCode.get(code)?.acked;
      // Back means back from a drop: a client the stopping server has not closed yet is not.
      if (m.dropped && s.sid && s.sid === m.sid0 && s.inRoom && acked && s.rev >= acked.rev) {
        m.backAt = nowMs() - stoppedAt;
        back++;
      }
    }
    send({ type: 'progress', back });
  };
  setInterval(tick, 100);
}

/** Per-client outcome: back or not, when, and how far its position is from the acked clock. */
function report() {
  const out = [];
  const byCode = new Map(rooms.map((r) => [r.code, r]));
  for (const m of clients) {
    const s = m.state();
    const code = m.code;
    const r = byCode.get(code);
    const t = m.kind === 'ws' ? s.serverNow : nowMs();
    const expected = r?.acked ? positionAt(r.acked, t) : null;
    out.push({
      kind: m.kind, code, isHost: r?.host === m, back: m.backAt !== null, backAt: m.backAt, sameSession: s.sid === m.sid0,
      reconnectedAt: m.reconnectedAt,
      inRoom: s.inRoom, rev: s.rev, ackedRev: r?.acked?.rev ?? null, hostNow: s.host,
      positionErrMs: s.position !== null && expected !== null ? s.position - expected : null,
      errors: m.errors?.slice(0, 3) ?? [],
    });
  }
  send({ type: 'result', clients: out });
}
