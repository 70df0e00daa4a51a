/**
 * Start and stop kq agents on another machine by running scripts/StartAgents.sh and StopAgents.sh there
 * over an SSH connection; every value on their command lines is shell-quoted. Also: copy the scripts over
 * SFTP when an install lacks them, and read the agents' logs and liveness for diagnostics.
 */
import fs from 'node:fs';
import path from 'node:path';
import { installRoot } from '../common/install-root.js';
import type { SshConnection } from './connect.js';
import { uploadFiles, uploadPrivate } from './sftp.js';
import { loginShellCommand } from './shell-quote.js';
import { printable } from '../common/printable.js';

export const SCRIPT_NAMES = { start: 'StartAgents.sh', stop: 'StopAgents.sh' } as const;

/** scripts/ of the kq install this code runs from. */
export function localScriptsDir(): string {
  return path.join(installRoot(), 'scripts');
}

export interface KqPorts { request: number; update: number; broadcast: number }

export interface RemoteStartOptions {
  installRoot: string;
  dataRoot: string;
  /** The address the agents dial. */
  kqHost: string;
  ports: KqPorts;
  numAgents: number;
  /** node binary on the remote machine (KQ_NODE); default: node on its PATH. */
  node?: string;
  /** Skip the script's name and port checks (KQ_SKIP_CHECKS=1). */
  skipChecks?: boolean;
  /** CURVE files on the remote machine, passed to the agents as KQ_SERVER_KEY and KQ_KEY_FILE. */
  curve?: { serverKeyFile: string; keyFile: string };
}

export interface StartedAgent { n: number; pid: number; log: string }

export interface RemoteStartResult {
  /** The remote machine's own name (uname -n): the host its agents report to kq. */
  machine: string;
  agents: StartedAgent[];
  /** Slots whose agent was already running and was left alone. */
  alreadyRunning: Array<{ n: number; pid: number }>;
  output: string;
}

export interface RemoteStopResult {
  stopped: Array<{ n: number; pid: number; killed: boolean }>;
  output: string;
}

/** A script ran and failed: its exit code (2 = bad arguments/install, see the script's header) and stderr. */
export class RemoteScriptError extends Error {
  constructor(readonly script: string, readonly exitCode: number | null, readonly stderr: string, message: string) {
    super(message);
  }
}

/** A command finding a script missing exits with this code and names them after MISSING_MARK on stderr. */
const MISSING_SCRIPTS_EXIT = 127;
const MISSING_MARK = 'kq-missing-scripts:';

/**
 * The fixed program every script runs through: `sh -c RUNNER kq-remote INSTALL_ROOT SCRIPT ARG…`. It finds
 * the scripts (a leading ~ is the remote home), reports missing ones, and execs the script with the
 * arguments as they are. One round trip: every exec starts the remote user's login shell, which can take
 * a second. Joined with `; ` (no newlines, which csh cannot quote); loginShellCommand quotes it and every
 * value so that any login shell passes them on literally (sh, bash, zsh, fish, csh/tcsh: test/ssh.test.ts).
 */
const RUNNER = [
  'root=$1; script=$2; shift 2',
  'case $root in "~" | "~/"*) root=$HOME${root#"~"} ;; esac',
  'm=',
  `for f in ${Object.values(SCRIPT_NAMES).join(' ')}; do [ -f "$root/scripts/$f" ] || m="$m $f"; done`,
  `if [ -n "$m" ]; then echo "${MISSING_MARK}$m in $root/scripts" >&2; exit ${MISSING_SCRIPTS_EXIT}; fi`,
  'exec sh "$root/scripts/$script" "$@"',
].join('; ');

/** The install lacks the scripts (--install-scripts copies them). */
export class MissingScriptsError extends Error {
  constructor(readonly missing: string[], where: string) {
    super(`${missing.join(' and ')} not found in ${where}`);
  }
}

/** `[env K=V…] sh -c RUNNER kq-remote INSTALL_ROOT SCRIPT ARG…`: every value one quoted word, none evaluated (UnquotableError: a line break). */
export function scriptCommand(installRoot: string, name: string, args: string[], env: Record<string, string> = {}): string {
  const envWords = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return loginShellCommand([...(envWords.length ? ['env', ...envWords] : []), 'sh', '-c', RUNNER, 'kq-remote', installRoot, name, ...args]);
}

