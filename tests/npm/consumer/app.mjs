// The webpack entry: an app importing `unisono` by name, as a bundler user writes it. webpack
// picks the package's bundler build (condition `module`) and loads its .wasm asynchronously
// (experiments.asyncWebAssembly). The result goes to `globalThis.unisonoResult` (a promise) for
// the test driver; `globalThis.UNISONO_SERVER` (a ws:// URL) asks for a live session too.
import * as unisono from 'unisono';
import { appChecks } from './checks.mjs';
import vectors from './core-v1.jsonl';

globalThis.unisonoResult = appChecks(unisono, vectors, globalThis.UNISONO_SERVER).catch((e) => ({ error: String(e?.stack ?? e) }));
