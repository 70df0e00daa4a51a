/**
 * An SSH connection (ssh2 Client) that verifies the host key against known_hosts like OpenSSH,
 * runs commands (exec → {code, signal, stdout, stderr}) and opens SFTP. Failures become SshError with
 * a kind and a message that says what was tried and what to do.
 */
import ssh2, { type ClientChannel, type SFTPWrapper } from 'ssh2';
import { credentials, type Credentials } from './identity.js';
import { KnownHosts, appendKnownHost, fingerprint, keyTypeOf, knownHostName } from './known-hosts.js';
import type { SshOptions } from './options.js';

const { Client } = ssh2; // ssh2 is CommonJS: no named exports at run time

export type SshFailure = 'unreachable' | 'timeout' | 'host-key-unknown' | 'host-key-changed' | 'host-key-revoked' | 'auth' | 'closed';

export class SshError extends Error {
  constructor(readonly kind: SshFailure, message: string) {
    super(message);
  }
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

const HOST_KEY_ALGORITHMS = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521',
  'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];

/** Ask first for the key types known_hosts has for this host, so a host with several keys matches (like OpenSSH). */
function hostKeyAlgorithms(knownTypes: string[]): string[] {
  const preferred = knownTypes.flatMap((t) => (t === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [t]))
    .filter((a) => HOST_KEY_ALGORITHMS.includes(a));
  return [...new Set([...preferred, ...HOST_KEY_ALGORITHMS])];
}

export class SshConnection {
  /** `user@host:port`, for messages. */
  readonly target: string;
  hostKey: { type: string; fingerprint: string; added: boolean } | null = null;
  private closed = false;

  private constructor(private readonly client: ssh2.Client, readonly options: SshOptions) {
    this.target = `${options.username}@${options.host}:${options.port}`;
  }

  static async open(options: SshOptions): Promise<SshConnection> {
    const creds = credentials({ username: options.username, identity: options.identity, env: options.env });
    const name = knownHostName(options.host, options.port);
    const known = KnownHosts.load(options.knownHostsFiles);
    const conn = new SshConnection(new Client(), options);
    let refusal: SshError | null = null;

    const verify = (key: Buffer): boolean => {
      const type = keyTypeOf(key);
      const fp = fingerprint(key);
      const check = known.check(name, key);
      conn.hostKey = { type, fingerprint: fp, added: false };
      if (check.status === 'known') return true;
      const userFile = options.knownHostsFiles[0]!;
      if (check.status === 'unknown' && options.acceptNewHostKey) {
        try {
          appendKnownHost(userFile, name, key);
          conn.hostKey.added = true;
          return true;
        } catch (err) {
          refusal = new SshError('host-key-unknown', `cannot add the host key of ${name} to ${userFile}: ${(err as Error).message}`);
          return false;
        }
      }
      refusal = hostKeyRefusal(check, name, type, fp, options.knownHostsFiles);
      return false;
    };

    await new Promise<void>((resolve, reject) => {
      const client = conn.client;
      let settled = false;
      const fail = (err: SshError) => {
        if (settled) return;
        settled = true;
        client.end();
        reject(err);
      };
      client.once('ready', () => {
        settled = true;
        resolve();
      });
      client.on('error', (err: Error & { level?: string; code?: string }) => {
        fail(refusal ?? connectError(err, conn.target, creds));
      });
      client.once('close', () => fail(refusal ?? new SshError('closed', `ssh: ${conn.target} closed the connection before login finished`)));
      try {
        client.connect({
          host: options.host,
          port: options.port,
          username: options.username,
          hostVerifier: verify,
          authHandler: creds.methods,
          readyTimeout: options.readyTimeoutMs,
          keepaliveInterval: 5000,
          keepaliveCountMax: 3,
          algorithms: { serverHostKey: hostKeyAlgorithms(known.typesFor(name)) as never },
        });
      } catch (err) {
        fail(new SshError('unreachable', `ssh: cannot connect to ${conn.target}: ${(err as Error).message}`));
      }
    });
    conn.client.on('error', () => undefined); // later errors surface through exec/sftp
    return conn;
  }

