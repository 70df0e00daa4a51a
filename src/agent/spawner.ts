/**
 * Starts renders for one agent through kq-spawn-helper (src/agent/spawn-helper.c, built to dist/): one small
 * long-lived C process that forks and execs each render exactly as Node's spawn would (argv, env, cwd,
 * stdin /dev/null, stdout and stderr pipes, its own session, signals reset), relays its output and reports
 * its start and end. Node's own spawn costs the agent 1.5-3 ms of CPU per render; this costs a pipe write.
 * Without the helper (no C compiler at build time, or it keeps dying) renders start with Node's spawn.
 */
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { spawnWithNode, type RenderEnd, type RenderOutput, type RenderProcess, type RenderSpec } from './render-process.js';

/** Set (to 1) to start renders with Node's spawn even when the helper is built: for tests of the fallback. */
export const NODE_SPAWN_ENV = 'KQ_AGENT_NODE_SPAWN';
/** Another helper binary to run instead of the built one: for tests of a helper that cannot run or misbehaves. */
export const HELPER_PATH_ENV = 'KQ_AGENT_SPAWN_HELPER';

/** Where `npm run build` puts the helper: dist/ beside dist/src/ (built code), or dist/ under the root (sources run directly). */
const HELPER_CANDIDATES = ['../../kq-spawn-helper', '../../dist/kq-spawn-helper'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
/** This many helper deaths in a row with no render completed between them and the agent goes back to Node's spawn for good. */
const MAX_DEATHS_IN_A_ROW = 3;
/**
 * A helper silent this long after its start hangs: it is killed, its waiting renders start with Node's spawn.
 * Long, because what it costs is only that wait, once; its hello comes in milliseconds even on a loaded machine.
 */
const HELLO_TIMEOUT_MS = 10_000;
/** After its stdin ends, how long the helper has to leave (killing its renders) before its group is SIGKILLed. */
const CLOSE_GRACE_MS = 1000;
const HEADER = 9;
/** Each helper frame's payload length: exact for the fixed ones (a peer that lies is a dead helper, not a crash). */
const PAYLOAD_LENGTH: Record<string, (len: number) => boolean> = {
  H: (n) => n === 0, S: (n) => n === 4, F: (n) => n === 4, X: (n) => n === 8,
  O: (n) => n > 0 && n <= 1 << 20, E: (n) => n > 0 && n <= 1 << 20, o: (n) => n === 0, e: (n) => n === 0,
};

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>();
for (const [name, n] of Object.entries(os.constants.signals)) if (!SIGNAL_NAMES.has(n)) SIGNAL_NAMES.set(n, name as NodeJS.Signals);
const ERRNO_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(os.constants.errno)) if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);

export class Spawner {
  private helper: SpawnHelper | null = null;
  private binary: string | null;
  private deathsInARow = 0;
  private fallbackSaid = false;

  constructor(private readonly log: Logger, useHelper = process.env[NODE_SPAWN_ENV] !== '1') {
    const chosen = process.env[HELPER_PATH_ENV];
    this.binary = useHelper ? (chosen ? chosen : HELPER_CANDIDATES.find(isExecutable) ?? null) : null;
    if (!useHelper) this.fallBack(`${NODE_SPAWN_ENV}=1`);
    else if (!this.binary) this.fallBack('kq-spawn-helper is not built (no C compiler when kq was built?)');
  }

  /** Start a render; throws as Node's spawn does for what can never be exec'd (a NUL byte). */
  spawn(spec: RenderSpec, output: RenderOutput): RenderProcess {
    if (this.binary === null || !expressible(spec)) return spawnWithNode(spec, output);
    if (!this.helper) {
      try {
        this.helper = new SpawnHelper(this.binary, {
          died: (why, how) => this.helperDied(why, how),
          renderEnded: () => { this.deathsInARow = 0; },
        });
      } catch (err) {
        // Nothing was forked; this render starts with Node's spawn. (Perhaps for now only: out of processes or
        // descriptors, or the binary being rebuilt. A file that cannot be run at all throws every time.)
        this.helperDied(`could not be started (${(err as Error).message})`, 'no-hello');
        return spawnWithNode(spec, output);
      }
    }
    return this.helper.spawn(spec, output);
  }

