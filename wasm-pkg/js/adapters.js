// The built-in media adapters of `PlayerSync` (wasm-pkg/src/player.rs): an HTML5 media element,
// a YouTube IFrame player and a Spotify Web Playback SDK player, each as the object a custom
// adapter is (`PlayerSync.custom`): `capabilities`, `load(song)`, `positionMs()`,
// `isPlaying()`, `play()`, `pause()`, `seek(ms)`, `setRate(rate)` and `blocked()`. The sync loop
// and every decision stay in Rust; these only translate to each player's API, which is
// JavaScript's, so they are written in it (and cost the wasm nothing). Shared by the npm
// package and the Yew app, which both load this file as a wasm-bindgen snippet.

/// Calls `obj[method](...args)`; `undefined` when there is no such method or it throws (a
/// player not ready yet must not stop the sync loop).
function call(obj, method, ...args) {
  try {
    return typeof obj?.[method] === "function" ? obj[method](...args) : undefined;
  } catch {
    return undefined;
  }
}

/// An `<audio>`/`<video>` element; plays `url` songs. Continuous rate, so rate nudges.
export function mediaElement(el) {
  if (typeof HTMLMediaElement !== "undefined" && !(el instanceof HTMLMediaElement)) {
    throw new TypeError("not a media element");
  }
  el.preload = "auto";
  let blocked = false;
  return {
    capabilities: { canSetRate: true, rateStep: null, seekLatencyMs: 30, positionGranularityMs: 0 },
    load(song) {
      if (song.provider !== "url" || !song.url) {
        el.pause();
        return false;
      }
      if (el.src !== song.url) el.src = song.url;
      return true;
    },
    // HAVE_METADATA (1) or more: the position is meaningful.
    positionMs: () => (el.readyState >= 1 ? el.currentTime * 1000 : null),
    isPlaying: () => !el.paused,
    play() {
      blocked = false;
      // Refused by the autoplay policy: the page should ask for a click (`unblock()`).
      el.play()?.catch(() => {
        blocked = true;
      });
    },
    pause: () => el.pause(),
    seek(ms) {
      el.currentTime = Math.max(ms / 1000, 0);
    },
    setRate(rate) {
      if (el.playbackRate !== rate) el.playbackRate = rate;
    },
    blocked: () => blocked,
  };
}

/// A `YT.Player`; plays `youtube` songs (`song.id` is the video id). `setPlaybackRate` only
/// takes `getAvailablePlaybackRates()`, whose finest spacing around 1.0 is the rate step (the
/// usual 0.25 makes YouTube seek-only); `getCurrentTime()` is coarse.
export function youTube(player) {
  const rates = call(player, "getAvailablePlaybackRates");
  let step = null;
  if (Array.isArray(rates)) {
    const r = rates.filter((v) => typeof v === "number");
    for (let i = 1; i < r.length; i++) {
      const d = Math.abs(r[i] - r[i - 1]);
      if (d > 0 && (step === null || d < step)) step = d;
    }
  }
  step ??= 0.25;
  return {
    capabilities: { canSetRate: true, rateStep: step, seekLatencyMs: 300, positionGranularityMs: 50 },
    load(song) {
      if (song.provider !== "youtube") return false;
      if (call(player, "getVideoData")?.video_id !== song.id) call(player, "cueVideoById", song.id);
      return true;
    },
    positionMs() {
      const t = call(player, "getCurrentTime");
      return typeof t === "number" ? t * 1000 : null;
    },
    // YT.PlayerState.PLAYING = 1, BUFFERING = 3.
    isPlaying: () => [1, 3].includes(call(player, "getPlayerState")),
    play: () => call(player, "playVideo"),
    pause: () => call(player, "pauseVideo"),
    seek: (ms) => call(player, "seekTo", Math.max(ms / 1000, 0), true),
    setRate: (rate) => call(player, "setPlaybackRate", Math.round(rate / step) * step),
    blocked: () => false,
  };
}

/// Spotify's Web API call that starts a track on a device.
export const SPOTIFY_PLAY_URL = "https://api.spotify.com/v1/me/player/play";

/// A `Spotify.Player` (Web Playback SDK); plays `spotify` songs (`song.id` is the track id).
/// Seeks only, no rate. Its state comes from the asynchronous `getCurrentState()`, polled on
/// each read and extrapolated in between. The SDK cannot choose a track: with
/// `webApi = {deviceId, token}` each loaded song is started on that device with
/// `PUT /v1/me/player/play` (Premium, scope `streaming`); without, that is the page's job.
export function spotify(player, webApi) {
  /// `[position ms, paused, performance.now() when read]` from the last `getCurrentState()`.
  let last = null;
  const startTrack = (id) => {
    if (typeof webApi?.deviceId !== "string" || typeof webApi?.token !== "string") return;
    fetch(`${SPOTIFY_PLAY_URL}?device_id=${encodeURIComponent(webApi.deviceId)}`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${webApi.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ uris: [`spotify:track:${id}`] }),
    }).catch(() => {}); // the result shows in the SDK's state, which is polled
  };
  const poll = () => {
    Promise.resolve(call(player, "getCurrentState")).then(
      (s) => {
        last = typeof s?.position === "number"
          ? [s.position, typeof s.paused === "boolean" ? s.paused : true, performance.now()]
          : null;
      },
      () => {},
    );
  };
  return {
    capabilities: { canSetRate: false, rateStep: null, seekLatencyMs: 300, positionGranularityMs: 100 },
    load(song) {
      if (song.provider !== "spotify") return false;
      last = null;
      startTrack(song.id);
      return true;
    },
    positionMs() {
      poll();
      if (!last) return null;
      const [pos, paused, at] = last;
      return paused ? pos : pos + (performance.now() - at);
    },
    isPlaying: () => last !== null && !last[1],
    play() {
      call(player, "resume");
      if (last) last[1] = false;
    },
    pause() {
      call(player, "pause");
      if (last) last[1] = true;
    },
    seek(ms) {
      call(player, "seek", Math.round(Math.max(ms, 0)));
      if (last) last = [ms, last[1], performance.now()];
    },
    setRate() {},
    blocked: () => false,
  };
}
