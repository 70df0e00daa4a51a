/**
 * Server-sent events: one stream per browser connection, and the hub that turns kq's broadcasts into
 * events. One listener on the daemon's broadcasts serves every connection; nothing a client does (or
 * fails to do, like reading) can throw back into the daemon.
 */
import type { EventEmitter } from 'node:events';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { AgentInfo, Broadcast, JobSummary } from '../../protocol/index.js';
import type { LocalRequest } from '../requests.js';

/** What the monitor needs from the daemon (the Daemon class provides it). */
export interface MonitorBackend {
  request(req: LocalRequest): unknown;
  readonly broadcasts: EventEmitter<{ message: [string, Broadcast] }>;
}

export interface SseOptions {
  /** A client that has this many bytes unread when the next event comes is cut off (its EventSource reconnects and resumes). */
  maxBufferedBytes: number;
  /** All clients together may leave this many bytes unread; past it the most behind are cut off. */
  maxTotalBufferedBytes: number;
  heartbeatMs: number;
}

/** One event as sent on the wire. */
export function sseEvent(event: string, data: unknown, id?: string): string {
  return `event: ${event}\n${id === undefined ? '' : `id: ${id}\n`}data: ${JSON.stringify(data)}\n\n`;
}

/** Below this many unread bytes a client counts as keeping up, and the total is not even looked at. */
const KEEPING_UP_BYTES = 64 * 1024;

/**
 * Every open SSE stream of one monitor, so that what they leave unread together stays bounded: without
 * it, N clients that never read could make kq hold N × maxBufferedBytes.
 */
export class SseStreams {
  private readonly open = new Set<SseStream>();

  constructor(readonly o: SseOptions) {}

  add(s: SseStream): void { this.open.add(s); }
  delete(s: SseStream): void { this.open.delete(s); }
  get size(): number { return this.open.size; }

  /** Past the total, cut off the clients furthest behind until the rest fit. */
  enforceTotal(): void {
    let total = 0;
    for (const s of this.open) total += s.unread;
    if (total <= this.o.maxTotalBufferedBytes) return;
    for (const s of [...this.open].sort((a, b) => b.unread - a.unread)) {
      if (total <= this.o.maxTotalBufferedBytes || s.unread <= KEEPING_UP_BYTES) break;
      total -= s.unread;
      s.cutOff();
    }
  }

  closeAll(): void {
    for (const s of [...this.open]) s.close();
  }
}

export class SseStream {
  private readonly raw;
  private heartbeat: NodeJS.Timeout;
  private readonly closeHandlers: Array<() => void> = [];
  private readonly o: SseOptions;
  closed = false;

  constructor(req: FastifyRequest, reply: FastifyReply, private readonly streams: SseStreams, extraHeaders: Record<string, string> = {}) {
    this.o = streams.o;
    reply.hijack();
    this.raw = reply.raw;
    this.raw.writeHead(200, {
      ...extraHeaders,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
      connection: 'keep-alive',
    });
    this.raw.write('retry: 2000\n\n');
    this.heartbeat = setInterval(() => this.write(': ping\n\n'), this.o.heartbeatMs);
    this.heartbeat.unref();
    streams.add(this);
    const onGone = () => this.close();
    req.raw.on('close', onGone);
    this.raw.on('close', onGone);
    this.raw.on('error', onGone);
  }

  /** Send one event; false once the stream is closed. `id` lets a reconnecting EventSource resume. */
  send(event: string, data: unknown, id?: string): boolean {
    return this.write(sseEvent(event, data, id));
  }

  /** Send an event made by sseEvent(): one string shared by every client it goes to. */
  sendEvent(text: string): boolean {
    return this.write(text);
  }

  /** Resolves when the client has read what was sent (or the stream closed). */
  drained(): Promise<void> {
    if (this.closed || !this.raw.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.raw.off('drain', done);
        this.raw.off('close', done);
        resolve();
      };
      this.raw.on('drain', done);
      this.raw.on('close', done);
    });
  }

  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.closeHandlers.push(fn);
  }

  /** Bytes written but not yet taken by the client's socket. */
  get unread(): number {
    return this.closed ? 0 : this.raw.writableLength;
  }

  /** Close politely: what was sent is still delivered. */
  close(): void {
    if (this.end()) this.raw.end();
  }

  /** Drop a client that does not read, and what it left unread; its EventSource reconnects and resumes. */
  cutOff(): void {
    if (this.end()) this.raw.destroy();
  }

  private end(): boolean {
    if (this.closed) return false;
    this.closed = true;
    clearInterval(this.heartbeat);
    this.streams.delete(this);
    for (const fn of this.closeHandlers.splice(0)) {
      try { fn(); } catch { /* a close handler must not stop the others */ }
    }
    return !this.raw.destroyed;
  }

  private write(text: string): boolean {
    if (this.closed) return false;
    // Judged before writing: one big event (the snapshot of 10,000 jobs is several MiB) is fine for a
    // client that keeps up; a client still holding more than its share of earlier events is cut off.
    if (this.raw.writableLength > this.o.maxBufferedBytes) {
      this.cutOff();
      return false;
    }
    try {
      this.raw.write(text);
    } catch {
      this.close();
      return false;
    }
    const unread = this.raw.writableLength;
    if (unread > KEEPING_UP_BYTES) {
      this.streams.enforceTotal();
      if (this.closed) return false;
    }
    return true;
  }
}

