// The Rollup entry. Like esbuild, Rollup does not bundle a `.wasm` imported as an ES module (the
// `bundler` build's way), so this consumer takes the package's `web` build (`unisono/web`), lets
// @rollup/plugin-url emit the `.wasm` as a file (its import gives the URL) and hands that URL to
// `init()`: the recipe in wasm-pkg/README.md, bundled by tests/npm/run.mjs.
import init, * as unisono from 'unisono/web';
import wasmUrl from 'unisono/web/unisono_bg.wasm';
import { appChecks } from '../checks.mjs';
import vectors from '../core-v1.jsonl';

window.unisonoResult = init({ module_or_path: wasmUrl })
  .then(() => appChecks(unisono, vectors, `ws://${location.host}/ws`))
  .catch((e) => ({ error: String(e?.stack ?? e) }));
