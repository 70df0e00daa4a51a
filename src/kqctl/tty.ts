/**
 * Whether kqctl may dress its output up (colours, progress bars, a live table): only on a terminal, and
 * never with NO_COLOR set (https://no-color.org) or TERM=dumb. Otherwise the output is exactly what
 * scripts have always read.
 */
export function fancy(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && !env.NO_COLOR && env.TERM !== 'dumb';
}

/** A notice on stderr when the whole queue is paused (list and agents show it; stdout stays as scripts know it). */
export function queuePausedNotice(ping: { queuePaused?: boolean }): void {
  if (ping.queuePaused) process.stderr.write('kqctl: the queue is paused: no new tasks start, running renders go on (kqctl resume releases it)\n');
}
