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

export class ZapHandler {
  private readonly socket = new zmq.Router({ linger: 0 });
  private readonly refusedLogged = new Map<string, number>();

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

  /** One line per refused key per minute: a scan cannot flood the log. */
  private logRefusal(key: string, address: string): void {
    const now = Date.now();
    if (now - (this.refusedLogged.get(key) ?? 0) < 60_000) return;
    if (this.refusedLogged.size > 10_000) this.refusedLogged.clear();
    this.refusedLogged.set(key, now);
    this.log.warn({ key, address }, 'refused a peer whose key is not allowed (kqctl keys add-client to allow it)');
  }
}
