/**
 * ZAP handler (ZeroMQ RFC 27): libzmq asks it, over inproc, whether a peer that completed its handshake
 * may connect. With CURVE only public keys on the allowlist are admitted; without CURVE (loopback, or
 * --insecure) every NULL-mechanism peer is. It runs even then because a socket with a ZAP domain makes
 * libzmq refuse ZMTP 1.0/2.0 peers: without one, the bytes of an HTTP request a web page makes a browser
 * send to a loopback port are read as old-protocol ZeroMQ frames (a submit that runs). It must be bound
 * before any socket binds. Malformed requests are answered with 400 and never crash kq.
 */
import * as zmq from 'zeromq';
import type { Logger } from 'pino';
import { z85Encode } from '../common/z85.js';
import type { Allowlist } from '../common/keys.js';

export const ZAP_DOMAIN = 'kq';
const ZAP_ENDPOINT = 'inproc://zeromq.zap.01';
const REFUSAL_WINDOW_MS = 60_000;
export const REFUSALS_LOGGED_PER_MINUTE = 10;

export class ZapHandler {
  private readonly socket = new zmq.Router({ linger: 0 });
  private readonly refusedLogged = new Map<string, number>();
  private windowStart = 0;
  private loggedInWindow = 0;
  private unlogged = 0;

  /** `allowlist` null: kq runs without CURVE and admits NULL-mechanism (ZMTP 3) peers. */
  constructor(private readonly allowlist: Allowlist | null, private readonly log: Logger) {}

  async start(): Promise<void> {
    await this.socket.bind(ZAP_ENDPOINT);
    void this.serve();
  }

  close(): void {
    if (!this.socket.closed) this.socket.close();
  }

  private async serve(): Promise<void> {
    try {
      for await (const request of this.socket) {
        await this.socket.send(this.answer(request)).catch(() => undefined);
      }
    } catch {
      // closed on shutdown
    }
  }

  private answer(request: Buffer[]): Array<Buffer | string> {
    const [routingId, delimiter, version, requestId, domain, address, , mechanism, credential] = request;
    const reply = (status: '200' | '400' | '500', text: string, userId = '') =>
      [routingId ?? Buffer.alloc(0), delimiter ?? Buffer.alloc(0), '1.0', requestId ?? Buffer.alloc(0), status, text, userId, Buffer.alloc(0)];
    if (version?.toString() !== '1.0') return reply('500', 'unsupported ZAP version');
    if (domain?.toString() !== ZAP_DOMAIN) return reply('400', 'unknown domain');
    if (this.allowlist === null) return mechanism?.toString() === 'NULL' ? reply('200', 'OK') : reply('400', 'NULL mechanism expected');
    if (mechanism?.toString() !== 'CURVE' || !credential || credential.length !== 32) return reply('400', 'CURVE key required');
    const key = z85Encode(credential);
    if (this.allowlist.has(key)) return reply('200', 'OK', key);
    this.logRefusal(key, address?.toString() ?? '?');
    return reply('400', 'key not allowed');
  }

  /**
   * One line per refused key per minute, and at most REFUSALS_LOGGED_PER_MINUTE in all: a fresh key costs a
   * scanner nothing, so a per-key limit alone let one client write ~8 GB of log a day. Past the limit
   * refusals are counted, and the count logged when the minute ends.
   */
  private logRefusal(key: string, address: string): void {
    const now = Date.now();
    if (now - (this.refusedLogged.get(key) ?? 0) < REFUSAL_WINDOW_MS) return;
    if (now - this.windowStart >= REFUSAL_WINDOW_MS) {
      this.windowStart = now;
      this.loggedInWindow = 0;
    }
    if (this.loggedInWindow >= REFUSALS_LOGGED_PER_MINUTE) {
      if (this.unlogged++ === 0) {
        this.log.warn(`refusing more peers than kq logs (${REFUSALS_LOGGED_PER_MINUTE} a minute): the next ones are counted, not logged`);
        setTimeout(() => {
          this.log.warn({ refused: this.unlogged }, 'refused peers whose keys are not allowed, not logged one by one');
          this.unlogged = 0;
        }, REFUSAL_WINDOW_MS - (now - this.windowStart)).unref();
      }
      return;
    }
    this.loggedInWindow++;
    if (this.refusedLogged.size > 10_000) this.refusedLogged.clear();
    this.refusedLogged.set(key, now);
    this.log.warn({ key, address }, 'refused a peer whose key is not allowed (kqctl keys add-client to allow it)');
  }
}
