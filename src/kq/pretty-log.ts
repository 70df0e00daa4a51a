/**
 * kq's log as people read it on a terminal: `12:34:56.789 INFO  agent registered agent=host:12 host=host`.
 * The JSON lines still go to logs/kq.log; this is only the copy shown when kq's stdout is a terminal
 * (pino-pretty style, formatted here: no transport, no worker thread in the daemon).
 */
import { printable } from '../common/printable.js';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const COLOURS: Record<number, string> = { 10: '90', 20: '90', 30: '32', 40: '33', 50: '31', 60: '35' };
/** Fields every line carries, or that the line's head shows already. */
const HIDDEN = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'v']);

export function prettyLine(json: string, colour: boolean): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : json + '\n';
  }
  const level = typeof rec.level === 'number' ? rec.level : 30;
  const d = new Date(typeof rec.time === 'number' ? rec.time : Date.now());
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const time = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  const name = (LEVELS[level] ?? String(level)).padEnd(5);
  const head = colour ? `\x1b[${COLOURS[level] ?? '0'}m${name}\x1b[0m` : name;
  const fields = Object.entries(rec).filter(([k]) => !HIDDEN.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`);
  return `${time} ${head} ${printable([String(rec.msg ?? ''), ...fields].join(' '))}\n`;
}

/** pino's destination: every line to the log file, and a readable copy to a terminal. */
export class TeeToTerminal {
  constructor(private readonly file: { write(line: string): boolean; flush(cb?: (err?: Error) => void): void },
    private readonly terminal: NodeJS.WriteStream) {}

  write(line: string): boolean {
    this.file.write(line);
    try {
      this.terminal.write(prettyLine(line.trimEnd(), this.terminal.hasColors?.() ?? false));
    } catch { /* a closed terminal must not stop kq */ }
    return true;
  }

  flush(cb?: (err?: Error) => void): void {
    this.file.flush(cb);
  }
}
