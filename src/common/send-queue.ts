/**
 * zeromq.js allows one pending send() per socket (a second fails with EBUSY).
 * SendQueue serialises sends so any part of a program can send without coordinating.
 */
import type { Writable } from 'zeromq';

export class SendQueue {
  private tail: Promise<void> = Promise.resolve();
  /** `socket` may be a getter: kq replaces its sockets when a key is revoked, and the queue goes on with the new ones. */
  constructor(private readonly socket: Writable | (() => Writable | Promise<Writable>)) {}

  send(frames: Array<Buffer | string>): Promise<void> {
    const next = this.tail.then(async () => (typeof this.socket === 'function' ? await this.socket() : this.socket).send(frames));
    this.tail = next.catch(() => undefined);
    return next;
  }
}