/** Run a script; a missing script or a failure becomes an error carrying the script's exit code and stderr. */
async function runScript(conn: SshConnection, installRoot: string, name: string, args: string[], env: Record<string, string>, timeoutMs?: number) {
  const r = await conn.exec(scriptCommand(installRoot, name, args, env), timeoutMs);
  const missing = new RegExp(`^${MISSING_MARK}(.*) in (.*)$`, 'm').exec(r.stderr);
  if (r.code === MISSING_SCRIPTS_EXIT && missing) {
    throw new MissingScriptsError(missing[1]!.trim().split(/\s+/), `${missing[2]} on ${conn.options.host}`);
  }
  if (r.code !== 0) {
    throw new RemoteScriptError(name, r.code, r.stderr, `${name} failed on ${conn.target} (exit ${r.code ?? r.signal}):\n${indent(r.stderr || r.stdout)}`);
  }
  return r;
}

/** A remote path as SFTP takes it: SFTP does not expand ~, but starts in the user's home (`~/x` is `x`). */
export function sftpPath(p: string): string {
  return p === '~' ? '.' : p.startsWith('~/') ? p.slice(2) || '.' : p;
}

/**
 * Copy the agents' CURVE certificates to <data root>/keys (0700) on the remote machine: kq's public key
 * and the agents' secret key pair (0600). Returns their remote paths (as given: ~ stays for the script).
 * The data root and keys directory must be the SSH user's alone (UnsafeDirError before anything is written).
 */
export async function installAgentKeys(conn: SshConnection, dataRoot: string, files: { serverPublic: string; clientSecret: string; name: string }):
  Promise<{ serverKeyFile: string; keyFile: string }> {
  const serverKeyFile = path.posix.join(dataRoot, 'keys', 'server.key');
  const keyFile = path.posix.join(dataRoot, 'keys', `${files.name}.key_secret`);
  await uploadPrivate(conn, await remoteUid(conn), sftpPath(dataRoot), 'keys', [
    { name: 'server.key', data: fs.readFileSync(files.serverPublic), mode: 0o644 },
    { name: `${files.name}.key_secret`, data: fs.readFileSync(files.clientSecret), mode: 0o600 },
  ]);
  return { serverKeyFile, keyFile };
}

/** The SSH user's uid there (SFTP does not say who we are). */
async function remoteUid(conn: SshConnection): Promise<number> {
  const r = await conn.exec('id -u');
  const uid = /^\s*(\d+)\s*$/.exec(r.stdout)?.[1];
  if (r.code !== 0 || uid === undefined) throw new Error(`cannot tell the SSH user's uid on ${conn.target} (\`id -u\` said: ${(r.stderr || r.stdout).trim()})`);
  return Number(uid);
}

/** Copy the scripts to <install root>/scripts over SFTP (mode 0755). */
export async function installScripts(conn: SshConnection, installRoot: string, names: string[] = Object.values(SCRIPT_NAMES)): Promise<string[]> {
  const root = sftpPath(installRoot);
  const uploads = names.map((n) => ({ local: path.join(localScriptsDir(), n), remote: path.posix.join(root, 'scripts', n), mode: 0o755 }));
  await uploadFiles(conn, uploads);
  return uploads.map((u) => u.remote);
}

export async function startRemoteAgents(conn: SshConnection, o: RemoteStartOptions): Promise<RemoteStartResult> {
  const env: Record<string, string> = {};
  if (o.node) env.KQ_NODE = o.node;
  if (o.skipChecks) env.KQ_SKIP_CHECKS = '1';
  if (o.curve) {
    env.KQ_SERVER_KEY = o.curve.serverKeyFile;
    env.KQ_KEY_FILE = o.curve.keyFile;
  }
  const args = [o.installRoot, o.dataRoot, o.kqHost, ...[o.ports.request, o.ports.update, o.ports.broadcast, o.numAgents].map(String)];
  const r = await runScript(conn, o.installRoot, SCRIPT_NAMES.start, args, env);
  const machine = /^starting \d+ kq agent\(s\) on (\S+)/m.exec(r.stdout)?.[1] ?? conn.options.host;
  const agents = [...r.stdout.matchAll(/^started kq agent (\d+): pid (\d+), log (.*)$/gm)]
    .map((m) => ({ n: Number(m[1]), pid: Number(m[2]), log: m[3]! }));
  const alreadyRunning = [...r.stdout.matchAll(/^kq agent (\d+) is already running \(pid (\d+)\)/gm)]
    .map((m) => ({ n: Number(m[1]), pid: Number(m[2]) }));
  return { machine, agents, alreadyRunning, output: r.stdout };
}

