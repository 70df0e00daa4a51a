#!/usr/bin/env node
// kqctl's entry is bin/kqctl.cjs (package.json "bin": CommonJS, with a code cache, starts faster). This name
// stays for callers that spawn bin/kqctl.js (kq's monitor page runs `kqctl remote start` through it).
import { createRequire } from 'node:module';

createRequire(import.meta.url)('./kqctl.cjs');
