/** `kq`: the daemon's command line. */
import { Command, InvalidArgumentError, Option } from 'commander';
import { durationOption, EnvError, fromEnv, intArg, portArg, usageExitCodes } from '../common/cli.js';
import { isLoopback, tcpEndpoint } from '../common/endpoint.js';
import { Daemon } from './daemon.js';
import { DAEMON_DEFAULTS, envDefaults, type DaemonOptions } from './options.js';
import { dataFiles, ZMQ_PORTS, type ZmqPort } from '../common/paths.js';
import { initKeys, keyFiles } from '../common/keys.js';
import { identify, watchExit } from './exit-with.js';

/** kq stopped because it lost a port it listens on (see Daemon.onFatal). */
const EXIT_LOST_PORT = 3;
import { AUTOSCALE_USAGE, parseAutoscale } from '../slurm/autoscaler.js';

function autoscaleArg(value: string) {
  try {
    return parseAutoscale(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

const env = envDefaults();
/** An option whose default comes from the environment: checked in runDaemon, so --help works whatever it holds. */
const envOption = (flags: string, description: string, parse: (v: string) => number, value: string) =>
  new Option(flags, description).argParser(parse).default(value, value);
const numAgentsArg = intArg(0, 256);
const zmqPortOption = (p: ZmqPort) =>
  envOption(`--${p.name}-port <port>`, `${p.name} port (${p.socket}) [env ${p.env}]${p.name === 'request' ? '; 0 picks a free one' : ''}`, portArg, env[p.key]);
const program = usageExitCodes(new Command('kq'))
  .description('kq daemon: owns the job table and supervises render agents over ZeroMQ.')
  .addOption(zmqPortOption(ZMQ_PORTS[0]))
  .addOption(zmqPortOption(ZMQ_PORTS[1]))
  .addOption(zmqPortOption(ZMQ_PORTS[2]))
  .option('--bind <addr>', 'address to listen on [env KQ_BIND]; use 0.0.0.0 for remote agents', env.bind)
  .option('--data-root <dir>', 'where kq.db, kq.json and logs/ live [env KQ_DATA_ROOT]', env.dataRoot)
  .addOption(envOption('--num-agents <n>', 'local agents to keep running [env KQ_NUM_AGENTS]', numAgentsArg, env.numAgents))
  .addOption(durationOption('--heartbeat <duration>', 'how often agents send heartbeats', DAEMON_DEFAULTS.heartbeatMs))
  .addOption(durationOption('--agent-timeout <duration>', 'an agent silent this long is lost and its task requeued', DAEMON_DEFAULTS.agentTimeoutMs))
  .addOption(durationOption('--kill-grace <duration>', 'when a task ends (stop, timeout, exit leaving processes behind), time its render process group gets between SIGTERM and SIGKILL', DAEMON_DEFAULTS.killGraceMs))
  .option('--no-prefetch', 'hand an agent its next task only once it is idle (default: a busy agent holds one more, started the moment its current task ends)')
  .option('--blocklist-after <n>', "failures of one job on one host before the host is blocklisted for that job", intArg(1, 1000), DAEMON_DEFAULTS.blocklistAfter)
  .option('--max-task-log <bytes>', 'log bytes kept per task attempt; the rest is cut with a marker', intArg(1024, 2 ** 40), DAEMON_DEFAULTS.maxTaskLogBytes)
  .option('--secure', 'require CURVE (encrypted, authenticated links) on loopback too', false)
  .option('--insecure', 'listen beyond loopback WITHOUT CURVE: anyone reaching the ports can run commands', false)
  .option('--log-level <level>', 'daemon log level (logs/kq.log)', DAEMON_DEFAULTS.logLevel)
  .option('--agent-arg <arg>', 'extra flag passed to every local agent (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .addOption(envOption('--http-port <port>', 'web monitor port [env KQ_HTTP_PORT]; 0 picks a free one', portArg, env.httpPort))
  .option('--http-bind <addr>', 'web monitor address [env KQ_HTTP_BIND]; beyond loopback every API request needs the token', env.httpBind)
  .option('--http-token <token>', 'web monitor token [env KQ_HTTP_TOKEN; on a command line, other users see it in ps] (default: none on loopback without CURVE, else generated into <data root>/http-token)', env.httpToken)
  .option('--no-http', 'do not serve the web monitor')
  .addOption(durationOption('--keep-finished <duration>', 'remove ended jobs (Completed, Failed, Cancelled) and their logs this long after they ended, e.g. 30d (render outputs are never touched)'))
  .option('--exit-with <pid>', 'stop (renders killed, tasks requeued) when process PID exits, e.g. the Blender or Katana that started kq', intArg(1, 2 ** 31 - 1))
  .option('--slurm-autoscale <spec>', `run agents on Slurm, grown and shrunk with the queue: ${AUTOSCALE_USAGE} (see README "Growing past a few machines: Slurm")`, autoscaleArg)
  .addHelpText('after', `
Exit codes: 0 stopped cleanly (SIGINT/SIGTERM, or the --exit-with process exited), 1 could not start, 2 bad usage,
3 stopped because it could not listen on its ports again (another process took one while kq renewed its
connections after a key was revoked).
Files: <data root>/kq.db (job table), kq.json (address for kqctl), logs/job-<id>.log, logs/kq.log, http-token,
keys/ (CURVE keys: see kq keys init --help and kqctl keys --help).`)
  .action(runDaemon);

program.command('keys')
  .description('manage kq\'s CURVE keys (kqctl keys manages the allowlist)')
  .command('init')
  .description('create kq\'s key pair and the "local" client key under <data root>/keys (done on first secure start too)')
  .option('--data-root <dir>', 'data root [env KQ_DATA_ROOT]', env.dataRoot)
  .action((o: { dataRoot: string }) => {
    const { serverPublicKey, created } = initKeys(o.dataRoot);
    process.stdout.write(`${created ? 'created' : 'kept'} ${keyFiles(o.dataRoot).dir}\nkq public key: ${serverPublicKey}\n`);
  });

await program.parseAsync();

async function runDaemon(opts: ReturnType<typeof program.opts>): Promise<void> {
  let fromEnvironment: Pick<DaemonOptions, 'requestPort' | 'updatePort' | 'broadcastPort' | 'numAgents'> & { httpPort: number };
  try {
    fromEnvironment = {
      ...(Object.fromEntries(ZMQ_PORTS.map((p) => [p.key, fromEnv(opts[p.key], p.env, portArg)])) as Record<ZmqPort['key'], number>),
      numAgents: fromEnv(opts.numAgents, 'KQ_NUM_AGENTS', numAgentsArg),
      httpPort: fromEnv(opts.httpPort, 'KQ_HTTP_PORT', portArg),
    };
  } catch (err) {
    if (!(err instanceof EnvError)) throw err;
    return program.error(`kq: ${err.message}`, { exitCode: 2 });
  }
  const options: DaemonOptions = {
    dataRoot: opts.dataRoot,
    bind: opts.bind,
    ...fromEnvironment,
    heartbeatMs: opts.heartbeat,
    agentTimeoutMs: opts.agentTimeout,
    killGraceMs: opts.killGrace,
    blocklistAfter: opts.blocklistAfter,
    prefetch: opts.prefetch !== false,
    maxTaskLogBytes: opts.maxTaskLog,
    logLevel: opts.logLevel,
    secure: opts.secure,
    insecure: opts.insecure,
    agentArgs: opts.agentArg,
    httpPort: opts.http === false ? null : fromEnvironment.httpPort,
    httpBind: opts.httpBind,
    httpToken: opts.httpToken,
    slurmAutoscale: opts.slurmAutoscale,
    keepFinishedMs: opts.keepFinished ?? null,
  };

  // Checked before starting: a typo or an application that already quit must not leave a kq nobody stops.
  const exitWith = opts.exitWith === undefined ? null : identify(opts.exitWith);
  if (opts.exitWith !== undefined && !exitWith) {
    process.stderr.write(`kq: --exit-with ${opts.exitWith}: no such process is running\n`);
    process.exit(2);
  }

  const daemon = new Daemon(options);
  const SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM'] as const;
  for (const signal of SHUTDOWN_SIGNALS) {
    process.on(signal, () => {
      void daemon.stop().then(() => process.exit(0));
    });
  }
  process.on('SIGHUP', () => undefined); // a closed terminal must not take the farm down
  daemon.onFatal = (message) => {
    process.stderr.write(`kq: ${message}\n`);
    void daemon.stop().then(() => process.exit(EXIT_LOST_PORT));
  };

  try {
    const info = await daemon.start();
    if (info.insecure) process.stderr.write(`kq: WARNING: listening on ${info.bind} WITHOUT CURVE (--insecure): anyone who reaches ports ${info.requestPort}-${info.broadcastPort} can run commands on every agent\n`);
    const at = (port: number) => tcpEndpoint(info.host, port);
    const monitor = info.httpUrl ? `, monitor ${info.httpUrl}` : '';
    const token = info.httpUrl && !options.httpToken && (info.curve || !isLoopback(options.httpBind))
      ? `  monitor token: ${dataFiles(info.dataRoot).httpToken} (open ${info.httpUrl}?token=<its contents>)\n` : '';
    process.stdout.write(`kq ${info.pid} ready: request ${at(info.requestPort)}, update ${at(info.updatePort)}, broadcast ${at(info.broadcastPort)}${monitor}\n` +
      `  data root ${info.dataRoot}; ${options.numAgents} local agent(s); log ${info.dataRoot}/logs/kq.log\n` + token);
    if (exitWith) {
      watchExit(exitWith, () => {
        process.stdout.write(`kq: process ${exitWith.pid} (--exit-with) exited: stopping\n`);
        void daemon.stop().then(() => process.exit(0));
      });
    }
  } catch (err) {
    process.stderr.write(`kq: ${(err as Error).message}\n`);
    await daemon.stop().catch(() => undefined);
    // End by running out of work rather than process.exit(): the log file may still be opening, and
    // pino's exit hook would throw "sonic boom is not ready yet" over the one-line error above.
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 3000).unref();
  }
}
