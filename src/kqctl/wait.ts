/** Wait for jobs to end: broadcasts for speed, a periodic `show` so a missed broadcast never hangs us. */
import { Topics, isTerminalState } from '../protocol/constants.js';
import type { JobSummary } from '../protocol/index.js';
import type { KqClient } from './client.js';
import { EventReader } from './events.js';

const RECHECK_MS = 1000;
/** The progress bar is redrawn at most this often. */
const PROGRESS_MS = 250;

/** `onProgress` (a terminal's progress bar) hears the jobs' summaries after each change, and at least once a second. */
export async function waitForJobs(client: KqClient, jobIds: number[], onProgress?: (jobs: JobSummary[]) => void): Promise<JobSummary[]> {
  const events = new EventReader(await client.subscribe(jobIds.map((id) => Topics.job(id))));
  const pending = new Set(jobIds);
  const final = new Map<number, JobSummary>();
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
    if (event === null || (event.type === 'job' && pending.has(event.jobId) && isTerminalState(event.state))) await check();
    if (pending.size > 0) await progress();
  }
  return jobIds.map((id) => final.get(id)!);
}
