/**
 * SSH connection options and their defaults, in one place. No ssh2 here: kqctl loads this at start,
 * and loads ssh2 (connect.ts) only when a remote command runs.
 */
import os from 'node:os';
import path from 'node:path';

export interface SshOptions {
  host: string;
  port: number;
  username: string;
  /** An explicit private key file; otherwise the ssh-agent and ~/.ssh/id_{ed25519,ecdsa,rsa}. */
  identity?: string;
  /** known_hosts files to read; the first is the one --accept-new-host-key appends to. */
  knownHostsFiles: string[];
  acceptNewHostKey: boolean;
  /** How long the connection and handshake may take. */
  readyTimeoutMs: number;
  env?: NodeJS.ProcessEnv;
}

export const SSH_DEFAULTS = { port: 22, acceptNewHostKey: false, readyTimeoutMs: 10_000 } as const;

/** The files OpenSSH reads by default (UserKnownHostsFile, GlobalKnownHostsFile). */
export function defaultKnownHostsFiles(home = os.homedir()): string[] {
  return [path.join(home, '.ssh', 'known_hosts'), path.join(home, '.ssh', 'known_hosts2'),
    '/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'];
}
