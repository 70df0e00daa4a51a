/**
 * The monitor's JSON API. Every route answers with what kqctl's `--json` prints for the same command
 * (the daemon's request replies): the routes only translate HTTP into a daemon request and back.
 *
 *   GET  /api/info                        kq.json's contents, plus the monitor's own address and the disk state
 *   GET  /api/jobs[?state=Running&state=…] list              → JobSummary[]
 *   POST /api/jobs            {job fields} submit            → 201 JobSummary
 *   GET  /api/jobs/:id                    show              → JobDetail
 *   GET  /api/jobs/:id/tasks              show's taskList   → TaskInfo[]
 *   GET  /api/jobs/:id/log[?from=&max=]   log               → LogChunk ({text, from, next, size, state});
 *                                          ?format=text       → the whole log file as text/plain
 *   GET  /api/jobs/:id/log/stream         the log, live     → text/event-stream (see log-stream.ts)
 *   GET  /api/jobs/:id/output[?frame=N]   a finished frame of a job submitted with `output`
 *   POST /api/jobs/:id/stop               stop              → JobSummary[] (without taskList)
 *   POST /api/jobs/:id/restart {failedOnly?}  restart       → JobSummary[]
 *   POST /api/stop    {jobIds}            stop
 *   POST /api/restart {jobIds, failedOnly?} restart
 *   GET  /api/agents                      agents            → AgentInfo[]
 *   pause, resume, priority, remove, clean: see queue-routes.ts
 *   GET/POST /api/remote-agents           Launch Remote Agents (kqctl remote start): see remote-routes.ts
 *   GET  /api/slurm                       the Slurm autoscaler's status (kq --slurm-autoscale) or null
 *   GET  /api/events                      live jobs and agents → text/event-stream (see sse.ts)
 * Errors: {code, error} with 400 (bad-request), 401 (token), 403, 404 (not-found) or 500 (internal).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import type { DaemonInfo } from '../../common/paths.js';
import { expandCommands } from '../../common/placeholders.js';
import { JobStateSchema, type JobDetail, type JobState, type JobSummary } from '../../protocol/index.js';
import { RequestError } from '../submit.js';
import { logStart, streamLog } from './log-stream.js';
import { registerQueueRoutes } from './queue-routes.js';
import { registerRemoteRoutes } from './remote-routes.js';
import { SseStream, type MonitorBackend, type MonitorHub, type SseStreams } from './sse.js';

export interface RouteContext {
  backend: MonitorBackend;
  hub: MonitorHub;
  log: Logger;
  sse: SseStreams;
  info: () => DaemonInfo | undefined;
  monitor: () => { url: string; auth: boolean };
}

/** Frame images a browser shows; anything else (EXR, TIFF, DPX…) gets no thumbnail. */
const IMAGE_TYPES: Record<string, string> = {
  '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif', '.webp': 'image/webp',
  '.bmp': 'image/bmp', '.avif': 'image/avif',
};
export const isImageOutput = (pattern: string | null | undefined) => !!pattern && path.extname(pattern).toLowerCase() in IMAGE_TYPES;

const jobParams = {
  type: 'object', required: ['id'], additionalProperties: false,
  properties: { id: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } },
} as const;
const idList = { type: 'array', minItems: 1, maxItems: 10_000, items: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } } as const;

type IdParams = { Params: { id: number } };

