/**
 * `kqctl remote start|stop`: run scripts/StartAgents.sh / StopAgents.sh on another machine over SSH, then
 * wait until the new agents have registered with kq (or say why they did not).
 * Here `--host` and `--data-root` are the remote machine and its data root; kq is found through
 * --kq-data-root (its kq.json), KQ_DATA_ROOT or KQ_HOST/KQ_*_PORT, as for every command.
 * The parts live in remote/: options, SSH session, kq's location, agent keys, registration, diagnosis.
 */
import { Option, type Command } from 'commander';
import { durationArg, intArg, portArg, usageExitCodes } from '../../common/cli.js';
import { withClient } from '../connect.js';
import { kqAddress } from './remote/kq-location.js';
import { sshOptions, type StartFlags, type StopFlags } from './remote/options.js';
import type { KqClient } from '../client.js';

// The SSH side loads only when a remote command runs: every other kqctl command starts faster without it.
const startCommand = async (client: KqClient, flags: StartFlags) => (await import('./remote/start.js')).startCommand(client, flags);
const stopCommand = async (client: KqClient, flags: StopFlags) => (await import('./remote/stop.js')).stopCommand(client, flags);

export function register(program: Command, _connection: (c: Command) => Command): void {
  // Not `_connection`: its --host and --data-root mean kq's, and here they mean the remote machine's.
  const remote = usageExitCodes(program.command('remote'))
    .description('start or stop kq agents on another machine over SSH (scripts/StartAgents.sh, StopAgents.sh)')
    .addHelpText('after', `
Exit codes: 0 ok, 2 bad usage or input (also: no such install root there; a --data-root there that is a symlink, another
user's or writable by others: kq keeps the agents' secret key in it), 3 kq unreachable,
4 SSH failed or was refused (unknown/changed host key, login refused) or a remote script failed,
5 the agents started but did not register with kq in time (remote start), 6 anything unexpected.`);

  sshOptions(remote.command('start'), 'start')
    .description('start kq agents on --host that dial back into kq, and wait until they have registered')
    .addOption(new Option('--num-agents <n>', 'agents to start').argParser(intArg(1, 256)).default(2))
    .addOption(new Option('--kq-host <addr>', 'the address of kq the agents dial (default: the address kq binds, else this machine\'s name)'))
    .addOption(new Option('--update-port <port>', "kq's update port (default: from kq.json) [env KQ_UPDATE_PORT]").argParser(portArg))
    .addOption(new Option('--register-timeout <duration>', 'how long to wait for the agents to register with kq').argParser(durationArg).default(20_000, '20s'))
    .addOption(new Option('--node <path>', 'node binary on that machine (default: node on its PATH)'))
    .addOption(new Option('--skip-checks', "don't let StartAgents.sh check that the kq host resolves and its ports answer there").default(false))
    .addOption(new Option('--key-name <name>', 'when kq requires CURVE: the allowlisted client the agents use, made if missing (default: the --host name)'))
    .addOption(new Option('--progress', 'print a "progress: …" line on stderr for each step (for the monitor page)').default(false).hideHelp())
    .addOption(new Option('--key-file <file>', "when kq requires CURVE: the agents' secret certificate instead (from kqctl keys add-client)"))
    .addHelpText('after', `
Example: kqctl remote start --host render2 --num-agents 4 --install-root /opt/kq --data-root '~/kq-agents'
kq must listen where render2 can reach it: start it with \`kq --bind 0.0.0.0\` (or --bind <its address>).
kq then requires CURVE: the agents get kq's public key and an allowlisted key pair (client "render2", made with
\`kqctl keys add-client\` semantics if missing) in <data root>/keys there, passed as KQ_SERVER_KEY/KQ_KEY_FILE.`)
    .action(withClient(startCommand, kqAddress));

  sshOptions(remote.command('stop'), 'stop')
    .description('stop the kq agents StartAgents.sh started on --host with this --data-root')
    .addOption(new Option('--grace <duration>', 'time agents get to stop their renders before SIGKILL').argParser(durationArg).default(10_000, '10s'))
    .action(withClient(stopCommand, kqAddress));
}
