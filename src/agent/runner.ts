/**
 * Runs one task: its commands in order, each in its own process group, output streamed line by line.
 * However a command ends (exit, failure, stop, timeout, agent stopping), its whole process group is ended
 * with it (SIGTERM, the grace period, SIGKILL) before the task is reported: nothing it started lives on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type { TaskAssignment } from '../protocol/index.js';
import { terminateGroup } from '../common/processes.js';
import { LineSplitter } from './lines.js';
import { StderrTail } from './stderr-tail.js';

export interface RunOptions {
  /** Variables describing the task (KQ_JOB_ID, KQ_FRAMES, …), set for every render. */
  env: Record<string, string>;
  minimalEnv: boolean;
  killGraceMs: number;
  onStarted(pid: number): void;
  /** A render process group exists (its leader's pid), and when it is gone: the agent's guard follows both. */
  onGroup(pgid: number, alive: boolean): void;
  onLines(lines: string[]): void;
}

export interface RunResult {
  exitCode: number | null;
  signal: string | null;
  durationMs: number;
  /** Why the task did not succeed, beyond a plain exit code (null on success or a plain non-zero exit). */
  reason: string | null;
  /** The last lines its commands wrote to stderr. */
  stderrTail: string[];
}

/** Environment variables a render keeps under --minimal-env True. */
const MINIMAL_ENV_KEYS = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'TMPDIR', 'TZ'];
const MAX_LINE = 64 * 1024;
/** How long a line ended by \r waits for a \n (then it is a redraw). */
const PENDING_CR_MS = 30;

export class TaskRun {
  private endReason: string | null = null;
  /** The running command's process group, and its ending once begun (one per command). */
  private group: { pgid: number; ending: Promise<boolean> | null } | null = null;
  private timeoutTimer: NodeJS.Timeout | null = null;
  private readonly stderr = new StderrTail();
  readonly done: Promise<RunResult>;

  constructor(readonly task: TaskAssignment, private readonly o: RunOptions) {
    // Never rejects: an unexpected error fails the task instead of crashing the agent.
    this.done = this.run().catch((err: Error) => ({ exitCode: null, signal: null, durationMs: 0, reason: `agent error: ${err.message}`, stderrTail: this.stderr.get() }));
  }

  /** End the task: its render's whole process group gets SIGTERM, then SIGKILL after the grace period. */
  stop(reason: string): void {
    if (this.endReason !== null) return;
    this.endReason = reason;
    if (this.group) void this.endGroup(this.group);
  }

  private endGroup(group: { pgid: number; ending: Promise<boolean> | null }): Promise<boolean> {
    group.ending ??= terminateGroup(group.pgid, this.o.killGraceMs).then((empty) => {
      if (empty) this.o.onGroup(group.pgid, false);
      return empty;
    });
    return group.ending;
  }

  private async run(): Promise<RunResult> {
    const started = Date.now();
    if (this.task.timeoutMs !== null) {
      this.timeoutTimer = setTimeout(() => this.stop(`timed out after ${formatMs(this.task.timeoutMs!)}`), this.task.timeoutMs);
    }
    let last: Omit<RunResult, 'stderrTail'> = { exitCode: 0, signal: null, durationMs: 0, reason: null };
    try {
      for (const command of this.task.commands) {
        if (this.endReason !== null) break;
        last = await this.runOne(command, started);
        if (last.exitCode !== 0 || last.reason !== null) break;
      }
    } finally {
      if (this.timeoutTimer) clearTimeout(this.timeoutTimer);
    }
    return { ...last, durationMs: Date.now() - started, reason: this.endReason ?? last.reason, stderrTail: this.stderr.get() };
  }

  private async runOne(command: string[], started: number): Promise<Omit<RunResult, 'stderrTail'>> {
    const [file, ...args] = this.task.shell ? ['/bin/sh', '-c', command.join(' ')] : command;
    const base = this.o.minimalEnv ? pick(process.env, MINIMAL_ENV_KEYS) : process.env;
    let child: ChildProcess;
    try {
      child = spawn(file!, args, {
        cwd: this.task.cwd ?? undefined,
        env: { ...base, ...this.o.env, ...this.task.env },
        detached: true, // its own process group: however the task ends, the whole render tree is ended
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      // A NUL byte, an environment too big for exec, a cwd that is a file: spawn throws. The task fails.
      return { exitCode: null, signal: null, durationMs: Date.now() - started, reason: this.cannotStart(command, err as NodeJS.ErrnoException) };
    }
    const group = child.pid !== undefined ? { pgid: child.pid, ending: null } : null;
    if (group) {
      this.group = group;
      this.o.onGroup(group.pgid, true);
      this.o.onStarted(group.pgid);
      if (this.endReason !== null) void this.endGroup(group); // stopped while it was being started
    }
    // One splitter per stream, so stdout and stderr lines never interleave mid-line.
    for (const stream of [child.stdout!, child.stderr!]) {
      const lines = new LineSplitter(MAX_LINE);
      const emit = (complete: string[]) => {
        if (complete.length === 0) return;
        if (stream === child.stderr) this.stderr.push(complete);
        this.o.onLines(complete);
      };
      // A chunk ending in \r may be half of \r\n: the splitter waits for the next chunk, or this moment.
      let pending: NodeJS.Timeout | null = null;
      stream.on('data', (chunk: Buffer) => {
        if (pending) clearTimeout(pending);
        pending = null;
        emit(lines.push(chunk));
        if (lines.hasPending) pending = setTimeout(() => { pending = null; emit(lines.flushPending()); }, PENDING_CR_MS);
      });
      stream.on('end', () => {
        if (pending) clearTimeout(pending);
        emit(lines.end());
      });
    }
    const ended = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error: NodeJS.ErrnoException | null }>((resolve) => {
      child.once('error', (error: NodeJS.ErrnoException) => resolve({ code: null, signal: null, error }));
      child.once('exit', (code, signal) => resolve({ code, signal, error: null }));
    });
    // The leader is gone; whatever it left in its group (background children) goes too, before reporting.
    if (group) await this.endGroup(group);
    await outputDrained(child);
    return {
      exitCode: ended.code,
      signal: ended.signal,
      durationMs: Date.now() - started,
      reason: ended.error ? this.cannotStart(command, ended.error) : null,
    };
  }

  private cannotStart(command: string[], err: NodeJS.ErrnoException): string {
    const cwd = this.task.cwd;
    if (cwd !== null && (err.code === 'ENOENT' || err.code === 'ENOTDIR' || err.code === 'EACCES') && !isDirectory(cwd)) {
      const what = fs.existsSync(cwd) ? 'is not a directory' : 'does not exist';
      return `cannot start ${JSON.stringify(command[0])}: working directory ${JSON.stringify(cwd)} ${what} on this host`;
    }
    if (err.code === 'ENOENT') return `cannot start ${JSON.stringify(command[0])}: no such program on this host (ENOENT; is it installed and on PATH?)`;
    return `cannot start ${JSON.stringify(command[0])}: ${err.code === 'ERR_INVALID_ARG_VALUE' ? err.message : err.code ?? err.message}`;
  }
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * After the render's group is gone, read what is left in its pipes; a process that left the group
 * (setsid) may hold them open forever, so stop waiting after a moment.
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
