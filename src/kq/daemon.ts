/**
 * The kq daemon: wiring and lifecycle only. A message arrives → it is validated (protocol) → the store
 * changes in one transaction (requests.ts, updates.ts) → the scheduler hands out work (scheduler.ts) →
 * the effect goes out on a socket (publisher.ts).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import * as zmq from 'zeromq';
import { MAX_MESSAGE_BYTES, PROTOCOL_VERSION, RequestSchema, Topics, UpdateSchema, decode, encode, type ErrorCode, type Update } from '../protocol/index.js';
import { dataFiles, type DaemonInfo } from '../common/paths.js';
import { LOCAL_AGENT_PROOF_ENV } from '../protocol/constants.js';
import { isLoopback } from '../common/endpoint.js';
import { privateSecret, sameSecret } from '../common/secret-file.js';
import { writeFileAtomic } from '../common/private-dir.js';
import { killGroup } from '../common/processes.js';
import { Store } from './store.js';
import { JobLogs } from './job-logs.js';
import { bindSockets, type DaemonSockets } from './sockets.js';
import { ZapHandler } from './zap.js';
import { watchRevocations } from './revocation.js';
import { Allowlist, initKeys, keyFiles, LOCAL_CLIENT, readKeyPair } from '../common/keys.js';
import { LocalAgents } from './local-agents.js';
import { acquireLock, type Lock } from './lock.js';
import { RequestError } from './submit.js';
import { RateLimitedLog } from './rate-limited-log.js';
import type { DaemonOptions } from './options.js';
import { ProgressTracker } from './progress.js';
import { startMonitor, type Monitor } from './http/server.js';
import { Publisher } from './publisher.js';
import { Scheduler } from './scheduler.js';
import { UpdateHandler } from './updates.js';
import { RequestHandler, WithNotice, type LocalRequest } from './requests.js';
import { DiskSpace } from './disk.js';
import { LogFile } from './log-file.js';
import { startAutoscaler } from './slurm-autoscale.js';
import type { Autoscaler } from '../slurm/autoscaler.js';
import { TeeToTerminal } from './pretty-log.js';

/** Agents that left are listed for a day (at most the last 500 of them), then forgotten. */
const GONE_AGENT_MEMORY_MS = 24 * 3600_000;
const GONE_AGENTS_KEPT = 500;
const FORGET_AGENTS_EVERY_MS = 60_000;
/** How long one socket's backlog may hold the event loop before the others get a turn. */
const FAIR_SLICE_MS = 10;
/** A group of updates gathers at most this many bytes of messages (each decoded before it is handled). */
const GROUP_MAX_BYTES = 4 * 1024 * 1024;
/** At most this many updates already queued are gathered into one group (one transaction, see UpdateHandler.handleGroup). */
const MAX_UPDATE_GROUP = 256;

export type Lifecycle = 'starting' | 'running' | 'stopping' | 'stopped';

/** A timer this late means kq's event loop was blocked (normal jitter is a few ms). */
const LATE_TIMER_MS = 100;

const AGENT_SCRIPT = fileURLToPath(new URL('../agent/main.js', import.meta.url));

export class Daemon {
  state: Lifecycle = 'starting';
  readonly epoch = crypto.randomUUID();
  private readonly files;
  private log!: Logger;
  private logFile: LogFile | null = null;
  private disk!: DiskSpace;
  private store!: Store;
  private logs!: JobLogs;
  private sockets!: DaemonSockets;
  private agents: LocalAgents | null = null;
  private lock: Lock | null = null;
  private lostTimer: NodeJS.Timeout | null = null;
  private keepFinishedTimer: NodeJS.Timeout | null = null;
  private curve: { serverPublicKey: string } | null = null;
  /** Given to the local agents kq starts (environment, never a command line): proves their `local: true`. */
  private localAgentProof = '';
  private zap: ZapHandler | null = null;
  private allowlist: Allowlist | null = null;
  private stopWatchingKeys: (() => void) | null = null;
  private monitor: Monitor | null = null;
  private stopped: Promise<void> | null = null;
  private readonly dropped: RateLimitedLog;
  private readonly progress = new ProgressTracker();
  private publisher!: Publisher;
  private scheduler!: Scheduler;
  private updates!: UpdateHandler;
  private requests!: RequestHandler;
  private autoscaler: Autoscaler | null = null;
  info!: DaemonInfo;
  /** kq cannot go on (it lost a port it listens on): main stops it and exits with EXIT_LOST_PORT (3). */
  onFatal: (message: string) => void = () => undefined;

