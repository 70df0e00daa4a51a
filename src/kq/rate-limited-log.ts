/** Log dropped peer messages without letting a flood of them flood the log: one line per window, with a count. */
import type { Logger } from 'pino';

export class RateLimitedLog {
  private windowStart = 0;
  private suppressed = 0;

  constructor(private readonly logger: () => Logger, private readonly windowMs: number) {}

  warn(socket: string, error: string): void {
    const now = Date.now();
    if (now - this.windowStart < this.windowMs) {
      this.suppressed++;
      return;
    }
    this.logger().warn({ socket, error, suppressedBefore: this.suppressed }, 'dropped malformed message');
    this.windowStart = now;
    this.suppressed = 0;
  }
}