  /** The agent stops: the helper exits at end of file (as it does if the agent dies), or is killed soon after. */
  async close(): Promise<void> {
    const helper = this.helper;
    this.helper = null;
    await helper?.close();
  }

  private helperDied(why: string, how: HelperDeath): void {
    this.helper = null;
    if (how === 'cannot-run') {
      // It exited before its hello: it cannot run here (wrong CPU or C library on a shared install, a broken
      // file). It forked nothing, and the renders waiting for it start with Node's spawn (handed over).
      this.binary = null;
      this.fallBack(`kq-spawn-helper ${this.binaryName()}${why} before it could start anything`);
      return;
    }
    if (how === 'no-hello') this.log.error(`kq-spawn-helper ${this.binaryName()}${why}; the renders waiting for it start with Node's spawn, the next starts another helper`);
    else this.log.error(`kq-spawn-helper ${why}; renders running through it are failed, the next starts another`);
    if (++this.deathsInARow >= MAX_DEATHS_IN_A_ROW) {
      this.binary = null;
      this.fallBack(`kq-spawn-helper ${this.binaryName()}died ${MAX_DEATHS_IN_A_ROW} times in a row with no render ending between (last: ${why})`);
    }
  }

  private binaryName(): string {
    return process.env[HELPER_PATH_ENV] ? `(${process.env[HELPER_PATH_ENV]}) ` : '';
  }

  private fallBack(why: string): void {
    if (this.fallbackSaid) return;
    this.fallbackSaid = true;
    this.log.warn(`renders start with Node's spawn (slower per task): ${why}`);
  }
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Node's spawn refuses NUL bytes with its own error (the task's reason): leave those to it. */
function expressible(spec: RenderSpec): boolean {
  if (spec.file === '' || spec.file.includes('\0') || spec.args.some((a) => a.includes('\0')) || spec.cwd?.includes('\0')) return false;
  for (const [k, v] of Object.entries(spec.env)) if (v !== undefined && (k.includes('\0') || v.includes('\0'))) return false;
  return true;
}

/** One render started through the helper, as the client tracks it until its pipes end or are closed. */
interface HelperRender {
  spec: RenderSpec;
  output: RenderOutput;
  resolveEnded(end: RenderEnd): void;
  /** Streams not yet at end of file. */
  open: number;
  exited: boolean;
  onDrained: (() => void) | null;
  /** Started with Node's spawn instead: the helper died before its hello. */
  instead: RenderProcess | null;
  /** Its 'S' or 'F' arrived: the helper took it. Until then it never ran (its child execs only once the agent
   * answers its 'S' with 'A'), so if the helper dies it starts with Node's spawn instead. */
  acked: boolean;
}

/**
 * How a helper ended: it exited before its hello (it cannot run here: never again), it hung or could not be
 * started (before its hello: waiting renders went to Node's spawn), or it died after its hello.
 */
type HelperDeath = 'cannot-run' | 'no-hello' | 'after-hello';

interface HelperEvents {
  died(why: string, how: HelperDeath): void;
  /** A render it started ended (the helper works). */
  renderEnded(): void;
}

class SpawnHelper {
  private readonly child: ChildProcess;
  private readonly renders = new Map<number, HelperRender>();
  private nextId = 1;
  private pending: Buffer = Buffer.alloc(0);
  private gone: string | null = null;
  private closing = false;
  /** Its hello arrived: it runs on this host. Until then run requests wait here (ids in order). */
  private helloSeen = false;
  private waiting: number[] = [];
  private helloTimer: NodeJS.Timeout | null = null;

