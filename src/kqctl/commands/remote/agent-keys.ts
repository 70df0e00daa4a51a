/**
 * The CURVE certificates remote agents need when kq requires CURVE (kq.json says so): kq's public key and
 * an allowlisted client key pair — --key-file, or client --key-name (default: the host name) from kq's
 * data root, made like `kqctl keys add-client` does if missing. Null when kq takes plain links.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readServerKey } from '../../../common/curve-client.js';
import { addClient, checkName, formatCert, keyFiles, readCert, readKeyPair } from '../../../common/keys.js';
import type { DaemonInfo } from '../../../common/paths.js';
import { CliError, EXIT } from '../../exit-codes.js';
import type { StartFlags } from './options.js';

export interface AgentKeys { name: string; serverPublic: string; clientSecret: string; created: boolean }

export function agentKeys(flags: StartFlags, info: DaemonInfo | null, sshHost: string): AgentKeys | null {
  const envServerKey = process.env.KQ_SERVER_KEY;
  if (!info?.curve && !flags.keyFile && !envServerKey) return null;
  try {
    const serverPublic = serverPublicKeyFile(info, envServerKey);
    if (flags.keyFile) {
      readKeyPair(flags.keyFile);
      return { name: checkName(path.basename(flags.keyFile).replace(/\.key_secret$/, '').replace(/[^A-Za-z0-9._-]/g, '-') || 'agents'),
        serverPublic, clientSecret: path.resolve(flags.keyFile), created: false };
    }
    if (!info) throw new Error('kq runs elsewhere (no kq.json here): pass --key-file with a secret certificate from `kqctl keys add-client` on kq\'s machine');
    const name = checkName(flags.keyName ?? sshHost.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64));
    const f = keyFiles(info.dataRoot);
    if (fs.existsSync(f.clientSecret(name))) {
      if (!fs.existsSync(f.allowed(name))) throw new Error(`client "${name}" is not in kq's allowlist any more (revoked?): choose another --key-name`);
      return { name, serverPublic, clientSecret: f.clientSecret(name), created: false };
    }
    if (fs.existsSync(f.allowed(name))) {
      throw new Error(`client "${name}" is allowed with a public key only (its secret is elsewhere): pass --key-file, or another --key-name`);
    }
    return { name, serverPublic, clientSecret: addClient(info.dataRoot, name).secretFile!, created: true };
  } catch (err) {
    throw new CliError(EXIT.usage, `kq requires CURVE keys for its agents: ${(err as Error).message}`);
  }
}

/** kq's public certificate: the file in kq's data root, or one written from KQ_SERVER_KEY / kq.json. */
function serverPublicKeyFile(info: DaemonInfo | null, envServerKey: string | undefined): string {
  let file: string;
  if (info?.curve && fs.existsSync(keyFiles(info.dataRoot).serverPublic)) {
    file = keyFiles(info.dataRoot).serverPublic;
  } else {
    const key = envServerKey ?? info?.serverKey;
    if (!key) throw new Error("kq's public key is unknown here: set KQ_SERVER_KEY (the key, or kq's keys/server.key)");
    file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kq-remote-')), 'server.key');
    fs.writeFileSync(file, formatCert({ publicKey: readServerKey(key) }, 'kq server public key'));
  }
  readCert(file);
  return file;
}
