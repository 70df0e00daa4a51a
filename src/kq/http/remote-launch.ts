/**
 * Launch Remote Agents from the monitor page (issue 17 #6): each launch runs `kqctl remote start --json
 * --progress` as a child process, so the page gets exactly kqctl's steps, exit codes and diagnosis.
 *
 * Why a child and not in-process: the start code reads known_hosts and private keys and makes CURVE keys
 * with synchronous file I/O, writes its report to stdout/stderr, and waits up to --register-timeout —
 * all inside kq's event loop otherwise. The child gets every value as one `--flag=value` argument (no
 * shell, and a value can never become an option), runs in its own process group, and is killed when kq
 * stops. The agents it starts are the remote machine's (setsid there): they stay.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { Logger } from 'pino';
import { installRoot } from '../../common/install-root.js';
import type { DaemonInfo } from '../../common/paths.js';
import type { RemoteLaunch, RemoteLaunchRequest } from '../../protocol/remote-launch.js';

/** `kqctl remote`'s exit codes in words (its --help). */
const REASONS: Record<number, string> = {
  0: 'ok',
  2: 'bad usage or input (or no such install root there)',
  3: 'kq unreachable',
  4: 'SSH failed or was refused (unknown/changed host key, login refused), or a remote script failed',
  5: 'the agents started but did not register with kq in time',
  6: 'unexpected error',
};

const MAX_RUNNING = 4;
const KEEP_ENDED = 20;
const MAX_OUTPUT = 256 * 1024;
const MAX_PROGRESS_LINES = 300;

export class LaunchRefused extends Error {}

interface Running { launch: RemoteLaunch; child: ChildProcess | null }

export class RemoteLaunches {
  private readonly launches = new Map<number, Running>();
  private nextId = 1;
  private stopping = false;

  constructor(private readonly info: () => DaemonInfo | undefined, private readonly log: Logger) {}

  list(): RemoteLaunch[] {
    return [...this.launches.values()].map((r) => r.launch).reverse();
  }

  get(id: number): RemoteLaunch | undefined {
    return this.launches.get(id)?.launch;
  }

  start(req: RemoteLaunchRequest): RemoteLaunch {
    const info = this.info();
    if (!info || this.stopping) throw new LaunchRefused('kq is starting or stopping: try again in a moment');
    const running = [...this.launches.values()].filter((r) => r.launch.state === 'running');
    const host = req.host.toLowerCase();
    const same = running.find((r) => r.launch.host.toLowerCase() === host);
    if (same) throw new LaunchRefused(`a launch on ${req.host} is already running (launch ${same.launch.id}): wait for it to end`);
    if (running.length >= MAX_RUNNING) throw new LaunchRefused(`${running.length} launches are running: wait for one to end`);

    const launch: RemoteLaunch = {
      id: this.nextId++, host: req.host, sshPort: req.sshPort ?? 22, user: req.user, numAgents: req.numAgents,
      state: 'running', startedAt: new Date().toISOString(), endedAt: null, progress: [], messages: '', exitCode: null, reason: null, result: null,
    };
    const entry: Running = { launch, child: null };
    this.launches.set(launch.id, entry);
    this.forgetOld();
    this.log.info({ launch: launch.id, host: req.host, sshPort: launch.sshPort, user: req.user, numAgents: req.numAgents }, 'launching remote agents (kqctl remote start)');

    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [path.join(installRoot(), 'bin', 'kqctl.js'), ...kqctlArgs(req, info)], {
        detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: childEnv(),
      });
    } catch (err) {
      this.end(entry, null, `kq could not run kqctl: ${(err as Error).message}`);
      return launch;
    }
    entry.child = child;
    let stdout = '';
    let stderrLine = '';
    child.stdout!.on('data', (d: Buffer) => { if (stdout.length < MAX_OUTPUT) stdout += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => {
      const lines = (stderrLine + d.toString()).split('\n');
      stderrLine = lines.pop()!;
      for (const line of lines) this.stderrLine(launch, line);
    });
    child.on('error', (err) => this.end(entry, null, `kq could not run kqctl: ${err.message}`));
    child.on('close', (code, signal) => {
      if (stderrLine) this.stderrLine(launch, stderrLine);
      try {
        launch.result = stdout.trim() ? JSON.parse(stdout) : null;
      } catch {
        launch.messages += stdout.slice(0, 4096);
      }
      this.end(entry, code, signal ? `kqctl was stopped (${signal})${this.stopping ? ': kq is stopping' : ''}` : null);
    });
    return launch;
  }

  /** kq stops: end every launch's kqctl (its process group). */
  stopAll(): void {
    this.stopping = true;
    for (const r of this.launches.values()) {
      if (r.launch.state === 'running' && r.child?.pid) {
        try {
          process.kill(-r.child.pid, 'SIGTERM');
        } catch { /* already gone */ }
      }
    }
  }

  private stderrLine(launch: RemoteLaunch, line: string): void {
    const m = /^progress: (.*)$/.exec(line);
    if (m) {
      if (launch.progress.length < MAX_PROGRESS_LINES) launch.progress.push(m[1]!);
    } else if (launch.messages.length < MAX_OUTPUT) {
      launch.messages += line + '\n';
    }
  }

  private end(entry: Running, code: number | null, why: string | null): void {
    const launch = entry.launch;
    if (launch.state !== 'running') return;
    launch.exitCode = code;
    launch.state = code === 0 ? 'succeeded' : 'failed';
    launch.reason = why ?? REASONS[code ?? -1] ?? `kqctl exited with ${code}`;
    launch.endedAt = new Date().toISOString();
    entry.child = null;
    this.log.info({ launch: launch.id, host: launch.host, exitCode: code, reason: launch.reason }, 'remote agents launch ended');
  }

  private forgetOld(): void {
    const ended = [...this.launches.values()].filter((r) => r.launch.state !== 'running');
    for (const r of ended.slice(0, Math.max(0, ended.length - KEEP_ENDED))) this.launches.delete(r.launch.id);
  }
}

/** kqctl's arguments: one `--flag=value` word per value, so none can be read as another option. */
export function kqctlArgs(req: RemoteLaunchRequest, info: DaemonInfo): string[] {
  const args = ['remote', 'start', '--json', '--progress',
    `--host=${req.host}`, `--ssh-port=${req.sshPort ?? 22}`, `--user=${req.user}`, `--num-agents=${req.numAgents}`,
    `--kq-data-root=${info.dataRoot}`, `--request-port=${info.requestPort}`, `--update-port=${info.updatePort}`,
    `--broadcast-port=${info.broadcastPort}`, '--connect-timeout=15s'];
  if (req.identity) args.push(`--identity=${req.identity}`);
  if (req.installRoot) args.push(`--install-root=${req.installRoot}`);
  if (req.dataRoot) args.push(`--data-root=${req.dataRoot}`);
  if (req.acceptNewHostKey) args.push('--accept-new-host-key');
  return args;
}

/** kq's environment without KQ_* settings that would point kqctl at another kq or other keys. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { NO_COLOR: '1' };
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('KQ_') || k === 'KQ_SSH_PASSPHRASE') env[k] = v;
  }
  return env;
}
