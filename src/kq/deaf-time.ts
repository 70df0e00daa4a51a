/**
 * Time in which kq could not hear its agents: its event loop was blocked (a heartbeat waits unread in
 * the socket meanwhile), or heartbeats could not be recorded (a full disk). The silence check counts an
 * agent's silence only in the time kq was listening, so kq's own stall is never blamed on its agents.
 */
export class DeafTime {
  /** Spans [start, end] in ms, oldest first, not overlapping. */
  private readonly spans: Array<{ start: number; end: number }> = [];

  add(start: number, end: number): void {
    const last = this.spans[this.spans.length - 1];
    if (last && start <= last.end) {
      last.end = Math.max(last.end, end);
    } else if (end > start) {
      this.spans.push({ start, end });
      if (this.spans.length > 1000) this.spans.shift();
    }
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
