#!/usr/bin/env node
'use strict';
// kqctl runs from one bundled CommonJS file (dist/kqctl.cjs, built by `npm run build`): loading ~40 ES modules
// one by one was most of its start-up time. This entry is CommonJS too (no ESM loader for one require), and
// compiles the bundle with a V8 code cache kept next to it (Node 20 has no module.enableCompileCache).
//
// The cache, dist/kqctl.cjs.cache, is one header line (the Node/V8 it was made by, the bundle's size and
// mtime, the payload's length) and V8's data (checksummed). Anything that does not match exactly (another Node,
// a rebuilt bundle, a truncated or damaged file) is ignored, and the bundle compiled from source; kqctl then
// writes a fresh cache when it exits (atomically: a temp file renamed over it). Where dist/ is read-only (a
// global install owned by root), kqctl runs without one.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const Module = require('node:module');
const v8 = require('node:v8');

// V8 checks a code cache's version, flags and source length, but its payload checksum only with this flag
// (on by default in debug builds only): a damaged cache is then rejected, not run.
v8.setFlagsFromString('--verify-snapshot-checksum');

const bundle = path.join(__dirname, '..', 'dist', 'kqctl.cjs');
const cacheFile = `${bundle}.cache`;

function readCache(key) {
  let raw;
  try {
    raw = fs.readFileSync(cacheFile);
  } catch {
    return undefined;
  }
  const nl = raw.indexOf(10);
  if (nl < 0 || nl > 512) return undefined;
  const payload = raw.subarray(nl + 1);
  return raw.toString('latin1', 0, nl) === `${key} ${payload.length}` ? payload : undefined;
}

function writeCache(key, script) {
  const tmp = `${cacheFile}.${process.pid}.tmp`;
  try {
    const payload = script.createCachedData();
    // 'wx': a file already there (planted, or left by a crashed kqctl of the same pid) is never written through.
    fs.writeFileSync(tmp, Buffer.concat([Buffer.from(`${key} ${payload.length}\n`, 'latin1'), payload]), { mode: 0o644, flag: 'wx' });
  } catch {
    return;
  }
  try {
    fs.renameSync(tmp, cacheFile);
  } catch {
    try { fs.unlinkSync(tmp); } catch { /* gone */ }
  }
}

const source = fs.readFileSync(bundle, 'utf8');
const stat = fs.statSync(bundle);
const key = `kqctl-cache/1 ${process.version} ${process.arch} ${process.versions.v8} ${stat.size} ${stat.mtimeMs}`;
const cachedData = readCache(key);
// import() inside the bundle resolves as in a module of the main context (Node ≥ 20.16 / 21.7 only: the
// bundle itself uses require for Node's modules).
const script = new vm.Script(Module.wrap(source), { filename: bundle, cachedData, importModuleDynamically: vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER });
if (cachedData === undefined || script.cachedDataRejected) {
  // After the command ran: the cache then holds the functions it compiled on the way, not only the top level.
  process.once('exit', () => writeCache(key, script));
}
const mod = new Module(bundle, module);
mod.filename = bundle;
mod.paths = Module._nodeModulePaths(path.dirname(bundle));
require.cache[bundle] = mod;
script.runInThisContext()(mod.exports, Module.createRequire(bundle), mod, bundle, path.dirname(bundle));
mod.loaded = true;
