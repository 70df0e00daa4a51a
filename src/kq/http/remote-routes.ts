/**
 * The monitor's Launch Remote Agents routes (issue 17 #6), driving `kqctl remote start` (remote-launch.ts):
 *
 *   GET  /api/remote-agents          {defaults, launches}: the form's defaults and recent launches
 *   POST /api/remote-agents {host, sshPort?, user, identity?, numAgents, installRoot?, dataRoot?, acceptNewHostKey?}
 *                                    → 202 RemoteLaunch (409 when one runs for that host)
 *   GET  /api/remote-agents/:id      RemoteLaunch: its state, progress steps, kqctl's messages and exit reason
 * The POST is a write under the API guard (token, loopback Host, no cross-site Origin) and, because it logs
 * in over SSH with a key of kq's user, also needs an Origin naming this host (403) and a JSON body (415).
 */
import os from 'node:os';
import type { FastifyInstance } from 'fastify';
import { installRoot } from '../../common/install-root.js';
import { RemoteLaunchRequestSchema } from '../../protocol/remote-launch.js';
import { isJsonRequest, isSameOriginRequest } from './auth.js';
import { LaunchRefused, RemoteLaunches } from './remote-launch.js';
import type { RouteContext } from './routes.js';

const launchParams = {
  type: 'object', required: ['id'], additionalProperties: false,
  properties: { id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } },
} as const;

export function registerRemoteRoutes(app: FastifyInstance, c: RouteContext): void {
  const launches = new RemoteLaunches(c.info, c.log);
  app.addHook('preClose', async () => launches.stopAll());

  app.get('/api/remote-agents', async () => ({
    defaults: { user: os.userInfo().username, sshPort: 22, numAgents: 2, installRoot: installRoot(), dataRoot: '~/.local/share/kq' },
    launches: launches.list(),
  }));

  app.get<{ Params: { id: number } }>('/api/remote-agents/:id', { schema: { params: launchParams } }, async (req, reply) => {
    const launch = launches.get(req.params.id);
    if (!launch) return reply.code(404).send({ code: 'not-found', error: `no launch ${req.params.id} (kq keeps the last 20)` });
    return launch;
  });

  app.post<{ Body: unknown }>('/api/remote-agents', async (req, reply) => {
    if (!isSameOriginRequest(req)) {
      return reply.code(403).send({ code: 'forbidden', error: 'remote agents are launched from the monitor page only: the request needs an Origin naming this host' });
    }
    if (!isJsonRequest(req)) {
      return reply.code(415).send({ code: 'unsupported-media-type', error: 'send the launch as JSON (content-type: application/json)' });
    }
    const parsed = RemoteLaunchRequestSchema.safeParse(req.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const field = issue.path.join('.');
      const message = issue.code === 'invalid_type' ? `${field || 'the body'}: ${issue.message}` : issue.message;
      return reply.code(400).send({ code: 'bad-request', error: message });
    }
    try {
      return reply.code(202).send(launches.start(parsed.data));
    } catch (err) {
      if (err instanceof LaunchRefused) return reply.code(409).send({ code: 'conflict', error: err.message });
      throw err;
    }
  });
}