  constructor(private readonly o: DaemonOptions) {
    this.files = dataFiles(o.dataRoot);
    this.dropped = new RateLimitedLog(() => this.log, 1000);
  }

  async start(): Promise<DaemonInfo> {
    ensureWritableDir(this.o.dataRoot, { private: true });
    ensureWritableDir(this.files.logs);
    this.lock = acquireLock(this.files.lock);
    try {
      this.disk = new DiskSpace(this.o.dataRoot);
      this.logFile = new LogFile(this.files.daemonLog, (err) => this.disk.failed(err, 'kq.log'));
      // On a terminal, people read kq's log as it happens; kq.log keeps the JSON either way.
      const dest = process.stdout.isTTY ? new TeeToTerminal(this.logFile, process.stdout) : this.logFile;
      this.log = pino({ base: { pid: process.pid }, level: this.o.logLevel }, dest);
      this.disk.log = this.log.child({ component: 'disk' });
      this.store = new Store(this.files.db, { blocklistAfter: this.o.blocklistAfter, prefetch: this.o.prefetch !== false }, this.files.jobLog);
      this.logs = new JobLogs(this.files.jobLog, { maxTaskBytes: this.o.maxTaskLogBytes, maxOpen: 64, space: this.disk });
      this.localAgentProof = privateSecret(this.files.localAgentProof, {
        what: "the local agents' proof",
        generate: () => crypto.randomBytes(24).toString('hex'),
        valid: (text) => /^[0-9a-f]{48}$/.test(text),
      });
      this.wire();
      this.sockets = await bindSockets({ ...this.o, curveSecretKey: await this.startCurve() });
      this.publisher.pubQueue = this.sockets.pubQueue;
      void this.publisher.trackSubscriptions(() => this.sockets.pub, () => this.sockets.bound());
      this.scheduler.routerQueue = this.sockets.routerQueue;
      if (this.o.httpPort !== null) {
        this.monitor = await startMonitor(this, {
          port: this.o.httpPort, bind: this.o.httpBind, token: this.o.httpToken,
          requireToken: !isLoopback(this.o.httpBind) || this.curve !== null, dataRoot: this.o.dataRoot, log: this.log.child({ component: 'http' }) });
      }
      this.info = {
        pid: process.pid,
        host: this.o.bind === '0.0.0.0' || this.o.bind === '*' ? '127.0.0.1' : this.o.bind === '::' ? '::1' : this.o.bind,
        bind: this.o.bind,
        requestPort: this.sockets.ports.request,
        updatePort: this.sockets.ports.update,
        broadcastPort: this.sockets.ports.broadcast,
        dataRoot: this.o.dataRoot,
        startedAt: new Date().toISOString(),
        curve: this.curve !== null,
        serverKey: this.curve?.serverPublicKey ?? null,
        insecure: this.insecure,
        httpPort: this.monitor?.port ?? null,
        httpUrl: this.monitor?.url ?? null,
      };
      // One transaction (rolled back if it fails, e.g. on a full disk): agents known before get a timeout to come back.
      this.store.beginEpoch(this.epoch);
      // Whole, and never written through whatever is at that name (a FIFO there would hang the start).
      writeFileAtomic(path.dirname(this.files.info), path.basename(this.files.info), JSON.stringify(this.info, null, 2) + '\n', 0o644);
    } catch (err) {
      await this.abortStart();
      throw err;
    }
    // The point of no return: from here on this kq owns the table, the agents and their renders.
    void this.receiveRequests();
    void this.receiveUpdates();
    this.startSilenceCheck();
    this.startKeepFinished();
    this.startWatchingKeys();
    this.scheduler.queuer.resume();
    this.startLocalAgents();
    this.state = 'running';
    if (this.o.slurmAutoscale) this.autoscaler = startAutoscaler(this.o.slurmAutoscale, { store: this.store, log: this.log, info: this.info, killGraceMs: this.o.killGraceMs });
    this.log.info({ ...this.info, epoch: this.epoch, loopback: isLoopback(this.o.bind) }, 'kq running');
    return this.info;
  }

