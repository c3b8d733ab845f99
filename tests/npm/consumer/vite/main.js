// The Vite entry: `import … from 'unisono'` as an app would write it (the `module` condition:
// the bundler build, whose ES-module `.wasm` import Vite 8 bundles as an asset), the shared
// browser checks, and the test vectors inlined as text (`?raw`).
import * as unisono from 'unisono';
import { appChecks } from '../checks.mjs';
import vectors from '../core-v1.jsonl?raw';

window.unisonoResult = appChecks(unisono, vectors, `ws://${location.host}/ws`)
  .catch((e) => ({ error: String(e?.stack ?? e) }));
