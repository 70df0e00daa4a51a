'use strict';
// kqctl's bundle maps `node:child_process` here (package.json "bundle"): commander requires it when it loads,
// for executable subcommands kqctl does not have, and loading it (with net, dgram, streams) costs every kqctl
// start-up several ms. The real module loads on first use.
let real;
const load = () => (real ??= require('child_process'));
for (const name of ['spawn', 'spawnSync', 'exec', 'execSync', 'execFile', 'execFileSync', 'fork', 'ChildProcess']) {
  Object.defineProperty(exports, name, { enumerable: true, get: () => load()[name] });
}
