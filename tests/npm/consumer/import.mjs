// An ES module consumer: named imports from 'unisono' (they must link against the package's
// Node build), then the Node checks (tests/npm/node_checks.mjs, path in UNISONO_NODE_CHECKS).
import { Drift, Estimator, PlayerSync, UnisonoClient, PlaybackClock, positionAt } from 'unisono';

const { nodeChecks } = await import(process.env.UNISONO_NODE_CHECKS);
const failed = await nodeChecks(
  { Drift, Estimator, PlayerSync, UnisonoClient, PlaybackClock, positionAt },
  { how: 'import', resolved: import.meta.resolve('unisono') },
);
process.exit(failed ? 1 : 0);
