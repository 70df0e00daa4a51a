/**
 * Secrets kq keeps in its data root (the monitor token, its local agents' proof). One is reused only from a
 * file that is ours, private (no group/other access) and not a symlink; anything else — a file others could
 * read, or one planted there — is replaced by a fresh one (wx, 0600), never reused or written through.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';

export interface SecretKind {
  /** What the secret is, for errors: "the monitor token". */
  what: string;
  generate(): string;
  /** Does this stored text hold a usable secret? */
  valid(text: string): boolean;
}

export function privateSecret(file: string, kind: SecretKind): string {
  const existing = readPrivateSecret(file, kind);
  if (existing !== null) return existing;
  fs.rmSync(file, { force: true });
  const secret = kind.generate();
  fs.writeFileSync(file, secret + '\n', { mode: 0o600, flag: 'wx' });
  return secret;
}

function readPrivateSecret(file: string, kind: SecretKind): string | null {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO planted here would block open() (and kq's start) until a writer came.
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP') return null;
    throw new Error(`cannot read ${kind.what} ${file}: ${(err as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) return null;
    const text = fs.readFileSync(fd, 'utf8').trim();
    return kind.valid(text) ? text : null;
  } finally {
    fs.closeSync(fd);
  }
}

/** Compare a presented secret with ours in constant time, whatever their lengths. */
export function sameSecret(given: string, ours: string): boolean {
  const a = crypto.createHash('sha256').update(given).digest();
  const b = crypto.createHash('sha256').update(ours).digest();
  return crypto.timingSafeEqual(a, b);
}
