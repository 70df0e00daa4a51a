/** Waiting for remotely started agents to show up in kq's agent list. */
import type { AgentInfo } from '../../../protocol/index.js';
import type { RemoteStartResult } from '../../../ssh/remote-agents.js';
import type { KqClient } from '../../client.js';
import { CliError, EXIT } from '../../exit-codes.js';

const POLL_MS = 200;

/** Poll kq's agent list until every started agent (same machine name, same pid) is there. */
export async function waitForRegistration(client: KqClient, result: RemoteStartResult, timeoutMs: number,
  onRegistered: (agent: AgentInfo) => void = () => undefined): Promise<Map<number, AgentInfo>> {
  const want = new Set(result.agents.map((a) => a.pid));
  const found = new Map<number, AgentInfo>();
  const deadline = Date.now() + timeoutMs;
  while (want.size > 0) {
    let agents: AgentInfo[] = [];
    try {
      agents = await client.request<AgentInfo[]>('agents', {});
    } catch (err) {
      // kq answered the ping a moment ago: a slow reply (a busy machine) is not fatal until the deadline.
      if (!(err instanceof CliError && err.exitCode === EXIT.unreachable) || Date.now() >= deadline) throw err;
    }
    for (const a of agents) {
      if (!a.local && a.host === result.machine && want.has(a.pid) && (a.state === 'idle' || a.state === 'busy') && !found.has(a.pid)) {
        found.set(a.pid, a);
        onRegistered(a);
      }
    }
    if (found.size === want.size || Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return found;
}
