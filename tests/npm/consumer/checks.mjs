// What the browser-side consumers check, given the package's exports: every test vector bit for
// bit, a position computed from a timing vector, and, given a server URL, a real session (connect,
// clock sync, create a room, load a song, follow the clock). Shared by the webpack entry
// (app.mjs, bundled for Node and for Chromium) and the no-bundler page (web.html).
import { checkAllVectors } from './vectors.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function appChecks(unisono, vectorsText, server) {
  const r = {};
  const v = checkAllVectors(unisono, vectorsText);
  r.vectors = { cases: v.cases, byKind: v.byKind, failed: v.failures.length, first: v.failures.slice(0, 3) };
  // 1000 ms at server time 5000, playing at 2x: 500 ms later the position is 2000 ms.
  const playback = { song: { id: 'a', durationMs: 60000 }, positionMs: 1000, serverTime: 5000, isPlaying: true, rate: 2, rev: 1 };
  r.position = unisono.positionAt(playback, 5500);
  r.adapters = adapterChecks(unisono);
  if (server) {
    const c = new unisono.UnisonoClient();
    await c.connect(server);
    const { code } = await c.createRoom({ name: 'bundle', memberName: 'W' });
    await c.loadSong({ id: 'x', title: 'X', provider: 'url', url: 'http://example.invalid/x.mp3', durationMs: 60000 }, true);
    await sleep(600);
    const s = c.syncStats();
    r.session = { code, state: c.connectionState, isHost: c.isHost, positionMs: c.positionNow(), samples: s.samples, errorBound: s.errorBound };
    c.close();
  }
  return r;
}

// The built-in media adapters are a JavaScript module beside the wasm (`adapters.js`, a
// wasm-bindgen snippet): each consumer must resolve and bundle it. A PlayerSync per adapter
// (YouTube and Spotify with stand-in players; an <audio> element where there is a DOM), and a
// non-media element refused.
function adapterChecks(unisono) {
  const client = new unisono.UnisonoClient();
  const youTube = {
    getAvailablePlaybackRates: () => [0.25, 0.5, 1, 1.05, 1.1, 1.5],
    getCurrentTime: () => 0, getPlayerState: () => 2, getVideoData: () => ({}),
    cueVideoById() {}, playVideo() {}, pauseVideo() {}, seekTo() {}, setPlaybackRate() {},
  };
  const spotify = { getCurrentState: () => Promise.resolve(null), resume() {}, pause() {}, seek() {} };
  const makers = [
    ['youtube', () => unisono.PlayerSync.forYouTube(client, youTube)],
    ['spotify', () => unisono.PlayerSync.forSpotify(client, spotify, { deviceId: 'd', token: 't' })],
  ];
  if (typeof document !== 'undefined') {
    makers.push(['media', () => unisono.PlayerSync.forMediaElement(client, document.createElement('audio'))]);
  }
  const out = {};
  for (const [name, make] of makers) {
    try {
      const sync = make();
      out[name] = sync.stats().mode;
      sync.free();
    } catch (e) {
      out[name] = `threw ${e?.message ?? e}`;
    }
  }
  if (typeof HTMLMediaElement !== 'undefined') {
    try {
      unisono.PlayerSync.forMediaElement(client, document.createElement('div'));
      out.notMedia = 'accepted';
    } catch (e) {
      out.notMedia = String(e?.message ?? e);
    }
  }
  client.free();
  return out;
}
