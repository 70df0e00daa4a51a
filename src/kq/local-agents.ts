/**
 * Keeps N local kq-agent processes alive: spawns them, replaces any that exits, stops them on shutdown.
 * Each agent runs in its own process group so the whole tree can be killed. Every agent started is
 * recorded (pid, boot, start time, exact argv) in a file, so agents a previous kq started (still alive
 * after a kill -9 of kq) are adopted instead of doubled: only a process that is exactly the one recorded,
 * never a pid that now belongs to something else (after a reboot: ssh-agent, gpg-agent, …).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type { Logger } from 'pino';
import { isAlive, isSameProcess, killGroup, processIdentity, waitForExit, type ProcessIdentity } from '../common/processes.js';

export interface LocalAgentsOptions {
  count: number;
  /** argv of one agent process (node + script + flags). */
  command: (slot: number) => string[];
  logFile: (slot: number) => string;
  /** Where the agents this kq started are recorded, for the next kq to adopt. */
  recordFile: string;
  /** Called when an agent process ended (pid); kq requeues its task. `died`: killed or crashed, not a clean exit. */
  onExit: (pid: number, why: string, died: boolean) => void;
  log: Logger;
  stopGraceMs: number;
  /** Added to the agents' environment (kq's own, minus what only kq may know). */
  env?: Record<string, string>;
}

interface Slot {
  n: number; pid: number | null; identity: ProcessIdentity | null; child: ChildProcess | null;
  startedAt: number; timer: NodeJS.Timeout | null; fastExits: number;
}

/** An agent that dies this soon after starting is crashing, not killed: back off so it cannot fork-storm. */
const FAST_EXIT_MS = 2000;
const RESPAWN_BACKOFF_MS = { first: 250, max: 10_000 };
const ADOPTED_POLL_MS = 1000;

export class LocalAgents {
  private readonly slots: Slot[] = [];
  private stopping = false;

  constructor(private readonly o: LocalAgentsOptions) {}

  /** Start the agents, adopting first those a previous kq recorded that are still exactly those processes. */
  start(): void {
    const survivors = this.recorded().filter(isSameProcess);
    for (let n = 1; n <= this.o.count; n++) {
      const slot: Slot = { n, pid: null, identity: null, child: null, startedAt: 0, timer: null, fastExits: 0 };
      this.slots.push(slot);
      const adopt = survivors.shift();
      if (adopt !== undefined) this.adopt(slot, adopt);
      else this.spawn(slot);
    }
    // More survivors than slots (KQ_NUM_AGENTS lowered): stop the extra ones.
    for (const extra of survivors) killGroup(extra.pid, 'SIGTERM');
    this.record();
  }

  pids(): number[] {
    return this.slots.map((s) => s.pid).filter((p): p is number => p !== null);
  }

  /** Is this pid one of our agents (spawned or adopted by this kq)? Only those are ever signalled. */
  owns(pid: number): boolean {
    return this.pids().includes(pid);
  }

  /** Kill one agent (e.g. it stopped answering); it is replaced like any agent that exits. */
  kill(pid: number): void {
    if (this.pids().includes(pid)) killGroup(pid, 'SIGKILL');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const pids = this.pids();
    for (const s of this.slots) if (s.timer) clearTimeout(s.timer);
    for (const pid of pids) killGroup(pid, 'SIGTERM');
    await Promise.all(pids.map(async (pid) => {
      if (!(await waitForExit(pid, this.o.stopGraceMs))) killGroup(pid, 'SIGKILL');
    }));
  }

