/**
 * Who follows which job's log over ZeroMQ, from the broadcast socket's own subscription messages (an XPUB
 * socket hands kq a byte 1 + prefix when a prefix gains its first subscriber, 0 + prefix when it loses
 * its last, a disconnect included), so kq sends no `log` broadcast nobody would receive.
 *
 * libzmq passes only these unique changes: a second subscriber to a prefix, or an unsubscribe from a peer
 * that never subscribed, changes nothing here while another peer holds the prefix. A follower whose
 * subscription kq has not read yet loses nothing: `kqctl log -f` reads the file on a gap or a quiet second.
 */
import { Topics } from '../protocol/index.js';

/** Longest subscription that is kept: `log.<job id>/` is far shorter; a longer prefix can match no log topic. */
const MAX_PREFIX = 64;
/** Distinct prefixes kept; past this (a peer subscribing to junk) every log broadcast is sent, as before. */
const MAX_PREFIXES = 100_000;
/** What every log topic (`Topics.log`) starts with. */
const LOG = 'log.';

export class LogSubscriptions {
  /** Subscribed prefixes that can match a log topic: prefixes of 'log.' ('' included), and 'log.…' ones. */
  private readonly prefixes = new Set<string>();
  /** Not tracking (too many prefixes, or the socket's subscription stream failed): send every log broadcast. */
  private sendAll = false;

  /**
   * Read the subscription messages of the broadcast socket (`current()`) until it closes. If it was
   * replaced meanwhile, go on with the new one, whose subscribers subscribe again; if it ended or failed
   * for good, filter nothing from then on.
   */
  async track(current: () => AsyncIterable<Buffer[]>, bound: () => Promise<void> = async () => undefined): Promise<void> {
    for (let socket = current(); ; socket = current()) {
      this.prefixes.clear();
      try {
        for await (const [frame] of socket) if (frame) this.apply(frame);
      } catch {
        // closed (kq stops, or the socket was replaced) or failed
      }
      await bound(); // a socket being replaced: its successor may take a few tries to bind
      if (socket === current()) break;
    }
    this.sendAll = true;
  }

  /** One message from the XPUB socket: 1 or 0, then the prefix (any bytes: latin1 keeps them one char each). */
  apply(frame: Buffer): void {
    if (frame.length < 1 || frame.length - 1 > MAX_PREFIX || (frame[0] !== 0 && frame[0] !== 1)) return;
    const prefix = frame.toString('latin1', 1);
    if (!(LOG.startsWith(prefix) || prefix.startsWith(LOG))) return;
    if (frame[0] === 0) this.prefixes.delete(prefix);
    else if (this.prefixes.size < MAX_PREFIXES) this.prefixes.add(prefix);
    else this.sendAll = true;
  }

  /** Does some subscriber's prefix match this job's log topic? */
  wantsLog(jobId: number): boolean {
    if (this.sendAll) return true;
    if (this.prefixes.size === 0) return false;
    const topic = Topics.log(jobId);
    for (let end = 0; end <= topic.length; end++) if (this.prefixes.has(topic.slice(0, end))) return true;
    return false;
  }
}
