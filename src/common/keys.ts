/**
 * kq's CURVE keys, as files under <data root>/keys (0700; secret files 0600), in ZeroMQ's certificate
 * format (CZMQ zcert: a public file NAME and a secret file NAME_secret):
 *   keys/server.key, keys/server.key_secret   kq's own key pair
 *   keys/allowed/<name>.key                     the allowlist: public keys of agents and kqctl users
 *   keys/clients/<name>.key_secret              key pairs made by `kqctl keys add-client` (hand them out)
 * `local` is the client that kq's local agents and kqctl on this machine use.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as zmq from 'zeromq';
import { isZ85Key } from './z85.js';

export interface KeyPair { publicKey: string; secretKey: string }

export const LOCAL_CLIENT = 'local';
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const keyFiles = (dataRoot: string) => {
  const dir = path.join(dataRoot, 'keys');
  return {
    dir,
    serverPublic: path.join(dir, 'server.key'),
    serverSecret: path.join(dir, 'server.key_secret'),
    allowedDir: path.join(dir, 'allowed'),
    allowed: (name: string) => path.join(dir, 'allowed', `${checkName(name)}.key`),
    clientsDir: path.join(dir, 'clients'),
    clientSecret: (name: string) => path.join(dir, 'clients', `${checkName(name)}.key_secret`),
  };
};

export function checkName(name: string): string {
  if (!NAME.test(name)) throw new Error(`invalid key name "${name}": use letters, digits, ".", "_" or "-" (at most 64)`);
  return name;
}

export function formatCert(keys: { publicKey: string; secretKey?: string }, comment: string): string {
  const lines = [`#   ${comment}`, '#   ZeroMQ CURVE certificate (zcert format), written by kq', 'metadata', 'curve', `    public-key = "${keys.publicKey}"`];
  if (keys.secretKey) lines.push(`    secret-key = "${keys.secretKey}"`);
  return lines.join('\n') + '\n';
}

/** Read a zcert file (public or secret). */
export function readCert(file: string): { publicKey: string; secretKey: string | null } {
  const cert = parseCert(fs.readFileSync(file, 'utf8'));
  if (!cert) throw new Error(`${file} is not a ZeroMQ CURVE certificate (expected public-key = "<40 Z85 characters>")`);
  return cert;
}

/** A certificate's keys; null when the text is not one. */
function parseCert(text: string): { publicKey: string; secretKey: string | null } | null {
  const field = (name: string) => new RegExp(`^\\s*${name}\\s*=\\s*"([^"]{40})"\\s*$`, 'm').exec(text)?.[1] ?? null;
  const publicKey = field('public-key');
  const secretKey = field('secret-key');
  if (!publicKey || !isZ85Key(publicKey) || (secretKey !== null && !isZ85Key(secretKey))) return null;
  return { publicKey, secretKey };
}

export function readKeyPair(file: string): KeyPair {
  const cert = readCert(file);
  if (!cert.secretKey) throw new Error(`${file} holds no secret-key: give the _secret certificate`);
  return { publicKey: cert.publicKey, secretKey: cert.secretKey };
}

function writePrivate(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, text, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
}

function ensureKeyDirs(dataRoot: string): void {
  const f = keyFiles(dataRoot);
  for (const dir of [f.dir, f.allowedDir, f.clientsDir]) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
  }
}

/** Create kq's key pair and the `local` client if missing. Returns the server's public key. Idempotent. */
export function initKeys(dataRoot: string): { serverPublicKey: string; created: boolean } {
  const f = keyFiles(dataRoot);
  ensureKeyDirs(dataRoot);
  let created = false;
  if (!fs.existsSync(f.serverSecret)) {
    const pair = zmq.curveKeyPair();
    writePrivate(f.serverSecret, formatCert(pair, 'kq server key pair: keep secret'));
    fs.writeFileSync(f.serverPublic, formatCert({ publicKey: pair.publicKey }, 'kq server public key: give to agents and kqctl users'), { mode: 0o644 });
    created = true;
  }
  if (!fs.existsSync(f.clientSecret(LOCAL_CLIENT))) {
    addClient(dataRoot, LOCAL_CLIENT);
    created = true;
  }
  return { serverPublicKey: readCert(f.serverPublic).publicKey, created };
}

