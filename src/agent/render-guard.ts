/**
 * One small `sh` per agent that kills the agent's render process groups when the agent dies, however it
 * dies (kill -9 included). The agent tells it each group it starts (`+PGID`) and each group it has seen
 * gone (`-PGID`) over a pipe; when the agent goes, the kernel closes the pipe and the guard, reading end of
 * file, SIGKILLs every group still listed. `setpriv --pdeathsig` reached only a render's first process;
 * this reaches its whole group, and costs two pipe writes per task instead of an exec.
 */
import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';

/**
 * Ignores the signals a terminal or a stop sends to the agent (it must outlive the agent by a moment),
 * keeps a list of groups, and kills them at end of file. Builtins only: nothing forks per message.
 */
const SCRIPT = `trap '' INT TERM HUP QUIT
g=
while IFS= read -r l; do
  case $l in
    +*) g="$g \${l#+}" ;;
    -*) n=; for x in $g; do [ "$x" = "\${l#-}" ] || n="$n $x"; done; g=$n ;;
  esac
done
for x in $g; do kill -s KILL -- "-$x" 2>/dev/null; done
`;

const SH = ['/bin/sh', '/usr/bin/sh'].find((p) => fs.existsSync(p)) ?? null;
const RESPAWN_MS = 1000;

export class RenderGuard {
  private child: ChildProcess | null = null;
  private readonly groups = new Set<number>();
  private closed = false;
  private respawnTimer: NodeJS.Timeout | null = null;

  constructor(private readonly log: Logger) {}

  /** Start the guard; without a POSIX shell (Windows) renders are on their own, as the log says. */
  start(): void {
    if (this.closed) return;
    if (!SH || process.platform === 'win32') {
      this.log.warn('no /bin/sh: renders will not be killed if this agent dies without cleaning up');
      return;
    }
    let child: ChildProcess;
    try {
      // Its own process group: a signal to the agent's group (a terminal's Ctrl-C) does not reach it.
      child = spawn(SH, ['-c', SCRIPT], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'cannot start the render guard; retrying');
      this.respawnTimer = setTimeout(() => this.start(), RESPAWN_MS);
      return;
    }
    child.unref();
    child.stdin!.on('error', () => undefined); // the guard died: its exit handler restarts it
    child.on('error', (err) => this.log.error({ err: err.message }, 'render guard failed'));
    child.on('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = null;
      if (this.closed) return;
      this.log.error({ code, signal }, 'render guard ended; starting another');
      this.respawnTimer = setTimeout(() => this.start(), RESPAWN_MS);
    });
    this.child = child;
    for (const pgid of this.groups) this.write(`+${pgid}`);
  }

  /** A render group started: kill it if the agent dies. */
  watch(pgid: number): void {
    this.groups.add(pgid);
    this.write(`+${pgid}`);
  }

  /** The group is gone (seen empty): forget it, so a reused number is never killed. */
  forget(pgid: number): void {
    if (!this.groups.delete(pgid)) return;
    this.write(`-${pgid}`);
  }

  /** The agent stops: the guard exits at end of file, killing any group still listed (none after a clean stop). */
  close(): void {
    this.closed = true;
    if (this.respawnTimer) clearTimeout(this.respawnTimer);
    this.child?.stdin?.end();
  }

  private write(line: string): void {
    const stdin = this.child?.stdin;
    if (stdin && !stdin.destroyed) stdin.write(`${line}\n`);
  }
}
