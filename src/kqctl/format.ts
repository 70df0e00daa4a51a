/**
 * Output for people (aligned tables) and for scripts (--json: the same data the table shows). Every value
 * in a table or a detail view is shown through printable(): names, commands, hosts and reasons come from
 * others and must not act on the terminal (issue 11 #6). --json prints the exact data.
 */
import { printable } from '../common/printable.js';
import type { AgentInfo, JobDetail, JobSummary } from '../protocol/index.js';
import type { AutoscaleStatus } from '../slurm/autoscaler.js';

export function printJson(data: unknown): void {
  process.stdout.write(JSON.stringify(data, null, 2) + '\n');
}

/**
 * An aligned table. `paint` may wrap a body cell, already padded, in terminal colours (a TTY only): the
 * alignment is computed on the plain text, so colours never shift a column.
 */
export function table(headers: string[], cells: string[][], paint?: (row: number, col: number, padded: string) => string): string {
  const rows = cells.map((r) => r.map(printable));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[], row: number) => {
    const text = cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
    if (!paint || row < 0) return text;
    return cells.map((c, i) => paint(row, i, i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  };
  return [line(headers, -1), ...rows.map((r, i) => line(r, i))].join('\n') + '\n';
}

/** SGR colours of job states on a terminal. */
const STATE_COLOURS: Record<string, string> = {
  Running: '36', Waiting: '33', Blocked: '35', Completed: '32', Failed: '31;1', Cancelled: '90',
};

/** A job's state, and `(paused)` when kqctl pause holds it. */
export const stateText = (j: Pick<JobSummary, 'state' | 'paused'>) => (j.paused ? `${j.state} (paused)` : j.state);

/** `2026-11-25 12:34:56` in local time; `-` for none. */
export function when(iso: string | null): string {
  if (!iso) return '-';
  const d = new Date(iso);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Done/total: frames (`3/12`), or tasks for a job without frames (`0/1 task`, never `0/0`). */
export function doneOfTotal(j: JobSummary): string {
  if (j.framesTotal > 0) return `${j.framesDone}/${j.framesTotal}`;
  const total = Object.values(j.tasks).reduce((a, b) => a + b, 0);
  return `${j.tasks.completed}/${total} task${total === 1 ? '' : 's'}`;
}

/** Done/total, and while running the percent parsed from render logs: `3/12 31%`. */
export const progress = (j: JobSummary) => `${doneOfTotal(j)}${j.state === 'Running' ? ` ${Math.floor(j.progress ?? 0)}%` : ''}`;

/** The jobs table; `colour` (a terminal without NO_COLOR) paints the State column. */
export function jobsTable(jobs: JobSummary[], colour = false): string {
  const paint = colour ? (row: number, col: number, padded: string) => {
    if (col !== 2) return padded;
    const code = STATE_COLOURS[jobs[row]!.state];
    const text = padded.trimEnd();
    return code ? `\x1b[${code}m${text}\x1b[0m${padded.slice(text.length)}` : padded;
  } : undefined;
  return table(['Id', 'Name', 'State', 'Progress', 'Submitted', 'Completed', 'Log File'],
    jobs.map((j) => [String(j.id), j.name, stateText(j), progress(j), when(j.submittedAt), when(j.completedAt), j.logFile]), paint);
}

export function framesText(frames: number[] | null): string {
  if (!frames || frames.length === 0) return '-';
  return frames.length === 1 ? String(frames[0]) : `${frames[0]}-${frames[frames.length - 1]}`;
}

export function jobDetail(j: JobDetail): string {
  const fields: Array<[string, string]> = [
    ['Id', String(j.id)], ['Name', j.name], ['State', stateText(j)], ['Progress', `${doneOfTotal(j)}${j.framesTotal > 0 ? ' frames' : ''}, ${Math.floor(j.progress ?? 0)}%`],
    ['Command', JSON.stringify(j.argv)], ['Frames', j.frameSpec ?? '-'], ['Chunk', String(j.chunk)], ['Priority', String(j.priority)],
    ['Attempts', `up to ${j.maxAttempts} per task`], ['Timeout', j.timeoutMs ? `${j.timeoutMs / 1000}s` : '-'],
    ['Cwd', j.cwd ?? '-'], ['Output', j.output ?? '-'], ['Submitted', when(j.submittedAt)], ['Completed', when(j.completedAt)], ['Log File', j.logFile],
    ['Blocklist', j.blocklist.length ? j.blocklist.join(', ') : '-'],
  ];
  // Only for jobs submitted --after: other jobs' detail stays as it was.
  if (j.after?.length) fields.splice(3, 0, ['After', `${j.after.join(', ')}${j.state === 'Blocked' ? ' (Blocked until they have all Completed)' : ''}`]);
  const head = fields.map(([k, v]) => `${(k + ':').padEnd(11)} ${printable(v)}`).join('\n') + '\n\n';
  return head + table(['Task', 'Frames', 'State', 'Attempts', 'Host', 'Exit', 'Reason'],
    j.taskList.map((t) => [String(t.seq + 1), framesText(t.frames), t.state, String(t.attempts), t.host ?? '-',
      t.exitCode === null ? (t.signal ?? '-') : String(t.exitCode), t.reason ?? '']))
    + (j.tasksOmitted > 0 ? `… and ${j.tasksOmitted} more tasks (not listed)\n` : '')
    + failures(j);
}

/** Each failed task: how its last run ended, where, and the last lines it wrote to stderr. */
function failures(j: JobDetail): string {
  const failed = j.taskList.filter((t) => t.state === 'failed');
  if (failed.length === 0) return '';
  const shown = failed.slice(0, MAX_FAILURES_SHOWN);
  const blocks = shown.map((t) => {
    const frames = t.frames.length === 0 ? '' : t.frames.length === 1 ? ` (frame ${t.frames[0]})` : ` (frames ${framesText(t.frames)})`;
    const head = `Task ${t.seq + 1}${frames} failed: ${t.reason ?? (t.signal ? `killed by ${t.signal}` : `exit code ${t.exitCode}`)}` +
      `${t.host ? ` on ${t.host}` : ''}, after ${t.attempts} ${t.attempts === 1 ? 'run' : 'runs'}`;
    const tail = (t.stderrTail ?? []).map((l) => `    | ${l}`);
    return [printable(head), ...(tail.length ? ['  last stderr lines:', ...tail.map(printable)] : ['  (it wrote nothing to stderr)'])].join('\n');
  });
  const more = failed.length > shown.length ? `\n… and ${failed.length - shown.length} more failed tasks (kqctl show --json ${j.id})` : '';
  return `\nFailures:\n${blocks.join('\n')}${more}\n`;
}

const MAX_FAILURES_SHOWN = 5;

export function agentsTable(agents: AgentInfo[]): string {
  // The Slurm column (job_task@node) only when some agent runs as a Slurm job.
  const slurm = agents.some((a) => a.slurm);
  return table(['Agent', 'Host', 'Pid', 'Local', 'State', 'Job', 'Frames', 'Last Seen', ...(slurm ? ['Slurm'] : [])],
    agents.map((a) => [a.id, a.host, String(a.pid), a.local ? 'yes' : 'no', a.state, a.jobId === null ? '-' : String(a.jobId),
      framesText(a.frames), when(a.lastSeen), ...(slurm ? [slurmText(a.slurm)] : [])]));
}

/** The autoscaler's line under the agents table. */
export function slurmAutoscaleText(s: AutoscaleStatus): string {
  const pending = s.pending ? `, ${s.pending} pending (${s.pendingReasons.join(', ')})` : '';
  const last = s.lastDecision ? `; last: ${s.lastDecision}` : '';
  return `Slurm autoscale: ${s.agents} agent job(s)${pending}; min ${s.min}, max ${s.max}, idle ${s.idleMs / 1000}s` +
    `${s.partition ? `, partition ${s.partition}` : ''}${last}\n`;
}

/** `123_4@node1`: what scancel and squeue call this agent's job, and where it runs. */
export function slurmText(s: AgentInfo['slurm']): string {
  if (!s) return '-';
  return `${s.jobId}${s.arrayTaskId === null ? '' : `_${s.arrayTaskId}`}${s.node ? `@${s.node}` : ''}`;
}
