/**
 * Quote values for shell command lines. shellQuote: a POSIX shell (sh -c here, or a line printed for the
 * user). loginShellCommand: the line sshd hands to the remote user's login shell (`$SHELL -c LINE`),
 * which may be sh, bash, zsh, fish or csh/tcsh. Every value becomes one word, taken literally.
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

/** A value no login shell can be given literally. */
export class UnquotableError extends Error {}

/** Plain in every login shell: no `%` (fish/csh job syntax), no leading `=` (zsh's =command). */
const LOGIN_SAFE = /^[A-Za-z0-9_\/.,:@+-][A-Za-z0-9_\/.,:=@+-]*$/;

/**
 * Quote for any login shell. Single quotes are literal in all of them except that fish reads \\ and \'
 * inside them (so `\'` would end the quoting there), csh/tcsh expand history (`!`) even there, even with
 * -c, and cannot hold a line break in them. So ', \ and ! go outside the single quotes, escaped (\', \\
 * and \! mean ', \ and ! in every one of these shells), and line breaks are refused.
 * `it's` → 'it'\''s'; `a\b` → 'a'\\'b'; `a!b` → 'a'\!'b'.
 */
export function loginShellQuote(value: string): string {
  if (value.includes('\0')) throw new UnquotableError('a value on the remote command line cannot contain a NUL byte');
  if (/[\n\r]/.test(value)) {
    throw new UnquotableError(`a value on the remote command line cannot contain a line break (csh and tcsh cannot quote one): ${JSON.stringify(value)}`);
  }
  if (LOGIN_SAFE.test(value)) return value;
  if (value === '') return "''";
  return value.split(/(['\\!])/).filter((p) => p !== '').map((p) => (p.length === 1 && "'\\!".includes(p) ? `\\${p}` : `'${p}'`)).join('');
}

/** The command line sshd gives the remote login shell: every element quoted by loginShellQuote. */
export function loginShellCommand(argv: readonly string[]): string {
  return argv.map(loginShellQuote).join(' ');
}