  /**
   * A start that failed undoes only what it did itself: it closes what it opened and releases the lock.
   * The renders, agents and table rows of the kq before it (killed, or still running elsewhere) are left
   * exactly as they are, for the next start to adopt. stop() afterwards does nothing.
   */
  private async abortStart(): Promise<void> {
    this.state = 'stopping';
    this.stopped = Promise.resolve();
    const steps: Array<[string, () => unknown]> = [
      ['stop disk poller', () => this.disk?.stop()],
      ['close web monitor', () => this.monitor?.close()],
      ['close sockets', () => this.sockets?.close()],
      ['stop ZAP handler', () => this.zap?.close()],
      ['close logs', () => this.logs?.close()],
      ['close store', () => this.store?.close()],
      ['release lock', () => this.lock?.release()],
    ];
    await this.runSteps(steps);
    this.log?.error('kq could not start; nothing of the previous run was touched');
    this.logFile?.close();
    this.state = 'stopped';
  }

  /** Every broadcast kq publishes, also emitted in-process as ('message', topic, msg) for the HTTP monitor. */
  get broadcasts() {
    return this.publisher.broadcasts;
  }

  /** Build the request, update, scheduling and publishing parts around the store. */
  private wire(): void {
    const { store, logs, progress, log, epoch } = this;
    this.publisher = new Publisher({ store, logs, log });
    this.scheduler = new Scheduler({
      store, logs, progress, log, epoch, publisher: this.publisher,
      agentTimeoutMs: this.o.agentTimeoutMs, blocklistAfter: this.o.blocklistAfter,
      // While the disk is full nothing new starts (and silence is not held against agents).
      isRunning: () => this.state === 'running' && !this.disk.isFull,
      writeFailed: (err) => this.disk.failed(err, 'job table (kq.db)'),
      killLocalAgent: (pid) => this.agents?.kill(pid),
      ownsLocalAgent: (pid) => this.agents?.owns(pid) ?? false,
    });
    this.updates = new UpdateHandler({ store, logs, progress, log, epoch, heartbeatMs: this.o.heartbeatMs, publisher: this.publisher, scheduler: this.scheduler,
      reportError: (err) => {
        if (!this.disk.failed(err, 'job table (kq.db)')) this.log.error({ err: (err as Error).stack }, 'update handler failed');
      } });
    this.requests = new RequestHandler({
      store, logs, log, epoch, publisher: this.publisher, scheduler: this.scheduler, heartbeatMs: this.o.heartbeatMs,
      agentTimeoutMs: this.o.agentTimeoutMs, security: () => ({ curve: this.curve !== null, insecure: this.insecure }),
      provesLocal: (proof) => proof !== undefined && sameSecret(proof, this.localAgentProof),
      disk: () => this.disk.status(),
      status: () => ({ slurmAutoscale: this.autoscaler?.status ?? null }),
    });
    // Room again: what could not be recorded meanwhile (heartbeats) is not held against agents; work resumes.
    this.disk.on('ok', ({ fullForMs }) => {
      this.scheduler.deafTime.add(Date.now() - fullForMs, Date.now());
      this.scheduler.dispatch();
    });
  }

