/**
 * known_hosts, read and checked the way OpenSSH does: plain host patterns (`a,b,*.lan,!c`), `[host]:port`
 * for ports other than 22, hashed names (`|1|salt|hash`, HMAC-SHA1), `@revoked` lines; `@cert-authority`
 * lines are skipped (kq does not do host certificates). Key bytes are compared with Buffer.compare.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export interface KnownHostEntry {
  file: string;
  line: number;
  marker: 'revoked' | 'cert-authority' | null;
  hosts: string;
  keyType: string;
  key: Buffer;
}

export type HostKeyCheck =
  | { status: 'known'; entry: KnownHostEntry }
  /** No line for this host at all. */
  | { status: 'unknown' }
  /** Lines for this host exist, none with this key: same type (the key changed) or only other types. */
  | { status: 'changed'; entries: KnownHostEntry[] }
  | { status: 'revoked'; entry: KnownHostEntry };

/** The name OpenSSH looks up: `host` on port 22, `[host]:port` otherwise; lower case. */
export function knownHostName(host: string, port: number): string {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  return port === 22 ? h : `[${h}]:${port}`;
}

/** The key type written inside an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, ...). */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const len = blob.readUInt32BE(0);
  if (len > 64 || blob.length < 4 + len) return 'unknown';
  return blob.subarray(4, 4 + len).toString('latin1');
}

/** `SHA256:…` as `ssh-keygen -l` prints it. */
export function fingerprint(blob: Buffer): string {
  return 'SHA256:' + crypto.createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

export function hashHostName(name: string, salt: Buffer): string {
  return crypto.createHmac('sha1', salt).update(name).digest('base64');
}

/** Parse one file's text; malformed lines are skipped, as OpenSSH does. */
export function parseKnownHosts(text: string, file = 'known_hosts'): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const fields = raw.trim().split(/\s+/);
    if (fields[0] === undefined || fields[0] === '' || fields[0].startsWith('#')) return;
    let marker: KnownHostEntry['marker'] = null;
    if (fields[0].startsWith('@')) {
      if (fields[0] === '@revoked') marker = 'revoked';
      else if (fields[0] === '@cert-authority') marker = 'cert-authority';
      else return;
      fields.shift();
    }
    const [hosts, keyType, b64] = fields;
    if (!hosts || !keyType || !b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return;
    entries.push({ file, line: i + 1, marker, hosts, keyType, key: Buffer.from(b64, 'base64') });
  });
  return entries;
}

/** Does this line's host field name `name` (as given by knownHostName)? */
export function entryMatches(hosts: string, name: string): boolean {
  if (hosts.startsWith('|')) {
    const m = /^\|1\|([A-Za-z0-9+/=]+)\|([A-Za-z0-9+/=]+)$/.exec(hosts);
    if (!m) return false;
    const want = Buffer.from(m[2]!, 'base64');
    const got = Buffer.from(hashHostName(name, Buffer.from(m[1]!, 'base64')), 'base64');
    return want.length === got.length && crypto.timingSafeEqual(want, got);
  }
  let matched = false;
  for (const pattern of hosts.split(',')) {
    const negated = pattern.startsWith('!');
    if (globMatch(negated ? pattern.slice(1) : pattern, name)) {
      if (negated) return false; // a negated match excludes the line whatever else matches
      matched = true;
    }
  }
  return matched;
}

/** OpenSSH's host patterns: `*` any run, `?` one character, case-insensitive, whole string. */
function globMatch(pattern: string, name: string): boolean {
  const re = pattern.toLowerCase().replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`).test(name.toLowerCase());
}

export class KnownHosts {
  constructor(readonly entries: KnownHostEntry[], readonly files: string[]) {}

  /** Read these files; a file that does not exist is empty. */
  static load(files: string[]): KnownHosts {
    const entries: KnownHostEntry[] = [];
    for (const file of files) {
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new Error(`cannot read ${file}: ${(err as Error).message}`);
      }
      entries.push(...parseKnownHosts(text, file));
    }
    return new KnownHosts(entries, files);
  }

  forHost(name: string): KnownHostEntry[] {
    return this.entries.filter((e) => e.marker !== 'cert-authority' && entryMatches(e.hosts, name));
  }

  /** Key types known for this host, in file order (to prefer them when negotiating, like OpenSSH). */
  typesFor(name: string): string[] {
    return [...new Set(this.forHost(name).filter((e) => e.marker === null).map((e) => keyTypeOf(e.key)))];
  }

  check(name: string, key: Buffer): HostKeyCheck {
    const lines = this.forHost(name);
    const revoked = lines.find((e) => e.marker === 'revoked' && Buffer.compare(e.key, key) === 0);
    if (revoked) return { status: 'revoked', entry: revoked };
    const plain = lines.filter((e) => e.marker === null);
    const same = plain.find((e) => Buffer.compare(e.key, key) === 0);
    if (same) return { status: 'known', entry: same };
    if (plain.length === 0) return { status: 'unknown' };
    return { status: 'changed', entries: plain };
  }
}

/** Append `name type base64` to a known_hosts file (creating ~/.ssh 0700 and the file 0600 if needed). */
export function appendKnownHost(file: string, name: string, key: Buffer): string {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  let prefix = '';
  try {
    const text = fs.readFileSync(file, 'utf8');
    if (text.length > 0 && !text.endsWith('\n')) prefix = '\n';
  } catch { /* new file */ }
  const line = `${name} ${keyTypeOf(key)} ${key.toString('base64')}`;
  fs.appendFileSync(file, `${prefix}${line}\n`, { mode: 0o600 });
  return line;
}
