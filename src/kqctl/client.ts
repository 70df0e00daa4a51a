/** kqctl's connection to kq: one request → one reply, within a deadline; and broadcast subscriptions. */
import * as zmq from 'zeromq';
import { MAX_MESSAGE_BYTES, PROTOCOL_VERSION } from '../protocol/version.js';
import { encode } from '../protocol/codec.js';
import type { Broadcast, Reply, RequestInput } from '../protocol/messages.js';
import { tcpEndpoint } from '../common/endpoint.js';
import { printable } from '../common/printable.js';
import { curveSocketOptions } from '../common/curve-client.js';
import type { KqAddress } from './address.js';
import { CliError, EXIT } from './exit-codes.js';

type Body<T extends RequestInput['type']> = Omit<Extract<RequestInput, { type: T }>, 'v' | 'rid' | 'type'>;

/** Requests that only read: asking again is harmless, so no answer is exit 3 whether or not kq got them. */
const READ_ONLY = new Set<RequestInput['type']>(['ping', 'list', 'show', 'log', 'agents']);

export class KqClient {
  private dealer: zmq.Dealer | null = null;
  private requests = 0;
  private sub: zmq.Subscriber | null = null;

  constructor(readonly address: KqAddress, private readonly timeoutMs: number) {}

  get endpoint(): string {
    return tcpEndpoint(this.address.host, this.address.requestPort);
  }

  async request<T, K extends RequestInput['type'] = RequestInput['type']>(type: K, body: Body<K>): Promise<T> {
    if (this.address.curveError) throw new CliError(EXIT.usage, this.address.curveError);
    if (!this.dealer) {
      // immediate: a request is queued only on a connection kq completed (handshake, keys admitted), so a send
      // that times out surely never reached kq, and one that went out may have been applied.
      this.dealer = new zmq.Dealer({ linger: 0, immediate: true, sendTimeout: this.timeoutMs, maxMessageSize: MAX_MESSAGE_BYTES, ...curveSocketOptions(this.address.curve) });
      this.dealer.connect(this.endpoint);
    }
    // Unique per request of this process: it only pairs a reply with its request (no crypto module to load).
    const rid = `${process.pid}.${++this.requests}.${Date.now().toString(36)}`;
    const message = encode({ v: PROTOCOL_VERSION, rid, type, ...body });
    // kq's socket would drop a bigger message without a word (and cut us off): say so instead of timing out.
    if (message.length > MAX_MESSAGE_BYTES) {
      throw new CliError(EXIT.usage, `this ${type} is ${(message.length / 1024 / 1024).toFixed(1)} MiB, over kq's ${MAX_MESSAGE_BYTES / 1024 / 1024} MiB message limit` +
        (type === 'submit' ? ': split the items (or the command) into several jobs' : ''));
    }
    const started = Date.now();
    try {
      await this.dealer.send(message);
    } catch (err) {
      if ((err as { code?: string }).code === 'EAGAIN') throw this.unreachable();
      throw err;
    }
    // The deadline covers both: waiting for a connection, then for the answer.
    this.dealer.receiveTimeout = Math.max(1, this.timeoutMs - (Date.now() - started));
    try {
      for (;;) {
        const [frame] = await this.dealer.receive();
        const reply = JSON.parse(frame!.toString()) as Reply;
        if (reply.rid !== rid) continue; // a late answer to an earlier request
        if (reply.ok) {
          if (reply.notice) process.stderr.write(`kqctl: ${printable(reply.notice)}\n`);
          return reply.data as T;
        }
        throw new CliError(reply.code === 'internal' ? EXIT.unexpected : EXIT.usage, reply.error);
      }
    } catch (err) {
      if (err instanceof CliError) throw err;
      if ((err as { code?: string }).code === 'EAGAIN') throw this.noReply(type);
      throw err;
    }
  }

  /** The request went out on a live connection, and no answer came within the deadline. */
  private noReply(type: RequestInput['type']): CliError {
    const waited = `kq at ${this.endpoint} got the ${type} request but did not answer within ${this.timeoutMs / 1000}s (busy? give it longer with --connect-timeout)`;
    if (READ_ONLY.has(type)) return new CliError(EXIT.unreachable, waited);
    return new CliError(EXIT.noReply, `${waited}: it may have been applied; check with \`kqctl list\` before retrying`);
  }

  unreachable(): CliError {
    return new CliError(EXIT.unreachable, `cannot reach kq at ${this.endpoint} (nothing answered in ${this.timeoutMs / 1000}s, nothing was sent; address from ${this.address.source}): ` +
      'is kq running? start it with `kq`, or check KQ_HOST/KQ_REQUEST_PORT/--data-root' +
      (this.address.curve ? '; and is this key allowed by kq (kqctl keys list on kq\'s machine)?' : ''));
  }

  /** Subscribe to broadcast topics. Subscribe before fetching state, then drop what the state already covers. */
  async subscribe(topics: string[], prefixes: string[] = []): Promise<AsyncIterable<Broadcast>> {
    if (this.address.curveError) throw new CliError(EXIT.usage, this.address.curveError);
    this.sub = new zmq.Subscriber({ linger: 0, maxMessageSize: MAX_MESSAGE_BYTES, ...curveSocketOptions(this.address.curve) });
    this.sub.subscribe(...topics, ...prefixes);
    this.sub.connect(tcpEndpoint(this.address.host, this.address.broadcastPort));
    const sub = this.sub;
    const wanted = new Set(topics);
    return (async function* () {
      for await (const [topic, frame] of sub) {
        const name = topic?.toString() ?? '';
        // A subscription is a prefix: keep exact topics only, unless a prefix was asked for (Topics.allJobs).
        if (!wanted.has(name) && !prefixes.some((p) => name.startsWith(p) && name.endsWith('/'))) continue;
        const msg = parseBroadcast(frame);
        if (msg) yield msg;
      }
    })();
  }

  close(): void {
    for (const s of [this.dealer, this.sub]) if (s && !s.closed) s.close();
  }
}

/** kq is the only publisher kqctl listens to: a shape check is enough (and keeps zod out of kqctl). */
function parseBroadcast(frame: Buffer | undefined): Broadcast | null {
  try {
    const msg = JSON.parse(frame?.toString() ?? '') as Broadcast;
    return msg && msg.v === PROTOCOL_VERSION && typeof msg.type === 'string' ? msg : null;
  } catch {
    return null;
  }
}
