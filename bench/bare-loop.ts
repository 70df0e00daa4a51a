/**
 * The floor for any agent written in Node: spawn `true` N times, P at a time, with nothing else.
 * `node dist/bench/bare-loop.js N P` prints the milliseconds from the first spawn to the last exit, and the
 * CPU milliseconds the Node process used (start-up included, children excluded).
 */
import { spawn } from 'node:child_process';

const total = Number(process.argv[2] ?? 1000);
const parallel = Number(process.argv[3] ?? 2);
const command = process.argv[4] ?? 'true';
let started = 0;
let finished = 0;
const t0 = process.hrtime.bigint();

function next(): void {
  if (started >= total) return;
  started++;
  const child = spawn(command, [], { stdio: 'ignore' });
  child.on('exit', () => {
    if (++finished === total) {
      const cpu = process.cpuUsage();
      process.stdout.write(`${Number(process.hrtime.bigint() - t0) / 1e6} ${(cpu.user + cpu.system) / 1000}\n`);
    }
    else next();
  });
}

for (let i = 0; i < parallel; i++) next();
