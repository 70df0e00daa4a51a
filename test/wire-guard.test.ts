/**
 * Who may speak ZeroMQ to kq's three ports. A web page can make a browser send an HTTP POST to any
 * loopback port with a body it chooses; libzmq without ZAP takes a peer that does not send a ZMTP 3
 * greeting for an old ZMTP 1.0 peer and parses the bytes as frames. Real kq, real raw TCP sockets.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { kqStarter, sleep, tempDir, waitFor } from './helpers/kq.js';
import { PROTOCOL_VERSION } from '../src/protocol/version.js';

const start = kqStarter(['--no-http']);

/**
 * The reviewer's body: 0x02 padding (each `02 02 02` is a one-byte ZMTP 1.0 message) to fall into step
 * whatever the HTTP header's length, then one ZMTP 1.0 frame [len+1][flags 0][JSON].
 */
function crossProtocolBody(json: string, pad: number): Buffer {
  const body = Buffer.from(json);
  if (body.length + 1 >= 255) throw new Error('payload too long for a one-byte ZMTP 1.0 length');
  return Buffer.concat([Buffer.alloc(300 + pad, 0x02), Buffer.from([body.length + 1, 0]), body]);
}

/** What a browser's fetch('http://127.0.0.1:PORT/…', { method: 'POST', mode: 'no-cors', body }) puts on the wire. */
function httpPost(port: number, pathname: string, body: Buffer): Buffer {
  const head = `POST ${pathname} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: keep-alive\r\nContent-Length: ${body.length}\r\n` +
    'Content-Type: text/plain;charset=UTF-8\r\nAccept: */*\r\nOrigin: http://evil.example\r\n' +
    'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\r\n';
  return Buffer.concat([Buffer.from(head), body]);
}

interface RawPeer { received: () => Buffer; closed: () => boolean; destroy: () => void }

/** A raw TCP peer that writes `bytes`, then keeps the connection open and records what kq sends back. */
async function rawPeer(port: number, bytes: Buffer[]): Promise<RawPeer> {
  const chunks: Buffer[] = [];
  let closed = false;
  const s = net.connect(port, '127.0.0.1');
  s.on('data', (d) => chunks.push(d));
  s.on('close', () => { closed = true; });
  s.on('error', () => { closed = true; });
  await new Promise<void>((resolve) => { s.once('connect', resolve); s.once('close', resolve); });
  for (const b of bytes) if (!closed) s.write(b);
  return { received: () => Buffer.concat(chunks), closed: () => closed, destroy: () => s.destroy() };
}

describe('ZeroMQ ports refuse peers that are not ZMTP 3 (cross-protocol requests from web pages)', () => {
  it('a cross-protocol HTTP POST to any of the three ports runs nothing, and kq cuts such peers off', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const marker = path.join(dir, 'pwned');
    const submit = JSON.stringify({ v: PROTOCOL_VERSION, rid: 'x', type: 'submit', job: { argv: ['sh', '-c', `echo CROSS-PROTOCOL >> ${marker}`] } });
    const ports = { request: kq.info.requestPort, update: kq.info.updatePort, broadcast: kq.info.broadcastPort };
    const peers: RawPeer[] = [];
    for (const [name, port] of Object.entries(ports)) {
      for (const pad of [0, 1, 2]) peers.push(await rawPeer(port, [httpPost(port, `/${name}${pad}`, crossProtocolBody(submit, pad))]));
    }
    // A ZMTP 1.0 subscriber (identity frame, then a subscribe-to-everything frame) on the broadcast port.
    const listener = await rawPeer(ports.broadcast, [Buffer.from([1, 0]), Buffer.from([2, 0, 1])]);
    peers.push(listener);

    // A legitimate job runs to its end (so anything the payload had submitted would have run by now too).
    const id = await kq.submit('--name', 'BROADCAST-MARKER-31c', '--', 'sh', '-c', 'echo ok');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    await sleep(1000);
    const jobs = await kq.json<Array<{ id: number }>>('list');
    expect(jobs.map((j) => j.id)).toEqual([id]);
    expect(fs.existsSync(marker)).toBe(false);
    expect(listener.received().includes('BROADCAST-MARKER-31c')).toBe(false);
    // kq answers a ZMTP 1.0 peer by closing the connection (before: it kept it and read its frames).
    await waitFor('kq to close every non-ZMTP-3 connection', () => peers.every((p) => p.closed()), 30_000);
    for (const p of peers) p.destroy();
  });

  it('garbage and plain HTTP connections do not disturb kq: requests, agents and renders go on', async () => {
    const kq = await start({ numAgents: 1 });
    const ports = [kq.info.requestPort, kq.info.updatePort, kq.info.broadcastPort];
    const peers: RawPeer[] = [];
    for (const port of ports) {
      peers.push(await rawPeer(port, [Buffer.from(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`)]));
      peers.push(await rawPeer(port, [Buffer.alloc(5000, 0xff)]));
      peers.push(await rawPeer(port, [Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0]), Buffer.from('NULL'.padEnd(20, '\0')), Buffer.alloc(40, 0x41)]));
      peers.push(await rawPeer(port, [])); // connects and says nothing
    }
    const id = await kq.submit('--', 'sh', '-c', 'echo still-here');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    expect((await kq.ctl('log', String(id))).stdout).toContain('still-here');
    expect((await kq.agents()).filter((a) => a.state !== 'lost')).toHaveLength(1);
    for (const p of peers) p.destroy();
    expect(kq.proc).not.toBeNull();
    expect(await kq.stop()).toBe(0);
  });
});
