/** Small process-group helpers: every process kq or an agent starts leads a group that can be killed whole. */
import fs from 'node:fs';

/**
 * Signal the whole process group `pid` leads; a group that is already gone is not an error. Only the group:
 * once it is gone, the bare pid may belong to some other program by now, so it is never signalled alone.
 * (Windows has no groups: there the process itself.)
 */
export function killGroup(pid: number, signal: NodeJS.Signals): boolean {
  // -1 is every process we may signal, -0 our own group: never a render's group, whoever named it.
  if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) return false;
  try {
    process.kill(process.platform === 'win32' ? pid : -pid, signal);
    return true;
  } catch {
    return false;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return !isAlive(pid);
}

/**
 * Does any live process remain in this process group? kill(-pgid, 0) answers "no" at once for an empty
 * group (the common case); otherwise /proc tells live members from zombies nobody has reaped yet.
 */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  if (process.platform !== 'linux') return true;
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return true;
  }
  for (const entry of entries) {
    if (entry.charCodeAt(0) < 48 || entry.charCodeAt(0) > 57) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'latin1');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ', 3);
      if (fields[0] !== 'Z' && Number(fields[2]) === pgid) return true;
    } catch { /* gone meanwhile */ }
  }
  return false;
}

/**
 * End a whole process group, whether or not its leader still runs: SIGTERM, up to `graceMs` for it to
 * empty, then SIGKILL. Resolves once the group is empty (true), or false if it outlived SIGKILL briefly
 * (a process in uninterruptible sleep). It polls rather than signalling on a timer, so a group number
 * the kernel hands out again once the group emptied is not signalled later.
 */
export async function terminateGroup(pgid: number, graceMs: number, pollMs = 25): Promise<boolean> {
  if (process.platform === 'win32') return terminateWindowsProcess(pgid); // no process groups there
  if (!groupAlive(pgid)) return true;
  signalGroup(pgid, 'SIGTERM');
  if (await emptiesWithin(pgid, graceMs, pollMs)) return true;
  signalGroup(pgid, 'SIGKILL');
  return emptiesWithin(pgid, 5000, pollMs);
}

/** Windows has no process groups: end the render's own process (TerminateProcess), as kill did before. */
function terminateWindowsProcess(pid: number): boolean {
  try {
    process.kill(pid);
  } catch { /* already gone */ }
  return true;
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch { /* emptied meanwhile */ }
}

async function emptiesWithin(pgid: number, ms: number, pollMs: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  // Quick at first (most groups empty within milliseconds of SIGTERM), then backing off to 200 ms.
  for (let wait = pollMs; ; wait = Math.min(wait * 2, 200)) {
    if (!groupAlive(pgid)) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(1, deadline - Date.now()))));
  }
}

/** What tells one process from a later one given the same pid: its boot, start time and exact argv. */
export interface ProcessIdentity {
  pid: number;
  bootId: string;
  /** Start time in clock ticks since boot (/proc/PID/stat field 22). */
  startTicks: string;
  argv: string[];
}

/** The identity of a running process, or null (gone, a zombie, or no /proc on this system). */
export function processIdentity(pid: number): ProcessIdentity | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return null;
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const argv = cmdline.endsWith('\0') ? cmdline.slice(0, -1).split('\0') : cmdline.split('\0');
    return { pid, bootId: fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), startTicks: fields[19]!, argv };
  } catch {
    return null;
  }
}

/** Is `pid` still exactly the process recorded (same boot, same start time, same argv)? */
export function isSameProcess(recorded: ProcessIdentity): boolean {
  const now = processIdentity(recorded.pid);
  return now !== null && now.bootId === recorded.bootId && now.startTicks === recorded.startTicks &&
    now.argv.length === recorded.argv.length && now.argv.every((a, i) => a === recorded.argv[i]);
}
