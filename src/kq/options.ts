/** The daemon's options, compiled once into a fully defaulted object (flags > environment > defaults). */
import { defaultDataRoot, DEFAULT_PORTS, ZMQ_PORTS, type ZmqPort } from '../common/paths.js';
import type { AutoscaleConfig } from '../slurm/autoscaler.js';

export interface DaemonOptions {
  dataRoot: string;
  bind: string;
  requestPort: number;
  updatePort: number;
  broadcastPort: number;
  numAgents: number;
  heartbeatMs: number;
  agentTimeoutMs: number;
  killGraceMs: number;
  blocklistAfter: number;
  /** Hand a busy agent the task it starts next, ahead (false: --no-prefetch). */
  prefetch?: boolean;
  maxTaskLogBytes: number;
  logLevel: string;
  /** CURVE on loopback too (it is always on beyond loopback unless `insecure`). */
  secure: boolean;
  /** Listen beyond loopback without CURVE: warned about loudly. */
  insecure: boolean;
  /** Extra flags for local agents (tests use it to shorten timers). */
  agentArgs?: string[];
  /** The web monitor's port (0 = a free one), or null for none. */
  httpPort: number | null;
  /** Where the monitor listens; beyond loopback every API request needs the token. */
  httpBind: string;
  /** The monitor's token; default: none on loopback, else generated into <data root>/http-token. */
  httpToken?: string;
  /** Grow and shrink agents on Slurm with the queue (--slurm-autoscale). */
  slurmAutoscale?: AutoscaleConfig;
  /** Remove ended jobs (and their logs) this long after they ended; null: keep them. */
  keepFinishedMs?: number | null;
}

export const DAEMON_DEFAULTS = {
  bind: '127.0.0.1',
  numAgents: 2,
  heartbeatMs: 2000,
  agentTimeoutMs: 10_000,
  killGraceMs: 5000,
  blocklistAfter: 3,
  maxTaskLogBytes: 64 * 1024 * 1024,
  logLevel: 'info',
} as const;

export function envDefaults(env: NodeJS.ProcessEnv = process.env) {
  return {
    dataRoot: defaultDataRoot(env),
    ...(Object.fromEntries(ZMQ_PORTS.map((p) => [p.key, env[p.env] ?? String(p.port)])) as Record<ZmqPort['key'], string>),
    numAgents: env.KQ_NUM_AGENTS ?? String(DAEMON_DEFAULTS.numAgents),
    bind: env.KQ_BIND ?? DAEMON_DEFAULTS.bind,
    httpPort: env.KQ_HTTP_PORT ?? String(DEFAULT_PORTS.http),
    httpBind: env.KQ_HTTP_BIND ?? DAEMON_DEFAULTS.bind,
    httpToken: env.KQ_HTTP_TOKEN,
  };
}
