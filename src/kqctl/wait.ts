/** Wait for jobs to end: broadcasts for speed, a periodic `show` so a missed broadcast never hangs us. */
import { Topics, isTerminalState } from '../protocol/constants.js';
import type { JobSummary } from '../protocol/index.js';
import type { KqClient } from './client.js';
import { EventReader } from './events.js';

const RECHECK_MS = 1000;

export async function waitForJobs(client: KqClient, jobIds: number[]): Promise<JobSummary[]> {
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
  await check();
  while (pending.size > 0) {
    const event = await events.next(RECHECK_MS);
    if (event === null || (event.type === 'job' && pending.has(event.jobId) && isTerminalState(event.state))) await check();
  }
  return jobIds.map((id) => final.get(id)!);
}
