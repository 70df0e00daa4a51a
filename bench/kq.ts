/**
 * kq under test: a daemon with local agents in a temp data root on free ports, an in-process client
 * (src/kqctl/client.ts) for submits and queries, and a subscriber that notices when jobs end.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as zmq from 'zeromq';
import { KqClient } from '../src/kqctl/client.js';
import { resolveAddress } from '../src/kqctl/address.js';
import type { AgentInfo, JobDetail, JobSubmit, JobSummary } from '../src/protocol/index.js';
import type { DaemonInfo } from '../src/common/paths.js';
import { now } from './stats.js';

/** Repository root (this file runs from dist/bench/). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = {
  kq: path.join(ROOT, 'bin', 'kq.js'),
  kqctl: path.join(ROOT, 'bin', 'kqctl.cjs'),
};
/** kqctl's entry in a kq checkout (bin/kqctl.cjs; bin/kqctl.js before it had a code cache). */
export function kqctlBin(root: string): string {
  const cjs = path.join(root, 'bin', 'kqctl.cjs');
  return fs.existsSync(cjs) ? cjs : path.join(root, 'bin', 'kqctl.js');
}
const PRELOAD = path.join(ROOT, 'dist', 'bench', 'cpu-profile-preload.js');
const TERMINAL = new Set(['Completed', 'Failed', 'Cancelled']);

