/**
 * Launch Remote Agents on the monitor page (issue 17 #6) in real Chromium, against a real kq and a real
 * OpenSSH server: the dialog opened and filled by keyboard, kqctl's diagnosis for an unknown host key and
 * a refused key, then a launch whose progress shows and whose agents appear in the Agents table; and the
 * route's guard (Origin, JSON, field checks) refusing before anything is started.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import type { BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kq, ROOT, cleanupAll, isRunning, kqctl, processesMatching, tempDir, waitFor } from './helpers/kq.js';
import { launchBrowser, openPage, screenshot } from './helpers/browser.js';
import { Sshd, keygen } from './helpers/sshd.js';

const STOP = path.join(ROOT, 'scripts', 'StopAgents.sh');

const kqs: Kq[] = [];
let browser: BrowserContext;
let sshd: Sshd;
let kq: Kq;
/** kq's HOME: its ~/.ssh/known_hosts is the one kqctl reads and --accept-new-host-key appends to. */
const home = tempDir('kq-home-');
const agentsData = path.join(tempDir('kq-remote-page-'), 'agents data');

beforeAll(async () => {
  [browser, sshd] = await Promise.all([launchBrowser(), Sshd.start()]);
  kq = new Kq({ numAgents: 0, env: { HOME: home } });
  kqs.push(kq);
  await kq.start();
});
afterAll(async () => {
  await execa('sh', [STOP, agentsData, '1'], { reject: false });
  await browser?.close();
  await sshd?.stop();
  await cleanupAll(kqs);
});

const base = () => kq.info.httpUrl!.replace(/\/$/, '');
const connectionsSeen = () => (sshd.output.match(/Connection from/g) ?? []).length;

