// Rooms over Socket.IO: seed 002's events through socket.io-client, acks as replies, and a
// Socket.IO member and a native `/ws` member of one room seeing the same pushes.
import assert from 'node:assert/strict';
import { connect, connectNative, errorCode, nextEvent, request, run, song } from './lib.mjs';

let host, sioMember, native, code;

const sameState = (a, b) => {
  for (const k of ['rev', 'positionMs', 'serverTime', 'isPlaying', 'rate']) assert.equal(a[k], b[k], k);
  assert.equal(a.song?.id, b.song?.id);
};

await run('sio_rooms', [
  ['host connects with polling, then upgrades to websocket', async () => {
    host = await connect('/');
    const status = await nextEvent(host, 'connection-status');
    assert.equal(status.connected, true);
    assert.equal(status.socketId, host.id);
    const hello = await nextEvent(host, 'connected');
    assert.ok(hello.sessionId && hello.resumeToken && typeof hello.serverTime === 'number');
    host.hello = hello;
    if (host.io.engine.transport.name !== 'websocket') {
      await new Promise((resolve) => host.io.engine.once('upgrade', resolve));
    }
    assert.equal(host.io.engine.transport.name, 'websocket');
  }],
  ['time-sync replies with t0, t1, t2', async () => {
    const t0 = 12345.5;
    const r = await request(host, 'time-sync', { t0 });
    assert.equal(r.t0, t0);
    assert.ok(r.t1 <= r.t2);
  }],
  ['create-room through an ack', async () => {
    const r = await request(host, 'create-room', { name: 'mixed', memberName: 'host' });
    code = r.code;
    assert.match(code, /^[A-Z0-9]{6}$/);
    assert.equal(r.room.code, code);
  }],
  ['a websocket-only Socket.IO client and a native client join', async () => {
    sioMember = await connect('/', { transports: ['websocket'] });
    assert.equal(sioMember.io.engine.transport.name, 'websocket');
    const joined = await request(sioMember, 'join-room', { code, name: 'sio' });
    assert.equal(joined.room.code, code);
    native = await connectNative();
    native.hello = await native.nextEvent('connected');
    await native.request('join-room', { code, name: 'native' });
    await nextEvent(host, 'member-joined', (m) => m.member?.name === 'native');
  }],
  ['load-song and resume reach both members with identical state', async () => {
    await request(host, 'load-song', { song: song('a'), autoplay: false });
    const [s1, n1] = await Promise.all([nextEvent(sioMember, 'song-changed'), native.nextEvent('song-changed')]);
    sameState(s1, n1);
    await request(host, 'resume-playback');
    const [s2, n2] = await Promise.all([nextEvent(sioMember, 'playback-resumed'), native.nextEvent('playback-resumed')]);
    sameState(s2, n2);
    assert.equal(s2.isPlaying, true);
    assert.ok(s2.rev > s1.rev);
  }],
  ['pause and seek: same pushes on both edges, rev increasing', async () => {
    await request(host, 'pause-playback');
    const [s1, n1] = await Promise.all([nextEvent(sioMember, 'playback-paused'), native.nextEvent('playback-paused')]);
    sameState(s1, n1);
    assert.equal(s1.isPlaying, false);
    await request(host, 'seek-playback', { positionMs: 42000 });
    const [s2, n2] = await Promise.all([nextEvent(sioMember, 'playback-seeked'), native.nextEvent('playback-seeked')]);
    sameState(s2, n2);
    assert.equal(s2.positionMs, 42000);
    assert.ok(s2.rev > s1.rev);
  }],
  ['a native host controls the Socket.IO members too', async () => {
    assert.equal(await errorCode(sioMember, 'pause-playback'), 'NOT_HOST');
    await request(host, 'transfer-host', { sessionId: native.hello.sessionId });
    await nextEvent(sioMember, 'host-changed', (h) => h.host === native.hello.sessionId);
    await native.request('seek-playback', { positionMs: 30000 });
    const [h, s] = await Promise.all([
      nextEvent(host, 'playback-seeked', (p) => p.positionMs === 30000),
      nextEvent(sioMember, 'playback-seeked', (p) => p.positionMs === 30000),
    ]);
    sameState(h, s);
    await native.request('transfer-host', { sessionId: host.hello.sessionId });
    await nextEvent(host, 'host-changed', (h) => h.host === host.hello.sessionId);
  }],
  ['events are handled in the order sent (no await between them)', async () => {
    const seeks = [1000, 2000, 3000, 4000, 5000].map((p) => request(host, 'seek-playback', { positionMs: p }));
    const state = request(host, 'get-playback-state');
    await Promise.all(seeks);
    const s = await state;
    assert.equal(s.positionMs, 5000);
  }],
  ['a reply comes after the pushes the request caused', async () => {
    sioMember.events.delete('playback-seeked');
    host.events.delete('playback-seeked');
    await request(host, 'seek-playback', { positionMs: 7000 });
    const pushed = host.events.get('playback-seeked') ?? [];
    assert.ok(pushed.some((p) => p.positionMs === 7000), 'the push reached the host before its ack');
  }],
  ['errors: NOT_HOST, unknown event, bad payload; the connection keeps working', async () => {
    assert.equal(await errorCode(sioMember, 'seek-playback', { positionMs: 1 }), 'NOT_HOST');
    assert.equal(await errorCode(sioMember, 'no-such-event', {}), 'UNKNOWN_EVENT');
    assert.equal(await errorCode(host, 'seek-playback', { positionMs: -5 }), 'INVALID_PAYLOAD');
    assert.equal(await errorCode(host, 'join-room', { code: 'ZZZZZZ' }), 'ROOM_NOT_FOUND');
    const s = await request(sioMember, 'get-playback-state');
    assert.equal(s.positionMs, 7000);
  }],
  ['an error without an ack arrives as an error event', async () => {
    sioMember.emit('pause-playback', {});
    const e = await nextEvent(sioMember, 'error');
    assert.equal(e.code, 'NOT_HOST');
  }],
  ['resume over Socket.IO keeps the session and the host role', async () => {
    const { sessionId, resumeToken } = host.hello;
    host.close();
    const again = await connect('/', { auth: { resume: resumeToken } });
    const hello = await nextEvent(again, 'connected');
    assert.equal(hello.sessionId, sessionId);
    assert.equal(hello.resumed, true);
    const joined = await nextEvent(again, 'room-joined');
    assert.equal(joined.room.code, code);
    await request(again, 'seek-playback', { positionMs: 9000 });
    const [s, n] = await Promise.all([
      nextEvent(sioMember, 'playback-seeked', (p) => p.positionMs === 9000),
      native.nextEvent('playback-seeked', (p) => p.positionMs === 9000),
    ]);
    sameState(s, n);
    again.close();
  }],
  ['close', async () => {
    sioMember.close();
    native.close();
  }],
]);
