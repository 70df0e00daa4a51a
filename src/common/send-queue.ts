/**
 * zeromq.js allows one pending send() per socket (a second fails with EBUSY).
 * SendQueue serialises sends so any part of a program can send without coordinating.
 */
import type { Writable } from 'zeromq';

export class SendQueue {
  private tail: Promise<void> = Promise.resolve();
  constructor(private readonly socket: Writable) {}

  send(frames: Array<Buffer | string>): Promise<void> {
    const next = this.tail.then(() => this.socket.send(frames));
    this.tail = next.catch(() => undefined);
    return next;
  }
}
