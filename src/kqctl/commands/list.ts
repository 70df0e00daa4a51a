import { InvalidArgumentError, Option, type Command } from 'commander';
import { JOB_STATES, type JobState } from '../../protocol/constants.js';
import type { JobSummary } from '../../protocol/index.js';
import { EXIT } from '../exit-codes.js';
import { jobsTable, printJson } from '../format.js';
import { withClient, type ConnectionFlags } from '../connect.js';
import { fancy, queuePausedNotice } from '../tty.js';

/** `--state failed,running Waiting`: names in any case, commas or separate words, collected. */
function stateList(value: string, previous: JobState[] | undefined): JobState[] {
  const states = value.split(',').map((s) => s.trim()).filter((s) => s !== '').map((name) => {
    const state = JOB_STATES.find((s) => s.toLowerCase() === name.toLowerCase());
    if (!state) throw new InvalidArgumentError(`no job state "${name}" (states: ${JOB_STATES.join(', ')})`);
    return state;
  });
  return [...(previous ?? []), ...states];
}

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('list')
    .description('list jobs: Id, Name, State ("(paused)" when held), Progress (frames done/total), Submitted, Completed, Log File; states coloured on a terminal')
    .addOption(new Option('--state <state...>', `only jobs in these states, in any case, separated by spaces or commas (${JOB_STATES.join(', ')})`).argParser(stateList))
    .option('--json', 'print as JSON', false))
    .action(withClient(async (client, flags: ConnectionFlags & { json: boolean; state?: JobState[] }) => {
      const jobs = await client.request<JobSummary[]>('list', { states: flags.state });
      queuePausedNotice(await client.request<{ queuePaused?: boolean }>('ping', {}));
      if (flags.json) printJson(jobs);
      else process.stdout.write(jobsTable(jobs, fancy(process.stdout)));
      return EXIT.ok;
    }));
}
