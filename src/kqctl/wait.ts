/** Wait for jobs to end: broadcasts for speed, a periodic `show` so a missed broadcast never hangs us. */
import { Topics, isTerminalState } from '../protocol/constants.js';
import type { JobSummary } from '../protocol/index.js';
import type { KqClient } from './client.js';
import { EventReader } from './events.js';
import { CliError, EXIT } from './exit-codes.js';
import { printable } from '../common/printable.js';

const RECHECK_MS = 1000;
/** The progress bar is redrawn at most this often. */
const PROGRESS_MS = 250;

export interface WaitOptions {
  /** Give up (exit 3) once kq has been unreachable this long; null: keep waiting for it. */
  unreachableTimeoutMs?: number | null;
}

/**
 * `onProgress` (a terminal's progress bar) hears the jobs' summaries after each change, and at least once a second.
 * kq must answer at first (else exit 3: a wrong address should not wait forever); after that, kq going away
 * (a restart: it requeues running tasks and carries on) is waited out, said once on stderr.
 */
export async function waitForJobs(client: KqClient, jobIds: number[], onProgress?: (jobs: JobSummary[]) => void, options: WaitOptions = {}): Promise<JobSummary[]> {
  const events = new EventReader(await client.subscribe(jobIds.map((id) => Topics.job(id))));
  const pending = new Set(jobIds);
  const final = new Map<number, JobSummary>();
  const limit = options.unreachableTimeoutMs ?? null;
  let unreachableSince: number | null = null;
  /** Run one exchange with kq; false if kq did not answer and we keep waiting for it. */
  const tolerant = async (exchange: () => Promise<void>): Promise<boolean> => {
    try {
      await exchange();
    } catch (err) {
      if (!(err instanceof CliError) || err.exitCode !== EXIT.unreachable) throw err;
      const now = Date.now();
      if (unreachableSince === null) {
        unreachableSince = now;
        process.stderr.write(`kqctl: kq is unreachable; still waiting for it${limit === null ? '' : ` (up to ${limit / 1000}s, --unreachable-timeout)`}: ${printable(err.message)}\n`);
      }
      if (limit !== null && now - unreachableSince >= limit) throw err;
      return false;
    }
    if (unreachableSince !== null) process.stderr.write('kqctl: kq answers again; waiting on\n');
    unreachableSince = null;
    return true;
  };
  const check = async () => {
    for (const id of [...pending]) {
      const { taskList: _tasks, ...job } = await client.request<JobSummary & { taskList: unknown }>('show', { jobId: id });
      if (isTerminalState(job.state)) {
        pending.delete(id);
        final.set(id, job);
      }
    }
  };
  let progressAt = 0;
  const progress = async () => {
    if (!onProgress || Date.now() - progressAt < PROGRESS_MS) return;
    progressAt = Date.now();
    onProgress(await client.request<JobSummary[]>('list', { jobIds }));
  };
  await check();
  await progress();
  while (pending.size > 0) {
    const event = await events.next(onProgress ? PROGRESS_MS : RECHECK_MS);
    if (event === null || (event.type === 'job' && pending.has(event.jobId) && isTerminalState(event.state))) {
      if (!(await tolerant(check))) continue;
    }
    if (pending.size > 0) await tolerant(progress);
  }
  return jobIds.map((id) => final.get(id)!);
}
