/** What `kqctl slurm start|stop` do (slurm.ts defines the commands and loads this when one runs). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dataFiles, defaultDataRoot, type DaemonInfo } from '../../common/paths.js';
import { isLoopback } from '../../common/endpoint.js';
import { revokeClient } from '../../common/keys.js';
import type { AgentInfo } from '../../protocol/index.js';
import { readableLog, indent } from '../../ssh/remote-agents.js';
import { SlurmError, clusterName, scancel, squeue, type QueuedTask } from '../../slurm/client.js';
import { outputFile, prepareAgentKeys, submitAgentJob, type AgentKeys } from '../../slurm/agent-job.js';
import { agentJobNames } from '../../slurm/agent-jobs.js';
import type { KqClient } from '../client.js';
import type { ConnectionFlags } from '../connect.js';
import { CliError, EXIT } from '../exit-codes.js';
import { agentsTable, printJson } from '../format.js';

const POLL_MS = 500;
const SQUEUE_EVERY_MS = 2000;

export interface StartFlags extends ConnectionFlags {
  agents: number;
  partition?: string;
  time: number;
  cpusPerAgent?: number;
  mem?: string;
  sbatchArg: string[];
  installRoot: string;
  node: string;
  agentDataRoot?: string;
  kqHost?: string;
  killGrace: number;
  registerTimeout: number;
  json: boolean;
}

export interface StopFlags { dataRoot?: string; job: string[]; wait: number; json: boolean }

export async function startCommand(client: KqClient, flags: StartFlags): Promise<number> {
  const kqDataRoot = path.resolve(flags.dataRoot ?? defaultDataRoot());
  const info = readKqInfo(kqDataRoot);
  await client.request('ping', {}); // kq unreachable → exit 3 before submitting anything
  if (!info) throw new CliError(EXIT.usage, `no kq.json in ${kqDataRoot}: run kqctl slurm start on kq's machine, with --data-root <kq's data root>`);
  const agentDataRoot = path.resolve(flags.agentDataRoot ?? path.join(kqDataRoot, 'slurm'));
  const wildcard = ['0.0.0.0', '*', '::'].includes(info.bind);
  const kqHost = flags.kqHost ?? (wildcard ? os.hostname() : info.bind);
  if (isLoopback(info.bind) && !flags.json) {
    process.stderr.write(`kqctl: kq listens on ${info.bind} only: agents on other machines cannot reach it (restart kq with --bind 0.0.0.0 for a real cluster)\n`);
  }
  const started = Date.now();
  try {
    let keys: AgentKeys | null = null;
    if (info.curve) {
      keys = await prepareAgentKeys(kqDataRoot, agentDataRoot, await clusterName());
      if (keys.created && !flags.json) process.stderr.write(`kqctl: kq requires CURVE: allowed a new client "${keys.name}" for the cluster's agents (kqctl keys revoke ${keys.name} refuses them)\n`);
    }
    const jobId = await submitAgentJob({
      count: flags.agents, jobName: agentJobNames(kqDataRoot).started, partition: flags.partition, timeMs: flags.time,
      cpusPerAgent: flags.cpusPerAgent, mem: flags.mem, sbatchArgs: flags.sbatchArg, installRoot: flags.installRoot, node: flags.node,
      agentDataRoot, kqHost, ports: { request: info.requestPort, update: info.updatePort, broadcast: info.broadcastPort },
      killGraceMs: flags.killGrace, curve: keys,
    }).catch((err) => {
      // No agent was submitted: a client allowed for this start must not stay on kq's allowlist.
      if (keys?.created) revokeClient(kqDataRoot, keys.name);
      throw err;
    });
    if (!flags.json) process.stdout.write(`submitted Slurm job ${jobId}: ${flags.agents} kq agent(s) dialing kq at ${kqHost}\n`);
    const { registered, queue } = await waitForAgents(client, jobId, flags);
    const seconds = (Date.now() - started) / 1000;
    const missing = [...Array(flags.agents).keys()].filter((t) => !registered.has(t));
    if (flags.json) {
      printJson({ slurmJobId: jobId, kqHost, agentDataRoot, seconds, agents: [...registered.values()], missing: missing.map((t) => `${jobId}_${t}`) });
    }
    if (missing.length > 0) {
      process.stderr.write(notRegisteredReport(jobId, missing, queue, flags, agentDataRoot, kqHost, info));
      return EXIT.notRegistered;
    }
    if (!flags.json) {
      process.stdout.write(`all ${flags.agents} agent(s) registered in ${seconds.toFixed(1)}s\n`);
      process.stdout.write(agentsTable([...registered.values()]));
      process.stdout.write(`Slurm output: ${path.join(agentDataRoot, 'logs', `kq-agent-${jobId}_<task>.out`)}; stop them with: kqctl slurm stop --job ${jobId}\n`);
    }
    return EXIT.ok;
  } catch (err) {
    throw asCliError(err);
  }
}

/**
 * Poll kq's agents (and now and then squeue) until every array task registered, the deadline passed, or
 * every missing task has left the queue (it ended: waiting longer cannot help). Says why tasks are pending.
 */
