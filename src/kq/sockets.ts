/** kq's three ZeroMQ sockets, bound with the options that keep a peer from hurting the daemon. */
import * as zmq from 'zeromq';
import { MAX_MESSAGE_BYTES, MAX_UPDATE_BYTES } from '../protocol/index.js';
import { portOf, tcpEndpoint } from '../common/endpoint.js';
import { SendQueue } from '../common/send-queue.js';
import { ZAP_DOMAIN } from './zap.js';

export interface BindOptions {
  bind: string;
  /**
   * kq's CURVE secret key: every socket then requires CURVE. Either way the ZAP handler must already be
   * bound: every socket has a ZAP domain, which makes libzmq refuse ZMTP 1.0/2.0 peers (an HTTP request's
   * bytes would otherwise be read as ZeroMQ frames).
   */
  curveSecretKey: string | null;
  requestPort: number;
  updatePort: number;
  broadcastPort: number;
}

export interface DaemonSockets {
  router: zmq.Router;
  pull: zmq.Pull;
  pub: zmq.Publisher;
  routerQueue: SendQueue;
  pubQueue: SendQueue;
  ports: { request: number; update: number; broadcast: number };
  close(): void;
}

const base = { linger: 0, zapDomain: ZAP_DOMAIN } as const;

/**
 * Each port's largest message and queue lengths, chosen together: libzmq queues up to the receive
 * high-water mark per peer, in messages, so size × HWM bounds what one peer can make kq hold
 * (request 32 × 4 MiB, update 64 × 1 MiB). A broadcast subscriber that does not read loses messages past
 * 1,000 (PUB drops): `log -f` fills gaps from the file and agents' heartbeats recover a lost stop-task.
 */
const LIMITS = {
  request: { maxMessageSize: MAX_MESSAGE_BYTES, receiveHighWaterMark: 32, sendHighWaterMark: 10_000 },
  update: { maxMessageSize: MAX_UPDATE_BYTES, receiveHighWaterMark: 64 },
  broadcast: { maxMessageSize: MAX_MESSAGE_BYTES, sendHighWaterMark: 1000 },
} as const;

export async function bindSockets(o: BindOptions): Promise<DaemonSockets> {
  const common = o.curveSecretKey === null ? base : { ...base, curveServer: true, curveSecretKey: o.curveSecretKey };
  // Routing ids are libzmq's own (no handover): an assignment goes to the connection that registered, never
  // to a peer claiming an agent's id. mandatory: a send to a peer that is gone rejects (EHOSTUNREACH) instead
  // of vanishing, so the task can be requeued at once.
  // sendTimeout: a peer that sends requests but never reads its replies fills its pipe; without a timeout the
  // next send to it would wait forever and, sends being serialised, hold up every other peer's.
  const router = new zmq.Router({ ...common, ...LIMITS.request, mandatory: true, sendTimeout: 100 });
  const pull = new zmq.Pull({ ...common, ...LIMITS.update });
  const pub = new zmq.Publisher({ ...common, ...LIMITS.broadcast });
  const sockets = [router, pull, pub];
  try {
    await bindOne(router, o.bind, o.requestPort, 'request');
    await bindOne(pull, o.bind, o.updatePort, 'update');
    await bindOne(pub, o.bind, o.broadcastPort, 'broadcast');
  } catch (err) {
    for (const s of sockets) s.close();
    throw err;
  }
  return {
    router, pull, pub,
    routerQueue: new SendQueue(router),
    pubQueue: new SendQueue(pub),
    ports: { request: portOf(router.lastEndpoint!), update: portOf(pull.lastEndpoint!), broadcast: portOf(pub.lastEndpoint!) },
    close() {
      for (const s of sockets) if (!s.closed) s.close();
    },
  };
}

async function bindOne(socket: zmq.Socket, host: string, port: number, name: string): Promise<void> {
  const endpoint = tcpEndpoint(host, port === 0 ? '*' : port);
  try {
    await socket.bind(endpoint);
  } catch (err) {
    const why = (err as Error).message;
    throw new Error(`cannot bind the ${name} port at ${endpoint} (${why}): is another kq or program using it? choose another with --${name}-port`);
  }
}
