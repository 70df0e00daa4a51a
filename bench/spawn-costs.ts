/**
 * Diagnostic: what one render costs an agent written in Node, by way of spawning it.
 * `node dist/bench/spawn-costs.js [N] [reps]` runs N `true`s two at a time per variant (interleaved reps) and
 * prints wall time per task and the CPU the Node process itself spent per task (children excluded).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { execa } from 'execa';
import { pino } from 'pino';
import { median } from './stats.js';
import { terminateGroup } from '../src/common/processes.js';
import { RenderGuard } from '../src/agent/render-guard.js';

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));
type Variant = { name: string; one: () => Promise<void> };

const exitOf = (c: ReturnType<typeof spawn>, event: 'exit' | 'close') => new Promise<void>((r) => c.on(event, () => r()));

// The agent's render guard (one sh per agent), told each group: what the agent pays per task besides the spawn.
const guard = new RenderGuard(pino({ level: 'silent' }));
guard.start();

const variants: Variant[] = [
  { name: "spawn('true', stdio ignore)", one: () => exitOf(spawn('true', [], { stdio: 'ignore' }), 'exit') },
  { name: 'spawn true, 2 pipes, detached', one: () => {
    const c = spawn('true', [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    c.stdout!.resume(); c.stderr!.resume();
    return exitOf(c, 'close');
  } },
  { name: 'as the agent does now: + guard told, group ended (kill -pgid 0), guard told', one: async () => {
    const c = spawn('true', [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    guard.watch(c.pid!);
    c.stdout!.resume(); c.stderr!.resume();
    await exitOf(c, 'exit');
    await terminateGroup(c.pid!, 5000);
    guard.forget(c.pid!);
    if (!c.stdout!.readableEnded) await exitOf(c, 'close');
  } },
  ...(SETPRIV ? [{ name: 'spawn setpriv --pdeathsig KILL -- true, 2 pipes, detached', one: () => {
    const c = spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', 'true'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    c.stdout!.resume(); c.stderr!.resume();
    return exitOf(c, 'close');
  } }] : []),
  { name: 'execa true as the agent does (all, iterable lines), no setpriv', one: async () => {
    const c = execa('true', [], { detached: true, stdin: 'ignore', all: true, buffer: false, reject: false, cleanup: false, stripFinalNewline: false });
    for await (const _line of c.iterable({ from: 'all' })) { /* lines */ }
    await c;
  } },
  ...(SETPRIV ? [{ name: 'execa setpriv … true exactly as the agent does', one: async () => {
    const c = execa(SETPRIV, ['--pdeathsig', 'KILL', '--', 'true'], { detached: true, stdin: 'ignore', all: true, buffer: false, reject: false, cleanup: false, stripFinalNewline: false });
    for await (const _line of c.iterable({ from: 'all' })) { /* lines */ }
    await c;
  } }] : []),
];

async function measure(v: Variant, n: number): Promise<{ wallMs: number; cpuMs: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let next = 0;
  const worker = async () => { while (next++ < n) await v.one(); };
  await Promise.all([worker(), worker()]);
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { wallMs: wall / n, cpuMs: (cpu.user + cpu.system) / 1000 / n };
}

const n = Number(process.argv[2] ?? 300);
const reps = Number(process.argv[3] ?? 3);
const results = new Map(variants.map((v) => [v.name, { wall: [] as number[], cpu: [] as number[] }]));
for (let r = 0; r < reps; r++) {
  for (const v of variants) {
    const m = await measure(v, n);
    results.get(v.name)!.wall.push(m.wallMs);
    results.get(v.name)!.cpu.push(m.cpuMs);
  }
}
const base = median(results.get(variants[0]!.name)!.wall);
console.log(`${n} × true, 2 at a time, ${reps} interleaved reps (median per task):`);
for (const [name, r] of results) {
  console.log(`  ${median(r.wall).toFixed(2).padStart(7)} ms wall (${(median(r.wall) / base).toFixed(2)}×)  ${median(r.cpu).toFixed(2).padStart(6)} ms node CPU   ${name}`);
}
guard.close();
