/**
 * A job's render log as server-sent events: the backlog from an offset (or its last `tail` bytes, from a
 * line start), then every new piece as kq writes it. Events:
 * - `meta` {jobId, from, size}: where the backlog starts (from > 0: earlier bytes were left out);
 * - `log` {offset, text}: bytes [offset, offset + byteLength(text)) of the log file; its id is the end
 *   offset, so a reconnecting EventSource (Last-Event-ID) resumes exactly where it stopped.
 * The backlog is read in chunks that wait for the client to read; the switch to live broadcasts happens
 * in the same tick as the last read, so no byte is lost or sent twice.
 */
import type { LogChunk } from '../../protocol/index.js';
import { sseEvent, type MonitorBackend, type MonitorHub, type SseStream } from './sse.js';

const CHUNK = 256 * 1024;

type LogBroadcast = { offset: number; text: string };

/**
 * A live log broadcast as one event, made once and shared by every follower that is exactly caught up
 * (all of them, normally): 200 followers must not mean 200 copies of each piece of log.
 */
const sharedEvents = new WeakMap<LogBroadcast, { end: number; event: string }>();
function sharedEvent(msg: LogBroadcast): { end: number; event: string } {
  let e = sharedEvents.get(msg);
  if (!e) {
    const end = msg.offset + Buffer.byteLength(msg.text);
    e = { end, event: sseEvent('log', { offset: msg.offset, text: msg.text }, String(end)) };
    sharedEvents.set(msg, e);
  }
  return e;
}

export interface LogStreamStart {
  jobId: number;
  /** Byte offset to start from (a reconnect's Last-Event-ID, or ?from=). */
  from?: number;
  /** Without `from`: start this many bytes before the end, at a line start. */
  tail?: number;
}

/** Where the stream starts; throws the daemon's not-found error (before any byte is sent) for an unknown job. */
export function logStart(backend: MonitorBackend, s: LogStreamStart): { from: number; size: number; alignToLine: boolean } {
  const probe = backend.request({ type: 'log', jobId: s.jobId, from: 0, max: 1 }) as LogChunk;
  if (s.from !== undefined) return { from: Math.min(s.from, probe.size), size: probe.size, alignToLine: false };
  const from = s.tail === undefined ? 0 : Math.max(0, probe.size - s.tail);
  return { from, size: probe.size, alignToLine: from > 0 };
}

export async function streamLog(backend: MonitorBackend, hub: MonitorHub, stream: SseStream, jobId: number,
  start: { from: number; size: number; alignToLine: boolean }): Promise<void> {
  let next = start.from;
  const read = (max: number) => backend.request({ type: 'log', jobId, from: next, max }) as LogChunk;

  let chunk = read(CHUNK);
  if (start.alignToLine) {
    // Start at a line: drop the partial line the tail cut into.
    const nl = chunk.text.indexOf('\n');
    if (nl >= 0) {
      next += Buffer.byteLength(chunk.text.slice(0, nl + 1));
      chunk = { ...chunk, text: chunk.text.slice(nl + 1) };
    }
  }
  if (!stream.send('meta', { jobId, from: next, size: chunk.size })) return;
  for (;;) {
    if (chunk.text !== '') {
      if (!stream.send('log', { offset: next, text: chunk.text }, String(chunk.next))) return;
    }
    next = chunk.next;
    if (chunk.next >= chunk.size || chunk.text === '') break;
    await stream.drained();
    if (stream.closed) return;
    chunk = read(CHUNK);
  }

  /** Send what the file has beyond `next` (up to `until`): lines kq wrote without a broadcast, or a gap. */
  const catchUp = (until = Infinity) => {
    while (next < until) {
      const piece = read(Math.min(CHUNK, until - next));
      if (piece.text === '') return;
      stream.send('log', { offset: next, text: piece.text }, String(piece.next));
      next = piece.next;
    }
  };

  // Live: same tick as the last read above, so the broadcasts continue the file exactly.
  const unfollow = hub.followLog(jobId, (msg) => {
    if (msg.type === 'job') return catchUp(); // a state change: kq may have logged it (submitted, stopped, restarted)
    const shared = sharedEvent(msg);
    if (shared.end <= next) return; // already sent
    if (msg.offset > next) catchUp(msg.offset);
    if (msg.offset > next) return;
    if (msg.offset === next) stream.sendEvent(shared.event);
    else stream.send('log', { offset: next, text: Buffer.from(msg.text).subarray(next - msg.offset).toString('utf8') }, String(shared.end));
    next = shared.end;
  });
  stream.onClose(unfollow);
}
