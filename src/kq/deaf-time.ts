/**
 * Time in which kq could not hear its agents: its event loop was blocked (a heartbeat waits unread in
 * the socket meanwhile), or heartbeats could not be recorded (a full disk). The silence check counts an
 * agent's silence only in the time kq was listening, so kq's own stall is never blamed on its agents.
 */
export class DeafTime {
  /** Spans [start, end] in ms, oldest first, not overlapping (at most the last 1000). */
  private readonly spans: Array<{ start: number; end: number }> = [];

  /** Spans still going on (kq renewing its sockets): each ends when `begin`'s returned function is called. */
  private readonly ongoing = new Set<{ start: number }>();

  /** A span still going on (kq renewing its sockets): deaf from `start` until the function returned is called. */
  begin(start = Date.now()): () => void {
    const span = { start };
    this.ongoing.add(span);
    return () => {
      if (!this.ongoing.delete(span)) return;
      this.add(span.start, Date.now());
    };
  }

  /** Deaf right now: no silence can be judged until kq listens again. */
  get deafNow(): boolean {
    return this.ongoing.size > 0;
  }

  /** Spans may come in any order (a disk-full span starts in the past) and may overlap. */
  add(start: number, end: number): void {
    if (end <= start) return;
    this.spans.push({ start, end });
    this.spans.sort((a, b) => a.start - b.start);
    const merged: Array<{ start: number; end: number }> = [];
    for (const span of this.spans) {
      const last = merged[merged.length - 1];
      if (last && span.start <= last.end) last.end = Math.max(last.end, span.end);
      else merged.push({ ...span });
    }
    this.spans.splice(0, this.spans.length, ...merged.slice(-1000));
  }

  /**
   * Agents last heard before the returned time have been silent for `timeoutMs` of the time kq was
   * listening: walk back from `now`, skipping the spans in which kq was deaf.
   */
  silentBefore(now: number, timeoutMs: number): number {
    let t = now;
    let budget = timeoutMs;
    for (let i = this.spans.length - 1; i >= 0; i--) {
      const span = this.spans[i]!;
      if (span.start >= t) continue;
      const end = Math.min(span.end, t);
      if (t - end >= budget) break;
      budget -= t - end;
      t = span.start;
    }
    return t - budget;
  }
}
