import type { Command } from 'commander';
import type { AgentInfo } from '../../protocol/index.js';
import { EXIT } from '../exit-codes.js';
import { agentsTable, printJson, slurmAutoscaleText, when } from '../format.js';
import type { AutoscaleStatus } from '../../slurm/autoscaler.js';
import { withClient, type ConnectionFlags } from '../connect.js';
import { queuePausedNotice } from '../tty.js';

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('agents')
    .description('list agents: host, pid, state (idle, busy, lost, offline), current job and frames, last seen')
    .option('--all', 'include agents that are offline', false)
    .option('--json', 'print as JSON', false))
    .action(withClient(async (client, flags: ConnectionFlags & { json: boolean; all: boolean }) => {
      const agents = (await client.request<AgentInfo[]>('agents', {})).filter((a) => flags.all || a.state !== 'offline');
      const kq = await client.request<{ insecure: boolean; queuePaused?: boolean; disk?: { full: boolean; since: string | null; reason: string | null; dataRoot: string }; slurmAutoscale?: AutoscaleStatus | null }>('ping', {});
      if (kq.insecure) process.stderr.write('kqctl: WARNING: kq listens beyond loopback WITHOUT CURVE (--insecure): anyone who reaches its ports can run commands on every agent\n');
      if (kq.disk?.full) {
        process.stderr.write(`kqctl: WARNING: kq's disk is full since ${kq.disk.since} (${kq.disk.reason}): no new work is handed out and tasks whose output cannot be kept fail; free space on ${kq.disk.dataRoot} and kq resumes by itself\n`);
      }
      queuePausedNotice(kq);
      if (flags.json) printJson(agents);
      else process.stdout.write(agentsTable(agents));
      const slurm = kq.slurmAutoscale;
      if (slurm?.error) process.stderr.write(`kqctl: Slurm autoscale FAILING since ${when(slurm.errorSince)}: ${slurm.error} (kq keeps working with the agents it has)\n`);
      if (slurm && !flags.json) process.stdout.write(slurmAutoscaleText(slurm));
      return EXIT.ok;
    }));
}
