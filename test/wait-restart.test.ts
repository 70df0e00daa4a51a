/**
 * `kqctl wait N && publish` must survive kq restarting: kq requeues the running task and carries on, so
 * wait keeps waiting (saying so on stderr) unless --unreachable-timeout says how long is too long.
 * Real kq stopped and started again on the same ports, real kqctl processes.
 */
import fs from 'node:fs';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { BIN, kqStarter, sleep, waitFor } from './helpers/kq.js';

const start = kqStarter(['--no-http']);

/** Has process `pid` an established TCP connection to `port` (its own sockets only, from /proc)? */
function connectedTo(pid: number, port: number): boolean {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch { /* closed meanwhile */ }
  }
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return ['tcp', 'tcp6'].some((f) => fs.readFileSync(`/proc/${pid}/net/${f}`, 'utf8').split('\n').slice(1).some((line) => {
    const cols = line.trim().split(/\s+/);
    return cols[2]?.endsWith(`:${hex}`) && cols[3] === '01' && inodes.has(cols[9] ?? '');
  }));
}

function waitProcess(dataRoot: string, ...args: string[]) {
  let stderr = '';
  const proc = execa('node', [BIN.kqctl, 'wait', '--data-root', dataRoot, '--connect-timeout', '2s', ...args], { reject: false, all: false, buffer: true });
  proc.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  return { proc, stderr: () => stderr };
}

describe('kqctl wait across a kq restart', () => {
  it('keeps waiting while kq is away and exits 0 when the requeued job completes', async () => {
    const kq = await start({ numAgents: 1 });
    const id = await kq.submit('--', 'sh', '-c', 'sleep 8');
    await waitFor('the job running', async () => (await kq.json('show', String(id))).state === 'Running', 30_000);
    const waiter = waitProcess(kq.dataRoot, String(id));
    await waitFor('wait to be connected to kq', () => connectedTo(waiter.proc.pid!, kq.info.requestPort));
    await sleep(1000); // its first answer is on its way: kq must answer at first
    expect(waiter.proc.exitCode).toBeNull();
    expect(await kq.stop()).toBe(0);
    await waitFor('wait to say kq is unreachable', () => waiter.stderr().includes('kq is unreachable; still waiting for it'), 60_000);
    expect(waiter.proc.exitCode).toBeNull();
    await kq.start();
    const r = await waiter.proc;
    expect(r.exitCode, waiter.stderr()).toBe(0);
    expect(waiter.stderr()).toMatch(/kq answers again/);
    expect((await kq.json('show', String(id))).state).toBe('Completed');
  });

  it('--unreachable-timeout bounds it: exit 3 once kq has been away that long', async () => {
    const kq = await start({ numAgents: 0 });
    const id = await kq.submit('--', 'true'); // no agent: it stays Waiting
    const waiter = waitProcess(kq.dataRoot, '--unreachable-timeout', '1s', String(id));
    await waitFor('wait to be connected to kq', () => connectedTo(waiter.proc.pid!, kq.info.requestPort));
    await sleep(1000);
    expect(await kq.stop()).toBe(0);
    const r = await waiter.proc;
    expect(r.exitCode).toBe(3);
    expect(waiter.stderr()).toMatch(/kq is unreachable; still waiting for it \(up to 1s, --unreachable-timeout\)/);
  });

  it('kq not there at the start is still exit 3 at once (a wrong address does not wait forever)', async () => {
    const kq = await start({ numAgents: 0 });
    const id = await kq.submit('--', 'true');
    await kq.stop();
    const r = await waitProcess(kq.dataRoot, String(id)).proc;
    expect(r.exitCode).toBe(3);
  });
});
