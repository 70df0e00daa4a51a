/** What every scenario gets and returns. */
import type { Peer } from './peers.js';
import { summarize, type Summary } from './stats.js';

export interface Context {
  quick: boolean;
  /** Repetitions per tool (each rep runs every tool once, interleaved, so drift hits all alike). */
  reps: number;
  peers: Record<string, Peer | null>;
  /** When set, kq and its agents write CPU profiles under this directory (one folder per scenario). */
  profileDir?: string;
  /** Benchmark another build of kq (a checkout with bin/ and dist/), e.g. to try a fix; default: this one. */
  kqRoot?: string;
  /** Sizes of the simulated farm (scenario s), when not the defaults. */
  farm?: { agents?: number; tasks?: number; renderMs?: number[] };
  log(line: string): void;
}

export interface Row {
  tool: string;
  /** kq, or a peer (the ratio column is relative to the fastest peer). */
  kind: 'kq' | 'peer' | 'floor' | 'reference';
  samples: number[];
  summary: Summary;
  /** Work items per sample (tasks, frames), for a per-item column. */
  items?: number;
  note?: string;
  error?: string;
}

export interface Floor {
  name: string;
  value: number;
  limit: number;
  /** 'max': value must be ≤ limit; 'min': value must be ≥ limit. */
  kind: 'max' | 'min';
  unit: string;
  ok: boolean;
  /** The same ratio from the fastest runs (min ÷ min): less sensitive to load from elsewhere on the machine. */
  minRatio?: number;
}

export interface ScenarioResult {
  id: string;
  title: string;
  rows: Row[];
  /** Extra measurements that are not a per-tool timing (sizes, RSS, latency percentiles). */
  metrics: Record<string, number | string | null>;
  floors: Floor[];
  notes: string[];
  profiles?: string[];
  /** When it ran and the 1-minute load average before and after (set by run.ts). */
  ranAt?: string;
  load?: [number, number];
}

export function row(tool: string, kind: Row['kind'], samples: number[], extra: Partial<Row> = {}): Row {
  return { tool, kind, samples: samples.map((s) => Math.round(s * 100) / 100), summary: summarize(samples), ...extra };
}

export function floor(name: string, value: number, limit: number, kind: 'max' | 'min', unit = '×', minRatio?: number): Floor {
  const f: Floor = { name, value: Math.round(value * 1000) / 1000, limit, kind, unit, ok: kind === 'max' ? value <= limit : value >= limit };
  if (minRatio !== undefined && Number.isFinite(minRatio)) f.minRatio = Math.round(minRatio * 1000) / 1000;
  return f;
}

/** Min of `a` over min of `b`. */
export function minRatio(rows: Row[], a: string, b: string): number {
  const ra = rows.find((r) => r.tool === a);
  const rb = rows.find((r) => r.tool === b);
  return ra && rb ? ra.summary.min / rb.summary.min : NaN;
}

/** Median of `a` over median of `b` (NaN if either is missing). */
export function ratio(rows: Row[], a: string, b: string): number {
  const ra = rows.find((r) => r.tool === a);
  const rb = rows.find((r) => r.tool === b);
  return ra && rb ? ra.summary.median / rb.summary.median : NaN;
}

/** Run each tool once per rep, interleaved; a tool that throws keeps its error and is skipped afterwards. */
export async function interleave(ctx: Context, tools: Array<{ name: string; run: () => Promise<number> }>, reps = ctx.reps): Promise<Map<string, { samples: number[]; error?: string }>> {
  const out = new Map(tools.map((t) => [t.name, { samples: [] as number[], error: undefined as string | undefined }]));
  for (let rep = 1; rep <= reps; rep++) {
    for (const t of tools) {
      const o = out.get(t.name)!;
      if (o.error) continue;
      try {
        const ms = await t.run();
        o.samples.push(ms);
        ctx.log(`  rep ${rep}/${reps} ${t.name}: ${ms.toFixed(1)} ms`);
      } catch (err) {
        o.error = (err as Error).message.split('\n')[0]!.slice(0, 300);
        ctx.log(`  rep ${rep}/${reps} ${t.name}: FAILED ${o.error}`);
      }
    }
  }
  return out;
}
