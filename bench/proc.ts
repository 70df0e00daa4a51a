/** What /proc says about a process (RSS, open descriptors) and about the machine (load, CPU). */
import fs from 'node:fs';
import os from 'node:os';

/** Resident set size in MB, or null if the process is gone. */
export function rssMb(pid: number): number | null {
  return statusMb(pid, 'VmRSS');
}

/** The process's peak resident memory (VmHWM) in MB, or null when it is gone. */
export function peakRssMb(pid: number): number | null {
  return statusMb(pid, 'VmHWM');
}

/** A kB field of /proc/PID/status, in MB. */
function statusMb(pid: number, field: 'VmRSS' | 'VmHWM'): number | null {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** Open file descriptors (entries of /proc/PID/fd), or null if the process is gone. */
export function openFds(pid: number): number | null {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** CPU time (user + system) a process has used so far, in ms. */
export function cpuMs(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15 of stat)
    return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}

export function machine() {
  const cpus = os.cpus();
  return {
    host: os.hostname(),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memGb: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    loadavg: os.loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

export const loadavg1 = (): number => Math.round(os.loadavg()[0]! * 100) / 100;

/** Time a process has spent waiting for a CPU while runnable (run-queue wait, /proc/PID/schedstat), in ms. */
export function cpuWaitMs(pid: number): number | null {
  try {
    const [, wait] = fs.readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ');
    return Number(wait) / 1e6;
  } catch {
    return null;
  }
}
