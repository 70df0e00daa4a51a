/**
 * Copy small files to the remote machine over SFTP. Every file goes to a fresh temp name (created
 * exclusively, with its final mode) and is renamed over the final name, so a file someone else planted
 * there is replaced, never written through. Secrets go only into directories checked private first.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { SFTPWrapper, Stats } from 'ssh2';
import { ensurePrivateDir, type DirOps } from '../common/private-dir.js';
import type { SshConnection } from './connect.js';

export interface Upload {
  local: string;
  /** Absolute, or relative to the remote user's home (where the SFTP server starts). */
  remote: string;
  mode: number;
}

/** Copy files, creating their directories (0755) as needed. For files anyone may read (scripts). */
export async function uploadFiles(conn: SshConnection, uploads: Upload[]): Promise<void> {
  const sftp = await conn.sftp();
  try {
    for (const u of uploads) {
      await mkdirp(sftp, path.posix.dirname(u.remote));
      await putAtomic(sftp, path.posix.dirname(u.remote), path.posix.basename(u.remote), fs.readFileSync(u.local), u.mode);
    }
  } finally {
    sftp.end();
  }
}

export interface PrivateFile { name: string; data: Buffer; mode: number }

/**
 * Write files into `root/sub` (home-relative or absolute) for remote user `uid`, when they hold secrets:
 * each directory above `root` is owned by root or `uid` and writable by no one else unless sticky; `root`
 * and `sub` are real directories (not symlinks) owned by `uid`, writable by it alone, `sub` mode 0700.
 * Missing ones are made (`root` 0755, `sub` 0700). Anything else: UnsafeDirError, nothing written.
 */
export async function uploadPrivate(conn: SshConnection, uid: number, root: string, sub: string, files: PrivateFile[]): Promise<void> {
  const sftp = await conn.sftp();
  try {
    const absRoot = root.startsWith('/') ? root : path.posix.join(await realpath(sftp, '.'), root);
    const dir = await ensurePrivateDir(sftpDirOps(sftp), path.posix.join(absRoot, sub), uid, 'the SSH user', 2);
    for (const f of files) await putAtomic(sftp, dir, f.name, f.data, f.mode);
  } finally {
    sftp.end();
  }
}

/** `dir/name` ← data: written to a temp name opened exclusively (mode `mode`), then renamed over `name`. */
async function putAtomic(sftp: SFTPWrapper, dir: string, name: string, data: Buffer, mode: number): Promise<void> {
  const final = path.posix.join(dir, name);
  const tmp = path.posix.join(dir, `.${name}.${crypto.randomBytes(6).toString('hex')}.tmp`);
  const fail = (what: string) => (err: Error) => new Error(`cannot ${what} ${final} over SFTP: ${err.message}`);
  const handle = await call<Buffer>((cb) => sftp.open(tmp, 'wx', { mode }, cb)).catch((e) => { throw fail('create a temp file for')(e); });
  try {
    try {
      await call((cb) => sftp.write(handle, data, 0, data.length, 0, cb));
      await call((cb) => sftp.fchmod(handle, mode, cb)); // the server may apply its umask on create
    } finally {
      await call((cb) => sftp.close(handle, cb)).catch(() => undefined);
    }
    await rename(sftp, tmp, final);
  } catch (err) {
    await call((cb) => sftp.unlink(tmp, cb)).catch(() => undefined);
    throw fail('write')(err as Error);
  }
}

/** Replace `to` atomically where the server can (OpenSSH's posix-rename); plain SFTP rename refuses an existing target. */
async function rename(sftp: SFTPWrapper, from: string, to: string): Promise<void> {
  try {
    await call((cb) => sftp.ext_openssh_rename(from, to, cb));
    return;
  } catch (err) {
    if (!/does not support/.test((err as Error).message)) throw err;
  }
  await call((cb) => sftp.unlink(to, cb)).catch(() => undefined);
  await call((cb) => sftp.rename(from, to, cb));
}

async function mkdirp(sftp: SFTPWrapper, dir: string): Promise<void> {
  if (dir === '.' || dir === '/' || dir === '') return;
  if ((await stat(sftp, dir))?.isDirectory()) return;
  await mkdirp(sftp, path.posix.dirname(dir));
  await mkdir(sftp, dir, 0o755);
}

/** mkdir; one that exists already (made meanwhile) is fine: callers check what is there. */
async function mkdir(sftp: SFTPWrapper, dir: string, mode: number): Promise<void> {
  try {
    await call((cb) => sftp.mkdir(dir, { mode }, cb));
  } catch (err) {
    if (!(await lstat(sftp, dir))) throw new Error(`cannot create ${dir} over SFTP: ${(err as Error).message}`);
  }
}

const sftpDirOps = (sftp: SFTPWrapper): DirOps => ({
  lstat: (p) => lstat(sftp, p),
  mkdir: (p, mode) => call((cb) => sftp.mkdir(p, { mode }, cb)),
  realpath: (p) => realpath(sftp, p),
  chmod: (p, mode) => chmod(sftp, p, mode),
});

const NO_SUCH_FILE = 2;

function lstat(sftp: SFTPWrapper, p: string): Promise<Stats | null> {
  return new Promise((resolve, reject) => sftp.lstat(p, (err, st) => {
    if (!err) return resolve(st);
    if ((err as Error & { code?: number }).code === NO_SUCH_FILE) return resolve(null);
    reject(new Error(`cannot look at ${p} over SFTP: ${err.message}`));
  }));
}

function stat(sftp: SFTPWrapper, p: string): Promise<Stats | null> {
  return new Promise((resolve) => sftp.stat(p, (err, st) => resolve(err ? null : st)));
}

function realpath(sftp: SFTPWrapper, p: string): Promise<string> {
  return call<string>((cb) => sftp.realpath(p, cb)).catch((e: Error) => { throw new Error(`cannot resolve ${p} over SFTP: ${e.message}`); });
}

function chmod(sftp: SFTPWrapper, p: string, mode: number): Promise<void> {
  return call((cb) => sftp.chmod(p, mode, cb)).catch((e: Error) => { throw new Error(`cannot chmod ${p} over SFTP: ${e.message}`); });
}

/** A Node-style callback call as a promise; ssh2 may also throw synchronously (e.g. an unsupported extension). */
function call<T = void>(fn: (cb: (err: Error | undefined | null, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    try {
      fn((err, value) => (err ? reject(err) : resolve(value as T)));
    } catch (err) {
      reject(err);
    }
  });
}