export interface HubOptions {
  /** Job changes are gathered this long and sent as one `jobs` event. */
  batchMs: number;
  /** The agents list is re-checked this often while anyone watches (for Last Seen and lost agents). */
  agentsMs: number;
}

/** Hears a job's `log` broadcasts, and its `job` broadcasts (kq writes some log lines without a broadcast). */
type LogListener = (msg: Extract<Broadcast, { type: 'log' | 'job' }>) => void;

/**
 * Fans kq's broadcasts out to browsers:
 * - `/api/events` clients get `snapshot` {jobs, agents} on connect, then `jobs` (changed job summaries,
 *   the same shape as `list`) and `agents` (the whole `agents` reply, when it changed).
 * - log followers get every `log` broadcast of their job, in order.
 */
export class MonitorHub {
  private readonly clients = new Set<SseStream>();
  private readonly logListeners = new Map<number, Set<LogListener>>();
  private readonly changed = new Set<number>();
  private flushTimer: NodeJS.Timeout | null = null;
  private agentsTimer: NodeJS.Timeout | null = null;
  private lastAgents = '';
  private started = false;

  constructor(private readonly backend: MonitorBackend, private readonly log: Logger, private readonly o: HubOptions) {}

  start(): void {
    if (this.started) return;
    this.started = true;
    this.backend.broadcasts.on('message', this.onMessage);
  }

  stop(): void {
    this.backend.broadcasts.off('message', this.onMessage);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.agentsTimer) clearInterval(this.agentsTimer);
    this.flushTimer = this.agentsTimer = null;
    for (const c of [...this.clients]) c.close();
    this.clients.clear();
    this.logListeners.clear();
  }

  /** A new `/api/events` connection: everything now, then changes. */
  addClient(stream: SseStream): void {
    const agents = this.backend.request({ type: 'agents' }) as AgentInfo[];
    const jobs = this.backend.request({ type: 'list' }) as JobSummary[];
    const queuePaused = (this.backend.request({ type: 'ping' }) as { queuePaused?: boolean }).queuePaused ?? false;
    if (!stream.send('snapshot', { jobs, agents, queuePaused })) return;
    this.clients.add(stream);
    stream.onClose(() => {
      this.clients.delete(stream);
      if (this.clients.size === 0 && this.agentsTimer) {
        clearInterval(this.agentsTimer);
        this.agentsTimer = null;
      }
    });
    this.agentsTimer ??= setInterval(() => this.guard('agents', () => this.pushAgents()), this.o.agentsMs);
  }

  /** Follow one job's log broadcasts; returns the unsubscribe function. */
  followLog(jobId: number, fn: LogListener): () => void {
    let set = this.logListeners.get(jobId);
    if (!set) this.logListeners.set(jobId, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.logListeners.delete(jobId);
    };
  }

  private readonly onMessage = (_topic: string, msg: Broadcast): void => {
    this.guard('broadcast', () => {
      if (msg.type === 'job') {
        for (const fn of this.logListeners.get(msg.jobId) ?? []) fn(msg);
        if (this.clients.size === 0) return;
        this.changed.add(msg.jobId);
        this.flushTimer ??= setTimeout(() => this.guard('flush', () => this.flush()), this.o.batchMs);
      } else if (msg.type === 'log') {
        for (const fn of this.logListeners.get(msg.jobId) ?? []) fn(msg);
      } else if (msg.type === 'queue' || msg.type === 'removed') {
        // The page hears the queue paused/resumed and jobs removed (issue 17) as they happen.
        if (msg.type === 'removed') for (const id of msg.jobIds) this.changed.delete(id);
        const event = msg.type === 'queue' ? sseEvent('queue', { paused: msg.paused }) : sseEvent('removed', { jobIds: msg.jobIds });
        for (const c of this.clients) c.sendEvent(event);
      }
    });
  };

  private flush(): void {
    this.flushTimer = null;
    const ids = [...this.changed];
    this.changed.clear();
    if (this.clients.size === 0 || ids.length === 0) return;
    for (let i = 0; i < ids.length; i += 10_000) {
      const jobs = sseEvent('jobs', this.backend.request({ type: 'list', jobIds: ids.slice(i, i + 10_000) }) as JobSummary[]);
      for (const c of this.clients) c.sendEvent(jobs);
    }
    this.pushAgents();
  }

  private pushAgents(): void {
    if (this.clients.size === 0) return;
    const agents = this.backend.request({ type: 'agents' }) as AgentInfo[];
    const json = JSON.stringify(agents);
    if (json === this.lastAgents) return;
    this.lastAgents = json;
    const event = `event: agents\ndata: ${json}\n\n`;
    for (const c of this.clients) c.sendEvent(event);
  }

  /** Nothing the monitor does may throw into the daemon's publish path or a timer. */
  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ err: (err as Error).stack, what }, 'monitor event handling failed');
    }
  }
}
