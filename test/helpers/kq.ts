/**
 * Start real kq daemons in temp data roots on free ports, run real kqctl, and clean every process up.
 * Hides ports, temp dirs and cleanup — never the behaviour under test.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { afterAll } from 'vitest';
import type { DaemonInfo } from '../../src/common/paths.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = {
  kq: path.join(ROOT, 'bin', 'kq.js'),
  agent: path.join(ROOT, 'bin', 'kq-agent.js'),
  kqctl: path.join(ROOT, 'bin', 'kqctl.cjs'),
};

export interface RunResult { exitCode: number; stdout: string; stderr: string }

export function tempDir(prefix = 'kq-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 20_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface KqOptions {
  numAgents?: number;
  args?: string[];
  env?: Record<string, string>;
  dataRoot?: string;
}

/** Every process a test started, killed (whole group) at the end of the test file. */
const started = new Set<number>();

export class Kq {
  proc: ResultPromise | null = null;
  info!: DaemonInfo;
  readonly dataRoot: string;
  output = '';

  constructor(readonly options: KqOptions = {}) {
    this.dataRoot = options.dataRoot ?? path.join(tempDir(), 'data root');
  }

  static async start(options: KqOptions = {}): Promise<Kq> {
    const kq = new Kq(options);
    await kq.start();
    return kq;
  }

  /** Start (or restart) the daemon on this data root; ports are reused after the first start. */
  async start(): Promise<void> {
    const ports = this.info
      ? ['--request-port', String(this.info.requestPort), '--update-port', String(this.info.updatePort), '--broadcast-port', String(this.info.broadcastPort),
        '--http-port', String(this.info.httpPort ?? 0)]
      : ['--request-port', '0', '--update-port', '0', '--broadcast-port', '0', '--http-port', '0'];
    const infoFile = path.join(this.dataRoot, 'kq.json');
    this.output = '';
    this.proc = execa('node', [BIN.kq, '--data-root', this.dataRoot, '--num-agents', String(this.options.numAgents ?? 2), ...ports, ...(this.options.args ?? [])], {
      env: { ...this.options.env }, detached: true, reject: false, all: true, buffer: false,
    });
    started.add(this.proc.pid!);
    this.proc.all?.on('data', (d: Buffer) => { this.output += d.toString(); });
    const exited = this.proc.then((r) => r);
    // Generous: on a machine loaded far beyond its cores a start can take many seconds; if it never comes, what
    // kq said (and its log) tells why.
    const ready = waitFor('kq.json', () => fs.lstatSync(infoFile, { throwIfNoEntry: false })?.isFile() && JSON.parse(fs.readFileSync(infoFile, 'utf8')).pid === this.proc!.pid, 60_000)
      .catch((err: Error) => { throw new Error(`${err.message}; kq said: ${this.output.slice(-2000) || '(nothing)'}; kq.log: ${tail(path.join(this.dataRoot, 'logs', 'kq.log'))}`); });
    await Promise.race([
      ready,
      exited.then((r) => { throw new Error(`kq exited (${r.exitCode}) before it was ready: ${this.output}`); }),
    ]);
    this.info = JSON.parse(fs.readFileSync(infoFile, 'utf8')) as DaemonInfo;
    const want = this.options.numAgents ?? 2;
    await waitFor(`${want} local agents`, async () => (await this.agents()).filter((a) => a.local && a.state !== 'lost').length >= want);
  }

  /** Run kqctl against this kq. */
  async ctl(...args: string[]): Promise<RunResult> {
    // A generous deadline: on a loaded CI machine kq may take longer than the interactive 2 s to answer.
    return kqctl(['--data-root', this.dataRoot, '--connect-timeout', '15s', ...args]);
  }

