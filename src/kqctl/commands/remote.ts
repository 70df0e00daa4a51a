/**
 * `kqctl remote start|stop`: run scripts/StartAgents.sh / StopAgents.sh on another machine over SSH, then
 * wait until the new agents have registered with kq (or say why they did not).
 * Here `--host` and `--data-root` are the remote machine and its data root; kq is found through
 * --kq-data-root (its kq.json), KQ_DATA_ROOT or KQ_HOST/KQ_*_PORT, as for every command.
 */
import dns from 'node:dns/promises';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { installRoot } from '../../common/install-root.js';
import { Option, type Command } from 'commander';
import { durationArg, intArg, portArg, usageExitCodes } from '../../common/cli.js';
import { isLoopback } from '../../common/endpoint.js';
import { dataFiles, defaultDataRoot, DEFAULT_PORTS, type DaemonInfo } from '../../common/paths.js';
import type { AgentInfo } from '../../protocol/index.js';
import type { SshConnection } from '../../ssh/connect.js';
import { SSH_DEFAULTS, defaultKnownHostsFiles } from '../../ssh/options.js';
import {
  MissingScriptsError, RemoteScriptError, diagnoseAgents, indent, installAgentKeys, installScripts, readableLog, startRemoteAgents,
  stopRemoteAgents, type KqPorts, type RemoteStartResult,
} from '../../ssh/remote-agents.js';
import { addClient, checkName, formatCert, keyFiles, readCert, readKeyPair } from '../../common/keys.js';
import { readServerKey } from '../../common/curve-client.js';
import { shellQuote } from '../../ssh/shell-quote.js';
import type { KqClient } from '../client.js';
import { withClient, type ConnectionFlags } from '../connect.js';
import { CliError, EXIT } from '../exit-codes.js';
import { agentsTable, printJson } from '../format.js';

/** This kqctl's own install: the default --install-root. */
const THIS_INSTALL = installRoot();
const DEFAULT_REMOTE_DATA_ROOT = '~/.local/share/kq';
const POLL_MS = 200;

interface SshFlags extends ConnectionFlags {
  host?: string;
  user: string;
  identity?: string;
  sshPort: number;
  knownHosts?: string;
  acceptNewHostKey: boolean;
  sshTimeout: number;
  installRoot: string;
  installScripts: boolean;
  dataRoot?: string;
  kqDataRoot?: string;
  json: boolean;
}

interface StartFlags extends SshFlags {
  numAgents: number;
  keyFile?: string;
  keyName?: string;
  kqHost?: string;
  updatePort?: number;
  registerTimeout: number;
  node?: string;
  skipChecks: boolean;
}

interface StopFlags extends SshFlags {
  grace: number;
}

function sshOptions(cmd: Command): Command {
  return usageExitCodes(cmd)
    .addOption(new Option('--host <host>', 'the machine to start agents on, over SSH (required)'))
    .addOption(new Option('--user <name>', 'SSH user').default(os.userInfo().username))
    .addOption(new Option('--identity <file>', 'SSH private key (default: the ssh-agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa)'))
    .addOption(new Option('--ssh-port <port>', 'SSH port').argParser(portArg).default(SSH_DEFAULTS.port))
    .addOption(new Option('--known-hosts <file>', 'known_hosts file to check the host key against (default: ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts)'))
    .addOption(new Option('--accept-new-host-key', 'trust a host seen for the first time and add its key to known_hosts (a changed key is always refused)').default(false))
    .addOption(new Option('--ssh-timeout <duration>', 'give up on the SSH connection after this long').argParser(durationArg).default(SSH_DEFAULTS.readyTimeoutMs, '10s'))
    .addOption(new Option('--install-root <dir>', 'where kq is installed on that machine (a checkout with bin/ and dist/ built)').default(THIS_INSTALL, 'the same path as here'))
    .addOption(new Option('--install-scripts', 'copy StartAgents.sh/StopAgents.sh to <install root>/scripts over SFTP if they are missing').default(false))
    .addOption(new Option('--data-root <dir>', `data root on that machine: logs/ and run/ of its agents (default: ${DEFAULT_REMOTE_DATA_ROOT})`))
    .addOption(new Option('--kq-data-root <dir>', "kq's data root on this machine, whose kq.json says where kq listens [env KQ_DATA_ROOT]"))
    .addOption(new Option('--request-port <port>', "kq's request port (default: from kq.json) [env KQ_REQUEST_PORT]").argParser(portArg))
    .addOption(new Option('--broadcast-port <port>', "kq's broadcast port (default: from kq.json) [env KQ_BROADCAST_PORT]").argParser(portArg))
    .addOption(new Option('--connect-timeout <duration>', 'give up on kq after this long').argParser(durationArg))
    .option('--json', 'print the result as JSON', false);
}