export function registerRoutes(app: FastifyInstance, c: RouteContext): void {
  const { backend } = c;

  // disk: {full, since, reason, dataRoot} as `ping` reports it (full: kq hands out no new work until there is room).
  app.get('/api/info', async () => ({ ...c.info(), monitor: c.monitor(), disk: (backend.request({ type: 'ping' }) as { disk?: unknown }).disk ?? null }));
  // The Slurm autoscaler's status (kq --slurm-autoscale), or null.
  app.get('/api/slurm', async () => (backend.request({ type: 'ping' }) as { slurmAutoscale?: unknown }).slurmAutoscale ?? null);

  app.get<{ Querystring: { state?: JobState[] } }>('/api/jobs', {
    schema: { querystring: { type: 'object', properties: { state: { type: 'array', items: { type: 'string', enum: JobStateSchema.options } }, token: { type: 'string' } } } },
  }, async (req) => backend.request({ type: 'list', states: req.query.state }));

  app.post<{ Body: unknown }>('/api/jobs', async (req, reply) => {
    if (typeof req.body !== 'object' || req.body === null || Array.isArray(req.body)) {
      throw new RequestError('bad-request', 'send the job as a JSON object: {"argv": ["povray", "+Ishot.pov"], "frames": "1-10", …}');
    }
    const job = backend.request({ type: 'submit', job: req.body as never });
    return reply.code(201).send(job);
  });

  app.get<IdParams>('/api/jobs/:id', { schema: { params: jobParams } }, async (req) => backend.request({ type: 'show', jobId: req.params.id }));

  app.get<IdParams>('/api/jobs/:id/tasks', { schema: { params: jobParams } },
    async (req) => (backend.request({ type: 'show', jobId: req.params.id }) as JobDetail).taskList);

  app.get<IdParams & { Querystring: { from?: number; max?: number; format?: 'json' | 'text' } }>('/api/jobs/:id/log', {
    schema: {
      params: jobParams,
      querystring: { type: 'object', properties: {
        from: { type: 'integer', minimum: 0 }, max: { type: 'integer', minimum: 1, maximum: 2_000_000 },
        format: { type: 'string', enum: ['json', 'text'] }, token: { type: 'string' },
      } },
    },
  }, async (req, reply) => {
    const jobId = req.params.id;
    if (req.query.format !== 'text') return backend.request({ type: 'log', jobId, from: req.query.from, max: req.query.max });
    const [job] = backend.request({ type: 'list', jobIds: [jobId] }) as JobSummary[];
    if (!job) throw new RequestError('not-found', `no job with id ${jobId}`);
    reply.header('content-type', 'text/plain; charset=utf-8').header('cache-control', 'no-store');
    if (!fs.existsSync(job.logFile)) return '';
    return reply.sendFile(path.basename(job.logFile), path.dirname(job.logFile), { cacheControl: false, etag: false, lastModified: false });
  });

  app.get<IdParams & { Querystring: { from?: number; tail?: number } }>('/api/jobs/:id/log/stream', {
    schema: {
      params: jobParams,
      querystring: { type: 'object', properties: {
        from: { type: 'integer', minimum: 0 }, tail: { type: 'integer', minimum: 0 }, token: { type: 'string' },
      } },
    },
  }, async (req, reply) => {
    const lastId = Number(req.headers['last-event-id']);
    const from = Number.isSafeInteger(lastId) && lastId >= 0 ? lastId : req.query.from;
    const start = logStart(backend, { jobId: req.params.id, from, tail: req.query.tail }); // 404 before the stream opens
    const stream = new SseStream(req, reply, c.sse);
    try {
      await streamLog(backend, c.hub, stream, req.params.id, start);
    } catch (err) {
      c.log.error({ err: (err as Error).stack, job: req.params.id }, 'log stream failed');
      stream.close();
    }
  });

  app.get<IdParams & { Querystring: { frame?: number } }>('/api/jobs/:id/output', {
    schema: {
      params: jobParams,
      querystring: { type: 'object', properties: { frame: { type: 'integer', minimum: Number.MIN_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER }, token: { type: 'string' } } },
    },
  }, async (req, reply) => sendOutputFrame(backend, req.params.id, req.query.frame, reply));

  app.post<IdParams>('/api/jobs/:id/stop', { schema: { params: jobParams } },
    async (req) => backend.request({ type: 'stop', jobIds: [req.params.id] }));

  app.post<IdParams & { Body: { failedOnly?: boolean } | undefined; Querystring: { failedOnly?: boolean } }>('/api/jobs/:id/restart', {
    schema: {
      params: jobParams,
      querystring: { type: 'object', properties: { failedOnly: { type: 'boolean' }, token: { type: 'string' } } },
      body: { type: ['object', 'null'], properties: { failedOnly: { type: 'boolean' } }, additionalProperties: false },
    },
  }, async (req) => backend.request({ type: 'restart', jobIds: [req.params.id], failedOnly: req.body?.failedOnly ?? req.query.failedOnly ?? false }));

  app.post<{ Body: { jobIds: number[] } }>('/api/stop', {
    schema: { body: { type: 'object', required: ['jobIds'], properties: { jobIds: idList }, additionalProperties: false } },
  }, async (req) => backend.request({ type: 'stop', jobIds: req.body.jobIds }));

  app.post<{ Body: { jobIds: number[]; failedOnly?: boolean } }>('/api/restart', {
    schema: { body: { type: 'object', required: ['jobIds'], properties: { jobIds: idList, failedOnly: { type: 'boolean' } }, additionalProperties: false } },
  }, async (req) => backend.request({ type: 'restart', jobIds: req.body.jobIds, failedOnly: req.body.failedOnly ?? false }));

  app.get('/api/agents', async () => backend.request({ type: 'agents' }));

  registerQueueRoutes(app, c); // pause, resume, priority, remove, clean (queue-routes.ts)
  registerRemoteRoutes(app, c); // Launch Remote Agents (remote-routes.ts)

  app.get('/api/events', async (req, reply) => {
    const stream = new SseStream(req, reply, c.sse);
    try {
      c.hub.addClient(stream);
    } catch (err) {
      c.log.error({ err: (err as Error).stack }, 'events stream failed');
      stream.close();
    }
  });
}

async function sendOutputFrame(backend: MonitorBackend, jobId: number, frame: number | undefined, reply: FastifyReply) {
  const job = backend.request({ type: 'show', jobId }) as JobDetail;
  if (!job.output) throw new RequestError('not-found', `job ${jobId} declares no output pattern (kqctl submit --output 'frames/shot_{frame:04}.png')`);
  const type = IMAGE_TYPES[path.extname(job.output).toLowerCase()];
  if (!type) throw new RequestError('not-found', `job ${jobId} writes ${path.extname(job.output) || 'files without an extension'}, not an image a browser shows`);
  const frames = job.taskList.flatMap((t) => t.frames);
  if (frames.length > 0 && frame === undefined) throw new RequestError('bad-request', `job ${jobId} has frames: add ?frame=N`);
  if (frame !== undefined && !frames.includes(frame)) throw new RequestError('not-found', `job ${jobId} has no frame ${frame}`);
  const relative = expandCommands([job.output], frame === undefined ? [] : [frame])[0]![0]!;
  if (!path.isAbsolute(relative) && !job.cwd) throw new RequestError('not-found', `job ${jobId} has no cwd to find ${relative} in`);
  const file = path.resolve(job.cwd ?? '/', relative);
  if (!fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
    throw new RequestError('not-found', `frame ${frame ?? ''} of job ${jobId} is not there (yet): no file ${file}`.replace('frame  ', 'the output '));
  }
  reply.header('cache-control', 'no-cache').type(type);
  return reply.sendFile(path.basename(file), path.dirname(file), { cacheControl: false, dotfiles: 'allow' });
}
