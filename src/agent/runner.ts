/**
 * Runs one task: its commands in order, each in its own process group, output streamed line by line.
 * Ends one way of several (exit, stop, timeout, agent shutdown); each kills the whole render tree.
 */
import fs from 'node:fs';
import { execa, type ResultPromise } from 'execa';
import type { TaskAssignment } from '../protocol/index.js';
import { killGroup } from '../common/processes.js';
import { LineSplitter } from './lines.js';

export interface RunOptions {
  /** Variables describing the task (KQ_JOB_ID, KQ_FRAMES, …), set for every render. */
  env: Record<string, string>;
  minimalEnv: boolean;
  killGraceMs: number;
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
  private child: ResultPromise | null = null;
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
    const [file, ...args] = SETPRIV ? [SETPRIV, '--pdeathsig', 'KILL', '--', ...argv] : argv;
    const env = { ...(this.o.minimalEnv ? pick(process.env, MINIMAL_ENV_KEYS) : {}), ...this.o.env, ...this.task.env };
    const child = execa(file!, args, {
      cwd: this.task.cwd ?? undefined,
      env,
      extendEnv: !this.o.minimalEnv,
      detached: true, // its own process group: stop/timeout kill the whole render tree
      stdin: 'ignore',
      all: true,
      buffer: false,
      reject: false,
      cleanup: false,
      stripFinalNewline: false,
    });
    this.child = child;
    if (child.pid !== undefined) this.o.onStarted(child.pid);
    if (this.endReason !== null && child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
    const lines = new LineSplitter(MAX_LINE);
    try {
      for await (const chunk of child.iterable({ from: 'all', binary: true, preserveNewlines: true })) {
        const complete = lines.push(Buffer.from(chunk));
        if (complete.length > 0) this.o.onLines(complete);
      }
    } catch {
      // The output stream failed (e.g. the process could not start); the result below says why.
    }
    const last = lines.end();
    if (last.length > 0) this.o.onLines(last);
    const result = await child;
    if (this.killTimer) clearTimeout(this.killTimer);
    const spawnError = result.failed && result.exitCode === undefined && !result.signal ? result.shortMessage : null;
    return {
      exitCode: result.exitCode ?? null,
      signal: result.signal ?? null,
      durationMs: Date.now() - started,
      reason: spawnError ? `cannot run ${JSON.stringify(command[0])}: ${result.code ?? spawnError}` : null,
    };
  }
}

function pick(env: NodeJS.ProcessEnv, keys: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of keys) if (env[k] !== undefined) out[k] = env[k]!;
  return out;
}

function formatMs(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
