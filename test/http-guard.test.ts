/**
 * The monitor's loopback guard against DNS rebinding, over real HTTP against a real kq: a web page whose
 * name resolves to 127.0.0.1 (`127.0.0.1.attacker.example`) sends that name as Host and as Origin; kq must
 * refuse it (403) and run nothing, while the names a local browser really uses still work.
 */
import fs from 'node:fs';
import nodeHttp from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isLoopback } from '../src/common/endpoint.js';
import { Kq, cleanupAll, tempDir } from './helpers/kq.js';

let kq: Kq;
beforeAll(async () => { kq = await Kq.start({ numAgents: 1 }); });
afterAll(async () => { await cleanupAll([kq]); });

/** node:http, which (unlike fetch) may send any Host header. */
function request(method: string, route: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = nodeHttp.request({ host: '127.0.0.1', port: kq.info.httpPort!, method, path: route, headers, setHost: false }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('monitor on loopback without a token', () => {
  it('refuses rebinding-style Host names and Origins with 403, and no job is created', async () => {
    const port = kq.info.httpPort!;
    const marker = path.join(tempDir(), 'ran');
    const job = JSON.stringify({ argv: ['touch', marker] });
    const evilHosts = [
      `127.0.0.1.attacker.example:${port}`, `127.attacker.example:${port}`, `127.0.0.1.nip.io:${port}`,
      `localhost.attacker.example:${port}`, `localhost.:${port}`, `0.0.0.0:${port}`, `attacker.example:${port}`,
      `attacker.example@localhost:${port}`, `localhost:${port}/x`,
    ];
    for (const host of evilHosts) {
      const r = await request('POST', '/api/jobs', { host, origin: `http://${host}`, 'content-type': 'application/json' }, job);
      expect(r.status, `Host: ${host}`).toBe(403);
      expect(JSON.parse(r.body).code).toBe('forbidden');
      const g = await request('GET', '/api/jobs', { host });
      expect(g.status, `GET with Host: ${host}`).toBe(403);
    }
    // No Host at all: node's HTTP/1.1 server refuses it before kq sees it.
    expect((await request('POST', '/api/jobs', { 'content-type': 'application/json' }, job)).status).toBe(400);
    // A loopback Host with a rebinding-style Origin is a cross-site write.
    const crossSite = await request('POST', '/api/jobs', {
      host: `127.0.0.1:${port}`, origin: `http://127.0.0.1.attacker.example:${port}`, 'content-type': 'application/json',
    }, job);
    expect(crossSite.status).toBe(403);
    expect(await kq.json('list')).toEqual([]);
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('accepts literal loopback addresses and localhost', async () => {
    const port = kq.info.httpPort!;
    for (const host of [`localhost:${port}`, `LocalHost:${port}`, `127.0.0.1:${port}`, `127.1.2.3:${port}`, `[::1]:${port}`, `[::ffff:127.0.0.1]:${port}`, '127.0.0.1']) {
      const r = await request('GET', '/api/jobs', { host });
      expect(r.status, `Host: ${host}`).toBe(200);
    }
    const dir = tempDir();
    const marker = path.join(dir, 'ran');
    const r = await request('POST', '/api/jobs', {
      host: `localhost:${port}`, origin: `http://localhost:${port}`, 'content-type': 'application/json',
    }, JSON.stringify({ argv: ['touch', marker], cwd: dir }));
    expect(r.status).toBe(201);
    await kq.waitJob(JSON.parse(r.body).id);
    expect(fs.existsSync(marker)).toBe(true);
  });
});

/** A raw request line, for request targets node:http will not send (absolute form). */
function rawRequest(port: number, lines: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.end(lines.join('\r\n') + '\r\n\r\n'));
    let text = '';
    socket.on('data', (d: Buffer) => { text += d.toString(); });
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

describe('the guard covers every route that is not the page, however its path is spelled', () => {
  it('percent-encoded /api paths and absolute-form targets get no further than plain ones (loopback, no token)', async () => {
    const port = kq.info.httpPort!;
    const marker = path.join(tempDir(), 'ran');
    const job = JSON.stringify({ argv: ['touch', marker] });
    const evil = `attacker.example:${port}`;
    const jobsBefore = (await kq.json('list') as unknown[]).length;
    for (const route of ['/%61pi/jobs', '/a%70i/jobs', '/ap%69/jobs', '/api/%6aobs', '/%2561pi/jobs']) {
      const w = await request('POST', route, { host: evil, origin: `http://${evil}`, 'content-type': 'application/json' }, job);
      expect([403, 404], `POST ${route} with a rebinding Host`).toContain(w.status);
      const g = await request('GET', route, { host: evil });
      expect([403, 404], `GET ${route} with a rebinding Host`).toContain(g.status);
      // A cross-site simple request (what a page's fetch(no-cors) sends) may not act either.
      const csrf = await request('POST', route, { host: `127.0.0.1:${port}`, origin: 'http://evil.example', 'content-type': 'application/json' }, job);
      expect([403, 404], `cross-site POST ${route}`).toContain(csrf.status);
    }
    const absolute = await rawRequest(port, [`GET http://127.0.0.1:${port}/api/jobs HTTP/1.1`, `Host: ${evil}`, 'Connection: close']);
    expect(absolute).toMatch(/^HTTP\/1\.1 4\d\d/);
    const absoluteWrite = await rawRequest(port, [`POST http://${evil}/api/jobs HTTP/1.1`, `Host: 127.0.0.1:${port}`,
      'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(job)}`, 'Connection: close', '', job]);
    expect(absoluteWrite).toMatch(/^HTTP\/1\.1 4\d\d/);
    expect((await kq.json('list') as unknown[]).length).toBe(jobsBefore);
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('with a token, encoded paths need it too; the page itself still loads without it', async () => {
    const withToken = await Kq.start({ numAgents: 0, args: ['--http-token', 'a-token-of-enough-length'] });
    try {
      const base = `http://127.0.0.1:${withToken.info.httpPort!}`;
      for (const route of ['/api/jobs', '/%61pi/jobs', '/a%70i/jobs', '/api/%6aobs']) {
        expect((await fetch(base + route)).status, route).toBe(401);
      }
      expect((await fetch(base + '/%61pi/jobs', { headers: { authorization: 'Bearer a-token-of-enough-length' } })).status).toBe(200);
      const page = await fetch(base + '/');
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('<html');
    } finally {
      await cleanupAll([withToken]);
    }
  });

  it('a kq with CURVE (--secure) guards its monitor with a token even on loopback', async () => {
    const secure = await Kq.start({ numAgents: 0, args: ['--secure'] });
    try {
      const base = `http://127.0.0.1:${secure.info.httpPort!}`;
      const tokenFile = path.join(secure.dataRoot, 'http-token');
      expect((await fetch(base + '/api/jobs')).status).toBe(401);
      const token = fs.readFileSync(tokenFile, 'utf8').trim();
      expect(fs.statSync(tokenFile).mode & 0o777).toBe(0o600);
      expect((await fetch(base + '/api/jobs', { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    } finally {
      await cleanupAll([secure]);
    }
  });
});

describe('what counts as loopback', () => {
  it('literal loopback IPs and exactly localhost; never a name that merely starts like one', () => {
    for (const a of ['localhost', 'LOCALHOST', '127.0.0.1', '127.255.0.9', '::1', '[::1]', '::ffff:127.0.0.1', '[::ffff:7f00:1]', '0:0:0:0:0:0:0:1']) {
      expect(isLoopback(a), a).toBe(true);
    }
    for (const a of ['127.0.0.1.attacker.example', '127.attacker.example', '127.', '127.1', 'localhost.', 'localhost.attacker.example',
      '0.0.0.0', '::', '*', '10.0.0.1', '::ffff:10.0.0.1', '[::1].example', '']) {
      expect(isLoopback(a), a).toBe(false);
    }
  });

  it('kq bound to a name that is not a loopback literal turns CURVE on (it cannot know where the name points)', async () => {
    const named = await Kq.start({ numAgents: 0, args: ['--bind', '127.1'] });
    try {
      expect(named.info).toMatchObject({ bind: '127.1', curve: true, insecure: false });
    } finally {
      await cleanupAll([named]);
    }
  });
});
