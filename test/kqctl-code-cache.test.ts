/**
 * bin/kqctl.cjs compiles the bundle with a V8 code cache kept next to it (dist/kqctl.cjs.cache). Whatever is
 * in that file, kqctl must behave the same: a missing, damaged, foreign or unwritable cache is ignored (and
 * replaced where it can be). Each case runs a copy of bin/ and dist/kqctl.cjs in a temp dir, never the
 * checkout's own cache (other test files run kqctl at the same time).
 */
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT, tempDir } from './helpers/kq.js';

function install(): { bin: string; cache: string } {
  const dir = tempDir('kq-cache-');
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.mkdirSync(path.join(dir, 'dist'));
  fs.copyFileSync(path.join(ROOT, 'bin', 'kqctl.cjs'), path.join(dir, 'bin', 'kqctl.cjs'));
  fs.copyFileSync(path.join(ROOT, 'dist', 'kqctl.cjs'), path.join(dir, 'dist', 'kqctl.cjs'));
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json')); // kqctl finds its install by it
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return { bin: path.join(dir, 'bin', 'kqctl.cjs'), cache: path.join(dir, 'dist', 'kqctl.cjs.cache') };
}

const kqctl = (bin: string, ...args: string[]) => execa(process.execPath, [bin, ...args], { reject: false, timeout: 60_000 });

let expected = '';
beforeAll(async () => {
  const r = await kqctl(path.join(ROOT, 'bin', 'kqctl.cjs'), 'submit', '--help');
  expect(r.exitCode).toBe(0);
  expected = r.stdout;
}, 60_000);

/** The header line, and the payload after it. */
function readCache(file: string): { header: string; payload: Buffer } {
  const raw = fs.readFileSync(file);
  const nl = raw.indexOf(10);
  return { header: raw.toString('latin1', 0, nl), payload: raw.subarray(nl + 1) };
}

describe('kqctl code cache', () => {
  it('is written on the first run, then used as is', async () => {
    const { bin, cache } = install();
    const first = await kqctl(bin, 'submit', '--help');
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stdout).toBe(expected);
    const { header, payload } = readCache(cache);
    expect(header).toMatch(new RegExp(`^kqctl-cache/1 ${process.version} ${process.arch} \\S+ \\d+ [\\d.]+ ${payload.length}$`));
    const inode = fs.statSync(cache).ino;
    const second = await kqctl(bin, 'submit', '--help');
    expect(second.stdout).toBe(expected);
    expect(fs.statSync(cache).ino, 'an accepted cache is not rewritten').toBe(inode);
  }, 60_000);

  const damage: Array<[string, (file: string) => void]> = [
    ['a flipped byte in the payload', (f) => {
      const raw = fs.readFileSync(f);
      raw[raw.length - Math.floor((raw.length - raw.indexOf(10)) / 2)] ^= 0x5a;
      fs.writeFileSync(f, raw);
    }],
    ['a truncated file', (f) => fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 5000))],
    ['garbage', (f) => fs.writeFileSync(f, Buffer.alloc(200_000, 0x41))],
    ['the header of another Node', (f) => {
      const { header, payload } = readCache(f);
      fs.writeFileSync(f, Buffer.concat([Buffer.from(header.replace(process.version, 'v99.0.0') + '\n'), payload]));
    }],
    ['a cache of another bundle (same header, other source)', (f) => {
      const { header, payload } = readCache(f);
      const bundle = path.join(path.dirname(f), 'kqctl.cjs');
      fs.appendFileSync(bundle, '\n// changed\n');
      const st = fs.statSync(bundle);
      const parts = header.split(' ');
      parts[4] = String(st.size);
      parts[5] = String(st.mtimeMs);
      fs.writeFileSync(f, Buffer.concat([Buffer.from(parts.join(' ') + '\n'), payload]));
    }],
  ];
  for (const [what, spoil] of damage) {
    it(`ignores ${what}, and replaces it`, async () => {
      const { bin, cache } = install();
      expect((await kqctl(bin, '--help')).exitCode).toBe(0);
      spoil(cache);
      const inode = fs.statSync(cache).ino;
      const r = await kqctl(bin, 'submit', '--help');
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(expected);
      expect(fs.statSync(cache).ino, 'rewritten').not.toBe(inode);
      const again = await kqctl(bin, 'submit', '--help');
      expect(again.stdout).toBe(expected);
    }, 60_000);
  }

  it('runs without one where it cannot be written, leaving no temp files', async () => {
    const { bin, cache } = install();
    fs.mkdirSync(cache); // neither readable as a file nor replaceable by a rename (tests run as root: chmod would not stop it)
    for (let i = 0; i < 2; i++) {
      const r = await kqctl(bin, 'submit', '--help');
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toBe(expected);
    }
    expect(fs.readdirSync(path.dirname(cache)).sort()).toEqual(['kqctl.cjs', 'kqctl.cjs.cache']);
  }, 60_000);

  it('never writes through a file planted where its temp file goes (a symlink to another file stays untouched)', async () => {
    const { bin, cache } = install();
    const victim = path.join(tempDir(), 'victim');
    fs.writeFileSync(victim, 'precious\n');
    // The planting runs first in kqctl's own process (its pid names the temp file), as another process would.
    const plant = path.join(tempDir(), 'plant.cjs');
    fs.writeFileSync(plant, `require('node:fs').symlinkSync(${JSON.stringify(victim)}, ${JSON.stringify(cache)} + '.' + process.pid + '.tmp');\n`);
    const r = await execa(process.execPath, ['--require', plant, bin, 'submit', '--help'], { reject: false, timeout: 60_000 });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe(expected);
    expect(fs.readFileSync(victim, 'utf8')).toBe('precious\n');
  }, 60_000);
});