export function register(program: Command, _connection: (c: Command) => Command): void {
  // Not `_connection`: its --host and --data-root mean kq's, and here they mean the remote machine's.
  const remote = usageExitCodes(program.command('remote'))
    .description('start or stop kq agents on another machine over SSH (scripts/StartAgents.sh, StopAgents.sh)')
    .addHelpText('after', `
Exit codes: 0 ok, 2 bad usage or input (also: no such install root there), 3 kq unreachable,
4 SSH failed or was refused (unknown/changed host key, login refused) or a remote script failed,
5 the agents started but did not register with kq in time (remote start).`);

  sshOptions(remote.command('start'))
    .description('start kq agents on --host that dial back into kq, and wait until they have registered')
    .addOption(new Option('--num-agents <n>', 'agents to start').argParser(intArg(1, 256)).default(2))
    .addOption(new Option('--kq-host <addr>', 'the address of kq the agents dial (default: the address kq binds, else this machine\'s name)'))
    .addOption(new Option('--update-port <port>', "kq's update port (default: from kq.json) [env KQ_UPDATE_PORT]").argParser(portArg))
    .addOption(new Option('--register-timeout <duration>', 'how long to wait for the agents to register with kq').argParser(durationArg).default(20_000, '20s'))
    .addOption(new Option('--node <path>', 'node binary on that machine (default: node on its PATH)'))
    .addOption(new Option('--skip-checks', "don't let StartAgents.sh check that the kq host resolves and its ports answer there").default(false))
    .addOption(new Option('--key-name <name>', 'when kq requires CURVE: the allowlisted client the agents use, made if missing (default: the --host name)'))
    .addOption(new Option('--key-file <file>', "when kq requires CURVE: the agents' secret certificate instead (from kqctl keys add-client)"))
    .addHelpText('after', `
Example: kqctl remote start --host render2 --num-agents 4 --install-root /opt/kq --data-root /var/tmp/kq
kq must listen where render2 can reach it: start it with \`kq --bind 0.0.0.0\` (or --bind <its address>).
kq then requires CURVE: the agents get kq's public key and an allowlisted key pair (client "render2", made with
\`kqctl keys add-client\` semantics if missing) in <data root>/keys there, passed as KQ_SERVER_KEY/KQ_KEY_FILE.`)
    .action(withClient(startCommand, kqAddress));

  sshOptions(remote.command('stop'))
    .description('stop the kq agents StartAgents.sh started on --host with this --data-root')
    .addOption(new Option('--grace <duration>', 'time agents get to stop their renders before SIGKILL').argParser(durationArg).default(10_000, '10s'))
    .action(withClient(stopCommand, kqAddress));
}

/** Where kq is, for kqctl itself: never from --host/--data-root, which here name the remote machine. */
function kqAddress(flags: SshFlags) {
  return { dataRoot: flags.kqDataRoot, requestPort: flags.requestPort, broadcastPort: flags.broadcastPort };
}

