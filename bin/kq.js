#!/usr/bin/env node
import '../dist/src/kq/main.js';
