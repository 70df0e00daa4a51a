/**
 * What kq says about input it refuses: the real problem, not a misleading one. Real kq, raw ZeroMQ and HTTP.
 */
import * as zmq from 'zeromq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll } from './helpers/kq.js';

let kq: Kq;
beforeAll(async () => { kq = await Kq.start({ numAgents: 0 }); });
afterAll(async () => { await cleanupAll([kq]); });

async function request(body: object): Promise<any> {
  const dealer = new zmq.Dealer({ linger: 0, receiveTimeout: 15_000 });
  dealer.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
  try {
    await dealer.send(JSON.stringify(body));
    const [frame] = await dealer.receive();
    return JSON.parse(frame!.toString());
  } finally {
    dealer.close();
  }
}

describe('refused input is described as it is', () => {
  it('a protocol version sent as a string is called a string, not a version mismatch', async () => {
    const r = await request({ v: '1', rid: 'a', type: 'ping' });
    expect(r).toMatchObject({ ok: false, code: 'bad-request' });
    expect(r.error).not.toMatch(/protocol version 1 \(this kq speaks 1\)/);
    expect(r.error).toMatch(/"v" must be the number 1, not the string "1"/);
    const other = await request({ v: 2, rid: 'b', type: 'ping' });
    expect(other.error).toMatch(/protocol version 2 \(this kq speaks 1\)/);
    expect((await request({ v: 1, rid: 'c', type: 'ping' })).ok).toBe(true);
  });

  it('a huge priority, chunk or retry count is reported against its own range (API and kqctl)', async () => {
    for (const [field, value, range] of [['priority', 1e308, /<=\s*1000/], ['priority', -1e308, />=\s*-1000/], ['chunk', 1e300, /<=\s*1000000/], ['maxAttempts', 1e300, /<=\s*100/]] as const) {
      const ws = await request({ v: 1, rid: 'p', type: 'submit', job: { argv: ['true'], [field]: value } });
      expect(ws.ok, field).toBe(false);
      expect(ws.error, field).toMatch(range);
      expect(ws.error, field).not.toMatch(/9007199254740991/);
      const res = await fetch(new URL('/api/jobs', kq.info.httpUrl!), {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ argv: ['true'], [field]: value }),
      });
      expect(res.status).toBe(400);
      const body = await res.json() as { error: string };
      expect(body.error, field).toMatch(range);
      expect(body.error, field).not.toMatch(/9007199254740991/);
    }
    const ctl = await kq.ctl('submit', '--priority', '1e308', '--', 'true');
    expect(ctl.exitCode).toBe(2);
    expect(ctl.stderr).toMatch(/-1000 to 1000/);
    expect(await kq.json('list')).toEqual([]);
  });
});