async function waitForAgents(client: KqClient, jobId: number, flags: StartFlags):
  Promise<{ registered: Map<number, AgentInfo>; queue: QueuedTask[] }> {
  const registered = new Map<number, AgentInfo>();
  const deadline = Date.now() + flags.registerTimeout;
  let queue: QueuedTask[] = [];
  let lastSqueue = 0;
  let lastSaid = '';
  for (;;) {
    const agents = await client.request<AgentInfo[]>('agents', {}).catch((err) => {
      if (err instanceof CliError && err.exitCode === EXIT.unreachable && Date.now() < deadline) return [] as AgentInfo[];
      throw err;
    });
    for (const a of agents) {
      if (a.slurm?.jobId === jobId && a.slurm.arrayTaskId !== null && (a.state === 'idle' || a.state === 'busy')) registered.set(a.slurm.arrayTaskId, a);
    }
    if (registered.size >= flags.agents || Date.now() >= deadline) break;
    if (Date.now() - lastSqueue >= SQUEUE_EVERY_MS) {
      lastSqueue = Date.now();
      queue = (await squeue([agentJobNamesFor(flags)]).catch(() => queue)).filter((q) => q.arrayJobId === jobId);
      const waiting = queue.filter((q) => q.arrayTaskId === null || !registered.has(q.arrayTaskId));
      const pending = waiting.filter((q) => q.state === 'PENDING');
      const said = pending.length ? `${countTasks(pending)} agent job(s) pending in Slurm (${[...new Set(pending.map((q) => q.reason))].join(', ')})` : '';
      if (said && said !== lastSaid && !flags.json) process.stderr.write(`kqctl: ${said}\n`);
      lastSaid = said;
      // Nothing missing is queued any more: those tasks ended without registering.
      if (waiting.length === 0 && Date.now() - (deadline - flags.registerTimeout) > SQUEUE_EVERY_MS) break;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return { registered, queue };
}

/** A still-unsplit pending array (`123_[2-5]`) counts as its number of tasks. */
function countTasks(tasks: QueuedTask[]): number {
  return tasks.reduce((n, q) => {
    const m = /_\[(\d+)-(\d+)/.exec(q.id);
    return n + (m ? Number(m[2]) - Number(m[1]) + 1 : 1);
  }, 0);
}

let namesCache: string | null = null;
function agentJobNamesFor(flags: { dataRoot?: string }): string {
  namesCache ??= agentJobNames(path.resolve(flags.dataRoot ?? defaultDataRoot())).started;
  return namesCache;
}

function notRegisteredReport(jobId: number, missing: number[], queue: QueuedTask[], flags: StartFlags, agentDataRoot: string, kqHost: string, info: DaemonInfo): string {
  const out = [`kqctl: ${missing.length} of ${flags.agents} kq agent(s) of Slurm job ${jobId} did not register with kq within ${flags.registerTimeout / 1000}s ` +
    `(they dial ${kqHost}, ports ${info.requestPort}, ${info.updatePort}, ${info.broadcastPort}).`];
  let anyRunning = false;
  let anyPending = false;
  let logs = '';
  for (const t of missing) {
    const q = queue.find((e) => e.arrayTaskId === t) ?? queue.find((e) => e.arrayTaskId === null);
    const state = !q ? 'no longer in the queue (it ended)' : q.state === 'PENDING' ? `pending (${q.reason})` : `${q.state.toLowerCase()} on ${q.node || '?'}`;
    if (q?.state === 'RUNNING') anyRunning = true;
    if (q?.state === 'PENDING') anyPending = true;
    const file = outputFile(agentDataRoot, jobId, t);
    let tail = '';
    try {
      tail = readableLog(fs.readFileSync(file, 'utf8').split('\n').slice(-15).join('\n'));
    } catch (err) {
      tail = q?.state === 'PENDING' ? '' : `(cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
    }
    logs += tail + '\n';
    out.push(`array task ${jobId}_${t}, ${state}: ${tail ? `the end of ${file}:\n${indent(tail)}` : `no output yet in ${file}`}`);
  }
  out.push('Check:');
  if (/cannot resolve kq host/.test(logs)) out.push(`  - name resolution: the compute nodes cannot resolve "${kqHost}": pass --kq-host with an address of this machine they reach`);
  if (/cannot reach kq/.test(logs) && info.curve) out.push('  - CURVE keys: is the agents\' client still allowed (kqctl keys list) and --agent-data-root the directory they read?');
  if (anyPending) out.push('  - Slurm has not started every agent yet (see the reasons above): they register once it does; or choose another --partition');
  out.push(`  - kq must listen where the compute nodes reach it (kq --bind 0.0.0.0), and ${kqHost} (--kq-host) must be its address from there`);
  out.push(`  - firewall: TCP ports ${info.requestPort}, ${info.updatePort}, ${info.broadcastPort} open from the compute nodes to this machine`);
  out.push(`  - kq installed at ${flags.installRoot} (--install-root) and node at ${flags.node} (--node) on the compute nodes; ${agentDataRoot} shared with them (--agent-data-root)`);
  if (anyRunning || anyPending) out.push(`The job stays queued; cancel it with: kqctl slurm stop --job ${jobId}`);
  return out.join('\n') + '\n';
}

export async function stopCommand(flags: StopFlags): Promise<number> {
  const kqDataRoot = path.resolve(flags.dataRoot ?? defaultDataRoot());
  const names = agentJobNames(kqDataRoot);
  const ours = await squeue([names.started, names.autoscaled]);
  for (const j of flags.job) {
    if (!/^\d+(_\d+)?$/.test(j)) throw new CliError(EXIT.usage, `--job ${j}: expected a Slurm job id (123) or array task (123_4)`);
    if (!ours.some((q) => String(q.arrayJobId) === j.split('_')[0])) {
      throw new CliError(EXIT.usage, `--job ${j}: not a queued agent job of this kq (${kqDataRoot}); kqctl slurm stop cancels only those`);
    }
  }
  const ids = flags.job.length ? flags.job : [...new Set(ours.map((q) => String(q.arrayJobId)))];
  await scancel(ids);
  const cancelled = (q: QueuedTask) => ids.some((id) => id === String(q.arrayJobId) || id === q.id);
  const deadline = Date.now() + flags.wait;
  let left = ours.filter(cancelled);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    left = (await squeue([names.started, names.autoscaled])).filter(cancelled);
  }
  if (flags.json) printJson({ cancelled: ids, stillQueued: left.map((q) => q.id) });
  else if (ids.length === 0) process.stdout.write(`no Slurm agent jobs of this kq are queued\n`);
  else process.stdout.write(`cancelled Slurm job(s) ${ids.join(', ')}${left.length ? `; still leaving the queue: ${left.map((q) => q.id).join(', ')}` : '; none left in the queue'}\n`);
  return EXIT.ok;
}

export function asCliError(err: unknown): CliError {
  if (err instanceof CliError) return err;
  if (err instanceof SlurmError) return new CliError(EXIT.remote, err.message);
  return new CliError(EXIT.usage, (err as Error).message);
}

function readKqInfo(kqDataRoot: string): DaemonInfo | null {
  try {
    return JSON.parse(fs.readFileSync(dataFiles(kqDataRoot).info, 'utf8')) as DaemonInfo;
  } catch {
    return null;
  }
}
