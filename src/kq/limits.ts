/**
 * What kq refuses at submit because it could never be delivered: an assignment (the commands of one task,
 * placeholders filled, with env and cwd) must fit one message to the agent. Checked with an upper bound
 * computed from sizes, never by expanding the commands (a 1,000,000-frame chunk would not fit memory).
 */
import { MAX_ASSIGNMENT_BYTES } from '../protocol/index.js';
import { usesFramePlaceholder } from '../common/placeholders.js';
import type { NewJob } from './store.js';
import { RequestError } from './submit.js';

const PLACEHOLDER = /\{(?:frame|start|end)(?::0?(\d+))?\}/g;
/** Widest zero-padding a placeholder may ask for (`{frame:08}`). */
export const MAX_PAD_WIDTH = 32;
/** Characters a filled placeholder can take at most: sign and a padded safe integer. */
const FILLED_MAX = MAX_PAD_WIDTH + 2;

export function checkDeliverable(job: NewJob): void {
  let placeholders = 0;
  for (const arg of job.argv) {
    for (const m of arg.matchAll(PLACEHOLDER)) {
      if (m[1] !== undefined && Number(m[1]) > MAX_PAD_WIDTH) {
        throw new RequestError('bad-request', `placeholder ${m[0]} pads wider than ${MAX_PAD_WIDTH} digits`);
      }
      placeholders++;
    }
  }
  const largestChunk = Math.min(job.chunk, job.frames.length);
  const runs = usesFramePlaceholder(job.argv) || job.items ? Math.max(1, largestChunk) : 1;
  const commandBytes = Buffer.byteLength(JSON.stringify(job.argv)) + placeholders * FILLED_MAX;
  const bytes = runs * commandBytes + (job.items ? largestItemsChunk(job.argv, job.items, job.chunk) : 0) +
    Buffer.byteLength(JSON.stringify(job.env)) + Buffer.byteLength(job.cwd ?? '') + largestChunk * 17 + 1024;
  if (bytes > MAX_ASSIGNMENT_BYTES) {
    const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
    const hint = runs > 1 ? 'use a smaller --chunk (each task runs the command once per frame)' : 'shorten the command line or environment';
    throw new RequestError('bad-request', `job too large to send to an agent: one task's commands take up to ${mib(bytes)}, the limit is ${mib(MAX_ASSIGNMENT_BYTES)}: ${hint}`);
  }
}

/** Bytes the items of the largest chunk add to one assignment (as JSON, each item once per placeholder naming it). */
function largestItemsChunk(argv: string[], items: string[], chunk: number): number {
  const uses = Math.max(1, argv.reduce((n, arg) => n + (arg.match(/\{item\}|\{\}/g)?.length ?? 0), 0));
  let largest = 0;
  for (let start = 0; start < items.length; start += chunk) {
    let sum = 0;
    for (const item of items.slice(start, start + chunk)) sum += Buffer.byteLength(JSON.stringify(item)) * uses;
    largest = Math.max(largest, sum);
  }
  return largest;
}
