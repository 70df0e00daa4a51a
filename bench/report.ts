/** Tables for the terminal and for bench/README.md, and the results file. */
import fs from 'node:fs';
import type { Row, ScenarioResult } from './scenario.js';
import type { SoakResult } from './scenarios/soak.js';
import { formatMs } from './stats.js';

export interface RunInfo {
  date: string;
  mode: 'full' | 'quick';
  args: string[];
  machine: Record<string, unknown>;
  peers: Record<string, { bin: string; version: string | null } | null>;
  loadavgBefore: number;
  loadavgAfter?: number;
  profiled: boolean;
  kqRoot: string | null;
}

/** The fastest peer by median (what the ratio columns divide by). */
function fastestPeer(rows: Row[]): Row | null {
  const peers = rows.filter((r) => r.kind === 'peer' && r.samples.length > 0);
  return peers.sort((a, b) => a.summary.median - b.summary.median)[0] ?? null;
}

function cells(s: ScenarioResult): { head: string[]; body: string[][] } {
  const fastest = fastestPeer(s.rows);
  const head = ['tool', 'runs', 'min', 'median', 'per item', fastest ? `× ${fastest.tool} (per item)` : '× fastest peer'];
  const body = s.rows.map((r) => {
    if (r.samples.length === 0) return [r.tool, '0', '-', '-', '-', `FAILED (${(r.error ?? 'no samples').slice(0, 40)}…)`];
    const per = r.items ? formatMs(r.summary.median / r.items) : '-';
    // Per item, so a row with fewer items (the kqctl loop) compares fairly.
    const x = fastest ? `${((r.summary.median / (r.items ?? 1)) / (fastest.summary.median / (fastest.items ?? 1))).toFixed(2)}×` : '-';
    return [r.tool + (r.note ? ` (${r.note})` : ''), String(r.samples.length), formatMs(r.summary.min), formatMs(r.summary.median), per, x];
  });
  return { head, body };
}

function textTable(head: string[], body: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

function mdTable(head: string[], body: string[][]): string {
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  return [`| ${head.map(esc).join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`,
    ...body.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

function floorLines(s: ScenarioResult): string[] {
  return s.floors.map((f) => {
    const v = Number.isFinite(f.value) ? `${f.value}${f.unit === '×' ? '×' : ` ${f.unit}`}` : 'not measured';
    const mins = f.minRatio !== undefined ? `; fastest runs: ${f.minRatio}×` : '';
    return `${f.ok ? 'MET ' : 'MISS'} ${f.name}: ${v} (floor ${f.kind === 'max' ? '≤' : '≥'} ${f.limit}${f.unit === '×' ? '×' : ` ${f.unit}`}; medians${mins})`;
  });
}

function errorLines(s: ScenarioResult): string[] {
  return s.rows.filter((r) => r.error).map((r) => `${r.tool} failed: ${r.error}`);
}

function metricLine(s: ScenarioResult): string {
  return Object.entries(s.metrics).map(([k, v]) => `${k}=${v ?? '-'}`).join(', ');
}

export function formatText(s: ScenarioResult): string {
  const { head, body } = cells(s);
  const parts = [`\n${s.title}`, body.length ? textTable(head, body) : '(no rows)'];
  if (Object.keys(s.metrics).length) parts.push(metricLine(s));
  parts.push(...floorLines(s), ...s.notes, ...errorLines(s));
  return parts.join('\n');
}

export function formatMarkdown(info: RunInfo, results: ScenarioResult[]): string {
  const out = [`### ${info.date.slice(0, 10)} — ${info.mode} run${info.profiled ? ' (profiled: timings inflated)' : ''}`, '',
    `Machine: ${info.machine.cpus} × ${info.machine.cpuModel}, ${info.machine.memGb} GB, Linux ${info.machine.kernel}, Node ${info.machine.node}. ` +
    `Load average ${info.loadavgBefore} before, ${info.loadavgAfter ?? '-'} after (other work on the machine inflates every tool alike; ratios are from one run, interleaved).`,
    `Peers: ${Object.entries(info.peers).filter(([k]) => k !== 'sh').map(([k, p]) => `${k} ${p ? p.version ?? '?' : 'missing'}`).join(', ')}.`, ''];
  for (const s of results) {
    const when = s.ranAt ? ` — ${s.ranAt.slice(0, 16).replace('T', ' ')} UTC, load ${s.load?.[0] ?? '-'} → ${s.load?.[1] ?? '-'}` : '';
    out.push(`#### ${s.title}${when}`, '');
    const { head, body } = cells(s);
    if (body.length) out.push(mdTable(head, body), '');
    if (Object.keys(s.metrics).length) out.push(`Metrics: ${metricLine(s)}`, '');
    for (const f of floorLines(s)) out.push(`- ${f}`);
    for (const n of [...s.notes, ...errorLines(s)]) out.push(`- ${n}`);
    out.push('');
  }
  return out.join('\n');
}

export function formatSoak(r: SoakResult): { text: string; md: string; verdict: string } {
  const head = ['t (s)', 'kq RSS MB', 'kq fds', 'agent RSS MB', 'agent fds', 'tasks done', 'waiting'];
  const body = r.samples.map((s) => [String(s.atS), String(s.kqRssMb), String(s.kqFds), s.agentRssMb.join('/'), s.agentFds.join('/'), String(s.tasksDone), String(s.waitingTasks)]);
  const v = r.verdict;
  return { text: textTable(head, body), md: mdTable(head, body),
    verdict: `${v.leak ? 'POSSIBLE LEAK' : 'no growth'}: over the second half, kq RSS ${v.kqRssGrowthMb >= 0 ? '+' : ''}${v.kqRssGrowthMb} MB, kq fds ${v.kqFdGrowth >= 0 ? '+' : ''}${v.kqFdGrowth}, ` +
      `agent RSS ${v.agentRssGrowthMb >= 0 ? '+' : ''}${v.agentRssGrowthMb} MB (mean), agent fds ${v.agentFdGrowth >= 0 ? '+' : ''}${v.agentFdGrowth}; agents replaced: ${v.agentsReplaced}` };
}

/** Replace the text between two marker comments (appending the block if the markers are missing). */
export function replaceSection(file: string, name: string, body: string): void {
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const block = `${start}\n${body.trim()}\n${end}`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  fs.writeFileSync(file, i >= 0 && j > i ? text.slice(0, i) + block + text.slice(j + end.length) : `${text.trimEnd()}\n\n${block}\n`);
}

/** Top self-time functions of each profile of a scenario (run with --profile). */
export function formatProfileBlock(s: ScenarioResult): string {
  const sums = (s as ScenarioResult & { profileSummaries?: Array<import('./profile.js').ProfileSummary> }).profileSummaries ?? [];
  return sums.map((p) => {
    const top = p.top.slice(0, 12).map((e) => `    ${e.selfMs.toFixed(0).padStart(7)} ms ${e.pct.toFixed(1).padStart(5)}%  ${e.name}  ${e.where}`);
    const mods = p.byModule.slice(0, 8).map((m) => `${m.module} ${m.pct.toFixed(0)}%`).join(', ');
    return `  profile ${p.file.split('/').slice(-2).join('/')}: busy ${p.busyMs.toFixed(0)} of ${p.wallMs.toFixed(0)} ms\n${top.join('\n')}\n    by module: ${mods}`;
  }).join('\n');
}
