/**
 * `kqctl watch`: the jobs table, live, redrawn in place on the terminal's alternate screen. Redraws are
 * driven by kq's broadcasts (every job's topic and the queue's), not by polling; q or Ctrl-C quits.
 */
import type { Command } from 'commander';
import { Topics } from '../../protocol/constants.js';
import type { AgentInfo, JobSummary } from '../../protocol/index.js';
import { CliError, EXIT } from '../exit-codes.js';
import { jobsTable } from '../format.js';
import { withClient } from '../connect.js';
import { fancy } from '../tty.js';
import type { KqClient } from '../client.js';

/** Bursts of broadcasts (a 1000-task job starting) are drawn once per this many ms. */
const REDRAW_MS = 150;

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('watch')
    .description('a live jobs table on the terminal, redrawn as kq announces changes (q or Ctrl-C quits)'))
    .action(withClient(async (client) => {
      if (!process.stdout.isTTY || !process.stdin.isTTY) throw new CliError(EXIT.usage, 'kqctl watch needs a terminal; scripts can use kqctl list or kqctl wait');
      return watch(client);
    }));
}

async function watch(client: KqClient): Promise<number> {
  const events = await client.subscribe([Topics.queue], [Topics.allJobs]);
  const out = process.stdout;
  const colour = fancy(out);
  let quit: () => void = () => undefined;
  const quitting = new Promise<void>((resolve) => { quit = resolve; });
  const onKey = (key: Buffer) => {
    if (key.includes(0x03) || key.includes(0x71) || key.includes(0x51)) quit(); // Ctrl-C, q, Q
  };
  process.stdin.setRawMode(true);
  process.stdin.on('data', onKey);
  out.write('\x1b[?1049h\x1b[?25l'); // alternate screen, cursor hidden
  let timer: NodeJS.Timeout | null = null;
  let drawing = false;
  let again = false;
  const draw = async () => {
    timer = null;
    if (drawing) { again = true; return; }
    drawing = true;
    try {
      // One request at a time: a socket has one pending receive.
      const jobs = await client.request<JobSummary[]>('list', {});
      const ping = await client.request<{ queuePaused?: boolean }>('ping', {});
      const agents = await client.request<AgentInfo[]>('agents', {});
      out.write('\x1b[H\x1b[2J' + screen(jobs, agents, ping.queuePaused ?? false, colour, out.rows || 24, out.columns || 80));
    } catch (err) {
      out.write(`\x1b[H\x1b[2Jkqctl watch: ${(err as Error).message}\n`);
    } finally {
      drawing = false;
      if (again) { again = false; schedule(); }
    }
  };
  const schedule = () => { timer ??= setTimeout(() => void draw(), REDRAW_MS); };
  const onResize = () => schedule();
  out.on('resize', onResize);
  try {
    await draw();
    const reader = (async () => {
      for await (const _ of events) schedule();
    })();
    await Promise.race([quitting, reader]);
  } finally {
    if (timer) clearTimeout(timer);
    out.off('resize', onResize);
    process.stdin.off('data', onKey);
    process.stdin.setRawMode(false);
    process.stdin.pause();
    out.write('\x1b[?25h\x1b[?1049l'); // cursor back, normal screen as it was
  }
  return EXIT.ok;
}

function screen(jobs: JobSummary[], agents: AgentInfo[], queuePaused: boolean, colour: boolean, rows: number, columns: number): string {
  const count = (s: string) => jobs.filter((j) => j.state === s).length;
  const busy = agents.filter((a) => a.state === 'busy').length;
  const live = agents.filter((a) => a.state === 'idle' || a.state === 'busy').length;
  const head = `kq: ${jobs.length} jobs, ${count('Running')} running, ${count('Waiting')} waiting, ${count('Blocked')} blocked · agents ${busy}/${live} busy`
    + (queuePaused ? ' · QUEUE PAUSED (kqctl resume)' : '') + ' · q quits';
  // Newest first, as many as fit.
  const shown = [...jobs].reverse().slice(0, Math.max(1, rows - 3));
  const lines = jobsTable(shown, colour).split('\n').map((l) => clip(l, columns));
  return [clip(head, columns), '', ...lines].join('\n');
}

/** Cut a line to the terminal's width without counting colour escapes. */
function clip(line: string, columns: number): string {
  let visible = 0;
  let out = '';
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '\x1b') {
      const end = line.indexOf('m', i);
      out += line.slice(i, end + 1);
      i = end;
      continue;
    }
    if (visible >= columns - 1) continue;
    out += line[i];
    visible++;
  }
  return out;
}
