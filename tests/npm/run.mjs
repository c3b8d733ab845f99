// The packed npm tarball, used the way a consumer uses it. A fresh temp project (the files of
// tests/npm/consumer/ plus the test vectors) gets `npm install --offline <tarball>` (the package
// has no dependencies: no registry is asked), and then:
//
// 1. Node, `require('unisono')` (consumer/require.cjs) and `import {…} from 'unisono'`
//    (consumer/import.mjs): the package's Node build, every test vector bit for bit, and a
//    full room session against the real binary (tests/browser/npm_client.mjs);
// 2. the generated TypeScript declarations are in the package, a strict TypeScript consumer
//    (tests/npm/typescript/ok.ts) type-checks against them with `tsc`, and each misuse in
//    wrong.ts is reported (the objects are typed as the protocol's shapes, not `any`);
// 3. webpack 5 (consumer/webpack.config.cjs) bundles consumer/app.mjs twice: for Node, run
//    here, and for the web, loaded in headless Chromium from the real server (`--web-dir`);
//    both check every test vector, a position, and connect to the server (room, song, clock);
// 4. Vite 8 bundles consumer/vite/ (`import … from 'unisono'`, the .wasm as an asset), and
//    esbuild and Rollup 4 bundle consumer/esbuild/ and consumer/rollup/ (`unisono/web`, the
//    .wasm as a file given to init()), each loaded in Chromium from the server like the
//    webpack bundle;
// 5. a page without a bundler imports the package's `web` build (`unisono/web`) in Chromium.
//
// Chromium is Debian's /usr/bin/chromium driven by playwright-core; without it the browser
// halves of steps 3–5 are skipped loudly (a failure under CI=true).
//
// Usage: node tests/npm/run.mjs --tarball target/npm/unisono-0.1.0.tgz
//        [--bin target/debug/unisono] [--keep]   (--keep: leave the temp project for a look)

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { WebSocket } from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const require = createRequire(import.meta.url);
const args = process.argv.slice(2);
const opt = (n, d) => (args.indexOf(`--${n}`) >= 0 ? args[args.indexOf(`--${n}`) + 1] : d);
const TARBALL = opt('tarball') && path.resolve(opt('tarball'));
const BIN = path.resolve(root, opt('bin', 'target/debug/unisono'));
if (!TARBALL || !fs.existsSync(TARBALL)) {
  console.error('usage: node tests/npm/run.mjs --tarball <unisono-VERSION.tgz> (cargo xtask npm-pack makes it)');
  process.exit(2);
}
const CHROMIUM = '/usr/bin/chromium';