async function startCommand(client: KqClient, flags: StartFlags): Promise<number> {
  const sshHost = requireHost(flags);
  const info = readKqInfo(flags.kqDataRoot);
  const env = process.env;
  const ports: KqPorts = {
    request: client.address.requestPort,
    update: flags.updatePort ?? numEnv(env.KQ_UPDATE_PORT) ?? info?.updatePort ?? DEFAULT_PORTS.update,
    broadcast: client.address.broadcastPort,
  };
  await client.request('ping', {}); // kq unreachable → exit 3 before touching the remote machine
  const bind = info?.bind;
  const wildcard = bind === undefined || ['0.0.0.0', '*', '::'].includes(bind);
  const kqHost = flags.kqHost ?? (!wildcard ? bind! : !isLoopback(client.address.host) ? client.address.host : os.hostname());
  if (bind !== undefined && isLoopback(bind) && !(await isLocalMachine(sshHost))) {
    throw new CliError(EXIT.usage, `kq listens on ${bind} only (${dataFiles(info!.dataRoot).info}), so agents on ${sshHost} cannot reach it: ` +
      'restart kq with --bind 0.0.0.0 (or --bind <an address of this machine that it reaches>)');
  }

  const started = Date.now();
  return withSsh(flags, async (conn) => {
    // Only once the machine let us in: a refused host key must not leave a new client in the allowlist.
    const keys = agentKeys(flags, info, sshHost);
    if (keys?.created && !flags.json) {
      process.stderr.write(`kqctl: kq requires CURVE: allowed a new client "${keys.name}" for the agents on ${sshHost} ` +
        `(kqctl keys revoke ${keys.name} refuses them)\n`);
    }
    const curve = keys ? await installAgentKeys(conn, dataRootOf(flags), keys) : undefined;
    const result = await withScripts(conn, flags, () => startRemoteAgents(conn, {
      installRoot: flags.installRoot, dataRoot: dataRootOf(flags), kqHost, ports, numAgents: flags.numAgents,
      node: flags.node, skipChecks: flags.skipChecks, curve,
    }));
    const registered = await waitForRegistration(client, result, flags.registerTimeout);
    const elapsed = (Date.now() - started) / 1000;
    const missing = result.agents.filter((a) => !registered.has(a.pid));
    if (flags.json) {
      printJson({
        host: sshHost, machine: result.machine, kqHost, ports, seconds: elapsed,
        agents: result.agents.map((a) => ({ ...a, registered: registered.get(a.pid) ?? null })),
        alreadyRunning: result.alreadyRunning,
      });
    }
    if (missing.length > 0) {
      process.stderr.write(await notRegisteredReport(conn, flags, result, missing, { kqHost, ports, bind, sshHost, keyName: keys?.name ?? null }));
      return EXIT.notRegistered;
    }
    if (!flags.json) {
      const also = result.alreadyRunning.length ? ` (${result.alreadyRunning.length} already running there, left alone)` : '';
      process.stdout.write(`started ${result.agents.length} kq agent(s) on ${result.machine} via ${conn.target}${also}, dialing kq at ${kqHost}; ` +
        `all registered in ${elapsed.toFixed(1)}s\n`);
      if (registered.size) process.stdout.write(agentsTable([...registered.values()]));
      process.stdout.write(`logs: ${path.posix.dirname(result.agents[0]?.log ?? `${dataRootOf(flags)}/logs/x`)}/remote_agent_<n>.log on ${result.machine}; ` +
        `stop them with: ${stopHint(flags)}\n`);
    }
    return EXIT.ok;
  });
}

async function stopCommand(_client: KqClient, flags: StopFlags): Promise<number> {
  requireHost(flags);
  return withSsh(flags, async (conn) => {
    const r = await withScripts(conn, flags, () =>
      stopRemoteAgents(conn, { installRoot: flags.installRoot, dataRoot: dataRootOf(flags), graceSeconds: Math.ceil(flags.grace / 1000) }));
    if (flags.json) printJson({ host: flags.host, stopped: r.stopped });
    else process.stdout.write(r.output);
    return EXIT.ok;
  });
}

