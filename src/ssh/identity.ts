/**
 * Which credentials to offer the SSH server: an explicit --identity file only (like OpenSSH's
 * IdentitiesOnly), or else the ssh-agent (SSH_AUTH_SOCK) and then the usual ~/.ssh keys.
 * Encrypted keys need KQ_SSH_PASSPHRASE or the ssh-agent (`ssh-add`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ssh2, { type AgentAuthMethod, type PublicKeyAuthMethod } from 'ssh2';

const { utils } = ssh2; // ssh2 is CommonJS: no named exports at run time

export const DEFAULT_KEY_NAMES = ['id_ed25519', 'id_ecdsa', 'id_rsa'] as const;

export interface Credentials {
  methods: Array<AgentAuthMethod | PublicKeyAuthMethod>;
  /** What is offered, for messages: `ssh-agent (…)`, `/root/.ssh/id_ed25519`. */
  offered: string[];
  /** Keys found but not usable (encrypted without a passphrase), for messages. */
  skipped: string[];
}

export class IdentityError extends Error {}

export interface IdentityOptions {
  username: string;
  identity?: string;
  env?: NodeJS.ProcessEnv;
  home?: string;
}

export function credentials(o: IdentityOptions): Credentials {
  const env = o.env ?? process.env;
  const passphrase = env.KQ_SSH_PASSPHRASE || undefined;
  const out: Credentials = { methods: [], offered: [], skipped: [] };
  if (o.identity) {
    const file = path.resolve(o.identity);
    let text: Buffer;
    try {
      text = fs.readFileSync(file);
    } catch (err) {
      throw new IdentityError(`cannot read the SSH key ${file} (--identity): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const key = utils.parseKey(text, passphrase);
    if (key instanceof Error) {
      throw new IdentityError(/encrypted|passphrase/i.test(key.message)
        ? `the SSH key ${file} is encrypted: set KQ_SSH_PASSPHRASE, or add it to your ssh-agent (ssh-add ${file}) and leave out --identity`
        : `${file} is not a private key ssh can use (${key.message})`);
    }
    out.methods.push({ type: 'publickey', username: o.username, key: text, passphrase });
    out.offered.push(file);
    return out;
  }
  const sock = env.SSH_AUTH_SOCK;
  if (sock && fs.existsSync(sock)) {
    out.methods.push({ type: 'agent', username: o.username, agent: sock });
    out.offered.push(`ssh-agent (SSH_AUTH_SOCK=${sock})`);
  }
  const dir = path.join(o.home ?? os.homedir(), '.ssh');
  for (const name of DEFAULT_KEY_NAMES) {
    const file = path.join(dir, name);
    let text: Buffer;
    try {
      text = fs.readFileSync(file);
    } catch {
      continue;
    }
    const key = utils.parseKey(text, passphrase);
    if (key instanceof Error) {
      out.skipped.push(`${file} (${/encrypted|passphrase/i.test(key.message) ? 'encrypted: set KQ_SSH_PASSPHRASE or ssh-add it' : key.message})`);
      continue;
    }
    out.methods.push({ type: 'publickey', username: o.username, key: text, passphrase });
    out.offered.push(file);
  }
  if (out.methods.length === 0) {
    throw new IdentityError(`no SSH key to offer: SSH_AUTH_SOCK is not set and none of ${DEFAULT_KEY_NAMES.map((n) => path.join(dir, n)).join(', ')} ` +
      `is usable${out.skipped.length ? ` (skipped ${out.skipped.join('; ')})` : ''}: pass --identity FILE, or start ssh-agent and ssh-add a key`);
  }
  return out;
}
