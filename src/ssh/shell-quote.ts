/**
 * Quote values for a POSIX shell command line (what sshd hands to the remote user's shell).
 * Every value becomes one word, taken literally: nothing in it is expanded or executed.
 */

/** Characters that never need quoting in any POSIX shell word. */
const SAFE = /^[A-Za-z0-9_\/.,:=@%+-]+$/;

export function shellQuote(value: string): string {
  if (value.includes('\0')) throw new Error('a shell argument cannot contain a NUL byte');
  if (SAFE.test(value)) return value;
  // Inside single quotes nothing is special except the closing quote: end the quoting, add an escaped
  // quote, reopen. `it's` → 'it'\''s'.
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** One command line from argv: every element quoted. */
export function shellCommand(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}