// ---------- steps ----------

/** Open the SSH connection, run `fn`, always close; SSH and script failures become exit codes. */
async function withSsh(flags: SshFlags, fn: (conn: SshConnection) => Promise<number>): Promise<number> {
  // ssh2 is loaded only here, so every other kqctl command starts without it.
  const [{ SshConnection, SshError }, { IdentityError }] = await Promise.all([import('../../ssh/connect.js'), import('../../ssh/identity.js')]);
  let conn: SshConnection;
  try {
    conn = await SshConnection.open({
      host: flags.host!, port: flags.sshPort, username: flags.user, identity: flags.identity,
      knownHostsFiles: flags.knownHosts ? [path.resolve(flags.knownHosts)] : defaultKnownHostsFiles(),
      acceptNewHostKey: flags.acceptNewHostKey, readyTimeoutMs: flags.sshTimeout,
    });
  } catch (err) {
    if (err instanceof IdentityError) throw new CliError(EXIT.usage, err.message);
    if (err instanceof SshError) throw new CliError(EXIT.remote, err.message);
    throw err;
  }
  try {
    if (conn.hostKey?.added) process.stderr.write(`kqctl: added the host key of ${flags.host} (${conn.hostKey.type} ${conn.hostKey.fingerprint}) to ${flags.knownHosts ?? defaultKnownHostsFiles()[0]}\n`);
    return await fn(conn);
  } catch (err) {
    if (err instanceof RemoteScriptError) throw new CliError(err.exitCode === 2 ? EXIT.usage : EXIT.remote, err.message);
    if (err instanceof SshError) throw new CliError(EXIT.remote, err.message);
    throw err;
  } finally {
    conn.close();
  }
}

/** Run a script step; if the install lacks the scripts, copy them over SFTP (--install-scripts) and run it again. */
async function withScripts<T>(conn: SshConnection, flags: SshFlags, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (!(err instanceof MissingScriptsError)) throw err;
    if (!flags.installScripts) {
      throw new CliError(EXIT.usage, `${err.message}: is --install-root right? (--install-scripts copies them there over SFTP)`);
    }
    try {
      const copied = await installScripts(conn, flags.installRoot, err.missing);
      if (!flags.json) process.stderr.write(`kqctl: copied ${copied.join(', ')} to ${flags.host} over SFTP\n`);
    } catch (e) {
      throw new CliError(EXIT.remote, `cannot copy the scripts to ${flags.installRoot}/scripts on ${flags.host}: ${(e as Error).message}`);
    }
    return step();
  }
}