  private spawn(slot: Slot): void {
    if (this.stopping) return;
    const [cmd, ...args] = this.o.command(slot.n);
    const out = fs.openSync(this.o.logFile(slot.n), 'a');
    let child: ChildProcess;
    try {
      child = spawn(cmd!, args, { detached: true, stdio: ['ignore', out, out], env: agentEnvironment(this.o.env) });
    } finally {
      fs.closeSync(out);
    }
    slot.child = child;
    slot.pid = child.pid ?? null;
    // Read at once: before the agent could exit and its pid be reused, as node has not reaped it yet.
    slot.identity = slot.pid === null ? null : processIdentity(slot.pid);
    slot.startedAt = Date.now();
    this.record();
    this.o.log.info({ slot: slot.n, pid: slot.pid }, 'local agent started');
    child.on('error', (err) => this.o.log.error({ slot: slot.n, err: err.message }, 'local agent failed to start'));
    child.on('exit', (code, signal) => {
      const pid = slot.pid;
      slot.child = null;
      slot.pid = null;
      slot.identity = null;
      this.record();
      this.ended(slot, pid, signal ? `killed by ${signal}` : `exited with code ${code}`, signal !== null || code !== 0);
    });
  }

  private adopt(slot: Slot, identity: ProcessIdentity): void {
    const pid = identity.pid;
    slot.pid = pid;
    slot.identity = identity;
    slot.startedAt = Date.now();
    this.o.log.info({ slot: slot.n, pid }, 'local agent adopted from the previous kq');
    const poll = () => {
      if (this.stopping || slot.pid !== pid) return;
      if (isAlive(pid) && isSameProcess(identity)) {
        slot.timer = setTimeout(poll, ADOPTED_POLL_MS);
        return;
      }
      slot.pid = null;
      slot.identity = null;
      this.record();
      // Its exit status is not ours to read: one that stopped politely said bye before, so its task is already back.
      this.ended(slot, pid, 'adopted agent exited', true);
    };
    slot.timer = setTimeout(poll, ADOPTED_POLL_MS);
  }

  private ended(slot: Slot, pid: number | null, why: string, died: boolean): void {
    if (pid !== null) {
      // Whatever the agent left in its group (a render it could not reap) goes with it.
      killGroup(pid, 'SIGKILL');
      this.o.onExit(pid, why, died);
    }
    if (this.stopping) return;
    this.o.log.warn({ slot: slot.n, pid, why }, 'local agent ended; replacing it');
    slot.fastExits = Date.now() - slot.startedAt < FAST_EXIT_MS ? slot.fastExits + 1 : 0;
    const delay = slot.fastExits === 0 ? 0 : Math.min(RESPAWN_BACKOFF_MS.max, RESPAWN_BACKOFF_MS.first * 2 ** (slot.fastExits - 1));
    slot.timer = setTimeout(() => this.spawn(slot), delay);
  }

  /** The agents recorded by the previous kq on this data root (none if unreadable: then nothing is adopted). */
  private recorded(): ProcessIdentity[] {
    try {
      const list = JSON.parse(fs.readFileSync(this.o.recordFile, 'utf8')) as unknown;
      return Array.isArray(list) ? list.filter(isIdentity) : [];
    } catch {
      return [];
    }
  }

  /** Record the running agents (write, then rename: a crash leaves the old list or the new, whole). */
  private record(): void {
    const list = this.slots.map((s) => s.identity).filter((x): x is ProcessIdentity => x !== null);
    const tmp = `${this.o.recordFile}.${process.pid}.tmp`;
    try {
      fs.writeFileSync(tmp, JSON.stringify(list) + '\n');
      fs.renameSync(tmp, this.o.recordFile);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, file: this.o.recordFile }, 'cannot record local agents: a kq restarted after a crash will start new ones instead of adopting these');
    }
  }
}

function isIdentity(x: unknown): x is ProcessIdentity {
  const r = x as ProcessIdentity;
  return typeof r === 'object' && r !== null && Number.isInteger(r.pid) && r.pid > 0 && typeof r.bootId === 'string' &&
    typeof r.startTicks === 'string' && Array.isArray(r.argv) && r.argv.every((a) => typeof a === 'string');
}

/** kq's environment minus what only kq may know: renders inherit it, and a render's log is not private. */
function agentEnvironment(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.KQ_HTTP_TOKEN;
  return env;
}