  /** Throws as Node's spawn does (synchronously) when it cannot be started at all. */
  constructor(binary: string, private readonly events: HelperEvents) {
    // No environment of its own (each render's comes with its request), so a big one cannot stop it starting.
    // Its own process group (as the render guard): a SIGKILL to the agent's group leaves it alive to kill the
    // renders the agent had not heard of; it exits at end of file on its stdin, however the agent ends.
    this.child = spawn(binary, [], { stdio: ['pipe', 'pipe', 'inherit'], env: {}, detached: true });
    this.child.unref();
    for (const s of [this.child.stdin, this.child.stdout] as const) (s as unknown as { unref?(): void }).unref?.();
    this.child.stdin!.on('error', () => undefined); // it died: its close handler says so
    this.child.stdout!.on('data', (chunk: Buffer) => this.receive(chunk));
    this.child.on('error', (err) => this.die(`could not be started (${err.message})`, 'no-hello'));
    // 'close', not 'exit': the frames it wrote before dying are read first.
    this.child.on('close', (code, signal) => this.die(signal ? `was killed by ${signal}` : `exited with code ${code}`, this.helloSeen ? 'after-hello' : 'cannot-run'));
    // Checked after one more turn of the event loop: an agent that was itself stalled reads the hello waiting
    // in the pipe first.
    this.helloTimer = setTimeout(() => setImmediate(() => {
      if (!this.helloSeen && this.gone === null) this.kill(`said nothing within ${HELLO_TIMEOUT_MS / 1000} s`, 'no-hello');
    }), HELLO_TIMEOUT_MS);
    this.helloTimer.unref();
  }

  spawn(spec: RenderSpec, output: RenderOutput): RenderProcess {
    const id = this.nextId++;
    let resolveEnded!: (end: RenderEnd) => void;
    const ended = new Promise<RenderEnd>((r) => { resolveEnded = r; });
    const render: HelperRender = { spec, output, resolveEnded, open: 2, exited: false, onDrained: null, instead: null, acked: false };
    if (this.gone !== null) {
      resolveEnded(this.lost());
      return { ended, drained: () => Promise.resolve() };
    }
    this.renders.set(id, render);
    if (this.helloSeen) this.send('R', id, runPayload(spec));
    else this.waiting.push(id);
    return {
      ended,
      drained: (graceMs) => render.instead ? render.instead.drained(graceMs) : this.drained(id, render, graceMs),
      cancel: () => this.cancel(id, render),
      // It hangs: killed with its group (counted as a death); this render, and any other through it, end as lost.
      abandon: (why) => { if (this.renders.get(id) === render && !render.instead) this.kill(why, 'after-hello'); },
    };
  }

  /**
   * Its task was stopped before the render started: one waiting for the hello is dropped; one asked for but not
   * acknowledged is closed (the helper kills it if it forked it: it never exec'd). Either way it ends now.
   */
  private cancel(id: number, render: HelperRender): boolean {
    if (render.acked || !this.renders.has(id)) return false;
    const at = this.waiting.indexOf(id);
    if (at >= 0) this.waiting.splice(at, 1);
    else if (this.gone === null) this.send('C', id, Buffer.alloc(0));
    this.renders.delete(id);
    render.resolveEnded({ code: null, signal: null, error: null, lost: null, reason: 'stopped before it started' });
    return true;
  }

