#!/usr/bin/env node
// kqctl runs from one bundled CommonJS file, loaded with require(): loading ~40 ES modules one by one, and
// scanning CommonJS dependencies for ESM exports, was most of its start-up time.
import { createRequire } from 'node:module';

createRequire(import.meta.url)('../dist/kqctl.cjs');
