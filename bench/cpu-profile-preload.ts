/**
 * Preloaded with `NODE_OPTIONS=--import …/cpu-profile-preload.js` (Node 20 refuses --cpu-prof in NODE_OPTIONS):
 * profiles the whole process with the inspector and writes KQ_BENCH_PROFILE_DIR/<name>-<pid>.cpuprofile at exit.
 * kq passes its environment to the local agents it spawns, so one variable profiles the daemon and every agent.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Session } from 'node:inspector';

const dir = process.env.KQ_BENCH_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: Number(process.env.KQ_BENCH_PROFILE_INTERVAL_US ?? 200) });
  session.post('Profiler.start');
  const role = path.basename(process.argv[1] ?? 'node').replace(/\.js$/, '');
  let written = false;
  process.on('exit', () => {
    if (written) return;
    written = true;
    // An in-thread inspector session answers synchronously, so this completes inside the exit handler.
    session.post('Profiler.stop', (err, result) => {
      if (err || !result) return;
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, `${role === 'main' ? path.basename(path.dirname(process.argv[1]!)) : role}-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
