import type { Command } from 'commander';
import { Topics, isTerminalState } from '../../protocol/constants.js';
import type { LogChunk } from '../../protocol/index.js';
import { TerminalSafeText } from '../../common/printable.js';
import { CliError, EXIT } from '../exit-codes.js';
import { intArg } from '../../common/cli.js';
import { printJson } from '../format.js';
import { EventReader } from '../events.js';
import { jobIds, withClient, type ConnectionFlags } from '../connect.js';
import type { KqClient } from '../client.js';

const RECHECK_MS = 1000;

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('log')
    .description("print a job's render log; -f follows it live until the job ends")
    .argument('<id>', 'job id')
    .option('-f, --follow', 'keep printing new lines until the job ends; waits through a kq restart', false)
    .option('-n, --tail <lines>', 'start with only the last N lines', intArg(0, 100_000_000))
    .option('--raw', 'on a terminal too, print the log exactly (by default a terminal gets colours but not other escapes)', false)
    .option('--json', 'print {text, size, state} as JSON (not with -f)', false))
    .addHelpText('after', `
Piped or redirected, the log is printed byte for byte. On a terminal, colours, tabs and \\r redraws pass
but every other escape sequence or control character in the render output (window titles, clipboard
writes, cursor moves, screen clears) is shown escaped, e.g. \\x1b]0;title: a render log is text others wrote.`)
    .action(withClient(async (client, flags: ConnectionFlags & { follow: boolean; json: boolean; raw: boolean; tail?: number }, id: string) => {
      const [jobId] = jobIds([id]);
      const out = output(!flags.raw && process.stdout.isTTY === true);
      const start = flags.tail === undefined ? { from: 0, text: '' } : await tailStart(client, jobId!, flags.tail);
      if (!flags.follow) {
        const { text, chunk } = await readFrom(client, jobId!, start.from);
        if (flags.json) printJson({ jobId, text: start.text + text, size: chunk.size, state: chunk.state });
        else out.write(start.text + text);
        out.end();
        return EXIT.ok;
      }
      out.write(start.text);
      const code = await follow(client, jobId!, out, start.from);
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

/** Read the log from `from` to its current end (or `to`), in chunks. */
async function readFrom(client: KqClient, jobId: number, from: number, to = Infinity): Promise<{ text: string; chunk: LogChunk }> {
  let text = '';
  for (;;) {
    const chunk = await client.request<LogChunk>('log', { jobId, from, ...(to < Infinity ? { max: Math.max(1, Math.min(1_000_000, to - from)) } : {}) });
    text += chunk.text;
    if (chunk.next >= Math.min(to, chunk.size) || chunk.text === '') return { text, chunk };
    from = chunk.next;
  }
}

/**
 * Where the last `lines` lines of the log begin, and their text so far: reads backwards from the end in
 * growing windows until it has them (the first, possibly cut, line of a window is never counted).
 */
async function tailStart(client: KqClient, jobId: number, lines: number): Promise<{ from: number; text: string }> {
  const { size } = await client.request<LogChunk>('log', { jobId, from: 0, max: 1 });
  for (let window = 64 * 1024; ; window *= 4) {
    const from = Math.max(0, size - window);
    const { text } = await readFrom(client, jobId, from, size);
    const parts = text.split('\n');
    const last = parts.pop()!; // '' when the log ends with a newline
    const wanted = parts.length - (from > 0 ? 1 : 0); // whole lines in the window
    if (wanted >= lines || from === 0) {
      const keep = lines === 0 ? [] : parts.slice(-lines);
      const tail = (keep.length ? keep.join('\n') + '\n' : '') + last;
      return { from: size, text: lines === 0 ? '' : tail };
    }
  }
}

/**
 * Subscribe first, then read the backlog, then print broadcasts that continue it. A broadcast that
 * skips ahead (one was missed while subscribing) and a quiet second both trigger a read from the file.
 * While kq does not answer (restarting) it says so once on stderr and keeps trying: the subscription
 * reconnects by itself and the file fills whatever was missed.
 */
async function follow(client: KqClient, jobId: number, out: LogOutput, from: number): Promise<number> {
  const events = new EventReader(await client.subscribe([Topics.log(jobId), Topics.job(jobId)]));
  let next = from;
  let away = false;
  const catchUp = async (): Promise<LogChunk | null> => {
    try {
      const { text, chunk } = await readFrom(client, jobId, next);
      out.write(text);
      next = chunk.next;
      if (away) process.stderr.write('kqctl: kq answers again; following\n');
      away = false;
      return chunk;
    } catch (err) {
      if (!(err instanceof CliError) || err.exitCode !== EXIT.unreachable) throw err;
      if (!away) process.stderr.write(`kqctl: kq at ${client.endpoint} is not answering; still following, waiting for it to come back (Ctrl-C to stop)\n`);
      away = true;
      return null;
    }
  };
  let chunk = await catchUp();
  if (chunk === null) throw client.unreachable(); // never reached kq at all: nothing to follow
  while (!isTerminalState(chunk.state)) {
    const event = await events.next(RECHECK_MS);
    if (event !== null && 'jobId' in event && event.jobId !== jobId) continue;
    if (event?.type === 'log' && event.offset === next) {
      out.write(event.text);
      next += Buffer.byteLength(event.text);
      continue;
    }
    if (event?.type === 'log' && event.offset < next) continue;
    chunk = (await catchUp()) ?? chunk;
  }
  await catchUp();
  return EXIT.ok;
}
