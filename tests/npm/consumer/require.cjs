// A CommonJS consumer: `require('unisono')` from this project's node_modules, then the Node
// checks (tests/npm/node_checks.mjs, path in UNISONO_NODE_CHECKS).
const unisono = require('unisono');

import(process.env.UNISONO_NODE_CHECKS).then(
  async ({ nodeChecks }) => {
    const failed = await nodeChecks(unisono, { how: 'require', resolved: require.resolve('unisono') });
    process.exit(failed ? 1 : 0);
  },
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