let failures = 0;
const check = (name, ok, detail = '') => {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name} ${detail}`);
  if (!ok) failures++;
};

// -- the consumer project ------------------------------------------------------------------------
const project = fs.mkdtempSync(path.join(os.tmpdir(), 'unisono-consumer-'));
fs.cpSync(path.join(here, 'consumer'), project, { recursive: true });
fs.copyFileSync(path.join(here, 'vectors.mjs'), path.join(project, 'vectors.mjs'));
fs.copyFileSync(path.join(root, 'core/tests/vectors/core-v1.jsonl'), path.join(project, 'core-v1.jsonl'));
fs.writeFileSync(path.join(project, 'package.json'),
  `${JSON.stringify({ name: 'unisono-consumer', version: '1.0.0', private: true }, null, 2)}\n`);
console.log(`consumer project: ${project}`);
execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', TARBALL], { cwd: project, stdio: 'inherit' });
const installed = path.join(project, 'node_modules/unisono');
const manifest = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8'));
const deps = JSON.parse(fs.readFileSync(path.join(project, 'package.json'), 'utf8')).dependencies ?? {};
check('npm install --offline of the tarball', manifest.name === 'unisono' && /^file:/.test(deps.unisono ?? ''),
  `unisono@${manifest.version} ← ${deps.unisono}`);

const server = { bin: BIN, proc: null };
try {
  // -- 1. Node: require and import -----------------------------------------------------------------
  for (const entry of ['require.cjs', 'import.mjs']) {
    const code = await new Promise((resolve) => {
      const child = spawn(process.execPath, [entry], {
        cwd: project,
        stdio: 'inherit',
        env: { ...process.env, UNISONO_BIN: BIN, UNISONO_NODE_CHECKS: pathToFileURL(path.join(here, 'node_checks.mjs')).href },
      });
      child.on('exit', resolve);
    });
    check(`Node consumer ${entry} (vectors and a room session against the binary)`, code === 0, `exit ${code}`);
  }

  // -- 2. TypeScript declarations ------------------------------------------------------------------
  for (const dts of ['bundler/unisono.d.ts', 'node/unisono.d.ts', 'web/unisono.d.ts']) {
    const text = fs.existsSync(path.join(installed, dts)) ? fs.readFileSync(path.join(installed, dts), 'utf8') : '';
    const want = ['export class UnisonoClient', 'export class PlayerSync', 'export function positionAt(', 'export class Estimator'];
    check(`types: ${dts}`, want.every((w) => text.includes(w)), want.filter((w) => !text.includes(w)).join(', '));
  }

  // -- 2b. TypeScript: a strict consumer compiles, and misuse is rejected line by line ------------------
  const tsDir = path.join(project, 'ts');
  fs.cpSync(path.join(here, 'typescript'), tsDir, { recursive: true });
  const tsc = (file) => {
    fs.writeFileSync(path.join(tsDir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        strict: true, noEmit: true, target: 'ES2022', module: 'ESNext', moduleResolution: 'bundler',
        lib: ['ES2022', 'DOM', 'ESNext.Disposable'], types: [], skipLibCheck: false,
      },
      files: [file],
    }));
    try {
      execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', tsDir], { encoding: 'utf8' });
      return '';
    } catch (e) {
      return `${e.stdout ?? ''}${e.stderr ?? ''}`;
    }
  };
  const okOut = tsc('ok.ts');
  check('TypeScript: a strict consumer (tests/npm/typescript/ok.ts) type-checks', okOut === '', okOut.split('\n').slice(0, 5).join(' | '));
  const wrongOut = tsc('wrong.ts');
  const marked = fs.readFileSync(path.join(tsDir, 'wrong.ts'), 'utf8').split('\n')
    .flatMap((l, i) => (l.trimEnd().endsWith('// error') ? [i + 1] : []));
  const flagged = [...new Set([...wrongOut.matchAll(/wrong\.ts\((\d+),\d+\): error/g)].map((m) => Number(m[1])))];
  check('TypeScript: every misuse in wrong.ts is an error, and nothing else',
    marked.length > 0 && marked.every((l) => flagged.includes(l)) && flagged.every((l) => marked.includes(l)),
    `marked ${marked.join(',')}; flagged ${flagged.join(',')}`);

  // -- 3. webpack ------------------------------------------------------------------------------------
  const webpack = require('webpack');
  const config = require(path.join(project, 'webpack.config.cjs'));
  const bundle = (env) => new Promise((resolve) => {
    webpack(config(env), (err, stats) => {
      const errors = err ? [String(err)] : stats.toJson({ all: false, errors: true }).errors.map((e) => e.message);
      resolve(errors);
    });
  });
  const nodeErrors = await bundle({ target: 'node', out: 'dist-node' });
  check('webpack bundles the app for Node', nodeErrors.length === 0, nodeErrors.join('\n'));
  const webErrors = await bundle({ target: 'web', out: 'site' });
  check('webpack bundles the app for the web', webErrors.length === 0, webErrors.join('\n'));

  // The site the server serves: the web bundle, its page, and the no-bundler page with the
  // package's `web` build next to it.
  const site = path.join(project, 'site');
  for (const f of ['index.html', 'web.html', 'checks.mjs', 'vectors.mjs', 'core-v1.jsonl']) {
    fs.copyFileSync(path.join(project, f), path.join(site, f));
  }
  fs.cpSync(path.join(installed, 'web'), path.join(site, 'unisono/web'), { recursive: true });
  // Vite 8 (`import … from 'unisono'`: the bundler build and its ES-module .wasm import) into
  // site/vite/.
  try {
    const vite = await import('vite');
    await vite.build({
      root: path.join(project, 'vite'),
      base: '/vite/',
      logLevel: 'warn',
      build: { outDir: path.join(site, 'vite'), emptyOutDir: true },
    });
    const assets = fs.readdirSync(path.join(site, 'vite/assets'));
    check('Vite bundles the app with the package .wasm as an asset', assets.some((f) => f.endsWith('.wasm')), assets.join(', '));
  } catch (e) {
    check('Vite bundles the app', false, e?.message ?? String(e));
  }
  // esbuild (`unisono/web` with the .wasm as a file and its URL given to init()) into
  // site/esbuild/.
  try {
    const esbuild = require('esbuild');
    const out = path.join(site, 'esbuild');
    await esbuild.build({
      entryPoints: [path.join(project, 'esbuild/main.js')],
      bundle: true,
      format: 'esm',
      outdir: out,
      publicPath: '/esbuild',
      loader: { '.wasm': 'file', '.jsonl': 'text' },
      logLevel: 'warning',
    });
    fs.copyFileSync(path.join(project, 'esbuild/index.html'), path.join(out, 'index.html'));
    const files = fs.readdirSync(out);
    check('esbuild bundles the app with the package .wasm as a file', files.some((f) => f.endsWith('.wasm')), files.join(', '));
  } catch (e) {
    check('esbuild bundles the app', false, e?.message ?? String(e));
  }
  // Rollup 4 (the same recipe as esbuild: `unisono/web`, the .wasm emitted as a file by
  // @rollup/plugin-url, its URL given to init()) into site/rollup/.
  try {
    const { rollup } = require('rollup');
    const { nodeResolve } = require('@rollup/plugin-node-resolve');
    const url = require('@rollup/plugin-url');
    const out = path.join(site, 'rollup');
    const text = { name: 'text', transform: (code, id) => (id.endsWith('.jsonl') ? { code: `export default ${JSON.stringify(code)};`, map: null } : null) };
    const warnings = [];
    const bundle = await rollup({
      input: path.join(project, 'rollup/main.js'),
      plugins: [nodeResolve({ browser: true }), (url.default ?? url)({ include: ['**/*.wasm'], limit: 0, publicPath: '/rollup/' }), text],
      onwarn: (w) => warnings.push(w.message),
    });
    await bundle.write({ dir: out, format: 'es' });
    await bundle.close();
    fs.copyFileSync(path.join(project, 'rollup/index.html'), path.join(out, 'index.html'));
    const files = fs.readdirSync(out);
    check('Rollup bundles the app with the package .wasm as a file', files.some((f) => f.endsWith('.wasm')),
      `${files.join(', ')}${warnings.length ? `; warnings: ${warnings.join(' | ')}` : ''}`);
  } catch (e) {
    check('Rollup bundles the app', false, e?.message ?? String(e));
  }
  const base = await startServer(server, site);
  const wasmAssets = fs.readdirSync(site).filter((f) => f.endsWith('.wasm'));
  check('the web bundle emits the package .wasm as an asset', wasmAssets.length === 1, wasmAssets.join(', '));

  globalThis.WebSocket ??= WebSocket;
  globalThis.UNISONO_SERVER = `ws://${base}/ws`;
  require(path.join(project, 'dist-node/main.js'));
  // The entry is an async module (it waits for the .wasm), so its result appears a bit later.
  for (let t = Date.now(); !globalThis.unisonoResult && Date.now() - t < 20000;) await new Promise((r) => setTimeout(r, 20));
  assertApp('webpack bundle in Node', await withTimeout(globalThis.unisonoResult ?? Promise.resolve(), 20000));

  // -- 4. Chromium: the webpack bundle, and unisono/web without a bundler ---------------------------
  if (!fs.existsSync(CHROMIUM)) {
    if (process.env.CI === 'true') check(`${CHROMIUM} exists (CI=true)`, false);
    else console.log(`SKIPPED the Chromium half: ${CHROMIUM} not found`);
  } else {
    const { chromium } = require('playwright-core');
    const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'unisono-npm-chromium-'));
    const browser = await chromium.launchPersistentContext(userDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    try {
      for (const [name, page] of [['webpack bundle in Chromium', 'index.html'], ['Vite bundle in Chromium', 'vite/index.html'],
        ['esbuild bundle in Chromium', 'esbuild/index.html'],
        ['Rollup bundle in Chromium', 'rollup/index.html'],
        ['unisono/web (no bundler) in Chromium', 'web.html']]) {
        const p = await browser.newPage();
        const errors = [];
        p.on('pageerror', (e) => errors.push(String(e)));
        p.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
        await p.goto(`http://${base}/${page}`);
        let result;
        try {
          await p.waitForFunction(() => window.unisonoResult, null, { timeout: 20000 });
          result = await withTimeout(p.evaluate(() => window.unisonoResult), 20000);
        } catch (e) {
          result = { error: `${e.message}; page errors: ${errors.join(' | ')}` };
        }
        assertApp(name, result);
        await p.close();
      }
    } finally {
      await browser.close();
      fs.rmSync(userDir, { recursive: true, force: true });
    }
  }
} catch (e) {
  check('no exception in the driver', false, e?.stack ?? String(e));
} finally {
  server.proc?.kill('SIGTERM');
  if (args.includes('--keep')) console.log(`kept: ${project}`);
  else fs.rmSync(project, { recursive: true, force: true });
}

