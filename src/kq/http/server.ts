/**
 * The web monitor: fastify serving the JSON API (routes.ts), live events (sse.ts) and the page (web/).
 * Started by the daemon after its sockets are bound; closed first when it stops. Bad input gets a 4xx
 * answer and a line in kq.log at most — never an exception into the daemon.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyRequest } from 'fastify';
import fastifyStatic from '@fastify/static';
import type { Logger } from 'pino';
import { dataFiles, type DaemonInfo } from '../../common/paths.js';
import { RequestError } from '../submit.js';
import { apiGuard, chooseToken } from './auth.js';
import { registerRoutes } from './routes.js';
import { MonitorHub, SseStreams, type MonitorBackend } from './sse.js';

export interface MonitorOptions {
  /** 0 picks a free port. */
  port: number;
  bind: string;
  /** Required from every API request when set; one is generated if not given and `requireToken`. */
  token?: string;
  /** Beyond loopback, or when kq's ports need CURVE keys (the monitor must not be the way around them). */
  requireToken: boolean;
  dataRoot: string;
  log: Logger;
}

export interface Monitor {
  port: number;
  /** The page's address (without the token). */
  url: string;
  /** Where the token is stored when kq generated it (beyond loopback), else null. */
  tokenFile: string | null;
  auth: boolean;
  close(): Promise<void>;
}

/** web/ next to src/ and dist/: found by walking up from this module (src/kq/http or dist/src/kq/http). */
export function webRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'web', 'index.html'))) return path.join(dir, 'web');
    dir = path.dirname(dir);
  }
  throw new Error('the monitor page (web/index.html) is missing from the kq installation');
}

export function monitorUrl(bind: string, port: number): string {
  const host = bind === '0.0.0.0' || bind === '::' || bind === '*' ? os.hostname() : bind;
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
}

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

/** The static files of the page (fastify-static's wildcard route): the only routes outside the guard. */
function isPageFile(req: FastifyRequest): boolean {
  return (req.method === 'GET' || req.method === 'HEAD') && req.routeOptions.url === PAGE_ROUTE;
}
const PAGE_ROUTE = '/*';
/** Far above what browsers and clients of one farm open; far below the 1,024 descriptors a process gets by default. */
const MAX_CONNECTIONS = 256;

export async function startMonitor(backend: MonitorBackend & { info?: DaemonInfo }, o: MonitorOptions): Promise<Monitor> {
  const { token, file: tokenFile } = chooseToken(o.requireToken, o.token, dataFiles(o.dataRoot).httpToken);
  const app = Fastify({
    loggerInstance: o.log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 16 * 1024 * 1024,
    forceCloseConnections: true,
    return503OnClosing: true,
    // Whoever can reach the port, before any token check, must not be able to hold kq's descriptors: a request
    // must arrive whole within 30 s, an idle connection goes after 2 min (live streams send a heartbeat
    // every 15 s), and at most MAX_CONNECTIONS are open at once.
    requestTimeout: 30_000,
    connectionTimeout: 120_000,
  });
  app.server.maxConnections = MAX_CONNECTIONS;
  const hub = new MonitorHub(backend, o.log, { batchMs: 100, agentsMs: 2000 });
  // A browser that keeps up leaves a few KB unread; 2 MiB lets one ride out a burst, and 32 MiB caps what
  // any number of stalled clients can make kq hold (issue 11: 200 of them once took kq to 1.1 GB).
  const sse = new SseStreams({ maxBufferedBytes: 2 * 1024 * 1024, maxTotalBufferedBytes: 32 * 1024 * 1024, heartbeatMs: 15_000 });
  let url = '';

  const guard = apiGuard(token);
  app.addHook('onRequest', async (req, reply) => {
    reply.headers(SECURITY_HEADERS);
    // Origin form only: an absolute-form target ("GET http://host/api/jobs") names a host the guard never sees.
    if (!req.raw.url?.startsWith('/')) {
      return reply.code(400).header('connection', 'close').send({ code: 'bad-request', error: 'the request target must be a path' });
    }
    // Guarded unless it is the page's own files, judged by the route fastify matched (after decoding the path),
    // never by how the URL is spelled: "/%61pi/jobs" reaches /api/jobs, so it must meet the same guard.
    if (!isPageFile(req)) await guard(req, reply);
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err instanceof RequestError) {
      return reply.code(err.code === 'not-found' ? 404 : err.code === 'bad-request' ? 400 : 500).send({ code: err.code, error: err.message });
    }
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) {
      o.log.error({ err: err.stack, method: req.method, url: req.url.replace(/token=[^&]*/, 'token=…') }, 'monitor request failed');
      return reply.code(500).send({ code: 'internal', error: 'internal error: see <data root>/logs/kq.log' });
    }
    return reply.code(status).send({ code: status === 404 ? 'not-found' : 'bad-request', error: err.message });
  });
  app.setNotFoundHandler((req, reply) => {
    if (req.url.startsWith('/api')) return reply.code(404).send({ code: 'not-found', error: `no such route: ${req.method} ${req.url.split('?')[0]}` });
    return reply.code(404).type('text/plain; charset=utf-8').send('not found\n');
  });

  await app.register(fastifyStatic, { root: webRoot(), prefix: '/', index: 'index.html', dotfiles: 'deny', wildcard: true });
  registerRoutes(app, {
    backend, hub, log: o.log,
    sse,
    info: () => backend.info,
    monitor: () => ({ url, auth: token !== null }),
  });
  app.addHook('preClose', async () => {
    hub.stop();
    sse.closeAll();
  });

  hub.start();
  try {
    await app.listen({ port: o.port, host: o.bind === '*' ? '0.0.0.0' : o.bind });
  } catch (err) {
    hub.stop();
    await app.close().catch(() => undefined);
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new Error(`cannot serve the web monitor on ${o.bind}:${o.port} (${code})` +
      (code === 'EADDRINUSE' ? ': another program (another kq?) uses that port; choose --http-port (0 = any free port) or --no-http' : ''));
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : o.port;
  url = monitorUrl(o.bind, port);
  let closed: Promise<void> | null = null;
  return {
    port, url, tokenFile, auth: token !== null,
    close: () => (closed ??= app.close()),
  };
}
