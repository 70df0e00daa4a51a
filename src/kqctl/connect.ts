/** Connection flags every command takes, and the wrapper that turns a command into an exit code. */
import { Option, type Command } from 'commander';
import { durationArg, portArg } from '../common/cli.js';
import { resolveAddress, type AddressFlags } from './address.js';
import { KqClient } from './client.js';
import { printable, printableLines } from '../common/printable.js';
import { CliError, EXIT } from './exit-codes.js';

const DEFAULT_CONNECT_TIMEOUT_MS = 2000;

export interface ConnectionFlags {
  dataRoot?: string;
  host?: string;
  requestPort?: number;
  broadcastPort?: number;
  connectTimeout?: number;
}

export function connectionOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--data-root <dir>', 'kq data root whose kq.json says where kq listens [env KQ_DATA_ROOT]'))
    .addOption(new Option('--host <host>', 'kq host [env KQ_HOST]'))
    .addOption(new Option('--request-port <port>', 'kq request port [env KQ_REQUEST_PORT]').argParser(portArg))
    .addOption(new Option('--broadcast-port <port>', 'kq broadcast port [env KQ_BROADCAST_PORT]').argParser(portArg))
    .addOption(new Option('--connect-timeout <duration>', 'give up on kq after this long').argParser(durationArg));
}

/**
 * Run a command with a client; map its outcome to an exit code and a one-line error.
 * `address` picks where kq is from the flags (default: the connection flags themselves).
 */
export function withClient<F extends ConnectionFlags, A extends unknown[]>(fn: (client: KqClient, flags: F, ...args: A) => Promise<number>,
  address: (flags: F) => AddressFlags = (flags) => flags) {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const flags = cmd.optsWithGlobals() as F;
    const positional = args.slice(0, -2) as A;
    let client: KqClient | null = null;
    let code: number;
    try {
      client = new KqClient(resolveAddress(address(flags)), flags.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS);
      code = await fn(client, flags, ...positional);
    } catch (err) {
      // Exit 1 means "a job failed" to scripts: anything not foreseen gets its own code.
      const e = err instanceof CliError ? err : new CliError(EXIT.unexpected, `unexpected error: ${(err as Error).message}`);
      process.stderr.write(`kqctl: ${e.lines ? printableLines(e.message) : printable(e.message)}\n`);
      code = e.exitCode;
    } finally {
      client?.close();
    }
    process.exitCode = code;
  };
}

/** Parse job ids; a bad one is a usage error naming it. */
export function jobIds(values: string[]): number[] {
  return values.map((v) => {
    if (!/^\d+$/.test(v)) throw new CliError(EXIT.usage, `not a job id: "${v}"`);
    return Number(v);
  });
}
