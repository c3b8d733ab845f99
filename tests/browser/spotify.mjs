// Browser end-to-end for Spotify songs in the web app: two Chromium pages in one room play a
// Spotify track through the Web Playback SDK. The host pastes a token in the room page (the
// guest has one saved already); each page must load the SDK, connect a `Spotify.Player`, start
// the track on its own device through the Web API (`PUT /v1/me/player/play?device_id=…` with
// the token), play in step with the other page, follow a pause, and disconnect when the token
// is forgotten.
//
// These machines have no internet and no Spotify account, so `https://sdk.scdn.co/...` is
// answered (playwright's route) with a stand-in for the documented `Spotify.Player` surface the
// app uses (constructor with getOAuthToken, addListener('ready'|'…_error'), connect,
// disconnect, getCurrentState, resume, pause, seek) over a simulated track clock, and the Web
// API call is answered by the test, which then starts that track on the page's stand-in, as
// Spotify would. Every call is recorded; the checks are on what the app asked of Spotify.
//
// Usage: node tests/browser/spotify.mjs [--bin target/debug/unisono] [--dist dist] [--out tests/browser/out]

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkInStep, log, openRoom, opt, runAppScript, waitFor } from './lib.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.resolve(root, opt('bin', 'target/debug/unisono'));
const DIST = path.resolve(root, opt('dist', 'dist'));
const OUT = path.resolve(root, opt('out', 'tests/browser/out'));
const TRACK = '4uLU6hMCjMI75M1A2tKUQC';
/** The Spotify tier is seek-only with ~100 ms position granularity. */
const SP_TOLERANCE_MS = 300;

/** The stand-in for Spotify's SDK script: a player over a simulated track clock. */
const standIn = `
window.__spCalls = [];
window.Spotify = { Player: class {
  constructor(opts) {
    this.opts = opts; this.listeners = {}; this.uri = null; this.pos = 0; this.at = performance.now(); this.paused = true;
    window.__sp = this;
    opts.getOAuthToken((t) => { this.token = t; });
  }
  log(...c) { window.__spCalls.push(c); }
  now() { return this.paused ? this.pos : this.pos + (performance.now() - this.at); }
  addListener(ev, cb) { (this.listeners[ev] ??= []).push(cb); return true; }
  connect() {
    this.log('connect', this.token);
    setTimeout(() => (this.listeners.ready ?? []).forEach((cb) => cb({ device_id: 'dev-' + this.token })), 30);
    return Promise.resolve(true);
  }
  disconnect() { this.log('disconnect'); }
  getCurrentState() {
    return Promise.resolve(this.uri === null ? null
      : { position: Math.floor(this.now()), paused: this.paused, track_window: { current_track: { uri: this.uri } } });
  }
  resume() { this.log('resume'); if (this.paused) { this.at = performance.now(); this.paused = false; } return Promise.resolve(); }
  pause() { this.log('pause'); this.pos = this.now(); this.paused = true; return Promise.resolve(); }
  seek(ms) { this.log('seek', ms); this.pos = ms; this.at = performance.now(); return Promise.resolve(); }
  // What Spotify does on a Web API play call: the track starts on this device at 0.
  startTrack(uri) { this.uri = uri; this.pos = 0; this.at = performance.now(); this.paused = false; }
} };
if (typeof window.onSpotifyWebPlaybackSDKReady === 'function') window.onSpotifyWebPlaybackSDKReady();
`;

const CORS = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'PUT, OPTIONS',
  'access-control-allow-headers': 'authorization, content-type',
};

/** [wall clock ms, Spotify position ms, paused]. */
const probe = () => {
  const p = window.__sp;
  return [performance.timeOrigin + performance.now(), p && p.uri ? p.now() : NaN, p ? p.paused : true];
};

