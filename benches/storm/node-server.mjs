// The anchor of the reconnect storm (docs/reliability.md, "Reconnect storm"): a plain Node
// `socket.io` server speaking the room events the storm's Socket.IO clients use, with the least
// logic that works and everything in memory, as a typical party-mode server written on socket.io
// keeps it. Nothing is persisted, so after a restart no session, room or clock is left: a client
// reconnects at the socket level and finds nothing to go back to.
// - On connection: `connected` {sessionId, resumeToken, serverTime, resumed}; `auth.resume`
//   resumes a session still in this process's memory.
// - `create-room` {name, memberName} → ack {ok, data: {code, room}} and `room-joined`;
//   `join-room` {code, name} → the same, or {ok: false, error: {code: 'ROOM_NOT_FOUND'}}.
// - `load-song` {song, autoplay} → `song-changed`; `seek-playback` {positionMs} →
//   `playback-seeked`; both ack {ok, data: {playback}} (the host only).
//
//   node benches/storm/node-server.mjs [--listen 127.0.0.1:0]
// Prints `listening on http://HOST:PORT` as `unisono serve` does.

import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { Server } from 'socket.io';
import { parseArgs } from '../sio/common.mjs';

const o = parseArgs(process.argv.slice(2), { listen: '127.0.0.1:0' });
const [host, port] = o.listen.split(':');

const ok = (data) => ({ ok: true, data });
const fail = (code, message) => ({ ok: false, error: { code, message } });
const id = (n) => randomBytes(n).toString('base64url').slice(0, n);

/** sessionId → {token, room} */
const sessions = new Map();
/** code → {code, name, host, playback, members: Set(sessionId)} */
const rooms = new Map();

const http = createServer();
const io = new Server(http, { serveClient: false });

function snapshot(room, you) {
  return { room: { code: room.code, name: room.name }, you, host: room.host, memberCount: room.members.size, playback: room.playback, serverTime: Date.now() };
}

function enter(socket, session, room) {
  session.room = room.code;
  room.members.add(session.id);
  socket.join(room.code);
  const snap = snapshot(room, session.id);
  socket.emit('room-joined', snap);
  return { code: room.code, room: snap };
}

io.on('connection', (socket) => {
  const want = String(socket.handshake.auth?.resume ?? '').split('.')[0];
  const resumed = sessions.has(want);
  const session = resumed ? sessions.get(want) : { id: id(12), room: null };
  session.token = `${session.id}.${id(24)}`;
  sessions.set(session.id, session);
  socket.emit('connection-status', { connected: true, socketId: socket.id });
  socket.emit('connected', { sessionId: session.id, resumeToken: session.token, serverTime: Date.now(), resumed });
  if (resumed && session.room && rooms.has(session.room)) enter(socket, session, rooms.get(session.room));

  const controller = (ack, f) => {
    const room = rooms.get(session.room);
    if (!room) return ack?.(fail('NOT_IN_ROOM', 'join a room first'));
    if (room.host !== session.id) return ack?.(fail('NOT_HOST', 'only the host may do that'));
    f(room);
    ack?.(ok({ playback: room.playback, serverTime: Date.now() }));
  };
  const now = () => Date.now();
  const position = (p, t) => (p.isPlaying ? p.positionMs + (t - p.serverTime) * p.rate : p.positionMs);

  socket.on('create-room', (data, ack) => {
    let code;
    do code = id(6).toUpperCase(); while (rooms.has(code));
    const room = { code, name: String(data?.name ?? ''), host: session.id, members: new Set(),
      playback: { song: null, positionMs: 0, serverTime: now(), isPlaying: false, rate: 1, rev: 0 } };
    rooms.set(code, room);
    socket.emit('host-changed', { host: session.id, previous: null });
    ack?.(ok(enter(socket, session, room)));
  });
  socket.on('join-room', (data, ack) => {
    const room = rooms.get(String(data?.code ?? '').trim().toUpperCase());
    if (!room) return ack?.(fail('ROOM_NOT_FOUND', 'no room with that code'));
    ack?.(ok(enter(socket, session, room)));
  });
  socket.on('load-song', (data, ack) => controller(ack, (room) => {
    const t = now();
    room.playback = { song: data?.song ?? null, positionMs: 0, serverTime: t, isPlaying: !!data?.autoplay, rate: 1, rev: room.playback.rev + 1 };
    io.to(room.code).emit('song-changed', room.playback);
  }));
  socket.on('seek-playback', (data, ack) => controller(ack, (room) => {
    const t = now();
    room.playback = { ...room.playback, positionMs: Number(data?.positionMs ?? position(room.playback, t)), serverTime: t, rev: room.playback.rev + 1 };
    io.to(room.code).emit('playback-seeked', room.playback);
  }));
  socket.on('disconnect', () => {
    // The session stays for a resume as long as this process lives (no grace timer: the storm
    // restarts the process, which is what it measures).
  });
});

http.listen(Number(port), host, () => {
  const a = http.address();
  console.log(`listening on http://${a.address}:${a.port}`);
});
process.on('SIGTERM', () => { io.close(); process.exit(0); });
