/**
 * Who may use the monitor's API.
 * - With a token (given, or required because the monitor listens beyond loopback or kq's ports need CURVE
 *   keys — else any local user could use the API the keys keep them from): every request but the page's files
 *   must carry it, as `Authorization: Bearer <token>` or `?token=<token>` (EventSource cannot set headers).
 * - On loopback without a token: only requests whose Host is a literal loopback IP or exactly `localhost`
 *   (a web page whose name resolves to 127.0.0.1 cannot reach the API through DNS rebinding), and no
 *   cross-site writes: a write's Origin, when sent, must be that same host (a page elsewhere cannot act).
 */
import crypto from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isLoopback } from '../../common/endpoint.js';
import { privateSecret, sameSecret } from '../../common/secret-file.js';

export interface TokenChoice {
  /** The token every API request must carry, or null when none is needed (loopback). */
  token: string | null;
  /** Where a generated token was stored, for the ready line. */
  file: string | null;
}

/** A token given explicitly wins; when one is required, it is read from (or generated into) `tokenFile`. */
export function chooseToken(required: boolean, given: string | undefined, tokenFile: string): TokenChoice {
  if (given !== undefined && given !== '') {
    if (given.length < 16) throw new Error('--http-token must be at least 16 characters');
    return { token: given, file: null };
  }
  if (!required) return { token: null, file: null };
  const token = privateSecret(tokenFile, {
    what: 'the monitor token',
    generate: () => crypto.randomBytes(24).toString('base64url'),
    valid: (text) => text.length >= 16,
  });
  return { token, file: tokenFile };
}

function presentedToken(req: FastifyRequest): string | null {
  const header = req.headers.authorization;
  if (typeof header === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (m) return m[1]!;
  }
  const q = (req.query as Record<string, unknown> | undefined)?.token;
  return typeof q === 'string' ? q : null;
}

/** A Host header is a name or bracketed IPv6 literal and an optional port: nothing else (no `user@`, no path). */
const HOST_HEADER = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$/;

/** The Host header's host and port as a browser would normalise them (`127.1` → `127.0.0.1`), or null. */
function parseHost(hostHeader: string | undefined): { hostname: string; host: string } | null {
  if (!hostHeader || !HOST_HEADER.test(hostHeader)) return null;
  try {
    const url = new URL(`http://${hostHeader}`);
    return { hostname: url.hostname, host: url.host };
  } catch {
    return null;
  }
}

/** An onRequest hook for /api routes. */
export function apiGuard(token: string | null) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (token !== null) {
      const given = presentedToken(req);
      if (given === null || !sameSecret(given, token)) {
        await reply.code(401).header('www-authenticate', 'Bearer realm="kq"').header('connection', 'close')
          .send({ code: 'unauthorized', error: 'this kq monitor needs its token: send "Authorization: Bearer <token>" or add ?token=<token> (the token is in <data root>/http-token)' });
      }
      return;
    }
    const host = parseHost(req.headers.host);
    if (host === null || !isLoopback(host.hostname)) {
      await reply.code(403).header('connection', 'close').send({ code: 'forbidden', error: `the monitor listens on loopback only; requests must be addressed to localhost, not "${req.headers.host ?? ''}"` });
      return;
    }
    const origin = req.headers.origin;
    if (req.method !== 'GET' && req.method !== 'HEAD' && origin !== undefined) {
      let originHost: string | null = null;
      try {
        const url = new URL(origin);
        if (url.protocol === 'http:') originHost = url.host;
      } catch { /* "null" or garbage */ }
      if (originHost !== host.host) {
        await reply.code(403).header('connection', 'close').send({ code: 'forbidden', error: 'cross-site requests may not change jobs' });
      }
    }
  };
}

/**
 * For writes that only the page itself may send (POST /api/remote-agents opens SSH logins with a key of
 * kq's user): an Origin must be present and name this very host. Browsers send one with every POST.
 */
export function isSameOriginRequest(req: FastifyRequest): boolean {
  const host = parseHost(req.headers.host);
  const origin = req.headers.origin;
  if (host === null || typeof origin !== 'string') return false;
  try {
    const url = new URL(origin);
    return url.protocol === 'http:' && url.host === host.host;
  } catch {
    return false;
  }
}

/** The body is declared JSON (a cross-site form or text/plain "simple request" is not). */
export function isJsonRequest(req: FastifyRequest): boolean {
  const type = req.headers['content-type'];
  return typeof type === 'string' && /^application\/json\s*(?:;|$)/i.test(type);
}
