/** A small server-sent-events reader over fetch, for tests (Node 20 has no EventSource). */
export interface SseEvent { event: string; data: any; id?: string }

export class SseReader {
  readonly events: SseEvent[] = [];
  private readonly controller = new AbortController();
  private waiters: Array<() => void> = [];
  status = 0;
  /** Streams kq ended (with `reconnect`, each was followed by a new one resuming at the last event id). */
  ends = 0;
  done: Promise<void>;

  /** `reconnect`: like a browser's EventSource, reconnect with Last-Event-ID when kq ends the stream. */
  constructor(url: string, headers: Record<string, string> = {}, o: { reconnect?: boolean } = {}) {
    this.done = (async () => {
      for (;;) {
        const lastId = this.events.filter((e) => e.id !== undefined).at(-1)?.id;
        await this.run(url, lastId === undefined ? headers : { ...headers, 'last-event-id': lastId }).catch(() => undefined);
        this.ends++;
        if (!o.reconnect || this.controller.signal.aborted) return;
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
  }

  private async run(url: string, headers: Record<string, string>): Promise<void> {
    const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: this.controller.signal });
    this.status = res.status;
    this.wake();
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const ev: SseEvent = { event: 'message', data: undefined };
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) ev.event = line.slice(7);
          else if (line.startsWith('data: ')) data.push(line.slice(6));
          else if (line.startsWith('id: ')) ev.id = line.slice(4);
        }
        if (data.length === 0) continue;
        ev.data = JSON.parse(data.join('\n'));
        this.events.push(ev);
        this.wake();
      }
    }
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Wait until some event satisfies `pred`; returns it. */
  async waitFor(what: string, pred: (e: SseEvent) => boolean, timeoutMs = 30_000): Promise<SseEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(pred);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for SSE ${what}; got ${this.events.map((e) => e.event).join(',')}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 500));
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  close(): void {
    this.controller.abort();
  }
}
