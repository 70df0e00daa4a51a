/** Where kq keeps its files, shared by the daemon (writer) and kqctl (reads kq.json only). */
import os from 'node:os';
import path from 'node:path';

export function defaultDataRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.KQ_DATA_ROOT) return path.resolve(env.KQ_DATA_ROOT);
  const xdg = env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(xdg, 'kq');
}

export const dataFiles = (root: string) => ({
  db: path.join(root, 'kq.db'),
  info: path.join(root, 'kq.json'),
  lock: path.join(root, 'kq.lock'),
  /** The local agents kq started (pid, start time, argv), for a kq restarted after a crash to adopt. */
  localAgents: path.join(root, 'local-agents.json'),
  logs: path.join(root, 'logs'),
  daemonLog: path.join(root, 'logs', 'kq.log'),
  jobLog: (jobId: number) => path.join(root, 'logs', `job-${jobId}.log`),
  agentLog: (n: number) => path.join(root, 'logs', `local_agent_${n}.log`),
  httpToken: path.join(root, 'http-token'),
  /** The secret kq's local agents prove themselves with; kept so agents adopted after a kq restart still prove it. */
  localAgentProof: path.join(root, 'local-agent-proof'),
});

/** What kq writes to kq.json so kqctl finds it without flags. */
export interface DaemonInfo {
  pid: number;
  host: string;
  bind: string;
  requestPort: number;
  updatePort: number;
  broadcastPort: number;
  dataRoot: string;
  startedAt: string;
  /** True when every socket requires CURVE; clients then need serverKey and an allowed key pair. */
  curve: boolean;
  serverKey: string | null;
  /** Listening beyond loopback without CURVE (--insecure): anyone who reaches the ports can run commands. */
  insecure: boolean;
  /** The web monitor's port and page address; null with --no-http. */
  httpPort: number | null;
  httpUrl: string | null;
}

/**
 * kq's three ZeroMQ ports, declared once: every program derives its flags (`--request-port`…), environment
 * variables, option keys and defaults from this list. The order is the seed's.
 */
export const ZMQ_PORTS = [
  { name: 'request', key: 'requestPort', env: 'KQ_REQUEST_PORT', socket: 'ROUTER', port: 5560 },
  { name: 'update', key: 'updatePort', env: 'KQ_UPDATE_PORT', socket: 'PULL', port: 5561 },
  { name: 'broadcast', key: 'broadcastPort', env: 'KQ_BROADCAST_PORT', socket: 'PUB', port: 5562 },
] as const;
export type ZmqPort = (typeof ZMQ_PORTS)[number];

export const DEFAULT_PORTS = {
  ...(Object.fromEntries(ZMQ_PORTS.map((p) => [p.name, p.port])) as Record<ZmqPort['name'], number>),
  http: 5563,
} as const;
