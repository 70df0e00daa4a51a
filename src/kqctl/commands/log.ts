import type { Command } from 'commander';
import { Topics, isTerminalState } from '../../protocol/constants.js';
import type { LogChunk } from '../../protocol/index.js';
import { TerminalSafeText } from '../../common/printable.js';
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
    .option('--raw', 'on a terminal too, print the log exactly (by default a terminal gets colours but not other escapes)', false)
    .option('--json', 'print {text, size, state} as JSON (not with -f)', false))
    .addHelpText('after', `
Piped or redirected, the log is printed byte for byte. On a terminal, colours, tabs and \\r redraws pass
but every other escape sequence or control character in the render output (window titles, clipboard
writes, cursor moves, screen clears) is shown escaped, e.g. \\x1b]0;title: a render log is text others wrote.`)
    .action(withClient(async (client, flags: ConnectionFlags & { follow: boolean; json: boolean; raw: boolean }, id: string) => {
      const [jobId] = jobIds([id]);
      const out = output(!flags.raw && process.stdout.isTTY === true);
      if (!flags.follow) {
        const { text, chunk } = await readFrom(client, jobId!, 0);
        if (flags.json) printJson({ jobId, text, size: chunk.size, state: chunk.state });
        else out.write(text);
        out.end();
        return EXIT.ok;
      }
      const code = await follow(client, jobId!, out);
      out.end();
      return code;
    }));
}

interface LogOutput { write(text: string): void; end(): void }

/** Where log text goes: stdout as is, or made safe for a terminal. */
function output(terminal: boolean): LogOutput {
  if (!terminal) return { write: (text) => { process.stdout.write(text); }, end: () => undefined };
  const safe = new TerminalSafeText();
  return { write: (text) => { process.stdout.write(safe.push(text)); }, end: () => { process.stdout.write(safe.end()); } };
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
async function follow(client: KqClient, jobId: number, out: LogOutput): Promise<number> {
  const events = new EventReader(await client.subscribe([Topics.log(jobId), Topics.job(jobId)]));
  let next = 0;
  const catchUp = async () => {
    const { text, chunk } = await readFrom(client, jobId, next);
    out.write(text);
    next = chunk.next;
    return chunk;
  };
  let chunk = await catchUp();
  while (!isTerminalState(chunk.state)) {
    const event = await events.next(RECHECK_MS);
    if (event !== null && 'jobId' in event && event.jobId !== jobId) continue;
    if (event?.type === 'log' && event.offset === next) {
      out.write(event.text);
      next += Buffer.byteLength(event.text);
      continue;
    }
    if (event?.type === 'log' && event.offset < next) continue;
    chunk = await catchUp();
  }
  await catchUp();
  return EXIT.ok;
}
