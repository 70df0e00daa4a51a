/** `kqctl remote`'s flags: the SSH options both subcommands share, their types, and helpers that read them. */
import os from 'node:os';
import { Option, type Command } from 'commander';
import { durationArg, portArg, usageExitCodes } from '../../../common/cli.js';
import { installRoot } from '../../../common/install-root.js';
import { SSH_DEFAULTS } from '../../../ssh/options.js';
import { shellQuote } from '../../../ssh/shell-quote.js';
import type { ConnectionFlags } from '../../connect.js';
import { CliError, EXIT } from '../../exit-codes.js';

/** This kqctl's own install: the default --install-root. */
export const THIS_INSTALL = installRoot();
export const DEFAULT_REMOTE_DATA_ROOT = '~/.local/share/kq';

export interface SshFlags extends ConnectionFlags {
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

export interface StartFlags extends SshFlags {
  numAgents: number;
  keyFile?: string;
  keyName?: string;
  kqHost?: string;
  updatePort?: number;
  registerTimeout: number;
  node?: string;
  skipChecks: boolean;
  /** Hidden: `progress: …` lines on stderr for each step (the monitor page's Launch Remote Agents shows them). */
  progress: boolean;
}

export interface StopFlags extends SshFlags {
  grace: number;
}

/** The options of `remote start` and `remote stop`; `verb` says what --host is for. */
export function sshOptions(cmd: Command, verb: 'start' | 'stop'): Command {
  return usageExitCodes(cmd)
    .addOption(new Option('--host <host>', `the machine to ${verb} agents on, over SSH (required)`))
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

export function requireHost(flags: SshFlags): string {
  if (!flags.host) throw new CliError(EXIT.usage, 'remote: --host is required (the machine to run agents on)');
  return flags.host;
}

export function dataRootOf(flags: SshFlags): string {
  return flags.dataRoot ?? DEFAULT_REMOTE_DATA_ROOT;
}

/** The `kqctl remote stop …` line that undoes this start (only the flags that differ from defaults). */
export function stopHint(flags: SshFlags): string {
  const words = ['kqctl', 'remote', 'stop', '--host', flags.host!];
  if (flags.user !== os.userInfo().username) words.push('--user', flags.user);
  if (flags.sshPort !== SSH_DEFAULTS.port) words.push('--ssh-port', String(flags.sshPort));
  if (flags.identity) words.push('--identity', flags.identity);
  if (flags.knownHosts) words.push('--known-hosts', flags.knownHosts);
  if (flags.installRoot !== THIS_INSTALL) words.push('--install-root', flags.installRoot);
  if (flags.dataRoot) words.push('--data-root', flags.dataRoot);
  return words.map(shellQuote).join(' ');
}
