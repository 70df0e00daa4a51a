/**
 * `npm run bench [-- --quick] [--only a,c] [--reps N] [--profile] [--no-write]` and `npm run bench -- --soak 10m`.
 * Peers: apt-get install -y task-spooler parallel povray. See bench/README.md.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseDuration } from '../src/common/duration.js';
import { ROOT } from './kq.js';
import { findPeers } from './peers.js';
import { loadavg1, machine } from './proc.js';
import { formatMarkdown, formatProfileBlock, formatSoak, formatText, replaceSection, type RunInfo } from './report.js';
import type { Context, ScenarioResult } from './scenario.js';
import { scenarioA } from './scenarios/a-true.js';
import { scenarioB } from './scenarios/b-povray.js';
import { scenarioC } from './scenarios/c-list.js';
import { scenarioD } from './scenarios/d-scale.js';
import { scenarioP } from './scenarios/p-pipeline.js';
import { scenarioS } from './scenarios/s-farm.js';
import { soak } from './scenarios/soak.js';
import { summarizeProfile } from './profile.js';

const SCENARIOS: Record<string, (ctx: Context) => Promise<ScenarioResult>> = { a: scenarioA, b: scenarioB, c: scenarioC, d: scenarioD, p: scenarioP, s: scenarioS };
const USAGE = `usage: npm run bench -- [--quick] [--only a,b,c,d,p,s] [--reps N] [--profile] [--kq-root DIR] [--farm-agents N] [--farm-tasks N] [--farm-render-ms 0,50,250] [--no-write] | --soak DURATION (e.g. 30s, 10m) | --rewrite-readme; --merge with --only replaces those scenarios in results.json`;

function parseArgs(argv: string[]) {
  const o = { quick: false, only: Object.keys(SCENARIOS), reps: 0, profile: false, write: true, soakMs: 0, kqRoot: undefined as string | undefined, rewrite: false, merge: false, farm: {} as NonNullable<Context['farm']> };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      return v!;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--only') o.only = value().split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
    else if (a === '--reps') o.reps = Number(value());
    else if (a === '--profile') o.profile = true;
    else if (a === '--no-write') o.write = false;
    else if (a === '--soak') o.soakMs = parseDuration(value());
    else if (a === '--kq-root') o.kqRoot = path.resolve(value());
    else if (a === '--rewrite-readme') o.rewrite = true;
    else if (a === '--merge') o.merge = true;
    else if (a === '--farm-agents') o.farm.agents = Number(value());
    else if (a === '--farm-tasks') o.farm.tasks = Number(value());
    else if (a === '--farm-render-ms') o.farm.renderMs = value().split(',').map(Number);
    else if (a === '--help' || a === '-h') { console.log(USAGE); process.exit(0); }
    else fail(`unknown argument "${a}"`);
  }
  for (const s of o.only) if (!SCENARIOS[s]) fail(`unknown scenario "${s}" (scenarios: ${Object.keys(SCENARIOS).join(', ')})`);
  if (!Number.isInteger(o.reps) || o.reps < 0) fail('--reps takes a whole number');
  for (const n of [o.farm.agents, o.farm.tasks, ...(o.farm.renderMs ?? [])]) if (n !== undefined && (!Number.isInteger(n) || n < 0)) fail('--farm-* take whole numbers');
  return o;
}

function fail(msg: string): never {
  process.stderr.write(`bench: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
const opts = parseArgs(args);
const peers = findPeers();
const log = (line: string) => process.stderr.write(`${line}\n`);
const profileDir = opts.profile ? fs.mkdtempSync(path.join(os.tmpdir(), 'kq-bench-profile-')) : undefined;
const ctx: Context = { quick: opts.quick, reps: opts.reps || (opts.quick ? 2 : 3), peers, profileDir, kqRoot: opts.kqRoot, farm: opts.farm, log };
const info: RunInfo = {
  date: new Date().toISOString(), mode: opts.quick ? 'quick' : 'full', args, machine: machine(),
  peers: Object.fromEntries(Object.entries(peers).map(([k, p]) => [k, p && { bin: p.bin, version: p.version }])),
  loadavgBefore: loadavg1(), profiled: opts.profile, kqRoot: opts.kqRoot ?? null,
};
for (const [name, p] of Object.entries(peers)) if (!p) log(`bench: ${name} not found: its rows are skipped (apt-get install -y task-spooler parallel povray)`);
const benchDir = path.join(ROOT, 'bench');

if (opts.soakMs > 0) {
  log(`soak for ${opts.soakMs / 1000}s with 4 agents`);
  const result = await soak(ctx, opts.soakMs);
  const t = formatSoak(result);
  console.log(`\nsoak ${result.durationS}s, ${result.agents} agents\n${t.text}\n${t.verdict}`);
  if (opts.write) {
    fs.writeFileSync(path.join(benchDir, 'soak-results.json'), JSON.stringify({ ...info, loadavgAfter: loadavg1(), soak: result }, null, 2) + '\n');
    replaceSection(path.join(benchDir, 'README.md'), 'soak', `### ${info.date.slice(0, 10)} — soak ${result.durationS}s, ${result.agents} agents\n\n${t.md}\n\n${t.verdict}.`);
  }
  process.exit(0);
}

if (opts.rewrite) {
  // Re-render the results section of bench/README.md from bench/results.json (after a change to the report).
  const saved = JSON.parse(fs.readFileSync(path.join(benchDir, 'results.json'), 'utf8')) as RunInfo & { scenarios: ScenarioResult[] };
  replaceSection(path.join(benchDir, 'README.md'), 'results', formatMarkdown(saved, saved.scenarios));
  log('rewrote the results section of bench/README.md from bench/results.json');
  process.exit(0);
}

const results: ScenarioResult[] = [];
for (const id of opts.only) {
  log(`\nscenario ${id}${opts.quick ? ' (quick)' : ''}…`);
  const started = Date.now();
  const load0 = loadavg1();
  try {
    const r = await SCENARIOS[id]!(ctx);
    r.ranAt = new Date(started).toISOString();
    r.load = [load0, loadavg1()];
    if (profileDir) {
      const dirs = [path.join(profileDir, id), ...(r.profiles ?? [])].filter((d, i, all) => all.indexOf(d) === i && fs.existsSync(d));
      const files = dirs.flatMap((d) => fs.readdirSync(d).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(d, f)));
      r.profiles = files;
      (r as ScenarioResult & { profileSummaries?: unknown }).profileSummaries = files.map((f) => summarizeProfile(f, 20));
    }
    results.push(r);
    console.log(formatText(r));
    if (profileDir) console.log(formatProfileBlock(r));
  } catch (err) {
    log(`scenario ${id} failed: ${(err as Error).stack}`);
    results.push({ id, title: `(${id}) failed`, rows: [], metrics: {}, floors: [], notes: [`failed: ${(err as Error).message}`] });
  }
  log(`scenario ${id} took ${((Date.now() - started) / 1000).toFixed(0)} s`);
}
info.loadavgAfter = loadavg1();

const floors = results.flatMap((r) => r.floors.map((f) => ({ scenario: r.id, ...f })));
console.log(`\nFloors: ${floors.filter((f) => f.ok).length} of ${floors.length} met`);
for (const f of floors) console.log(`  ${f.ok ? 'MET ' : 'MISS'} (${f.scenario}) ${f.name}: ${f.value} (${f.kind === 'max' ? '≤' : '≥'} ${f.limit})`);
if (profileDir) console.log(`\nprofiles: ${profileDir} (node dist/bench/profile.js DIR for a summary)`);

if (opts.write) {
  const partial = opts.quick || opts.profile || opts.kqRoot || (opts.only.length < Object.keys(SCENARIOS).length && !opts.merge);
  const file = path.join(benchDir, partial ? 'results-partial.json' : 'results.json');
  let all = results;
  if (opts.merge && !partial) {
    // Re-ran some scenarios (e.g. after a fix): replace them in results.json, keep the others.
    const saved = JSON.parse(fs.readFileSync(file, 'utf8')) as { scenarios: ScenarioResult[] };
    all = saved.scenarios.map((s) => results.find((r) => r.id === s.id) ?? s);
    for (const r of results) if (!all.includes(r)) all.push(r);
    all.sort((a, b) => a.id.localeCompare(b.id));
  }
  const allFloors = all.flatMap((r) => r.floors.map((f) => ({ scenario: r.id, ...f })));
  fs.writeFileSync(file, JSON.stringify({ ...info, scenarios: all, floors: allFloors }, null, 2) + '\n');
  if (file.endsWith('results.json')) replaceSection(path.join(benchDir, 'README.md'), 'results', formatMarkdown(info, all));
  log(`\nwrote ${path.relative(ROOT, file)}${file.endsWith('results.json') ? ' and the results section of bench/README.md' : ''}`);
}
process.exit(0);
