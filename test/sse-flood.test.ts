/**
 * Many SSE clients that never read, while a chatty job logs: kq must hold a bounded amount for them (each
 * client's unread bytes are capped and so is their sum), cut them off, and keep serving everyone else.
 * Real kq, real raw TCP clients; kq's memory is read from /proc/<its pid>/status.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, sleep, tempDir, waitFor } from './helpers/kq.js';
import { SseReader } from './helpers/sse.js';

const kqs: Kq[] = [];
const sockets: net.Socket[] = [];
afterAll(async () => {
  sockets.forEach((s) => s.destroy());
  await cleanupAll(kqs);
});

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

/** A raw HTTP client that sends its request and then never reads: the kernel's buffers fill, then kq's. */
function stalledClient(port: number, route: string): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.write(`GET ${route} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n\r\n`);
      socket.pause();
      resolve({ socket, closed });
    });
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => undefined);
    socket.once('error', reject);
    sockets.push(socket);
  });
}

describe('SSE clients that never read', () => {
  it('cost kq a bounded amount of memory and are cut off; a reading client still gets every byte', async () => {
    const N = Number(process.env.N ?? 200);
    const LINES = 20_000; // 1 KB lines: ~20 MB of log, which every stalled client would otherwise be sent
    const kq = await Kq.start({ numAgents: 1 });
    kqs.push(kq);
    const pid = kq.proc!.pid!;
    const dir = tempDir();
    const id = await kq.submit('--cwd', dir, '--', 'sh', '-c',
      `while [ ! -f go ]; do sleep 0.1; done; awk 'BEGIN { s = sprintf("%1000s", ""); gsub(/ /, "x", s); for (i = 0; i < ${LINES}; i++) print i, s }'`);
    await waitFor('the job to run', async () => (await kq.json('show', String(id))).state === 'Running');

    const port = kq.info.httpPort!;
    const clients = [];
    for (let i = 0; i < N; i++) clients.push(await stalledClient(port, i % 2 ? `/api/jobs/${id}/log/stream` : '/api/events'));
    const reader = new SseReader(`${kq.info.httpUrl}api/jobs/${id}/log/stream`, {}, { reconnect: true });
    await reader.waitFor('meta', (e) => e.event === 'meta');
    await sleep(500);
    const before = rssMiB(pid);

    let peak = before;
    const sampler = setInterval(() => { peak = Math.max(peak, rssMiB(pid)); }, 100);
    fs.writeFileSync(path.join(dir, 'go'), '');
    try {
      await kq.waitJob(id, 120_000);
      // The reading client got the whole log, in order.
      const size = (await kq.json('log', String(id))).size as number;
      await waitFor('the reader to reach the end of the log', () => {
        const last = reader.events.filter((e) => e.event === 'log').at(-1);
        return last !== undefined && Number(last.id) >= size;
      }, 60_000).catch((err) => {
        const logs = reader.events.filter((e) => e.event === 'log');
        throw new Error(`${String(err)}: size ${size}, ${logs.length} log events, last id ${logs.at(-1)?.id}, ${reader.ends} ends, events ${reader.events.map((e) => e.event).slice(0, 5).join(',')}`);
      });
      const logEvents = reader.events.filter((e) => e.event === 'log');
      for (let i = 1; i < logEvents.length; i++) expect(logEvents[i]!.data.offset).toBe(Number(logEvents[i - 1]!.id));
      const text = logEvents.map((e) => e.data.text as string).join('');
      expect(text.split('\n').filter((l) => / x+$/.test(l)).length).toBe(LINES);
    } finally {
      clearInterval(sampler);
      reader.close();
    }
    // The stalled log followers were cut off: once they read, their stream ends (a live one never does).
    for (const c of clients.filter((_, i) => i % 2)) c.socket.resume();
    await Promise.all(clients.filter((_, i) => i % 2).map((c) => c.closed));
    const afterCut = rssMiB(pid);
    for (const c of clients) c.socket.destroy();
    await sleep(3000);
    const after = rssMiB(pid);
    console.log(`the reading client was cut off ${reader.ends} times and resumed`);
    console.log(`kq RSS with ${N} stalled SSE clients: before ${before.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB, ` +
      `after the cut-off ${afterCut.toFixed(0)} MiB, 3 s after they left ${after.toFixed(0)} MiB`);
    // Bound: kq caps what all SSE clients together may leave unread at 32 MiB (1 MiB each); on top of that
    // come 200 connections' buffers, the log traffic in flight and V8's garbage. 160 MiB is generous for
    // that and far below the ~1.6 GB the 8 MiB-per-client cap alone allowed.
    expect(peak - before).toBeLessThan(160);
    expect(after - before).toBeLessThan(160);
  });
});
