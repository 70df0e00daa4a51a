/**
 * Keeps N local kq-agent processes alive: spawns them, replaces any that exits, stops them on shutdown.
 * Each agent runs in its own process group so the whole tree can be killed; agents a previous kq started
 * (still alive after a kill -9 of kq) are adopted instead of doubled.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type { Logger } from 'pino';
import { isAlive, killGroup, waitForExit } from '../common/processes.js';

export interface LocalAgentsOptions {
  count: number;
  /** argv of one agent process (node + script + flags). */
  command: (slot: number) => string[];
  logFile: (slot: number) => string;
  /** Called when an agent process ended (pid); kq requeues its task. */
  onExit: (pid: number, why: string) => void;
  log: Logger;
  stopGraceMs: number;
}

interface Slot { n: number; pid: number | null; child: ChildProcess | null; startedAt: number; timer: NodeJS.Timeout | null; fastExits: number }

/** An agent that dies this soon after starting is crashing, not killed: back off so it cannot fork-storm. */
const FAST_EXIT_MS = 2000;
const RESPAWN_BACKOFF_MS = { first: 250, max: 10_000 };
const ADOPTED_POLL_MS = 1000;

export class LocalAgents {
  private readonly slots: Slot[] = [];
  private stopping = false;

  constructor(private readonly o: LocalAgentsOptions) {}

  /** Start the agents, adopting the given still-running pids first. */
  start(adoptPids: number[]): void {
    for (let n = 1; n <= this.o.count; n++) {
      const slot: Slot = { n, pid: null, child: null, startedAt: 0, timer: null, fastExits: 0 };
      this.slots.push(slot);
      const adopt = adoptPids.shift();
      if (adopt !== undefined) this.adopt(slot, adopt);
      else this.spawn(slot);
    }
    // More survivors than slots (KQ_NUM_AGENTS lowered): stop the extra ones.
    for (const pid of adoptPids) killGroup(pid, 'SIGTERM');
  }

  pids(): number[] {
    return this.slots.map((s) => s.pid).filter((p): p is number => p !== null);
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
      child = spawn(cmd!, args, { detached: true, stdio: ['ignore', out, out] });
    } finally {
      fs.closeSync(out);
    }
    slot.child = child;
    slot.pid = child.pid ?? null;
    slot.startedAt = Date.now();
    this.o.log.info({ slot: slot.n, pid: slot.pid }, 'local agent started');
    child.on('error', (err) => this.o.log.error({ slot: slot.n, err: err.message }, 'local agent failed to start'));
    child.on('exit', (code, signal) => {
      const pid = slot.pid;
      slot.child = null;
      slot.pid = null;
      this.ended(slot, pid, signal ? `killed by ${signal}` : `exited with code ${code}`);
    });
  }

  private adopt(slot: Slot, pid: number): void {
    slot.pid = pid;
    slot.startedAt = Date.now();
    this.o.log.info({ slot: slot.n, pid }, 'local agent adopted from the previous kq');
    const poll = () => {
      if (this.stopping || slot.pid !== pid) return;
      if (isAlive(pid)) {
        slot.timer = setTimeout(poll, ADOPTED_POLL_MS);
        return;
      }
      slot.pid = null;
      this.ended(slot, pid, 'adopted agent exited');
    };
    slot.timer = setTimeout(poll, ADOPTED_POLL_MS);
  }

  private ended(slot: Slot, pid: number | null, why: string): void {
    if (pid !== null) {
      // Whatever the agent left in its group (a render it could not reap) goes with it.
      killGroup(pid, 'SIGKILL');
      this.o.onExit(pid, why);
    }
    if (this.stopping) return;
    this.o.log.warn({ slot: slot.n, pid, why }, 'local agent ended; replacing it');
    slot.fastExits = Date.now() - slot.startedAt < FAST_EXIT_MS ? slot.fastExits + 1 : 0;
    const delay = slot.fastExits === 0 ? 0 : Math.min(RESPAWN_BACKOFF_MS.max, RESPAWN_BACKOFF_MS.first * 2 ** (slot.fastExits - 1));
    slot.timer = setTimeout(() => this.spawn(slot), delay);
  }
}