runAppScript({ name: 'spotify', bin: BIN, dist: DIST, out: OUT }, async ({ url, browser, check }) => {
  const apiCalls = { host: [], guest: [] };
  const pages = [];
  for (const name of ['host', 'guest']) {
    const ctx = await browser.newContext({ viewport: { width: 1000, height: 1100 } });
    if (name === 'guest') await ctx.addInitScript(() => localStorage.setItem('unisono.spotifyToken', 'guest-token'));
    await ctx.route('https://sdk.scdn.co/spotify-player.js', (r) =>
      r.fulfill({ contentType: 'text/javascript', body: standIn }));
    const page = await ctx.newPage();
    await ctx.route('https://api.spotify.com/**', async (r) => {
      const req = r.request();
      if (req.method() === 'OPTIONS') return r.fulfill({ status: 204, headers: CORS });
      apiCalls[name].push({ method: req.method(), url: req.url(), auth: await req.headerValue('authorization'), body: req.postData() });
      const uri = JSON.parse(req.postData() ?? '{}').uris?.[0];
      if (uri) await page.evaluate((u) => window.__sp && window.__sp.startTrack(u), uri);
      return r.fulfill({ status: 204, headers: CORS });
    });
    page.on('pageerror', (e) => log(`${name} page error:`, e.message));
    pages.push(page);
  }
  const [host, guest] = pages;
  await openRoom(host, guest, url);

  await host.fill('#link', `https://open.spotify.com/track/${TRACK}?si=x`);
  await host.click('#add');
  await waitFor(host, () => document.querySelectorAll('#queue li').length === 1);
  await host.click('#play');
  // Without a token the host's page asks for one (and shows the position only).
  await host.waitForSelector('#spotify-token', { timeout: 5000 }).then(
    () => check('without a token the room page asks for one', true),
    () => check('without a token the room page asks for one', false));
  await host.fill('#spotify-token', 'host-token');
  await host.click('#spotify-save');

  const playing = () => window.__sp && window.__sp.uri && !window.__sp.paused && window.__sp.now() > 300;
  await Promise.all([waitFor(host, playing), waitFor(guest, playing)]).then(
    () => check('both pages play the track through Spotify.Player', true),
    (e) => check('both pages play the track through Spotify.Player', false, e.message));
  for (const [n, p] of [['host', host], ['guest', guest]]) {
    const token = `${n}-token`;
    const calls = await p.evaluate(() => window.__spCalls);
    check(`${n} connected a player with its token`, calls.some((c) => c[0] === 'connect' && c[1] === token),
      JSON.stringify(calls.slice(0, 3)));
    const put = apiCalls[n].find((c) => c.method === 'PUT');
    const body = put ? JSON.parse(put.body) : null;
    check(`${n} started the track on its own device through the Web API`,
      !!put && new URL(put.url).pathname === '/v1/me/player/play'
        && new URL(put.url).searchParams.get('device_id') === `dev-${token}`
        && put.auth === `Bearer ${token}` && body?.uris?.[0] === `spotify:track:${TRACK}`,
      JSON.stringify(put));
  }
  check('the <audio> element stays silent', await guest.evaluate(() => document.querySelector('main > audio').paused));

  // In step: both players against one clock, for 5 s after 2 s to settle.
  await checkInStep(check, 'Spotify', SP_TOLERANCE_MS, host, guest, probe, { settleMs: 2000, forMs: 5000 });
  await host.screenshot({ path: path.join(OUT, 'spotify.png'), fullPage: true });

  await host.click('#play');
  await waitFor(guest, () => window.__sp.paused, undefined, 3000).then(
    () => check('pause reaches the guest\'s Spotify player', true),
    () => check('pause reaches the guest\'s Spotify player', false));

  await guest.click('#spotify-forget');
  await waitFor(guest, () => window.__spCalls.some((c) => c[0] === 'disconnect') && !!document.querySelector('#spotify-token'),
    undefined, 3000).then(
    () => check('forgetting the token disconnects the player and asks again', true),
    () => check('forgetting the token disconnects the player and asks again', false));
  check('the token is gone from storage', await guest.evaluate(() => localStorage.getItem('unisono.spotifyToken') === null));
});