  /** Run a command line (through the remote user's shell); resolves when it ends. */
  exec(command: string, timeoutMs = 60_000): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err: Error | undefined, stream: ClientChannel) => {
        if (err) return reject(new SshError('closed', `ssh: ${this.target} refused to run a command: ${err.message}`));
        const out: Buffer[] = [];
        const errOut: Buffer[] = [];
        let code: number | null = null;
        let signal: string | null = null;
        const timer = setTimeout(() => {
          stream.close();
          reject(new SshError('timeout', `ssh: a command on ${this.target} did not finish within ${timeoutMs / 1000}s`));
        }, timeoutMs);
        stream.on('data', (d: Buffer) => out.push(d));
        stream.stderr.on('data', (d: Buffer) => errOut.push(d));
        stream.on('exit', (c: number | null, s?: string) => {
          code = c ?? null;
          signal = s ?? null;
        });
        stream.on('close', () => {
          clearTimeout(timer);
          resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(errOut).toString() });
        });
      });
    });
  }

  sftp(): Promise<SFTPWrapper> {
    return new Promise((resolve, reject) => {
      this.client.sftp((err, sftp) => {
        if (err) reject(new SshError('closed', `ssh: ${this.target} refused SFTP: ${err.message} (is the sftp subsystem enabled in its sshd_config?)`));
        else resolve(sftp);
      });
    });
  }

  /** Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.end();
  }
}

function hostKeyRefusal(check: ReturnType<KnownHosts['check']>, name: string, type: string, fp: string, files: string[]): SshError {
  const userFile = files[0]!;
  if (check.status === 'revoked') {
    return new SshError('host-key-revoked', `ssh: REFUSED: the host key of ${name} (${type} ${fp}) is marked @revoked in ${check.entry.file}:${check.entry.line}`);
  }
  if (check.status === 'changed') {
    const had = check.entries.map((e) => `${e.file}:${e.line} has ${keyTypeOf(e.key)} ${fingerprint(e.key)}`).join('\n  ');
    const sameType = check.entries.some((e) => keyTypeOf(e.key) === type);
    return new SshError('host-key-changed', `ssh: REFUSED: the host key of ${name} has ${sameType ? 'changed' : 'a type known_hosts does not have for it'}!\n` +
      `  it now offers ${type} ${fp}\n  ${had}\n` +
      'Someone could be intercepting the connection (man-in-the-middle), or the machine was reinstalled. ' +
      `If you know the key changed on purpose, remove the old one (ssh-keygen -R '${name}' -f ${check.entries[0]!.file}) and run again ` +
      'with --accept-new-host-key. A known key is never replaced automatically.');
  }
  const short = type.replace(/^ssh-/, '').replace(/^ecdsa-sha2-nistp\d+$/, 'ecdsa');
  return new SshError('host-key-unknown', `ssh: the host key of ${name} is unknown (not in ${files.join(', ')}).\n` +
    `  it offers ${type} ${fp}\n` +
    `Check that this is the machine you mean (there: ssh-keygen -lf /etc/ssh/ssh_host_${short}_key.pub), then run again with ` +
    `--accept-new-host-key to trust it and add it to ${userFile} (or connect once with ssh).`);
}

function connectError(err: Error & { level?: string; code?: string }, target: string, creds: Credentials): SshError {
  if (err.level === 'client-authentication') {
    const skipped = creds.skipped.length ? `; skipped ${creds.skipped.join(', ')}` : '';
    const user = target.slice(0, target.indexOf('@'));
    return new SshError('auth', `ssh: ${target} refused our SSH key (offered: ${creds.offered.join(', ')}${skipped}). ` +
      `Add your public key to ~${user}/.ssh/authorized_keys there (e.g. ssh-copy-id), or pass --identity FILE / --user NAME.`);
  }
  if (err.level === 'client-timeout') {
    return new SshError('timeout', `ssh: no SSH handshake with ${target} in time (${err.message}): is the machine up, is sshd listening on that port, ` +
      'and does a firewall let port 22 (or --ssh-port) through?');
  }
  if (err.level === 'client-dns') {
    return new SshError('unreachable', `ssh: cannot resolve ${target.replace(/^.*@/, '').replace(/:\d+$/, '')} (${err.code ?? err.message}): check the --host name`);
  }
  const code = err.code ? `${err.code}` : err.message;
  const hint = err.code === 'ECONNREFUSED' ? 'is sshd running there, and is --ssh-port right?'
    : 'is the machine up and reachable, and does a firewall let the SSH port through?';
  return new SshError('unreachable', `ssh: cannot connect to ${target} (${code}): ${hint}`);
}
