/**
 * Queue control on the monitor page (issue 17 #6) in real Chromium against a real kq: the Submit form with
 * kqctl's checks and messages, Pause/Resume of the queue and of a job, Remove of an ended job; and the API
 * guard keeping other sites from using these routes.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, tempDir, waitFor } from './helpers/kq.js';
import { launchBrowser, openPage } from './helpers/browser.js';

const kqs: Kq[] = [];
let browser: BrowserContext;
beforeAll(async () => { browser = await launchBrowser(); });
afterAll(async () => {
  await browser?.close();
  await cleanupAll(kqs);
});

const badgeOf = (page: Page, id: number) => page.evaluate((jobId) => document.querySelector(`.row[data-id="${jobId}"] .badge`)?.textContent ?? null, id);
const action = (page: Page, name: RegExp) => page.locator('#detail .actions button', { hasText: name });

describe('queue control on the page', () => {
  it('submits through the form (kqctl\'s checks), pauses and resumes the queue and a job, removes an ended job', async () => {
    const kq = new Kq({ numAgents: 1, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    await kq.start();
    const { page, errors } = await openPage(browser, kq.info.httpUrl!);
    const dir = tempDir();

    // The whole queue: paused from the page, as kqctl sees it too.
    await page.locator('#queue-toggle').click();
    await expect.poll(() => page.locator('#queue-state').isVisible()).toBe(true);
    expect(await page.locator('#queue-toggle').textContent()).toBe('Resume queue');
    expect((await kq.ctl('list')).stderr).toContain('the queue is paused');

    // The Submit form, by keyboard: n opens it, the command field has focus.
    await page.keyboard.press('n');
    await expect.poll(() => page.locator('#submit-dialog').isVisible()).toBe(true);
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('submit-command');
    const error = page.locator('#submit-dialog .form-error');
    await page.keyboard.press('Enter');
    await expect.poll(() => error.textContent()).toBe('empty command: give the program to run after --');
    await page.keyboard.type("sh -c 'echo made > made.txt'");
    await page.fill('#submit-chunk', 'x');
    await page.keyboard.press('Enter');
    await expect.poll(() => error.textContent()).toContain('expected a whole number from 1 to 1000000, got "x"');
    await page.fill('#submit-chunk', '');
    await page.fill('#submit-after', '999');
    await page.locator('#submit-ok').click();
    await expect.poll(() => error.textContent()).toBe('--after 999: no job with id 999'); // kq's own message, as kqctl prints it
    await page.fill('#submit-after', '');
    await page.fill('#submit-frames', '1-x');
    await page.locator('#submit-ok').click();
    const frameError = (await kq.ctl('submit', '--frames', '1-x', '--', 'true')).stderr.replace(/^kqctl: /, '').trim();
    await expect.poll(() => error.textContent()).toBe(frameError);
    await page.fill('#submit-frames', '');
    await page.fill('#submit-cwd', dir);
    await page.fill('#submit-name', 'from-the-page');
    expect((await kq.json('list')).length).toBe(0); // nothing queued by the refused attempts
    await page.locator('#submit-ok').click();
    await expect.poll(() => page.locator('#submit-dialog').isVisible()).toBe(false);
    const [job] = await waitFor('the job queued', async () => { const l = await kq.json('list'); return l.length === 1 ? l : null; });
    expect(job).toMatchObject({ name: 'from-the-page', state: 'Waiting' });
    expect((await kq.json('show', String(job.id))).argv).toEqual(['sh', '-c', 'echo made > made.txt']);
    await expect.poll(() => badgeOf(page, job.id)).toBe('Waiting');

    await page.locator('#queue-toggle').click();
    await expect.poll(() => page.locator('#queue-state').isVisible()).toBe(false);
    await expect.poll(() => badgeOf(page, job.id), { timeout: 30_000 }).toBe('Completed');

    // A running job paused and resumed from its detail panel.
    const gated = await kq.submit('--frames', '1-2', '--cwd', dir, '--', 'sh', '-c', 'while [ ! -f go ]; do sleep 0.05; done');
    await expect.poll(() => badgeOf(page, gated), { timeout: 30_000 }).toBe('Running');
    await page.locator(`.row[data-id="${gated}"]`).click();
    await action(page, /^Pause$/).click();
    await expect.poll(() => badgeOf(page, gated)).toBe('Running · paused');
    expect((await kq.json('show', String(gated))).paused).toBe(true);
    fs.writeFileSync(path.join(dir, 'go'), '');
    await expect.poll(() => badgeOf(page, gated), { timeout: 30_000 }).toBe('Waiting · paused');
    expect(await action(page, /^Remove$/).isDisabled()).toBe(true); // not ended
    await action(page, /^Resume$/).click();
    await expect.poll(() => badgeOf(page, gated), { timeout: 30_000 }).toBe('Completed');

    // Remove the page's job: its row and log go, its output stays.
    await page.locator(`.row[data-id="${job.id}"]`).click();
    await action(page, /^Remove$/).click();
    await page.locator('#confirm-ok').click();
    await expect.poll(() => page.locator(`.row[data-id="${job.id}"]`).count()).toBe(0);
    expect((await kq.ctl('show', String(job.id))).exitCode).toBe(2);
    expect(fs.existsSync(path.join(kq.dataRoot, 'logs', `job-${job.id}.log`))).toBe(false);
    expect(fs.readFileSync(path.join(dir, 'made.txt'), 'utf8')).toBe('made\n');
    expect(errors).toEqual([]);
  });

  it('another site cannot pause, resume or remove (Origin checked like POST /api/jobs)', async () => {
    const kq = new Kq({ numAgents: 0 });
    kqs.push(kq);
    await kq.start();
    const base = kq.info.httpUrl!.replace(/\/$/, '');
    const evil = { origin: 'http://evil.example', 'content-type': 'application/json' };
    expect((await fetch(`${base}/api/pause`, { method: 'POST', headers: evil, body: '{}' })).status).toBe(403);
    const id = await kq.submit('--', 'true');
    expect((await fetch(`${base}/api/jobs/${id}`, { method: 'DELETE', headers: evil })).status).toBe(403);
    expect((await fetch(`${base}/api/clean`, { method: 'POST', headers: evil, body: '{}' })).status).toBe(403);
    expect((await (await fetch(`${base}/api/queue`)).json()).paused).toBe(false);
    expect((await kq.json('list')).map((j: any) => j.id)).toEqual([id]);
    // The page's own origin may.
    const own = { origin: new URL(base).origin, 'content-type': 'application/json' };
    expect((await fetch(`${base}/api/pause`, { method: 'POST', headers: own, body: '{}' })).status).toBe(200);
    expect((await (await fetch(`${base}/api/queue`)).json()).paused).toBe(true);
  });
});
