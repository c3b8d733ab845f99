// Calls the declarations must reject: tests/npm/run.mjs expects `tsc` to report an error on
// every line marked `// error` and on no other line.
import { Drift, PlaybackClock, UnisonoClient, type Playback } from 'unisono';

export function misuse(c: UnisonoClient): void {
  c.seek('10s'); // error
  c.loadSong({ title: 'no id' }); // error
  c.onPlayback = (p: Playback | null) => p?.positionMs.toUpperCase(); // error
  const r: string = c.syncStats().samples; // error
  new Drift({ canSetRate: 'yes', rateStep: null, seekLatencyMs: 0, positionGranularityMs: 0 }, undefined); // error
  const step = new Drift({ canSetRate: true, rateStep: null, seekLatencyMs: 0, positionGranularityMs: 0 }, undefined).update(0, 0, 0, 1);
  console.log(step.toMs, r); // error
  new PlaybackClock().state().song?.durationMs.trim(); // error
}
