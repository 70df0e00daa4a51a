/** Where kqctl finds kq: flags, then KQ_HOST/KQ_*_PORT, then <data root>/kq.json, then the default ports. */
import fs from 'node:fs';
import { dataFiles, defaultDataRoot, DEFAULT_PORTS, type DaemonInfo } from '../common/paths.js';
import { curveClient, type CurveClient } from '../common/curve-client.js';
import { keyFiles, LOCAL_CLIENT } from '../common/keys.js';
import { EnvError, fromEnv, portArg } from '../common/cli.js';
import { CliError, EXIT } from './exit-codes.js';

export interface KqAddress {
  host: string;
  requestPort: number;
  broadcastPort: number;
  /** Where the address came from, for error messages. */
  source: string;
  /** CURVE settings when kq requires them (kq.json says so, or KQ_SERVER_KEY/KQ_KEY_FILE are set). */
  curve: CurveClient | null;
  /** Why CURVE settings could not be read; reported when kqctl first talks to kq. */
  curveError: string | null;
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
  const port = (variable: string) => envPort(variable, env);
  const host = flags.host ?? env.KQ_HOST ?? info.host ?? '127.0.0.1';
  const requestPort = flags.requestPort ?? port('KQ_REQUEST_PORT') ?? info.requestPort ?? DEFAULT_PORTS.request;
  const broadcastPort = flags.broadcastPort ?? port('KQ_BROADCAST_PORT') ?? info.broadcastPort ?? DEFAULT_PORTS.broadcast;
  if (flags.host || flags.requestPort || env.KQ_HOST || env.KQ_REQUEST_PORT) source = 'flags/environment';
  let curve: CurveClient | null = null;
  let curveError: string | null = null;
  try {
    curve = resolveCurve(dataRoot, info, env);
  } catch (err) {
    curveError = `kq requires CURVE keys: ${(err as Error).message} (set KQ_SERVER_KEY and KQ_KEY_FILE)`;
  }
  return { host, requestPort, broadcastPort, source, curve, curveError };
}

/** A port from an environment variable (unset, empty or 0: undefined); a bad one is a usage error naming it. */
export function envPort(variable: string, env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = env[variable];
  if (v === undefined || v === '') return undefined;
  try {
    // 0 told kq to pick a free port (the same exported variables may start kq): kq.json says which.
    return fromEnv(v, variable, portArg) || undefined;
  } catch (err) {
    throw err instanceof EnvError ? new CliError(EXIT.usage, err.message) : err;
  }
}

/**
 * kqctl on kq's own machine uses the `local` client key from the data root; elsewhere KQ_SERVER_KEY and
 * KQ_KEY_FILE say which keys to use (see README "Security").
 */
function resolveCurve(dataRoot: string, info: Partial<DaemonInfo>, env: NodeJS.ProcessEnv): CurveClient | null {
  if (!env.KQ_KEY_FILE && !env.KQ_SERVER_KEY && !info.curve) return null;
  const keyFile = env.KQ_KEY_FILE || keyFiles(dataRoot).clientSecret(LOCAL_CLIENT);
  return curveClient(env.KQ_SERVER_KEY || info.serverKey || undefined, keyFile);
}
