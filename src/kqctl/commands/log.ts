import type { Command } from 'commander';
import { Topics, isTerminalState } from '../../protocol/constants.js';
import type { LogChunk } from '../../protocol/index.js';
import { EXIT } from '../exit-codes.js';
import { printJson } from '../format.js';
import { EventReader } from '../events.js';
import { jobIds, withClient, type ConnectionFlags } from '../connect.js';
import type { KqClient } from '../client.js';

const RECHECK_MS = 1000;

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('log')
    .description("print a job's render log; -f follows it live until the job ends")
    .argument('<id>', 'job id')
    .option('-f, --follow', 'keep printing new lines until the job ends', false)
    .option('--json', 'print {text, size, state} as JSON (not with -f)', false))
    .action(withClient(async (client, flags: ConnectionFlags & { follow: boolean; json: boolean }, id: string) => {
      const [jobId] = jobIds([id]);
      if (!flags.follow) {
        const { text, chunk } = await readFrom(client, jobId!, 0);
        if (flags.json) printJson({ jobId, text, size: chunk.size, state: chunk.state });
        else process.stdout.write(text);
        return EXIT.ok;
      }
      return follow(client, jobId!);
    }));
}

/** Read the log from `from` to its current end, in chunks. */
async function readFrom(client: KqClient, jobId: number, from: number): Promise<{ text: string; chunk: LogChunk }> {
  let text = '';
  for (;;) {
    const chunk = await client.request<LogChunk>('log', { jobId, from });
    text += chunk.text;
    if (chunk.next >= chunk.size || chunk.text === '') return { text, chunk };
    from = chunk.next;
  }
}

/**
 * Subscribe first, then read the backlog, then print broadcasts that continue it. A broadcast that
 * skips ahead (one was missed while subscribing) and a quiet second both trigger a read from the file.
 */
async function follow(client: KqClient, jobId: number): Promise<number> {
  const events = new EventReader(await client.subscribe([Topics.log(jobId), Topics.job(jobId)]));
  let next = 0;
  const catchUp = async () => {
    const { text, chunk } = await readFrom(client, jobId, next);
    process.stdout.write(text);
    next = chunk.next;
    return chunk;
  };
  let chunk = await catchUp();
  while (!isTerminalState(chunk.state)) {
    const event = await events.next(RECHECK_MS);
    if (event?.type === 'log' && event.offset === next) {
      process.stdout.write(event.text);
      next += Buffer.byteLength(event.text);
      continue;
    }
    if (event?.type === 'log' && event.offset < next) continue;
    chunk = await catchUp();
  }
  await catchUp();
  return EXIT.ok;
}
