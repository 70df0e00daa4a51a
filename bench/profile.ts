/**
 * Summarise V8 .cpuprofile files: top functions by self time, and self time per package/module,
 * so a profile can be read in a terminal (`node dist/bench/profile.js DIR|FILE… [--top N]`).
 */
import fs from 'node:fs';
import path from 'node:path';

interface CallFrame { functionName: string; url: string; lineNumber: number; columnNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; hitCount?: number; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples?: number[]; timeDeltas?: number[] }

export interface ProfileEntry { name: string; where: string; selfMs: number; pct: number }
export interface ProfileSummary {
  file: string;
  wallMs: number;
  /** Time the thread was busy (wall minus V8's "(idle)" samples). */
  busyMs: number;
  top: ProfileEntry[];
  byModule: Array<{ module: string; selfMs: number; pct: number }>;
}

/** Self time per node, from the sample stream (exact) rather than hitCount × mean interval. */
function selfTimes(p: CpuProfile): Map<number, number> {
  const self = new Map<number, number>();
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    // timeDeltas[i] is the time *before* sample i; attribute the following delta to sample i.
    const dt = (deltas[i + 1] ?? 0) / 1000;
    self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + dt);
  }
  return self;
}

/** A short, stable label for where code lives: a package name, a kq source file, or a node internal. */
export function moduleOf(url: string): string {
  if (!url) return '(native / vm)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith('node:')) return url;
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return `kq:${url.slice(dist + '/dist/'.length)}`;
  return path.basename(url);
}

export function summarizeProfile(file: string, topN = 25): ProfileSummary {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const self = selfTimes(p);
  const wallMs = (p.endTime - p.startTime) / 1000;
  const byFn = new Map<string, ProfileEntry>();
  const byModule = new Map<string, number>();
  let idle = 0;
  for (const node of p.nodes) {
    const ms = self.get(node.id) ?? 0;
    if (ms === 0) continue;
    const cf = node.callFrame;
    const name = cf.functionName || '(anonymous)';
    if (name === '(idle)') { idle += ms; continue; }
    const where = cf.url ? `${moduleOf(cf.url)}:${cf.lineNumber + 1}` : '';
    const key = `${name}@${where}`;
    const e = byFn.get(key) ?? { name, where, selfMs: 0, pct: 0 };
    e.selfMs += ms;
    byFn.set(key, e);
    const mod = name === '(garbage collector)' ? '(garbage collector)' : name === '(program)' ? '(program: native, outside JS)' : moduleOf(cf.url);
    byModule.set(mod, (byModule.get(mod) ?? 0) + ms);
  }
  const busyMs = wallMs - idle;
  const top = [...byFn.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, topN)
    .map((e) => ({ ...e, selfMs: round(e.selfMs), pct: round((100 * e.selfMs) / busyMs) }));
  const mods = [...byModule.entries()].sort((a, b) => b[1] - a[1]).slice(0, topN)
    .map(([module, ms]) => ({ module, selfMs: round(ms), pct: round((100 * ms) / busyMs) }));
  return { file, wallMs: round(wallMs), busyMs: round(busyMs), top, byModule: mods };
}

const round = (n: number) => Math.round(n * 10) / 10;

export function formatProfile(s: ProfileSummary): string {
  const lines = [`${path.basename(s.file)}: wall ${s.wallMs} ms, busy (not idle) ${s.busyMs} ms`, '  top self time:'];
  for (const e of s.top) lines.push(`    ${e.selfMs.toFixed(1).padStart(9)} ms ${e.pct.toFixed(1).padStart(5)}%  ${e.name}  ${e.where}`);
  lines.push('  self time by module:');
  for (const m of s.byModule) lines.push(`    ${m.selfMs.toFixed(1).padStart(9)} ms ${m.pct.toFixed(1).padStart(5)}%  ${m.module}`);
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  const args = process.argv.slice(2);
  const topAt = args.indexOf('--top');
  const topN = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 25;
  const files = args.flatMap((a) => fs.statSync(a).isDirectory()
    ? fs.readdirSync(a).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(a, f)) : [a]);
  for (const f of files) console.log(formatProfile(summarizeProfile(f, topN)) + '\n');
}
