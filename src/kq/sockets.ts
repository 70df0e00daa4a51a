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
  /** The current sockets: renew() replaces them, so read these again rather than keep them. */
  readonly router: zmq.Router;
  readonly pull: zmq.Pull;
  /** An XPUB: kq reads its subscription messages to send no log broadcast nobody follows (LogSubscriptions). */
  readonly pub: zmq.XPublisher;
  /** Send queues that always send on the current socket. */
  routerQueue: SendQueue;
  pubQueue: SendQueue;
  ports: { request: number; update: number; broadcast: number };
  /**
   * Close every connection on the three ports and listen again on the same ones, so that every peer must
   * pass the ZAP handler again (after a key was revoked). Peers reconnect by themselves, each with a new
   * routing id; messages on their way at that moment are lost, as with any dropped connection.
   */
  renew(): Promise<void>;
  /** Resolves once the current sockets are bound (at once unless renew() is under way); never rejects. */
  bound(): Promise<void>;
  close(): void;
}

// handshakeInterval: a connection that never completes its handshake holds a descriptor this long (libzmq's
// default is 30 s, which let a flood of bare TCP connects exhaust kq's descriptors cheaply).
const base = { linger: 0, zapDomain: ZAP_DOMAIN, handshakeInterval: 10_000 } as const;

interface Sockets { router: zmq.Router; pull: zmq.Pull; pub: zmq.XPublisher }

/**
 * How long a renew keeps trying to listen again on its ports: libzmq frees them in its I/O thread, and
 * another process may take one in the moment between close and bind (kq's ports are fixed, and with port 0
 * they are in the ephemeral range).
 */
export const RENEW_PATIENCE_MS = 30_000;

/**
 * Each port's largest message and queue lengths, chosen together: libzmq queues up to the receive
 * high-water mark per peer, in messages, so size × HWM bounds what one peer can make kq hold
 * (request 32 × 4 MiB, update 64 × 1 MiB). A broadcast subscriber that does not read loses messages past
 * 1,000 (PUB drops): `log -f` fills gaps from the file and agents' heartbeats recover a lost stop-task.
 */
const LIMITS = {
  request: { maxMessageSize: MAX_MESSAGE_BYTES, receiveHighWaterMark: 32, sendHighWaterMark: 10_000 },
  update: { maxMessageSize: MAX_UPDATE_BYTES, receiveHighWaterMark: 64 },
  // What the broadcast port receives is subscriptions only (topic prefixes, at most a few hundred bytes): a
  // 1 MiB prefix costs libzmq's subscription trie ~40 MB of kq's memory, kept after the peer leaves.
  broadcast: { maxMessageSize: 4096, sendHighWaterMark: 1000 },
} as const;

export async function bindSockets(o: BindOptions): Promise<DaemonSockets> {
  const common = o.curveSecretKey === null ? base : { ...base, curveServer: true, curveSecretKey: o.curveSecretKey };
  // Routing ids are libzmq's own (no handover): an assignment goes to the connection that registered, never
  // to a peer claiming an agent's id. mandatory: a send to a peer that is gone rejects (EHOSTUNREACH) instead
  // of vanishing, so the task can be requeued at once.
  // sendTimeout: a peer that sends requests but never reads its replies fills its pipe; without a timeout the
  // next send to it would wait forever and, sends being serialised, hold up every other peer's.
  const open = (): Sockets => {
    const made: zmq.Socket[] = [];
    try {
      const router = new zmq.Router({ ...common, ...LIMITS.request, mandatory: true, sendTimeout: 100 });
      made.push(router);
      const pull = new zmq.Pull({ ...common, ...LIMITS.update });
      made.push(pull);
      const pub = new zmq.XPublisher({ ...common, ...LIMITS.broadcast });
      return { router, pull, pub };
    } catch (err) {
      for (const s of made) s.close(); // e.g. out of file descriptors half-way
      throw err;
    }
  };
  const closeAll = (sockets: Sockets) => {
    for (const s of [sockets.router, sockets.pull, sockets.pub]) if (!s.closed) s.close();
  };
  let current = open();
  const bindAll = async (ports: { request: number; update: number; broadcast: number }) => {
    await bindOne(current.router, o.bind, ports.request, 'request');
    await bindOne(current.pull, o.bind, ports.update, 'update');
    await bindOne(current.pub, o.bind, ports.broadcast, 'broadcast');
  };
  try {
    await bindAll({ request: o.requestPort, update: o.updatePort, broadcast: o.broadcastPort });
  } catch (err) {
    closeAll(current);
    throw err;
  }
  const ports = { request: portOf(current.router.lastEndpoint!), update: portOf(current.pull.lastEndpoint!), broadcast: portOf(current.pub.lastEndpoint!) };
  let closed = false;
  let renewing: Promise<void> = Promise.resolve();
  const renewOnce = async () => {
    // Until the new sockets exist (opening one fails when kq is out of file descriptors) the old ones stay,
    // connections and all; a renew that gives up rejects, and kq must then stop (see Daemon.onFatal).
    let old: Sockets | null = current;
    const deadline = Date.now() + RENEW_PATIENCE_MS;
    for (let delay = 50; ; delay = Math.min(2 * delay, 2000)) {
      if (closed) return;
      let opened: Sockets | null = null;
      try {
        opened = open();
        // The new sockets exist before the old close, so a receive loop that sees its socket end finds its successor.
        current = opened;
        if (old) closeAll(old);
        old = null;
        await bindAll(ports);
        return;
      } catch (err) {
        // libzmq frees the ports in its I/O thread, and another process may take one meanwhile: try again.
        // Out of descriptors (a flood of connections) passes: only a port held by someone else is given up on.
        if (opened) closeAll(opened);
        if (closed) return;
        if (Date.now() >= deadline && (err as { code?: string }).code === 'EADDRINUSE') throw err;
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  };
  return {
    get router() { return current.router; },
    get pull() { return current.pull; },
    get pub() { return current.pub; },
    // A send waits while the sockets are being renewed (a socket being bound refuses to send).
    routerQueue: new SendQueue(async () => { await renewing.catch(() => undefined); return current.router; }),
    pubQueue: new SendQueue(async () => { await renewing.catch(() => undefined); return current.pub; }),
    ports,
    renew() {
      renewing = renewing.catch(() => undefined).then(renewOnce);
      return renewing;
    },
    bound() {
      return renewing.catch(() => undefined);
    },
    close() {
      closed = true;
      closeAll(current);
    },
  };
}

async function bindOne(socket: zmq.Socket, host: string, port: number, name: string): Promise<void> {
  const endpoint = tcpEndpoint(host, port === 0 ? '*' : port);
  try {
    await socket.bind(endpoint);
  } catch (err) {
    const why = (err as Error).message;
    // The code (EADDRINUSE…) is kept: a renew gives up only on a port someone else holds.
    throw Object.assign(new Error(`cannot bind the ${name} port at ${endpoint} (${why}): is another kq or program using it? choose another with --${name}-port`),
      { code: (err as { code?: string }).code });
  }
}