export interface KqStartOptions {
  numAgents: number;
  /** Write .cpuprofile files of kq and its agents here (see cpu-profile-preload.ts). */
  profileDir?: string;
  extraArgs?: string[];
  /** Another build of kq to run (a checkout with bin/ and dist/); default: this one. */
  root?: string;
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export class KqUnderTest {
  info!: DaemonInfo;
  client!: KqClient;
  private proc: ChildProcess | null = null;
  private sub: zmq.Subscriber | null = null;
  /** Job id → time (bench clock, ms) its terminal state was first seen. */
  private readonly ended = new Map<number, number>();
  private waiters: Array<() => void> = [];
  private lastEventAt = 0;

  private constructor(readonly dataRoot: string, readonly options: KqStartOptions) {}

  static async start(options: KqStartOptions): Promise<KqUnderTest> {
    const kq = new KqUnderTest(path.join(tempDir('kq-bench-'), 'data'), options);
    try {
      await kq.launch();
    } catch (err) {
      await kq.stop();
      throw err;
    }
    return kq;
  }

  get pid(): number {
    return this.info.pid;
  }

  private async launch(): Promise<void> {
    const env = { ...process.env };
    if (this.options.profileDir) {
      env.KQ_BENCH_PROFILE_DIR = this.options.profileDir;
      env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --import ${PRELOAD}`.trim();
    }
    const log = fs.openSync(path.join(path.dirname(this.dataRoot), 'kq.out'), 'a');
    const bin = this.options.root ? path.join(this.options.root, 'bin', 'kq.js') : BIN.kq;
    // The web monitor stays on (as users run kq), on a free port rather than the fixed default.
    const http = kqFlags(bin).includes('--http-port') ? ['--http-port', '0'] : [];
    this.proc = spawn(process.execPath, [bin, '--data-root', this.dataRoot, '--num-agents', String(this.options.numAgents),
      '--request-port', '0', '--update-port', '0', '--broadcast-port', '0', ...http, ...(this.options.extraArgs ?? [])],
    { env, detached: true, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const infoFile = path.join(this.dataRoot, 'kq.json');
    await until('kq.json', () => {
      if (this.proc?.exitCode !== null) throw new Error(`kq exited early: ${this.output()}`);
      try {
        const info = JSON.parse(fs.readFileSync(infoFile, 'utf8')) as DaemonInfo;
        if (info.pid !== this.proc.pid) return false;
        this.info = info;
        return true;
      } catch {
        return false;
      }
    }, 20_000);
    this.client = new KqClient(resolveAddress({ dataRoot: this.dataRoot }), 120_000);
    this.sub = new zmq.Subscriber({ linger: 0 });
    this.sub.subscribe('job.');
    this.sub.connect(`tcp://${this.info.host}:${this.info.broadcastPort}`);
    void this.receiveJobEvents(this.sub);
    await until(`${this.options.numAgents} agents`, async () =>
      (await this.agents()).filter((a) => a.state === 'idle').length >= this.options.numAgents, 30_000);
  }

  output(): string {
    try {
      return fs.readFileSync(path.join(path.dirname(this.dataRoot), 'kq.out'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Job broadcasts, parsed with plain JSON (no validation) to keep the bench's own CPU use small. */
  private async receiveJobEvents(sub: zmq.Subscriber): Promise<void> {
    try {
      for await (const [, frame] of sub) {
        this.lastEventAt = now();
        const msg = JSON.parse(frame!.toString()) as { jobId?: number; state?: string };
        if (msg.jobId !== undefined && msg.state && TERMINAL.has(msg.state) && !this.ended.has(msg.jobId)) {
          this.ended.set(msg.jobId, now());
          const w = this.waiters;
          this.waiters = [];
          for (const f of w) f();
        }
      }
    } catch {
      // socket closed
    }
  }

  /** KqClient allows one request at a time (one pending zeromq receive): callers queue here. */
  private chain: Promise<unknown> = Promise.resolve();
  request<T>(type: 'agents' | 'submit' | 'show' | 'list' | 'stop' | 'pause' | 'resume', body: object): Promise<T> {
    const next = this.chain.then(() => this.client.request<T>(type, body as never));
    this.chain = next.catch(() => undefined);
    return next;
  }

  async agents(): Promise<AgentInfo[]> {
    return this.request<AgentInfo[]>('agents', {});
  }

  /** `list` answered in process (no kqctl start-up), `n` times: kq's own share of a list, in ms each. */
  async timedInProcessLists(n = 10): Promise<number[]> {
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = now();
      await this.request('list', {});
      times.push(now() - t0);
    }
    return times;
  }

  /** The local agents' pids, and their kq-spawn-helpers' (which fork the renders: agent-side CPU too). */
  async agentPids(): Promise<number[]> {
    const agents = (await this.agents()).filter((a) => a.local && (a.state === 'idle' || a.state === 'busy')).map((a) => a.pid);
    return [...agents, ...childrenNamed(agents, 'kq-spawn-helper')];
  }

  submit(job: JobSubmit): Promise<JobSummary> {
    return this.request<JobSummary>('submit', { job });
  }

  show(jobId: number): Promise<JobDetail> {
    return this.request<JobDetail>('show', { jobId });
  }

  /**
   * Resolve when every job has ended; returns the bench-clock time the last one was seen ending.
   * Broadcasts make it prompt; a `show` of the still-pending jobs after a quiet second makes it certain.
   */
  async waitJobs(ids: number[], timeoutMs: number): Promise<number> {
    const deadline = now() + timeoutMs;
    for (;;) {
      const pending = ids.filter((id) => !this.ended.has(id));
      if (pending.length === 0) return Math.max(...ids.map((id) => this.ended.get(id)!));
      if (now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${pending.length} job(s), e.g. ${pending[0]}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
      if (now() - this.lastEventAt > 1000) {
        for (const id of ids.filter((i) => !this.ended.has(i)).slice(0, 50)) {
          const { state } = await this.request<JobSummary>('show', { jobId: id }).catch(() => ({ state: 'unknown' }));
          if (TERMINAL.has(state)) this.ended.set(id, now());
        }
      }
    }
  }

  /** Run kqctl against this kq; returns wall ms (spawn to exit), exit code and stdout. */
  ctl(args: string[], timeoutMs = 120_000): Promise<{ ms: number; code: number | null; stdout: string; stderr: string }> {
    return runTimed(process.execPath, [this.options.root ? kqctlBin(this.options.root) : BIN.kqctl, '--data-root', this.dataRoot, ...args], { timeoutMs });
  }

  async stop(): Promise<void> {
    this.sub?.close();
    this.client?.close();
    const proc = this.proc;
    this.proc = null;
    if (proc && proc.exitCode === null) {
      const exited = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => { try { process.kill(-proc.pid!, 'SIGKILL'); } catch { /* gone */ } }, 15_000);
      await exited;
      clearTimeout(timer);
    }
    // Data roots of 100,000-task runs are large; KQ_BENCH_KEEP=1 keeps them for a look.
    if (!process.env.KQ_BENCH_KEEP) fs.rmSync(path.dirname(this.dataRoot), { recursive: true, force: true });
  }
}

const helpCache = new Map<string, string>();
/** `kq --help` of a kq build, to pass only flags it knows. */
function kqFlags(bin: string): string {
  let help = helpCache.get(bin);
  if (help === undefined) {
    help = spawnSync(process.execPath, [bin, '--help'], { encoding: 'utf8', timeout: 20_000 }).stdout ?? '';
    helpCache.set(bin, help);
  }
  return help;
}

export interface TimedResult { ms: number; code: number | null; stdout: string; stderr: string }

/** Spawn a command, collect its output, and time it from spawn to exit. */
export function runTimed(cmd: string, args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}): Promise<TimedResult> {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    if (o.input !== undefined) child.stdin!.end(o.input);
    const timer = o.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), o.timeoutMs) : null;
    child.on('error', reject);
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      resolve({ ms: now() - t0, code, stdout, stderr });
    });
  });
}

export async function until(what: string, fn: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await fn()) return;
    } catch (err) {
      last = err;
      if ((err as Error).message?.startsWith('kq exited early')) throw err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Processes whose parent is one of `parents` and whose name (comm) is `comm`. */
function childrenNamed(parents: number[], comm: string): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (name === comm && parents.includes(ppid)) out.push(Number(entry));
    } catch { /* gone */ }
  }
  return out;
}
