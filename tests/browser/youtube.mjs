// Browser end-to-end for YouTube songs in the web app: two Chromium pages in one room, the host
// adds a YouTube link and plays; both pages must create a YouTube player through the IFrame
// Player API, cue that video, play it in step, follow a pause, and give the room back to the
// <audio> element when the next song is a plain URL.
//
// These machines have no internet, so `https://www.youtube.com/iframe_api` is answered by the
// test (playwright's page.route) with a stand-in that implements the documented `YT.Player`
// surface the app uses (constructor with events.onReady, cueVideoById, getVideoData,
// playVideo, pauseVideo, seekTo, getCurrentTime, getPlayerState, getAvailablePlaybackRates,
// setPlaybackRate) over an <audio> element playing a generated WAV. It records every call, so
// the checks are on what the app asked YouTube's player to do.
//
// Usage: node tests/browser/youtube.mjs [--bin target/debug/unisono] [--dist dist] [--out tests/browser/out]

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkInStep, log, openRoom, opt, runAppScript, sleep, wav, waitFor } from './lib.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.resolve(root, opt('bin', 'target/debug/unisono'));
const DIST = path.resolve(root, opt('dist', 'dist'));
const OUT = path.resolve(root, opt('out', 'tests/browser/out'));
const VIDEO = 'dQw4w9WgXcQ';
/** The YouTube tier: rates in 0.25 steps make it seek-only, with a 150 ms threshold. */
const YT_TOLERANCE_MS = 200;

/** The stand-in for YouTube's loader script; `media` is what its players play. */
const standIn = (media) => `
window.__ytCalls = [];
window.YT = { loaded: 1, PlayerState: { UNSTARTED: -1, ENDED: 0, PLAYING: 1, PAUSED: 2, BUFFERING: 3, CUED: 5 },
  Player: class {
    constructor(el, opts) {
      const host = typeof el === 'string' ? document.getElementById(el) : el;
      this.audio = document.createElement('audio');
      this.audio.className = 'yt-stand-in';
      this.audio.preload = 'auto';
      this.audio.src = ${JSON.stringify(media)};
      host.appendChild(this.audio);
      this.videoId = null;
      window.__yt = this;
      setTimeout(() => opts && opts.events && opts.events.onReady && opts.events.onReady({ target: this }), 20);
    }
    log(...c) { window.__ytCalls.push(c); }
    cueVideoById(id) { this.log('cueVideoById', id); this.videoId = id; }
    getVideoData() { return { video_id: this.videoId }; }
    playVideo() { this.log('playVideo'); this.audio.play().catch(() => {}); }
    pauseVideo() { this.log('pauseVideo'); this.audio.pause(); }
    seekTo(s) { this.log('seekTo', s); this.audio.currentTime = s; }
    getCurrentTime() { return this.audio.currentTime; }
    getPlayerState() { return this.videoId === null ? -1 : this.audio.paused ? 2 : 1; }
    getAvailablePlaybackRates() { return [0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]; }
    setPlaybackRate(r) { this.log('setPlaybackRate', r); this.audio.playbackRate = r; }
  } };
`;

/** [wall clock ms, YouTube player position ms, paused]. */
const probe = () => {
  const p = window.__yt;
  return [performance.timeOrigin + performance.now(), p ? p.getCurrentTime() * 1000 : NaN, p ? p.audio.paused : true];
};

runAppScript({ name: 'youtube', bin: BIN, dist: DIST, out: OUT, media: { 'video.wav': wav(120), 'tone.wav': wav(60) } }, async ({ url, browser, check }) => {
  const pages = [];
  for (const name of ['host', 'guest']) {
    const ctx = await browser.newContext({ viewport: { width: 1000, height: 1100 } });
    await ctx.route('https://www.youtube.com/iframe_api', (r) =>
      r.fulfill({ contentType: 'text/javascript', body: standIn(`${url}/media/video.wav`) }));
    const page = await ctx.newPage();
    page.on('pageerror', (e) => log(`${name} page error:`, e.message));
    pages.push(page);
  }
  const [host, guest] = pages;
  await openRoom(host, guest, url);

  await host.fill('#link', `https://www.youtube.com/watch?v=${VIDEO}&t=3`);
  await host.click('#add');
  await waitFor(host, () => document.querySelectorAll('#queue li').length === 1);
  await host.click('#play');
  const playing = () => window.__yt && !window.__yt.audio.paused && window.__yt.getCurrentTime() > 0.3;
  await Promise.all([waitFor(host, playing), waitFor(guest, playing)]).then(
    () => check('both pages play the video through YT.Player', true),
    (e) => check('both pages play the video through YT.Player', false, e.message));
  for (const [n, p] of [['host', host], ['guest', guest]]) {
    const calls = await p.evaluate(() => window.__ytCalls);
    check(`${n} cued the linked video`, calls.some((c) => c[0] === 'cueVideoById' && c[1] === 'dQw4w9WgXcQ'),
      JSON.stringify(calls.slice(0, 4)));
    const shown = await p.evaluate(() => !document.querySelector('#video').classList.contains('hidden'));
    check(`${n} shows the video box`, shown);
  }
  check('the <audio> element stays silent', await guest.evaluate(() => document.querySelector('main > audio').paused));

  // In step: both players against one clock, for 6 s after 3 s to settle.
  await checkInStep(check, 'YouTube', YT_TOLERANCE_MS, host, guest, probe, { settleMs: 3000, forMs: 6000 });
  await host.screenshot({ path: path.join(OUT, 'youtube.png'), fullPage: true });

  await host.click('#play');
  await waitFor(guest, () => window.__yt.audio.paused, undefined, 3000).then(
    () => check('pause reaches the guest\'s YouTube player', true),
    () => check('pause reaches the guest\'s YouTube player', false));

  // The next song is a plain URL: the <audio> element takes over, the video box goes away.
  const queued = await host.evaluate(() => document.querySelectorAll('#queue li').length);
  await host.fill('#link', `${url}/media/tone.wav`);
  await host.click('#add');
  await waitFor(host, (n) => document.querySelectorAll('#queue li').length === n + 1, queued);
  await host.click('#next');
  await sleep(300);
  if (await host.evaluate(() => document.querySelector('main > audio').paused)) await host.click('#play');
  const audioPlays = () => { const a = document.querySelector('main > audio'); return !a.paused && a.currentTime > 0.2; };
  await Promise.all([waitFor(host, audioPlays), waitFor(guest, audioPlays)]).then(
    () => check('a URL song after it plays in <audio> again', true),
    (e) => check('a URL song after it plays in <audio> again', false, e.message));
  const hidden = await guest.evaluate(() => document.querySelector('#video').classList.contains('hidden')
    && !document.querySelector('#video').children.length);
  check('the video box is hidden and emptied', hidden);
});
