// The core's test vectors (core/tests/vectors/core-v1.jsonl) checked through the npm package's
// public JavaScript API, bit for bit. Plain ES module with no Node imports, so the same code runs
// in Node (`require` and `import` of the installed tarball) and inside webpack bundles (Node and
// Chromium).
//
// Every case through the package's public API, compared with `Object.is` (so -0 and +0 differ,
// and one ulp is a failure):
// - clock cases: each operation applied to a `PlaybackClock` (load, pause, play, seek, setRate,
//   set), its state (position, anchor, playing, rate, rev) and its probes through
//   `clock.positionAt`, and the same probes through `positionAt(playback, t)` on the expected state;
// - estimator cases through `new Estimator()`;
// - drift cases through `new Drift(caps, {})`.

/** Object.is on numbers, `null` and `undefined` alike (JSON has no undefined), deep on objects. */
function same(want, got, at = '') {
  if (want === null || want === undefined) {
    return got === null || got === undefined ? null : `${at}: expected ${want}, got ${JSON.stringify(got)}`;
  }
  if (typeof want === 'number') {
    return typeof got === 'number' && Object.is(want, got) ? null : `${at}: expected ${want}, got ${got}`;
  }
  if (typeof want !== 'object') return want === got ? null : `${at}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`;
  if (typeof got !== 'object' || got === null) return `${at}: expected an object, got ${JSON.stringify(got)}`;
  for (const k of new Set([...Object.keys(want), ...Object.keys(got)])) {
    const d = same(want[k], got[k], `${at}.${k}`);
    if (d) return d;
  }
  return null;
}

function clockCase(u, c) {
  let durationMs = 0;
  const out = [];
  const clock = new u.PlaybackClock();
  try {
    c.ops.forEach((op, i) => {
      switch (op.op) {
        case 'load':
          durationMs = op.durationMs;
          clock.load({ id: 'v', title: '', provider: 'url', url: '', durationMs }, op.now, op.startAt ?? undefined);
          break;
        case 'pause': clock.pause(op.now); break;
        case 'play': clock.play(op.now, op.startAt); break;
        case 'seek': clock.seek(op.positionMs, op.now); break;
        case 'setRate': clock.setRate(op.rate, op.now); break;
        case 'set': clock.set(op.positionMs, op.isPlaying, op.now); break;
        default: out.push(`op ${i}: unknown op ${op.op}`); return;
      }
      const obs = c.expect[i];
      const st = clock.state();
      const d = same(
        { positionMs: obs.positionMs, serverTime: obs.serverTime, isPlaying: obs.isPlaying, rate: obs.rate, rev: obs.rev },
        { positionMs: st.positionMs, serverTime: st.serverTime, isPlaying: st.isPlaying, rate: st.rate, rev: st.rev },
        `op ${i} (${op.op}) state`);
      if (d) out.push(d);
      const playback = {
        song: { id: 'v', title: '', provider: 'url', url: '', durationMs },
        positionMs: obs.positionMs, serverTime: obs.serverTime, isPlaying: obs.isPlaying,
        rate: obs.rate, rev: obs.rev, startedAt: null, pausedAt: null,
      };
      obs.probes.forEach(([t, want], j) => {
        const a = same(want, clock.positionAt(t), `op ${i} probe ${j}: clock.positionAt(${t})`);
        if (a) out.push(a);
        const b = same(want, u.positionAt(playback, t), `op ${i} probe ${j}: positionAt(…, ${t})`);
        if (b) out.push(b);
      });
    });
  } finally {
    clock.free();
  }
  return out;
}

function estimatorCase(u, c) {
  const e = new u.Estimator();
  try {
    const got = {
      accepted: c.samples.map(([t0, t1, t2, t3]) => e.addSample(t0, t1, t2, t3)),
      offset: e.offset(),
      errorBound: e.errorBound(),
      stable: e.isStable(),
    };
    const d = same(c.expect, got, 'estimator');
    return d ? [d] : [];
  } finally {
    e.free();
  }
}

function driftCase(u, c) {
  // `{}` is DriftConfig::default() (serde fills every field), what the vectors were made with;
  // without a config, `Drift` may tune its defaults to the player's capabilities.
  const ctl = new u.Drift(c.caps, {});
  try {
    const got = c.updates.map(([now, local, expected, rate]) => ctl.update(now, local, expected, rate));
    const d = same(c.expect, got, 'drift');
    return d ? [d] : [];
  } finally {
    ctl.free();
  }
}

/**
 * Checks every vector in `text` (JSON lines) with the package `u`. Returns
 * `{ cases, byKind, failures }`; `failures` is empty when every bit matched.
 */
export function checkAllVectors(u, text) {
  const lines = text.split('\n').filter((l) => l.trim());
  const failures = [];
  const byKind = {};
  lines.forEach((line, i) => {
    const c = JSON.parse(line);
    byKind[c.kind] = (byKind[c.kind] ?? 0) + 1;
    const check = { clock: clockCase, estimator: estimatorCase, drift: driftCase }[c.kind];
    const diffs = check ? check(u, c) : [`unknown kind ${c.kind}`];
    for (const d of diffs) failures.push(`case ${i} (${c.kind}) ${d}`);
  });
  return { cases: lines.length, byKind, failures };
}

/** A copy of `text` with one clock probe's expected position moved by one ulp (a must-fail input). */
export function tamperOneUlp(text) {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.includes('"kind":"clock"'));
  const c = JSON.parse(lines[i]);
  const probe = c.expect[0].probes.find(([, p]) => p > 0);
  const bits = new BigInt64Array(new Float64Array([probe[1]]).buffer);
  bits[0] += 1n;
  probe[1] = new Float64Array(bits.buffer)[0];
  lines[i] = JSON.stringify(c);
  return lines.join('\n');
}

/** A copy of `text` with one clock observation's `rev` off by one (a transition's must-fail input). */
export function tamperRev(text) {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.includes('"kind":"clock"'));
  const c = JSON.parse(lines[i]);
  c.expect[c.expect.length - 1].rev += 1;
  lines[i] = JSON.stringify(c);
  return lines.join('\n');
}
