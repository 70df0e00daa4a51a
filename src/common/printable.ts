/**
 * Text from others (job names, commands, agent ids, host names, render output) shown on a terminal must
 * not act on it: a `\n` forges table rows, ESC sequences move the cursor, set the window title (OSC 0) or
 * write the clipboard (OSC 52), bidi overrides reorder what is seen. These helpers show such characters
 * as visible escapes instead (`\n`, `\x1b`, `\u202e`). `--json` output never goes through them.
 */

/** C0 controls, DEL, C1 controls (U+009B is a one-byte CSI), bidi embeddings/overrides/isolates, line/paragraph separators. */
const CONTROL = /[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  return NAMED[c] ?? (code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
}

/** One line of text with every control character shown as an escape. */
export function printable(text: string): string {
  return text.replace(CONTROL, escapeChar);
}

/** Like printable(), but line breaks stay line breaks (for kq's own multi-line messages). */
export function printableLines(text: string): string {
  return text.split('\n').map(printable).join('\n');
}

/** What a render log may do on a terminal: colours and styles (SGR), line breaks, tabs and `\r` redraws. */
const LOG_UNSAFE = /\x1b\[[0-9;:]*m|[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;
/** A chunk may end inside a colour sequence: keep such a tail for the next chunk. */
const OPEN_SGR = /\x1b(?:\[[0-9;:]{0,32})?$/;

/**
 * Render output for a terminal, in pieces as they arrive: colours, `\r` and tabs pass; every other escape
 * or control character (OSC titles and clipboard writes, cursor movement, screen clears) is shown, not obeyed.
 */
export class TerminalSafeText {
  private held = '';

  push(text: string): string {
    text = this.held + text;
    this.held = '';
    const open = OPEN_SGR.exec(text);
    if (open) {
      this.held = open[0];
      text = text.slice(0, open.index);
    }
    return text.replace(LOG_UNSAFE, (m) => (m.length > 1 ? m : escapeChar(m)));
  }

  /** What is still held back, shown escaped (the stream ended inside a sequence). */
  end(): string {
    const rest = printable(this.held);
    this.held = '';
    return rest;
  }
}
