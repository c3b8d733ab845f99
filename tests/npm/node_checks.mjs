// What the Node consumers (consumer/require.cjs, consumer/import.mjs) check once they hold the
// installed package: it resolved to the package's Node build, every test vector matches bit for
// bit (and a vector off by one ulp is caught), and a full room session against the real binary
// (tests/browser/npm_client.mjs) passes. Lives in the repository, so the session can use the
// repository's `ws`; only `unisono` itself is loaded from the consumer project.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runSession } from '../browser/npm_client.mjs';
import { checkAllVectors, tamperOneUlp, tamperRev } from './vectors.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Resolves to the number of failed checks. */
export async function nodeChecks(unisono, { how, resolved }) {
  let failures = 0;
  const check = (name, ok, detail = '') => {
    console.log(`${ok ? 'PASS' : 'FAIL'} [${how}] ${name} ${detail}`);
    if (!ok) failures++;
  };
  check("resolves to the package's Node build", /node[\\/]unisono\.js$/.test(resolved), resolved);
  const text = fs.readFileSync(path.join(root, 'core/tests/vectors/core-v1.jsonl'), 'utf8');
  const v = checkAllVectors(unisono, text);
  check('every test vector, bit for bit (PlaybackClock, positionAt, Estimator, Drift)',
    v.cases === 1200 && v.failures.length === 0,
    `${v.cases} cases ${JSON.stringify(v.byKind)}; ${v.failures.length} failures ${v.failures.slice(0, 3).join(' | ')}`);
  const t = checkAllVectors(unisono, tamperOneUlp(text));
  check('a vector moved by one ulp is caught (by the clock and by positionAt)',
    t.failures.some((f) => f.includes('clock.positionAt')) && t.failures.some((f) => f.includes('positionAt(…')),
    `${t.failures.length} failures`);
  const r = checkAllVectors(unisono, tamperRev(text));
  check('a transition with the wrong rev is caught', r.failures.some((f) => f.includes('state')), `${r.failures.length} failures`);
  failures += await runSession(unisono, { bin: process.env.UNISONO_BIN ?? 'target/debug/unisono', label: how });
  return failures;
}
