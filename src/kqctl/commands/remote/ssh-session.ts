/** One SSH session for a remote command: open, run, always close; SSH and script failures become exit codes. */
import path from 'node:path';
import type { SshConnection } from '../../../ssh/connect.js';
import { defaultKnownHostsFiles } from '../../../ssh/options.js';
import { MissingScriptsError, RemoteScriptError, installScripts } from '../../../ssh/remote-agents.js';
import { UnquotableError } from '../../../ssh/shell-quote.js';
import { CliError, EXIT } from '../../exit-codes.js';
import type { SshFlags } from './options.js';

export async function withSsh(flags: SshFlags, fn: (conn: SshConnection) => Promise<number>): Promise<number> {
  // ssh2 is loaded only here, so every other kqctl command starts without it.
  const [{ SshConnection, SshError }, { IdentityError }] = await Promise.all([import('../../../ssh/connect.js'), import('../../../ssh/identity.js')]);
  let conn: SshConnection;
  try {
    conn = await SshConnection.open({
      host: flags.host!, port: flags.sshPort, username: flags.user, identity: flags.identity,
      knownHostsFiles: flags.knownHosts ? [path.resolve(flags.knownHosts)] : defaultKnownHostsFiles(),
      acceptNewHostKey: flags.acceptNewHostKey, readyTimeoutMs: flags.sshTimeout,
    });
  } catch (err) {
    if (err instanceof IdentityError) throw new CliError(EXIT.usage, err.message);
    if (err instanceof SshError) throw new CliError(EXIT.remote, err.message, true);
    throw err;
  }
  try {
    if (conn.hostKey?.added) process.stderr.write(`kqctl: added the host key of ${flags.host} (${conn.hostKey.type} ${conn.hostKey.fingerprint}) to ${flags.knownHosts ?? defaultKnownHostsFiles()[0]}\n`);
    return await fn(conn);
  } catch (err) {
    if (err instanceof UnquotableError) throw new CliError(EXIT.usage, err.message);
    if (err instanceof RemoteScriptError) throw new CliError(err.exitCode === 2 ? EXIT.usage : EXIT.remote, err.message, true);
    if (err instanceof SshError) throw new CliError(EXIT.remote, err.message, true);
    throw err;
  } finally {
    conn.close();
  }
}

/** Run a script step; if the install lacks the scripts, copy them over SFTP (--install-scripts) and run it again. */
export async function withScripts<T>(conn: SshConnection, flags: SshFlags, step: () => Promise<T>): Promise<T> {
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
