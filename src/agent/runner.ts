/**
 * Runs one task: its commands in order, each in its own process group, output streamed line by line.
 * Ends one way of several (exit, stop, timeout, agent shutdown); each kills the whole render tree.
 */
import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import type { TaskAssignment } from '../protocol/index.js';
import { killGroup } from '../common/processes.js';
import { LineSplitter } from './lines.js';

export interface RunOptions {
  /** Variables describing the task (KQ_JOB_ID, KQ_FRAMES, …), set for every render. */
  env: Record<string, string>;
  minimalEnv: boolean;
  killGraceMs: number;
  /**
   * Run renders under `setpriv --pdeathsig KILL`, so the kernel kills a render whose agent died without
   * cleaning up. It costs an extra exec per render; local agents skip it, as kq kills their renders' groups.
   */
  deathSignal: boolean;
  onStarted(pid: number): void;
  onLines(lines: string[]): void;
}

export interface RunResult {
  exitCode: number | null;
  signal: string | null;
  durationMs: number;
  /** Why the task did not succeed, beyond a plain exit code (null on success or a plain non-zero exit). */
  reason: string | null;
}

/** Environment variables a render keeps under --minimal-env True. */
const MINIMAL_ENV_KEYS = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'TMPDIR', 'TZ'];
const MAX_LINE = 64 * 1024;
/** setpriv (util-linux) makes the kernel kill the render if the agent dies without cleaning up. */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p)) ?? null;

export class TaskRun {
  private child: ChildProcess | null = null;
  private endReason: string | null = null;
  private killTimer: NodeJS.Timeout | null = null;
  private timeoutTimer: NodeJS.Timeout | null = null;
  readonly done: Promise<RunResult>;

  constructor(readonly task: TaskAssignment, private readonly o: RunOptions) {
    this.done = this.run();
  }

  /** Kill the render's process group: TERM, then KILL after the grace period. */
  stop(reason: string): void {
    if (this.endReason !== null) return;
    this.endReason = reason;
    const pid = this.child?.pid;
    if (pid === undefined) return;
    killGroup(pid, 'SIGTERM');
    this.killTimer = setTimeout(() => killGroup(pid, 'SIGKILL'), this.o.killGraceMs);
  }

  private async run(): Promise<RunResult> {
    const started = Date.now();
    if (this.task.timeoutMs !== null) {
      this.timeoutTimer = setTimeout(() => this.stop(`timed out after ${formatMs(this.task.timeoutMs!)}`), this.task.timeoutMs);
    }
    let last: RunResult = { exitCode: 0, signal: null, durationMs: 0, reason: null };
    try {
      for (const command of this.task.commands) {
        if (this.endReason !== null) break;
        last = await this.runOne(command, started);
        if (last.exitCode !== 0 || last.reason !== null) break;
      }
    } finally {
      if (this.timeoutTimer) clearTimeout(this.timeoutTimer);
    }
    return { ...last, durationMs: Date.now() - started, reason: this.endReason ?? last.reason };
  }

  private async runOne(command: string[], started: number): Promise<RunResult> {
    const argv = this.task.shell ? ['/bin/sh', '-c', command.join(' ')] : command;
    const [file, ...args] = SETPRIV && this.o.deathSignal ? [SETPRIV, '--pdeathsig', 'KILL', '--', ...argv] : argv;
    const base = this.o.minimalEnv ? pick(process.env, MINIMAL_ENV_KEYS) : process.env;
    const child = spawn(file!, args, {
      cwd: this.task.cwd ?? undefined,
      env: { ...base, ...this.o.env, ...this.task.env },
      detached: true, // its own process group: stop/timeout kill the whole render tree
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    if (child.pid !== undefined) this.o.onStarted(child.pid);
    if (this.endReason !== null && child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
    // One splitter per stream, so stdout and stderr lines never interleave mid-line.
    for (const stream of [child.stdout!, child.stderr!]) {
      const lines = new LineSplitter(MAX_LINE);
      stream.on('data', (chunk: Buffer) => {
        const complete = lines.push(chunk);
        if (complete.length > 0) this.o.onLines(complete);
      });
      stream.on('end', () => {
        const last = lines.end();
        if (last.length > 0) this.o.onLines(last);
      });
    }
    const ended = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error: NodeJS.ErrnoException | null }>((resolve) => {
      child.once('error', (error: NodeJS.ErrnoException) => resolve({ code: null, signal: null, error }));
      child.once('exit', (code, signal) => resolve({ code, signal, error: null }));
    });
    await outputDrained(child);
    if (this.killTimer) clearTimeout(this.killTimer);
    return {
      exitCode: ended.code,
      signal: ended.signal,
      durationMs: Date.now() - started,
      reason: ended.error ? `cannot run ${JSON.stringify(command[0])}: ${ended.error.code ?? ended.error.message}` : null,
    };
  }
}

/**
 * After the render exits, read what is left in its pipes; a background process it left behind may hold
 * them open forever, so stop waiting after a moment (its group is killed with the task anyway).
 */
function outputDrained(child: ChildProcess, graceMs = 200): Promise<void> {
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

function pick(env: NodeJS.ProcessEnv, keys: string[]): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const k of keys) if (env[k] !== undefined) out[k] = env[k]!;
  return out;
}

function formatMs(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
