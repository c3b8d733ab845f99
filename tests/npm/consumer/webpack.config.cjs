// webpack 5 configuration of the consumer project: all `unisono` needs is
// `experiments.asyncWebAssembly` (the bundler build imports its .wasm as a module); the .jsonl
// rule only serves the test vectors to the app. `env.target`: 'web' (default) or 'node'.
const path = require('node:path');

module.exports = (env = {}) => ({
  mode: 'production',
  target: env.target ?? 'web',
  context: __dirname,
  entry: './app.mjs',
  output: { path: path.resolve(__dirname, env.out ?? 'dist'), filename: 'main.js', clean: true },
  experiments: { asyncWebAssembly: true },
  module: { rules: [{ test: /\.jsonl$/, type: 'asset/source' }] },
  performance: { hints: false },
});
