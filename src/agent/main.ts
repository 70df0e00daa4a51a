/** `kq-agent`: the seed's command line (`--minimal-env True --request-port P ... KQ_HOST`) plus kq's own flags. */
import os from 'node:os';
import { Command, InvalidArgumentError } from 'commander';
import { durationOption, portArg, usageExitCodes } from '../common/cli.js';
import { ZMQ_PORTS } from '../common/paths.js';
import { Agent } from './agent.js';
import { curveClient, type CurveClient } from '../common/curve-client.js';
import { slurmPlacement } from './slurm-placement.js';
import { LOCAL_AGENT_PROOF_ENV } from '../protocol/constants.js';

function boolArg(value: string): boolean {
  if (/^(true|1|yes)$/i.test(value)) return true;
  if (/^(false|0|no)$/i.test(value)) return false;
  throw new InvalidArgumentError(`expected True or False, got "${value}"`);
}

const program = usageExitCodes(new Command('kq-agent'))
  .description('kq render agent: connects to kq, runs one render at a time, streams its log back.')
  .argument('[host]', 'address or name of the machine running kq [env KQ_HOST]', process.env.KQ_HOST ?? '127.0.0.1')
  .option(`--${ZMQ_PORTS[0].name}-port <port>`, `kq ${ZMQ_PORTS[0].name} port`, portArg, ZMQ_PORTS[0].port)
  .option(`--${ZMQ_PORTS[1].name}-port <port>`, `kq ${ZMQ_PORTS[1].name} port`, portArg, ZMQ_PORTS[1].port)
  .option(`--${ZMQ_PORTS[2].name}-port <port>`, `kq ${ZMQ_PORTS[2].name} port`, portArg, ZMQ_PORTS[2].port)
  .option('--minimal-env <bool>', 'renders get only PATH, HOME, USER, LANG, TMPDIR… plus the job env (True/False)', boolArg, false)
  .option('--agent-id <id>', 'unique id of this agent (default: <host name>:<pid>)')
  .option('--host-name <name>', 'host name reported to kq (blocklists are per host) [env KQ_AGENT_HOST]', process.env.KQ_AGENT_HOST ?? os.hostname())
  .addOption(durationOption('--kill-grace <duration>', 'when a task ends (stop, timeout, exit leaving processes behind), time its render process group gets between SIGTERM and SIGKILL', 5000))
  .addOption(durationOption('--register-timeout <duration>', 'wait this long for kq to answer before retrying', 2000))
  .option('--local', 'started by kq itself on this machine', false)
  .option('--server-key <key>', "kq's CURVE public key (Z85) or its certificate file [env KQ_SERVER_KEY]", process.env.KQ_SERVER_KEY)
  .option('--slurm', 'running as a Slurm job: report its job id, array task id and node to kq (from SLURM_* variables)', false)
  .option('--key-file <file>', "this agent's secret CURVE certificate (from kqctl keys add-client) [env KQ_KEY_FILE]", process.env.KQ_KEY_FILE)
  .addHelpText('after', '\nExit codes: 0 stopped by SIGINT/SIGTERM, 2 bad usage, 3 another agent registered with kq under the same --agent-id. The agent keeps retrying while kq is unreachable.')
  .parse();

const opts = program.opts();
// Read once and removed at once: renders inherit this process's environment and must not learn it.
const localProof = process.env[LOCAL_AGENT_PROOF_ENV];
delete process.env[LOCAL_AGENT_PROOF_ENV];
let curve: CurveClient | null;
try {
  curve = curveClient(opts.serverKey, opts.keyFile);
} catch (err) {
  process.stderr.write(`kq-agent: ${(err as Error).message}\n`);
  process.exit(2);
}
const hostName: string = opts.hostName;
const agent = new Agent({
  kqHost: program.args[0] ?? process.env.KQ_HOST ?? '127.0.0.1',
  requestPort: opts.requestPort,
  updatePort: opts.updatePort,
  broadcastPort: opts.broadcastPort,
  agentId: opts.agentId ?? `${os.hostname()}:${process.pid}`,
  hostName,
  local: opts.local,
  localProof,
  minimalEnv: opts.minimalEnv,
  killGraceMs: opts.killGrace,
  registerTimeoutMs: opts.registerTimeout,
  curve,
  slurm: opts.slurm ? slurmPlacement(process.env) : null,
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => void agent.stop().then(() => process.exit(0)));
}
agent.onEnd = () => process.exit(agent.endCause === 'superseded' ? 3 : 0);
process.on('SIGHUP', () => undefined);
await agent.start();
