/**
 * A job exec(2) can never start is refused at submit, before any agent tries it: a NUL byte (a C string
 * ends there), an environment name that is empty or holds `=`, one argument or NAME=value longer than
 * Linux's MAX_ARG_STRLEN, or argv plus environment too big to leave the agent's own environment room
 * under ARG_MAX. Sizes are computed after placeholders (`{frame:08}`), without building the strings.
 */
import { shellQuote } from '../ssh/shell-quote.js';

/** Linux's MAX_ARG_STRLEN (32 pages) counts the terminating NUL. */
export const MAX_ARG_BYTES = 128 * 1024 - 1;
/** Half the usual 2 MiB ARG_MAX: the other half is left for the agent's own environment. */
export const MAX_EXEC_BYTES = 1024 * 1024;

export interface SpawnInput {
  argv: string[];
  env: Record<string, string>;
  cwd: string | null;
  shell: boolean;
  /** The job's frames (empty without frames), run `chunk` to a task. */
  frames: number[];
  chunk: number;
  /** `--each` items, one run each, filling {item}/{} (or appended as the last argument). */
  items?: readonly string[];
}

const PLACEHOLDER = /\{(frame|start|end)(?::0?(\d+))?\}/g;
/** Per pointer in argv/envp, as the kernel counts it. */
const POINTER = 8;

/** Why this job can never be spawned, or null if it can. */
export function unspawnableReason(job: SpawnInput): string | null {
  const nul = findNul(job);
  if (nul) return `${nul} contains a NUL byte, which no program can receive: remove it`;
  for (const key of Object.keys(job.env)) {
    if (key === '' || key.includes('=')) return `environment variable name ${JSON.stringify(key)} is empty or contains "=": give --env NAME=VALUE with a plain NAME`;
  }
  if (job.cwd !== null && Buffer.byteLength(job.cwd) >= 4096) return 'cwd is 4096 bytes or longer, over the system\'s path limit';

  let [lowest, highest] = [0, 0];
  for (const f of job.frames) [lowest, highest] = [Math.min(lowest, f), Math.max(highest, f)];
  const digits = { widest: Math.max(String(-lowest).length, String(highest).length), sign: lowest < 0 ? 1 : 0 };
  const widest = digits.widest + digits.sign;
  const argBytes = job.argv.map((arg, i) => ({ i, bytes: expandedBytes(arg, digits) }));
  if (job.items && job.items.length > 0) {
    // The longest item, quoted as the shell gets it, in every place that names it (or as one more argument).
    const item = job.items.reduce((n, it) => Math.max(n, Buffer.byteLength(job.shell ? shellQuote(it) : it)), 0);
    let named = false;
    for (const a of argBytes) {
      const uses = job.argv[a.i]!.match(/\{item\}|\{\}/g)?.length ?? 0;
      a.bytes += uses * (item - 2) + (job.argv[a.i]!.match(/\{#\}/g)?.length ?? 0) * widest;
      named ||= uses > 0 || /\{#\}/.test(job.argv[a.i]!);
    }
    if (!named) argBytes.push({ i: argBytes.length, bytes: item });
  }
  const tooLong = job.shell
    ? (() => {
        const joined = argBytes.reduce((n, a) => n + a.bytes + 1, 0) - 1;
        return joined > MAX_ARG_BYTES ? `the shell command line is ${joined} bytes after placeholders` : null;
      })()
    : (() => {
        const a = argBytes.find((x) => x.bytes > MAX_ARG_BYTES);
        return a ? `argument ${a.i + 1} is ${a.bytes} bytes after placeholders` : null;
      })();
  if (tooLong) return `${tooLong}: the system refuses any one argument over ${MAX_ARG_BYTES} bytes; pass long data in a file`;

  let envBytes = 0;
  for (const [key, value] of Object.entries(job.env)) {
    const bytes = Buffer.byteLength(key) + 1 + Buffer.byteLength(value);
    if (bytes > MAX_ARG_BYTES) return `environment variable ${key} is ${bytes} bytes: the system refuses any one over ${MAX_ARG_BYTES} bytes; pass long data in a file`;
    envBytes += bytes + 1 + POINTER;
  }
  // The agent adds KQ_FRAMES (every frame of the task) among its KQ_* variables.
  const biggestChunk = Math.min(job.chunk, job.frames.length);
  const framesVar = 'KQ_FRAMES='.length + biggestChunk * (widest + 1);
  if (framesVar > MAX_ARG_BYTES) return `a task of ${biggestChunk} frames would get a KQ_FRAMES variable of ${framesVar} bytes, over the system's ${MAX_ARG_BYTES}: use a smaller --chunk`;
  const argvTotal = job.shell ? argBytes.reduce((n, a) => n + a.bytes + 1, 0) + 16 : argBytes.reduce((n, a) => n + a.bytes + 1 + POINTER, 0);
  const total = argvTotal + envBytes + framesVar + 1024;
  if (total > MAX_EXEC_BYTES) {
    return `the command line and environment come to ${total} bytes after placeholders, over the ${MAX_EXEC_BYTES} a render may use (the system allows about 2 MiB with the agent's own environment): pass long data in a file`;
  }
  return null;
}

function findNul(job: SpawnInput): string | null {
  const i = job.argv.findIndex((a) => a.includes('\0'));
  if (i >= 0) return `argument ${i + 1}`;
  if (job.cwd?.includes('\0')) return 'cwd';
  for (const [key, value] of Object.entries(job.env)) {
    if (key.includes('\0')) return `an environment variable name (${JSON.stringify(key)})`;
    if (value.includes('\0')) return `environment variable ${key}`;
  }
  return null;
}

/** Bytes of `arg` once its placeholders are filled with frame numbers of at most `widest` digits (and a sign). */
function expandedBytes(arg: string, { widest, sign }: { widest: number; sign: number }): number {
  let bytes = Buffer.byteLength(arg);
  for (const m of arg.matchAll(PLACEHOLDER)) {
    const width = m[2] === undefined ? 0 : Math.min(Number(m[2]), 1e9); // a 60,000-digit width is just "too wide"
    bytes += Math.max(width, widest) + sign - m[0].length;
  }
  return bytes;
}
