import type { Command } from 'commander';
import type { JobDetail } from '../../protocol/index.js';
import { EXIT } from '../exit-codes.js';
import { jobDetail, printJson } from '../format.js';
import { jobIds, withClient, type ConnectionFlags } from '../connect.js';

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('show')
    .description('show one job: its settings, tasks, attempts, exit codes and blocklisted hosts')
    .argument('<id>', 'job id')
    .option('--json', 'print as JSON', false))
    .action(withClient(async (client, flags: ConnectionFlags & { json: boolean }, id: string) => {
      const [jobId] = jobIds([id]);
      const job = await client.request<JobDetail>('show', { jobId: jobId! });
      if (flags.json) printJson(job);
      else process.stdout.write(jobDetail(job));
      return EXIT.ok;
    }));
}
