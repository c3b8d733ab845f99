// A TypeScript consumer of the installed package, type-checked with `tsc --strict --noEmit` by
// tests/npm/run.mjs (never run): every public name resolves through the package's `types`
// condition and the objects read as the protocol's shapes, not `any`.
import {
  Drift,
  Estimator,
  PlaybackClock,
  PlayerSync,
  UnisonoClient,
  encodeRequest,
  positionAt,
  type Correction,
  type Member,
  type Playback,
  type Room,
  type SyncStats,
  type UnisonoError,
} from 'unisono';
import initWeb, { UnisonoClient as WebClient } from 'unisono/web';

export async function session(url: string): Promise<number | undefined> {
  const c = new UnisonoClient();
  c.onPlayback = (p: Playback | null, reason: string) => {
    const at: number | undefined = p ? positionAt(p, c.serverNow()) : undefined;
    console.log(reason, at, p?.song?.provider);
  };
  c.onMembers = (members: Member[], host: string | null) => console.log(members.map((m) => m.name), host);
  c.onError = (e: UnisonoError) => console.log(e.code);
  c.onConnection = (s) => {
    const open: boolean = s === 'open';
    console.log(open);
  };
  await c.connect(url);
  const { code } = await c.createRoom({ name: 'Friday', memberName: 'Alice', settings: { readyBarrier: true } });
  await c.loadSong({ id: 'a', durationMs: 60_000, provider: 'url', url: '/a.wav' }, true);
  await c.seek(1_000);
  await c.queueMove('q1', 0);
  const room: Room | null = c.room;
  const host: boolean = room?.members.some((m) => m.isHost && m.sessionId === room.you) ?? false;
  const stats: SyncStats = c.syncStats();
  console.log(code, host, stats.errorBound, c.connectionState);

  const player = PlayerSync.custom(
    c,
    {
      load: () => true,
      positionMs: () => 0,
      isPlaying: () => false,
      play() {},
      pause() {},
      seek(_ms: number) {},
      setRate(_rate: number) {},
    },
    { canSetRate: true, rateStep: null, seekLatencyMs: 50, positionGranularityMs: 1 },
  );
  player.start();
  const drift = player.stats().driftMs;

  const clock = new PlaybackClock();
  clock.load({ id: 'b', durationMs: 1_000 }, 0, 10);
  const p: Playback = clock.state();
  const e = new Estimator({ window: 16 });
  e.addSample(0, 10, 11, 21);
  const d = new Drift({ canSetRate: false, rateStep: null, seekLatencyMs: 300, positionGranularityMs: 50 }, undefined);
  const step: Correction = d.update(0, 0, 2_000, 1);
  const to: number = step.kind === 'seek' ? step.toMs : step.kind === 'rate' ? step.rate : 0;
  console.log(encodeRequest('seek-playback', { positionMs: 5 }, 1), p.rev, to, drift);

  await initWeb();
  new WebClient().close();
  return c.positionNow();
}
