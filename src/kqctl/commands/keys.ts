/**
 * `kqctl keys`: the allowlist of CURVE public keys kq admits. It edits files under <data root>/keys on
 * kq's machine (kq re-reads the allowlist on every new connection, and a running kq cuts a revoked key's
 * open connections within a second), so it works with kq stopped too.
 */
import type { Command } from 'commander';
import { defaultDataRoot } from '../../common/paths.js';
import { addClient, keyFiles, listClients, revokeClient } from '../../common/keys.js';
import { EXIT } from '../exit-codes.js';
import { printJson, table } from '../format.js';

type Flags = { dataRoot?: string; json?: boolean; publicKey?: string };

export function register(program: Command): void {
  const keys = program.command('keys').description("manage which CURVE keys kq admits (files under <data root>/keys on kq's machine)");
  const dataRootOf = (cmd: Command) => (cmd.optsWithGlobals() as Flags).dataRoot ?? defaultDataRoot();
  const guarded = (fn: (cmd: Command, ...args: string[]) => void) => (...args: unknown[]) => {
    try {
      fn(args[args.length - 1] as Command, ...(args.slice(0, -2) as string[]));
    } catch (err) {
      process.stderr.write(`kqctl: ${(err as Error).message}\n`);
      process.exitCode = EXIT.usage;
    }
  };

  keys.command('add-client')
    .description('allow an agent or kqctl user: makes a key pair (or takes --public-key) and adds it to the allowlist')
    .argument('<name>', 'a name for the machine or user, e.g. render2')
    .option('--public-key <z85>', 'allow this existing public key instead of making a pair')
    .option('--json', 'print as JSON', false)
    .action(guarded((cmd, name) => {
      const flags = cmd.opts() as Flags;
      const dataRoot = dataRootOf(cmd);
      const added = addClient(dataRoot, name!, flags.publicKey);
      const serverKey = keyFiles(dataRoot).serverPublic;
      if (flags.json) printJson({ name, ...added, serverKeyFile: serverKey });
      else process.stdout.write(`allowed "${name}" (public key ${added.publicKey})\n` +
        (added.secretFile ? `its secret certificate: ${added.secretFile}\ncopy it (mode 0600) to that machine and start agents with --key-file FILE --server-key ${serverKey}\n` : ''));
    }));

  keys.command('list')
    .description('list the allowed clients and their public keys')
    .option('--json', 'print as JSON', false)
    .action(guarded((cmd) => {
      const clients = listClients(dataRootOf(cmd));
      if ((cmd.opts() as Flags).json) printJson(clients);
      else process.stdout.write(table(['Name', 'Public Key'], clients.map((c) => [c.name, c.publicKey])));
    }));

  keys.command('revoke')
    .description('remove a client from the allowlist: a running kq refuses its new connections and, within a second, closes every open connection (allowed agents and clients reconnect by themselves)')
    .argument('<name>', 'the client name')
    .action(guarded((cmd, name) => {
      revokeClient(dataRootOf(cmd), name!);
      process.stdout.write(`revoked "${name}": a running kq closes its open connections within a second and refuses new ones\n`);
    }));
}
