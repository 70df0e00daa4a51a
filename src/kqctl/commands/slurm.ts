/**
 * `kqctl slurm start|stop`: run kq agents as a Slurm job array that dials back to kq, wait until they
 * registered (saying why while Slurm keeps them pending), and cancel them again. kq is found through
 * --data-root (its kq.json), KQ_DATA_ROOT or the default, as for every command; the Slurm cluster through
 * SLURM_CONF or the system config, as for sbatch itself.
 */
import { Option, type Command } from 'commander';
import { durationArg, intArg } from '../../common/cli.js';
import { installRoot } from '../../common/install-root.js';
import { withClient } from '../connect.js';
import type { StartFlags, StopFlags } from './slurm-run.js';

// What runs Slurm (child_process, crypto, the agent-job files) loads only when a slurm command runs:
// every other kqctl command starts faster without it.
const run = () => import('./slurm-run.js');

const collect = (value: string, previous: string[]) => [...previous, value];

export function register(program: Command, connection: (c: Command) => Command): void {
  const slurm = program.command('slurm')
    .description('run kq agents as Slurm jobs on a cluster (sbatch), and cancel them')
    .addHelpText('after', `
Exit codes: 0 ok, 2 bad usage or input, 3 kq unreachable, 4 Slurm refused (sbatch/scancel failed or missing),
5 slurm start: the agents did not register with kq within --register-timeout (their Slurm output is quoted).
Slurm is found through SLURM_CONF or the system's slurm.conf, as for sbatch.`);

  connection(slurm.command('start'))
    .description('submit one Slurm job array of kq agents that dial back to kq, and wait until they registered')
    .addOption(new Option('--agents <n>', 'agents to start (array tasks)').argParser(intArg(1, 10_000)).default(2))
    .addOption(new Option('--partition <name>', 'Slurm partition (default: the cluster\'s default)'))
    .addOption(new Option('--time <duration>', 'time limit of each agent job; at the limit an agent hands its task back').argParser(durationArg).default(8 * 3600_000, '8h'))
    .addOption(new Option('--cpus-per-agent <n>', 'CPUs Slurm gives each agent (--cpus-per-task)').argParser(intArg(1, 4096)))
    .addOption(new Option('--mem <size>', 'memory per agent, in Slurm\'s syntax (8G, 500M)'))
    .addOption(new Option('--sbatch-arg <arg>', 'one more sbatch option, as is (repeat it: --sbatch-arg=--account=art --sbatch-arg=--qos=low)').argParser(collect).default([]))
    .addOption(new Option('--install-root <dir>', 'where kq is installed on the compute nodes (bin/ and dist/ built)').default(installRoot(), 'the same path as here'))
    .addOption(new Option('--node <path>', 'node binary on the compute nodes').default(process.execPath, 'the one running kqctl'))
    .addOption(new Option('--agent-data-root <dir>', 'directory the compute nodes share with this machine: the agents\' keys and Slurm output files (default: <kq data root>/slurm)'))
    .addOption(new Option('--kq-host <addr>', 'the address of kq the agents dial (default: the address kq binds, else this machine\'s name)'))
    .addOption(new Option('--kill-grace <duration>', 'time an agent\'s render gets between SIGTERM and SIGKILL (keep it below the cluster\'s KillWait)').argParser(durationArg).default(5000, '5s'))
    .addOption(new Option('--register-timeout <duration>', 'how long to wait for the agents to register (pending time included)').argParser(durationArg).default(120_000, '2m'))
    .option('--json', 'print the result as JSON', false)
    .addHelpText('after', `
Example: kqctl slurm start --agents 8 --partition render --time 4h --cpus-per-agent 4 --mem 8G
kq must listen where the compute nodes reach it (kq --bind 0.0.0.0); it then requires CURVE, and the agents
use client "slurm-<cluster>" (made if missing), whose secret is copied 0600 to <agent data root>/keys.`)
    .action(withClient(async (client, flags: StartFlags) => (await run()).startCommand(client, flags)));

  slurm.command('stop')
    .description('cancel (scancel) the Slurm agent jobs this kq submitted; each agent hands its running task back')
    .addOption(new Option('--data-root <dir>', "kq's data root [env KQ_DATA_ROOT]"))
    .addOption(new Option('--job <id>', 'only this Slurm job (or array task, 123_4); repeat for more (default: every agent job of this kq)').argParser(collect).default([]))
    .addOption(new Option('--wait <duration>', 'wait this long for the jobs to leave the queue').argParser(durationArg).default(60_000, '60s'))
    .option('--json', 'print the result as JSON', false)
    .action(async (_flags: StopFlags, cmd: Command) => {
      const { stopCommand, asCliError } = await run();
      try {
        // --data-root given before `slurm` (kqctl --data-root D slurm stop) counts too.
        const globals = cmd.optsWithGlobals() as StopFlags;
        const own = cmd.opts() as StopFlags;
        process.exitCode = await stopCommand({ ...own, dataRoot: own.dataRoot ?? cmd.parent?.parent?.opts().dataRoot ?? globals.dataRoot });
      } catch (err) {
        const e = asCliError(err);
        process.stderr.write(`kqctl: ${e.message}\n`);
        process.exitCode = e.exitCode;
      }
    });
}

