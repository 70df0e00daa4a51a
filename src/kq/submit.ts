/** Turn a validated submit request into the rows the store inserts. */
import path from 'node:path';
import type { ErrorCode, JobSubmit } from '../protocol/index.js';
import { JobSubmitSchema } from '../protocol/index.js';
import { FrameRangeError, parseFrameRange } from '../common/frames.js';
import type { NewJob } from './store.js';
import { unspawnableReason } from './spawnable.js';
import { badItem } from '../common/items.js';

export class RequestError extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

export function prepareJob(input: JobSubmit): NewJob {
  const job = JobSubmitSchema.parse(input);
  if (job.argv[0]!.trim() === '') throw new RequestError('bad-request', 'empty command: give the program to run after --');
  let frames: number[] = [];
  if (job.items !== undefined) {
    if (job.frames !== undefined) throw new RequestError('bad-request', 'a job takes frames or items (--each), not both');
    const bad = badItem(job.items);
    if (bad) throw new RequestError('bad-request', bad);
    frames = job.items.map((_, i) => i + 1);
  } else if (job.frames !== undefined) {
    try {
      frames = parseFrameRange(job.frames);
    } catch (err) {
      if (err instanceof FrameRangeError) throw new RequestError('bad-request', err.message);
      throw err;
    }
  }
  if (job.cwd !== undefined && !path.isAbsolute(job.cwd)) throw new RequestError('bad-request', `cwd must be an absolute path: ${job.cwd}`);
  const unspawnable = unspawnableReason({ argv: job.argv, env: job.env, cwd: job.cwd ?? null, shell: job.shell, frames, chunk: job.chunk, items: job.items });
  if (unspawnable) throw new RequestError('bad-request', `cannot run this job: ${unspawnable}`);
  return {
    name: job.name?.trim() || defaultName(job.argv),
    argv: job.argv,
    frameSpec: job.items ? `1-${job.items.length}` : job.frames ?? null,
    frames,
    items: job.items ?? null,
    chunk: job.chunk,
    priority: job.priority,
    cwd: job.cwd ?? null,
    env: job.env,
    maxAttempts: job.maxAttempts,
    timeoutMs: job.timeoutMs ?? null,
    shell: job.shell,
    output: job.output ?? null,
    after: job.after ?? [],
  };
}

function defaultName(argv: string[]): string {
  const text = [path.basename(argv[0]!), ...argv.slice(1)].join(' ');
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
