/** `kqctl remote stop`: run StopAgents.sh on --host over SSH for the agents of one data root. */
import { stopRemoteAgents } from '../../../ssh/remote-agents.js';
import type { KqClient } from '../../client.js';
import { EXIT } from '../../exit-codes.js';
import { printJson } from '../../format.js';
import { dataRootOf, requireHost, type StopFlags } from './options.js';
import { withScripts, withSsh } from './ssh-session.js';

export async function stopCommand(_client: KqClient, flags: StopFlags): Promise<number> {
  requireHost(flags);
  return withSsh(flags, async (conn) => {
    const r = await withScripts(conn, flags, () =>
      stopRemoteAgents(conn, { installRoot: flags.installRoot, dataRoot: dataRootOf(flags), graceSeconds: Math.ceil(flags.grace / 1000) }));
    if (flags.json) printJson({ host: flags.host, stopped: r.stopped });
    else process.stdout.write(r.output);
    return EXIT.ok;
  });
}