  /** End of file on its stdin: it kills its renders and exits; one that does not (hung) is SIGKILLed with its group. */
  close(): Promise<void> {
    this.closing = true;
    this.child.stdin!.end();
    if (this.exited()) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.killGroup();
        resolve();
      }, CLOSE_GRACE_MS);
      this.child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  /** Its group (it was started detached): only while it is not reaped, so the number is still its own. */
  private killGroup(): void {
    if (this.child.pid === undefined || this.exited()) return;
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch { /* already gone */ }
  }

  private drained(id: number, render: HelperRender, graceMs: number): Promise<void> {
    if (render.open === 0 || !this.renders.has(id)) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        // Whatever still holds its pipes (a process that left the group) is no longer heard.
        this.renders.delete(id);
        if (this.gone === null) this.send('C', id, Buffer.alloc(0));
        resolve();
      }, graceMs);
      render.onDrained = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /**
   * Is `pid` this helper's child, as far as /proc can tell? (The child waits for its 'A', so it is there,
   * unless something killed it and the helper reaped it already: no process, nothing to signal by mistake.)
   */
  private isChild(pid: number): boolean {
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    } catch {
      return true;
    }
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === this.child.pid;
  }

  private send(type: 'R' | 'A' | 'C', id: number, payload: Buffer): void {
    const header = Buffer.allocUnsafe(HEADER);
    header.writeUInt8(type.charCodeAt(0), 0);
    header.writeUInt32LE(id, 1);
    header.writeUInt32LE(payload.length, 5);
    this.child.stdin!.write(payload.length ? Buffer.concat([header, payload]) : header);
  }

  private receive(chunk: Buffer): void {
    if (this.gone !== null) return;
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let off = 0;
    while (buf.length - off >= HEADER) {
      const type = String.fromCharCode(buf[off]!);
      const len = buf.readUInt32LE(off + 5);
      // Checked on the header: a wrong type or length is a broken helper (never an exception here, which would
      // end the agent, nor a wait for gigabytes that never come).
      const fits = PAYLOAD_LENGTH[type];
      const firstIsHello = this.helloSeen === (type !== 'H');
      if (!fits || !fits(len) || !firstIsHello) {
        this.kill(`sent a malformed frame (type ${buf[off]}, ${len} bytes)`, this.helloSeen ? 'after-hello' : 'cannot-run');
        return;
      }
      if (buf.length - off < HEADER + len) break;
      this.frame(type, buf.readUInt32LE(off + 1), buf.subarray(off + HEADER, off + HEADER + len));
      if (this.gone !== null) return; // the frame showed it broken
      off += HEADER + len;
    }
    buf = buf.subarray(off);
    // Keep a copy of a partial frame only: the chunk's buffer is not ours to hold on to beyond this call.
    this.pending = buf.length ? Buffer.from(buf) : Buffer.alloc(0);
  }

  /** It misbehaves or hangs: it is ended with its group (its renders die with it, PR_SET_PDEATHSIG) and counted as a death. */
  private kill(why: string, how: HelperDeath): void {
    this.killGroup();
    this.die(why, how);
  }

  private frame(type: string, id: number, payload: Buffer): void {
    if (type === 'H') {
      this.helloSeen = true;
      if (this.helloTimer) clearTimeout(this.helloTimer);
      for (const waiting of this.waiting) {
        const render = this.renders.get(waiting);
        if (render) this.send('R', waiting, runPayload(render.spec));
      }
      this.waiting = [];
      return;
    }
    const render = this.renders.get(id);
    if (!render) return; // its pipes were closed: late output is dropped, never someone else's
    switch (type) {
      case 'S': {
        // Once, for a render it was asked for, and a pid that is its own child: 0 or 1 would have the agent signal
        // its own group (kill(0)) or every process of the user (kill(-1)), another pid someone else's group.
        const pid = payload.readInt32LE(0);
        if (pid < 2 || pid === process.pid || render.acked || this.waiting.includes(id) || !this.isChild(pid)) {
          this.kill(`sent a bad 'started' frame (pid ${pid} for render ${id})`, 'after-hello');
          return;
        }
        render.acked = true;
        // The guard learns the group here (the runner tells it), before the render may exec: whenever this
        // agent dies, someone ends the group.
        render.output.onStarted(pid);
        if (this.gone === null) this.send('A', id, Buffer.alloc(0));
        return;
      }
      case 'F': {
        render.acked = true;
        const errno = payload.readInt32LE(0);
        const code = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
        const error = Object.assign(new Error(`spawn ${code}`), { code, errno: -errno }) as NodeJS.ErrnoException;
        this.renders.delete(id);
        render.resolveEnded({ code: null, signal: null, error, lost: null, reason: null });
        return;
      }
      case 'O': case 'E':
        render.output.onData(type === 'O' ? 'stdout' : 'stderr', payload);
        return;
      case 'o': case 'e':
        render.output.onEnd(type === 'o' ? 'stdout' : 'stderr');
        if (--render.open > 0) return;
        render.onDrained?.();
        if (render.exited) this.renders.delete(id);
        return;
      case 'X': {
        render.resolveEnded(exitEnd(payload.readInt32LE(0), payload.readInt32LE(4)));
        render.exited = true;
        if (render.open === 0) this.renders.delete(id);
        this.events.renderEnded();
        return;
      }
      default:
        return;
    }
  }

  private die(why: string, how: HelperDeath): void {
    if (this.gone !== null) return;
    this.gone = why;
    if (this.helloTimer) clearTimeout(this.helloTimer);
    if (!this.helloSeen && !this.closing) {
      // It never ran: nothing was forked. The renders waiting for it start with Node's spawn, as if it never was.
      this.events.died(why, how);
      for (const render of this.renders.values()) startWithNode(render);
      this.renders.clear();
      this.waiting = [];
      return;
    }
    const end = this.lost();
    for (const render of this.renders.values()) {
      // Never acknowledged: it was never exec'd (the helper holds each child until the agent's 'A').
      if (!render.acked && !this.closing) {
        startWithNode(render);
        continue;
      }
      render.resolveEnded(end);
      render.onDrained?.();
    }
    this.renders.clear();
    if (!this.closing) this.events.died(why, how);
  }

  private lost(): RenderEnd {
    return { code: null, signal: null, error: null, lost: `kq-spawn-helper (which started this render) ${this.gone}; its outcome is unknown`, reason: null };
  }
}