export async function stopRemoteAgents(conn: SshConnection, o: { installRoot: string; dataRoot: string; graceSeconds: number }): Promise<RemoteStopResult> {
  const r = await runScript(conn, o.installRoot, SCRIPT_NAMES.stop, [o.dataRoot, String(Math.trunc(o.graceSeconds))], {},
    (o.graceSeconds + 60) * 1000);
  const stopped = [...r.stdout.matchAll(/^(?:stopped kq agent (\d+) \(pid (\d+)\)|kq agent (\d+) \(pid (\d+)\) did not stop)/gm)]
    .map((m) => ({ n: Number(m[1] ?? m[3]), pid: Number(m[2] ?? m[4]), killed: m[3] !== undefined }));
  return { stopped, output: r.stdout };
}

export interface AgentDiagnosis { n: number; pid: number; alive: boolean; logTail: string }

/** Fixed program: for each `N PID LOG` triple, `@@kq-agent N alive|gone` and the end of LOG. */
const DIAGNOSE = [
  'lines=$1; shift',
  'while [ $# -ge 3 ]; do n=$1; pid=$2; log=$3; shift 3',
  'state=gone',
  'if [ -r "/proc/$pid/cmdline" ]; then tr "\\000" " " <"/proc/$pid/cmdline" | grep -q kq-agent && state=alive; ' +
    'else ps -p "$pid" -o command= 2>/dev/null | grep -q kq-agent && state=alive; fi',
  'echo "@@kq-agent $n $state"',
  'tail -n "$lines" "$log" 2>&1',
  'done',
].join('; ');

/** For each agent, in one round trip: is its pid still a kq agent, and the last lines of its log. */
export async function diagnoseAgents(conn: SshConnection, agents: StartedAgent[], lines = 15): Promise<AgentDiagnosis[]> {
  if (agents.length === 0) return [];
  const r = await conn.exec(loginShellCommand(['sh', '-c', DIAGNOSE, 'kq-diagnose', String(lines), ...agents.flatMap((a) => [String(a.n), String(a.pid), a.log])]));
  const out: AgentDiagnosis[] = [];
  for (const chunk of r.stdout.split(/^@@kq-agent /m).slice(1)) {
    const m = /^(\d+) (alive|gone)\n?([\s\S]*)$/.exec(chunk);
    const agent = m && agents.find((a) => a.n === Number(m[1]));
    if (m && agent) out.push({ n: agent.n, pid: agent.pid, alive: m[2] === 'alive', logTail: m[3]! });
  }
  return out;
}

/**
 * pino JSON lines as `12:34:56 WARN message`; other lines as they are. Control characters are shown as
 * escapes: a remote machine's log must not drive the terminal of whoever reads the diagnosis.
 */
export function readableLog(text: string): string {
  return rawReadableLog(text).split('\n').map(printable).join('\n');
}

function rawReadableLog(text: string): string {
  const levels: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
  return text.split('\n').filter((l) => l.trim() !== '').map((line) => {
    try {
      const j = JSON.parse(line) as { level?: number; time?: number; msg?: string };
      if (typeof j.msg !== 'string') return line;
      const t = typeof j.time === 'number' ? new Date(j.time).toISOString().slice(11, 19) + ' ' : '';
      return `${t}${levels[j.level ?? 30] ?? j.level} ${j.msg}`;
    } catch {
      return line;
    }
  }).join('\n');
}

export function indent(text: string, prefix = '  | '): string {
  return text.replace(/\n+$/, '').split('\n').map((l) => prefix + l).join('\n');
}
