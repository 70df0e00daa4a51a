/**
 * One Slurm job array of kq agents: the batch script (one kq-agent per array task, dialing back to kq)
 * and the sbatch options. No secret goes into the script, its environment or a command line: an agent
 * reads its CURVE key pair from a 0600 file under the agent data root (a shared file system, as on HPC).
 *
 * Layout of the agent data root (default <kq data root>/slurm):
 *   keys/server.key, keys/<client>.key_secret   kq's public key; the agents' allowlisted key pair (0600, dir 0700)
 *   logs/kq-agent-<job>_<task>.out               each agent's Slurm output (its log)
 */
import fs from 'node:fs';
import path from 'node:path';
import { addClient, checkName, keyFiles, revokeClient } from '../common/keys.js';
import { ensurePrivateDir, localDirOps, writeFileAtomic } from '../common/private-dir.js';
import { shellQuote } from '../ssh/shell-quote.js';
import { sbatch, slurmTime } from './client.js';

export interface KqPorts { request: number; update: number; broadcast: number }

export interface AgentJobSpec {
  count: number;
  /** Job name: how kq finds its agent jobs again (see agent-jobs.ts). */
  jobName: string;
  partition?: string;
  timeMs?: number;
  cpusPerAgent?: number;
  mem?: string;
  /** More sbatch options, passed as they are (before kq's own, which win). */
  sbatchArgs?: string[];
  installRoot: string;
  node: string;
  agentDataRoot: string;
  kqHost: string;
  ports: KqPorts;
  killGraceMs: number;
  curve: AgentKeys | null;
}

export interface AgentKeys { name: string; serverKeyFile: string; keyFile: string; created: boolean }

export const outputPattern = (agentDataRoot: string) => path.join(agentDataRoot, 'logs', 'kq-agent-%A_%a.out');
export const outputFile = (agentDataRoot: string, jobId: number, task: number) => path.join(agentDataRoot, 'logs', `kq-agent-${jobId}_${task}.out`);

export function batchScript(s: AgentJobSpec): string {
  const argv = [s.node, path.join(s.installRoot, 'bin', 'kq-agent.js'), '--slurm',
    '--request-port', String(s.ports.request), '--update-port', String(s.ports.update), '--broadcast-port', String(s.ports.broadcast),
    '--kill-grace', `${s.killGraceMs}ms`,
    // Paths only: the key material stays in files.
    ...(s.curve ? ['--server-key', s.curve.serverKeyFile, '--key-file', s.curve.keyFile] : []),
    s.kqHost];
  return [
    '#!/bin/sh',
    '# kq agent, one per array task, dialing back to kq (submitted by kqctl slurm start or kq --slurm-autoscale).',
    '# exec: the agent is the job\'s process, so scancel and the time limit signal it directly (SIGTERM: it hands its task back).',
    `exec ${argv.map(shellQuote).join(' ')}`,
    '',
  ].join('\n');
}

export function sbatchArgs(s: AgentJobSpec): string[] {
  return [
    ...(s.sbatchArgs ?? []),
    `--job-name=${s.jobName}`,
    `--array=0-${s.count - 1}`,
    `--output=${outputPattern(s.agentDataRoot)}`,
    `--chdir=${s.agentDataRoot}`,
    '--ntasks=1',
    ...(s.partition ? [`--partition=${s.partition}`] : []),
    ...(s.timeMs ? [`--time=${slurmTime(s.timeMs)}`] : []),
    ...(s.cpusPerAgent ? [`--cpus-per-task=${s.cpusPerAgent}`] : []),
    ...(s.mem ? [`--mem=${s.mem}`] : []),
  ];
}

/** Make the agent data root's logs/ and submit the array; returns the Slurm job id. */
export async function submitAgentJob(s: AgentJobSpec): Promise<number> {
  fs.mkdirSync(path.join(s.agentDataRoot, 'logs'), { recursive: true });
  return sbatch(sbatchArgs(s), batchScript(s));
}

/**
 * When kq requires CURVE: the cluster's client (`slurm-<cluster>`) on kq's allowlist, made if missing,
 * and its secret plus kq's public key copied under <agent data root>/keys, where the agents read them.
 * The agent data root and keys/ must be this user's alone (UnsafeDirError otherwise, nothing written, and
 * a client made for this call taken back).
 */
export async function prepareAgentKeys(kqDataRoot: string, agentDataRoot: string, cluster: string): Promise<AgentKeys> {
  const name = checkName(`slurm-${cluster.replace(/[^A-Za-z0-9._-]/g, '-')}`.slice(0, 64));
  const f = keyFiles(kqDataRoot);
  let created = false;
  if (!fs.existsSync(f.clientSecret(name))) {
    if (fs.existsSync(f.allowed(name))) {
      throw new Error(`client "${name}" is allowed with a public key only (its secret is not in ${f.clientsDir}): revoke it (kqctl keys revoke ${name}) so kq makes a new pair`);
    }
    addClient(kqDataRoot, name);
    created = true;
  } else if (!fs.existsSync(f.allowed(name))) {
    throw new Error(`client "${name}" is no longer on kq's allowlist (revoked?): remove ${f.clientSecret(name)} to make a new one`);
  }
  try {
    const uid = process.getuid?.() ?? 0;
    const dir = await ensurePrivateDir(localDirOps, path.join(path.resolve(agentDataRoot), 'keys'), uid, 'this user', 2);
    const serverKeyFile = path.join(dir, 'server.key');
    const keyFile = path.join(dir, `${name}.key_secret`);
    // Both written to a fresh temp name first: a file planted at the final name is replaced, never written through.
    if (path.resolve(f.serverPublic) !== serverKeyFile) writeFileAtomic(dir, 'server.key', fs.readFileSync(f.serverPublic), 0o644);
    if (path.resolve(f.clientSecret(name)) !== keyFile) writeFileAtomic(dir, `${name}.key_secret`, fs.readFileSync(f.clientSecret(name)), 0o600);
    return { name, serverKeyFile, keyFile, created };
  } catch (err) {
    if (created) revokeClient(kqDataRoot, name);
    throw err;
  }
}
