/**
 * The monitor's queue-control routes (issue 17), the same requests as kqctl pause/resume/priority/rm/clean:
 *
 *   POST   /api/pause  {jobIds?}                 pause (no ids: the whole queue) → {queuePaused, jobs}
 *   POST   /api/resume {jobIds?}                 resume                          → {queuePaused, jobs}
 *   POST   /api/jobs/:id/pause, /api/jobs/:id/resume
 *   POST   /api/priority {jobIds, priority}      priority                        → JobSummary[]
 *   POST   /api/jobs/:id/priority {priority}
 *   POST   /api/remove {jobIds, stop?}           rm                              → {removed}
 *   DELETE /api/jobs/:id[?stop=true]             rm of one job
 *   POST   /api/clean {states?, olderThanMs?}    clean                           → {removed}
 *   GET    /api/queue                            {paused}
 * They are writes: the API guard (auth.ts) gives them the token and same-origin checks of POST /api/jobs.
 */
import type { FastifyInstance } from 'fastify';
import type { RouteContext } from './routes.js';

const id = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } as const;
const idList = { type: 'array', minItems: 1, maxItems: 10_000, items: id } as const;
const jobParams = { type: 'object', required: ['id'], additionalProperties: false, properties: { id } } as const;
const priority = { type: 'integer', minimum: -1000, maximum: 1000 } as const;

type IdParams = { Params: { id: number } };

export function registerQueueRoutes(app: FastifyInstance, c: RouteContext): void {
  const { backend } = c;

  app.get('/api/queue', async () => ({ paused: (backend.request({ type: 'ping' }) as { queuePaused?: boolean }).queuePaused ?? false }));

  for (const verb of ['pause', 'resume'] as const) {
    app.post<{ Body: { jobIds?: number[] } | null }>(`/api/${verb}`, {
      schema: { body: { type: ['object', 'null'], properties: { jobIds: idList }, additionalProperties: false } },
    }, async (req) => backend.request({ type: verb, ...(req.body?.jobIds ? { jobIds: req.body.jobIds } : {}) }));
    app.post<IdParams>(`/api/jobs/:id/${verb}`, { schema: { params: jobParams } },
      async (req) => backend.request({ type: verb, jobIds: [req.params.id] }));
  }

  app.post<{ Body: { jobIds: number[]; priority: number } }>('/api/priority', {
    schema: { body: { type: 'object', required: ['jobIds', 'priority'], properties: { jobIds: idList, priority }, additionalProperties: false } },
  }, async (req) => backend.request({ type: 'priority', jobIds: req.body.jobIds, priority: req.body.priority }));
  app.post<IdParams & { Body: { priority: number } }>('/api/jobs/:id/priority', {
    schema: { params: jobParams, body: { type: 'object', required: ['priority'], properties: { priority }, additionalProperties: false } },
  }, async (req) => backend.request({ type: 'priority', jobIds: [req.params.id], priority: req.body.priority }));

  app.post<{ Body: { jobIds: number[]; stop?: boolean } }>('/api/remove', {
    schema: { body: { type: 'object', required: ['jobIds'], properties: { jobIds: idList, stop: { type: 'boolean' } }, additionalProperties: false } },
  }, async (req) => backend.request({ type: 'remove', jobIds: req.body.jobIds, stop: req.body.stop ?? false }));
  app.delete<IdParams & { Querystring: { stop?: boolean } }>('/api/jobs/:id', {
    schema: { params: jobParams, querystring: { type: 'object', properties: { stop: { type: 'boolean' }, token: { type: 'string' } } } },
  }, async (req) => backend.request({ type: 'remove', jobIds: [req.params.id], stop: req.query.stop ?? false }));

  app.post<{ Body: { states?: Array<'Completed' | 'Failed' | 'Cancelled'>; olderThanMs?: number } | null }>('/api/clean', {
    schema: { body: { type: ['object', 'null'], additionalProperties: false, properties: {
      states: { type: 'array', minItems: 1, items: { type: 'string', enum: ['Completed', 'Failed', 'Cancelled'] } },
      olderThanMs: { type: 'integer', minimum: 0 },
    } } },
  }, async (req) => backend.request({ type: 'clean', states: req.body?.states, olderThanMs: req.body?.olderThanMs }));
}
