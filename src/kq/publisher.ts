/**
 * Everything kq tells the world: broadcasts on the PUB socket (and in-process, for the web monitor),
 * job-state announcements and job log lines. Nothing here changes the store.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { PROTOCOL_VERSION, Topics, encode, isTerminalState, type Broadcast } from '../protocol/index.js';
import { printableLines } from '../common/printable.js';
import type { SendQueue } from '../common/send-queue.js';
import type { JobLogs } from './job-logs.js';
import type { Store } from './store.js';

export interface PublisherDeps {
  store: Store;
  logs: JobLogs;
  log: Logger;
}

export class Publisher {
  /** Every broadcast kq publishes, also emitted in-process as ('message', topic, msg) for the HTTP monitor. */
  readonly broadcasts = new EventEmitter<{ message: [string, Broadcast] }>();
  /** The PUB socket's queue; null until the sockets are bound (in-process users still get broadcasts). */
  pubQueue: SendQueue | null = null;

  constructor(private readonly d: PublisherDeps) {}

  publish(topic: string, msg: Broadcast): void {
    this.broadcasts.emit('message', topic, msg);
    this.pubQueue?.send([topic, encode(msg)]).catch((err: Error) => this.d.log.warn({ err: err.message }, 'broadcast failed'));
  }

  /** A job's state and frame counts, to `kqctl wait`/`log -f` and the page. */
  announceJob(jobId: number): void {
    const job = this.d.store.jobRow(jobId);
    if (!job) return;
    this.publish(Topics.job(jobId), { v: PROTOCOL_VERSION, type: 'job', jobId, state: job.state, framesDone: job.frames_done, framesTotal: job.frames_total });
    if (isTerminalState(job.state)) this.d.log.info({ job: jobId, state: job.state }, 'job ended');
  }

  /**
   * One of kq's own lines (`[kq] …`) into a job's log, and out to its followers. What it quotes (names,
   * hosts, agent ids, reasons) came from others: control characters are escaped, line breaks kept.
   */
  appendLog(jobId: number, text: string): void {
    const safe = printableLines(text);
    this.publishLog(jobId, this.d.logs.append(jobId, safe), safe);
  }

  publishLog(jobId: number, offset: number, text: string): void {
    this.publish(Topics.log(jobId), { v: PROTOCOL_VERSION, type: 'log', jobId, offset, text });
  }
}
