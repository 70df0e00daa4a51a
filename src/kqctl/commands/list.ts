import { Option, type Command } from 'commander';
import { JOB_STATES, type JobState } from '../../protocol/constants.js';
import type { JobSummary } from '../../protocol/index.js';
import { EXIT } from '../exit-codes.js';
import { jobsTable, printJson } from '../format.js';
import { withClient, type ConnectionFlags } from '../connect.js';
import { fancy, queuePausedNotice } from '../tty.js';

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('list')
    .description('list jobs: Id, Name, State ("(paused)" when held), Progress (frames done/total), Submitted, Completed, Log File; states coloured on a terminal')
    .addOption(new Option('--state <state...>', 'only jobs in these states').choices(JOB_STATES))
    .option('--json', 'print as JSON', false))
    .action(withClient(async (client, flags: ConnectionFlags & { json: boolean; state?: JobState[] }) => {
      const jobs = await client.request<JobSummary[]>('list', { states: flags.state });
      queuePausedNotice(await client.request<{ queuePaused?: boolean }>('ping', {}));
      if (flags.json) printJson(jobs);
      else process.stdout.write(jobsTable(jobs, fancy(process.stdout)));
      return EXIT.ok;
    }));
}
