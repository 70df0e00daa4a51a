#!/usr/bin/env node
import '../dist/src/kqctl/main.js';