  async json<T = any>(...args: string[]): Promise<T> {
    const r = await this.ctl(...args, '--json');
    if (r.exitCode !== 0) throw new Error(`kqctl ${args.join(' ')} exited ${r.exitCode}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  async submit(...args: string[]): Promise<number> {
    const r = await this.ctl('submit', ...args);
    if (r.exitCode !== 0) throw new Error(`submit failed (${r.exitCode}): ${r.stderr}`);
    return Number(r.stdout.trim().split('\n')[0]);
  }

  async waitJob(id: number, timeoutMs = 60_000): Promise<any> {
    return waitFor(`job ${id} to end`, async () => {
      const job = await this.json('show', String(id));
      return ['Completed', 'Failed', 'Cancelled'].includes(job.state) ? job : null;
    }, timeoutMs, 100);
  }

  async agents(): Promise<any[]> {
    return this.json('agents');
  }

  agentArgs(): string[] {
    return ['--request-port', String(this.info.requestPort), '--update-port', String(this.info.updatePort),
      '--broadcast-port', String(this.info.broadcastPort), '127.0.0.1'];
  }

  /** SIGTERM and wait for a clean exit; returns the exit code. */
  async stop(): Promise<number | undefined> {
    if (!this.proc) return undefined;
    this.proc.kill('SIGTERM');
    const r = await this.proc;
    this.proc = null;
    return r.exitCode;
  }

  async kill9(): Promise<void> {
    if (!this.proc) return;
    process.kill(this.proc.pid!, 'SIGKILL');
    await this.proc;
    this.proc = null;
  }

  log(name = 'kq.log'): string {
    return fs.readFileSync(path.join(this.dataRoot, 'logs', name), 'utf8');
  }
}

export async function kqctl(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  // kqctl bounds every wait of its own (--connect-timeout): one still running after a minute is hung, and the
  // test should say which call hung and what it printed rather than run into vitest's own timeout.
  const r = await execa('node', [BIN.kqctl, ...args], { env, reject: false, timeout: 60_000 });
  if (r.timedOut) throw new Error(`kqctl ${args.join(' ')} still running after 60 s (killed); stderr: ${String(r.stderr)}`);
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Start a kq-agent by hand (e.g. to simulate another host). */
export function startAgent(args: string[], env: Record<string, string> = {}): ResultPromise {
  const proc = execa('node', [BIN.agent, ...args], { env, detached: true, reject: false, all: true, buffer: false });
  started.add(proc.pid!);
  return proc;
}

/** Processes whose command line contains `needle` (e.g. a port number kq was given). */
export function processesMatching(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ');
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (cmd.includes(needle) && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z') pids.push(Number(entry));
    } catch { /* gone */ }
  }
  return pids;
}

export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Kill every process group a test started, and any agent left dialing a test kq's ports. */
export async function cleanupAll(kqs: Kq[] = []): Promise<void> {
  for (const kq of kqs) {
    if (kq.proc) await kq.stop().catch(() => undefined);
    if (kq.info) for (const pid of processesMatching(`--request-port ${kq.info.requestPort} `)) killTree(pid);
  }
  for (const pid of started) killTree(pid);
  started.clear();
}

function killTree(pid: number): void {
  for (const target of [-pid, pid]) {
    try { process.kill(target, 'SIGKILL'); } catch { /* gone */ }
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * For one test file: a `start` that runs kq with these extra arguments (tests shorten timers this way);
 * every kq it started, and every process a test started, is cleaned up after the file.
 */
export function kqStarter(defaultArgs: string[] = []): (o?: KqOptions) => Promise<Kq> {
  const kqs: Kq[] = [];
  afterAll(() => cleanupAll(kqs));
  return async (o: KqOptions = {}) => {
    const kq = await Kq.start({ ...o, args: [...defaultArgs, ...(o.args ?? [])] });
    kqs.push(kq);
    return kq;
  };
}

/** The last lines of a file, or why there are none. */
function tail(file: string, bytes = 2000): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.slice(-bytes) || '(empty)';
  } catch (err) {
    return `(${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`;
  }
}
