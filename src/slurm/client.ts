/**
 * Slurm's own command-line clients (sbatch, squeue, scancel, scontrol), run with a clean environment.
 * They find the cluster through SLURM_CONF or the system config, as for any user. Failures become a
 * SlurmError whose message says what was tried and what Slurm answered.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';

export class SlurmError extends Error {
  constructor(message: string, readonly kind: 'missing' | 'refused') {
    super(message);
  }
}

/** Variables a Slurm client (and, through sbatch's default --export=ALL, an agent job) gets from us: nothing of kq's own (tokens). */
const KEEP = new Set(['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR']);
const SLURM_VAR = /^(SLURM|SBATCH|SQUEUE|SCANCEL|SCONTROL)_/;

export function slurmEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    // Slurm's own job variables would make sbatch think it runs inside that job: keep only configuration.
    if (v === undefined || (!KEEP.has(k) && !SLURM_VAR.test(k)) || /^SLURM_(JOB|ARRAY|STEP|TASK|PROC|NODE|LOCAL|CPU|MEM|NTASK|SUBMIT|CLUSTER_NAME|GTIDS|PRIO|TOPOLOGY|WORKING|NNODES|JOBID)/.test(k)) continue;
    out[k] = v;
  }
  return out;
}

interface RunResult { code: number | null; stdout: string; stderr: string }

function run(cmd: string, args: string[], input?: string, timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: slurmEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    // Our own timer, not spawn's `timeout`: that one keeps the process alive when the command never started.
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(err.code === 'ENOENT'
        ? new SlurmError(`${cmd} not found on PATH: is this machine a Slurm submit host (Slurm's client commands installed, e.g. the slurm-client package)?`, 'missing')
        : new SlurmError(`cannot run ${cmd}: ${err.message}`, 'missing'));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined); // a client that exits without reading its input
    child.stdin.end(input ?? '');
  });
}

/** Slurm's messages without the `sbatch: error: ` prefixes, on one line. */
function slurmSaid(r: RunResult): string {
  const text = (r.stderr || r.stdout).trim().split('\n').map((l) => l.replace(/^\S+: (error|fatal): /, '').trim()).filter(Boolean).join('; ');
  return text || `exit code ${r.code ?? 'none (timed out)'}`;
}

/** Submit a batch script on stdin; returns the job id (`sbatch --parsable` prints `id[;cluster]`). */
export async function sbatch(args: string[], script: string): Promise<number> {
  const r = await run('sbatch', ['--parsable', ...args], script);
  const id = /^(\d+)(;\S*)?\s*$/m.exec(r.stdout)?.[1];
  if (r.code !== 0 || !id) throw new SlurmError(`sbatch refused the agent job: ${slurmSaid(r)}`, 'refused');
  return Number(id);
}

export interface QueuedTask {
  /** As scancel takes it: `123_4` for an array task, `123` for a plain job or a still-unsplit pending array. */
  id: string;
  arrayJobId: number;
  arrayTaskId: number | null;
  state: string;
  /** Why it is pending (`Resources`, `Priority`, `QOSMaxJobsPerUserLimit`…), `None` when running. */
  reason: string;
  node: string;
  name: string;
}

/** This user's queued and running jobs with one of these names, one entry per array task (`squeue -r`). */
export async function squeue(names: string[]): Promise<QueuedTask[]> {
  const r = await run('squeue', ['-h', '-r', '-u', os.userInfo().username, '-n', names.join(','), '-o', '%i|%F|%K|%T|%r|%N|%j']);
  if (r.code !== 0) throw new SlurmError(`squeue failed: ${slurmSaid(r)}`, 'refused');
  return r.stdout.split('\n').filter((l) => l.includes('|')).map((line) => {
    const [id, arrayJob, arrayTask, state, reason, node, name] = line.split('|');
    const task = /^\d+$/.test(arrayTask ?? '') ? Number(arrayTask) : null;
    // `None` right after submission: the scheduler has not looked at it yet.
    const why = state === 'PENDING' && (reason === 'None' || !reason) ? 'not scheduled yet' : reason!;
    return { id: id!, arrayJobId: Number(arrayJob), arrayTaskId: task, state: state!, reason: why, node: node ?? '', name: name ?? '' };
  });
}

/** Cancel jobs or array tasks (`123`, `123_4`). Jobs that already ended are not an error. */
export async function scancel(ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  const r = await run('scancel', ids);
  if (r.code !== 0 && !/Invalid job id|already completing or completed|Job has already finished/i.test(r.stderr)) {
    throw new SlurmError(`scancel ${ids.join(' ')} failed: ${slurmSaid(r)}`, 'refused');
  }
}

/** The cluster's name (ClusterName in slurm.conf), for naming its CURVE client; `cluster` if Slurm does not say. */
export async function clusterName(): Promise<string> {
  const r = await run('scontrol', ['show', 'config']);
  if (r.code !== 0) throw new SlurmError(`cannot read Slurm's configuration (scontrol show config): ${slurmSaid(r)}`, 'refused');
  return /^ClusterName\s*=\s*(\S+)/m.exec(r.stdout)?.[1] ?? 'cluster';
}

/** `8h` as Slurm's `--time` wants it: days-hours:minutes:seconds. */
export function slurmTime(ms: number): string {
  const total = Math.max(60, Math.ceil(ms / 1000));
  const p = (n: number) => String(n).padStart(2, '0');
  const d = Math.floor(total / 86400);
  return `${d}-${p(Math.floor((total % 86400) / 3600))}:${p(Math.floor((total % 3600) / 60))}:${p(total % 60)}`;
}
