/** Read broadcasts one at a time, giving up after a pause so callers can re-check state. */
import type { Broadcast } from '../protocol/index.js';

export class EventReader {
  private readonly iterator: AsyncIterator<Broadcast>;
  private pending: Promise<IteratorResult<Broadcast>> | null = null;

  constructor(events: AsyncIterable<Broadcast>) {
    this.iterator = events[Symbol.asyncIterator]();
  }

  /** The next broadcast, or null if none arrived within `ms`. Never leaves two reads pending. */
  async next(ms: number): Promise<Broadcast | null> {
    this.pending ??= this.iterator.next();
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([
      this.pending,
      new Promise<null>((r) => { timer = setTimeout(() => r(null), ms); }),
    ]);
    clearTimeout(timer);
    if (result === null) return null;
    this.pending = null;
    return result.done ? null : result.value;
  }
}
