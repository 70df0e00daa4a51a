import type { Command } from 'commander';
import { EXIT } from '../exit-codes.js';
import { printJson } from '../format.js';
import { waitForJobs } from '../wait.js';
import { ProgressBar } from '../progress-bar.js';
import { fancy } from '../tty.js';
import { jobIds, withClient, type ConnectionFlags } from '../connect.js';
import { durationArg } from '../../common/cli.js';

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('wait')
    .description('wait until jobs end; exit 0 if all Completed, 1 if any Failed or Cancelled (on a terminal: a progress bar with ETA on stderr)')
    .argument('<id...>', 'job ids')
    .option('--json', 'print the final jobs as JSON', false)
    .option('--unreachable-timeout <duration>', 'exit 3 once kq has been unreachable this long (default: wait for kq to come back, e.g. across a restart; it must answer at first)', durationArg))
    .action(withClient(async (client, flags: ConnectionFlags & { json: boolean; unreachableTimeout?: number }, ids: string[]) => {
      const bar = fancy(process.stderr) ? new ProgressBar() : null;
      const jobs = await waitForJobs(client, jobIds(ids), bar ? (j) => bar.update(j) : undefined, { unreachableTimeoutMs: flags.unreachableTimeout ?? null })
        .finally(() => bar?.end());
      if (flags.json) printJson(jobs);
      const bad = jobs.filter((j) => j.state !== 'Completed');
      for (const j of bad) if (!flags.json) process.stderr.write(`kqctl: job ${j.id} ${j.state.toLowerCase()}\n`);
      return bad.length === 0 ? EXIT.ok : EXIT.jobFailed;
    }));
}