console.log(failures ? `${failures} failed` : 'all passed');
process.exit(failures ? 1 : 0);

/** The checks consumer/checks.mjs reports, for one way of running the app. */
function assertApp(name, r) {
  if (!r || r.error) {
    check(`${name}: runs`, false, r?.error ?? 'no result');
    return;
  }
  check(`${name}: every test vector, bit for bit`, r.vectors.cases === 1200 && r.vectors.failed === 0,
    `${r.vectors.cases} cases ${JSON.stringify(r.vectors.byKind)}; ${r.vectors.failed} failures ${r.vectors.first.join(' | ')}`);
  check(`${name}: positionAt`, r.position === 2000, `${r.position}`);
  const a = r.adapters ?? {};
  check(`${name}: the built-in adapters (adapters.js) load`,
    a.youtube === 'idle' && a.spotify === 'idle' && (a.media ?? 'idle') === 'idle'
      && (a.notMedia === undefined || /not a media element/.test(a.notMedia)),
    JSON.stringify(a));
  const s = r.session;
  check(`${name}: connects, creates a room, follows its clock`,
    s && s.state === 'open' && s.isHost && /^[0-9A-Z]{6}$/.test(s.code) && s.positionMs > 300 && s.positionMs < 1500
      && s.samples >= 5 && s.errorBound < 5,
    JSON.stringify(s));
}

function withTimeout(promise, ms) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms))]);
}

/** Starts the binary serving `webDir` on a free port; resolves to `host:port`. */
function startServer(s, webDir) {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'unisono-npm-data-'));
  s.proc = spawn(s.bin, ['serve', '--data-dir', data, '--listen', '127.0.0.1:0', '--web-dir', webDir],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  s.proc.on('exit', () => fs.rmSync(data, { recursive: true, force: true }));
  return new Promise((resolve, reject) => {
    let seen = '';
    const on = (d) => {
      seen += d;
      const m = seen.match(/listening on http:\/\/([0-9.:]+)/);
      if (m) resolve(m[1]);
    };
    s.proc.stdout.on('data', on);
    s.proc.stderr.on('data', on);
    setTimeout(() => reject(new Error(`no server: ${seen}`)), 15000);
  });
}
