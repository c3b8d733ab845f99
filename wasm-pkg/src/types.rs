//! The TypeScript names of the objects that cross the JavaScript boundary as JSON (feature
//! `js`), so that `unisono.d.ts` says `Playback` where wasm-bindgen alone would say `any`. They
//! describe the core's serde forms (camelCase); `tests/npm/run.mjs` type-checks a consumer
//! against them with `tsc --strict`, including calls that must be rejected.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Where a song plays from. */
export type Provider = "url" | "youtube" | "spotify";

/** A song as requests take it (`loadSong`, `queueAdd`); only `id` is required. */
export interface SongInput {
  id: string;
  title?: string;
  provider?: Provider;
  url?: string;
  /** 0 or absent: unknown. */
  durationMs?: number;
}

/** A song as the server sends it. */
export interface Song {
  id: string;
  title: string;
  provider: Provider;
  url: string;
  durationMs: number;
}

/** The playback timing vector: `position = positionMs + (now − serverTime) × rate` while playing. */
export interface Playback {
  song: Song | null;
  positionMs: number;
  serverTime: number;
  isPlaying: boolean;
  rate: number;
  /** Strictly increases on every change. */
  rev: number;
  startedAt: number | null;
  pausedAt: number | null;
  awaitingReady?: boolean;
}

export interface Member {
  sessionId: string;
  name: string;
  joinedAt: number;
  isHost: boolean;
  ready: boolean;
  connected: boolean;
  /** The member's last reported drift (ms, positive: ahead). */
  driftMs?: number;
}

export interface QueueItem {
  itemId: string;
  song: Song;
  addedBy: string | null;
  addedAt: number;
}

export interface RoomSettings {
  anyoneCanControl: boolean;
  readyBarrier: boolean;
  readyTimeoutMs: number;
  startDelayMs: number;
}

export interface RoomInfo {
  code: string;
  name: string;
  createdAt: number;
  settings: RoomSettings;
}

/** The room as the client sees it (`UnisonoClient.room`, `onRoom`). */
export interface Room {
  room: RoomInfo;
  /** This client's session id. */
  you: string;
  members: Member[];
  memberCount: number;
  host: string | null;
  queue: QueueItem[];
  playback: Playback;
}

export interface CreateRoomOptions {
  name?: string;
  memberName?: string;
  settings?: Partial<RoomSettings>;
}

export type ConnectionState = "closed" | "connecting" | "open" | "reconnecting";

/** A rejected request or an `onError` argument: `code` is the server's stable error code. */
export interface UnisonoError extends Error {
  code: string;
}

export interface SyncStats {
  offset: number | null;
  errorBound: number | null;
  rtt: number | null;
  minRtt: number | null;
  samples: number;
  stable: boolean;
}

export type DriftMode = "idle" | "nudging" | "seeking" | "backoff";

export interface PlayerSyncStats {
  driftMs: number | null;
  mode: DriftMode;
  rate: number;
  seeks: number;
  rateChanges: number;
  blocked: boolean;
  /** `[serverTime, driftMs]` over the last minute. */
  history: [number, number][];
}

/** What a player can do: the drift controller picks its tier from this. */
export interface PlayerCapabilities {
  canSetRate: boolean;
  /** Rates are multiples of this; `null` for a continuous rate. */
  rateStep: number | null;
  seekLatencyMs: number;
  positionGranularityMs: number;
}

export interface DriftConfig {
  deadBandMs: number;
  exitBandMs: number;
  nearMaxRateDelta: number;
  farMaxRateDelta: number;
  nearThresholdMs: number;
  seekThresholdMs: number;
  seekOnlyThresholdMs: number;
  correctionHorizonMs: number;
  maxSeeks: number;
  seekWindowMs: number;
  seekBackoffMs: number;
  seekSettleMs: number;
  rateResolution: number;
  smoothing: number;
  nudgeRestMs: number;
}

export interface EstimatorConfig {
  window: number;
  bestOf: number;
  outlierFactor: number;
  outlierSlackMs: number;
  stableMinSamples: number;
  stableMaxErrorMs: number;
}

/** One drift-controller decision. */
export type Correction = { kind: "none" } | { kind: "rate"; rate: number } | { kind: "seek"; toMs: number };

/** A player `PlayerSync.custom` drives. */
export interface CustomPlayer {
  load(song: Song): boolean | void;
  positionMs(): number;
  isPlaying(): boolean;
  play(): void;
  pause(): void;
  seek(ms: number): void;
  setRate(rate: number): void;
}
"#;
