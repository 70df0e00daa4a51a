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

export const DEFAULT_PORTS = { request: 5560, update: 5561, broadcast: 5562, http: 5563 } as const;
