/** `kqctl remote start`: run StartAgents.sh on --host over SSH, then wait until the new agents registered with kq. */
import path from 'node:path';
import { DEFAULT_PORTS } from '../../../common/paths.js';
import { revokeClient } from '../../../common/keys.js';
import { UnsafeDirError } from '../../../common/private-dir.js';
import type { SshConnection } from '../../../ssh/connect.js';
import { installAgentKeys, startRemoteAgents, type KqPorts, type RemoteStartResult } from '../../../ssh/remote-agents.js';
import type { KqClient } from '../../client.js';
import { envPort } from '../../address.js';
import { CliError, EXIT } from '../../exit-codes.js';
import { agentsTable, printJson } from '../../format.js';
import { agentKeys, type AgentKeys } from './agent-keys.js';
import { notRegisteredReport } from './diagnosis.js';
import { agentsDialAddress, readKqInfo } from './kq-location.js';
import { dataRootOf, requireHost, stopHint, type StartFlags } from './options.js';
import { waitForRegistration } from './registration.js';
import { withScripts, withSsh } from './ssh-session.js';

export async function startCommand(client: KqClient, flags: StartFlags): Promise<number> {
  const sshHost = requireHost(flags);
  const info = readKqInfo(flags.kqDataRoot);
  const ports: KqPorts = {
    request: client.address.requestPort,
    update: flags.updatePort ?? envPort('KQ_UPDATE_PORT') ?? info?.updatePort ?? DEFAULT_PORTS.update,
    broadcast: client.address.broadcastPort,
  };
  const progress = (line: string) => { if (flags.progress) process.stderr.write(`progress: ${line}\n`); };
  progress(`checking that kq answers (request port ${ports.request})`);
  await client.request('ping', {}); // kq unreachable → exit 3 before touching the remote machine
  const kqHost = await agentsDialAddress(flags, info, client, sshHost);

  const started = Date.now();
  progress(`connecting to ${flags.user}@${sshHost}:${flags.sshPort} over SSH`);
  return withSsh(flags, async (conn) => {
    progress(`logged in to ${conn.target}${conn.hostKey ? ` (host key ${conn.hostKey.type} ${conn.hostKey.fingerprint})` : ''}`);
    // Only once the machine let us in: a refused host key must not leave a new client in the allowlist.
    const keys = agentKeys(flags, info, sshHost);
    if (keys?.created && !flags.json) {
      process.stderr.write(`kqctl: kq requires CURVE: allowed a new client "${keys.name}" for the agents on ${sshHost} ` +
        `(kqctl keys revoke ${keys.name} refuses them)\n`);
    }
    let result: RemoteStartResult;
    try {
      const curve = keys ? await installKeys(conn, dataRootOf(flags), keys) : undefined;
      progress(`running StartAgents.sh in ${flags.installRoot} for ${flags.numAgents} agent(s) dialing kq at ${kqHost}`);
      result = await withScripts(conn, flags, () => startRemoteAgents(conn, {
        installRoot: flags.installRoot, dataRoot: dataRootOf(flags), kqHost, ports, numAgents: flags.numAgents,
        node: flags.node, skipChecks: flags.skipChecks, curve,
      }));
    } catch (err) {
      // No agent started with a client allowed for this start: it must not stay on kq's allowlist.
      if (keys?.created && info) {
        revokeClient(info.dataRoot, keys.name);
        if (!flags.json) process.stderr.write(`kqctl: took back the client "${keys.name}" (kqctl keys list no longer shows it)\n`);
      }
      throw err;
    }
    for (const a of result.agents) progress(`started agent ${a.n} on ${result.machine}: pid ${a.pid}`);
    progress(`waiting up to ${flags.registerTimeout / 1000}s for ${result.agents.length} agent(s) to register with kq`);
    const registered = await waitForRegistration(client, result, flags.registerTimeout,
      (a) => progress(`agent ${a.id} (pid ${a.pid} on ${a.host}) registered with kq`));
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
      process.stderr.write(await notRegisteredReport(conn, flags, result, missing, { kqHost, ports, bind: info?.bind, sshHost, keyName: keys?.name ?? null }));
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

/** The agents' keys to <data root>/keys there: an unsafe directory is bad input (2), an SFTP failure remote (4). */
async function installKeys(conn: SshConnection, dataRoot: string, keys: AgentKeys) {
  try {
    return await installAgentKeys(conn, dataRoot, keys);
  } catch (err) {
    if (err instanceof UnsafeDirError) throw new CliError(EXIT.usage, err.message);
    if (err instanceof CliError) throw err;
    throw new CliError(EXIT.remote, `cannot copy the agents' keys to ${dataRoot}/keys on ${conn.target}: ${(err as Error).message}`);
  }
}
