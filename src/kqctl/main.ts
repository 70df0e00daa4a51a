/** `kqctl`: the command line for kq. A thin client: it prints what the daemon says. */
import { Command } from 'commander';
import { usageExitCodes } from '../common/cli.js';
import { printable } from '../common/printable.js';
import { EXIT } from './exit-codes.js';
import { connectionOptions } from './connect.js';
import { register as submit } from './commands/submit.js';
import { register as list } from './commands/list.js';
import { register as show } from './commands/show.js';
import { register as log } from './commands/log.js';
import { register as jobsAction } from './commands/jobs-action.js';
import { register as wait } from './commands/wait.js';
import { register as agents } from './commands/agents.js';
import { register as remote } from './commands/remote.js';
import { register as keys } from './commands/keys.js';
import { register as slurm } from './commands/slurm.js';
import { register as queue } from './commands/queue.js';
import { register as watch } from './commands/watch.js';
import { register as completion } from './commands/completion.js';

const program = usageExitCodes(connectionOptions(new Command('kqctl')))
  .description('Control kq, the render queue: submit jobs, list them, follow logs, stop and restart.')
  .showHelpAfterError('(run kqctl <command> --help for usage)')
  .addHelpText('after', `
Exit codes: 0 ok, 1 a job failed or was cancelled (submit --wait, wait), 2 bad usage or input
(invalid frame range, unknown job id, empty command, rm of an unfinished job without --stop), 3 kq unreachable, 4 remote: SSH failed or was refused
(host key, login) or a remote script failed; slurm: Slurm refused, 5 remote/slurm start: the agents did not
register with kq in time, 6 anything unexpected (an internal error in kq or kqctl, output that could not be
written): the message says what, 7 a submit/stop/restart/… reached kq but no answer came in time: it may have
been applied, check \`kqctl list\` before retrying (on 3 nothing was sent: retrying is safe).
kqctl finds kq through <data root>/kq.json (KQ_DATA_ROOT, default ~/.local/share/kq), or KQ_HOST/KQ_REQUEST_PORT.`);

for (const add of [submit, list, show, log, jobsAction, queue, watch, wait, agents, remote, slurm]) add(program, (c) => usageExitCodes(connectionOptions(c)));
keys(program);
completion(program, (c) => usageExitCodes(connectionOptions(c)));
// `kqctl list | head` closes our stdout early: that is the reader's choice, not an error. Any other
// failure to write (a full disk, /dev/full) is one line and exit 6, not a stack trace and exit 1.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  process.stderr.write(`kqctl: cannot write the output: ${printable(err.message)}\n`);
  process.exit(EXIT.unexpected);
});
process.on('uncaughtException', (err) => {
  process.stderr.write(`kqctl: unexpected error: ${printable(err.message)}\n`);
  process.exit(EXIT.unexpected);
});
// Not top-level await: the bundle is CommonJS (see package.json "bundle"), loaded without ESM's export scan.
void program.parseAsync();
