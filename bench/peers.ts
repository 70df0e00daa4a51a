/**
 * The peers kq is measured against, found on PATH. Install them with
 *   apt-get install -y task-spooler parallel povray
 * (task-spooler's binary is `tsp` on Debian). A missing peer is reported and skipped, never fatal.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runTimed, tempDir, type TimedResult } from './kq.js';

export interface Peer { name: string; bin: string; version: string | null }

function which(bin: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = path.join(dir, bin);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch { /* next */ }
  }
  return null;
}

function versionOf(bin: string, args: string[], pattern: RegExp): string | null {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 5000, env: { ...process.env, TS_SOCKET: '/nonexistent/kq-bench' } });
  const m = pattern.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`);
  return m ? m[1]! : null;
}

export function findPeers(): Record<string, Peer | null> {
  const find = (name: string, bin: string, args: string[], pattern: RegExp): Peer | null => {
    const p = which(bin);
    return p ? { name, bin: p, version: versionOf(p, args, pattern) } : null;
  };
  return {
    xargs: find('xargs', 'xargs', ['--version'], /xargs \(GNU findutils\) (\S+)/),
    tsp: find('task-spooler', 'tsp', ['-V'], /Task Spooler v?(\S+)/) ?? find('task-spooler', 'ts', ['-V'], /Task Spooler v?(\S+)/),
    parallel: find('GNU parallel', 'parallel', ['--version'], /GNU parallel (\S+)/),
    povray: find('POV-Ray', 'povray', ['--version'], /POV-Ray (\S+)/),
    sh: find('sh', 'sh', [], /()/),
  };
}

/** `seq N | xargs -P P -n1 CMD` */
export function runXargs(n: number, p: number, cmd: string[], cwd?: string): Promise<TimedResult> {
  return runTimed('sh', ['-c', `seq 1 ${n} | xargs -P ${p} -n1 ${cmd.map(shq).join(' ')}`], { cwd });
}

/** `seq N | parallel -jP CMD` ({} is the input line; without it parallel appends it). */
export function runParallel(n: number, p: number, cmd: string[], cwd?: string): Promise<TimedResult> {
  return runTimed('sh', ['-c', `seq 1 ${n} | parallel --will-cite -j${p} ${cmd.map(shq).join(' ')}`], { cwd });
}

/**
 * task-spooler with its own socket and TMPDIR (never anyone else's queue): start a server with P slots,
 * queue N commands (one `tsp` client process each, as a user would), wait until the last ones ended.
 * By default each job's output goes to a file, as with a plain `tsp CMD` (kq keeps every task's output
 * too); `noOutput` adds `-n` (no output file); `appendIndex` passes each command its number 1..N, as
 * `for i in $(seq N); do tsp CMD $i; done` would.
 */
export async function runTsp(tsp: string, n: number, p: number, cmd: string[], noOutput = false, appendIndex = false): Promise<TimedResult> {
  const dir = tempDir('kq-bench-tsp-');
  const env = { ...process.env, TS_SOCKET: path.join(dir, 'socket'), TMPDIR: dir, TS_MAXFINISHED: String(n + 10) };
  const c = cmd.map(shq).join(' ');
  // Wait on every job not finished yet (they start in order, P at a time, but need not end in order).
  const script = `${shq(tsp)} -S ${p} >/dev/null
i=0; while [ $i -lt ${n} ]; do i=$((i+1)); ${shq(tsp)}${noOutput ? ' -n' : ''} ${c}${appendIndex ? ' $i' : ''} >/dev/null || { echo "tsp refused job $i" >&2; exit 1; }; done
for id in $(${shq(tsp)} -l | awk 'NR>1 && $2 != "finished" {print $1}'); do ${shq(tsp)} -w $id >/dev/null 2>&1; done
${shq(tsp)} -l | awk 'NR>1 && $2 != "finished" {bad++; if (bad < 3) print "not finished: " $0 > "/dev/stderr"} END {exit bad>0}'`;
  try {
    return await runTimed('sh', ['-c', script], { env });
  } finally {
    await runTimed(tsp, ['-K'], { env }).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The bare Node loop (bench/bare-loop.ts) in its own process; its own clock excludes Node's start-up. */
export async function runBareLoop(n: number, p: number): Promise<TimedResult & { innerMs: number; cpuMs: number }> {
  const script = new URL('./bare-loop.js', import.meta.url).pathname;
  const r = await runTimed(process.execPath, [script, String(n), String(p)]);
  const [inner, cpu] = r.stdout.trim().split(' ').map(Number);
  return { ...r, innerMs: inner ?? NaN, cpuMs: cpu ?? NaN };
}

export function shq(s: string): string {
  return /^[\w@%+=:,./{}-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
