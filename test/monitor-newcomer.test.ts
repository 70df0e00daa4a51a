/**
 * Issue 13 #5 and the page's part of #3, in real Chromium against a real kq: a failed task explains
 * itself (exit code, stderr tail), the render log gets room and wraps long lines, every frame's
 * thumbnail is reachable, and a kq outage is unmistakable (a banner; agents unknown, not busy).
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, tempDir } from './helpers/kq.js';
import { launchBrowser, openPage, screenshot } from './helpers/browser.js';

const kqs: Kq[] = [];
let browser: BrowserContext;
beforeAll(async () => { browser = await launchBrowser(); });
afterAll(async () => {
  await browser?.close();
  await cleanupAll(kqs);
});

/** A small solid-colour RGB PNG. */
function png(width: number, height: number, rgb: [number, number, number]): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf: Buffer) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc(body), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 2;
  const row = Buffer.concat([Buffer.from([0]), Buffer.from(Array.from({ length: width }, () => rgb).flat())]);
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

const open = async (kq: Kq, jobId: number) => {
  const { page, errors } = await openPage(browser, `${kq.info.httpUrl!}#job=${jobId}`);
  await expect.poll(() => page.locator('#detail .job-title').textContent()).toBe(`#${jobId} ${(await kq.json('show', String(jobId))).name}`);
  return { page, errors };
};

/** Every thumbnail's frame label, paging through all of them with the Earlier/Later buttons. */
async function allThumbFrames(page: Page): Promise<number[]> {
  const seen = new Set<number>();
  const collect = async () => {
    for (const t of await page.locator('#detail .thumb span').allTextContents()) seen.add(Number(t));
  };
  await collect();
  const earlier = page.locator('#detail .thumbs-nav button', { hasText: 'Earlier' });
  while ((await earlier.count()) > 0 && (await earlier.isEnabled())) {
    await earlier.click();
    await collect();
  }
  return [...seen].sort((a, b) => a - b);
}

describe('monitor page for a newcomer', () => {
  it('a failed task shows its exit code and stderr tail; the log pane expands and wraps; every thumbnail is reachable', async () => {
    const kq = await Kq.start({ numAgents: 2 });
    kqs.push(kq);
    const dir = tempDir('kq-thumbs-');
    fs.writeFileSync(path.join(dir, 'seed.png'), png(32, 24, [200, 80, 40]));
    const words = Array.from({ length: 150 }, (_, i) => `word${i}`).join(' ');
    const id = await kq.submit('--name', 'thirty', '--frames', '1-30', '--cwd', dir, '--output', 'f_{frame:03}.png', '--',
      'sh', '-c', `cp seed.png f_{frame:03}.png; echo "${words}"`);
    expect((await kq.waitJob(id)).state).toBe('Completed');

    const { page, errors } = await open(kq, id);
    await expect.poll(() => page.locator('#detail .thumbs-head').textContent(), { timeout: 20_000 }).toMatch(/30 of 30 finished/);
    expect(await allThumbFrames(page)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    // The images load (scrolled into view: they load lazily).
    for (const img of await page.locator('#detail .thumb img').all()) {
      await img.scrollIntoViewIfNeeded();
      await expect.poll(() => img.evaluate((i: HTMLImageElement) => i.complete && i.naturalWidth), { timeout: 20_000 }).toBe(32);
    }
    await screenshot(page, 'newcomer-thumbs.png');

    // A long line wraps: the log body never scrolls sideways.
    await expect.poll(() => page.locator('#detail .log-body .line', { hasText: 'word149' }).count(), { timeout: 20_000 }).toBeGreaterThan(0);
    const overflow = await page.locator('#detail .log-body').evaluate((b) => b.scrollWidth - b.clientWidth);
    expect(overflow).toBeLessThanOrEqual(1);
    const line = page.locator('#detail .log-body .line', { hasText: 'word149' }).first();
    expect((await line.boundingBox())!.height).toBeGreaterThan(30); // several rows of text

    // The log gets the whole panel, and gives it back.
    const before = (await page.locator('#detail .log-body').boundingBox())!.height;
    await page.locator('#detail .log-head button', { hasText: 'Expand' }).click();
    const expanded = (await page.locator('#detail .log-body').boundingBox())!.height;
    expect(expanded).toBeGreaterThan(600);
    expect(expanded).toBeGreaterThan(before);
    await screenshot(page, 'newcomer-log-expanded.png');
    await page.locator('#detail .log-head button', { hasText: 'Collapse' }).click();
    await expect.poll(async () => (await page.locator('#detail .log-body').boundingBox())!.height).toBeLessThan(expanded);

    // A failed task explains itself.
    const failed = await kq.submit('--name', 'broken', '--retries', '0', '--', 'sh', '-c', 'echo "Parse Error: no camera in scene.pov" >&2; exit 3');
    await kq.waitJob(failed);
    await page.evaluate((jobId) => { location.hash = `#job=${jobId}`; }, failed);
    const failures = page.locator('#detail .failures');
    await expect.poll(() => failures.textContent(), { timeout: 20_000 }).toMatch(/Task 1 failed: exit code 3/);
    expect(await failures.textContent()).toContain('Parse Error: no camera in scene.pov');
    await screenshot(page, 'newcomer-failure.png');

    // A job without frames: one task, no 0/0.
    expect(await page.locator('#detail .progress .label').textContent()).not.toContain('0/0');
    expect(errors).toEqual([]);
  });

  it('a kq outage shows a banner and agents as unknown; both clear when kq is back', async () => {
    const kq = await Kq.start({ numAgents: 1 });
    kqs.push(kq);
    const dir = tempDir();
    const id = await kq.submit('--cwd', dir, '--', 'sh', '-c', 'while [ ! -e stop ]; do sleep 0.2; done');
    const { page, errors } = await open(kq, id);
    await expect.poll(() => page.locator('.agents-table tbody').textContent(), { timeout: 20_000 }).toMatch(/busy/);
    await kq.stop();
    const banner = page.locator('#banner');
    await expect.poll(() => banner.isVisible(), { timeout: 20_000 }).toBe(true);
    expect(await banner.textContent()).toMatch(/kq is not answering/);
    await expect.poll(() => page.locator('.agents-table tbody').textContent()).toMatch(/unknown/);
    expect(await page.locator('.agents-table tbody').textContent()).not.toMatch(/busy|idle/);
    await screenshot(page, 'newcomer-outage.png');
    await kq.start();
    await expect.poll(() => banner.isVisible(), { timeout: 30_000 }).toBe(false);
    await expect.poll(() => page.locator('.agents-table tbody').textContent(), { timeout: 30_000 }).not.toMatch(/unknown/);
    fs.writeFileSync(path.join(dir, 'stop'), '');
    await kq.waitJob(id);
    expect(errors).toEqual([]);
  });
});
