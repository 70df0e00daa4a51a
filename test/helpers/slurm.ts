/**
 * A private, throwaway Slurm cluster for tests (facts in shared/SLURM.md): slurmctld and one slurmd per node,
 * auth/none, on free loopback ports, with its config, state and spool in a SHORT temp dir (slurmstepd's
 * Unix sockets must fit in 108 bytes). Every Slurm client a test runs gets SLURM_CONF from `env`.
 * `stop()` always leaves nothing behind: cancel every job, wait for an empty queue, shut the daemons down,
 * then SIGKILL whatever still carries this cluster's SLURM_CONF in its environment (slurmstepd, job processes).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { waitFor } from './kq.js';
import { freePort } from './sshd.js';

export interface SlurmOptions {
  /** Compute nodes (node1, node2, …), each its own slurmd. Default 1. */
  nodes?: number;
  /** CPUs per node (may exceed the machine's: config_overrides). Default 4. */
  cpus?: number;
  /** Seconds between SIGTERM and SIGKILL when a job is cancelled. Default 5. */
  killWait?: number;
}

export class Slurm {
  readonly dir: string;
  readonly conf: string;
  readonly clusterName: string;
  private daemons: ResultPromise[] = [];
  output = '';

  private constructor(readonly options: Required<SlurmOptions>) {
    // /tmp, not os.tmpdir(): TMPDIR may be long, and the spool's socket paths must stay short.
    this.dir = fs.mkdtempSync('/tmp/kqs-');
    this.conf = path.join(this.dir, 'slurm.conf');
    this.clusterName = `kq${path.basename(this.dir).slice(4).toLowerCase().replace(/[^a-z0-9]/g, 'x')}`;
  }

  static async start(o: SlurmOptions = {}): Promise<Slurm> {
    const s = new Slurm({ nodes: o.nodes ?? 1, cpus: o.cpus ?? 4, killWait: o.killWait ?? 5 });
    for (let attempt = 1; ; attempt++) {
      try {
        await s.run();
        return s;
      } catch (err) {
        await s.stop();
        if (attempt >= 3 || !/Address already in use/.test(s.output)) s.removeDir();
        // A port taken between picking and binding: try again with new ports.
        if (attempt >= 3 || !/Address already in use/.test(s.output)) throw err;
        s.output = '';
      }
    }
  }

  /** What every Slurm client (sbatch, squeue, kqctl slurm, kq --slurm-autoscale) needs to find this cluster. */
  get env(): Record<string, string> {
    return { SLURM_CONF: this.conf };
  }

  get nodeNames(): string[] {
    return Array.from({ length: this.options.nodes }, (_, i) => `node${i + 1}`);
  }

  private async run(): Promise<void> {
    const user = os.userInfo().username;
    const ctldPort = await freePort();
    const nodePorts = await Promise.all(this.nodeNames.map(() => freePort()));
    fs.mkdirSync(path.join(this.dir, 'state'), { recursive: true });
    const d = this.dir;
    fs.writeFileSync(this.conf, [
      `ClusterName=${this.clusterName}`, 'SlurmctldHost=localhost', `SlurmctldPort=${ctldPort}`,
      `SlurmUser=${user}`, `SlurmdUser=${user}`, 'AuthType=auth/none', 'CredType=cred/none',
      `StateSaveLocation=${d}/state`, `SlurmdSpoolDir=${d}/spool-%n`,
      `SlurmctldPidFile=${d}/ctld.pid`, `SlurmdPidFile=${d}/slurmd-%n.pid`,
      `SlurmctldLogFile=${d}/ctld.log`, `SlurmdLogFile=${d}/slurmd-%n.log`,
      'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none', 'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none', 'SelectType=select/cons_tres', 'SelectTypeParameters=CR_Core',
      'MpiDefault=none', 'MailProg=/bin/true', 'ReturnToService=2', `KillWait=${this.options.killWait}`,
      'SchedulerParameters=batch_sched_delay=0', 'SlurmdParameters=config_overrides',
      ...this.nodeNames.map((n, i) =>
        `NodeName=${n} NodeHostname=localhost NodeAddr=127.0.0.1 Port=${nodePorts[i]} CPUs=${this.options.cpus} RealMemory=1000`),
      'PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP', '',
    ].join('\n'));
    const env = { ...this.env, PATH: process.env.PATH ?? '/usr/bin:/bin' };
    const spawn = (cmd: string, args: string[]) => {
      const p = execa(cmd, args, { env, extendEnv: false, detached: true, reject: false, all: true, buffer: false, cwd: this.dir });
      p.all?.on('data', (b: Buffer) => { this.output += b.toString(); });
      this.daemons.push(p);
      return p;
    };
    spawn('slurmctld', ['-D']);
    for (const n of this.nodeNames) spawn('slurmd', ['-D', '-N', n]);
    const died = Promise.race(this.daemons.map((p) => p.then((r) => r)))
      .then((r) => { throw new Error(`a Slurm daemon exited (${r.exitCode}) before the cluster was up: ${r.command}\n${this.output}`); });
    await Promise.race([
      died,
      waitFor('Slurm nodes idle', async () => {
        const r = await this.run_('sinfo', ['-h', '-N', '-o', '%T']);
        const states = r.stdout.trim().split('\n').filter(Boolean);
        return states.length === this.options.nodes && states.every((s) => s === 'idle');
      }, 30_000, 200),
    ]);
  }

