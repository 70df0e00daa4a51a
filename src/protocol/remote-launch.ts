/**
 * The monitor's Launch Remote Agents request (POST /api/remote-agents) and the launch it answers with.
 * Every field is checked strictly here because kq turns it into an SSH login with a key of its user:
 * host names and IP literals only, POSIX user names, absolute paths without control characters.
 */
import net from 'node:net';
import { z } from 'zod';

/** RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens (never a leading `-`). */
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
/** POSIX portable user name (useradd's default rule), at most 32 characters. */
const USER_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

const absolutePath = (what: string) => z.string()
  .max(4095, `${what} is longer than the system's path limit`)
  .refine((p) => !CONTROL.test(p), `${what} contains a NUL or another control character`)
  .refine((p) => p.startsWith('/'), `${what} must be an absolute path (starting with /)`);

/** An empty text field means "the default". */
const optional = <T extends z.ZodTypeAny>(schema: T) => z.preprocess((v) => (v === '' || v === null ? undefined : v), schema.optional());

export const RemoteLaunchRequestSchema = z.object({
  host: z.string().trim()
    .refine((h) => HOST_NAME.test(h) || net.isIP(h) !== 0, 'host must be a host name or an IP address (no user@, port, spaces or options)'),
  sshPort: optional(z.number().int().min(1).max(65535)),
  user: z.string().trim().regex(USER_NAME, 'user must be a POSIX user name (letters, digits, _ . -, not starting with - or a digit, up to 32)'),
  /** The SSH private key on kq's machine; none: kq's ssh-agent and ~/.ssh keys, as kqctl. */
  identity: optional(absolutePath('the SSH key path')),
  numAgents: z.number().int().min(1, 'number of agents must be 1 to 64').max(64, 'number of agents must be 1 to 64'),
  installRoot: optional(absolutePath('the install root')),
  dataRoot: optional(absolutePath('the data root')),
  acceptNewHostKey: z.boolean().default(false),
}).strict();

export type RemoteLaunchRequest = z.infer<typeof RemoteLaunchRequestSchema>;

export type RemoteLaunchState = 'running' | 'succeeded' | 'failed';

export interface RemoteLaunch {
  id: number;
  host: string;
  sshPort: number;
  user: string;
  numAgents: number;
  state: RemoteLaunchState;
  startedAt: string;
  endedAt: string | null;
  /** `kqctl remote start --progress` steps, in order. */
  progress: string[];
  /** What kqctl printed besides progress (its diagnosis when it failed), as it printed it. */
  messages: string;
  exitCode: number | null;
  /** kqctl remote's exit code in words. */
  reason: string | null;
  /** `kqctl remote start --json`'s result (machine, agents with their registration), when it printed one. */
  result: unknown;
}