/** Poll kq's agent list until every started agent (same machine name, same pid) is there. */
async function waitForRegistration(client: KqClient, result: RemoteStartResult, timeoutMs: number): Promise<Map<number, AgentInfo>> {
  const want = new Set(result.agents.map((a) => a.pid));
  const found = new Map<number, AgentInfo>();
  const deadline = Date.now() + timeoutMs;
  while (want.size > 0) {
    let agents: AgentInfo[] = [];
    try {
      agents = await client.request<AgentInfo[]>('agents', {});
    } catch (err) {
      // kq answered the ping a moment ago: a slow reply (a busy machine) is not fatal until the deadline.
      if (!(err instanceof CliError && err.exitCode === EXIT.unreachable) || Date.now() >= deadline) throw err;
    }
    for (const a of agents) {
      if (!a.local && a.host === result.machine && want.has(a.pid) && (a.state === 'idle' || a.state === 'busy')) found.set(a.pid, a);
    }
    if (found.size === want.size || Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return found;
}

/** What to print when agents started but did not register: their state, their logs, the checklist items that apply. */
async function notRegisteredReport(conn: SshConnection, flags: StartFlags, result: RemoteStartResult, missing: RemoteStartResult['agents'],
  ctx: { kqHost: string; ports: KqPorts; bind: string | undefined; sshHost: string; keyName: string | null }): Promise<string> {
  const diagnoses = await diagnoseAgents(conn, missing).catch(() => []);
  const out: string[] = [`kqctl: ${missing.length} of ${result.agents.length} kq agent(s) started on ${result.machine} did not register with kq ` +
    `within ${flags.registerTimeout / 1000}s (they dial ${ctx.kqHost}, ports ${ctx.ports.request}, ${ctx.ports.update}, ${ctx.ports.broadcast}).`];
  let logs = '';
  const alive = new Set(diagnoses.filter((d) => d.alive).map((d) => d.pid));
  for (const a of missing) {
    const tail = readableLog(diagnoses.find((d) => d.n === a.n)?.logTail ?? '');
    logs += tail + '\n';
    out.push(`agent ${a.n} (pid ${a.pid}, ${alive.has(a.pid) ? 'still running' : 'exited'}): the end of ${a.log} on ${result.machine}:`);
    out.push(tail ? indent(tail) : '  | (empty)');
  }
  const checks: string[] = [];
  if (missing.some((a) => !alive.has(a.pid))) {
    checks.push(`an agent exited: see its log above; is Node.js 20+ on the PATH there (or --node), and kq built in ${flags.installRoot}?`);
  }
  if (/cannot resolve kq host/.test(logs)) {
    checks.push(`host name resolution: ${result.machine} cannot resolve "${ctx.kqHost}": pass --kq-host with an IP address of this machine, or fix DNS or /etc/hosts there`);
  }
  if (/registered with kq/.test(logs)) {
    checks.push(`the agents registered with a kq, but not this one: is ${ctx.kqHost} (--kq-host) this machine, and are the ports kq's (see kq.json)?`);
  }
  if (/cannot reach kq/.test(logs) || checks.length === 0) {
    if (ctx.bind !== undefined && !['0.0.0.0', '*', '::'].includes(ctx.bind) && ctx.bind !== ctx.kqHost) {
      checks.push(`bind address: kq listens on ${ctx.bind} only but the agents dial ${ctx.kqHost}: restart kq with --bind 0.0.0.0 (or --bind ${ctx.kqHost}), or pass --kq-host ${ctx.bind}`);
    } else {
      checks.push(`bind address: kq must listen on an address ${result.machine} reaches (kq --bind 0.0.0.0 or --bind <address>), and ${ctx.kqHost} (--kq-host) must be that address`);
    }
    checks.push(`firewall: TCP ports ${ctx.ports.request}, ${ctx.ports.update}, ${ctx.ports.broadcast} must be open from ${result.machine} to this machine`);
  }
  if (ctx.keyName !== null && /cannot reach kq/.test(logs)) {
    checks.push(`CURVE keys: kq refuses agents whose key is not allowlisted: is client "${ctx.keyName}" in \`kqctl keys list\`, ` +
      `and is ${dataRootOf(flags)}/keys on ${result.machine} the copy kqctl made?`);
  }
  if (/EACCES|EROFS|permission denied/i.test(logs) || logs.trim() === '') {
    checks.push(`data root permissions: the agents must be able to write ${dataRootOf(flags)}/logs there`);
  }
  out.push('Check:', ...checks.map((c) => `  - ${c}`));
  const running = missing.filter((a) => alive.has(a.pid)).length;
  if (running) out.push(`${running} agent(s) keep retrying; stop them with: ${stopHint(flags)}`);
  return out.join('\n') + '\n';
}

/**
 * The CURVE certificates the remote agents need when kq requires CURVE (kq.json says so): kq's public key
 * and an allowlisted client key pair — --key-file, or client --key-name (default: the host name) from
 * kq's data root, made like `kqctl keys add-client` does if missing. Null when kq takes plain links.
 */
function agentKeys(flags: StartFlags, info: DaemonInfo | null, sshHost: string):
  { name: string; serverPublic: string; clientSecret: string; created: boolean } | null {
  const envServerKey = process.env.KQ_SERVER_KEY;
  if (!info?.curve && !flags.keyFile && !envServerKey) return null;
  try {
    let serverPublic: string;
    if (info?.curve && fs.existsSync(keyFiles(info.dataRoot).serverPublic)) {
      serverPublic = keyFiles(info.dataRoot).serverPublic;
    } else {
      const key = envServerKey ?? info?.serverKey;
      if (!key) throw new Error("kq's public key is unknown here: set KQ_SERVER_KEY (the key, or kq's keys/server.key)");
      serverPublic = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kq-remote-')), 'server.key');
      fs.writeFileSync(serverPublic, formatCert({ publicKey: readServerKey(key) }, 'kq server public key'));
    }
    readCert(serverPublic);
    if (flags.keyFile) {
      readKeyPair(flags.keyFile);
      return { name: checkName(path.basename(flags.keyFile).replace(/\.key_secret$/, '').replace(/[^A-Za-z0-9._-]/g, '-') || 'agents'),
        serverPublic, clientSecret: path.resolve(flags.keyFile), created: false };
    }
    if (!info) throw new Error('kq runs elsewhere (no kq.json here): pass --key-file with a secret certificate from `kqctl keys add-client` on kq\'s machine');
    const name = checkName(flags.keyName ?? sshHost.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64));
    const f = keyFiles(info.dataRoot);
    if (fs.existsSync(f.clientSecret(name))) {
      if (!fs.existsSync(f.allowed(name))) throw new Error(`client "${name}" is not in kq's allowlist any more (revoked?): choose another --key-name`);
      return { name, serverPublic, clientSecret: f.clientSecret(name), created: false };
    }
    if (fs.existsSync(f.allowed(name))) {
      throw new Error(`client "${name}" is allowed with a public key only (its secret is elsewhere): pass --key-file, or another --key-name`);
    }
    return { name, serverPublic, clientSecret: addClient(info.dataRoot, name).secretFile!, created: true };
  } catch (err) {
    throw new CliError(EXIT.usage, `kq requires CURVE keys for its agents: ${(err as Error).message}`);
  }
}

// ---------- small helpers ----------

function requireHost(flags: SshFlags): string {
  if (!flags.host) throw new CliError(EXIT.usage, 'remote: --host is required (the machine to run agents on)');
  return flags.host;
}

function dataRootOf(flags: SshFlags): string {
  return flags.dataRoot ?? DEFAULT_REMOTE_DATA_ROOT;
}

function stopHint(flags: SshFlags): string {
  const words = ['kqctl', 'remote', 'stop', '--host', flags.host!];
  if (flags.user !== os.userInfo().username) words.push('--user', flags.user);
  if (flags.sshPort !== SSH_DEFAULTS.port) words.push('--ssh-port', String(flags.sshPort));
  if (flags.identity) words.push('--identity', flags.identity);
  if (flags.knownHosts) words.push('--known-hosts', flags.knownHosts);
  if (flags.installRoot !== THIS_INSTALL) words.push('--install-root', flags.installRoot);
  if (flags.dataRoot) words.push('--data-root', flags.dataRoot);
  return words.map(shellQuote).join(' ');
}

function readKqInfo(kqDataRoot: string | undefined): DaemonInfo | null {
  try {
    return JSON.parse(fs.readFileSync(dataFiles(kqDataRoot ?? defaultDataRoot()).info, 'utf8')) as DaemonInfo;
  } catch {
    return null;
  }
}

const numEnv = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));

/** Is this host name this machine (a loopback address)? Then a loopback-bound kq is reachable. */
async function isLocalMachine(host: string): Promise<boolean> {
  if (isLoopback(host)) return true;
  try {
    const addresses = await dns.lookup(host, { all: true });
    return addresses.length > 0 && addresses.every((a) => isLoopback(a.address));
  } catch {
    return false; // the SSH connection will say it cannot resolve it
  }
}
