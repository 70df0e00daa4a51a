/**
 * `kq --exit-with PID`: kq's lifetime tied to an application (Blender, Katana), as in the seed. kq watches
 * the process and stops — renders killed, running tasks requeued, nothing lost — once it has exited.
 * Polling /proc (kill(pid, 0) elsewhere): a process that is not kq's child cannot be waited on, and a
 * pid reused by a new process is told apart by its start time.
 */
import fs from 'node:fs';

export interface ProcessIdentity {
  pid: number;
  /** Field 22 of /proc/PID/stat (clock ticks since boot), or null where /proc is missing. */
  startTime: string | null;
}

function statFields(pid: number): string[] | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from 3 (state) on; the name may hold spaces
  } catch {
    return null;
  }
}

/** The process as it runs now, or null when no such process runs (or it is a zombie). */
export function identify(pid: number): ProcessIdentity | null {
  if (fs.existsSync('/proc/self/stat')) {
    const f = statFields(pid);
    if (!f || f[0] === 'Z' || f[0] === 'X') return null;
    return { pid, startTime: f[19] ?? null };
  }
  try {
    process.kill(pid, 0);
    return { pid, startTime: null };
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? { pid, startTime: null } : null;
  }
}

/** True while the same process runs: not exited, not reaped, pid not reused. */
export function stillRunning(who: ProcessIdentity): boolean {
  const now = identify(who.pid);
  return now !== null && now.startTime === who.startTime;
}

/**
 * Call `onExit` once, soon after the process `who` (from identify(), taken before kq started, so an
 * application that quits during start-up is noticed too) has exited. Returns a function that stops watching.
 */
export function watchExit(who: ProcessIdentity, onExit: () => void, everyMs = 500): () => void {
  const timer = setInterval(() => {
    if (stillRunning(who)) return;
    clearInterval(timer);
    onExit();
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