/** A render the helper never got to: Node's spawn starts it, and its end is the helper render's end. */
function startWithNode(render: HelperRender): void {
  try {
    render.instead = spawnWithNode(render.spec, render.output);
    void render.instead.ended.then(render.resolveEnded);
  } catch (err) {
    // What Node's spawn throws for (the runner says "cannot start"), as if it had been called directly.
    const end: RenderEnd = { code: null, signal: null, error: err as NodeJS.ErrnoException, lost: null, reason: null };
    render.instead = { ended: Promise.resolve(end), drained: () => Promise.resolve() };
    render.resolveEnded(end);
  }
}

/**
 * The 'X' frame as a RenderEnd. Node has no name for real-time signals (34 to 64): its spawn reports such a
 * death as exit code 0, which would complete the task. Here it is a failure that says which signal.
 */
function exitEnd(code: number, signal: number): RenderEnd {
  if (code >= 0) return { code, signal: null, error: null, lost: null, reason: null };
  const name = SIGNAL_NAMES.get(signal) ?? null;
  return { code: null, signal: name, error: null, lost: null, reason: name ? null : `killed by signal ${signal}` };
}

/** The 'R' payload: u32 argc, u32 envc, u8 hasCwd, then NUL-terminated [cwd], argv…, env… as Node's spawn would pass them. */
function runPayload(spec: RenderSpec): Buffer {
  const argv = [spec.file, ...spec.args];
  const env: string[] = [];
  for (const [k, v] of Object.entries(spec.env)) if (v !== undefined) env.push(`${k}=${v}`);
  const strings = [...(spec.cwd !== undefined ? [spec.cwd] : []), ...argv, ...env];
  const head = Buffer.alloc(9);
  head.writeUInt32LE(argv.length, 0);
  head.writeUInt32LE(env.length, 4);
  head.writeUInt8(spec.cwd !== undefined ? 1 : 0, 8);
  return Buffer.concat([head, Buffer.from(strings.join('\0') + '\0')]);
}
