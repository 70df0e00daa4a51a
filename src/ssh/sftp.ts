/** Copy small files to the remote machine over SFTP (creating their directory), with a file mode. */
import fs from 'node:fs';
import path from 'node:path';
import type { SFTPWrapper } from 'ssh2';
import type { SshConnection } from './connect.js';

export interface Upload {
  local: string;
  /** Absolute, or relative to the remote user's home (where the SFTP server starts). */
  remote: string;
  mode: number;
  /** Mode of directories created for it (default 0755; 0700 for secrets). */
  dirMode?: number;
}

export async function uploadFiles(conn: SshConnection, uploads: Upload[]): Promise<void> {
  const sftp = await conn.sftp();
  try {
    for (const u of uploads) {
      await mkdirp(sftp, path.posix.dirname(u.remote), u.dirMode ?? 0o755);
      await put(sftp, fs.readFileSync(u.local), u.remote, u.mode);
    }
  } finally {
    sftp.end();
  }
}

function put(sftp: SFTPWrapper, data: Buffer, remote: string, mode: number): Promise<void> {
  return new Promise((resolve, reject) => {
    sftp.writeFile(remote, data, { mode }, (err) => {
      if (err) return reject(new Error(`cannot write ${remote} over SFTP: ${err.message}`));
      // writeFile's mode applies only to a new file; set it on an existing one too.
      sftp.chmod(remote, mode, (e) => (e ? reject(new Error(`cannot chmod ${remote}: ${e.message}`)) : resolve()));
    });
  });
}

async function mkdirp(sftp: SFTPWrapper, dir: string, mode: number): Promise<void> {
  if (dir === '.' || dir === '/' || dir === '') return;
  if (await isDir(sftp, dir)) return;
  await mkdirp(sftp, path.posix.dirname(dir), 0o755);
  await new Promise<void>((resolve, reject) => {
    sftp.mkdir(dir, { mode }, (err) => {
      if (!err) return resolve();
      void isDir(sftp, dir).then((ok) => (ok ? resolve() : reject(new Error(`cannot create ${dir} over SFTP: ${err.message}`))));
    });
  });
}

function isDir(sftp: SFTPWrapper, dir: string): Promise<boolean> {
  return new Promise((resolve) => sftp.stat(dir, (err, st) => resolve(!err && st.isDirectory())));
}
