/**
 * Where kq is, seen from here (for kqctl) and from the remote machine (for its agents): kq.json, the
 * address agents dial, and whether a loopback-bound kq is reachable from the SSH host at all.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { isLoopback } from '../../../common/endpoint.js';
import { dataFiles, defaultDataRoot, type DaemonInfo } from '../../../common/paths.js';
import type { KqClient } from '../../client.js';
import { CliError, EXIT } from '../../exit-codes.js';
import type { SshFlags } from './options.js';

/** Where kq is, for kqctl itself: never from --host/--data-root, which here name the remote machine. */
export function kqAddress(flags: SshFlags) {
  return { dataRoot: flags.kqDataRoot, requestPort: flags.requestPort, broadcastPort: flags.broadcastPort };
}

export function readKqInfo(kqDataRoot: string | undefined): DaemonInfo | null {
  try {
    return JSON.parse(fs.readFileSync(dataFiles(kqDataRoot ?? defaultDataRoot()).info, 'utf8')) as DaemonInfo;
  } catch {
    return null;
  }
}

const isWildcard = (bind: string | undefined) => bind === undefined || ['0.0.0.0', '*', '::'].includes(bind);

/**
 * The address the agents on `sshHost` dial: --kq-host, else the address kq binds, else the address
 * kqctl reached it at, else this machine's name. A kq bound to loopback cannot be reached from another
 * machine: that is a usage error before anything is started there.
 */
export async function agentsDialAddress(flags: { kqHost?: string }, info: DaemonInfo | null, client: KqClient, sshHost: string): Promise<string> {
  const bind = info?.bind;
  const kqHost = flags.kqHost ?? (!isWildcard(bind) ? bind! : !isLoopback(client.address.host) ? client.address.host : os.hostname());
  if (bind !== undefined && isLoopback(bind) && !(await isLocalMachine(sshHost))) {
    throw new CliError(EXIT.usage, `kq listens on ${bind} only (${dataFiles(info!.dataRoot).info}), so agents on ${sshHost} cannot reach it: ` +
      'restart kq with --bind 0.0.0.0 (or --bind <an address of this machine that it reaches>)');
  }
  return kqHost;
}

/** Is this host name this machine (a loopback address)? Then a loopback-bound kq is reachable. */
async function isLocalMachine(host: string): Promise<boolean> {
  if (isLoopback(host)) return true;
  try {
    // Loaded here, not at the top: kqctl's other commands start faster without the resolver. require, not
    // import(): kqctl's bundle runs from a vm.Script (bin/kqctl.cjs), which has no dynamic import of its own.
    const dns = createRequire(import.meta.url)('node:dns') as typeof import('node:dns');
    const addresses = await dns.promises.lookup(host, { all: true });
    return addresses.length > 0 && addresses.every((a) => isLoopback(a.address));
  } catch {
    return false; // the SSH connection will say it cannot resolve it
  }
}
