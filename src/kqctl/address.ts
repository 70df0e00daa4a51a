/** Where kqctl finds kq: flags, then KQ_HOST/KQ_*_PORT, then <data root>/kq.json, then the default ports. */
import fs from 'node:fs';
import { dataFiles, defaultDataRoot, DEFAULT_PORTS, type DaemonInfo } from '../common/paths.js';

export interface KqAddress {
  host: string;
  requestPort: number;
  broadcastPort: number;
  /** Where the address came from, for error messages. */
  source: string;
}

export interface AddressFlags {
  dataRoot?: string;
  host?: string;
  requestPort?: number;
  broadcastPort?: number;
}

export function resolveAddress(flags: AddressFlags, env: NodeJS.ProcessEnv = process.env): KqAddress {
  const dataRoot = flags.dataRoot ?? defaultDataRoot(env);
  let info: Partial<DaemonInfo> = {};
  let source = 'default ports';
  try {
    info = JSON.parse(fs.readFileSync(dataFiles(dataRoot).info, 'utf8')) as DaemonInfo;
    source = dataFiles(dataRoot).info;
  } catch {
    // no kq.json: kq is not running on this data root, or runs elsewhere (flags/env say where)
  }
  const num = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));
  const host = flags.host ?? env.KQ_HOST ?? info.host ?? '127.0.0.1';
  const requestPort = flags.requestPort ?? num(env.KQ_REQUEST_PORT) ?? info.requestPort ?? DEFAULT_PORTS.request;
  const broadcastPort = flags.broadcastPort ?? num(env.KQ_BROADCAST_PORT) ?? info.broadcastPort ?? DEFAULT_PORTS.broadcast;
  if (flags.host || flags.requestPort || env.KQ_HOST || env.KQ_REQUEST_PORT) source = 'flags/environment';
  return { host, requestPort, broadcastPort, source };
}
