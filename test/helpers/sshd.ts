/**
 * A throwaway OpenSSH server for tests: its own config, generated host key and an authorized client key,
 * on a free loopback port (or inside a network namespace). Real sshd, real logins.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execa, execaSync, type ResultPromise } from 'execa';
import { tempDir, waitFor } from './kq.js';

export interface SshdOptions {
  /** Address to listen on (default 127.0.0.1). */
  listen?: string;
  /** Port (default: a free loopback port). */
  port?: number;
  /** Run inside this network namespace (`ip netns exec NS sshd …`). */
  netns?: string;
}

export class Sshd {
  readonly dir: string;
  readonly hostKey: string;
  readonly clientKey: string;
  proc: ResultPromise | null = null;
  output = '';
  port = 0;
  listen = '127.0.0.1';

  private constructor() {
    this.dir = tempDir('kq-sshd-');
    this.hostKey = path.join(this.dir, 'host');
    this.clientKey = path.join(this.dir, 'client');
  }

  static async start(o: SshdOptions = {}): Promise<Sshd> {
    const s = new Sshd();
    await s.run(o);
    return s;
  }

  private async run(o: SshdOptions): Promise<void> {
    fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    keygen(this.hostKey);
    keygen(this.clientKey);
    fs.copyFileSync(`${this.clientKey}.pub`, path.join(this.dir, 'authorized_keys'));
    this.listen = o.listen ?? '127.0.0.1';
    this.port = o.port ?? await freePort();
    const config = path.join(this.dir, 'sshd_config');
    fs.writeFileSync(config, [
      `ListenAddress ${this.listen}`, `Port ${this.port}`, `HostKey ${this.hostKey}`, `PidFile ${path.join(this.dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${path.join(this.dir, 'authorized_keys')}`, 'StrictModes no', 'UsePAM no', 'PasswordAuthentication no',
      'KbdInteractiveAuthentication no', 'PermitRootLogin prohibit-password', 'Subsystem sftp internal-sftp', 'LogLevel VERBOSE',
      // bash run by sshd sources ~/.bashrc only as a top-level shell (SHLVL < 2): this machine's root .bashrc
      // (pyenv init, ~1-3 s) is not part of the "remote machine" under test and would slow every command.
      'SetEnv SHLVL=1', '',
    ].join('\n'));
    const argv = ['/usr/sbin/sshd', '-D', '-e', '-f', config];
    this.proc = o.netns
      ? execa('ip', ['netns', 'exec', o.netns, ...argv], { reject: false, all: true, buffer: false })
      : execa(argv[0]!, argv.slice(1), { reject: false, all: true, buffer: false });
    this.proc.all?.on('data', (d: Buffer) => { this.output += d.toString(); });
    const exited = this.proc.then((r) => r);
    await Promise.race([
      waitFor('sshd "Server listening on"', () => this.output.includes('Server listening on'), 10_000, 20),
      exited.then((r) => { throw new Error(`sshd exited (${r.exitCode}) before listening: ${this.output}`); }),
    ]);
  }

  /** The known_hosts line for this server (`[host]:port ssh-ed25519 AAAA…`). */
  knownHostsLine(host = this.listen): string {
    const [type, key] = fs.readFileSync(`${this.hostKey}.pub`, 'utf8').trim().split(/\s+/);
    return `${this.port === 22 ? host : `[${host}]:${this.port}`} ${type} ${key}`;
  }

  /** A known_hosts file holding this server's key. */
  knownHostsFile(): string {
    const file = path.join(tempDir('kq-known-'), 'known_hosts');
    fs.writeFileSync(file, this.knownHostsLine() + '\n');
    return file;
  }

  /** kqctl flags that reach this server with the authorized key and its host key. */
  sshArgs(knownHosts = this.knownHostsFile()): string[] {
    return ['--host', this.listen, '--ssh-port', String(this.port), '--identity', this.clientKey, '--known-hosts', knownHosts];
  }

  async stop(): Promise<void> {
    if (!this.proc) return;
    this.proc.kill('SIGTERM');
    await this.proc;
    this.proc = null;
  }
}

export function keygen(file: string, type = 'ed25519'): void {
  execaSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', 'kq-test', '-f', file]);
}

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