  /** Idempotent: every step runs even if one fails; the same promise is returned to every caller. */
  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.state = 'stopping';
    const steps: Array<[string, () => unknown]> = [
      ['stop timer', () => this.lostTimer && clearInterval(this.lostTimer)],
      ['stop cleaning', () => this.keepFinishedTimer && clearInterval(this.keepFinishedTimer)],
      ['stop watching keys', () => this.stopWatchingKeys?.()],
      ['stop queueing tasks', () => this.scheduler.queuer.stop()],
      ['stop disk poller', () => this.disk.stop()],
      ['close web monitor', () => this.monitor?.close()],
      ['tell agents', () => this.publisher.publish(Topics.allAgents, { v: PROTOCOL_VERSION, type: 'kq-stopping' })],
      ['release Slurm agents', () => this.autoscaler?.stop(true)],
      ['kill renders of local agents', () => this.killLocalRenders()],
      ['requeue running tasks', () => this.scheduler.requeueAll('kq stopped')],
      ['stop local agents', () => this.agents?.stop()],
      ['close sockets', () => this.sockets.close()],
      ['stop ZAP handler', () => this.zap?.close()],
      ['close logs', () => this.logs.close()],
      ['close store', () => this.store.close()],
      ['remove kq.json', () => this.info && fs.rmSync(this.files.info, { force: true })],
      ['release lock', () => this.lock?.release()],
    ];
    await this.runSteps(steps);
    this.log?.info('kq stopped');
    this.logFile?.close();
    this.state = 'stopped';
  }

  /**
   * Look for silent agents a few times per timeout. The check's own timer measures how late it runs: a
   * late run means kq's event loop was blocked, heartbeats waiting unread, and that time is not counted
   * as the agents' silence.
   */
  private startSilenceCheck(): void {
    const everyMs = Math.max(100, Math.min(1000, this.o.agentTimeoutMs / 4));
    let last = Date.now();
    let forgotAt = 0;
    this.lostTimer = setInterval(() => {
      const now = Date.now();
      if (now - forgotAt > FORGET_AGENTS_EVERY_MS) {
        forgotAt = now;
        try {
          const n = this.store.forgetGoneAgents(now - GONE_AGENT_MEMORY_MS, GONE_AGENTS_KEPT);
          if (n > 0) this.log.info({ forgotten: n }, 'forgot agents that left long ago');
        } catch (err) {
          if (!this.disk.failed(err, 'job table (kq.db)')) this.log.error({ err: (err as Error).stack }, 'forgetting old agents failed');
        }
      }
      if (now - last > everyMs + LATE_TIMER_MS) this.scheduler.deafTime.add(last + everyMs, now);
      last = now;
      try {
        this.scheduler.checkSilentAgents();
      } catch (err) {
        if (!this.disk.failed(err, 'job table (kq.db)')) this.log.error({ err: (err as Error).stack }, 'silent-agent check failed');
      }
    }, everyMs);
  }

  /** --keep-finished: ended jobs older than that are removed now and then (a quarter of it, 1 s to 10 min). */
  private startKeepFinished(): void {
    const keepMs = this.o.keepFinishedMs;
    if (!keepMs) return;
    const clean = () => {
      try {
        const old = this.store.endedJobs(['Completed', 'Failed', 'Cancelled'], new Date(Date.now() - keepMs).toISOString());
        if (old.length > 0) this.requests.remove(old);
      } catch (err) {
        if (!this.disk.failed(err, 'job table (kq.db)')) this.log.error({ err: (err as Error).stack }, '--keep-finished cleaning failed');
      }
    };
    clean();
    this.keepFinishedTimer = setInterval(clean, Math.max(1000, Math.min(600_000, keepMs / 4)));
  }

  /** Every step runs even if one before it failed. */
  private async runSteps(steps: Array<[string, () => unknown]>): Promise<void> {
    for (const [name, step] of steps) {
      try {
        await step();
      } catch (err) {
        this.log?.error({ step: name, err: (err as Error).message }, 'shutdown step failed');
      }
    }
  }

  /** Listening beyond loopback with CURVE turned off by --insecure. */
  get insecure(): boolean {
    return !isLoopback(this.o.bind) && this.curve === null;
  }

  /**
   * CURVE is on beyond loopback (unless --insecure) and on loopback with --secure. Keys are created on
   * first use; the ZAP handler is bound before any socket, as libzmq requires, with or without CURVE
   * (see zap.ts: it is what keeps old-protocol peers, such as a web page's HTTP request, out). Returns
   * kq's secret key.
   */
  private async startCurve(): Promise<string | null> {
    const wanted = this.o.secure || (!isLoopback(this.o.bind) && !this.o.insecure);
    if (!wanted) {
      if (!isLoopback(this.o.bind)) {
        this.log.warn({ bind: this.o.bind }, 'INSECURE: listening beyond loopback without CURVE; anyone who reaches these ports can run commands on every agent');
      }
      await this.startZap(null);
      return null;
    }
    if (!zmq.capability.curve) throw new Error('this ZeroMQ build has no CURVE support: cannot listen securely (use loopback, or --insecure at your own risk)');
    const { serverPublicKey, created } = initKeys(this.o.dataRoot);
    if (created) this.log.info({ keys: keyFiles(this.o.dataRoot).dir }, 'created CURVE keys');
    this.allowlist = new Allowlist(this.o.dataRoot);
    await this.startZap(this.allowlist);
    this.curve = { serverPublicKey };
    return readKeyPair(keyFiles(this.o.dataRoot).serverSecret).secretKey;
  }

  private async startZap(allowlist: Allowlist | null): Promise<void> {
    this.zap = new ZapHandler(allowlist, this.log.child({ component: 'zap' }));
    await this.zap.start();
  }

  /**
   * A revoked key loses the connections it has, not only new ones: kq closes every connection on its three
   * ports and listens again, so each peer passes ZAP again. Allowed agents reconnect and re-register by
   * themselves, keeping their renders; an assignment or update on its way is recovered by the heartbeats.
   */
  private startWatchingKeys(): void {
    if (!this.allowlist) return;
    this.stopWatchingKeys = watchRevocations(this.allowlist, async (keys) => {
      if (this.state !== 'running') return;
      this.log.warn({ keys }, 'key(s) revoked: closing every connection so that each peer must be admitted again');
      // Until the new sockets listen, kq hears no heartbeat: no agent is judged silent meanwhile.
      const listening = this.scheduler.deafTime.begin();
      try {
        await this.sockets.renew();
      } catch (err) {
        if (this.state !== 'running') return; // stopping: the renew was cut short, nothing is wrong
        // Deaf but alive would be worse: agents would be declared lost while they render, and nobody would
        // restart kq. Stopping says why; a supervisor (or the user) starts kq again once the port is free.
        const message = `cannot listen on ports ${Object.values(this.sockets.ports).join(', ')} again after a revoke ` +
          `(${(err as Error).message}): kq stops (renders stopped, tasks requeued); start it again once the port is free`;
        this.log.fatal(message);
        this.onFatal(message);
        throw err;
      } finally {
        listening();
      }
      this.log.info('listening again after a revoke');
    });
  }

  // ---------- local agents ----------

  private startLocalAgents(): void {
    if (this.o.numAgents <= 0) return;
    const host = os.hostname();
    this.agents = new LocalAgents({
      count: this.o.numAgents,
      log: this.log.child({ component: 'local-agents' }),
      stopGraceMs: this.o.killGraceMs + 2000,
      logFile: (n) => this.files.agentLog(n),
      recordFile: this.files.localAgents,
      command: () => [process.execPath, AGENT_SCRIPT, '--local',
        '--request-port', String(this.info.requestPort), '--update-port', String(this.info.updatePort),
        '--broadcast-port', String(this.info.broadcastPort), '--kill-grace', `${this.o.killGraceMs}ms`,
        // Key material stays in files: the command line (visible in ps) carries only paths and the public key.
        ...(this.curve ? ['--server-key', this.curve.serverPublicKey, '--key-file', keyFiles(this.o.dataRoot).clientSecret(LOCAL_CLIENT)] : []),
        ...(this.o.agentArgs ?? []), this.info.host],
      env: { [LOCAL_AGENT_PROOF_ENV]: this.localAgentProof },
      onExit: (pid, why, died) => this.scheduler.localAgentExited(`${host}:${pid}`, why, died),
    });
    this.agents.start();
  }

  private killLocalRenders(): void {
    for (const a of this.store.listAgents()) {
      // Only our own agents' renders: a pid the table holds from an agent we did not start may be reused.
      if (a.local && this.agents?.owns(a.pid)) for (const pid of this.store.renderPidsOf(a.id)) killGroup(pid, 'SIGTERM');
    }
  }

  /** In-process requests (the HTTP monitor): see RequestHandler.local. */
  request(input: LocalRequest): unknown {
    return this.requests.local(input);
  }

  // ---------- sockets ----------

  private receiveRequests(): Promise<void> {
    return this.receiveFrom(() => this.sockets.router, 'request', async ([routingId, ...frames]) => {
      if (!routingId) return;
      try {
        await this.onRequest(routingId, frames);
      } catch (err) {
        if (!this.disk.failed(err, 'job table (kq.db)')) this.log.error({ err: (err as Error).stack }, 'request handler failed');
      }
    });
  }

  /**
   * Every message of one of kq's sockets, through `handle`. The loop ends when its socket closes: for good
   * when kq stops; after a revoke kq renews its sockets, and the loop goes on with the new one once bound.
   * With `group`, `handle` only gathers: while more messages are already queued (up to `group.max`) the loop
   * takes them too, then `group.run(untilMs)` handles what was gathered, one slice at a time, until it says
   * nothing is left.
   */
  private async receiveFrom(pick: () => zmq.Router | zmq.Pull, name: string, handle: (frames: Buffer[]) => Promise<void> | void,
    group?: { max: number; run(untilMs: number): number }): Promise<void> {
    // With a backlog, receive() resolves without going back to the event loop: one busy socket would
    // starve the others, and the ZAP handler that admits new connections (kqctl could not connect
    // during an update flood). After FAIR_SLICE_MS of work, hand the loop over once.
    let busyMs = 0;
    const fairTurn = async (since: number) => {
      busyMs += performance.now() - since;
      if (busyMs > FAIR_SLICE_MS) {
        busyMs = 0;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    };
    const runGroup = async () => {
      for (let left = 1; group && left > 0;) {
        const started = performance.now();
        left = group.run(started + FAIR_SLICE_MS);
        await fairTurn(started);
      }
    };
    for (;;) {
      const socket = pick();
      try {
        let gathered = 0;
        let gatheredBytes = 0;
        for await (const frames of socket) {
          const started = performance.now();
          await handle(frames);
          // Another message is already there: same group, while gathering stays within the slice and the byte
          // cap (decoding a flood of big updates must not hold the event loop longer than handling them would).
          for (const f of frames) gatheredBytes += f.length;
          const spent = performance.now() - started;
          if (group && ++gathered < group.max && gatheredBytes < GROUP_MAX_BYTES && busyMs + spent < FAIR_SLICE_MS && socket.readable) {
            busyMs += spent;
            continue;
          }
          gathered = 0;
          gatheredBytes = 0;
          await fairTurn(started);
          await runGroup();
        }
      } catch (err) {
        if (this.state === 'running' && socket === pick()) this.log.error({ err: (err as Error).message }, `${name} socket failed`);
      }
      if (this.state === 'running') await runGroup(); // what was gathered when the socket closed (renewed)
      await this.sockets.bound();
      if (socket === pick() || this.state !== 'running') return;
    }
  }

  private async onRequest(routingId: Buffer, frames: Buffer[]): Promise<void> {
    const decoded = decode(RequestSchema, frames.length === 1 ? frames[0] : undefined);
    if (!decoded.ok) {
      this.dropped.warn('request', decoded.error);
      const rid = ridOf(frames[0]);
      if (rid !== null) await this.reply(routingId, rid, { ok: false, code: 'bad-request', error: decoded.error });
      return;
    }
    const req = decoded.value;
    try {
      const data = this.requests.handle(req, routingId.toString('hex'));
      await this.reply(routingId, req.rid, data instanceof WithNotice ? { ok: true, data: data.data, notice: data.notice } : { ok: true, data });
    } catch (err) {
      const code: ErrorCode = err instanceof RequestError ? err.code : 'internal';
      let error = (err as Error).message;
      if (this.disk.failed(err, 'job table (kq.db)')) {
        error = `kq's disk is full: nothing was changed (${error}); free space on ${this.o.dataRoot}, then try again`;
      } else if (code === 'internal') {
        this.log.error({ err: (err as Error).stack, type: req.type }, 'request failed');
      }
      await this.reply(routingId, req.rid, { ok: false, code, error });
    }
    this.requests.afterReply(req);
  }

  private reply(routingId: Buffer, rid: string, body: { ok: true; data: unknown; notice?: string } | { ok: false; code: ErrorCode; error: string }) {
    let frame = encode({ v: PROTOCOL_VERSION, rid, type: 'reply', ...body });
    if (frame.length > MAX_MESSAGE_BYTES) {
      // libzmq would drop it without a word and cut the peer off: answer with what went wrong instead.
      this.log.error({ rid, bytes: frame.length }, 'reply over the message limit');
      frame = encode({ v: PROTOCOL_VERSION, rid, type: 'reply', ok: false, code: 'internal', error: `kq's answer is ${(frame.length / 1024 / 1024).toFixed(1)} MiB, over the ${MAX_MESSAGE_BYTES / 1024 / 1024} MiB message limit` });
    }
    return this.sockets.routerQueue.send([routingId, frame])
      .catch((err: Error) => this.log.debug({ err: err.message }, 'reply not delivered (peer gone)'));
  }

  /** Updates gathered from the update socket, not handled yet (see receiveFrom's `group`). */
  private readonly gatheredUpdates: Update[] = [];

  private receiveUpdates(): Promise<void> {
    return this.receiveFrom(() => this.sockets.pull, 'update', (frames) => {
      const decoded = decode(UpdateSchema, frames.length === 1 ? frames[0] : undefined);
      if (!decoded.ok) {
        this.dropped.warn('update', decoded.error);
        return;
      }
      this.gatheredUpdates.push(decoded.value);
    }, {
      max: MAX_UPDATE_GROUP,
      run: (untilMs) => {
        if (this.gatheredUpdates.length > 0) this.gatheredUpdates.splice(0, this.updates.handleGroup(this.gatheredUpdates, untilMs));
        return this.gatheredUpdates.length;
      },
    });
  }
}

/**
 * `private`: the data root holds the job table (commands, their env values: often secrets), the logs and the
 * keys, so only its owner may enter it (0700, also when it already existed with wider modes).
 */
function ensureWritableDir(dir: string, o: { private?: boolean } = {}): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: o.private ? 0o700 : 0o777 });
    fs.accessSync(dir, fs.constants.W_OK);
    if (o.private) {
      const st = fs.statSync(dir);
      if (st.uid === process.getuid?.() && (st.mode & 0o077) !== 0) fs.chmodSync(dir, 0o700);
    }
  } catch (err) {
    throw new Error(`data root not writable: ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): choose another with --data-root or KQ_DATA_ROOT`);
  }
}

function ridOf(frame: Buffer | undefined): string | null {
  try {
    const raw = JSON.parse(frame?.toString() ?? '') as { rid?: unknown };
    return typeof raw.rid === 'string' && raw.rid.length <= 64 ? raw.rid : null;
  } catch {
    return null;
  }
}
