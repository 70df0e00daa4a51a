/** Socket options for a CURVE client (agents and kqctl): kq's public key plus the client's own pair. */
import fs from 'node:fs';
import { readCert, readKeyPair, type KeyPair } from './keys.js';
import { isZ85Key } from './z85.js';

export interface CurveClient { serverKey: string; keys: KeyPair }

export function curveSocketOptions(c: CurveClient | null) {
  return c === null ? {} : { curveServerKey: c.serverKey, curvePublicKey: c.keys.publicKey, curveSecretKey: c.keys.secretKey };
}

/** `--server-key` takes the key itself (Z85, public) or a certificate file holding it. */
export function readServerKey(value: string): string {
  if (isZ85Key(value)) return value;
  if (fs.existsSync(value)) return readCert(value).publicKey;
  throw new Error(`--server-key: "${value}" is neither a 40-character Z85 key nor a certificate file`);
}

/** Both or neither: a server key without a client key pair (or the reverse) is a configuration error. */
export function curveClient(serverKey: string | undefined, keyFile: string | undefined): CurveClient | null {
  if (!serverKey && !keyFile) return null;
  if (!serverKey) throw new Error('--key-file needs --server-key (kq\'s public key, from <data root>/keys/server.key)');
  if (!keyFile) throw new Error('--server-key needs --key-file (this client\'s secret certificate, from kqctl keys add-client)');
  return { serverKey: readServerKey(serverKey), keys: readKeyPair(keyFile) };
}