describe('Launch Remote Agents on the page', () => {
  it('refuses a cross-site, Origin-less or non-JSON launch and bad fields, and starts nothing', async () => {
    const before = connectionsSeen();
    const good = { host: '127.0.0.1', sshPort: sshd.port, user: 'root', identity: sshd.clientKey, numAgents: 1, dataRoot: agentsData };
    const own = new URL(base()).origin;
    const post = (headers: Record<string, string>, body: unknown) =>
      fetch(`${base()}/api/remote-agents`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });

    expect((await post({ origin: 'http://evil.example', 'content-type': 'application/json' }, good)).status).toBe(403);
    expect((await post({ origin: `http://127.0.0.1.evil.example:${kq.info.httpPort}`, 'content-type': 'application/json' }, good)).status).toBe(403);
    expect((await post({ 'content-type': 'application/json' }, good)).status).toBe(403); // no Origin: not the page
    expect((await post({ origin: own, 'content-type': 'text/plain' }, good)).status).toBe(415); // a cross-site "simple request"
    expect((await post({ origin: own, 'content-type': 'application/x-www-form-urlencoded' }, 'host=127.0.0.1')).status).toBe(415);

    const refused = async (patch: Record<string, unknown>) => {
      const r = await post({ origin: own, 'content-type': 'application/json' }, { ...good, ...patch });
      expect(r.status).toBe(400);
      return ((await r.json()) as { error: string }).error;
    };
    expect(await refused({ host: '-oProxyCommand=touch /tmp/pwned' })).toMatch(/^host must be a host name or an IP address/);
    expect(await refused({ host: 'root@127.0.0.1' })).toMatch(/^host must be/);
    expect(await refused({ host: '127.0.0.1 -p 22' })).toMatch(/^host must be/);
    expect(await refused({ user: 'root;touch x' })).toMatch(/^user must be a POSIX user name/);
    expect(await refused({ user: '-oProxyCommand=x' })).toMatch(/^user must be/);
    expect(await refused({ identity: 'relative/key' })).toBe('the SSH key path must be an absolute path (starting with /)');
    expect(await refused({ identity: '/tmp/a\u0000b' })).toBe('the SSH key path contains a NUL or another control character');
    expect(await refused({ numAgents: 0 })).toBe('number of agents must be 1 to 64');
    expect(await refused({ numAgents: 65 })).toBe('number of agents must be 1 to 64');
    expect(await refused({ installRoot: '~/kq' })).toBe('the install root must be an absolute path (starting with /)');
    expect(await refused({ dataRoot: '/data\nroot' })).toBe('the data root contains a NUL or another control character');
    expect(await refused({ sshPort: 70000 })).toMatch(/sshPort|65535/);
    expect(await refused({ proxyCommand: 'x' })).toMatch(/proxyCommand/); // unknown fields are refused, not ignored

    const state = await (await fetch(`${base()}/api/remote-agents`)).json() as { launches: unknown[] };
    expect(state.launches).toEqual([]);
    expect(connectionsSeen()).toBe(before); // no SSH login was even tried
    expect(fs.existsSync(agentsData)).toBe(false);
  });

  it('needs the token when kq requires one, even from the page\'s own Origin', async () => {
    const guarded = new Kq({ numAgents: 0, args: ['--http-token', 'a-token-of-24-characters'] });
    kqs.push(guarded);
    await guarded.start();
    const url = guarded.info.httpUrl!.replace(/\/$/, '');
    const headers = { origin: new URL(url).origin, 'content-type': 'application/json' };
    const body = JSON.stringify({ host: '127.0.0.1', sshPort: sshd.port, user: 'root', identity: sshd.clientKey, numAgents: 1, dataRoot: agentsData });
    const before = connectionsSeen();
    expect((await fetch(`${url}/api/remote-agents`, { method: 'POST', headers, body })).status).toBe(401);
    expect((await fetch(`${url}/api/remote-agents`, { method: 'POST', headers: { ...headers, authorization: 'Bearer not-the-token-at-all' }, body })).status).toBe(401);
    const list = await fetch(`${url}/api/remote-agents`, { headers: { authorization: 'Bearer a-token-of-24-characters' } });
    expect(((await list.json()) as { launches: unknown[] }).launches).toEqual([]);
    expect(connectionsSeen()).toBe(before);
    await guarded.stop();
  });

  it('launches by keyboard: kqctl\'s diagnosis for an unknown host key and a refused key, then agents that register', async () => {
    const { page, errors } = await openPage(browser, kq.info.httpUrl!);
    const dialog = page.locator('#remote-dialog');
    const diagnosis = page.locator('#remote-diagnosis');

    // "l" opens the dialog with the host field focused; Esc closes it; the button opens it again.
    await page.keyboard.press('l');
    await expect.poll(() => dialog.isVisible()).toBe(true);
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('remote-host');
    await page.keyboard.press('Escape');
    await expect.poll(() => dialog.isVisible()).toBe(false);
    await page.locator('#remote-open').focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => dialog.isVisible()).toBe(true);
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('remote-host');
    await expect.poll(() => page.inputValue('#remote-installRoot')).toBe(ROOT); // kq's own install, as kqctl's default
    expect(await page.inputValue('#remote-user')).toBe((await execa('id', ['-un'])).stdout);

    // kq's field checks, shown in the dialog.
    await page.keyboard.type('-oProxyCommand=x');
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('#remote-error').textContent()).toMatch(/^host must be a host name or an IP address/);
    await page.keyboard.press('Control+a');

    // Typed field by field with Tab, submitted with Enter: the host key is not in kq's known_hosts.
    await page.keyboard.type('127.0.0.1');
    await page.keyboard.press('Tab');
    await page.keyboard.type(String(sshd.port));
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    const wrongKey = path.join(tempDir('kq-wrong-key-'), 'id');
    keygen(wrongKey);
    await page.keyboard.type(sshd.clientKey);
    await page.keyboard.press('Tab');
    await page.keyboard.press('Control+a');
    await page.keyboard.type('2');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    await page.keyboard.type(agentsData);
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('#remote-status').textContent(), { timeout: 60_000 }).toMatch(/^Failed/);
    expect(await page.locator('#remote-status').textContent())
      .toBe('Failed (exit 4: SSH failed or was refused (unknown/changed host key, login refused), or a remote script failed).');
    // Exactly what kqctl prints for the same attempt.
    const cli = await kqctl(['remote', 'start', '--host', '127.0.0.1', '--ssh-port', String(sshd.port), '--identity', sshd.clientKey,
      '--data-root', agentsData, '--kq-data-root', kq.dataRoot, '--connect-timeout', '15s'], { HOME: home });
    expect(cli.exitCode).toBe(4);
    expect(cli.stderr).toContain('kqctl: ssh: the host key of [127.0.0.1]:');
    expect(cli.stderr).toContain('\n  it offers ssh-ed25519 SHA256:'); // its lines as lines, not as "\\n"
    expect((await diagnosis.textContent())!.trim()).toBe(cli.stderr.trim());
    await screenshot(page, 'remote-agents-diagnosis.png');
    expect(await page.locator('#remote-progress li').allTextContents())
      .toEqual(['checking that kq answers (request port ' + kq.info.requestPort + ')', `connecting to root@127.0.0.1:${sshd.port} over SSH`]);

    // Trusting the new host key, with a key the server does not accept: kqctl's auth diagnosis.
    await page.locator('#remote-acceptNewHostKey').check();
    await page.fill('#remote-identity', wrongKey);
    await page.locator('#remote-identity').press('Enter');
    await expect.poll(() => page.locator('#remote-status').textContent(), { timeout: 60_000 }).toMatch(/^Failed/);
    expect(await diagnosis.textContent()).toContain(`kqctl: ssh: root@127.0.0.1:${sshd.port} refused our SSH key (offered: ${wrongKey}).`);
    expect(fs.readFileSync(path.join(home, '.ssh', 'known_hosts'), 'utf8')).toContain(`[127.0.0.1]:${sshd.port} ssh-ed25519 `);

    // The right key: progress steps as they happen, then the agents in the Agents table.
    await page.fill('#remote-identity', sshd.clientKey);
    await page.locator('#remote-identity').press('Enter');
    await expect.poll(() => page.locator('#remote-status').textContent(), { timeout: 90_000 }).not.toMatch(/^Launching/);
    // On failure, kqctl's diagnosis is the message.
    expect(`${await page.locator('#remote-status').textContent()}\n${await diagnosis.textContent()}`).toMatch(/^Started 2 agent\(s\) on \S+: all registered with kq\.\n/);
    const steps = await page.locator('#remote-progress li').allTextContents();
    expect(steps.slice(0, 3)).toEqual([`checking that kq answers (request port ${kq.info.requestPort})`,
      `connecting to root@127.0.0.1:${sshd.port} over SSH`, expect.stringMatching(/^logged in to root@127\.0\.0\.1:\d+ \(host key ssh-ed25519 SHA256:/)]);
    expect(steps.filter((s) => /^started agent \d on \S+: pid \d+$/.test(s))).toHaveLength(2);
    expect(steps.filter((s) => /registered with kq$/.test(s))).toHaveLength(2);
    await screenshot(page, 'remote-agents-dialog.png');
    const remote = (await kq.agents()).filter((a: any) => !a.local && a.state !== 'offline');
    expect(remote).toHaveLength(2);
    await page.keyboard.press('Escape');
    await expect.poll(() => dialog.isVisible()).toBe(false);
    for (const a of remote) {
      await expect.poll(() => page.locator('.agents-table tbody tr', { hasText: a.id }).count(), { timeout: 20_000 }).toBe(1);
    }
    expect(errors).toEqual([]);
  });

  // Last: it stops the file's kq.
  it('ends a running launch\'s kqctl when kq stops', async () => {
    // A "machine" that accepts the TCP connection and never speaks SSH: kqctl waits in the handshake.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => { sockets.push(s); s.on('error', () => undefined); });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const r = await fetch(`${base()}/api/remote-agents`, {
        method: 'POST', headers: { origin: new URL(base()).origin, 'content-type': 'application/json' },
        body: JSON.stringify({ host: '127.0.0.1', sshPort: port, user: 'root', identity: sshd.clientKey, numAgents: 1, dataRoot: agentsData }),
      });
      expect(r.status).toBe(202);
      await waitFor('kqctl to dial the silent machine', () => sockets.length > 0, 30_000);
      const [pid] = processesMatching(`--request-port=${kq.info.requestPort}`);
      expect(pid).toBeDefined();
      expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(1, 4)).toEqual([path.join(ROOT, 'bin', 'kqctl.js'), 'remote', 'start']);
      expect(await kq.stop()).toBe(0);
      await waitFor('kqctl to end with kq', () => !isRunning(pid!), 5_000);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});
