/** The daemon's side of --slurm-autoscale: what the autoscaler may see of kq, and where its agents dial. */
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { DaemonInfo } from '../common/paths.js';
import { installRoot } from '../common/install-root.js';
import { isLoopback } from '../common/endpoint.js';
import { Autoscaler, type AutoscaleConfig } from '../slurm/autoscaler.js';
import type { Store } from './store.js';

export function startAutoscaler(config: AutoscaleConfig, d: { store: Store; log: Logger; info: DaemonInfo; killGraceMs: number }): Autoscaler {
  const { info } = d;
  const wildcard = ['0.0.0.0', '*', '::'].includes(info.bind);
  const autoscaler = new Autoscaler({
    config,
    log: d.log.child({ component: 'slurm-autoscale' }),
    kqDataRoot: path.resolve(info.dataRoot),
    waitingTasks: () => d.store.waitingTaskCount(),
    agents: () => d.store.listAgents(),
    jobSpec: () => ({
      installRoot: installRoot(), node: process.execPath, agentDataRoot: path.resolve(info.dataRoot, 'slurm'),
      kqHost: config.kqHost ?? (wildcard ? os.hostname() : info.bind),
      ports: { request: info.requestPort, update: info.updatePort, broadcast: info.broadcastPort },
      killGraceMs: d.killGraceMs, curve: info.curve,
    }),
  });
  if (isLoopback(info.bind) && !config.kqHost) {
    d.log.warn({ bind: info.bind }, `slurm autoscale: kq listens on ${info.bind} only, so only agents on this machine can reach it: start kq with --bind 0.0.0.0 for a real cluster`);
  }
  autoscaler.start();
  return autoscaler;
}
