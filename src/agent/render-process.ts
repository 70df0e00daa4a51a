/**
 * One started render as the runner sees it, whoever forked it (Node's spawn, or the agent's spawn helper):
 * its pid once it runs, its end, its output. And the Node way to start one, the fallback.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface RenderSpec {
  file: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd: string | undefined;
}

export type RenderStream = 'stdout' | 'stderr';

export interface RenderOutput {
  /** It runs: its pid, the leader of its own process group. Called before any of its output. */
  onStarted(pid: number): void;
  onData(stream: RenderStream, chunk: Buffer): void;
  onEnd(stream: RenderStream): void;
}

export interface RenderEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** It could not be started (ENOENT, EACCES, a missing cwd…). */
  error: NodeJS.ErrnoException | null;
  /** Its end is unknown: the process that watched it died (a clear reason for the task). */
  lost: string | null;
  /** Why it failed when code and signal cannot say (a signal Node has no name for, e.g. real-time 34-64). */
  reason: string | null;
}

export interface RenderProcess {
  readonly ended: Promise<RenderEnd>;
  /** Wait for its output to end, at most `graceMs` (a process that left the group may hold the pipes). */
  drained(graceMs: number): Promise<void>;
  /** Its task is stopped before it was started (still waiting for its starter): drop it, and it ends now. */
  cancel?(): boolean;
  /** Its group is gone but its starter never reported its end (a hung helper): give up on it, it ends now (lost). */
  abandon?(why: string): void;
}

/** Start a render with Node's child_process.spawn; throws as spawn does (a NUL byte, a cwd that is a file…). */
export function spawnWithNode(spec: RenderSpec, output: RenderOutput): RenderProcess {
  const child = spawn(spec.file, spec.args, {
    cwd: spec.cwd,
    env: spec.env,
    detached: true, // its own process group: however the task ends, the whole render tree is ended
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid !== undefined) output.onStarted(child.pid);
  for (const name of ['stdout', 'stderr'] as const) {
    const stream = child[name]!;
    stream.on('data', (chunk: Buffer) => output.onData(name, chunk));
    stream.on('end', () => output.onEnd(name));
  }
  const ended = new Promise<RenderEnd>((resolve) => {
    child.once('error', (error: NodeJS.ErrnoException) => resolve({ code: null, signal: null, error, lost: null, reason: null }));
    child.once('exit', (code, signal) => resolve({ code, signal, error: null, lost: null, reason: null }));
  });
  return { ended, drained: (graceMs) => outputDrained(child, graceMs) };
}

/**
 * After the render's group is gone, read what is left in its pipes; a process that left the group
 * (setsid) may hold them open forever, so stop waiting after a moment.
 */
function outputDrained(child: ChildProcess, graceMs: number): Promise<void> {
  const streams = [child.stdout!, child.stderr!].filter((s) => !s.readableEnded && !s.destroyed);
  if (streams.length === 0) return Promise.resolve();
  return new Promise((resolve) => {
    let open = streams.length;
    const timer = setTimeout(() => {
      for (const s of streams) s.destroy();
      resolve();
    }, graceMs);
    for (const s of streams) {
      s.once('close', () => {
        if (--open === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
    }
  });
}
