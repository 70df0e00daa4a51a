/**
 * Runs one task: its commands in order, each in its own process group, output streamed line by line.
 * However a command ends (exit, failure, stop, timeout, agent stopping), its whole process group is ended
 * with it (SIGTERM, the grace period, SIGKILL) before the task is reported: nothing it started lives on.
 */
import fs from 'node:fs';
import type { TaskAssignment } from '../protocol/index.js';
import { terminateGroup } from '../common/processes.js';
import { LineSplitter } from './lines.js';
import { StderrTail } from './stderr-tail.js';
import { spawnWithNode, type RenderEnd, type RenderOutput, type RenderProcess, type RenderSpec, type RenderStream } from './render-process.js';

export interface RunOptions {
  /** Variables describing the task (KQ_JOB_ID, KQ_FRAMES, …), set for every render. */
  env: Record<string, string>;
  minimalEnv: boolean;
  killGraceMs: number;
  onStarted(pid: number): void;
  /** A render process group exists (its leader's pid), and when it is gone: the agent's guard follows both. */
  onGroup(pgid: number, alive: boolean): void;
  onLines(lines: string[]): void;
  /** Starts each command (the agent's spawn helper); Node's spawn by default. Throws as Node's spawn does. */
  spawn?(spec: RenderSpec, output: RenderOutput): RenderProcess;
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
/** After the render's group is gone, how long its pipes may stay open (a process that left the group holds them). */
const DRAIN_MS = 200;
/** After its group was ended, how long the render's starter has to report its end before it is given up on. */
const END_REPORT_MS = 10_000;

export class TaskRun {
  private endReason: string | null = null;
  /** The running command's process group, and its ending once begun (one per command). */
  private group: { pgid: number; ending: Promise<boolean> | null } | null = null;
  private timeoutTimer: NodeJS.Timeout | null = null;
  /** The command asked for, until its end is known; not `started` while its starter has no pid for it (a stop drops it). */
  private current: { render: RenderProcess; started: boolean } | null = null;
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
    if (this.current && !this.current.started) this.current.render.cancel?.();
    else if (this.group) void this.endGroup(this.group);
  }

  private endGroup(group: { pgid: number; ending: Promise<boolean> | null }): Promise<boolean> {
    group.ending ??= terminateGroup(group.pgid, this.o.killGraceMs).then((empty) => {
      if (empty) this.o.onGroup(group.pgid, false);
      this.abandonIfSilent();
      return empty;
    });
    return group.ending;
  }

  /** The group was ended: a starter that still does not report the render's end (a hung helper) would hold the task forever. */
  private abandonIfSilent(): void {
    const current = this.current;
    if (!current?.render.abandon) return;
    setTimeout(() => {
      if (this.current === current) current.render.abandon!(`did not report the end of a render within ${END_REPORT_MS / 1000} s of its group being ended`);
    }, END_REPORT_MS).unref();
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
    const spec: RenderSpec = { file: file!, args, cwd: this.task.cwd ?? undefined, env: { ...base, ...this.o.env, ...this.task.env } };
    // The render's process group, known once it runs (before any of its output).
    const running: { group: { pgid: number; ending: Promise<boolean> | null } | null } = { group: null };
    const onStarted = (pid: number) => {
      const group = { pgid: pid, ending: null };
      running.group = this.group = group;
      if (this.current) this.current.started = true;
      this.o.onGroup(group.pgid, true);
      this.o.onStarted(group.pgid);
      if (this.endReason !== null) void this.endGroup(group); // stopped while it was being started
    };
    let render: RenderProcess;
    try {
      render = (this.o.spawn ?? spawnWithNode)(spec, this.outputTo(onStarted));
    } catch (err) {
      // A NUL byte, an environment too big for exec, a cwd that is a file: spawn throws. The task fails.
      return { exitCode: null, signal: null, durationMs: Date.now() - started, reason: this.cannotStart(command, err as NodeJS.ErrnoException) };
    }
    this.current = { render, started: running.group !== null };
    const ended: RenderEnd = await render.ended;
    this.current = null;
    // The leader is gone; whatever it left in its group (background children) goes too, before reporting.
    if (running.group) await this.endGroup(running.group);
    await render.drained(DRAIN_MS);
    return {
      exitCode: ended.code,
      signal: ended.signal,
      durationMs: Date.now() - started,
      reason: ended.lost ?? ended.reason ?? (ended.error ? this.cannotStart(command, ended.error) : null),
    };
  }

  /** One line splitter per stream, so stdout and stderr lines never interleave mid-line. */
  private outputTo(onStarted: (pid: number) => void): RenderOutput {
    const streams = new Map<RenderStream, { lines: LineSplitter; pending: NodeJS.Timeout | null }>();
    const emit = (name: RenderStream, complete: string[]) => {
      if (complete.length === 0) return;
      if (name === 'stderr') this.stderr.push(complete);
      this.o.onLines(complete);
    };
    for (const name of ['stdout', 'stderr'] as const) streams.set(name, { lines: new LineSplitter(MAX_LINE), pending: null });
    return {
      onStarted,
      onData: (name, chunk) => {
        const s = streams.get(name)!;
        if (s.pending) clearTimeout(s.pending);
        s.pending = null;
        emit(name, s.lines.push(chunk));
        // A chunk ending in \r may be half of \r\n: the splitter waits for the next chunk, or this moment.
        if (s.lines.hasPending) s.pending = setTimeout(() => { s.pending = null; emit(name, s.lines.flushPending()); }, PENDING_CR_MS);
      },
      onEnd: (name) => {
        const s = streams.get(name)!;
        if (s.pending) clearTimeout(s.pending);
        emit(name, s.lines.end());
      },
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

function pick(env: NodeJS.ProcessEnv, keys: string[]): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const k of keys) if (env[k] !== undefined) out[k] = env[k]!;
  return out;
}

function formatMs(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