/** Allow a client: with a public key given, just that; otherwise make a key pair for it. */
export function addClient(dataRoot: string, name: string, publicKey?: string): { publicKey: string; secretFile: string | null } {
  const f = keyFiles(dataRoot);
  ensureKeyDirs(dataRoot);
  if (fs.existsSync(f.allowed(name))) throw new Error(`a client named "${name}" is already allowed (revoke it first to replace its key)`);
  if (publicKey !== undefined && !isZ85Key(publicKey)) throw new Error(`not a CURVE public key: "${publicKey}" (expected 40 Z85 characters)`);
  let secretFile: string | null = null;
  if (publicKey === undefined) {
    const pair = zmq.curveKeyPair();
    secretFile = f.clientSecret(name);
    writePrivate(secretFile, formatCert(pair, `kq client "${name}": keep secret; give to that agent/user only`));
    publicKey = pair.publicKey;
  }
  // Whole or not at all: kq re-reads the allowlist every second and must never see a half-written key.
  const tmp = `${f.allowed(name)}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, formatCert({ publicKey }, `kq client "${name}" (allowed)`), { mode: 0o644, flag: 'wx' });
  fs.renameSync(tmp, f.allowed(name));
  return { publicKey, secretFile };
}

export function revokeClient(dataRoot: string, name: string): void {
  const f = keyFiles(dataRoot);
  if (!fs.existsSync(f.allowed(name))) throw new Error(`no allowed client named "${name}"`);
  fs.rmSync(f.allowed(name));
  fs.rmSync(f.clientSecret(name), { force: true });
}

export function listClients(dataRoot: string): Array<{ name: string; publicKey: string }> {
  const dir = keyFiles(dataRoot).allowedDir;
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((n) => n.endsWith('.key')).sort().map((n) => ({
    name: n.slice(0, -'.key'.length),
    publicKey: readCert(path.join(dir, n)).publicKey,
  }));
}

/** The allowlist as a set of Z85 public keys, re-read only when the directory changed. */
export class Allowlist {
  private keys = new Set<string>();
  private stamp = '';

  constructor(private readonly dataRoot: string) {}

  /** Keys this allowlist admitted (has() said yes): those whose connections a revoke must cut. */
  readonly admitted = new Set<string>();

  /** Is this key allowed now? No when the allowlist cannot be read (e.g. kq is out of file descriptors). */
  has(publicKeyZ85: string): boolean {
    if (!this.refresh()) return false;
    const yes = this.keys.has(publicKeyZ85);
    if (yes) this.admitted.add(publicKeyZ85);
    return yes;
  }

  /**
   * The allowed keys now (re-read if the directory changed); when it cannot be read, the last keys read:
   * an unreadable directory is not a revoke of every key (which would renew kq's sockets for nothing).
   */
  current(): ReadonlySet<string> {
    this.refresh();
    return this.keys;
  }

  /** False when the allowlist cannot be read now (out of descriptors or memory): not an answer about any key. */
  private refresh(): boolean {
    const dir = keyFiles(this.dataRoot).allowedDir;
    try {
      // The files' own sizes and times too: a key file rewritten in place changes nothing in its directory.
      const st = fs.statSync(dir);
      const files = fs.readdirSync(dir).map((n) => {
        const f = fs.statSync(path.join(dir, n), { throwIfNoEntry: false });
        return f ? `${n}:${f.size}:${f.mtimeMs}:${f.ino}` : n;
      });
      const stamp = `${st.mtimeMs}:${st.ino}:${files.join('/')}`;
      if (stamp === this.stamp) return true;
      this.keys = readAllowedKeys(dir);
      this.stamp = stamp;
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (CANNOT_READ_NOW.has(code)) return false;
      // Absent or not a directory we can read: nobody is allowed (fail closed, and every admitted key is cut).
      this.keys = new Set();
      this.stamp = `unreadable:${code}`;
      return true;
    }
  }
}

/** Errors that say nothing about the allowlist, only that kq cannot read it at this moment. */
const CANNOT_READ_NOW = new Set(['EMFILE', 'ENFILE', 'ENOMEM']);

/**
 * The allowed keys that parse: a malformed, unreadable or non-regular entry (a FIFO would block) admits
 * nobody and costs no other key its place. Out of descriptors, it throws: the set would miss allowed keys.
 */
function readAllowedKeys(dir: string): Set<string> {
  const keys = new Set<string>();
  for (const n of fs.readdirSync(dir).filter((name) => name.endsWith('.key'))) {
    let text: string;
    try {
      const fd = fs.openSync(path.join(dir, n), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      try {
        if (!fs.fstatSync(fd).isFile()) continue;
        text = fs.readFileSync(fd, 'utf8');
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      if (CANNOT_READ_NOW.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
      continue;
    }
    const cert = parseCert(text);
    if (cert) keys.add(cert.publicKey);
  }
  return keys;
}
