/**
 * Is a directory safe to keep secrets in? Checked with lstat before kq writes a key, locally (Slurm agents'
 * shared directory) or over SFTP (remote agents' data root): another user who owns, can write to, or
 * redirects (symlink) such a directory can read or swap the agents' CURVE secret and run commands as kq.
 */

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** What lstat tells (fs.Stats and ssh2's SFTP Stats both fit). */
export interface DirStat {
  mode: number;
  uid: number;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
}

export class UnsafeDirError extends Error {}

const octal = (mode: number) => `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;

/**
 * Null if `st` is a real directory owned by `uid` and writable by its owner only; else why not, as one line.
 * `who` names the owner in messages ("the SSH user", "this user").
 */
export function privateDirProblem(dir: string, st: DirStat, uid: number, who: string): string | null {
  if (st.isSymbolicLink()) return `refusing ${dir}: a symbolic link (kq keeps secrets only in a real directory)`;
  if (!st.isDirectory()) return `refusing ${dir}: not a directory`;
  if (st.uid !== uid) return `refusing ${dir}: owned by uid ${st.uid}, not by ${who} (uid ${uid})`;
  if (st.mode & 0o022) return `refusing ${dir}: mode ${octal(st.mode)}, writable by others`;
  return null;
}

/**
 * Null if an ancestor of a secret directory cannot be used by another user to swap what lies below: owned by
 * root or `uid`, and writable by nobody else unless sticky (like /tmp, where only an entry's owner renames it).
 */
export function ancestorDirProblem(dir: string, st: DirStat, uid: number, who: string): string | null {
  if (st.isSymbolicLink() || !st.isDirectory()) return `refusing ${dir}: not a directory`;
  if (st.uid !== 0 && st.uid !== uid) return `refusing ${dir}: owned by uid ${st.uid}, not by root or ${who} (uid ${uid})`;
  if (st.mode & 0o022 && !(st.mode & 0o1000)) return `refusing ${dir}: mode ${octal(st.mode)}, writable by others and not sticky`;
  return null;
}

/** The file system calls the walk needs: local (node:fs) or over SFTP. lstat resolves null if nothing is there. */
export interface DirOps {
  lstat(p: string): Promise<DirStat | null>;
  /** May fail if something is there already: the walk looks again. */
  mkdir(p: string, mode: number): Promise<void>;
  realpath(p: string): Promise<string>;
  chmod(p: string, mode: number): Promise<void>;
}

/**
 * Walk absolute `abs` from `/`, making what is missing (0755; the last component 0700): the last
 * `privateDepth` components must be private to `uid` (privateDirProblem, the last one then mode 0700), the
 * ones above them safe ancestors. A symlink above (e.g. /home → /data/home) is followed if root or `uid`
 * owns it, and its target checked the same way. Returns the directory to write into; else UnsafeDirError.
 */
export async function ensurePrivateDir(ops: DirOps, abs: string, uid: number, who: string, privateDepth: number): Promise<string> {
  const parts = abs.split('/').filter((p) => p !== '' && p !== '.');
  if (!abs.startsWith('/') || parts.includes('..')) throw new UnsafeDirError(`refusing ${abs}: not an absolute path without ".."`);
  let cur = '/';
  refuse(ancestorDirProblem(cur, (await ops.lstat(cur))!, uid, who));
  for (const [i, part] of parts.entries()) {
    const isPrivate = i >= parts.length - privateDepth;
    const isLast = i === parts.length - 1;
    const next = cur === '/' ? `/${part}` : `${cur}/${part}`;
    let st = await ops.lstat(next);
    if (!st) {
      try {
        await ops.mkdir(next, isLast ? 0o700 : 0o755);
      } catch (err) {
        if (!(await ops.lstat(next))) throw new Error(`cannot create ${next}: ${(err as Error).message}`);
      }
      st = await ops.lstat(next);
      if (!st) throw new Error(`cannot create ${next}: it vanished`);
    }
    if (!isPrivate && st.isSymbolicLink()) {
      if (st.uid !== 0 && st.uid !== uid) refuse(`refusing ${next}: a symbolic link owned by uid ${st.uid}, not by root or ${who} (uid ${uid})`);
      cur = await ensurePrivateDir(ops, await ops.realpath(next), uid, who, 0);
      continue;
    }
    refuse(isPrivate ? privateDirProblem(next, st, uid, who) : ancestorDirProblem(next, st, uid, who));
    // Ours and writable by us alone; the secrets' own directory must not even be readable by others.
    if (isLast && isPrivate && (st.mode & 0o077)) await ops.chmod(next, 0o700);
    cur = next;
  }
  return cur;
}

function refuse(problem: string | null): void {
  if (problem) throw new UnsafeDirError(`${problem}; ${PRIVATE_DIR_HINT}`);
}

/** node:fs as DirOps, for this machine. */
export const localDirOps: DirOps = {
  lstat: async (p) => {
    try {
      return fs.lstatSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  },
  mkdir: async (p, mode) => void fs.mkdirSync(p, { mode }),
  realpath: async (p) => fs.realpathSync(p),
  chmod: async (p, mode) => fs.chmodSync(p, mode),
};

/**
 * `dir/name` ← data on this machine: a temp name created exclusively with `mode`, renamed over `name`, so
 * nothing planted at `name` is written through and readers never see half a file.
 */
export function writeFileAtomic(dir: string, name: string, data: Buffer | string, mode: number): void {
  const tmp = path.join(dir, `.${name}.${crypto.randomBytes(6).toString('hex')}.tmp`);
  try {
    fs.writeFileSync(tmp, data, { mode, flag: 'wx' });
    fs.chmodSync(tmp, mode); // the umask may have narrowed it; never widened
    fs.renameSync(tmp, path.join(dir, name));
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** The advice appended to a refusal. */
export const PRIVATE_DIR_HINT = "kq keeps the agents' secret key there: use a directory only that user can write (e.g. ~/.local/share/kq-agents)";