  /** Run a Slurm client against this cluster. */
  async run_(cmd: string, args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    const r = await execa(cmd, args, { env: this.env, reject: false, timeout: 30_000 });
    return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
  }

  /** Jobs in the queue, one per array task: `{ id: '12_3', state: 'RUNNING', reason, name, node }`. */
  async queue(): Promise<Array<{ id: string; state: string; reason: string; name: string; node: string }>> {
    const r = await this.run_('squeue', ['-h', '-r', '-o', '%i|%T|%r|%j|%N']);
    if (r.exitCode !== 0) throw new Error(`squeue failed: ${r.stderr}`);
    return r.stdout.split('\n').filter(Boolean).map((l) => {
      const [id, state, reason, name, node] = l.split('|');
      return { id: id!, state: state!, reason: reason!, name: name!, node: node ?? '' };
    });
  }

  /** Live processes that belong to this cluster: they carry its SLURM_CONF (daemons, slurmstepd, every job process). */
  processes(): Array<{ pid: number; cmd: string }> {
    const needle = `SLURM_CONF=${this.conf}\0`;
    const out: Array<{ pid: number; cmd: string }> = [];
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
      try {
        const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
        if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') continue;
        if (!fs.readFileSync(`/proc/${entry}/environ`, 'latin1').includes(needle)) continue;
        out.push({ pid: Number(entry), cmd: fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').trim() });
      } catch { /* gone, or not ours to read */ }
    }
    return out;
  }

  /** slurmstepd and the processes of jobs (they carry SLURM_JOB_ID): what must be gone once the queue is empty. */
  jobProcesses(): Array<{ pid: number; cmd: string }> {
    return this.processes().filter((p) => {
      if (p.cmd.startsWith('slurmstepd')) return true;
      try {
        return fs.readFileSync(`/proc/${p.pid}/environ`, 'latin1').split('\0').some((v) => v.startsWith('SLURM_JOB_ID='));
      } catch {
        return false;
      }
    });
  }

  /**
   * Cancel everything, wait for an empty queue, shut down, then kill leftovers by pid. Never throws.
   * Returns the job processes (slurmstepd, agents, renders) that were still alive after the clean shutdown
   * and had to be killed: a test asserts there were none.
   */
  async stop(): Promise<Array<{ pid: number; cmd: string }>> {
    if (this.daemons.length === 0) return [];
    try {
      await this.run_('scancel', ['--user', os.userInfo().username]);
      await waitFor('empty Slurm queue', async () => (await this.queue()).length === 0, 30_000, 200);
    } catch { /* the daemons may already be gone: the kill below cleans up */ }
    await this.run_('scontrol', ['shutdown']).catch(() => undefined);
    await Promise.race([Promise.all(this.daemons), new Promise((r) => setTimeout(r, 10_000))]);
    const daemonPids = new Set(this.daemons.map((p) => p.pid));
    const leftovers = this.processes().filter((p) => !daemonPids.has(p.pid) && !p.cmd.startsWith(': slurmscriptd'));
    for (const p of this.daemons) {
      try { process.kill(-p.pid!, 'SIGKILL'); } catch { /* gone */ }
    }
    for (const { pid } of this.processes()) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await Promise.all(this.daemons);
    this.daemons = [];
    return leftovers;
  }

  /** The daemons' logs, for failure messages. */
  logs(): string {
    return fs.readdirSync(this.dir).filter((f) => f.endsWith('.log'))
      .map((f) => `== ${f}\n${fs.readFileSync(path.join(this.dir, f), 'utf8').split('\n').slice(-30).join('\n')}`).join('\n');
  }

  removeDir(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
